"""Faults in the hypervisor: H_PAGE_INIT failing during inflate, deflate and
migration (4 KiB and 1 KiB CMO pages), H_GET_MPP failing.  Whatever fails,
nothing written is lost, no frame or loaned page is lost track of
(invariants.check_system and check_hypervisor), and the balloon reaches its
target afterwards.
"""
import errno

import pytest

from cmm import CmmDriver, Hypervisor, SimClock
from ksm_engine import PAGE_SIZE, Machine

from .invariants import HcallWatch, check_hypervisor, check_system
from .faults import hog_all, spawn_with
from .model import pattern_page, unique_page


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
