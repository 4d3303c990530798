"""KSM's counters on small workloads, against values worked out by hand
from mm/ksm.c.

  pages_shared    KSM pages with at least one rmap_item on their stable node
  pages_sharing   sum over them of (rmap_items - 1)
  pages_unshared  rmap_items in the unstable tree
  pages_volatile  max(0, rmap_items - shared - sharing - unshared)
  pages_scanned   cmp_and_merge_page calls; full_scans: passes completed
  general_profit  (pages_sharing + ksm_zero_pages) * 4096 - rmap_items * 64
  ksm_stat        per mm: rmap_items, merging pages (its items on stable
                  nodes), zero pages, and
                  profit = (merging + zero) * 4096 - rmap_items * 64

The reference workload W (one process, smart_scan off so ages do not
matter): pages X X X Y Y U (U unique).
  pass 1: 6 rmap_items created, each checksum recorded; nothing merges.
  pass 2: X1 -> unstable tree; X2 finds X1: KSM page Kx {X1, X2}; X3 finds
          Kx in the stable tree; Y1 -> unstable; Y2 merges with it: Ky;
          U -> unstable.  shared 2, sharing 3, unshared 1, volatile 0.
  pass 3: the KSM pages are passed over (their items already hang on
          them); U is taken out of the old unstable tree and put back in
          the new one.  Nothing changes but pages_scanned.

Then: everything that unmerges (a write: COW; MADV_UNMERGEABLE; prctl 0;
run=2; exit; munmap) and the identity pages_shared + pages_sharing ==
ptes mapping KSM pages that KSM knows of (all of them but a fork child's
mappings the scanner has not reached yet).
"""
import pytest

from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_SET_MEMORY_MERGE)

from .conftest import (PTE_KSM, PTE_PRESENT, flags_of, frames_of, ksm_counts, ksm_mappings, map_pages,
                       merge_any_pair, page, set_knobs, unique_page)

RMAP_ITEM_SIZE = 64  # sizeof(struct ksm_rmap_item) on 64-bit


def profit(sharing, zero, items):
    return (sharing + zero) * PAGE_SIZE - items * RMAP_ITEM_SIZE


def workload_w(m):
    set_knobs(m, smart_scan=0)
    p = m.spawn()
    a = map_pages(p, [page(0x58)] * 3 + [page(0x59)] * 2 + [unique_page(1)])
    return p, a


def test_pass_by_pass_counters(machine):
    p, a = workload_w(machine)
    st = machine.ksm.stats
    assert st["rmap_items"] == 0 and st["general_profit"] == 0 and st["full_scans"] == 0

    assert machine.ksm.full_scan(1) == 6
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"], st["pages_unshared"], st["pages_volatile"]) == (0, 0, 0, 6)
    assert (st["pages_scanned"], st["full_scans"], st["rmap_items"]) == (6, 1, 6)
    assert st["general_profit"] == profit(0, 0, 6) == -384

    assert machine.ksm.full_scan(1) == 6
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"], st["pages_unshared"], st["pages_volatile"]) == (2, 3, 1, 0)
    assert (st["pages_scanned"], st["full_scans"], st["rmap_items"]) == (12, 2, 6)
    assert st["general_profit"] == profit(3, 0, 6) == 11904
    assert st["stable_node_chains"] == st["stable_node_dups"] == st["ksm_zero_pages"] == 0

    machine.ksm.full_scan(1)
    st2 = machine.ksm.stats
    assert st2["pages_scanned"] == 18 and st2["full_scans"] == 3
    for k in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "general_profit"):
        assert st2[k] == st[k], k

    frames = frames_of(p, a, 6)
    assert frames[0] == frames[1] == frames[2] != frames[3] == frames[4] != frames[5]
    assert flags_of(p, a, 6) == [PTE_KSM] * 5 + [PTE_PRESENT]


def test_sysfs_text_matches_stats(machine):
    workload_w(machine)
    machine.ksm.full_scan(2)
    st = machine.ksm.stats
    for name in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "pages_scanned",
                 "pages_skipped", "full_scans", "stable_node_chains", "stable_node_dups",
                 "ksm_zero_pages", "general_profit"):
        assert machine.ksm.sysfs[name] == f"{st[name]}\n"
    assert machine.ksm.sysfs["general_profit"] == "11904\n"


