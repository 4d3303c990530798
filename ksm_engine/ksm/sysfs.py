"""/sys/kernel/mm/ksm as a dict-like object: ``m.ksm.sysfs["pages_to_scan"]``.

Reads return the file's text, newline included ("100\\n").  Writes take the
text a shell would write (a str, or bytes; an int is accepted as its decimal
text) and parse it the way the kernel's store function does, with the
kernel's own parsers (ksm_engine.kstrtox: a leading '+', one trailing
newline, nothing else; overflow is ERANGE where the kernel passes kstrtoint/kstrtoul's error through and
EINVAL where it maps every error to EINVAL; the text ends at a NUL, as the
C string the store function reads does).  A rejected write raises
OSError with the kernel's errno and changes nothing.  An empty write is a
no-op, as on the real files.  Writing a read-only counter is EACCES, an
unknown name is ENOENT.

Permissions: the kernel's files are root-owned, the knobs 0644 and the
counters 0444.  ``sysfs[name] = value`` writes as root; ``sysfs.write(name,
value, admin=False)`` writes as the caller it names, and an unprivileged
caller cannot open a knob for writing: PermissionError(EACCES), checked
before the text is looked at.  Anyone may read.  Checked against the real
kernel in tests/kernel/test_knob_parsing.py.  The 2009 interface parses as
the 2009 KSM patch did, with strict_strtoul (no '+', overflow wraps, every
error EINVAL).

apply_knobs() writes a set of knobs and names the one refused (KnobError):
the one way the applications and the CLI write the knobs a user gave.
"""
import errno
import os
from collections.abc import Mapping

from ..errors import errno_name
from ..kstrtox import UINT_MAX, kstrtobool, kstrtoint, kstrtoul, kstrtouint, strict_strtoul


class KnobError(OSError):
    """A knob write the KSM of a machine refused, naming the knob: the
    kernel's errno (ENOENT for an unknown name, EACCES for a read-only
    counter, else the store function's) and a one-line message that says
    which knob, which value and why (str(e) is that message)."""

    def __init__(self, code, message, knob=None):
        super().__init__(code, message)
        self.knob = knob

    def __str__(self):
        return self.strerror


def apply_knobs(machine, knobs):
    """Writes knobs (name -> text) to machine.ksm.sysfs, as root, in order.
    Raises KnobError naming the knob, with the kernel's errno, on the first
    one refused; the knobs written before it stay written."""
    for name, value in (knobs or {}).items():
        try:
            machine.ksm.sysfs[name] = value
        except FileNotFoundError:
            known = ", ".join(machine.ksm.knob_names())
            raise KnobError(errno.ENOENT, f"unknown knob {name!r} (knobs: {known})", name) from None
        except OSError as e:
            raise KnobError(e.errno, f"{name}={value!r}: {e.strerror} ({errno_name(e.errno)})",
                            name) from None


def _einval(msg):
    return OSError(errno.EINVAL, msg)


def _base10(parse):
    """The store functions of mm/ksm.c parse in base 10."""
    def parse_base10(text):
        return parse(text, 10)
    return parse_base10


def _strict_uint(text):
    """The 2009 sleep_millisecs, pages_to_scan and run stores:
    strict_strtoul, and more than UINT_MAX is EINVAL."""
    v = strict_strtoul(text, 10)
    if v > UINT_MAX:
        raise _einval(os.strerror(errno.EINVAL))
    return v


def _as_einval(parse):
    """The store functions that turn every parse error into EINVAL."""
    def parse_einval(text):
        try:
            return parse(text)
        except OSError:
            raise _einval(os.strerror(errno.EINVAL)) from None
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


# The parser of each kind of store function (knobs.py names one per knob).
PARSERS = {
    "uint_einval": _as_einval(_base10(kstrtouint)),
    "ulong_einval": _as_einval(_base10(kstrtoul)),
    "int": _base10(kstrtoint),
    "ulong": _base10(kstrtoul),
    "bool_einval": _as_einval(kstrtobool),
    "strict_uint": _strict_uint,
    "strict_ulong": _base10(strict_strtoul),
}
