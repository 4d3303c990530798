"""C integer helpers and the kernel's number parsers."""
import errno

import pytest

from cmm.cint import (div_s64, kstrtobool, kstrtoul, kstrtouint, simple_strtoul,
                      to_s32, to_s64, to_u32, to_u64)


@pytest.mark.parametrize("a,b,q", [
    (7, 2, 3), (-7, 2, -3), (7, -2, -3), (-7, -2, 3),
    (-4097, 4096, -1), (-4095, 4096, 0), (4095, 4096, 0), (-8192, 4096, -2),
])
def test_div_s64_truncates_toward_zero(a, b, q):
    assert div_s64(a, b) == q
    # Python's floor division differs for negative non-multiples
    if a % b and (a < 0) != (b < 0):
        assert a // b != q


def test_div_by_zero():
    with pytest.raises(ZeroDivisionError):
        div_s64(1, 0)


def test_wrapping_casts():
    assert to_u64(-1) == 2**64 - 1
    assert to_s64(2**63) == -(2**63)
    assert to_s64(2**64 + 5) == 5
    assert to_u32(2**32 + 3) == 3
    assert to_s32(2**32 + 1) == 1          # (int)4294967297UL == 1
    assert to_s32(2**31) == -(2**31)


@pytest.mark.parametrize("s,v", [
    ("0", 0), ("12", 12), ("12abc", 12), ("abc", 0), ("", 0), ("-1", 0),
    ("0x10", 0), ("007", 7), (" 5", 0), ("5\n", 5), (str(2**64 + 3), 3),
])
def test_simple_strtoul_base10(s, v):
    assert simple_strtoul(s, 10) == v


@pytest.mark.parametrize("s,v", [("0x10", 16), ("010", 8), ("10", 10), ("+3", 3), ("7\n", 7), ("0", 0)])
def test_kstrtoul_base0(s, v):
    assert kstrtoul(s) == v


@pytest.mark.parametrize("s", ["", "abc", "1a", "-1", " 1", "1\n\n", "0x", "1 "])
def test_kstrtoul_rejects(s):
    with pytest.raises(OSError) as e:
        kstrtoul(s)
    assert e.value.errno == errno.EINVAL


def test_kstrto_ranges():
    assert kstrtoul(str(2**64 - 1)) == 2**64 - 1
    with pytest.raises(OSError) as e:
        kstrtoul(str(2**64))
    assert e.value.errno == errno.ERANGE
    assert kstrtouint(str(2**32 - 1)) == 2**32 - 1
    with pytest.raises(OSError) as e:
        kstrtouint(str(2**32))
    assert e.value.errno == errno.ERANGE


@pytest.mark.parametrize("s,v", [("Y", True), ("y", True), ("1", True), ("on", True),
                                 ("N", False), ("0", False), ("off", False), ("n\n", False)])
def test_kstrtobool(s, v):
    assert kstrtobool(s) is v


@pytest.mark.parametrize("s", ["", "x", "o", "2"])
def test_kstrtobool_rejects(s):
    with pytest.raises(OSError) as e:
        kstrtobool(s)
    assert e.value.errno == errno.EINVAL
