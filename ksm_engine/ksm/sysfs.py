"""/sys/kernel/mm/ksm as a dict-like object: ``m.ksm.sysfs["pages_to_scan"]``.

Reads return the file's text, newline included ("100\\n").  Writes take the
text a shell would write (a str, or bytes; an int is accepted as its decimal
text) and parse it the way the kernel's store function does, with the same
kstrto* rules (a leading '+', one trailing newline, nothing else; overflow
is ERANGE where the kernel passes kstrtoint/kstrtoul's error through and
EINVAL where it maps every error to EINVAL; the text ends at a NUL, as the
C string the store function reads does).  A rejected write raises
OSError with the kernel's errno and changes nothing.  An empty write is a
no-op, as on the real files.  Writing a read-only counter is EACCES, an
unknown name is ENOENT.

Permissions: the kernel's files are root-owned, the knobs 0644 and the
counters 0444.  ``sysfs[name] = value`` writes as root; ``sysfs.write(name,
value, admin=False)`` writes as the caller it names, and an unprivileged
caller cannot open a knob for writing: PermissionError(EACCES), checked
before the text is looked at.  Anyone may read.  Checked against the real kernel in
tests/kernel/test_knob_parsing.py.  The 2009 interface parses as the seed
did, with strict_strtoul (no '+', overflow wraps, every error EINVAL).
"""
import errno
from collections.abc import Mapping

UINT_MAX = (1 << 32) - 1
INT_MAX = (1 << 31) - 1
ULONG_MAX = (1 << 64) - 1


class KnobError(OSError):
    pass


def _einval(msg):
    return KnobError(errno.EINVAL, msg)


def _parse_ull(text):
    """lib/kstrtox.c _kstrtoull(base 10): returns int, or raises EINVAL/ERANGE."""
    s = text
    if s.startswith("+"):
        s = s[1:]
    digits = 0
    while digits < len(s) and "0" <= s[digits] <= "9":
        digits += 1
    if digits == 0:
        raise _einval("not a number")
    value = int(s[:digits])
    if value > ULONG_MAX:
        raise KnobError(errno.ERANGE, "number out of range")
    rest = s[digits:]
    if rest.startswith("\n"):
        rest = rest[1:]
    if rest:
        raise _einval("trailing characters")
    return value


def kstrtoull(text):
    return _parse_ull(text)


def kstrtouint(text):
    v = _parse_ull(text)
    if v > UINT_MAX:
        raise KnobError(errno.ERANGE, "number out of range")
    return v


def kstrtoint(text):
    if text.startswith("-"):
        v = _parse_ull(text[1:])
        if v > INT_MAX + 1:
            raise KnobError(errno.ERANGE, "number out of range")
        return -v
    v = _parse_ull(text)
    if v > INT_MAX:
        raise KnobError(errno.ERANGE, "number out of range")
    return v


def kstrtobool(text):
    """lib/kstrtox.c kstrtobool: looks at the first one or two characters."""
    c0 = text[:1]
    if c0 in ("y", "Y", "t", "T", "1"):
        return True
    if c0 in ("n", "N", "f", "F", "0"):
        return False
    if c0 in ("o", "O"):
        c1 = text[1:2]
        if c1 in ("n", "N"):
            return True
        if c1 in ("f", "F"):
            return False
    raise _einval("not a boolean")


def strict_strtoul(text):
    """The 2009 kernel's lib/vsprintf.c strict_strtoul(base 10), which the
    seed's store functions use: simple_strtoul's digits (no sign; an
    overflow wraps modulo 2^64), then nothing or one newline; every error
    is EINVAL."""
    digits = 0
    while digits < len(text) and "0" <= text[digits] <= "9":
        digits += 1
    if digits == 0:
        raise _einval("not a number")
    if text[digits:] not in ("", "\n"):
        raise _einval("trailing characters")
    return int(text[:digits]) & ULONG_MAX


def strict_strtoul_uint(text):
    """The seed's sleep_millisecs, pages_to_scan and run stores:
    strict_strtoul, and more than UINT_MAX is EINVAL."""
    v = strict_strtoul(text)
    if v > UINT_MAX:
        raise _einval("number out of range")
    return v


def _as_einval(parse):
    """The store functions that turn every parse error into EINVAL."""
    def parse_einval(text):
        try:
            return parse(text)
        except KnobError as e:
            raise _einval(e.strerror) from None
    return parse_einval


def _sysfs_streq(text, word):
    return text == word or text == word + "\n"


class KsmSysfs(Mapping):
    """The attribute files of one machine's KSM (see the module doc)."""

    def __init__(self, ksm):
        self._ksm = ksm

    # name -> (reader, writer or None)
    def _table(self):
        k = self._ksm
        return {
            **{name: (lambda name=name: k.stats[name], None) for name in k.counter_names()},
            **{name: (lambda name=name: k.knobs[name], k._store_knob) for name in k.knob_names()},
            **({"advisor_mode": (k._advisor_mode_text, k._store_knob)} if "advisor_mode" in k.knob_names() else {}),
        }

    def __getitem__(self, name):
        table = self._table()
        if not isinstance(name, str):
            raise TypeError("attribute names are strings")
        if name not in table:
            raise FileNotFoundError(errno.ENOENT, f"/sys/kernel/mm/ksm/{name}: no such attribute")
        with self._ksm.machine.lock:
            value = table[name][0]()
        return f"{value}\n"

    def __setitem__(self, name, value):
        """A write by root (see the module doc)."""
        self.write(name, value, admin=True)

    def write(self, name, value, admin=False):
        """write(2) of ``value`` to the file by a caller who is root
        (``admin``) or not; raises OSError with the kernel's errno."""
        table = self._table()
        if not isinstance(name, str):
            raise TypeError("attribute names are strings")
        if name not in table:
            raise FileNotFoundError(errno.ENOENT, f"/sys/kernel/mm/ksm/{name}: no such attribute")
        if table[name][1] is None:
            raise PermissionError(errno.EACCES, f"/sys/kernel/mm/ksm/{name} is read-only")
        if not isinstance(admin, bool):
            raise TypeError("admin is a bool: whether the writer is root")
        if not admin:
            raise PermissionError(errno.EACCES, f"/sys/kernel/mm/ksm/{name}: only root may write it (0644)")
        if isinstance(value, bool):
            raise TypeError("write the text, e.g. '1', not a bool")
        if isinstance(value, int):
            value = str(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            try:
                value = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                raise _einval("not ASCII text") from None
        elif not isinstance(value, str):
            raise TypeError(f"write a str, bytes or int, not {type(value).__name__}")
        if value == "":
            return  # a write of no bytes never reaches the store function
        # kernfs NUL-terminates the written bytes and the store function
        # reads a C string: whatever follows a NUL is never seen
        table[name][1](name, value.split("\0", 1)[0])

    def get(self, name, default=None):
        try:
            return self[name]
        except (FileNotFoundError, TypeError):
            return default

    def __iter__(self):
        return iter(sorted(self._table()))

    def __len__(self):
        return len(self._table())

    def __contains__(self, name):
        return isinstance(name, str) and name in self._table()


PARSERS = {
    "uint_einval": _as_einval(kstrtouint),
    "ulong_einval": _as_einval(kstrtoull),
    "int": kstrtoint,
    "ulong": kstrtoull,
    "bool_einval": _as_einval(kstrtobool),
    "strict_uint": strict_strtoul_uint,
    "strict_ulong": strict_strtoul,
}
