"""The driver on the real clock: a real cmm thread polling while processes of
the machine run out of memory in other threads.  No timing is asserted: the
tests wait (with a generous limit) for rounds to happen."""
import threading

from cmm import CmmDriver, RealClock
from cmm.hypervisor import PAGE_SIZE

from .conftest import MIN_MEM_MB, check_invariants

LIMIT = 60


def wait_rounds(drv, n):
    """Block until the thread has finished ``n`` more rounds."""
    done = threading.Event()
    start = drv.stats["rounds"]

    def hook(d, ok):
        if d.stats["rounds"] >= start + n:
            done.set()

    drv.poll_hooks.append(hook)
    assert done.wait(LIMIT), "the cmm thread made no progress"
    drv.poll_hooks.remove(hook)


def test_real_thread_loans_and_stops(machine, hv):
    # delay=0: msleep_interruptible(0) sleeps one jiffy, so rounds come fast
    drv = CmmDriver(machine, hv, delay=0, min_mem_mb=MIN_MEM_MB, clock=RealClock())
    try:
        drv.partition.set_loan_target(8 << 20)
        wait_rounds(drv, 2)
        assert drv.loaned_pages.read() == 2048
        drv.partition.set_loan_target(1 << 20)
        wait_rounds(drv, 2)
        assert drv.loaned_pages.read() == 256
        thread = drv.cmm_thread_ptr
        drv.params.write("disable", "1")        # kthread_stop() joins the thread
        assert not thread.alive and thread.error is None
        check_invariants(drv)
    finally:
        drv.unload()
    check_invariants(drv)


def test_real_thread_with_oom_from_another_thread(machine, hv):
    drv = CmmDriver(machine, hv, delay=0, min_mem_mb=MIN_MEM_MB, oom_kb=1024,
                    clock=RealClock())
    try:
        drv.partition.set_loan_target(40 << 20)
        wait_rounds(drv, 1)
        errors = []

        def hog():
            try:
                p = machine.spawn(name="hog")
                n = machine.free_pages + 512
                a = p.mmap(n * PAGE_SIZE)
                for i in range(0, n, 64):
                    k = min(64, n - i)
                    p.write(a + i * PAGE_SIZE, b"\x07" * (k * PAGE_SIZE))
            except BaseException as e:      # pragma: no cover - reported below
                errors.append(e)

        t = threading.Thread(target=hog)
        t.start()
        t.join(LIMIT)
        assert not t.is_alive() and not errors
        assert drv.oom_freed_pages >= 512
        wait_rounds(drv, 2)
        drv.params.write("disable", "1")
        check_invariants(drv)
    finally:
        drv.unload()
    check_invariants(drv)
    assert drv.cmm_thread_ptr is None
