"""CmmDriver against cmm.c, branch by branch, on a simulated clock: the cmm
thread's rounds, cmm_get_mpp's arithmetic, simulate mode and the debug log."""
import errno
import logging

import pytest

from cmm import CmmDriver, Hypervisor
from cmm.hypervisor import H_HARDWARE, PAGE_SIZE

from .conftest import (MAX_LOAN, MIN_MEM_MB, MIN_MEM_PAGES, NR_FRAMES, check_invariants, loaned_driver,
                       record_hcalls, target_kb)


# ---------------------------------------------------------------- the thread
def test_thread_first_wakes_at_delay(make_driver, clock):
    drv = make_driver(delay=3)
    target_kb(drv, 4096)
    clock.advance(2.999)
    assert drv.loaned_pages.read() == 0 and drv.stats["rounds"] == 0
    clock.advance(0.001)
    assert drv.loaned_pages.read() == 1024 and drv.stats["rounds"] == 1
    assert drv.sysfs["loaned_kb"] == "4096\n"
    assert drv.sysfs["loaned_target_kb"] == "4096\n"
    clock.advance(30)
    assert drv.stats["rounds"] == 11


def test_thread_follows_hypervisor_up_and_down(make_driver, clock, machine):
    drv = make_driver()
    target_kb(drv, 8192)
    clock.advance(1)
    assert drv.loaned_pages.read() == 2048
    assert machine.totalram_pages == NR_FRAMES - 2048
    assert drv.partition.loan_request == 0
    check_invariants(drv)
    target_kb(drv, 2048)
    clock.advance(1)
    assert drv.loaned_pages.read() == 512
    assert drv.partition.loaned_kb == 2048
    check_invariants(drv)


def test_delay_change_applies_after_current_sleep(make_driver, clock):
    drv = make_driver(delay=1)
    clock.advance(0.5)
    drv.params.write("delay", "10")
    clock.advance(0.5)                       # the 1 s sleep ends at t=1
    assert drv.stats["rounds"] == 1
    clock.advance(9.999)
    assert drv.stats["rounds"] == 1
    clock.advance(0.001)
    assert drv.stats["rounds"] == 2


def test_delay_zero_sleeps_one_jiffy(make_driver, clock):
    drv = make_driver(delay=0)
    clock.advance(0.1)
    assert drv.stats["rounds"] == 10


def test_min_mem_caps_the_loan(make_driver, clock, machine):
    drv = make_driver()
    target_kb(drv, 1 << 30)
    clock.advance(1)
    assert drv.loaned_pages.read() == MAX_LOAN
    assert machine.totalram_pages == MIN_MEM_PAGES
    check_invariants(drv)


def test_get_mpp_failure_keeps_target(make_driver, clock):
    drv = loaned_driver(make_driver, clock)
    drv.partition.fail_get_mpp(3)
    target_kb(drv, 0)
    clock.advance(3)
    assert drv.stats["mpp_failures"] == 3
    assert drv.loaned_pages.read() == 1024 and drv.loaned_pages_target == 1024
    clock.advance(1)
    assert drv.loaned_pages.read() == 0


def test_get_mpp_failure_thread_still_pursues_old_target(make_driver, clock):
    drv = loaned_driver(make_driver, clock)
    drv.cmm_free_pages(100)                 # something else deflated
    drv.partition.fail_get_mpp(1)
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024  # back to the unchanged target


def test_alloc_short_sets_target_to_count_before(make_driver, clock, machine):
    drv = loaned_driver(make_driver, clock)
    # fill every free frame but 100 with a process
    p = machine.spawn(name="hog")
    n = machine.free_pages - 100
    a = p.mmap(n * PAGE_SIZE)
    p.write(a, b"\x01" * (n * PAGE_SIZE))
    target_kb(drv, 8192)
    clock.advance(1)
    assert drv.stats["alloc_short"] == 1
    assert drv.loaned_pages.read() == 1124
    # cmm_thread sets the target to the count read *before* allocating
    assert drv.loaned_pages_target == 1024
    assert drv.sysfs["loaned_target_kb"] == "4096\n"
    # ... so if H_GET_MPP then fails, the next round frees back to it
    drv.partition.fail_get_mpp(1)
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024
    check_invariants(drv)


