"""run = 0 / 1 / 2 and the ksmd thread.

run (mm/ksm.c run_store): 0 stops ksmd, 1 runs it, 2 stops it and unmerges
everything: every KSM page and KSM zero page of every registered process
is broken, every rmap_item and stable node freed, the scan cursor goes back
to the head and full_scans to 0; the processes stay registered, so
writing 1 later scans (and merges) them again, from scratch: two passes.
If unmerging runs out of memory run is left at 0 and the write fails with
ENOMEM.

ksmd (ksm_scan_thread): while run has bit 0 set and a process is
registered, one ksm_do_scan(pages_to_scan) then a sleep of
sleep_millisecs, cut short when sleep_millisecs changes; otherwise it
waits for work (registration or run=1 wakes it).  The thread tests do not
poll: they wait on ksmd's batches (Batches below), each wait bounded at
10 s, never for how long something takes.
"""
import errno
import threading
import time

import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine

from .conftest import (PTE_KSM, PTE_PRESENT, PTE_ZERO, flags_of, frames_of, ksm_counts, map_pages, page,
                       set_knobs, unique_page)

WAIT = 10.0


class Batches:
    """ksmd's batches as they happen, so that the thread tests wait for
    events instead of polling the wall clock.

    It wraps the machine's ``scanner.do_scan``: every batch (ksmd's or the
    test's own) is logged and wakes the waiters.  What the tests wait for
    (counters, frames) changes only in a batch, so ``until(cond)`` re-checks
    cond after each batch and otherwise sleeps on a condition variable;
    ``quiet(cond, seconds)`` asserts that no batch comes during one bounded
    wait (a sleeping ksmd does nothing until woken or its sleep_millisecs
    are up: that is the property, and only time can show a wait is not cut
    short).  WAIT bounds every wait; nothing takes it unless a test fails.
    """

    def __init__(self, machine):
        self.cv = threading.Condition()
        self.log = []      # pages scanned by each batch, in order
        scanner = machine.ksm.scanner
        do_scan = scanner.do_scan

        def logged(budget):
            n = do_scan(budget)
            with self.cv:  # (ksmd holds the machine lock: never take it under cv)
                self.log.append(n)
                self.cv.notify_all()
            return n

        scanner.do_scan = logged

    def until(self, cond, timeout=WAIT):
        """Returns once cond() holds, checked now and after every batch;
        fails if that takes more than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.cv:
                seen = len(self.log)
            if cond():
                return
            with self.cv:
                if not self.cv.wait_for(lambda: len(self.log) > seen, deadline - time.monotonic()):
                    pytest.fail(f"condition not reached within {timeout} s")

    def quiet(self, cond, seconds=0.3):
        """cond() holds, no batch comes in ``seconds``, and cond() holds still."""
        assert cond()
        with self.cv:
            seen = len(self.log)
            assert not self.cv.wait_for(lambda: len(self.log) > seen, seconds), self.log[seen:]
        assert cond()


@pytest.fixture
def batches(machine):
    return Batches(machine)


def setup_merged(m):
    set_knobs(m, smart_scan=0, use_zero_pages=1, max_page_sharing=3)
    p, q = m.spawn(), m.spawn()
    a = map_pages(p, [page(1)] * 5 + [page(0)] * 2 + [unique_page(0)])
    b = map_pages(q, [page(1)] * 2 + [unique_page(1)])
    m.ksm.full_scan(2)
    # content 1: 7 mappings at max 3 -> dups of 3, 3 and the last one left
    # in the unstable tree; 2 zero pages; 2 unique pages unshared
    assert ksm_counts(m) == dict(pages_shared=2, pages_sharing=4, pages_unshared=3, ksm_zero_pages=2,
                                 stable_node_chains=1, stable_node_dups=2)
    return p, a, q, b


def test_defaults(machine):
    s = machine.ksm.sysfs
    assert (s["run"], s["pages_to_scan"], s["sleep_millisecs"]) == ("0\n", "100\n", "20\n")


def test_run_2_unmerges_everything(machine):
    p, a, q, b = setup_merged(machine)
    set_knobs(machine, run=2)
    assert machine.ksm.sysfs["run"] == "2\n"
    st = machine.ksm.stats
    for k in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "rmap_items",
              "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "full_scans"):
        assert st[k] == 0, k
    assert st["general_profit"] == 0
    assert st["pages_scanned"] == 2 * 11      # 11 pages, 2 passes: history is kept
    assert machine.ksm.stable_nodes() == []
    assert machine.meminfo()["ksm_pages"] == 0
    assert flags_of(p, a, 8) == [PTE_PRESENT] * 8
    assert flags_of(q, b, 3) == [PTE_PRESENT] * 3
    assert len(set(frames_of(p, a, 8)) | set(frames_of(q, b, 3))) == 11
    assert p.read(a, 8 * PAGE_SIZE) == page(1) * 5 + page(0) * 2 + unique_page(0)
    assert q.read(b, 3 * PAGE_SIZE) == page(1) * 2 + unique_page(1)
    # still registered, each with nothing left of KSM's bookkeeping
    for proc in (p, q):
        st = proc.ksm_stat
        assert st["ksm_mergeable"] == "yes" and machine.ksm.is_registered(proc)
        assert (st["ksm_rmap_items"], st["ksm_merging_pages"], st["ksm_zero_pages"]) == (0, 0, 0)
    assert [s.proc for s in machine.ksm.scanner.slots] == [p, q]


def test_scanning_resumes_after_run_1(machine):
    p, a, q, b = setup_merged(machine)
    set_knobs(machine, run=2)
    set_knobs(machine, run=1)
    machine.ksm.full_scan(1)
    st = machine.ksm.stats
    assert (st["full_scans"], st["pages_shared"], st["rmap_items"]) == (1, 0, 11)
    machine.ksm.full_scan(1)
    assert ksm_counts(machine) == dict(pages_shared=2, pages_sharing=4, pages_unshared=3, ksm_zero_pages=2,
                                       stable_node_chains=1, stable_node_dups=2)
    assert flags_of(p, a, 8) == [PTE_KSM] * 5 + [PTE_ZERO] * 2 + [PTE_PRESENT]


def test_run_2_mid_pass_restarts_from_the_head(machine):
    set_knobs(machine, smart_scan=0)
    p, q = machine.spawn(), machine.spawn()
    map_pages(p, [page(1)] * 4)
    map_pages(q, [page(1)] * 4)
    machine.ksm.full_scan(1)
    machine.ksm.scan(6)                       # in the middle of q
    assert machine.ksm.scanner.cursor == 1
    set_knobs(machine, run=2)
    assert machine.ksm.scanner.cursor is None and machine.ksm.stats["full_scans"] == 0
    set_knobs(machine, run=1)
    assert machine.ksm.scan(8) == 8           # all of p and q: a new pass
    assert machine.ksm.scan(8) == 0           # ... which ends here
    st = machine.ksm.stats
    assert (st["full_scans"], st["pages_shared"], st["rmap_items"]) == (1, 0, 8)
    machine.ksm.full_scan(1)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 7}


def test_run_2_twice_and_back_to_0(machine):
    setup_merged(machine)
    set_knobs(machine, run=2)
    set_knobs(machine, run=2)
    set_knobs(machine, run=0)
    assert machine.ksm.sysfs["run"] == "0\n"
    assert machine.ksm.stats["rmap_items"] == 0


def test_run_2_breaks_fork_children_too(machine):
    p, a, q, b = setup_merged(machine)
    child = p.fork()
    assert flags_of(child, a, 8)[:5] == [PTE_KSM] * 5
    set_knobs(machine, run=2)
    assert PTE_KSM not in flags_of(child, a, 8) and PTE_ZERO not in flags_of(child, a, 8)
    assert machine.meminfo()["ksm_pages"] == 0
    assert child.read(a, 8 * PAGE_SIZE) == p.read(a, 8 * PAGE_SIZE)


def test_run_2_out_of_memory_leaves_run_0():
    # 16 frames: 8 equal pages merged into 1 frame, the rest filled; the
    # 7 copies run=2 needs do not exist
    m = Machine(ram=16 * PAGE_SIZE)
    set_knobs(m, smart_scan=0)
    p = m.spawn()
    a = map_pages(p, [page(7)] * 8)
    m.ksm.full_scan(2)
    assert m.used_pages == 1
    filler = m.spawn()
    f = filler.mmap(15 * PAGE_SIZE)
    filler.write(f, b"".join(unique_page(i) for i in range(15)))
    assert m.free_pages == 0
    with pytest.raises(OSError) as e:
        m.ksm.sysfs["run"] = "2"
    assert e.value.errno == errno.ENOMEM
    assert m.ksm.sysfs["run"] == "0\n"
    assert p.read(a, 8 * PAGE_SIZE) == page(7) * 8
    m.check()
    filler.exit()
    m.ksm.sysfs["run"] = "2"
    assert m.ksm.sysfs["run"] == "2\n"
    assert len(set(frames_of(p, a, 8))) == 8
    m.check()


def test_run_rejects_other_values(machine):
    for bad in ("3", "4", "-1", "1.0", "two", " 1"):
        with pytest.raises(OSError) as e:
            machine.ksm.sysfs["run"] = bad
        assert e.value.errno == errno.EINVAL
    assert machine.ksm.sysfs["run"] == "0\n"


def test_processes_registered_during_run_2_go_to_the_tail(machine):
    setup_merged(machine)
    set_knobs(machine, run=2)
    r = machine.spawn()
    map_pages(r, [page(1)])
    assert [s.proc.pid for s in machine.ksm.scanner.slots][-1] == r.pid


# --- the ksmd thread -----------------------------------------------------------


def test_ksmd_merges_and_start_sets_run(machine, batches):
    set_knobs(machine, pages_to_scan=1000, sleep_millisecs=0)
    p = machine.spawn()
    a = map_pages(p, [page(0x2A)] * 10)
    assert machine.ksm.sysfs["run"] == "0\n"
    machine.ksm.start()
    try:
        assert machine.ksm.sysfs["run"] == "1\n"
        assert machine.ksm.ksmd_running
        batches.until(lambda: machine.ksm.stats["pages_sharing"] == 9)
        assert len(set(frames_of(p, a, 10))) == 1
    finally:
        machine.ksm.stop()
    assert not machine.ksm.ksmd_running
    assert machine.ksm.sysfs["run"] == "1\n"      # stop leaves run as it is


def test_ksmd_honours_pages_to_scan_and_sleep(machine, batches):
    set_knobs(machine, pages_to_scan=7, sleep_millisecs=100000)
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(20)])
    machine.ksm.start()
    try:
        batches.until(lambda: machine.ksm.stats["pages_scanned"] >= 7)
        # one batch of 7, then a 100 s sleep
        batches.quiet(lambda: machine.ksm.stats["pages_scanned"] == 7)
        # writing sleep_millisecs ends the sleep (ksm_iter_wait)
        set_knobs(machine, sleep_millisecs=0)
        batches.until(lambda: machine.ksm.stats["full_scans"] >= 3)
    finally:
        machine.ksm.stop()


def test_ksmd_batches_are_pages_to_scan(machine, batches):
    set_knobs(machine, pages_to_scan=3, sleep_millisecs=100000, smart_scan=0)
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(10)])
    machine.ksm.start()
    try:
        seen = []
        for _ in range(3):
            batches.until(lambda: machine.ksm.stats["pages_scanned"] > (seen[-1] if seen else 0))
            seen.append(machine.ksm.stats["pages_scanned"])
            batches.quiet(lambda: machine.ksm.stats["pages_scanned"] == seen[-1], 0.1)
            machine.ksm.sysfs["sleep_millisecs"] = "100001" if len(seen) % 2 else "100000"  # one more batch
        assert seen == [3, 6, 9]
    finally:
        machine.ksm.stop()


def test_ksmd_keeps_a_wakeup_that_comes_during_a_batch(machine, batches):
    """A sleep_millisecs write that lands while ksmd scans must still cut
    the sleep after that batch short (the kernel's wait re-checks the
    value).  The write is made to block on the machine lock during the
    first batch, and ksmd is made to start its wait only after the write
    and its wake-up are done: a wait that did not re-check the value
    under its queue's lock would miss that wake-up and sleep 100 s."""
    set_knobs(machine, pages_to_scan=1, sleep_millisecs=100000, smart_scan=0)
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(8)])
    ksmd = machine.ksm._ksmd
    started, written = threading.Event(), threading.Event()

    def write_sleep():
        machine.ksm.sysfs["sleep_millisecs"] = "100001"   # waits for the batch
        written.set()

    class WaitAfterWrite(threading.Condition):
        def __enter__(self):
            if started.is_set() and threading.current_thread().name == "ksmd":
                written.wait(WAIT)
            return super().__enter__()

    ksmd.wq._cv = WaitAfterWrite()
    real_do_scan = machine.ksm.scanner.do_scan

    def do_scan(budget):
        if not started.is_set():
            started.set()
            threading.Thread(target=write_sleep, daemon=True).start()
            time.sleep(0.05)              # the writer is now blocked on the lock
        return real_do_scan(budget)

    machine.ksm.scanner.do_scan = do_scan
    machine.ksm.start()
    try:
        batches.until(lambda: machine.ksm.stats["pages_scanned"] >= 2)
        assert written.is_set()
    finally:
        machine.ksm.stop()


