"""The expectations of the kernel's own KSM selftests, on the engine.

tools/testing/selftests/mm/ksm_tests.c:
  * check_ksm_merge / assert_ksm_pages_count: N identical pages with
    M = max_page_sharing merge to shared = N/M, sharing = shared*(M-1)
    when N % M is 0 or 1, else shared = N/M + 1, sharing = N - shared;
  * 10 pages of one byte value: 1 shared, 9 sharing;
  * check_ksm_unmerge: two merged pages, each changed in one byte, one more
    full scan: 0 / 0;
  * check_ksm_zero_page_merge: 10 zero-filled pages merge to 1 / 9 with
    use_zero_pages=0, to 0 / 0 (10 ksm_zero_pages) with use_zero_pages=1;
  * ksm_merge_pages waits for 2 full scans: a first scan only records
    checksums, the second merges.
tools/testing/selftests/mm/ksm_functional_tests.c:
  * test_unmerge: after MADV_UNMERGEABLE no two pages of the range share
    a frame (range_maps_duplicates over pagemap; here Process.ptes);
  * test_prctl: PR_SET_MEMORY_MERGE / PR_GET_MEMORY_MERGE round trip;
  * test_prctl_fork: merge-any is inherited by a forked child, which then
    merges memory it maps without any madvise;
  * test_fork_ksm_merging_page_count: a forked child has 0 merging pages.
"""
import pytest

from ksm_engine import MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE, PR_SET_MEMORY_MERGE

from .conftest import PTE_KSM, flags_of, frames_of, ksm_counts, map_pages, page, set_knobs


def selftest_expectation(n, m):
    """assert_ksm_pages_count(n) with max_page_sharing m, as ksm_tests.c
    states it: (pages_shared, pages_sharing)."""
    if n % m in (0, 1):
        shared = n // m
        return shared, shared * (m - 1)
    shared = n // m + 1
    return shared, n - shared


@pytest.mark.parametrize("n,m", [
    (2, 2), (3, 2), (10, 2), (11, 2),
    (10, 3), (12, 3), (13, 3), (14, 3),
    (10, 4), (9, 4), (17, 4), (19, 5),
    (100, 256), (256, 256), (257, 256), (258, 256), (600, 256),
])
def test_max_page_sharing_formula(machine, n, m):
    set_knobs(machine, max_page_sharing=m)
    p = machine.spawn()
    map_pages(p, [page(0x2A)] * n)
    machine.ksm.full_scan(2)
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"]) == selftest_expectation(n, m)
    # the one page left over when n % m == 1 waits in the unstable tree
    assert st["pages_unshared"] == (1 if n % m == 1 and n > 1 else 0)


def test_formula_holds_across_processes(machine):
    # the same N pages spread over three processes: where they live does
    # not change how many KSM pages they need
    set_knobs(machine, max_page_sharing=4)
    procs = [machine.spawn() for _ in range(3)]
    for p, n in zip(procs, (5, 4, 4)):
        map_pages(p, [page(0x77)] * n)
    machine.ksm.full_scan(2)
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"]) == selftest_expectation(13, 4) == (3, 9)


def test_ten_pages_of_one_value(machine):
    p = machine.spawn()
    a = map_pages(p, [page(ord("*"))] * 10)
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 9}
    frames = frames_of(p, a, 10)
    assert len(set(frames)) == 1
    assert flags_of(p, a, 10) == [PTE_KSM] * 10
    assert p.read(a, 10 * PAGE_SIZE) == page(ord("*")) * 10


def test_merging_needs_exactly_two_full_scans(machine):
    p = machine.spawn()
    map_pages(p, [page(ord("*"))] * 10)
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    assert st["full_scans"] == 1
    assert (st["pages_shared"], st["pages_sharing"]) == (0, 0)
    # the first scan recorded checksums only: every item is volatile
    assert st["pages_volatile"] == 10 and st["pages_unshared"] == 0
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    assert st["full_scans"] == 2
    assert (st["pages_shared"], st["pages_sharing"]) == (1, 9)


def test_two_merged_pages_changed_unmerge(machine):
    p = machine.spawn()
    a = map_pages(p, [page(ord("*"))] * 2)
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 1}
    p.write(a, b"-")
    p.write(a + PAGE_SIZE, b"+")
    machine.ksm.full_scan(1)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 0, "pages_sharing": 0}
    assert p.read(a, 1) == b"-" and p.read(a + PAGE_SIZE, 1) == b"+"
    assert p.read(a + 1, PAGE_SIZE - 1) == page(ord("*"))[1:]
    f = frames_of(p, a, 2)
    assert f[0] != f[1] and None not in f
    assert flags_of(p, a, 2) == [1, 1]


