"""The state of the system model (test_system_model.py says what it drives
and checks): the state machine's state, helpers, start, invariant and
teardown (SystemState).  The rules are mixins by subject
(system_process_rules.py, system_ksm_balloon_rules.py); test_system_model.py
composes them (SystemModel) and runs them.

Data structures of the machine (SystemState):
  m, hv, clock, drv   the system under test (the driver on a SimClock)
  now                 the machine's clock in ms (advanced with the driver's)
  procs               [(Process, ModelProcess)] of the live processes
  direct              pfns taken with m.balloon_page_alloc() and not given back
  serial              counter for unique page contents
"""
import errno

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant

from cmm import CmmDriver, Hypervisor, SimClock
from ksm_engine import MADV_MERGEABLE, PR_SET_MEMORY_MERGE, Machine, SegmentationFault
from ksm_engine.process import MMAP_BASE

from .invariants import FLAG_KSM, FLAG_ZERO, HcallWatch, check_hypervisor, check_system
from .model import PAGE_SIZE, ModelProcess, pages_spanned


IDX = st.integers(0, 1 << 16)
# Page patterns to write (model.pattern_page): repeats are likely on purpose.
PATTERNS = st.lists(st.sampled_from([1, 1, 1, 2, 0, 0, 4, 5, 6, 7]), min_size=1, max_size=6)

# Knob writes the machine tries (valid values; garbage is test_boundary_fuzz's).
KNOBS_6X = [("pages_to_scan", v) for v in ("0", "1", "100", "5000")] + \
    [("max_page_sharing", v) for v in ("2", "3", "256")] + \
    [("use_zero_pages", v) for v in ("0", "1")] + \
    [("smart_scan", v) for v in ("0", "1")] + \
    [("merge_across_nodes", v) for v in ("0", "1")] + \
    [("stable_node_chains_prune_millisecs", v) for v in ("0", "10", "2000")] + \
    [("advisor_mode", v) for v in ("none", "scan-time")] + \
    [("sleep_millisecs", "0")] + [("run", v) for v in ("0", "1", "2", "2")]
KNOBS_2009 = [("pages_to_scan", v) for v in ("0", "1", "100")] + \
    [("max_kernel_pages", v) for v in ("0", "1", "2", "8")] + \
    [("sleep_millisecs", "0")] + [("run", v) for v in ("0", "1", "2", "2")]

# What the runs did, summed over every run of the session (for the report).
COUNTS = {"runs": 0, "checks": 0, "enomem_writes": 0, "merges_seen": 0, "ooms": 0}


def _ksm_ptes(proc, model, start=None, npages=None, mergeable_only=False):
    """Pages of proc (all mapped runs, or one range) mapping a KSM page or
    the KSM zero page: what unmerging them would need frames for.  With
    mergeable_only, those in VM_MERGEABLE pages only (what run=2 unmerges)."""
    runs = model.runs() if start is None else [(start, npages)]
    n = 0
    for s, k in runs:
        _, flags = proc.ptes(s, k)
        n += sum(1 for i, f in enumerate(flags) if f in (FLAG_KSM, FLAG_ZERO) and
                 (not mergeable_only or model.mapped[s + i * PAGE_SIZE]))
    return n