def test_ksmd_honours_run_0_and_run_2(machine, batches):
    set_knobs(machine, pages_to_scan=50, sleep_millisecs=1)
    p = machine.spawn()
    map_pages(p, [page(3)] * 6 + [unique_page(i) for i in range(50)])
    machine.ksm.start()
    try:
        batches.until(lambda: machine.ksm.stats["pages_sharing"] == 5)
        set_knobs(machine, run=0)
        frozen = machine.ksm.stats["pages_scanned"]
        batches.quiet(lambda: machine.ksm.stats["pages_scanned"] == frozen)
        set_knobs(machine, run=2)
        assert machine.ksm.stats["rmap_items"] == 0
        batches.quiet(lambda: machine.ksm.stats["rmap_items"] == 0 and machine.ksm.stats["pages_scanned"] == frozen)
        set_knobs(machine, run=1)
        batches.until(lambda: machine.ksm.stats["pages_sharing"] == 5)
    finally:
        machine.ksm.stop()


def test_ksmd_wakes_for_a_new_process(machine, batches):
    set_knobs(machine, pages_to_scan=100, sleep_millisecs=0)
    machine.ksm.start()
    try:
        batches.quiet(lambda: machine.ksm.stats["pages_scanned"] == 0, 0.1)    # nothing registered
        p = machine.spawn()
        a = p.mmap(4 * PAGE_SIZE)
        p.write(a, page(8) * 4)
        p.madvise(a, 4 * PAGE_SIZE, MADV_MERGEABLE)
        batches.until(lambda: machine.ksm.stats["pages_sharing"] == 3)
    finally:
        machine.ksm.stop()


