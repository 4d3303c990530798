"""use_zero_pages: zero-filled pages mapped to the shared zero page.

With use_zero_pages=1, cmp_and_merge_page tries the zero page before the
trees when a page's (stable) checksum is the zero page's and the page is all
zero (try_to_merge_with_zero_page).  Such ptes are counted in ksm_zero_pages
(global and per mm), not in pages_shared / pages_sharing, and cost no frame.
Their rmap_items are not in any tree; the next pass, finding no page there,
frees them.  They go back to private pages on a write (COW), on
MADV_UNMERGEABLE, prctl 0 and run=2 (break_ksm unshares KSM-placed zero
pages); munmap and exit drop them.  A fork child inherits the parent's
count (ksm_fork adds the child's ksm_zero_pages to the global counter).
Pages that are not present (never written) are not KSM's business at all.
"""
import pytest

from ksm_engine import MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_SET_MEMORY_MERGE

from .conftest import (PTE_KSM, PTE_NONE, PTE_PRESENT, PTE_ZERO, flags_of, frames_of, ksm_counts, map_pages,
                       merge_any_pair, page, scanned_process, set_knobs, unique_page)


def zero_merged(m, nzero, extra=()):
    set_knobs(m, use_zero_pages=1, smart_scan=0)
    p = m.spawn()
    a = map_pages(p, [page(0)] * nzero + list(extra))
    m.ksm.full_scan(2)
    return p, a


def test_zero_pages_cost_no_frames(machine):
    used0 = machine.used_pages
    p, a = zero_merged(machine, 32)
    assert flags_of(p, a, 32) == [PTE_ZERO] * 32
    assert machine.used_pages == used0
    assert p.rss_pages == 0
    assert ksm_counts(machine) == dict(pages_shared=0, pages_sharing=0, pages_unshared=0, ksm_zero_pages=32,
                                       stable_node_chains=0, stable_node_dups=0)
    assert p.read(a, 32 * PAGE_SIZE) == bytes(32 * PAGE_SIZE)
    assert machine.meminfo()["ksm_pages"] == 0


def test_zero_pages_next_to_ordinary_merges(machine):
    p, a = zero_merged(machine, 3, [page(5)] * 3 + [unique_page(0)])
    assert flags_of(p, a, 7) == [PTE_ZERO] * 3 + [PTE_KSM] * 3 + [PTE_PRESENT]
    assert ksm_counts(machine, "pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages") == dict(
        pages_shared=1, pages_sharing=2, pages_unshared=1, ksm_zero_pages=3)
    st = machine.ksm.stats
    assert st["rmap_items"] == 7 and st["pages_volatile"] == 3
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    # the zero pages' rmap_items are freed by the pass that finds no page
    assert st["rmap_items"] == 4 and st["pages_volatile"] == 0 and st["ksm_zero_pages"] == 3
    assert p.ksm_stat["ksm_rmap_items"] == 4 and p.ksm_stat["ksm_zero_pages"] == 3


def test_not_before_second_pass(machine):
    p, a = scanned_process(machine, [page(0)] * 4, 1, use_zero_pages=1)
    assert flags_of(p, a, 4) == [PTE_PRESENT] * 4
    assert machine.ksm.stats["ksm_zero_pages"] == 0
    machine.ksm.full_scan(1)
    assert flags_of(p, a, 4) == [PTE_ZERO] * 4


def test_unwritten_pages_are_not_scanned(machine):
    set_knobs(machine, use_zero_pages=1)
    p = machine.spawn()
    a = p.mmap(8 * PAGE_SIZE)
    p.madvise(a, 8 * PAGE_SIZE, MADV_MERGEABLE)
    assert machine.ksm.full_scan(3) == 0
    assert flags_of(p, a, 8) == [PTE_NONE] * 8
    assert machine.ksm.stats["ksm_zero_pages"] == 0 and machine.ksm.stats["rmap_items"] == 0


def test_write_unshares_a_zero_page(machine):
    p, a = zero_merged(machine, 10)
    p.write(a + 3 * PAGE_SIZE + 7, b"xyz")
    assert machine.ksm.stats["ksm_zero_pages"] == 9
    assert p.ksm_stat["ksm_zero_pages"] == 9
    assert flags_of(p, a, 10)[3] == PTE_PRESENT
    assert p.read(a + 3 * PAGE_SIZE, PAGE_SIZE) == bytes(7) + b"xyz" + bytes(PAGE_SIZE - 10)
    assert p.rss_pages == 1
    # writing zeros over a zero page also gives a private page
    p.write(a, bytes(PAGE_SIZE))
    assert machine.ksm.stats["ksm_zero_pages"] == 8
    assert flags_of(p, a, 1) == [PTE_PRESENT]


