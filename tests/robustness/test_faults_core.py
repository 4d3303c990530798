"""Faults in the core: whatever fails underneath, nothing written is lost, no
frame is lost track of, and the system keeps working afterwards.

Each test makes one thing fail at every point it can (a sweep over the
fault's position), then checks with invariants.check_system() (reads
against the model, Machine.check(), KSM counters recomputed from the page
tables, frame accounting), then lets the system run on and checks it
reaches the state it reaches without faults.

  KE_FAULT_FRAME_ALLOC (no frame: a 2009 merge, a COW break, an unmerge),
  KE_FAULT_STABLE_INSERT (a merge whose stable node cannot be inserted:
  break COW on both), and a really full arena.

The helpers are in faults.py; calloc failing under the page tables is
test_faults_page_tables.py, the hypervisor's failures test_faults_hypervisor.py.
"""
import errno

import pytest

from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, Machine)
from ksm_engine._native import lib

from .invariants import check_system
from .faults import counters, dup_machine, hog_all, inject, reference_run, settle, spawn_with, sweep_fault
from .model import ModelProcess, pattern_page


# --- the arena runs out in the middle of a merge --------------------------------

def test_2009_merge_with_the_arena_full_merges_nothing_and_loses_nothing():
    """The 2009 KSM copies two identical pages into a new KSM frame: with no
    frame free the merge fails, both pages stay as they are, and once a
    frame is free the same scan merges them."""
    m, procs = dup_machine("2009", nprocs=2)
    m.ksm.full_scan(1)                      # checksums recorded, nothing merged yet
    hog = hog_all(m)
    procs.append(hog)
    settle(m, procs, passes=3)
    assert m.ksm.stats["kernel_pages_allocated"] == 0 and m.meminfo()["ksm_pages"] == 0
    hog[0].exit()
    procs.pop()
    settle(m, procs)
    assert counters(m) == counters(settle(*dup_machine("2009", nprocs=2)))
    assert m.ksm.stats["kernel_pages_allocated"] == 4


def test_frame_fault_at_every_point_of_the_2009_merges():
    """The 2009 KSM allocates a frame for every KSM page it makes (four
    here: one per duplicated content).  KE_FAULT_FRAME_ALLOC firing at the
    k-th allocation, for every k: that merge is put off (the counters lag
    the fault-free run's), everything stays consistent after each pass, and
    the end state is the fault-free one."""
    ref_m, ref = reference_run("2009", 8)
    assert ref_m.ksm.stats["kernel_pages_allocated"] == 4
    sweep_fault("2009", lib.KE_FAULT_FRAME_ALLOC, 1, ref, "fault after {after} allocations")


@pytest.mark.parametrize("compat", [None, "2009"])
def test_stable_insert_failure_breaks_cow_on_both(compat):
    """A merge whose stable node cannot be inserted: both pages get private
    copies again (break COW on both), nothing merged, contents intact."""
    m = Machine(ram="1MiB", ksm_compat=compat)
    p, mp, a = spawn_with(m, [pattern_page(1)] * 2)
    inject(m, lib.KE_FAULT_STABLE_INSERT, 0, 1)
    m.ksm.full_scan(2)
    check_system(m, [(p, mp)])
    pfns, flags = p.ptes(a, 2)
    assert flags == [1, 1] and pfns[0] != pfns[1]
    assert m.meminfo()["ksm_pages"] == 0 and m.ksm.stable_nodes() == []
    m.ksm.full_scan(2)                      # the fault was one-shot: now they merge
    check_system(m, [(p, mp)])
    assert p.ptes(a, 2)[1] == [3, 3]


@pytest.mark.parametrize("compat", [None, "2009"])
def test_stable_insert_failure_at_every_point(compat):
    """Four stable nodes get inserted on the way to the settled state;
    failing the k-th insertion (and the one after) for every k puts those
    merges off, keeps everything consistent, and ends where the fault-free
    run ends."""
    ref_m, ref = reference_run(compat, 10)
    assert len(ref_m.ksm.stable_nodes()) == 4
    sweep_fault(compat, lib.KE_FAULT_STABLE_INSERT, 2, ref, "stable insert failing after {after}")


@pytest.mark.parametrize("compat", [None, "2009"])
def test_stable_insert_failure_with_no_frame_to_break_cow_into(compat):
    """Breaking COW after a failed stable insert needs frames.  With the
    arena full: today's KSM merged in place, which freed the tree page's
    frame, so one copy succeeds and the other page simply stops being KSM;
    the 2009 KSM cannot even start the merge (it needs a new frame).
    Either way both pages read the same, neither is KSM, and writes work
    again once a frame is free."""
    m = Machine(ram="1MiB", ksm_compat=compat)
    p, mp, a = spawn_with(m, [pattern_page(2)] * 2)
    m.ksm.full_scan(1)
    hog = hog_all(m)
    procs = [(p, mp), hog]
    inject(m, lib.KE_FAULT_STABLE_INSERT, 0, 1)
    m.ksm.full_scan(1)
    check_system(m, procs)
    assert p.ptes(a, 2)[1] == [1, 1] and m.meminfo()["ksm_pages"] == 0
    assert m.free_pages == 0
    hog[0].munmap(min(hog[1].mapped), PAGE_SIZE)
    hog[1].munmap(min(hog[1].mapped), 1)
    for k in range(2):
        p.write(a + k * PAGE_SIZE, b"z")
        mp.write(a + k * PAGE_SIZE, b"z")
        check_system(m, procs)
    pfns = p.ptes(a, 2)[0]
    assert pfns[0] != pfns[1]