def test_ksmd_stop_ends_scanning(machine, batches):
    set_knobs(machine, pages_to_scan=10, sleep_millisecs=0)
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(40)])
    machine.ksm.start()
    batches.until(lambda: machine.ksm.stats["pages_scanned"] > 0)
    machine.ksm.stop()
    frozen = machine.ksm.stats["pages_scanned"]
    batches.quiet(lambda: machine.ksm.stats["pages_scanned"] == frozen)
    assert machine.ksm.sysfs["run"] == "1\n"
    # the caller may keep scanning by hand, and restart the thread
    machine.ksm.scan(5)
    machine.ksm.start()
    batches.until(lambda: machine.ksm.stats["pages_scanned"] > frozen + 5)
    machine.ksm.stop()


def test_user_threads_and_ksmd_share_the_machine(machine):
    set_knobs(machine, pages_to_scan=64, sleep_millisecs=0)
    procs = [machine.spawn() for _ in range(3)]
    addrs = [map_pages(p, [page(i % 3) for i in range(24)]) for p in procs]
    machine.ksm.start()
    try:
        for round_ in range(20):
            for p, a in zip(procs, addrs):
                p.write(a + (round_ % 24) * PAGE_SIZE, bytes([round_]) * 16)
            machine.check()
        for p, a in zip(procs, addrs):
            for k in range(24):
                expected = page(k % 3)
                if k < 20:
                    expected = bytes([k]) * 16 + expected[16:]
                assert p.read(a + k * PAGE_SIZE, PAGE_SIZE) == expected
    finally:
        machine.ksm.stop()
    machine.check()


def test_ksmd_sleep_ends_early_only_for_another_sleep_millisecs(machine, batches):
    """The kernel's sleep between batches waits on ksm_iter_wait for
    sleep_millisecs to change: writing another knob, the same
    sleep_millisecs, or registering a process does not end it; writing
    another value does."""
    set_knobs(machine, pages_to_scan=1, sleep_millisecs=100000, smart_scan=0)
    p = machine.spawn()
    map_pages(p, [unique_page(i) for i in range(8)])
    machine.ksm.start()
    try:
        batches.until(lambda: machine.ksm.stats["pages_scanned"] == 1)
        machine.ksm.sysfs["pages_to_scan"] = "2"
        machine.ksm.sysfs["sleep_millisecs"] = "100000"
        q = machine.spawn()
        map_pages(q, [unique_page(100 + i) for i in range(2)])
        batches.quiet(lambda: machine.ksm.stats["pages_scanned"] == 1)
        machine.ksm.sysfs["sleep_millisecs"] = "100001"
        batches.until(lambda: machine.ksm.stats["pages_scanned"] == 3)
    finally:
        machine.ksm.stop()
