"""CmmDriver against cmm.c, branch by branch, on a simulated clock."""
import errno
import logging

import pytest

from cmm import CmmDriver, Hypervisor, SimClock
from cmm.balloon import BalloonBug, balloon_page_isolate, balloon_page_putback
from cmm.hypervisor import H_HARDWARE, H_PAGE_SET_LOANED, PAGE_SIZE
from cmm.notifier import (MEM_CANCEL_OFFLINE, MEM_GOING_OFFLINE, MEM_GOING_ONLINE,
                          MEM_OFFLINE, MEM_ONLINE, NOTIFY_DONE, NOTIFY_OK, SYS_HALT,
                          SYS_RESTART, NotifierChain)

from .conftest import MIN_MEM_MB, NR_FRAMES, check_invariants

MIN_MEM_PAGES = MIN_MEM_MB * 256
MAX_LOAN = NR_FRAMES - MIN_MEM_PAGES          # most the driver may loan


def target_kb(drv, kb):
    drv.partition.set_loan_target(kb * 1024)


@pytest.fixture
def ballooned(make_driver, clock):
    """A driver whose balloon holds 1024 pages (4 MiB): the hypervisor asked
    for them and the thread has polled once."""
    drv = make_driver()
    target_kb(drv, 4096)
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024
    return drv


def record_hcalls(part):
    """Wrap the partition's H_PAGE_INIT to record (op, addr, rc)."""
    calls = []
    orig = part.hcall_page_init

    def rec(flags, addr):
        rc = orig(flags, addr)
        calls.append(("L" if flags == H_PAGE_SET_LOANED else "A", addr, rc))
        return rc

    part.hcall_page_init = rec
    return calls


# --------------------------------------------------------------- init / exit
def test_init_without_cmo_fails_eopnotsupp(machine):
    with pytest.raises(OSError) as e:
        CmmDriver(machine, Hypervisor(cmo=False), clock=SimClock())
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        CmmDriver(machine, None, clock=SimClock())
    assert e.value.errno == errno.EOPNOTSUPP
    assert machine.balloon_pages == 0


def test_init_without_cmo_ok_when_simulating(make_driver):
    drv = make_driver(hv=None, simulate=True)
    assert drv.loaded and drv.partition is None
    assert drv.cmm_thread_ptr.alive


def test_init_registers_everything_in_order(make_driver):
    drv = make_driver()
    assert drv.init_log == [
        "+balloon_mnt", "+inode", "+oom_notifier", "+reboot_notifier", "+subsys",
        "+device", "+file:loaned_kb", "+file:loaned_target_kb", "+file:oom_freed_kb",
        "+memory_notifier"]
    assert drv.reboot_chain.registered(drv.cmm_reboot_notifier)
    assert drv.memory_chain.registered(drv.cmm_memory_cb)
    assert sorted(drv.sysfs) == ["loaned_kb", "loaned_target_kb", "oom_freed_kb"]
    assert drv.cmm_thread_ptr is not None


