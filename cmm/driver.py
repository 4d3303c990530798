"""CmmDriver: arch/powerpc/platforms/pseries/cmm.c over a ksm_engine Machine.

The Collaborative Memory Manager loans guest pages to the hypervisor: a
kernel thread polls H_GET_MPP every ``delay`` seconds, works out how many
pages should be loaned (cmm_get_mpp), and inflates the balloon (allocate a
page, H_PAGE_INIT it to "loaned", keep it on the balloon list, lower
totalram) or deflates it (the reverse).  Memory pressure deflates it too:
the OOM notifier gives back ``oom_kb`` at a time and remembers it in
oom_freed_pages, which lowers every later target until an admin writes 0 to
oom_freed_kb.

Here the guest kernel is a ksm_engine.Machine: balloon pages are real frames
of its arena (Machine.balloon_page_alloc/free), totalram is its managed page
count, its OOM notifier list calls cmm_oom_notify when a process write finds
no free frame.  The hypervisor is a cmm.hypervisor.Partition.

Data structures (one set per driver instance; cmm.c has them as statics)
---------------
loaned_pages          AtomicLong: pages on the balloon (loaned or being
                      migrated); the count everything else is checked against
loaned_pages_target   unsigned long: pages the thread aims to have loaned
oom_freed_pages       unsigned long: pages given back by the OOM notifier
                      since the last reset; subtracted from every target
hotplug_mutex         held from MEM_GOING_OFFLINE to MEM_OFFLINE/CANCEL;
                      the thread only ever trylocks it
hotplug_occurred      set by MEM_GOING_OFFLINE (under the mutex); the thread
                      clears it and sleeps hotplug_delay before loaning again
cmm_thread_ptr        the polling Kthread, None when stopped/disabled
b_dev_info            the balloon (cmm.balloon.BalloonDevInfo)
sysfs, params         /sys/devices/system/cmm/cmm0 and /sys/module/cmm/parameters
module parameters     delay, hotplug_delay, oom_kb, min_mem_mb, cmm_debug,
                      simulate, cmm_disabled, plus simulate_loan_target_kb
                      (see cmm.params)

Versions: ``version="002"`` (default) is the newer cmm.c, whose balloon
compaction set-up mounts a pseudo filesystem and allocates an anon inode
(either can fail, and both are undone on exit and on a failed init);
``version="000"`` is the older text where that set-up cannot fail and there
is nothing to undo.

Errors are raised as OSError(errno) where cmm.c returns -errno; internal
functions keep the kernel's convention of returning 0 / -errno.
Every init step can be made to fail with ``init_faults={"step": errno}``
(steps: kern_mount, alloc_anon_inode, register_oom_notifier,
register_reboot_notifier, subsys_system_register, device_register,
device_create_file:<name>, register_memory_notifier, kthread_run); each
injected fault fires once.
"""
import errno
import logging
import os
import threading

from ksm_engine.kstrtox import simple_strtoul

from . import balloon as bal
from .cint import KB2PAGES, PAGE_SIZE, PAGES2KB, div_s64, to_s32, to_s64, to_u32, to_u64
from ksm_engine.clock import RealClock
from .hypervisor import (H_PAGE_INIT, H_PAGE_SET_ACTIVE, H_PAGE_SET_LOANED,
                         H_SUCCESS, h_get_mpp)
from .notifier import (MEM_CANCEL_OFFLINE, MEM_GOING_OFFLINE, MEM_OFFLINE,
                       NOTIFY_DONE, NOTIFY_OK, NotifierChain, SYS_RESTART)
from .params import PARAMS, ModuleParams, load_value
from .sysfs import CmmSysfs, cmm_sysfs_register, cmm_unregister_sysfs

log = logging.getLogger("cmm")

CMM_MEM_HOTPLUG_PRI = 1


