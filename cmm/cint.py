"""C integer arithmetic and the kernel's string-to-number parsers.

cmm.c mixes ``unsigned int`` module parameters, ``unsigned long`` counters
and ``signed long`` intermediate results, and relies on C's rules: unsigned
arithmetic wraps modulo 2**N, conversion to a signed type reinterprets the
bits, and integer division truncates toward zero (div_s64).  Python integers
are unbounded and ``//`` floors, so every place the driver does arithmetic
that C would do differently goes through a helper here.

The parsers reproduce the three ways the kernel reads a number from a file
write, because each is used by a different cmm.c interface:

  simple_strtoul()  store_oom_pages(), cmm_set_disable(): parses the leading
                    digits and ignores the rest; never fails ("abc" is 0).
  kstrtoul()/kstrtouint()  module parameters (param_set_uint/ulong) and the
                    DEVICE_ULONG_ATTR simulate_loan_target_kb: the whole
                    string must be a number (one trailing newline allowed),
                    else -EINVAL; too large, -ERANGE.
  kstrtobool()      bool module parameters (simulate).

The model is a 64-bit kernel (LP64): int is 32 bits, long 64 bits.
"""
import errno

INT_BITS = 32
LONG_BITS = 64
UINT_MAX = (1 << INT_BITS) - 1
ULONG_MAX = (1 << LONG_BITS) - 1
LONG_MAX = (1 << (LONG_BITS - 1)) - 1
LONG_MIN = -(1 << (LONG_BITS - 1))


def to_u32(v):
    """(unsigned int)v: keep the low 32 bits."""
    return v & UINT_MAX


def to_s32(v):
    """(int)v: the low 32 bits read as two's complement."""
    v &= UINT_MAX
    return v - (1 << 32) if v >> 31 else v


def to_u64(v):
    """(unsigned long)v: keep the low 64 bits."""
    return v & ULONG_MAX


def to_s64(v):
    """(long)v: the low 64 bits read as two's complement."""
    v &= ULONG_MAX
    return v - (1 << 64) if v >> 63 else v


def div_s64(dividend, divisor):
    """div_s64(): signed 64-bit division truncating toward zero, as C does.

    Python's ``//`` rounds toward minus infinity (-5 // 4 == -2); C gives -1.
    """
    if divisor == 0:
        raise ZeroDivisionError("div_s64 by zero")
    q = abs(dividend) // abs(divisor)
    return to_s64(q if (dividend < 0) == (divisor < 0) else -q)


def c_div(a, b):
    """``a / b`` for C signed integers: truncation toward zero."""
    return div_s64(a, b)


def _digit(ch):
    if "0" <= ch <= "9":
        return ord(ch) - 48
    if "a" <= ch.lower() <= "z":
        return ord(ch.lower()) - 87
    return 99


def _fixup_radix(s, base):
    """_parse_integer_fixup_radix(): base 0 guesses 16 ("0x"), 8 ("0"), 10;
    base 16 skips a "0x" prefix.  Returns (base, rest)."""
    if base == 0:
        if s[:1] == "0":
            if s[1:2].lower() == "x" and _digit(s[2:3] or "!") < 16:
                return 16, s[2:]
            return 8, s
        return 10, s
    if base == 16 and s[:2].lower() == "0x":
        return 16, s[2:]
    return base, s


def _parse_integer(s, base):
    """_parse_integer(): value and number of digits consumed (no overflow
    check here; the callers decide)."""
    val = 0
    n = 0
    for ch in s:
        d = _digit(ch)
        if d >= base:
            break
        val = val * base + d
        n += 1
    return val, n


def simple_strtoul(s, base=10):
    """simple_strtoul(buf, NULL, base): the leading number, wrapped to 64
    bits; no sign handling, no error ("", "abc" and "-1" all give 0)."""
    base, rest = _fixup_radix(s, base)
    val, _ = _parse_integer(rest, base)
    return to_u64(val)


def kstrtoull(s, base=0):
    """kstrtoull(): strict parse; a leading '+' and one trailing '\\n' are
    allowed.  Raises OSError(EINVAL) on junk, OSError(ERANGE) past 64 bits."""
    if s[:1] == "+":
        s = s[1:]
    base, rest = _fixup_radix(s, base)
    val, n = _parse_integer(rest, base)
    if n == 0:
        raise OSError(errno.EINVAL, "invalid number")
    tail = rest[n:]
    if tail not in ("", "\n"):
        raise OSError(errno.EINVAL, "invalid number")
    if val > ULONG_MAX:
        raise OSError(errno.ERANGE, "number out of range")
    return val


def kstrtoul(s, base=0):
    """kstrtoul(): unsigned long, same rules as kstrtoull()."""
    return kstrtoull(s, base)


def kstrtouint(s, base=0):
    """kstrtouint(): as kstrtoull() and -ERANGE past 32 bits."""
    val = kstrtoull(s, base)
    if val > UINT_MAX:
        raise OSError(errno.ERANGE, "number out of range")
    return val


def kstrtobool(s):
    """kstrtobool(): y/Y/1/on -> True, n/N/0/off -> False, else -EINVAL."""
    if not s:
        raise OSError(errno.EINVAL, "invalid boolean")
    c = s[0].lower()
    if c in ("y", "1"):
        return True
    if c in ("n", "0"):
        return False
    if c == "o" and len(s) >= 2:
        if s[1].lower() == "n":
            return True
        if s[1].lower() == "f":
            return False
    raise OSError(errno.EINVAL, "invalid boolean")