# Expected unwinding for a failure at each step (002): everything made before
# the failing step is undone, in reverse order.
UNWIND = {
    "kern_mount": [],
    "alloc_anon_inode": ["+balloon_mnt", "-balloon_mnt"],
    "register_oom_notifier": ["+balloon_mnt", "+inode", "-inode", "-balloon_mnt"],
    "register_reboot_notifier": ["+balloon_mnt", "+inode", "+oom_notifier",
                                 "-oom_notifier", "-inode", "-balloon_mnt"],
    "subsys_system_register": ["+balloon_mnt", "+inode", "+oom_notifier", "+reboot_notifier",
                               "-reboot_notifier", "-oom_notifier", "-inode", "-balloon_mnt"],
    "device_register": ["+balloon_mnt", "+inode", "+oom_notifier", "+reboot_notifier",
                        "+subsys", "-subsys",
                        "-reboot_notifier", "-oom_notifier", "-inode", "-balloon_mnt"],
    "device_create_file:oom_freed_kb": [
        "+balloon_mnt", "+inode", "+oom_notifier", "+reboot_notifier", "+subsys", "+device",
        "+file:loaned_kb", "+file:loaned_target_kb",
        "-file:loaned_target_kb", "-file:loaned_kb", "-device", "-subsys",
        "-reboot_notifier", "-oom_notifier", "-inode", "-balloon_mnt"],
    "register_memory_notifier": [
        "+balloon_mnt", "+inode", "+oom_notifier", "+reboot_notifier", "+subsys", "+device",
        "+file:loaned_kb", "+file:loaned_target_kb", "+file:oom_freed_kb",
        # out_unregister_notifier: unregister_memory_notifier() finds nothing
        "-file:loaned_kb", "-file:loaned_target_kb", "-file:oom_freed_kb", "-device", "-subsys",
        "-reboot_notifier", "-oom_notifier", "-inode", "-balloon_mnt"],
    "kthread_run": [
        "+balloon_mnt", "+inode", "+oom_notifier", "+reboot_notifier", "+subsys", "+device",
        "+file:loaned_kb", "+file:loaned_target_kb", "+file:oom_freed_kb", "+memory_notifier",
        "-memory_notifier", "-file:loaned_kb", "-file:loaned_target_kb", "-file:oom_freed_kb",
        "-device", "-subsys", "-reboot_notifier", "-oom_notifier", "-inode", "-balloon_mnt"],
}


@pytest.mark.parametrize("step", sorted(UNWIND))
def test_init_failure_unwinds_in_reverse(machine, hv, step):
    chains = NotifierChain("reboot"), NotifierChain("memory")
    logs = []

    class Spy(CmmDriver):
        def _log(self, what):
            logs.append(what)

    with pytest.raises(OSError) as e:
        Spy(machine, hv, clock=SimClock(), reboot_chain=chains[0], memory_chain=chains[1],
            init_faults={step: errno.ENOMEM})
    assert e.value.errno == errno.ENOMEM
    assert logs == UNWIND[step]
    assert len(chains[0]) == 0 and len(chains[1]) == 0
    # nothing left on the machine's OOM chain: an OOM frees nothing
    assert machine.out_of_memory() == 0


def test_init_failure_of_chain_registration(machine, hv):
    reboot = NotifierChain("reboot")
    reboot.fail_next_register = errno.ENOMEM
    with pytest.raises(OSError) as e:
        CmmDriver(machine, hv, clock=SimClock(), reboot_chain=reboot)
    assert e.value.errno == errno.ENOMEM
    memory = NotifierChain("memory")
    memory.fail_next_register = errno.EBUSY
    with pytest.raises(OSError) as e:
        CmmDriver(machine, hv, clock=SimClock(), memory_chain=memory)
    assert e.value.errno == errno.EBUSY
    assert len(reboot) == 0 and len(memory) == 0


def test_simulate_file_failure_removes_all_three_files(machine):
    logs = []

    class Spy(CmmDriver):
        def _log(self, what):
            logs.append(what)

    with pytest.raises(OSError):
        Spy(machine, None, simulate=True, clock=SimClock(),
            init_faults={"device_create_file:simulate_loan_target_kb": errno.ENOSPC})
    i = logs.index("+file:oom_freed_kb")
    assert logs[i + 1:i + 6] == ["-file:oom_freed_kb", "-file:loaned_target_kb",
                                 "-file:loaned_kb", "-device", "-subsys"]


def test_version_000_compaction_init_cannot_fail(make_driver):
    # 000's cmm_balloon_compaction_init() is void: no pseudo fs to mount
    drv = make_driver(version="000", init_faults={"kern_mount": errno.ENOMEM,
                                                   "alloc_anon_inode": errno.ENOMEM})
    assert drv.loaded
    assert "+balloon_mnt" not in drv.init_log
    assert drv.b_dev_info.migratepage == drv.cmm_migratepage
    drv.unload()
    assert "-balloon_mnt" not in drv.init_log and "-inode" not in drv.init_log