class SystemState(RuleBasedStateMachine):
    """See the module comment; SystemModel adds the rules."""

    COMPAT = None
    CMO_PAGE_SIZE = 1024
    RAM = 1 << 20          # 256 frames: exhaustion is a few writes away
    MAX_PROCS = 6
    MAX_MAPPED = 384       # pages mapped per process
    KNOBS = KNOBS_6X

    def __init__(self):
        super().__init__()
        COUNTS["runs"] += 1
        self.now = 0
        self.m = Machine(ram=self.RAM, ksm_compat=self.COMPAT, clock=lambda: self.now)
        self.hv = Hypervisor(cmo_page_size=self.CMO_PAGE_SIZE)
        self.clock = SimClock()
        self.drv = CmmDriver(self.m, self.hv, delay=1, hotplug_delay=1, oom_kb=16,
                             min_mem_mb=0, clock=self.clock)
        HcallWatch(self.drv.partition)
        self.procs = []
        self.direct = []
        self.serial = 0
        self.m.register_oom_notifier(self._count_oom)

    def _count_oom(self):
        COUNTS["ooms"] += 1
        return 0

    # --- helpers ---------------------------------------------------------------

    def _proc(self, i):
        return self.procs[i % len(self.procs)]

    def _near(self, model, near, delta):
        """An address around a mapped page (or the mmap base), page aligned."""
        pages = sorted(model.mapped)
        base = pages[near % len(pages)] if pages else MMAP_BASE
        return max(base + delta * PAGE_SIZE, 0)

    def _store(self, proc, model, addr, data, byte=None):
        """p.write (or p.fill with ``byte``) with the outcome the model
        predicts: EFAULT iff a byte is unmapped; ENOMEM only when the frames
        left after the OOM notifiers cannot cover the pages touched; any
        failure changes nothing (the invariant re-reads everything)."""
        covered = model.covered(addr, len(data))
        try:
            if byte is None:
                proc.write(addr, data)
            else:
                proc.fill(addr, byte, len(data))
        except SegmentationFault as e:
            assert e.errno == errno.EFAULT and not covered
            return False
        except OSError as e:
            assert e.errno == errno.ENOMEM and covered, e
            assert self.m.free_pages < len(pages_spanned(addr, len(data)))
            COUNTS["enomem_writes"] += 1
            return False
        assert covered, f"write at {addr:#x}+{len(data)} succeeded outside the areas"
        model.write(addr, data)
        return True

    def _sync_flags(self, proc, model, pages):
        """After a partial MADV_UNMERGEABLE / prctl(0) (ENOMEM midway): the
        engine's flags for ``pages`` may only have gone from mergeable to
        not; adopt them."""
        for p in pages:
            if p not in model.mapped:
                continue
            flag = proc.area_at(p).mergeable
            assert flag in (False, model.mapped[p]), f"{p:#x} became mergeable"
            model.mapped[p] = flag

    # --- the start: processes with mergeable memory, knobs, a loan target -------

    @initialize(nprocs=st.integers(1, 3), npages=st.integers(4, 32), any_=st.booleans(),
                knobs=st.lists(st.integers(0, 1 << 16), max_size=3),
                zero=st.booleans(), mps=st.sampled_from(["2", "3", "256"]),
                kb=st.sampled_from([0, 0, 256, 700]))
    def start(self, nprocs, npages, any_, knobs, zero, mps, kb):
        """KSM only merges what is mergeable and scanned twice, the balloon
        only moves when the clock does: start from a state where all of it
        is a few steps away (mergeable areas, knobs such as a small
        max_page_sharing or use_zero_pages set while nothing is shared)."""
        for k in knobs:
            name, value = self.KNOBS[k % len(self.KNOBS)]
            if name != "run" and not (name == "pages_to_scan" and self.m.ksm.sysfs.get(
                    "advisor_mode", "[none]").startswith("none")):
                self.m.ksm.sysfs[name] = value
        if self.COMPAT is None:
            self.m.ksm.sysfs["use_zero_pages"] = str(int(zero))
            self.m.ksm.sysfs["max_page_sharing"] = mps
        for _ in range(nprocs):
            p, mp = self.m.spawn(name="init"), ModelProcess()
            if any_:
                p.prctl(PR_SET_MEMORY_MERGE, 1)
                mp.merge_any = True
            addr = p.mmap(npages * PAGE_SIZE)
            mp.mmap(addr, npages)
            if not any_:
                p.madvise(addr, npages * PAGE_SIZE, MADV_MERGEABLE)
                mp.set_mergeable(addr, npages, True)
            self.procs.append((p, mp))
        self.drv.partition.set_loan_target(kb * 1024)

    # --- after every step, and at the end ----------------------------------------

    @invariant()
    def consistent(self):
        COUNTS["checks"] += 1
        check_system(self.m, self.procs, self.drv, self.direct)

    def teardown(self):
        """Everything given back: processes exit, the driver unloads, direct
        balloon frames are freed; then every frame is free again and the
        hypervisor holds nothing but stale CMO pages."""
        for p, _ in self.procs:
            p.exit()
        self.procs = []
        self.drv.unload()
        for pfn in self.direct:
            self.m.balloon_page_free(pfn)
        self.direct = []
        self.m.check()
        info = self.m.meminfo()
        assert info["free_pages"] == info["nr_frames"] == info["totalram_pages"]
        assert info["used_pages"] == info["balloon_pages"] == info["ksm_pages"] == 0
        check_hypervisor(self.drv)
        st_ = self.m.ksm.stats
        assert st_["rmap_items"] == 0 and self.m.ksm.stable_nodes() == []
