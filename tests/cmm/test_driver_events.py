"""CmmDriver against cmm.c, branch by branch, on a simulated clock: what the
rest of the kernel tells the driver (OOM, reboot, memory hotplug) and its
read-only files."""
import errno

import pytest

from cmm.hypervisor import PAGE_SIZE
from cmm.notifier import (MEM_CANCEL_OFFLINE, MEM_GOING_OFFLINE, MEM_GOING_ONLINE,
                          MEM_OFFLINE, MEM_ONLINE, NOTIFY_DONE, NOTIFY_OK, SYS_HALT,
                          SYS_RESTART)

from .conftest import NR_FRAMES, check_invariants, loaned_driver, target_kb


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
def test_reboot_restart_stops_thread_and_frees(make_driver, clock):
    drv = loaned_driver(make_driver, clock)
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


def test_reboot_other_actions_do_nothing(make_driver, clock):
    drv = loaned_driver(make_driver, clock)
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