def test_version_000_failed_init_has_no_compaction_to_undo(machine, hv):
    logs = []

    class Spy(CmmDriver):
        def _log(self, what):
            logs.append(what)

    with pytest.raises(OSError):
        Spy(machine, hv, version="000", clock=SimClock(),
            init_faults={"register_reboot_notifier": errno.ENOMEM})
    assert logs == ["+oom_notifier", "-oom_notifier"]


def test_version_002_exit_undoes_compaction(make_driver):
    drv = make_driver()
    drv.unload()
    assert drv.init_log[-2:] == ["-inode", "-balloon_mnt"]
    assert drv.b_dev_info.inode is None and drv.balloon_mnt is None


def test_exit_frees_everything_and_unregisters(ballooned, clock, machine):
    drv = ballooned
    assert drv.loaned_pages.read() == 1024
    thread = drv.cmm_thread_ptr
    drv.unload()
    assert not thread.alive
    assert drv.loaned_pages.read() == 0 and machine.balloon_pages == 0
    assert machine.totalram_pages == NR_FRAMES
    assert not drv.partition.loaned
    assert len(drv.sysfs) == 0 and len(drv.reboot_chain) == 0 and len(drv.memory_chain) == 0
    with pytest.raises(OSError) as e:
        drv.params["delay"]
    assert e.value.errno == errno.ENOENT
    clock.advance(10)                      # the thread is gone
    assert machine.balloon_pages == 0
    drv.unload()                           # second unload: nothing


def test_context_manager_unloads(machine, hv, clock):
    with CmmDriver(machine, hv, clock=clock, min_mem_mb=MIN_MEM_MB) as drv:
        drv.partition.set_loan_target(1 << 20)
        clock.advance(1)
        assert machine.balloon_pages == 256
    assert machine.balloon_pages == 0 and not drv.loaded


# ----------------------------------------------------------------- parameters
def test_params_defaults_and_reads(make_driver):
    drv = make_driver(min_mem_mb=256)
    p = drv.params
    assert {k: p[k] for k in p} == {"delay": "1\n", "hotplug_delay": "5\n", "oom_kb": "1024\n",
                                    "min_mem_mb": "256\n", "debug": "0\n", "simulate": "N\n",
                                    "disable": "0\n"}
    assert p.mode("simulate") == 0o444 and p.mode("delay") == 0o644


@pytest.mark.parametrize("name,text,value", [
    ("delay", "5\n", 5), ("delay", "0x10", 16), ("delay", "010", 8),
    ("hotplug_delay", "0", 0), ("oom_kb", "4096", 4096), ("debug", "1", 1),
    ("min_mem_mb", str(2**64 - 1), 2**64 - 1)])
def test_param_writes(make_driver, name, text, value):
    drv = make_driver()
    drv.params.write(name, text)
    attr = {"debug": "cmm_debug"}.get(name, name)
    assert getattr(drv, attr) == value


@pytest.mark.parametrize("name,text,err", [
    ("delay", "abc", errno.EINVAL), ("delay", "-1", errno.EINVAL), ("delay", "", errno.EINVAL),
    ("delay", str(2**32), errno.ERANGE), ("min_mem_mb", str(2**64), errno.ERANGE),
    ("simulate", "1", errno.EACCES), ("nosuch", "1", errno.ENOENT)])
def test_param_write_errors(make_driver, name, text, err):
    drv = make_driver()
    with pytest.raises(OSError) as e:
        drv.params.write(name, text)
    assert e.value.errno == err
    assert drv.delay == 1


@pytest.mark.parametrize("kw,err", [
    ({"delay": -1}, errno.EINVAL), ({"delay": 2**32}, errno.ERANGE),
    ({"oom_kb": "x"}, errno.EINVAL), ({"min_mem_mb": -5}, errno.EINVAL),
    ({"simulate": 2}, errno.EINVAL), ({"disable": 2}, errno.EINVAL),
    ({"disable": -1}, errno.EINVAL), ({"disable": "7"}, errno.EINVAL)])
def test_load_time_param_errors(machine, hv, kw, err):
    with pytest.raises(OSError) as e:
        CmmDriver(machine, hv, clock=SimClock(), **kw)
    assert e.value.errno == err
    assert machine.balloon_pages == 0


