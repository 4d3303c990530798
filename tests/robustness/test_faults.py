"""Faults: whatever fails underneath, nothing written is lost, no frame or
loaned page is lost track of, and the system keeps working afterwards.

Each test makes one thing fail at every point it can (a sweep over the
fault's position), then checks with invariants.check_system() (reads
against the model, Machine.check(), KSM counters recomputed from the page
tables, frame accounting, the hypervisor's record), then lets the system
run on and checks it reaches the state it reaches without faults.

  core faults      KE_FAULT_FRAME_ALLOC (no frame: a 2009 merge, a COW
                   break, an unmerge), KE_FAULT_STABLE_INSERT (a merge whose
                   stable node cannot be inserted: break COW on both), a
                   really full arena, and calloc failing under the page
                   tables (fork, write) through calloc_shim.c in a subprocess
  hypervisor       H_PAGE_INIT failing during inflate, deflate and
                   migration (4 KiB and 1 KiB CMO pages), H_GET_MPP failing
"""
import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from cmm import CmmDriver, Hypervisor, SimClock
from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, Machine)
from ksm_engine._native import lib

from .invariants import HcallWatch, check_hypervisor, check_system
from .model import ModelProcess, pattern_page, unique_page

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# --- helpers ------------------------------------------------------------------

def spawn_with(m, pages, mergeable=True, name=None):
    """A process with one area holding ``pages`` (bytes each), and its model."""
    p, mp = m.spawn(name=name), ModelProcess()
    a = p.mmap(len(pages) * PAGE_SIZE)
    mp.mmap(a, len(pages))
    data = b"".join(pages)
    p.write(a, data)
    mp.write(a, data)
    if mergeable:
        p.madvise(a, len(pages) * PAGE_SIZE, MADV_MERGEABLE)
        mp.set_mergeable(a, len(pages), True)
    return p, mp, a


def hog_all(m, keep=0):
    """A process that takes every free frame but ``keep``; returns it and its model."""
    n = m.free_pages - keep
    p, mp = m.spawn(name="hog"), ModelProcess()
    if n > 0:
        a = p.mmap(n * PAGE_SIZE)
        mp.mmap(a, n)
        data = b"".join(unique_page(k) for k in range(n))
        p.write(a, data)
        mp.write(a, data)
    assert m.free_pages == keep
    return p, mp


def counters(m):
    st = m.ksm.stats
    return {k: st[k] for k in st if k not in ("pages_scanned", "pages_skipped", "full_scans",
                                                 "general_profit")}


def inject(m, point, after, count):
    assert lib.ke_fault_inject(m.ke_machine, point, after, count) == 0


DUPS = [pattern_page(1)] * 5 + [pattern_page(4), pattern_page(5)] * 3 + [pattern_page(6)] * 2


def dup_machine(compat=None, nprocs=3):
    """A machine whose processes hold many duplicate pages (within and
    across processes), mergeable."""
    m = Machine(ram="1MiB", ksm_compat=compat)
    procs = [spawn_with(m, DUPS, name=f"g{i}")[:2] for i in range(nprocs)]
    return m, procs


def settle(m, procs, passes=6):
    """Full scans, checking everything after each; returns the machine."""
    for _ in range(passes):
        m.ksm.full_scan(1)
        check_system(m, procs)
    return m


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
    ref_m, _ = dup_machine("2009")
    ref = []
    for _ in range(8):
        ref_m.ksm.full_scan(1)
        ref.append(counters(ref_m))
    assert ref_m.ksm.stats["kernel_pages_allocated"] == 4
    for after in range(0, 6):
        m, procs = dup_machine("2009")
        inject(m, lib.KE_FAULT_FRAME_ALLOC, after, 1)
        lagged = False
        for want in ref:
            m.ksm.full_scan(1)
            check_system(m, procs)
            lagged |= counters(m) != want
        assert counters(m) == ref[-1], f"fault after {after} allocations"
        assert lagged == (after < 4), f"fault after {after} allocations"


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
    ref_m, _ = dup_machine(compat)
    ref = []
    for _ in range(10):
        ref_m.ksm.full_scan(1)
        ref.append(counters(ref_m))
    assert len(ref_m.ksm.stable_nodes()) == 4
    for after in range(0, 6):
        m, procs = dup_machine(compat)
        inject(m, lib.KE_FAULT_STABLE_INSERT, after, 2)
        lagged = False
        for want in ref:
            m.ksm.full_scan(1)
            check_system(m, procs)
            lagged |= counters(m) != want
        assert counters(m) == ref[-1], f"stable insert failing after {after}"
        assert lagged == (after < 4), f"stable insert failing after {after}"


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


