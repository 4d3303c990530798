"""C integer helpers (the parsers are tests/core/test_kstrtox.py's)."""
import pytest

from cmm.cint import div_s64, to_s32, to_s64, to_u32, to_u64


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