def test_ksm_stat_profit(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    st = p.ksm_stat
    assert st["ksm_rmap_items"] == 6
    assert st["ksm_merging_pages"] == 5          # every item on a stable node
    assert st["ksm_zero_pages"] == 0
    assert st["ksm_process_profit"] == 5 * PAGE_SIZE - 6 * RMAP_ITEM_SIZE == 20096
    assert st["ksm_mergeable"] == "yes" and st["ksm_merge_any"] == "no"
    assert p.ksm_stat_text() == (
        "ksm_rmap_items 6\nksm_zero_pages 0\nksm_merging_pages 5\n"
        "ksm_process_profit 20096\nksm_merge_any: no\nksm_mergeable: yes\n")


def test_ksm_stat_per_process_and_zero_pages(machine):
    # P: 4 copies of A + 2 zero pages; Q: 1 copy of A + 3 unique pages.
    set_knobs(machine, smart_scan=0, use_zero_pages=1)
    p, q = machine.spawn(), machine.spawn()
    map_pages(p, [page(0xA0)] * 4 + [page(0)] * 2)
    map_pages(q, [page(0xA0)] + [unique_page(k) for k in range(3)])
    machine.ksm.full_scan(2)
    sp, sq = p.ksm_stat, q.ksm_stat
    assert (sp["ksm_rmap_items"], sp["ksm_merging_pages"], sp["ksm_zero_pages"]) == (6, 4, 2)
    assert sp["ksm_process_profit"] == 6 * PAGE_SIZE - 6 * 64
    assert (sq["ksm_rmap_items"], sq["ksm_merging_pages"], sq["ksm_zero_pages"]) == (4, 1, 0)
    assert sq["ksm_process_profit"] == PAGE_SIZE - 4 * 64
    st = machine.ksm.stats
    # one KSM page with 5 mappings; 3 unique pages unshared; the zero-page
    # items stay (volatile) until the next pass frees them
    assert (st["pages_shared"], st["pages_sharing"], st["pages_unshared"]) == (1, 4, 3)
    assert st["ksm_zero_pages"] == 2 and st["rmap_items"] == 10
    assert st["pages_volatile"] == 10 - 1 - 4 - 3 == 2
    assert st["general_profit"] == profit(4, 2, 10)
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    assert st["rmap_items"] == 8 and st["pages_volatile"] == 0 and st["ksm_zero_pages"] == 2
    assert st["general_profit"] == profit(4, 2, 8)
    assert p.ksm_stat["ksm_rmap_items"] == 4
    assert p.ksm_stat["ksm_process_profit"] == 6 * PAGE_SIZE - 4 * 64


def test_volatile_page(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    p.write(a + 5 * PAGE_SIZE, b"changed")       # U changes between passes
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    # U's checksum changed: it stays out of both trees this pass
    assert (st["pages_unshared"], st["pages_volatile"]) == (0, 1)
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    assert (st["pages_unshared"], st["pages_volatile"]) == (1, 0)


def test_pages_scanned_counts_present_pages_only(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    a = p.mmap(16 * PAGE_SIZE)
    p.madvise(a, 16 * PAGE_SIZE, MADV_MERGEABLE)
    p.write(a + 3 * PAGE_SIZE, b"x")                 # 1 present page
    p.fill(a + 8 * PAGE_SIZE, 1, 4 * PAGE_SIZE)      # 4 more
    q = machine.spawn()
    b = map_pages(q, [unique_page(k) for k in range(3)], mergeable=False)   # not mergeable
    assert machine.ksm.full_scan(1) == 5
    st = machine.ksm.stats
    assert (st["pages_scanned"], st["rmap_items"]) == (5, 5)
    assert q.ksm_stat["ksm_rmap_items"] == 0 and q.ksm_stat["ksm_mergeable"] == "no"
    assert b  # q's pages exist but KSM never looks at them


def test_scan_batches_add_up(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    map_pages(p, [unique_page(k) for k in range(10)])
    # ksm_do_scan(4) three times: 4, 4, then the last 2 pages; the batch
    # that reaches the end of the pass ends there, with full_scans bumped
    assert [machine.ksm.scan(4) for _ in range(3)] == [4, 4, 2]
    st = machine.ksm.stats
    assert (st["full_scans"], st["pages_scanned"]) == (1, 10)
    # the next batch starts the second pass
    assert machine.ksm.scan(4) == 4
    assert machine.ksm.stats["full_scans"] == 1
    assert machine.ksm.scan(100) == 6
    st = machine.ksm.stats
    assert (st["full_scans"], st["pages_scanned"]) == (2, 20)
    assert machine.ksm.scan(0) == 0
    assert machine.ksm.stats["full_scans"] == 2


def assert_identity(m, unscanned=0):
    """pages_shared + pages_sharing == ptes mapping KSM pages - those no
    rmap_item tracks yet; and m.check() agrees."""
    st = m.ksm.stats
    assert st["pages_shared"] + st["pages_sharing"] == ksm_mappings(m) - unscanned
    m.check()


def test_identity_with_fork_children(machine):
    set_knobs(machine, smart_scan=0)
    p, q = machine.spawn(), machine.spawn()
    a = map_pages(p, [page(1)] * 3 + [page(2)] * 2 + [unique_page(0)])
    map_pages(q, [page(1), page(2), unique_page(1)])
    machine.ksm.full_scan(2)
    assert_identity(machine)
    assert ksm_mappings(machine) == 7
    child = p.fork()
    # the child maps 5 KSM pages no rmap_item knows of yet
    assert ksm_mappings(machine) == 12
    assert_identity(machine, unscanned=5)
    p.write(a, b"\x09")                              # COW in the parent
    assert_identity(machine, unscanned=5)
    machine.ksm.full_scan(1)
    assert_identity(machine)
    assert child.ksm_stat["ksm_merging_pages"] == 5


def test_write_unmerges(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    before = frames_of(p, a, 6)
    p.write(a + PAGE_SIZE + 100, b"!")                 # X2 copied on write
    after = frames_of(p, a, 6)
    assert after[1] != before[1] and after[0] == after[2] == before[0]
    assert flags_of(p, a, 3) == [PTE_KSM, PTE_PRESENT, PTE_KSM]
    assert (p.read(a + PAGE_SIZE, PAGE_SIZE)
            == page(0x58)[:100] + b"!" + page(0x58)[101:])
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 2}
    assert p.ksm_stat["ksm_merging_pages"] == 4
    # a write that leaves the content unchanged still copies (a KSM page
    # is never written in place); the next scans merge it back
    p.write(a + 3 * PAGE_SIZE, page(0x59)[:10])
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 1}
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 2}
    assert_identity(machine)


def test_write_to_both_pages_of_a_pair(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    p.write(a + 3 * PAGE_SIZE, b"1")
    # Ky keeps one mapping: still a KSM page, still counted as shared
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 2}
    p.write(a + 4 * PAGE_SIZE, b"2")
    # its last mapping gone, Ky is freed
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 2}
    assert machine.meminfo()["ksm_pages"] == 1
    machine.ksm.full_scan(1)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 2}