class AtomicLong:
    """atomic_long_t: a counter safe to change from several threads."""

    def __init__(self, v=0):
        self._v = v
        self._lock = threading.Lock()

    def read(self):
        return self._v

    def inc(self):
        with self._lock:
            self._v += 1

    def dec(self):
        with self._lock:
            self._v -= 1


class CmmDriver:
    """The cmm module loaded into one Machine, talking to one Partition.

    CmmDriver(machine, hv, delay=1, hotplug_delay=5, oom_kb=1024,
              min_mem_mb=256, debug=0, simulate=False, disable=0)
    loads the module (cmm_init) and raises OSError(errno) if that fails.
    Other keyword arguments:
      simulate_loan_target_kb  initial value of that attribute
      clock        RealClock() (default: a real thread) or SimClock()
      partition    the hypervisor Partition; default: a new partition of
                   ``hv`` sized to the machine (hv may be None if simulate)
      reboot_chain, memory_chain   NotifierChains to register on (default:
                   private ones, reachable as drv.reboot_chain/memory_chain)
      init_faults  {step: errno} to make init steps fail (see module doc)
      version      "002" (default) or "000"
      compaction   CONFIG_BALLOON_COMPACTION (default True)
    Use as a context manager, or call unload(), to run cmm_exit.

    Counters for observation (not in cmm.c): ``stats`` = rounds (thread
    rounds that polled), skipped_hotplug (rounds skipped because a hotplug
    was in progress), hotplug_pauses (hotplug_delay sleeps), mpp_failures,
    alloc_short (allocations that fell short).  ``poll_hooks`` are called
    as hook(drv, mpp_ok) at the end of every polling round.
    ``init_log`` lists every registration ("+x") and unregistration ("-x").
    """

    def __init__(self, machine, hv, *, delay=1, hotplug_delay=5, oom_kb=1024,
                 min_mem_mb=256, debug=0, simulate=False, disable=0,
                 simulate_loan_target_kb=0, clock=None, partition=None,
                 reboot_chain=None, memory_chain=None, init_faults=None,
                 version="002", compaction=True):
        if version not in ("000", "002"):
            raise ValueError("version is '000' or '002'")
        self.machine = machine
        self.hv = hv
        self.version = version
        self.compaction = bool(compaction)
        self.clock = clock if clock is not None else RealClock()
        self.reboot_chain = reboot_chain if reboot_chain is not None else NotifierChain("reboot")
        self.memory_chain = memory_chain if memory_chain is not None else NotifierChain("memory")
        self.init_faults = dict(init_faults or {})
        self.init_log = []
        self.stats = dict(rounds=0, skipped_hotplug=0, hotplug_pauses=0,
                          mpp_failures=0, alloc_short=0)
        self.poll_hooks = []

        # module parameters, validated as insmod would
        vals = dict(delay=delay, hotplug_delay=hotplug_delay, oom_kb=oom_kb,
                    min_mem_mb=min_mem_mb, debug=debug, simulate=simulate)
        for name, v in vals.items():
            spec = PARAMS[name]
            setattr(self, spec.attr, load_value(spec, v))
        self.simulate_loan_target_kb = load_value(PARAMS["min_mem_mb"], simulate_loan_target_kb)

        # driver state
        self.loaned_pages = AtomicLong(0)
        self.loaned_pages_target = 0
        self.oom_freed_pages = 0
        self.hotplug_mutex = threading.Lock()
        self.hotplug_occurred = 0
        self._hotplug_held = False          # GOING_OFFLINE took the mutex
        self.cmm_thread_ptr = None
        self.cmm_disabled = 0
        self.b_dev_info = bal.BalloonDevInfo()
        self.balloon_mnt = None             # the ppc-cmm pseudo fs (002)
        self.sysfs = CmmSysfs()
        self.params = ModuleParams(self)
        self.loaded = False
        self._oom_nb = self.cmm_oom_notify            # one object to (un)register
        self._reboot_nb = self.cmm_reboot_notifier
        self._mem_nb = self.cmm_memory_cb

        if partition is None and hv is not None:
            partition = hv.add_partition(logical_mem=machine.nr_frames * PAGE_SIZE)
        self.partition = partition

        # "disable" is a module_param_call: its setter runs at load, first
        rc = self.cmm_set_disable(disable if isinstance(disable, str) else None,
                                  _value=None if isinstance(disable, str) else disable)
        if rc:
            raise OSError(-rc, os.strerror(-rc), "disable")
        rc = self.cmm_init()
        if rc:
            raise OSError(-rc, os.strerror(-rc), "cmm_init")
        self.loaded = True

    # -- small helpers ------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unload()

    def cmm_dbg(self, fmt, *args):
        """cmm_dbg(): log at info level when the debug parameter is set."""
        if self.cmm_debug:
            log.info("cmm: " + fmt, *args)

    def _fault(self, step):
        """The injected result of init step ``step``: 0 or -errno (once)."""
        err = self.init_faults.pop(step, 0)
        return -err if err else 0

    def _log(self, what):
        self.init_log.append(what)

    @property
    def firmware_has_cmo(self):
        """firmware_has_feature(FW_FEATURE_CMO)."""
        return bool(self.hv is not None and self.hv.cmo)

    def cmo_get_page_size(self):
        """cmo_get_page_size(): the CMO page size the firmware reports."""
        return self.hv.cmo_page_size if self.hv is not None else PAGE_SIZE

    def plpar_hcall_norets(self, opcode, flags, addr):
        """plpar_hcall_norets() for H_PAGE_INIT on our partition."""
        assert opcode == H_PAGE_INIT
        return self.partition.hcall_page_init(flags, addr)

    # -- loaning one page ---------------------------------------------------
    def plpar_page_set_loaned(self, pfn):
        """plpar_page_set_loaned(): H_PAGE_SET_LOANED on every CMO page of
        the page; if one fails, set the ones already loaned back to active
        (their errors ignored).  Returns the failing rc or 0.  No hcall in
        simulate mode."""
        return self._page_set(pfn, H_PAGE_SET_LOANED, H_PAGE_SET_ACTIVE)

    def plpar_page_set_active(self, pfn):
        """plpar_page_set_active(): the mirror of plpar_page_set_loaned()."""
        return self._page_set(pfn, H_PAGE_SET_ACTIVE, H_PAGE_SET_LOANED)

    def _page_set(self, pfn, flags, undo):
        if self.simulate:
            return 0
        vpa = pfn * PAGE_SIZE
        sz = self.cmo_get_page_size()
        rc = 0
        i = 0
        while not rc and i < PAGE_SIZE:        # for (i = 0; !rc && i < PAGE_SIZE; i += sz)
            rc = self.plpar_hcall_norets(H_PAGE_INIT, flags, vpa + i)
            i += sz
        i -= sz                                # for (i -= sz; rc && i != 0; i -= sz)
        while rc and i != 0:
            self.plpar_hcall_norets(H_PAGE_INIT, undo, vpa + i - sz)
            i -= sz
        return rc

    # -- inflate / deflate ----------------------------------------------------
    def cmm_alloc_pages(self, nr):
        """cmm_alloc_pages(): loan up to ``nr`` pages.  Stops early if a
        hotplug is in progress or has occurred, if no page can be had, or if
        loaning one fails (that page is freed).  Returns the number of pages
        NOT loaned."""
        m = self.machine
        self.cmm_dbg("Begin request for %d pages", nr)
        while nr:
            # Exit if a hotplug operation is in progress or occurred
            if self.hotplug_mutex.acquire(blocking=False):
                if self.hotplug_occurred:
                    self.hotplug_mutex.release()
                    break
                self.hotplug_mutex.release()
            else:
                break
            pfn = bal.balloon_page_alloc(m)
            if pfn is None:
                break
            rc = self.plpar_page_set_loaned(pfn)
            if rc:
                log.error("cmm_alloc_pages: Can not set page to loaned. rc=%d", rc)
                m.balloon_page_free(pfn)              # __free_page()
                break
            bal.balloon_page_enqueue(self.b_dev_info, pfn)
            self.loaned_pages.inc()
            m.adjust_managed_page_count(-1, pfn)
            nr -= 1
        self.cmm_dbg("End request with %d pages unfulfilled", nr)
        return nr

    def cmm_free_pages(self, nr):
        """cmm_free_pages(): give back up to ``nr`` pages, newest first; a
        failing set-active is ignored.  Stops early if the balloon list is
        empty (pages isolated by compaction).  Returns pages NOT freed."""
        m = self.machine
        self.cmm_dbg("Begin free of %d pages.", nr)
        while nr:
            pfn = bal.balloon_page_dequeue(self.b_dev_info)
            if pfn is None:
                break
            self.plpar_page_set_active(pfn)
            m.adjust_managed_page_count(1, pfn)
            m.balloon_page_free(pfn)                  # __free_page()
            self.loaned_pages.dec()
            nr -= 1
        self.cmm_dbg("End request with %d pages unfulfilled", nr)
        return nr

    # -- notifiers ------------------------------------------------------------
    def cmm_oom_notify(self):
        """cmm_oom_notify(): the Machine's OOM notifier.  Frees oom_kb worth
        of pages, makes the current count the target, adds what it freed to
        oom_freed_pages and returns it (the notifier's ``*freed +=``)."""
        nr = KB2PAGES(self.oom_kb)
        self.cmm_dbg("OOM processing started")
        nr = self.cmm_free_pages(nr)
        self.loaned_pages_target = self.loaned_pages.read()
        freed = KB2PAGES(self.oom_kb) - nr
        self.oom_freed_pages = to_u64(self.oom_freed_pages + freed)
        self.cmm_dbg("OOM processing complete")
        return freed

    def cmm_reboot_notifier(self, action, unused=None):
        """cmm_reboot_notifier(): on SYS_RESTART stop the thread and give
        every page back, so none is still loaned after the reboot."""
        if action == SYS_RESTART:
            if self.cmm_thread_ptr:
                self.cmm_thread_ptr.stop()
            self.cmm_thread_ptr = None
            self.cmm_free_pages(self.loaned_pages.read())
        return NOTIFY_DONE

    def cmm_memory_cb(self, action, arg=None):
        """cmm_memory_cb(): memory hotplug.  MEM_GOING_OFFLINE takes the
        hotplug mutex (held until MEM_OFFLINE or MEM_CANCEL_OFFLINE) and
        sets hotplug_occurred; the online actions do nothing.

        Where the kernel would hang or warn, this raises: a second
        GOING_OFFLINE before the first completes raises OSError(EDEADLK),
        OFFLINE/CANCEL_OFFLINE without a GOING_OFFLINE, OSError(EINVAL)."""
        if action == MEM_GOING_OFFLINE:
            if self._hotplug_held:
                raise OSError(errno.EDEADLK, "hotplug mutex already held by a hotplug")
            self.hotplug_mutex.acquire()               # mutex_lock()
            self._hotplug_held = True
            self.hotplug_occurred = 1
        elif action in (MEM_OFFLINE, MEM_CANCEL_OFFLINE):
            if not self._hotplug_held:
                raise OSError(errno.EINVAL, "hotplug mutex not held")
            self._hotplug_held = False
            self.hotplug_mutex.release()               # mutex_unlock()
            self.cmm_dbg("Memory offline operation complete.")
        return NOTIFY_OK

    # -- the target -----------------------------------------------------------
    def cmm_get_mpp(self):
        """cmm_get_mpp(): ask the hypervisor (or simulate_loan_target_kb)
        and set loaned_pages_target, with cmm.c's signed arithmetic:

          target = loan_request / PAGE_SIZE (toward zero) + loaned
          0 if target < 0 or total < min_mem_pages
          minus oom_freed_pages (0 if not larger)
          at most total - min_mem_pages, never below 0

        A failed H_GET_MPP leaves the target as it was.  Returns whether the
        target was recomputed (cmm.c returns nothing)."""
        loaned = self.loaned_pages.read()
        total_pages = to_s64(self.machine.totalram_pages + loaned)
        min_mem_pages = to_s64(to_u64(self.min_mem_mb * 1024 * 1024) // PAGE_SIZE)

        if not self.simulate:
            rc, mpp = h_get_mpp(self.partition)
            if rc != H_SUCCESS:
                self.stats["mpp_failures"] += 1
                return False
            page_loan_request = div_s64(mpp.loan_request, PAGE_SIZE)
            target = to_s64(page_loan_request + loaned)
        else:
            target = to_s64(KB2PAGES(self.simulate_loan_target_kb))
            page_loan_request = to_s64(target - loaned)

        if target < 0 or total_pages < min_mem_pages:
            target = 0

        if to_u64(target) > self.oom_freed_pages:      # signed vs unsigned long
            target = to_s64(target - self.oom_freed_pages)
        else:
            target = 0

        active_pages_target = to_s64(total_pages - target)

        if min_mem_pages > active_pages_target:
            target = to_s64(total_pages - min_mem_pages)

        if target < 0:
            target = 0

        self.loaned_pages_target = target
        self.cmm_dbg("delta = %d, loaned = %d, target = %d, oom = %d, totalram = %d",
                     page_loan_request, loaned, self.loaned_pages_target,
                     self.oom_freed_pages, self.machine.totalram_pages)
        return True

    # -- the thread -----------------------------------------------------------
    def cmm_thread(self):
        """cmm_thread(), as a generator: each ``yield s`` is
        msleep_interruptible(s * 1000); the clock running it ends it at a
        yield when kthread_stop() is called."""
        while True:
            yield to_u32(self.delay * 1000) / 1000.0

            if self.hotplug_mutex.acquire(blocking=False):
                if self.hotplug_occurred:
                    self.hotplug_occurred = 0
                    self.hotplug_mutex.release()
                    self.cmm_dbg("Hotplug operation has occurred, loaning activity "
                                 "suspended for %d seconds.", self.hotplug_delay)
                    self.stats["hotplug_pauses"] += 1
                    yield to_u32(self.hotplug_delay * 1000) / 1000.0
                    continue
                self.hotplug_mutex.release()
            else:
                self.cmm_dbg("Hotplug operation in progress, activity suspended")
                self.stats["skipped_hotplug"] += 1
                continue

            mpp_ok = self.cmm_get_mpp()

            loaned = self.loaned_pages.read()
            if self.loaned_pages_target > loaned:
                if self.cmm_alloc_pages(self.loaned_pages_target - loaned):
                    self.loaned_pages_target = loaned
                    self.stats["alloc_short"] += 1
            elif self.loaned_pages_target < loaned:
                self.cmm_free_pages(loaned - self.loaned_pages_target)
            self.stats["rounds"] += 1
            for hook in list(self.poll_hooks):
                hook(self, mpp_ok)

    def _kthread_run(self):
        """kthread_run(cmm_thread, NULL, "cmmthread"): a Kthread or -errno."""
        rc = self._fault("kthread_run")
        if rc:
            return rc
        return self.clock.kthread_run(self.cmm_thread(), "cmmthread")

    # -- balloon compaction ---------------------------------------------------
    def cmm_migratepage(self, b_dev_info, newpfn, pfn, mode):
        """cmm_migratepage(): loan the new page first (if that fails: EBUSY,
        nothing changed), move the balloon entry, fix the managed page count
        if the zones differ, then set the old page active (errors ignored).
        The caller frees the old frame."""
        m = self.machine
        if self.plpar_page_set_loaned(newpfn):
            log.error("cmm_migratepage: Cannot set page to loaned.")
            return -errno.EBUSY
        if m.page_zone(pfn) != m.page_zone(newpfn):
            m.adjust_managed_page_count(1, pfn)      # the old page's zone
            m.adjust_managed_page_count(-1, newpfn)  # the new page's zone
        with b_dev_info.pages_lock:
            bal.balloon_page_insert(b_dev_info, newpfn)
            bal.balloon_page_delete(b_dev_info, pfn)
            b_dev_info.isolated_pages -= 1
        self.plpar_page_set_active(pfn)
        return bal.MIGRATEPAGE_SUCCESS

    def cmm_balloon_compaction_init(self):
        """cmm_balloon_compaction_init(): 0 or -errno.  In 002 it mounts the
        ppc-cmm pseudo fs and allocates the balloon's anon inode, undoing the
        mount if the inode fails; in 000 it cannot fail."""
        bal.balloon_devinfo_init(self.b_dev_info)
        if not self.compaction:
            return 0
        self.b_dev_info.migratepage = self.cmm_migratepage
        if self.version == "000":
            return 0
        rc = self._fault("kern_mount")
        if rc:
            self.balloon_mnt = None
            return rc
        self.balloon_mnt = "ppc-cmm"
        self._log("+balloon_mnt")
        rc = self._fault("alloc_anon_inode")
        if rc:
            self.b_dev_info.inode = None
            self.balloon_mnt = None
            self._log("-balloon_mnt")
            return rc
        self.b_dev_info.inode = "balloon_aops"
        self._log("+inode")
        return 0

    def cmm_balloon_compaction_deinit(self):
        """cmm_balloon_compaction_deinit() (002 only)."""
        if not self.compaction or self.version == "000":
            return
        if self.b_dev_info.inode:
            self._log("-inode")
        self.b_dev_info.inode = None
        self._log("-balloon_mnt")
        self.balloon_mnt = None

    def compact(self):
        """Migrate every balloon page once, as memory compaction would.
        Returns a cmm.balloon.CompactResult.  Without compaction configured
        balloon pages are not movable and nothing happens."""
        if not self.compaction or self.b_dev_info.migratepage is None:
            return bal.CompactResult()
        return bal.balloon_compact(self.b_dev_info, self.machine)

    # -- module init / exit ---------------------------------------------------
    def cmm_init(self):
        """cmm_init(): 0 or -errno.  Each registration that a later step's
        failure makes useless is undone, in reverse order."""
        if not self.firmware_has_cmo and not self.simulate:
            return -errno.EOPNOTSUPP

        rc = self.cmm_balloon_compaction_init()
        if rc:
            return rc

        rc = self._fault("register_oom_notifier")
        if rc < 0:
            return self._init_unwind(rc, "out_balloon_compaction")
        self.machine.register_oom_notifier(self._oom_nb)
        self._log("+oom_notifier")

        rc = self._fault("register_reboot_notifier")
        if not rc:
            try:
                self.reboot_chain.register(self._reboot_nb)
                self._log("+reboot_notifier")
            except OSError as e:
                rc = -e.errno
        if rc:
            return self._init_unwind(rc, "out_oom_notifier")

        rc = cmm_sysfs_register(self)
        if rc:
            return self._init_unwind(rc, "out_reboot_notifier")

        rc = self._fault("register_memory_notifier")
        if not rc:
            try:
                self.memory_chain.register(self._mem_nb, CMM_MEM_HOTPLUG_PRI)
                self._log("+memory_notifier")
            except OSError as e:
                rc = -e.errno
        if rc:
            return self._init_unwind(rc, "out_unregister_notifier")

        if self.cmm_disabled:
            return 0

        k = self._kthread_run()
        if isinstance(k, int):
            self.cmm_thread_ptr = None
            return self._init_unwind(k, "out_unregister_notifier")
        self.cmm_thread_ptr = k
        return 0

    def _init_unwind(self, rc, label):
        """The error labels at the end of cmm_init(), falling through."""
        labels = ["out_unregister_notifier", "out_reboot_notifier",
                  "out_oom_notifier", "out_balloon_compaction"]
        for lab in labels[labels.index(label):]:
            if lab == "out_unregister_notifier":
                self._unregister_memory_notifier()
                cmm_unregister_sysfs(self)
            elif lab == "out_reboot_notifier":
                self._unregister_reboot_notifier()
            elif lab == "out_oom_notifier":
                self._unregister_oom_notifier()
            else:
                self.cmm_balloon_compaction_deinit()
        return rc

    def _unregister_oom_notifier(self):
        self.machine.unregister_oom_notifier(self._oom_nb)
        self._log("-oom_notifier")

    def _unregister_reboot_notifier(self):
        if self.reboot_chain.unregister(self._reboot_nb) == 0:
            self._log("-reboot_notifier")

    def _unregister_memory_notifier(self):
        # cmm_init's out_unregister_notifier label also runs when
        # register_memory_notifier itself failed: unregistering a block that
        # is not on the chain is a harmless -ENOENT there, as here.
        if self.memory_chain.unregister(self._mem_nb) == 0:
            self._log("-memory_notifier")

    def cmm_exit(self):
        """cmm_exit(): stop the thread, drop the notifiers, give every page
        back, remove sysfs (and, in 002, the compaction fs)."""
        if self.cmm_thread_ptr:
            self.cmm_thread_ptr.stop()
        self._unregister_oom_notifier()
        self._unregister_reboot_notifier()
        self._unregister_memory_notifier()
        self.cmm_free_pages(self.loaned_pages.read())
        cmm_unregister_sysfs(self)
        self.cmm_balloon_compaction_deinit()

    def unload(self):
        """rmmod cmm: cmm_exit() once."""
        if self.loaded:
            self.cmm_exit()
            self.cmm_thread_ptr = None
            self.loaded = False

    # -- the disable parameter ------------------------------------------------
    def cmm_set_disable(self, val, _value=None):
        """cmm_set_disable(): 0 or -errno.  ``val`` is the text written
        (parsed with simple_strtoul, then truncated to int as cmm.c does);
        only 0 and 1 are accepted.  1 stops the thread and frees every
        loaned page; 0 starts the thread again."""
        if val is not None:
            disable = to_s32(simple_strtoul(val, 10))
        else:
            disable = _value
            if isinstance(disable, bool):
                disable = int(disable)
            if not isinstance(disable, int):
                return -errno.EINVAL

        if disable != 0 and disable != 1:
            return -errno.EINVAL

        if disable and not self.cmm_disabled:
            if self.cmm_thread_ptr:
                self.cmm_thread_ptr.stop()
            self.cmm_thread_ptr = None
            self.cmm_free_pages(self.loaned_pages.read())
        elif not disable and self.cmm_disabled:
            k = self._kthread_run()
            if isinstance(k, int):
                return k
            self.cmm_thread_ptr = k

        self.cmm_disabled = disable
        return 0

    # -- convenience views ----------------------------------------------------
    @property
    def loaned_kb(self):
        return PAGES2KB(self.loaned_pages.read())

    @property
    def loaned_target_kb(self):
        return PAGES2KB(self.loaned_pages_target)

    @property
    def oom_freed_kb(self):
        return PAGES2KB(self.oom_freed_pages)

    def vmstat(self):
        """The balloon counters: nr_balloon_pages, balloon_inflate,
        balloon_deflate, balloon_migrate."""
        with self.b_dev_info.pages_lock:
            return dict(self.b_dev_info.vmstat)

    def balloon_pfns(self):
        """Every frame the balloon holds (on its list or isolated)."""
        return self.b_dev_info.owned()
