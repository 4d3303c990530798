"""smart_scan: pages that stay unmerged are looked at less and less often.

mm/ksm.c should_skip_rmap_item(), for an rmap_item whose page is not a KSM
page (KSM pages are never skipped, and do not age): the age (u8,
saturating) is read and incremented; age < 3: scan; else if
remaining_skips is 0: remaining_skips = skip_age(age) and scan; else skip
(pages_skipped++, remaining_skips--, and the item leaves the unstable
tree).  skip_age: <= 3 -> 1, <= 5 -> 2, <= 8 -> 4, else 8.  A skipped page
is not a cmp_and_merge_page call: it counts neither in pages_scanned nor
against a batch's budget.

By hand, for a page first seen in pass 1 (the age read at pass n is n-1):
  pass  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15..22 23 24..31 32
  age   0  1  2  3  4  5  6  7  8  9 10 11 12 13 14..21 22 23..30 31
  do    s  s  s  s  k  s  k  k  s  k  k  k  k  s  k..k   s  k..k   s
        (s scan, k skip; at each "s" from pass 4 on, remaining_skips is
        set to skip_age(age): 1 at age 3, 2 at age 5, 4 at age 8, 8 after)
"""
import pytest

from ksm_engine import PAGE_SIZE

from .conftest import ksm_counts, map_pages, page, set_knobs, unique_page

SCANNED_PASSES = {1, 2, 3, 4, 6, 9, 14, 23, 32}


def per_pass(m, passes):
    """[(pages_scanned, pages_skipped, pages_unshared) added/held after each pass]"""
    out = []
    for _ in range(passes):
        before = m.ksm.stats
        m.ksm.full_scan(1)
        after = m.ksm.stats
        out.append((after["pages_scanned"] - before["pages_scanned"],
                    after["pages_skipped"] - before["pages_skipped"],
                    after["pages_unshared"]))
    return out


def test_default_is_on(machine):
    assert machine.ksm.sysfs["smart_scan"] == "1\n"


def test_skip_schedule_of_unique_pages(machine):
    k = 5
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(k)])
    got = per_pass(machine, 32)
    for n, (scanned, skipped, unshared) in enumerate(got, start=1):
        if n in SCANNED_PASSES:
            assert (scanned, skipped) == (k, 0), n
            # scanned pages go (back) into the unstable tree, but not in pass 1
            assert unshared == (0 if n == 1 else k), n
        else:
            assert (scanned, skipped) == (0, k), n
            assert unshared == 0, n       # a skipped item leaves the unstable tree
    st = machine.ksm.stats
    assert st["pages_skipped"] == k * (32 - len(SCANNED_PASSES))
    assert st["pages_scanned"] == k * len(SCANNED_PASSES)
    assert st["full_scans"] == 32


def test_ages_and_remaining_skips(machine):
    p = machine.spawn()
    map_pages(p, [unique_page(0)])
    expected = {1: (1, 0), 2: (2, 0), 3: (3, 0), 4: (4, 1), 5: (5, 0), 6: (6, 2), 7: (7, 1),
                8: (8, 0), 9: (9, 4), 10: (10, 3)}
    for n in range(1, 11):
        machine.ksm.full_scan(1)
        item = p.rmap_items()[0]
        assert (item["age"], item["remaining_skips"]) == expected[n], n


def test_ksm_pages_never_skipped(machine):
    p = machine.spawn()
    map_pages(p, [page(0x31)] * 4 + [unique_page(i) for i in range(3)])
    got = per_pass(machine, 14)
    for n, (scanned, skipped, _) in enumerate(got, start=1):
        # the 4 merged pages are looked at every pass
        if n in SCANNED_PASSES:
            assert (scanned, skipped) == (7, 0), n
        else:
            assert (scanned, skipped) == (4, 3), n
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 3}
    # merged pages stopped ageing when they became KSM pages (after pass 2)
    ages = [i["age"] for i in p.rmap_items()]
    assert ages == [2] * 4 + [14] * 3


def test_later_pages_have_their_own_schedule(machine):
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(2)])
    machine.ksm.full_scan(4)
    map_pages(p, [unique_page(i, tag=1) for i in range(3)])  # first seen in pass 5
    got = per_pass(machine, 10)                                 # passes 5..14
    for n, (scanned, skipped, _) in enumerate(got, start=5):
        old = n in SCANNED_PASSES
        new = (n - 4) in SCANNED_PASSES
        assert scanned == 2 * old + 3 * new, n
        assert skipped == 2 * (not old) + 3 * (not new), n


def test_smart_scan_off_skips_nothing_and_does_not_age(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(4)])
    assert per_pass(machine, 10) == [(4, 0, 0)] + [(4, 0, 4)] * 9
    assert [i["age"] for i in p.rmap_items()] == [0] * 4
    # turned on, the pages start ageing from 0: first skip 4 passes later
    set_knobs(machine, smart_scan=1)
    got = per_pass(machine, 5)
    assert [s for _, s, _ in got] == [0, 0, 0, 0, 4]


def test_skipped_pages_do_not_use_the_budget(machine):
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(6)] + [page(9)] * 2)
    machine.ksm.full_scan(4)
    before = machine.ksm.stats
    # pass 5: the 6 unique pages are skipped; a budget of 3 gets the two
    # KSM pages and then reaches the end of the pass
    assert machine.ksm.scan(3) == 2
    st = machine.ksm.stats
    assert st["pages_skipped"] - before["pages_skipped"] == 6
    assert st["full_scans"] == 5


def test_written_page_keeps_its_age(machine):
    p = machine.spawn()
    a = map_pages(p, [unique_page(0)])
    machine.ksm.full_scan(4)
    p.write(a, b"new")
    # the item's age is not reset by a write: pass 5 still skips it
    before = machine.ksm.stats["pages_skipped"]
    machine.ksm.full_scan(1)
    assert machine.ksm.stats["pages_skipped"] == before + 1
    assert p.rmap_items()[0]["age"] == 5


@pytest.mark.parametrize("text,value", [("0", 0), ("1", 1), ("n\n", 0), ("Y", 1), ("off", 0), ("on", 1)])
def test_smart_scan_knob(machine, text, value):
    machine.ksm.sysfs["smart_scan"] = text
    assert machine.ksm.sysfs["smart_scan"] == f"{value}\n"


def test_merged_then_written_page_resumes_its_age(machine):
    p = machine.spawn()
    a = map_pages(p, [page(0x66)] * 2)
    machine.ksm.full_scan(6)              # merged in pass 2; ages stay 2
    assert [i["age"] for i in p.rmap_items()] == [2, 2]
    p.write(a, b"x")                      # page 1 leaves the KSM page
    machine.ksm.full_scan(1)              # age 2: scanned (volatile)
    machine.ksm.full_scan(1)              # age 3: scanned, remaining_skips 1
    before = machine.ksm.stats["pages_skipped"]
    machine.ksm.full_scan(1)              # age 4: skipped
    assert machine.ksm.stats["pages_skipped"] == before + 1
    assert p.read(a, PAGE_SIZE) == b"x" + page(0x66)[1:]