def test_madvise_unmergeable_unmerges(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    p.madvise(a + PAGE_SIZE, 3 * PAGE_SIZE, MADV_UNMERGEABLE)     # X2 X3 Y1
    assert flags_of(p, a, 6) == [PTE_KSM, PTE_PRESENT, PTE_PRESENT, PTE_PRESENT, PTE_KSM, PTE_PRESENT]
    st = machine.ksm.stats
    # Kx keeps X1, Ky keeps Y2; the 3 unmerged pages lose their rmap_items
    assert (st["pages_shared"], st["pages_sharing"], st["rmap_items"]) == (2, 0, 3)
    assert p.read(a, 6 * PAGE_SIZE) == page(0x58) * 3 + page(0x59) * 2 + unique_page(1)
    machine.ksm.full_scan(3)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 0}
    assert_identity(machine)


def test_prctl_zero_unmerges(machine):
    p, a, q, b = merge_any_pair(machine, [page(7)] * 4, [page(7)] * 2, smart_scan=0)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 5}
    p.prctl(PR_SET_MEMORY_MERGE, 0)
    assert flags_of(p, a, 4) == [PTE_PRESENT] * 4
    assert len(set(frames_of(p, a, 4))) == 4
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 1}
    assert p.ksm_stat["ksm_rmap_items"] == 0
    assert flags_of(q, b, 2) == [PTE_KSM] * 2
    assert p.read(a, 4 * PAGE_SIZE) == page(7) * 4
    machine.ksm.full_scan(2)
    # p's areas are no longer mergeable: nothing of p merges again
    assert flags_of(p, a, 4) == [PTE_PRESENT] * 4
    assert not machine.ksm.is_registered(p)


def test_run_2_unmerges(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    set_knobs(machine, run=2)
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"], st["pages_unshared"], st["rmap_items"]) == (0, 0, 0, 0)
    assert st["full_scans"] == 0
    assert PTE_KSM not in flags_of(p, a, 6)
    assert len(set(frames_of(p, a, 6))) == 6
    assert machine.meminfo()["ksm_pages"] == 0


def test_exit_unmerges(machine):
    set_knobs(machine, smart_scan=0)
    procs = [machine.spawn() for _ in range(3)]
    addrs = [map_pages(p, [page(0xEE), unique_page(i)]) for i, p in enumerate(procs)]
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 2}
    procs[1].exit()
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 1}
    assert machine.ksm.stats["rmap_items"] == 4
    procs[0].exit()
    # one mapping left: the KSM page stays, shared by nobody
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 0}
    machine.ksm.full_scan(1)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 0}
    assert flags_of(procs[2], addrs[2], 1) == [PTE_KSM]
    procs[2].exit()
    st = machine.ksm.stats
    assert (st["pages_shared"], st["rmap_items"]) == (0, 0)
    assert machine.meminfo()["ksm_pages"] == 0 and machine.used_pages == 0


