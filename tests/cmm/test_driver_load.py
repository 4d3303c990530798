"""CmmDriver against cmm.c, branch by branch, on a simulated clock: loading and
unloading (init, its failures unwound in reverse, exit) and the module parameters."""
import errno

import pytest

from cmm import CmmDriver, Hypervisor, SimClock
from cmm.notifier import NotifierChain

from .conftest import MIN_MEM_MB, NR_FRAMES, check_invariants, loaned_driver, target_kb


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


def test_exit_frees_everything_and_unregisters(make_driver, clock, machine):
    drv = loaned_driver(make_driver, clock)
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


def test_disable_1_stops_thread_and_frees_all(make_driver, clock):
    drv = loaned_driver(make_driver, clock)
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