@pytest.mark.parametrize("use_zero_pages", [0, 1])
def test_zero_page_merge(machine, use_zero_pages):
    set_knobs(machine, use_zero_pages=use_zero_pages)
    p = machine.spawn()
    a = map_pages(p, [page(0)] * 10)      # written: present zero-filled pages
    machine.ksm.full_scan(2)
    c = ksm_counts(machine, "pages_shared", "pages_sharing", "ksm_zero_pages")
    if use_zero_pages:
        assert c == {"pages_shared": 0, "pages_sharing": 0, "ksm_zero_pages": 10}
        assert p.ksm_stat["ksm_zero_pages"] == 10
        assert flags_of(p, a, 10) == [4] * 10
    else:
        assert c == {"pages_shared": 1, "pages_sharing": 9, "ksm_zero_pages": 0}
        assert flags_of(p, a, 10) == [PTE_KSM] * 10
    assert p.read(a, 10 * PAGE_SIZE) == bytes(10 * PAGE_SIZE)


def test_unmergeable_leaves_no_duplicates(machine):
    # test_unmerge: 2 MiB of 0xcf merged, then MADV_UNMERGEABLE
    n = (2 << 20) // PAGE_SIZE
    p = machine.spawn()
    a = map_pages(p, [page(0xCF)] * n)
    machine.ksm.full_scan(2)
    # 512 mappings at max_page_sharing 256: two KSM pages
    assert len(set(frames_of(p, a, n))) == 2
    assert PTE_KSM in flags_of(p, a, n)
    p.madvise(a, n * PAGE_SIZE, MADV_UNMERGEABLE)
    frames = frames_of(p, a, n)
    assert None not in frames and len(set(frames)) == n
    assert PTE_KSM not in flags_of(p, a, n)
    assert p.read(a, n * PAGE_SIZE) == page(0xCF) * n


def test_prctl_round_trip(machine):
    p = machine.spawn()
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0
    assert p.prctl(PR_SET_MEMORY_MERGE, 1) == 0
    assert p.prctl(PR_GET_MEMORY_MERGE) == 1
    assert p.prctl(PR_SET_MEMORY_MERGE, 0) == 0
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0


def test_prctl_inherited_across_fork_and_merges_in_child(machine):
    parent = machine.spawn()
    parent.prctl(PR_SET_MEMORY_MERGE, 1)
    child = parent.fork()
    assert child.prctl(PR_GET_MEMORY_MERGE) == 1
    assert child.ksm_stat["ksm_merge_any"] is not None and child.ksm_stat["ksm_merge_any"] == "yes"
    # test_child_ksm: the child maps and fills memory, with no madvise
    a = map_pages(child, [page(0xCF)] * 16, mergeable=False)
    machine.ksm.full_scan(2)
    assert child.ksm_stat["ksm_merging_pages"] == 16
    assert len(set(frames_of(child, a, 16))) == 1


def test_prctl_zero_not_inherited_when_unset(machine):
    parent = machine.spawn()
    parent.prctl(PR_SET_MEMORY_MERGE, 1)
    parent.prctl(PR_SET_MEMORY_MERGE, 0)
    assert parent.fork().prctl(PR_GET_MEMORY_MERGE) == 0


def test_forked_child_has_no_merging_pages(machine):
    # test_fork_ksm_merging_page_count
    n = (2 << 20) // PAGE_SIZE
    parent = machine.spawn()
    a = map_pages(parent, [page(0xCF)] * n)
    machine.ksm.full_scan(2)
    assert parent.ksm_stat["ksm_merging_pages"] == n
    child = parent.fork()
    st = child.ksm_stat
    assert st["ksm_merging_pages"] == 0
    assert st["ksm_rmap_items"] == 0
    assert st["ksm_zero_pages"] == 0
    assert st["ksm_process_profit"] == 0
    # the child is registered (its parent was) and maps the KSM pages, but
    # KSM does not know those mappings until it scans the child
    assert st["ksm_mergeable"] == "yes" and machine.ksm.is_registered(child)
    assert flags_of(child, a, n) == [PTE_KSM] * n
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": n - 2}
    # once ksmd scans the child its mappings join the stable nodes, even
    # past max_page_sharing (a KSM fork may exceed the limit)
    machine.ksm.full_scan(1)
    assert child.ksm_stat["ksm_merging_pages"] == n
    assert child.ksm_stat["ksm_rmap_items"] == n
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 2 * n - 2}