def test_load_time_string_params(make_driver):
    drv = make_driver(delay="0x3", simulate="y", hv=None, min_mem_mb="16")
    assert drv.delay == 3 and drv.simulate is True and drv.min_mem_mb == 16


def test_disable_at_load_starts_no_thread(make_driver, clock):
    drv = make_driver(disable=1)
    assert drv.cmm_thread_ptr is None and drv.params["disable"] == "1\n"
    target_kb(drv, 4096)
    clock.advance(5)
    assert drv.loaned_pages.read() == 0
    drv.params.write("disable", "0")
    assert drv.cmm_thread_ptr.alive
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024


def test_disable_1_stops_thread_and_frees_all(ballooned, clock):
    drv = ballooned
    assert drv.loaned_pages.read() == 1024
    thread = drv.cmm_thread_ptr
    drv.params.write("disable", "1\n")
    assert not thread.alive and drv.cmm_thread_ptr is None
    assert drv.loaned_pages.read() == 0 and not drv.partition.loaned
    clock.advance(10)
    assert drv.loaned_pages.read() == 0
    drv.params.write("disable", "1")            # already disabled: nothing
    drv.params.write("disable", "0")
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024
    check_invariants(drv)


@pytest.mark.parametrize("text,accepted,disabled", [
    ("2", False, 0), ("-1", True, 0),              # simple_strtoul("-1") == 0
    ("abc", True, 0), ("1abc", True, 1),
    ("4294967297", True, 1),                       # (int)4294967297 == 1
    ("4294967296", True, 0)])
def test_disable_parsing_is_cmm_set_disable(make_driver, text, accepted, disabled):
    drv = make_driver()
    if accepted:
        drv.params.write("disable", text)
    else:
        with pytest.raises(OSError) as e:
            drv.params.write("disable", text)
        assert e.value.errno == errno.EINVAL
    assert drv.cmm_disabled == disabled


def test_reenable_fails_when_thread_cannot_start(make_driver):
    drv = make_driver(disable=1)
    drv.init_faults["kthread_run"] = errno.EINTR
    with pytest.raises(OSError) as e:
        drv.params.write("disable", "0")
    assert e.value.errno == errno.EINTR
    assert drv.cmm_disabled == 1 and drv.cmm_thread_ptr is None


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


def test_get_mpp_failure_keeps_target(ballooned, clock):
    drv = ballooned
    drv.partition.fail_get_mpp(3)
    target_kb(drv, 0)
    clock.advance(3)
    assert drv.stats["mpp_failures"] == 3
    assert drv.loaned_pages.read() == 1024 and drv.loaned_pages_target == 1024
    clock.advance(1)
    assert drv.loaned_pages.read() == 0


def test_get_mpp_failure_thread_still_pursues_old_target(ballooned, clock):
    drv = ballooned
    drv.cmm_free_pages(100)                 # something else deflated
    drv.partition.fail_get_mpp(1)
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024  # back to the unchanged target


def test_alloc_short_sets_target_to_count_before(ballooned, clock, machine):
    drv = ballooned
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


# ------------------------------------------------------------------ OOM
def test_oom_notifier_frees_oom_kb(make_driver, clock):
    drv = make_driver(oom_kb=1024)
    target_kb(drv, 8192)
    clock.advance(1)
    assert drv.cmm_oom_notify() == 256
    assert drv.loaned_pages.read() == 2048 - 256
    assert drv.loaned_pages_target == 2048 - 256
    assert drv.oom_freed_pages == 256 and drv.sysfs["oom_freed_kb"] == "1024\n"
    check_invariants(drv)
    # oom_freed lowers every later target
    clock.advance(1)
    assert drv.loaned_pages.read() == 2048 - 256
    # oom_kb not a multiple of 4: KB2PAGES rounds down
    drv.params.write("oom_kb", "7")
    assert drv.cmm_oom_notify() == 1