def test_alloc_stops_on_loan_failure_and_frees_page(make_driver, clock, machine, caplog):
    drv = make_driver()
    target_kb(drv, 4096)
    drv.partition.fail_page_hcalls(after=10, count=1)
    with caplog.at_level(logging.ERROR, logger="cmm"):
        clock.advance(1)
    assert "Can not set page to loaned. rc=-1" in caplog.text
    assert drv.loaned_pages.read() == 10
    assert machine.balloon_pages == 10            # the failed page went back
    assert drv.loaned_pages_target == 0           # short: count before (0)
    check_invariants(drv)
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024


def test_loan_rollback_with_small_cmo_pages(machine, clock):
    hv = Hypervisor(cmo_page_size=1024)
    drv = CmmDriver(machine, hv, clock=clock, min_mem_mb=MIN_MEM_MB, disable=1)
    calls = record_hcalls(drv.partition)
    # page 1 of a 4-sub-page page: loaned, loaned, FAIL -> set active 1, 0
    drv.partition.fail_page_hcalls(after=2, count=1)
    assert drv.cmm_alloc_pages(5) == 5
    base = calls[0][1]
    assert calls == [("L", base, 0), ("L", base + 1024, 0), ("L", base + 2048, H_HARDWARE),
                     ("A", base + 1024, 0), ("A", base, 0)]
    assert not drv.partition.loaned and machine.balloon_pages == 0
    # a failure on the first sub-page needs no rollback
    calls.clear()
    drv.partition.fail_page_hcalls(after=0, count=1)
    assert drv.cmm_alloc_pages(1) == 1
    assert len(calls) == 1
    # a page with all four sub-pages loaned = 4 hcalls
    calls.clear()
    assert drv.cmm_alloc_pages(1) == 0
    assert [c[0] for c in calls] == ["L"] * 4
    assert drv.partition.loaned_bytes == PAGE_SIZE
    check_invariants(drv)
    drv.unload()
    check_invariants(drv)


def test_set_active_rollback_mirror_and_ignored(machine, clock):
    hv = Hypervisor(cmo_page_size=1024)
    drv = CmmDriver(machine, hv, clock=clock, min_mem_mb=MIN_MEM_MB, disable=1)
    assert drv.cmm_alloc_pages(2) == 0
    calls = record_hcalls(drv.partition)
    drv.partition.fail_page_hcalls(after=1, count=1)
    assert drv.cmm_free_pages(1) == 0            # the error is ignored
    base = calls[0][1]
    assert calls == [("A", base, 0), ("A", base + 1024, H_HARDWARE), ("L", base, 0)]
    # the guest took the page back; the hypervisor still holds all 4 sub-pages
    assert drv.loaned_pages.read() == 1
    assert drv.partition.loaned_bytes == 2 * PAGE_SIZE
    assert drv.partition.stale == {base + 1024}
    check_invariants(drv)                        # subset rule after a failed set-active
    drv.unload()


def test_free_ignores_set_active_failure(make_driver, clock):
    drv = make_driver()
    target_kb(drv, 40)
    clock.advance(1)
    drv.partition.fail_page_hcalls(after=0, count=1)
    target_kb(drv, 36)                           # loan_request now 36 KiB - 40 KiB
    clock.advance(1)
    assert drv.loaned_pages.read() == 9
    assert drv.partition.loaned_kb == 40         # one page stale in the hypervisor
    assert drv.partition.stale_bytes == PAGE_SIZE