def test_munmap_unmerges(machine):
    p, a = workload_w(machine)
    machine.ksm.full_scan(2)
    p.munmap(a + PAGE_SIZE, 2 * PAGE_SIZE)        # X2, X3
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"], st["rmap_items"]) == (2, 1, 4)
    assert p.ksm_stat["ksm_merging_pages"] == 3
    machine.ksm.full_scan(1)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 1}
    p.munmap(a, 6 * PAGE_SIZE)
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"], st["rmap_items"], st["pages_unshared"]) == (0, 0, 0, 0)
    # nothing mergeable is left: the next pass drops p from the scan list
    machine.ksm.full_scan(1)
    assert not machine.ksm.is_registered(p)


@pytest.mark.parametrize("unmerge", ["write", "madvise", "prctl", "run2", "exit", "munmap"])
def test_every_unmerge_keeps_the_identity(machine, unmerge):
    set_knobs(machine, smart_scan=0)
    p, q = machine.spawn(), machine.spawn()
    p.prctl(PR_SET_MEMORY_MERGE, 1)
    a = map_pages(p, [page(3)] * 5 + [page(4)] * 2, mergeable=False)
    map_pages(q, [page(3)] * 2 + [page(4)])
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 8}
    assert_identity(machine)
    if unmerge == "write":
        p.write(a + 2 * PAGE_SIZE, b"w" * (3 * PAGE_SIZE))
    elif unmerge == "madvise":
        p.madvise(a + 2 * PAGE_SIZE, 3 * PAGE_SIZE, MADV_UNMERGEABLE)
    elif unmerge == "prctl":
        p.prctl(PR_SET_MEMORY_MERGE, 0)
    elif unmerge == "run2":
        set_knobs(machine, run=2)
    elif unmerge == "exit":
        p.exit()
    else:
        p.munmap(a + 2 * PAGE_SIZE, 3 * PAGE_SIZE)
    assert_identity(machine)
    expected = {"write": (2, 5), "madvise": (2, 5), "prctl": (2, 1), "run2": (0, 0),
                "exit": (2, 1), "munmap": (2, 5)}[unmerge]
    st = machine.ksm.stats
    assert (st["pages_shared"], st["pages_sharing"]) == expected
    machine.ksm.full_scan(2)
    assert_identity(machine)


@pytest.mark.parametrize("bad, exc", [(1.5, TypeError), (float("inf"), TypeError), (True, TypeError),
                                      ("2", TypeError), (None, TypeError), (-3, ValueError)])
def test_scan_and_full_scan_refuse_what_is_not_a_count(machine, bad, exc):
    """scan(n) and full_scan(passes) take an int >= 0: anything else is
    refused before any page is scanned (full_scan(inf) once spun forever)."""
    p = machine.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    p.write(a, b"x" * 4 * PAGE_SIZE)
    p.madvise(a, 4 * PAGE_SIZE, MADV_MERGEABLE)
    with pytest.raises(exc):
        machine.ksm.full_scan(bad)
    with pytest.raises(exc):
        machine.ksm.scan(bad)
    st = machine.ksm.stats
    assert st["pages_scanned"] == 0 and st["full_scans"] == 0
    assert machine.ksm.full_scan(0) == 0
    assert machine.ksm.full_scan(2) == 8 and machine.ksm.stats["full_scans"] == 2


def test_perf_counters_count_the_work(machine):
    """perf_counters(): a page is hashed once while unwritten (the later
    passes reuse its checksum), and the trees are walked ahead of the scan
    (prewalk_steps) once they hold nodes; writing a page makes it hashed
    again."""
    import os
    p = machine.spawn()
    n = 64
    a = p.mmap(n * PAGE_SIZE)
    p.write(a, os.urandom(n * PAGE_SIZE))
    p.madvise(a, n * PAGE_SIZE, MADV_MERGEABLE)
    machine.ksm.full_scan(1)
    pc = machine.ksm.perf_counters()
    assert pc["checksums"] == n and pc["checksums_avoided"] == 0
    assert pc["prewalk_steps"] == 0  # pass 1: no tree yet, nothing to walk ahead
    machine.ksm.full_scan(2)
    pc = machine.ksm.perf_counters()
    assert pc["checksums"] == n and pc["checksums_avoided"] == 2 * n
    assert pc["prewalk_steps"] > n  # the unstable tree, rebuilt each pass
    p.write(a, b"new")
    machine.ksm.full_scan(1)
    assert machine.ksm.perf_counters()["checksums"] == n + 1