# --- calloc fails under the page tables (a subprocess with calloc_shim.c) -------

PT_SCRIPT = textwrap.dedent("""
    import ctypes, errno, json, sys
    shim = ctypes.CDLL(sys.argv[1])
    from ksm_engine import Machine, PAGE_SIZE
    libc = ctypes.CDLL("libc.so.6")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc.mallinfo2.restype = MallInfo2

    def heap():
        mi = libc.mallinfo2()
        return mi.uordblks + mi.hblkhd

    m = Machine(ram="4MiB")
    p = m.spawn(name="parent")
    pages = {}
    # pages spread over several leaves and middle tables (a leaf maps 2 MiB,
    # a middle table 8 GiB), so a fork allocates many page tables
    for i in range(24):
        a = (1 + i // 6) * (1 << 33) + (i % 6) * (1 << 21)
        p.mmap(PAGE_SIZE, addr=a)
        p.write(a, i.to_bytes(2, "little") * (PAGE_SIZE // 2))
        pages[a] = i.to_bytes(2, "little") * (PAGE_SIZE // 2)
    before = m.meminfo()
    out = {"fork_failures": 0, "write_failures": 0, "forked_at": None}
    heap0 = heap()
    for k in range(400):
        shim.calloc_shim_arm(k, 1)
        try:
            c = p.fork()
        except OSError as e:
            assert e.errno == errno.ENOMEM, e
            assert shim.calloc_shim_fired() == 1
            out["fork_failures"] += 1
            assert len(m.processes) == 1 and m.meminfo() == before
            m.check()
            assert all(p.read(a, PAGE_SIZE) == d for a, d in pages.items())
            continue
        finally:
            shim.calloc_shim_arm(-1, 0)
        out["forked_at"] = k
        assert all(c.read(a, PAGE_SIZE) == d for a, d in pages.items())
        c.exit()
        break
    out["heap_growth"] = heap() - heap0
    # a write that needs new page tables: ENOMEM twice (the retry after the
    # OOM notifiers fails too) leaves nothing behind
    for k in range(3):
        a = 7 << 33
        p.mmap(4 * PAGE_SIZE, addr=a + (1 << 21) - 2 * PAGE_SIZE)
        shim.calloc_shim_arm(k, 2)
        try:
            p.write(a + (1 << 21) - 2 * PAGE_SIZE, b"w" * (4 * PAGE_SIZE))
        except OSError as e:
            assert e.errno == errno.ENOMEM
            out["write_failures"] += 1
            assert m.meminfo() == before
        finally:
            shim.calloc_shim_arm(-1, 0)
        m.check()
        p.munmap(a + (1 << 21) - 2 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert all(p.read(a, PAGE_SIZE) == d for a, d in pages.items())
    c = p.fork()
    assert all(c.read(a, PAGE_SIZE) == d for a, d in pages.items())
    m.check()
    print(json.dumps(out))
""")


def _sanitized():
    return "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(_sanitized(), reason="calloc cannot be interposed under ASan "
                    "(libasan must come first in LD_PRELOAD and owns calloc)")
