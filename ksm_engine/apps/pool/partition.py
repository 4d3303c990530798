"""One partition of the pool: a Machine with its own processes, its own KSM
(knobs, ksmd on the shared clock) and its own CMM balloon driver, and the
hypervisor's records of it (cmm.hypervisor.Partition for the loans,
cmm.paging.PartitionMemory for where its pages are).

Life cycle (each a method):
  start()        boot: a fresh Machine; KSM knobs written and ksmd started
                 (if the partition runs KSM); CmmDriver loaded (if it runs
                 CMM); the Machine's access_hook set to its PartitionMemory;
                 the workload thread started on the clock
  stop()         clean shutdown: the workload and ksmd stop, the reboot
                 notifier runs (cmm frees its balloon), the driver unloads,
                 the processes exit; then the hypervisor takes back every
                 pool page and device slot of the partition
  crash()        no shutdown at all: the threads simply stop and the
                 hypervisor takes everything back, loans included
  reboot()       stop() then start(); crash-and-boot is crash() then start()

Counters (``counters``, carried over reboots): work, ticks, stalls,
failed_allocs, oom_calls (the guest's OOM notifier chain ran), boots,
crashes.
"""
import errno

from cmm.driver import CmmDriver
from cmm.notifier import SYS_RESTART
from cmm.paging import PartitionMemory
from ksm_engine import PAGE_SIZE, Machine

from ...ksm.sysfs import apply_knobs
from .workload import Workload

COUNTERS = ("work", "ticks", "stalls", "failed_allocs", "oom_calls", "boots", "crashes",
            "page_ins", "page_outs", "stall_us")


class PoolPartition:
    """One partition (see the module doc).

    Fields:
      spec       its validated scenario entry (name, logical_mb, ...)
      index      its position in the scenario (seeds its workload)
      ksm, cmm   whether it runs KSM and the balloon (mode applied)
      part       its cmm.hypervisor.Partition (kept across reboots)
      pm         its PartitionMemory while running, else None
      machine, drv, workload   while running, else None
      counters   see the module doc
    """

    def __init__(self, spec, index, hv, pool, clock, seed, ksm, cmm):
        self.spec = spec
        self.name = spec["name"]
        self.index = index
        self.hv = hv
        self.pool = pool
        self.clock = clock
        self.seed = seed
        self.ksm = ksm
        self.cmm = cmm
        self.part = hv.add_partition(spec["logical_mb"] << 20, lpar_id=index + 1,
                                     entitled_mem=spec["entitled_mb"] << 20,
                                     mem_weight=spec["mem_weight"])
        self.pm = self.machine = self.drv = self.workload = None
        self._kthread = None
        self.counters = dict.fromkeys(COUNTERS, 0)

    @property
    def running(self):
        return self.machine is not None

    def _oom_seen(self):
        """An OOM notifier that only counts the guest's OOM calls."""
        self.counters["oom_calls"] += 1
        return 0

    def start(self):
        """Boot the partition (see the module doc).  Raises KnobError for a
        knob KSM refuses, OSError if the driver cannot load."""
        if self.running:
            return
        clock = self.clock
        m = Machine(ram=self.spec["logical_mb"] << 20, clock=lambda: clock.now_ms)
        pm = PartitionMemory(self.pool, self.part, self.name, m.nr_frames)
        pm.machine = m
        self.part.memory = pm
        self.pool.parts.append(pm)
        m.access_hook = pm
        self.machine, self.pm = m, pm
        m.register_oom_notifier(self._oom_seen)
        try:
            if self.ksm:
                apply_knobs(m, self.spec["knobs"])
                m.ksm.start(clock)
            if self.cmm:
                self.drv = CmmDriver(m, self.hv, clock=clock, partition=self.part,
                                     **self.spec["cmm_params"])
        except BaseException:
            self._discard(clean=False)
            raise
        self.workload = Workload(m, self.spec["workload"], self.ksm, self.seed, self.index,
                                 self.counters)
        self._kthread = clock.kthread_run(self.workload.thread(pm), f"{self.name}-work")
        self.counters["boots"] += 1

    def _discard(self, clean):
        """Shut down (clean: as a reboot does) or drop the partition, and
        give the hypervisor back everything it held."""
        m = self.machine
        if self._kthread is not None:
            self._kthread.stop()
            self._kthread = None
        m.ksm.stop()
        drv = self.drv
        if drv is not None:
            if clean:
                drv.reboot_chain.call_chain(SYS_RESTART)
                drv.unload()
            elif drv.cmm_thread_ptr is not None:
                drv.cmm_thread_ptr.stop()       # the guest is gone: nothing runs
        if clean:
            m.access_hook = None                # the guest's exits touch nothing
            for p in m.processes:
                p.exit()
        m.access_hook = None
        part = self.part
        with self.hv.lock:
            part.loaned.clear()
            part.stale.clear()
            part.coalesce_cand.clear()
            part.loan_target = 0
            part.memory = None
        pm = self.pm
        c = self.counters
        c["page_ins"] += pm.page_ins
        c["page_outs"] += pm.page_outs
        c["stall_us"] += pm.stall_total_us
        pm.release_all()
        self.pool.parts.remove(pm)
        self.machine = self.pm = self.drv = self.workload = None

    def stop(self):
        if self.running:
            self._discard(clean=True)

    def crash(self):
        if self.running:
            self.counters["crashes"] += 1
            self._discard(clean=False)

    def reboot(self):
        self.stop()
        self.start()

    def burst(self, mb, seconds):
        """A workload burst; ENOENT if the partition is not running."""
        if not self.running:
            raise OSError(errno.ENOENT, f"{self.name} is not running")
        self.workload.add_burst(mb, seconds)

    def sample(self):
        """This partition's figures now, as plain data."""
        c = self.counters
        out = {"name": self.name, "running": self.running, "phase": None,
               "loaned_pages": 0, "pages_shared": 0, "pages_sharing": 0, "free_pages": 0,
               "used_pages": 0, "backed_pages": 0, "paged_pages": 0}
        ins, outs, stall = c["page_ins"], c["page_outs"], c["stall_us"]
        if self.running:
            m, pm = self.machine, self.pm
            st = m.ksm.stats
            out.update(phase=self.workload.phase,
                       loaned_pages=self.drv.loaned_pages.read() if self.drv else 0,
                       pages_shared=st["pages_shared"], pages_sharing=st["pages_sharing"],
                       free_pages=m.free_pages, used_pages=m.used_pages,
                       backed_pages=pm.backed, paged_pages=pm.paged)
            ins, outs, stall = ins + pm.page_ins, outs + pm.page_outs, stall + pm.stall_total_us
        out.update(page_ins=ins, page_outs=outs, stall_ms=round(stall / 1000, 3))
        out.update((k, c[k]) for k in ("work", "stalls", "failed_allocs", "oom_calls"))
        out["hv_loaned_pages"] = self.part.loaned_bytes // PAGE_SIZE
        return out
