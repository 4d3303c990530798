"""ksmd on the simulated clock: the same ksm_scan_thread() the real thread
runs (ksm/ksmd.py), its batches and sleeps in simulated time.

The thread tests in test_run_modes.py run it on real threads; here every
step is exact: a batch of pages_to_scan at each wake-up, sleep_millisecs of
simulated time between, an early wake-up only for another sleep_millisecs,
no batch while nothing is registered or run is 0.
"""
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine
from ksm_engine.clock import SimClock, Wait, WaitQueue

from .conftest import map_pages, page, set_knobs, unique_page


@pytest.fixture
def sim():
    clock = SimClock()
    m = Machine(ram="8MiB", clock=lambda: clock.now_ms)
    yield clock, m
    m.ksm.stop()
    m.check()


def scanned(m):
    return m.ksm.stats["pages_scanned"]


def unique_process(m, n, **knobs):
    """Knobs set (smart_scan off), a process with n distinct mergeable pages."""
    set_knobs(m, smart_scan=0, **knobs)
    p = m.spawn()
    map_pages(p, [unique_page(i) for i in range(n)])
    return p


def test_batches_and_sleeps_in_simulated_time(sim):
    clock, m = sim
    unique_process(m, 50, pages_to_scan=7, sleep_millisecs=100)
    times = []
    m.ksm.ksmd_hooks.append(lambda ksm, n: times.append((clock.now_ms, n)))
    m.ksm.start(clock)
    assert m.ksm.sysfs["run"] == "1\n" and m.ksm.ksmd_running
    assert scanned(m) == 7                      # the first batch at once
    clock.advance(0.099)
    assert scanned(m) == 7
    clock.advance(0.001)
    assert scanned(m) == 14
    clock.advance(0.5)
    assert scanned(m) == 49
    # a full scan of 50 pages ends a batch early (ksm_do_scan stops there)
    clock.advance(0.1)
    assert times[-1] == (700, 1) and scanned(m) == 50


def test_sleep_ends_early_only_for_another_sleep_millisecs(sim):
    clock, m = sim
    unique_process(m, 8, pages_to_scan=1, sleep_millisecs=100000)
    m.ksm.start(clock)
    assert scanned(m) == 1
    m.ksm.sysfs["pages_to_scan"] = "2"
    m.ksm.sysfs["sleep_millisecs"] = "100000"
    q = m.spawn()
    map_pages(q, [unique_page(100 + i) for i in range(2)])
    clock.advance(50)
    assert scanned(m) == 1
    m.ksm.sysfs["sleep_millisecs"] = "100001"  # wakes ksmd now
    clock.advance(0)
    assert scanned(m) == 3 and clock.now_ms == 50000
    clock.advance(100)
    assert scanned(m) == 3                      # asleep for 100.001 s again
    clock.advance(0.001)
    assert scanned(m) == 5


def test_no_batch_until_a_process_registers(sim):
    clock, m = sim
    set_knobs(m, pages_to_scan=100, sleep_millisecs=20)
    m.ksm.start(clock)
    clock.advance(10)
    assert scanned(m) == 0
    p = m.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    p.write(a, page(8) * 4)
    p.madvise(a, 4 * PAGE_SIZE, MADV_MERGEABLE)   # ksm_enter wakes ksmd
    clock.advance(0)
    assert scanned(m) == 4
    clock.advance(0.02)
    assert m.ksm.stats["pages_sharing"] == 3


def test_run_0_parks_ksmd_and_run_1_wakes_it(sim):
    clock, m = sim
    unique_process(m, 100, pages_to_scan=5, sleep_millisecs=10)
    m.ksm.start(clock)
    clock.advance(0.015)
    assert scanned(m) == 10
    set_knobs(m, run=0)
    clock.advance(5)             # the wake-up at 20 ms finds run=0: no batch
    assert scanned(m) == 10
    set_knobs(m, run=1)
    clock.advance(0)
    assert scanned(m) == 15


def test_machines_share_one_clock_deterministically():
    def run():
        clock = SimClock()
        order = []
        machines = []
        for i, sleep in enumerate((30, 70)):
            m = Machine(ram="4MiB", clock=lambda: clock.now_ms)
            set_knobs(m, pages_to_scan=3, sleep_millisecs=sleep)
            map_pages(m.spawn(), [unique_page(j) for j in range(40)])
            m.ksm.ksmd_hooks.append(lambda ksm, n, i=i: order.append((clock.now_ms, i, n)))
            m.ksm.start(clock)
            machines.append(m)
        clock.advance(0.5)
        for m in machines:
            m.ksm.stop()
            m.check()
        return order
    a = run()
    assert a == run()
    assert [t for t, i, _ in a if i == 0] == list(range(0, 501, 30))
    assert [t for t, i, _ in a if i == 1] == list(range(0, 501, 70))


def test_stop_from_a_hook_ends_the_thread_after_that_batch(sim):
    clock, m = sim
    set_knobs(m, pages_to_scan=2, sleep_millisecs=10)
    map_pages(m.spawn(), [unique_page(i) for i in range(20)])
    m.ksm.ksmd_hooks.append(lambda ksm, n: ksm.stats["pages_scanned"] >= 6 and ksm.stop())
    m.ksm.start(clock)
    assert clock.run_until(lambda: not m.ksm.ksmd_running)
    assert scanned(m) == 6 and clock.now_ms == 20
    clock.advance(1)
    assert scanned(m) == 6


def test_wait_with_a_true_condition_does_not_sleep():
    clock = SimClock()
    wq = WaitQueue()
    flag = []
    seen = []

    def body():
        yield Wait(wq, lambda: True, 1000)     # returns at once
        seen.append(clock.now_ms)
        yield Wait(wq, lambda: bool(flag))     # no time limit
        seen.append(clock.now_ms)
        yield 1

    k = clock.kthread_run(body(), "t")
    assert seen == [0]
    clock.advance(100)
    wq.wake_up()                               # condition false: stays asleep
    clock.advance(100)
    assert seen == [0]
    flag.append(1)
    wq.wake_up()
    clock.advance(0)
    assert seen == [0, 200000] and k.alive
    assert clock.run_until(lambda: not k.alive) and clock.now_ms == 201000
    assert not clock.run_until(lambda: False)  # no wake-up left