def test_page_table_allocation_failing_at_every_point_of_a_fork(tmp_path):
    """fork needs no frames but page tables: make the k-th page-table
    calloc fail for every k until the fork succeeds.  Each failed fork
    leaves no child, no frame, no leaked page table, and every page of the
    parent intact; so does a write whose page tables cannot be allocated."""
    shim = tmp_path / "calloc_shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                    str(shim), os.path.join(HERE, "calloc_shim.c")], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", PT_SCRIPT, str(shim)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # the child needs a top table, 4 middle tables and 24 leaves: 29 callocs
    assert out["fork_failures"] == out["forked_at"] >= 29
    assert out["write_failures"] == 3
    assert out["heap_growth"] < 64 * 1024, out


# --- hypercalls fail during inflate, deflate and migration ----------------------

def make_driver(cmo=1024, ram="4MiB"):
    m = Machine(ram=ram)
    hv = Hypervisor(cmo_page_size=cmo)
    clock = SimClock()
    drv = CmmDriver(m, hv, delay=1, hotplug_delay=1, oom_kb=64, min_mem_mb=0, clock=clock)
    HcallWatch(drv.partition)
    return m, drv, clock


def check_cmm(m, drv, procs=()):
    check_system(m, list(procs), drv)


def finish(m, drv, clock, procs=(), target_kb=512):
    """The system keeps working: faults cleared, the balloon reaches a new
    target exactly, gives everything back on unload, and every frame is
    free once the processes exit."""
    part = drv.partition
    part.fail_page_hcalls(0, 0)
    part.fail_get_mpp(0)
    drv.sysfs.write("oom_freed_kb", "0", admin=True)    # OOM no longer lowers targets
    part.set_loan_target(target_kb * 1024)
    clock.advance(3)
    check_cmm(m, drv, procs)
    # the hypervisor gets what it asks for, to the page; CMO pages a failed
    # set-active left loaned (cmm.c ignores that failure) count toward it
    assert target_kb * 1024 - PAGE_SIZE < part.loaned_bytes <= target_kb * 1024
    assert drv.loaned_kb * 1024 <= target_kb * 1024
    drv.unload()
    check_cmm(m, drv, procs)
    for p, _ in procs:
        p.exit()
    info = m.meminfo()
    assert info["free_pages"] == info["nr_frames"] == info["totalram_pages"]
    check_hypervisor(drv)