# ----------------------------------------------------------- cmm_get_mpp math
@pytest.mark.parametrize("loaned,loan_request,oom_freed,min_mem_mb,expect", [
    (0, 4096 * 100, 0, 16, 100),
    (0, 4096 * 100 + 4095, 0, 16, 100),             # truncation
    (50, -4097, 0, 16, 49),                         # toward zero: -1, not -2
    (50, -4095, 0, 16, 50),                         # -0.99 pages -> 0
    (50, -4096 * 60, 0, 16, 0),                     # target < 0 -> 0
    (0, 4096 * 100, 30, 16, 70),                    # oom_freed subtracted
    (0, 4096 * 100, 100, 16, 0),                    # not larger -> 0
    (0, 4096 * 100, 130, 16, 0),
    (0, 1 << 40, 0, 16, MAX_LOAN),                  # capped by min_mem
    (10, 4096 * 5, 0, 32, 15),
    (10, 4096 * 5, 0, 64, 0),                       # total - target < min_mem
    (0, 4096 * 10, 0, 65, 0),                       # total (64 MiB) < min_mem
    (0, 4096 * 10, 0, 64, 0),                       # total == min_mem: no room
])
def test_cmm_get_mpp_arithmetic(make_driver, loaned, loan_request, oom_freed, min_mem_mb, expect):
    drv = make_driver(disable=1, min_mem_mb=min_mem_mb)
    assert drv.cmm_alloc_pages(loaned) == 0
    drv.partition.loan_target = loan_request + loaned * PAGE_SIZE   # may be < 0
    assert drv.partition.loan_request == loan_request
    drv.oom_freed_pages = oom_freed
    assert drv.cmm_get_mpp() is True
    assert drv.loaned_pages_target == expect


def test_cmm_get_mpp_huge_min_mem_wraps_as_unsigned_long(make_driver):
    drv = make_driver(disable=1)
    drv.partition.set_loan_target(4096 * 10)
    # (min_mem_mb * 1024 * 1024) wraps at 2**64: 2**44 MiB * 2**20 == 0
    drv.min_mem_mb = 2**44
    drv.cmm_get_mpp()
    assert drv.loaned_pages_target == 10


def test_simulate_mode(make_driver, clock):
    drv = make_driver(hv=None, simulate=True)
    assert drv.sysfs["simulate_loan_target_kb"] == "0\n"
    assert drv.params["simulate"] == "Y\n"
    drv.sysfs.write("simulate_loan_target_kb", "4096\n", admin=True)
    assert drv.sysfs["simulate_loan_target_kb"] == "1000\n"        # "%lx"
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024
    drv.sysfs["simulate_loan_target_kb"] = "0x400"
    clock.advance(1)
    assert drv.loaned_pages.read() == 256
    for bad, err in (("abc", errno.EINVAL), ("-1", errno.EINVAL), (str(2**64), errno.ERANGE)):
        with pytest.raises(OSError) as e:
            drv.sysfs.write("simulate_loan_target_kb", bad)
        assert e.value.errno == err
    assert drv.simulate_loan_target_kb == 1024


def test_simulate_makes_no_hcalls(make_driver, clock, hv):
    drv = make_driver(simulate=True, simulate_loan_target_kb=400)
    clock.advance(1)
    assert drv.loaned_pages.read() == 100
    assert drv.partition.calls["page_init"] == 0 and drv.partition.calls["get_mpp"] == 0
    assert not drv.partition.loaned


def test_simulate_file_absent_without_simulate(make_driver):
    drv = make_driver()
    assert "simulate_loan_target_kb" not in drv.sysfs
    with pytest.raises(KeyError):
        drv.sysfs["simulate_loan_target_kb"]
    with pytest.raises(OSError) as e:
        drv.sysfs.write("simulate_loan_target_kb", "1")
    assert e.value.errno == errno.ENOENT


# ------------------------------------------------------------------ logging
def test_debug_logging(make_driver, clock, caplog):
    drv = make_driver()
    target_kb(drv, 40)
    with caplog.at_level(logging.INFO, logger="cmm"):
        clock.advance(1)
        assert "Begin request" not in caplog.text
        drv.params.write("debug", "1")
        target_kb(drv, 80)
        clock.advance(1)
    assert "cmm: Begin request for 10 pages" in caplog.text
    assert "cmm: delta = 10, loaned = 10, target = 20, oom = 0" in caplog.text


def test_thread_stopped_from_its_own_round(make_driver, clock):
    drv = make_driver()
    target_kb(drv, 40)
    drv.poll_hooks.append(lambda d, ok: d.params.write("disable", "1"))
    clock.advance(1)
    assert drv.cmm_disabled == 1 and drv.cmm_thread_ptr is None
    assert drv.loaned_pages.read() == 0
    clock.advance(5)
    assert drv.stats["rounds"] == 1