def test_oom_notifier_with_small_balloon(make_driver, clock):
    drv = make_driver(oom_kb=1024)
    target_kb(drv, 40)
    clock.advance(1)
    assert drv.cmm_oom_notify() == 10
    assert drv.oom_freed_pages == 10 and drv.loaned_pages.read() == 0
    assert drv.cmm_oom_notify() == 0


def test_machine_runs_oom_notifier_when_out_of_frames(make_driver, clock, machine):
    drv = make_driver(oom_kb=1024)
    target_kb(drv, 40 << 10)
    clock.advance(1)
    loaned = drv.loaned_pages.read()
    assert loaned == 10240
    p = machine.spawn(name="hog")
    free = machine.free_pages
    a = p.mmap((free + 10) * PAGE_SIZE)
    p.write(a, b"\x02" * ((free + 10) * PAGE_SIZE))    # needs the balloon's pages
    assert drv.oom_freed_pages == 256
    assert drv.loaned_pages.read() == loaned - 256
    check_invariants(drv)
    # the next round's target is lowered by oom_freed_pages
    clock.advance(1)
    assert drv.loaned_pages.read() <= loaned - 256


def test_oom_with_empty_balloon_is_enomem(make_driver, machine):
    make_driver()
    p = machine.spawn(name="hog")
    a = p.mmap((NR_FRAMES + 1) * PAGE_SIZE)
    with pytest.raises(OSError) as e:
        p.write(a, b"\x03" * ((NR_FRAMES + 1) * PAGE_SIZE))
    assert e.value.errno == errno.ENOMEM


def test_oom_freed_kb_writes(make_driver):
    drv = make_driver()
    drv.oom_freed_pages = 5
    with pytest.raises(OSError) as e:
        drv.sysfs.write("oom_freed_kb", "0", admin=False)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:            # capability checked first
        drv.sysfs.write("oom_freed_kb", "7", admin=False)
    assert e.value.errno == errno.EPERM
    for bad in ("7", "1\n", "00012"):
        with pytest.raises(OSError) as e:
            drv.sysfs.write("oom_freed_kb", bad, admin=True)
        assert e.value.errno == errno.EBADMSG
    assert drv.oom_freed_pages == 5
    assert drv.sysfs.write("oom_freed_kb", "0\n", admin=True) == 2
    assert drv.oom_freed_pages == 0
    # simple_strtoul: text that does not start with a digit reads as 0
    drv.oom_freed_pages = 5
    drv.sysfs.write("oom_freed_kb", "zero", admin=True)
    assert drv.oom_freed_pages == 0


def test_read_only_files(make_driver):
    drv = make_driver()
    for name in ("loaned_kb", "loaned_target_kb"):
        assert drv.sysfs.mode(name) == 0o444
        with pytest.raises(OSError) as e:
            drv.sysfs.write(name, "0", admin=True)
        assert e.value.errno == errno.EACCES
    assert drv.sysfs.mode("oom_freed_kb") == 0o644
    assert all(v.endswith("\n") for _, v in drv.sysfs.items())


# ----------------------------------------------------------------- reboot
def test_reboot_restart_stops_thread_and_frees(ballooned, clock):
    drv = ballooned
    thread = drv.cmm_thread_ptr
    assert drv.reboot_chain.call_chain(SYS_RESTART) == NOTIFY_DONE
    assert not thread.alive and drv.cmm_thread_ptr is None
    assert drv.loaned_pages.read() == 0 and not drv.partition.loaned
    clock.advance(5)
    assert drv.loaned_pages.read() == 0          # nothing polls any more
    # disable/enable brings the thread back
    drv.params.write("disable", "1")
    drv.params.write("disable", "0")
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024


def test_reboot_other_actions_do_nothing(ballooned):
    drv = ballooned
    drv.reboot_chain.call_chain(SYS_HALT)
    assert drv.loaned_pages.read() == 1024 and drv.cmm_thread_ptr.alive


