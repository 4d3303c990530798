"""The kernel's string-to-number parsers, once, for every file the engine
models (/sys/kernel/mm/ksm, cmm's module parameters and sysfs files).

A store function reads the text a process wrote and parses it with one of
these; what it accepts and which errno it returns are what a user sees, so
each parser follows its kernel function exactly (read from Linux 6.x
lib/kstrtox.c and lib/vsprintf.c; the kstrtobool cases were checked
against the running kernel through a KSM knob, tests/kernel/):

  kstrtoull(s, base)   lib/kstrtox.c: an optional leading '+', the digits of
                       ``base`` (0: "0x" hex, "0" octal, else decimal; 16
                       skips a "0x"), then nothing or one '\\n'.  Past 64
                       bits: ERANGE (checked before the trailing text); no
                       digit or anything else after them: EINVAL.
  kstrtoul             the same on a 64-bit kernel (unsigned long is 64 bits).
  kstrtouint           kstrtoull, and ERANGE past UINT_MAX.
  kstrtoint            kstrtoll's rules (an optional '-' or '+', but not both)
                       and ERANGE outside [INT_MIN, INT_MAX].
  kstrtobool(s)        the first character: one of "EeYyTt1" is true,
                       "DdNnFf0" false; 'o'/'O' then 'n'/'N' (on) or 'f'/'F'
                       (off); anything else, the empty string included, EINVAL.
                       The rest of the text is not looked at ("nonsense" is
                       false).
  simple_strtoul(s, base)  lib/vsprintf.c: the leading digits, wrapped modulo
                       2**64; never fails ("", "abc" and "-1" are all 0).
  strict_strtoul(s, base)  the 2009 kernel's lib/vsprintf.c: simple_strtoul's
                       digits (no sign, wrapping), then nothing or one '\\n';
                       every error EINVAL.

Every error is OSError with the kernel's errno (its strerror the kernel's
message for it).  The model is a 64-bit kernel (LP64): int is 32 bits, long
and long long 64; the limits below are the C ones and are defined here only.
"""
import errno
import os

INT_MAX = (1 << 31) - 1
INT_MIN = -(1 << 31)
UINT_MAX = (1 << 32) - 1
LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)
ULONG_MAX = (1 << 64) - 1

_HEX = "0123456789abcdef"


def _error(code):
    return OSError(code, os.strerror(code))


def _fixup_radix(s, base):
    """_parse_integer_fixup_radix(): base 0 becomes 16 for "0x" followed by
    a hex digit, 8 for any other leading "0", else 10; base 16 skips a "0x".
    Returns (base, the text from the first digit)."""
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2].lower() == "x" and s[2:3].lower() in tuple(_HEX) else 8
        else:
            base = 10
    if base == 16 and s[:1] == "0" and s[1:2].lower() == "x":
        s = s[2:]
    return base, s


def _parse_integer(s, base):
    """_parse_integer(): (value, digits read) of the leading digits of
    ``base`` (0-9, then a-f/A-F up to the base); the value is not bounded
    here, each caller decides what overflow means."""
    value = 0
    n = 0
    for ch in s:
        d = _HEX.find(ch.lower())
        if d < 0 or d >= base:
            break
        value = value * base + d
        n += 1
    return value, n


def _kstrtoull(s, base):
    """_kstrtoull(): the digits, then nothing or one newline."""
    base, s = _fixup_radix(s, base)
    value, n = _parse_integer(s, base)
    if value > ULONG_MAX:          # unsigned long long: 64 bits
        raise _error(errno.ERANGE)
    if n == 0:
        raise _error(errno.EINVAL)
    rest = s[n:]
    if rest not in ("", "\n"):
        raise _error(errno.EINVAL)
    return value


def kstrtoull(s, base):
    """kstrtoull(): see the module doc."""
    if s[:1] == "+":
        s = s[1:]
    return _kstrtoull(s, base)


kstrtoul = kstrtoull  # unsigned long is unsigned long long on LP64


def kstrtouint(s, base):
    """kstrtouint(): kstrtoull, and ERANGE past UINT_MAX."""
    value = kstrtoull(s, base)
    if value > UINT_MAX:
        raise _error(errno.ERANGE)
    return value


def kstrtoll(s, base):
    """kstrtoll(): a '-' then _kstrtoull's digits (no '+' after it), or
    kstrtoull's text; ERANGE outside the long long range."""
    if s[:1] == "-":
        value = _kstrtoull(s[1:], base)
        if value > -LONG_MIN:
            raise _error(errno.ERANGE)
        return -value
    value = kstrtoull(s, base)
    if value > LONG_MAX:
        raise _error(errno.ERANGE)
    return value


def kstrtoint(s, base):
    """kstrtoint(): kstrtoll, and ERANGE outside [INT_MIN, INT_MAX]."""
    value = kstrtoll(s, base)
    if not INT_MIN <= value <= INT_MAX:
        raise _error(errno.ERANGE)
    return value


def kstrtobool(s):
    """kstrtobool(): see the module doc (True or False, or EINVAL)."""
    c0 = s[:1]
    if c0 and c0 in "EeYyTt1":
        return True
    if c0 and c0 in "DdNnFf0":
        return False
    if c0 and c0 in "Oo":
        c1 = s[1:2]
        if c1 and c1 in "Nn":
            return True
        if c1 and c1 in "Ff":
            return False
    raise _error(errno.EINVAL)


def simple_strtoul(s, base):
    """simple_strtoul(s, NULL, base): the leading number modulo 2**64, 0
    when there is none; no sign, no error."""
    base, s = _fixup_radix(s, base)
    return _parse_integer(s, base)[0] & ULONG_MAX


def strict_strtoul(s, base):
    """The 2009 kernel's strict_strtoul(): simple_strtoul's number (wrapped),
    and EINVAL for no digit or anything but one newline after them."""
    base, rest = _fixup_radix(s, base)
    value, n = _parse_integer(rest, base)
    if n == 0 or rest[n:] not in ("", "\n"):
        raise _error(errno.EINVAL)
    return value & ULONG_MAX
