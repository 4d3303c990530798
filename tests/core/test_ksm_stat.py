"""ksm_engine.ksm_stat: the YesNo flag of /proc/PID/ksm_stat and the profit.

YesNo used to equal True as well as "yes" while hashing as "yes", so
``{True: 1}.get(YesNo(True))`` missed although the two compared equal.  It
now equals and hashes only as the string it prints as, and its truth is the
flag."""
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE
from ksm_engine.ksm_stat import YesNo, ksm_stat_text, profit

CANDIDATES = ["yes", "no", True, False, 1, 0, "", None]


@pytest.mark.parametrize("flag", [True, False])
def test_equal_values_hash_equal(flag):
    y = YesNo(flag)
    for other in CANDIDATES + [YesNo(True), YesNo(False)]:
        if y == other:
            assert hash(y) == hash(other), other
        assert (y == other) == (other == y) != (y != other)


def test_yesno_is_the_string_it_prints_as():
    assert YesNo(True) == "yes" and YesNo(False) == "no"
    assert YesNo(True) != True and YesNo(False) != False  # noqa: E712
    assert bool(YesNo(True)) is True and bool(YesNo(False)) is False
    assert {"yes": 1}.get(YesNo(True)) == 1 and {"no": 0}.get(YesNo(False)) == 0
    assert {True: 1}.get(YesNo(True)) is None
    assert {YesNo(True), "yes", YesNo(False), "no"} == {"yes", "no"}
    assert str(YesNo(1)) == "yes" and f"{YesNo(0)}" == "no" and repr(YesNo(0)) == "'no'"


def test_ksm_stat_flags_and_profit(machine):
    p = machine.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    p.write(a, b"k" * 4 * PAGE_SIZE)
    st = p.ksm_stat
    assert st["ksm_mergeable"] == "no" and not st["ksm_mergeable"]
    p.madvise(a, 4 * PAGE_SIZE, MADV_MERGEABLE)
    machine.ksm.full_scan(2)
    st = p.ksm_stat
    assert st["ksm_mergeable"] == "yes" and st["ksm_mergeable"]
    assert {"yes": "mergeable"}[st["ksm_mergeable"]] == "mergeable"
    assert (st["ksm_rmap_items"], st["ksm_merging_pages"]) == (4, 4)
    assert st["ksm_process_profit"] == profit(4, 0, 4) == 4 * PAGE_SIZE - 4 * 64
    assert ksm_stat_text(st).endswith("ksm_merge_any: no\nksm_mergeable: yes\n")