# ----------------------------------------------------------------- hotplug
def test_hotplug_in_progress_skips_rounds(make_driver, clock):
    drv = make_driver(delay=1, hotplug_delay=5)
    target_kb(drv, 4096)
    assert drv.memory_chain.call_chain(MEM_GOING_OFFLINE) == NOTIFY_OK
    clock.advance(3)
    assert drv.stats["skipped_hotplug"] == 3 and drv.loaned_pages.read() == 0
    drv.memory_chain.call_chain(MEM_OFFLINE)     # at t=3
    clock.advance(1)                             # t=4: hotplug occurred -> sleep 5
    assert drv.stats["hotplug_pauses"] == 1 and drv.loaned_pages.read() == 0
    clock.advance(5)                             # t=9: back to sleeping delay
    assert drv.loaned_pages.read() == 0
    clock.advance(1)                             # t=10: a normal round
    assert drv.loaned_pages.read() == 1024


def test_hotplug_cancel_offline_also_releases(make_driver, clock):
    drv = make_driver(hotplug_delay=2)
    target_kb(drv, 4096)
    drv.memory_chain.call_chain(MEM_GOING_OFFLINE)
    drv.memory_chain.call_chain(MEM_CANCEL_OFFLINE)
    clock.advance(1 + 2)                       # still costs hotplug_delay
    assert drv.loaned_pages.read() == 0
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024


def test_hotplug_online_actions_do_nothing(make_driver, clock):
    drv = make_driver()
    target_kb(drv, 4096)
    for a in (MEM_GOING_ONLINE, MEM_ONLINE):
        assert drv.cmm_memory_cb(a) == NOTIFY_OK
    assert drv.hotplug_occurred == 0
    clock.advance(1)
    assert drv.loaned_pages.read() == 1024


def test_hotplug_misuse(make_driver):
    drv = make_driver()
    with pytest.raises(OSError) as e:
        drv.cmm_memory_cb(MEM_OFFLINE)
    assert e.value.errno == errno.EINVAL
    drv.cmm_memory_cb(MEM_GOING_OFFLINE)
    with pytest.raises(OSError) as e:
        drv.cmm_memory_cb(MEM_GOING_OFFLINE)
    assert e.value.errno == errno.EDEADLK
    drv.cmm_memory_cb(MEM_OFFLINE)


def test_alloc_stops_when_hotplug_in_progress_or_occurred(make_driver):
    drv = make_driver(disable=1)
    drv.cmm_memory_cb(MEM_GOING_OFFLINE)          # mutex held: trylock fails
    assert drv.cmm_alloc_pages(10) == 10
    drv.cmm_memory_cb(MEM_OFFLINE)                # released, but occurred
    assert drv.hotplug_occurred == 1
    assert drv.cmm_alloc_pages(10) == 10
    drv.hotplug_occurred = 0
    assert drv.cmm_alloc_pages(10) == 0


def test_alloc_out_of_frames(make_driver, machine):
    drv = make_driver(disable=1)
    assert drv.cmm_alloc_pages(NR_FRAMES + 5) == 5
    assert machine.free_pages == 0
    assert drv.cmm_free_pages(NR_FRAMES + 5) == 5


# ---------------------------------------------------------------- compaction
def test_compact_migrates_every_page(make_driver, clock, machine):
    drv = make_driver()
    target_kb(drv, 400)
    clock.advance(1)
    before = drv.balloon_pfns()
    res = drv.compact()
    assert res.migrated == 100 and not res.failed
    after = drv.balloon_pfns()
    assert len(after) == 100
    assert {old for old, _ in res.moves} == before       # every page moved once
    assert all(old != new for old, new in res.moves)
    assert res.moves[-1][1] in after
    assert drv.vmstat()["balloon_migrate"] == 100
    assert drv.b_dev_info.isolated_pages == 0
    check_invariants(drv)                        # the hv record moved too
    assert machine.totalram_pages == NR_FRAMES - 100


def test_compact_ebusy_when_new_page_cannot_be_loaned(make_driver, clock, machine):
    drv = make_driver()
    target_kb(drv, 40)
    clock.advance(1)
    before = drv.balloon_pfns()
    drv.partition.fail_page_hcalls(after=0, count=1)
    res = drv.compact()
    assert res.failed == {errno.EBUSY: 1} and res.migrated == 9
    stayed = before - {old for old, _ in res.moves}
    assert len(stayed) == 1 and stayed <= drv.balloon_pfns()   # put back
    assert len(drv.balloon_pfns()) == 10
    assert drv.vmstat()["balloon_migrate"] == 9
    check_invariants(drv)