@pytest.mark.parametrize("cmo", [4096, 1024])
@pytest.mark.parametrize("count", [1, 2, 5])
def test_hcall_failures_during_inflate(cmo, count):
    """H_PAGE_INIT failing at every position of an inflate (on a CMO page
    in the middle of a guest page too, whose loaned CMO pages are set active
    again; with count > 1 that undo fails as well)."""
    calls_per_page = 4096 // cmo
    for after in range(0, 6 * calls_per_page + 1, max(1, calls_per_page // 2)):
        m, drv, clock = make_driver(cmo)
        p, mp, _ = spawn_with(m, [pattern_page(1), pattern_page(2)] * 8)
        drv.partition.fail_page_hcalls(after, count)
        drv.partition.set_loan_target(64 << 10)
        for _ in range(4):
            clock.advance(1)
            check_cmm(m, drv, [(p, mp)])
        assert drv.partition.calls["failed_page_init"] >= 1
        finish(m, drv, clock, [(p, mp)])


@pytest.mark.parametrize("cmo", [4096, 1024])
def test_hcall_failures_during_deflate(cmo):
    """A failing H_PAGE_SET_ACTIVE is ignored by cmm.c: the frame goes back
    to the machine all the same.  The hypervisor then still holds its CMO
    pages (from the failing one on); the frames are reused by processes
    without trouble and the balloon count stays exact."""
    calls_per_page = 4096 // cmo
    for after in range(0, 4 * calls_per_page, max(1, calls_per_page // 2)):
        m, drv, clock = make_driver(cmo)
        drv.partition.set_loan_target(32 << 10)
        clock.advance(1)
        assert drv.loaned_kb == 32
        drv.partition.fail_page_hcalls(after, 3)
        drv.partition.set_loan_target(0)
        clock.advance(1)
        assert drv.loaned_pages.read() == 0
        assert drv.partition.calls["failed_set_active"] >= 1
        check_cmm(m, drv)
        # the frames the balloon gave back are usable: fill the machine
        p, mp = hog_all(m)
        check_cmm(m, drv, [(p, mp)])
        p.exit()
        finish(m, drv, clock)


@pytest.mark.parametrize("cmo", [4096, 1024])
def test_hcall_failures_during_migration(cmo):
    """Compaction moves every balloon page: loaning the new frame failing
    gives EBUSY and the page stays where it was; setting the old one active
    failing is ignored.  Every outcome keeps the balloon and the record
    consistent."""
    calls_per_page = 4096 // cmo
    for after in range(0, 6 * calls_per_page, max(1, calls_per_page // 2)):
        m, drv, clock = make_driver(cmo)
        drv.partition.set_loan_target(16 << 10)
        clock.advance(1)
        drv.partition.fail_page_hcalls(after, 2)
        res = drv.compact()
        assert res.migrated + res.failed.get(errno.EBUSY, 0) == 4
        assert set(res.failed) <= {errno.EBUSY}
        assert drv.partition.calls["failed_page_init"] == 2
        check_cmm(m, drv)
        finish(m, drv, clock)


def test_compaction_with_no_free_frame_moves_nothing():
    m, drv, clock = make_driver()
    drv.partition.set_loan_target(16 << 10)
    clock.advance(1)
    hog = hog_all(m)
    res = drv.compact()
    assert res.migrated == 0 and res.failed == {errno.ENOMEM: 4}
    check_cmm(m, drv, [hog])
    hog[0].exit()
    res = drv.compact()
    assert res.migrated == 4 and not res.failed
    finish(m, drv, clock)


def test_h_get_mpp_failures_leave_the_target_and_lose_nothing():
    """H_GET_MPP failing: the target stays as it was and the thread keeps
    moving toward it; once the call works again the balloon follows the
    hypervisor."""
    m, drv, clock = make_driver()
    p, mp, _ = spawn_with(m, [pattern_page(3)] * 16)
    part = drv.partition
    part.set_loan_target(256 << 10)
    clock.advance(1)
    assert drv.loaned_kb == 256
    for fails in (1, 3, 10):
        part.fail_get_mpp(fails)
        part.set_loan_target((fails * 64) << 10)
        target = drv.loaned_pages_target
        for _ in range(fails):
            clock.advance(1)
            assert drv.loaned_pages_target == target
            check_cmm(m, drv, [(p, mp)])
        clock.advance(1)
        assert drv.loaned_kb == fails * 64
    assert part.calls["failed_get_mpp"] == 14
    finish(m, drv, clock, [(p, mp)])


def test_oom_while_hypercalls_fail():
    """A process runs the machine out of frames while the balloon is
    inflated and set-active hypercalls fail: the OOM notifier still gives
    frames back (their failures ignored), the write gets them, nothing
    written is lost."""
    m, drv, clock = make_driver(cmo=1024)
    drv.partition.set_loan_target(2 << 20)
    clock.advance(1)
    assert drv.loaned_kb == 2048
    drv.partition.fail_page_hcalls(0, 6)
    p, mp, a = spawn_with(m, [pattern_page(4)], mergeable=False)
    n = m.free_pages + 8
    b = p.mmap(n * PAGE_SIZE)
    mp.mmap(b, n)
    data = b"".join(unique_page(100 + k) for k in range(n))
    p.write(b, data)
    mp.write(b, data)
    assert drv.oom_freed_pages == 16
    check_cmm(m, drv, [(p, mp)])
    finish(m, drv, clock, [(p, mp)], target_kb=256)