def test_unmergeable_unshares_zero_pages(machine):
    # ksm_functional_tests test_unmerge_zero_pages: half by MADV_UNMERGEABLE
    p, a = zero_merged(machine, 16)
    p.madvise(a, 8 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert machine.ksm.stats["ksm_zero_pages"] == 8
    assert p.ksm_stat["ksm_zero_pages"] == 8
    assert flags_of(p, a, 16) == [PTE_PRESENT] * 8 + [PTE_ZERO] * 8
    frames = frames_of(p, a, 8)
    assert len(set(frames)) == 8
    assert p.read(a, 16 * PAGE_SIZE) == bytes(16 * PAGE_SIZE)


def test_prctl_zero_and_run_2_unshare_zero_pages(machine):
    p, a, q, b = merge_any_pair(machine, [page(0)] * 5, [page(0)] * 6, use_zero_pages=1)
    assert machine.ksm.stats["ksm_zero_pages"] == 11
    p.prctl(PR_SET_MEMORY_MERGE, 0)
    assert flags_of(p, a, 5) == [PTE_PRESENT] * 5
    assert machine.ksm.stats["ksm_zero_pages"] == 6
    set_knobs(machine, run=2)
    assert flags_of(q, b, 6) == [PTE_PRESENT] * 6
    assert machine.ksm.stats["ksm_zero_pages"] == 0
    assert q.ksm_stat["ksm_zero_pages"] == 0


def test_munmap_and_exit_drop_zero_pages(machine):
    p, a = zero_merged(machine, 12)
    p.munmap(a + 4 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert machine.ksm.stats["ksm_zero_pages"] == 8
    assert p.ksm_stat["ksm_zero_pages"] == 8
    p.exit()
    assert machine.ksm.stats["ksm_zero_pages"] == 0


def test_fork_inherits_zero_pages(machine):
    p, a = zero_merged(machine, 6)
    child = p.fork()
    assert child.ksm_stat["ksm_zero_pages"] == 6
    assert machine.ksm.stats["ksm_zero_pages"] == 12
    assert flags_of(child, a, 6) == [PTE_ZERO] * 6
    child.write(a, b"c")
    assert child.ksm_stat["ksm_zero_pages"] == 5 and p.ksm_stat["ksm_zero_pages"] == 6
    assert p.read(a, 1) == b"\x00" and child.read(a, 1) == b"c"
    child.exit()
    assert machine.ksm.stats["ksm_zero_pages"] == 6


def test_turning_use_zero_pages_off_keeps_zero_pages(machine):
    p, a = zero_merged(machine, 4)
    set_knobs(machine, use_zero_pages=0)
    machine.ksm.full_scan(2)
    assert flags_of(p, a, 4) == [PTE_ZERO] * 4
    assert machine.ksm.stats["ksm_zero_pages"] == 4
    # new zero pages now merge with each other into a KSM page
    b = map_pages(p, [page(0)] * 3)
    machine.ksm.full_scan(2)
    assert flags_of(p, b, 3) == [PTE_KSM] * 3
    assert ksm_counts(machine, "pages_shared", "pages_sharing", "ksm_zero_pages") == dict(
        pages_shared=1, pages_sharing=2, ksm_zero_pages=4)


def test_turning_use_zero_pages_on_leaves_zero_ksm_pages(machine):
    p, a = scanned_process(machine, [page(0)] * 4, 2, smart_scan=0)
    assert flags_of(p, a, 4) == [PTE_KSM] * 4
    set_knobs(machine, use_zero_pages=1)
    b = map_pages(p, [page(0)] * 2)
    machine.ksm.full_scan(2)
    # KSM pages already merged stay; new zero pages take the zero page
    # before the stable tree is searched
    assert flags_of(p, a, 4) == [PTE_KSM] * 4
    assert flags_of(p, b, 2) == [PTE_ZERO] * 2
    assert ksm_counts(machine, "pages_shared", "pages_sharing", "ksm_zero_pages") == dict(
        pages_shared=1, pages_sharing=3, ksm_zero_pages=2)


def test_use_zero_pages_accepts_kstrtobool(machine):
    for text, value in (("y", 1), ("N", 0), ("on", 1), ("off", 0), ("1", 1), ("0", 0), ("Yes\n", 1)):
        machine.ksm.sysfs["use_zero_pages"] = text
        assert machine.ksm.sysfs["use_zero_pages"] == f"{value}\n"


@pytest.mark.parametrize("use_zero_pages", [1, 0])
def test_a_page_written_after_hashing_is_no_longer_known_zero(machine, use_zero_pages):
    """A zero page is found all zero when hashed, and later compares skip
    reading it while it stays unwritten: a write in between must end that.
    Pass 1 hashes 8 zero pages; then 4 of them get a byte each (all
    different), back to zero for 2 (zero again, but rehashed); the next passes merge only the
    6 pages that are zero, whether into the zero page or into one KSM page."""
    set_knobs(machine, use_zero_pages=use_zero_pages, smart_scan=0)
    p = machine.spawn()
    a = map_pages(p, [page(0)] * 8)
    machine.ksm.full_scan(1)
    for k in range(4):
        p.write(a + k * PAGE_SIZE + 100, bytes([k + 1]))
    for k in range(2):
        p.write(a + k * PAGE_SIZE + 100, b"\x00")
    machine.ksm.full_scan(3)
    machine.check()
    flags = flags_of(p, a, 8)
    assert flags[2:4] == [PTE_PRESENT] * 2
    if use_zero_pages:
        assert flags[:2] + flags[4:] == [PTE_ZERO] * 6
        assert machine.ksm.stats["ksm_zero_pages"] == 6
    else:
        assert flags[:2] + flags[4:] == [PTE_KSM] * 6
        assert (machine.ksm.stats["pages_shared"], machine.ksm.stats["pages_sharing"]) == (1, 5)
    want = bytearray(8 * PAGE_SIZE)
    want[2 * PAGE_SIZE + 100], want[3 * PAGE_SIZE + 100] = 3, 4
    assert p.read(a, 8 * PAGE_SIZE) == bytes(want)