# --- the arena runs out in the middle of a COW break, an unmerge, run=2 ---------

def test_cow_break_with_the_arena_full_runs_the_oom_notifiers_then_fails_cleanly():
    m = Machine(ram="1MiB")
    p, mp, a = spawn_with(m, [pattern_page(1)] * 4)
    m.ksm.full_scan(2)
    c = p.fork()
    procs = [(p, mp), (c, mp.fork())]
    hog = hog_all(m)
    procs.append(hog)
    calls = []
    m.register_oom_notifier(lambda: calls.append(1) or 0)
    for proc, model, addr in ((p, mp, a), (c, procs[1][1], a)):
        for data in (b"x", b"y" * (3 * PAGE_SIZE)):        # a KSM page; KSM pages
            with pytest.raises(OSError) as e:
                proc.write(addr + 100, data)
            assert e.value.errno == errno.ENOMEM
            check_system(m, procs)
    assert len(calls) == 4
    hog[0].exit()
    procs.pop()
    p.write(a + 100, b"x" * (3 * PAGE_SIZE))
    mp.write(a + 100, b"x" * (3 * PAGE_SIZE))
    check_system(m, procs)


@pytest.mark.parametrize("count, fails", [(1, False), (2, True)])
def test_frame_fault_on_a_write_is_retried_once_after_the_oom_notifiers(count, fails):
    m = Machine(ram="1MiB")
    p, mp, a = spawn_with(m, [pattern_page(1)] * 2)
    m.ksm.full_scan(2)
    inject(m, lib.KE_FAULT_FRAME_ALLOC, 0, count)
    try:
        p.write(a, b"new")
    except OSError as e:
        assert fails and e.errno == errno.ENOMEM
    else:
        assert not fails
        mp.write(a, b"new")
    check_system(m, [(p, mp)])


def test_unmerge_with_the_arena_full():
    """MADV_UNMERGEABLE, prctl(PR_SET_MEMORY_MERGE, 0) and run=2 need a
    frame per KSM mapping: with none they fail with ENOMEM, as the kernel
    does, leaving everything consistent (and, for madvise over two areas,
    the first one unmerged and unmergeable for good: KSM must not merge it
    again); once frames are back all three work."""
    m = Machine(ram="1MiB")
    p, mp = m.spawn(name="two-areas"), ModelProcess()
    a = p.mmap(4 * PAGE_SIZE)
    p.mmap(4 * PAGE_SIZE, addr=a + 4 * PAGE_SIZE)
    mp.mmap(a, 8)
    p.write(a, pattern_page(3) * 8)
    mp.write(a, pattern_page(3) * 8)
    p.madvise(a, 8 * PAGE_SIZE, MADV_MERGEABLE)
    mp.set_mergeable(a, 8, True)
    q, mq, b = spawn_with(m, [pattern_page(3)] * 4, mergeable=False)
    q.prctl(PR_SET_MEMORY_MERGE, 1)
    mq.merge_any = True
    mq.set_mergeable(b, 4, True)
    m.ksm.full_scan(2)
    procs = [(p, mp), (q, mq)]
    check_system(m, procs)
    assert m.ksm.stats["pages_sharing"] == 11
    hog_p, hog_m = hog_all(m, keep=4)
    procs.append((hog_p, hog_m))
    # madvise: the first area (4 KSM pages) unmerges, the second cannot
    with pytest.raises(OSError) as e:
        p.madvise(a, 8 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert e.value.errno == errno.ENOMEM
    mp.set_mergeable(a, 4, False)
    check_system(m, procs)
    # prctl(0): no frame left: fails as a whole, every area stays mergeable
    with pytest.raises(OSError) as e:
        q.prctl(PR_SET_MEMORY_MERGE, 0)
    assert e.value.errno == errno.ENOMEM and q.prctl(PR_GET_MEMORY_MERGE) == 1
    check_system(m, procs)
    # run=2: ENOMEM, run falls back to 0 (mm/ksm.c run_store)
    with pytest.raises(OSError) as e:
        m.ksm.sysfs["run"] = "2"
    assert e.value.errno == errno.ENOMEM and m.ksm.sysfs["run"] == "0\n"
    check_system(m, procs)
    m.ksm.full_scan(2)                         # the first area is not merged again
    check_system(m, procs)
    assert p.ptes(a, 4)[1] == [1] * 4
    hog_p.exit()
    procs.pop()
    q.prctl(PR_SET_MEMORY_MERGE, 0)
    mq.merge_any = False
    mq.set_mergeable(b, 4, False)
    m.ksm.sysfs["run"] = "2"
    check_system(m, procs)
    assert m.meminfo()["ksm_pages"] == 0 and m.ksm.stats["rmap_items"] == 0