def test_compact_enomem_without_free_frame(make_driver, machine):
    drv = make_driver(disable=1, min_mem_mb=0)
    drv.cmm_alloc_pages(NR_FRAMES)
    res = drv.compact()
    assert res.failed == {errno.ENOMEM: NR_FRAMES} and res.migrated == 0
    check_invariants(drv)


def test_compact_across_zones_fixes_managed_count(hv, clock):
    from ksm_engine import Machine
    m = Machine(ram=8 << 20, nr_zones=2)
    drv = CmmDriver(m, hv, clock=clock, min_mem_mb=0, disable=1)
    n = m.nr_frames // 2
    drv.cmm_alloc_pages(n)                   # whichever frames the machine gives
    adjust = []
    orig = m.adjust_managed_page_count

    def spy(delta, pfn=None):
        adjust.append(delta)
        orig(delta, pfn)

    m.adjust_managed_page_count = spy
    res = drv.compact()
    assert res.migrated == n
    moved_zone = sum(m.page_zone(o) != m.page_zone(nw) for o, nw in res.moves)
    # one +1 (old zone) / -1 (new zone) pair per cross-zone move, none else
    assert adjust == [1, -1] * moved_zone
    assert m.totalram_pages == m.nr_frames - n
    # per zone: each zone's managed pages are its frames less the balloon's there
    for z in range(2):
        in_zone = sum(1 for p in drv.b_dev_info.pages if m.page_zone(p) == z)
        assert m.zone_managed_pages(z) == m.zone_size(z) - in_zone
    check_invariants(drv)
    drv.unload()


def test_compaction_not_configured(make_driver, clock):
    drv = make_driver(compaction=False)
    target_kb(drv, 40)
    clock.advance(1)
    assert drv.b_dev_info.migratepage is None
    res = drv.compact()
    assert res.migrated == 0 and not res.failed


def test_dequeue_while_isolated_returns_fewer(make_driver, clock):
    drv = make_driver()
    target_kb(drv, 40)
    clock.advance(1)
    pfns = list(drv.b_dev_info.pages)
    for p in pfns[:4]:
        assert balloon_page_isolate(drv.b_dev_info, p)
    assert not balloon_page_isolate(drv.b_dev_info, pfns[0])
    assert drv.cmm_free_pages(10) == 4          # 6 freed, 4 isolated
    assert drv.loaned_pages.read() == 4
    for p in pfns[:4]:
        balloon_page_putback(drv.b_dev_info, p)
    assert drv.cmm_free_pages(10) == 6
    check_invariants(drv)


def test_dequeue_from_empty_balloon_is_a_bug(make_driver, caplog):
    from cmm.balloon import balloon_page_dequeue
    drv = make_driver(disable=1)
    with caplog.at_level(logging.WARNING, logger="cmm"):
        assert balloon_page_dequeue(drv.b_dev_info) is None
    assert "would BUG()" in caplog.text and drv.b_dev_info.empty_dequeues == 1
    drv.b_dev_info.bug_on_empty = True
    with pytest.raises(BalloonBug):
        balloon_page_dequeue(drv.b_dev_info)
    # the OOM notifier asks for oom_kb worth whatever the balloon holds
    with pytest.raises(BalloonBug):
        drv.cmm_oom_notify()


def test_balloon_is_lifo_and_counts(make_driver):
    drv = make_driver(disable=1)
    drv.cmm_alloc_pages(5)
    order = list(drv.b_dev_info.pages)
    drv.cmm_free_pages(2)
    assert list(drv.b_dev_info.pages) == order[:3]      # newest went first
    assert drv.vmstat() == {"nr_balloon_pages": 3, "balloon_inflate": 5,
                            "balloon_deflate": 2, "balloon_migrate": 0}


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
