"""The kernel's string-to-number parsers (ksm_engine.kstrtox) on fixed
tables, one per function, the answers those of lib/kstrtox.c and
lib/vsprintf.c.  The same parsers are driven against the running kernel
through the KSM knobs in tests/kernel/test_knob_parsing.py."""
import errno

import pytest

from ksm_engine.kstrtox import (INT_MAX, INT_MIN, LONG_MAX, LONG_MIN, UINT_MAX, ULONG_MAX,
                                kstrtobool, kstrtoint, kstrtoll, kstrtoul, kstrtoull,
                                kstrtouint, simple_strtoul, strict_strtoul)


def test_limits_are_the_lp64_ones():
    assert (INT_MAX, INT_MIN, UINT_MAX) == (2**31 - 1, -2**31, 2**32 - 1)
    assert (LONG_MAX, LONG_MIN, ULONG_MAX) == (2**63 - 1, -2**63, 2**64 - 1)


def _errno(parse, *args):
    with pytest.raises(OSError) as e:
        parse(*args)
    return e.value.errno


@pytest.mark.parametrize("s,v", [
    ("0", 0), ("12", 12), ("12abc", 12), ("abc", 0), ("", 0), ("-1", 0),
    ("0x10", 0), ("007", 7), (" 5", 0), ("5\n", 5), (str(2**64 + 3), 3),
])
def test_simple_strtoul_base10(s, v):
    assert simple_strtoul(s, 10) == v


@pytest.mark.parametrize("s,base,v", [
    ("0x1f", 0, 31), ("0X1F", 16, 31), ("1f", 16, 31), ("017", 0, 15), ("0x", 0, 0), ("0xg", 16, 0),
])
def test_simple_strtoul_bases(s, base, v):
    assert simple_strtoul(s, base) == v


@pytest.mark.parametrize("s,v", [("0x10", 16), ("010", 8), ("10", 10), ("+3", 3), ("7\n", 7), ("0", 0),
                                 ("0XaB", 171), ("+0x10", 16), ("00", 0)])
def test_kstrtoul_base0(s, v):
    assert kstrtoul(s, 0) == v


@pytest.mark.parametrize("s", ["", "abc", "1a", "-1", " 1", "1\n\n", "0x", "1 ", "++1", "+", "\n",
                               "09", "0x1g"])
def test_kstrtoul_rejects(s):
    assert _errno(kstrtoul, s, 0) == errno.EINVAL


# Base 10, as every KSM knob parses (tests/kernel/test_knob_parsing.py
# drives these tables through sleep_millisecs).
KSTRTOULL_BASE10 = [("10", 10), ("+10", 10), ("010", 10), ("10\n", 10), ("4294967295", 4294967295)]
KSTRTOULL_BASE10_REJECTS = ["0x10", "1e3", "10 ", " 10", "-0", "+", "++1", "1\n\n", "x"]


@pytest.mark.parametrize("s,v", KSTRTOULL_BASE10)
def test_kstrtoull_base10(s, v):
    assert kstrtoull(s, 10) == v


@pytest.mark.parametrize("s", KSTRTOULL_BASE10_REJECTS)
def test_kstrtoull_base10_rejects(s):
    assert _errno(kstrtoull, s, 10) == errno.EINVAL


def test_kstrto_ranges():
    assert kstrtoul(str(2**64 - 1), 0) == 2**64 - 1
    assert _errno(kstrtoul, str(2**64), 0) == errno.ERANGE
    assert kstrtouint(str(2**32 - 1), 0) == 2**32 - 1
    assert _errno(kstrtouint, str(2**32), 0) == errno.ERANGE
    # overflow is found before the trailing text is looked at
    assert _errno(kstrtoull, "99999999999999999999999x", 10) == errno.ERANGE


@pytest.mark.parametrize("s,v", [
    ("0", 0), ("-5", -5), ("+5", 5), ("2147483647", INT_MAX), ("-2147483648", INT_MIN),
    ("-0", 0), ("-0x10", -16),
])
def test_kstrtoint(s, v):
    assert kstrtoint(s, 0) == v


@pytest.mark.parametrize("s,code", [
    ("2147483648", errno.ERANGE), ("-2147483649", errno.ERANGE), ("99999999999", errno.ERANGE),
    ("-+5", errno.EINVAL), ("--5", errno.EINVAL), ("-", errno.EINVAL), ("5-", errno.EINVAL),
])
def test_kstrtoint_rejects(s, code):
    assert _errno(kstrtoint, s, 10) == code


def test_kstrtoll_range():
    assert kstrtoll(str(LONG_MIN), 10) == LONG_MIN
    assert kstrtoll(str(LONG_MAX), 10) == LONG_MAX
    assert _errno(kstrtoll, str(LONG_MAX + 1), 10) == errno.ERANGE
    assert _errno(kstrtoll, str(LONG_MIN - 1), 10) == errno.ERANGE


# lib/kstrtox.c kstrtobool: the first character, or 'o' and the second
# (tests/kernel/test_knob_parsing.py drives these tables through smart_scan).
KSTRTOBOOL = [
    ("Y", True), ("y", True), ("1", True), ("on", True), ("oN", True), ("t", True), ("T", True),
    ("true", True), ("yes", True), ("e", True), ("E", True), ("enable", True), ("ye", True),
    ("N", False), ("0", False), ("off", False), ("of", False), ("n\n", False), ("f", False),
    ("F", False), ("false", False), ("no", False), ("d", False), ("D", False), ("disable", False),
    ("nonsense", False), ("Of", False),
]
KSTRTOBOOL_REJECTS = ["", "x", "o", "2", "oX", "\n", "-1", " y", "O\n"]


@pytest.mark.parametrize("s,v", KSTRTOBOOL)
def test_kstrtobool(s, v):
    assert kstrtobool(s) is v


@pytest.mark.parametrize("s", KSTRTOBOOL_REJECTS)
def test_kstrtobool_rejects(s):
    assert _errno(kstrtobool, s) == errno.EINVAL


@pytest.mark.parametrize("s,v", [("10", 10), ("10\n", 10), ("007", 7), (str(2**64 + 1), 1)])
def test_strict_strtoul(s, v):
    assert strict_strtoul(s, 10) == v


@pytest.mark.parametrize("s", ["", "+1", "-1", "1x", "1\n\n", " 1", "0x10", "\n"])
def test_strict_strtoul_rejects(s):
    assert _errno(strict_strtoul, s, 10) == errno.EINVAL
