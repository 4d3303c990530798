"""The whole system against a pure-Python reference model (hypothesis).

One state machine drives a small Machine (256 frames) with everything at
once: processes (spawn, mmap, munmap, write, fill, read, fork, exit,
madvise, prctl), KSM (knob writes including run=2 and the EBUSY ones, scan
batches, full scans), the CMM balloon driver on a simulated clock (the
hypervisor's target, thread rounds, H_PAGE_INIT and H_GET_MPP failures,
OOM, compaction, disable, reboot, hotplug), frames taken and given back
with Machine.balloon_page_alloc/free directly, and writes that exhaust the
arena.  Every rule predicts its outcome from the model (EEXIST, EFAULT,
ENOMEM, EBUSY, EINVAL) or, where it cannot (an ENOMEM that depends on how
much sharing a write must break), checks the failure was justified and that
nothing changed.  After every step invariants.check_system() verifies all
reads, Machine.check(), the KSM counters recomputed from the page tables,
frame accounting and the hypervisor's record.  Teardown exits everything
and unloads the driver: every frame must be free again.

Data structures of the machine (SystemModel):
  m, hv, clock, drv   the system under test (the driver on a SimClock)
  now                 the machine's clock in ms (advanced with the driver's)
  procs               [(Process, ModelProcess)] of the live processes
  direct              pfns taken with m.balloon_page_alloc() and not given back
  serial              counter for unique page contents

Profiles: a short one by default (CI), KSM_ENGINE_LONG=1 for a soak run
that prints how many steps it ran (docs/robustness.md).
"""
import errno
import json
import os
import time

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

from cmm import CmmDriver, Hypervisor, SimClock
from cmm.hypervisor import H_BUSY, H_HARDWARE, H_PARAMETER
from cmm.notifier import MEM_GOING_OFFLINE, MEM_OFFLINE, SYS_RESTART
from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PR_SET_MEMORY_MERGE, Machine,
                        ProcessExited, SegmentationFault)
from ksm_engine.process import MMAP_BASE

from .invariants import FLAG_KSM, FLAG_ZERO, HcallWatch, check_hypervisor, check_system
from .model import PAGE_SIZE, ModelProcess, pages_spanned, pattern_page, unique_page
from .profiles import LONG, STATEFUL

if LONG:
    pytestmark = pytest.mark.timeout(0)

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


class SystemModel(RuleBasedStateMachine):
    """See the module comment."""

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

    # --- processes -------------------------------------------------------------

    @precondition(lambda self: len(self.procs) < self.MAX_PROCS)
    @rule()
    def spawn(self):
        self.procs.append((self.m.spawn(name=f"p{COUNTS['runs']}"), ModelProcess()))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, npages=st.integers(1, 24), fixed=st.booleans(), near=IDX,
          delta=st.integers(-6, 6))
    def mmap(self, i, npages, fixed, near, delta):
        p, mp = self._proc(i)
        if len(mp.mapped) + npages > self.MAX_MAPPED:
            return
        if not fixed:
            addr = p.mmap(npages * PAGE_SIZE)
            assert addr % PAGE_SIZE == 0 and not mp.overlaps(addr, npages)
            mp.mmap(addr, npages)
            return
        addr = self._near(mp, near, delta)
        clash = mp.overlaps(addr, npages)
        try:
            got = p.mmap(npages * PAGE_SIZE, addr=addr)
        except OSError as e:
            assert e.errno == errno.EEXIST and clash, e
            return
        assert got == addr and not clash
        mp.mmap(addr, npages)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, delta=st.integers(-2, 2), npages=st.integers(1, 16))
    def munmap(self, i, near, delta, npages):
        p, mp = self._proc(i)
        addr = self._near(mp, near, delta)
        p.munmap(addr, npages * PAGE_SIZE)
        mp.munmap(addr, npages)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, patterns=PATTERNS)
    def write_pages(self, i, near, patterns):
        """Whole pages from a small alphabet: what KSM merges."""
        p, mp = self._proc(i)
        self._store(p, mp, self._near(mp, near, 0),
                    b"".join(pattern_page(k) for k in patterns))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, patterns=PATTERNS)
    def write_pages_again(self, i, near, patterns):
        """(write_pages drawn twice as often: merges need duplicates.)"""
        self.write_pages(i, near, patterns)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, j=IDX, near=IDX, near2=IDX, npages=st.integers(1, 8))
    def copy_pages(self, i, j, near, near2, npages):
        """Pages of one process written into another: duplicates across
        processes, what KSM exists for."""
        p, mp = self._proc(i)
        q, mq = self._proc(j)
        src = self._near(mp, near, 0)
        self._store(q, mq, self._near(mq, near2, 0), mp.read(src, npages * PAGE_SIZE))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, offset=st.integers(-64, 2 * PAGE_SIZE),
          data=st.binary(min_size=1, max_size=300))
    def write_bytes(self, i, near, offset, data):
        """A few bytes anywhere, often across a page boundary or an edge."""
        p, mp = self._proc(i)
        addr = self._near(mp, near, 0) + offset
        if addr >= 0:
            self._store(p, mp, addr, data)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, offset=st.integers(-16, PAGE_SIZE),
          byte=st.sampled_from([0, 1, 7]) | st.integers(0, 255),
          length=st.integers(1, 3 * PAGE_SIZE))
    def fill(self, i, near, offset, byte, length):
        p, mp = self._proc(i)
        addr = self._near(mp, near, 0) + offset
        if addr >= 0:
            self._store(p, mp, addr, bytes([byte]) * length, byte=byte)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, offset=st.integers(-64, 2 * PAGE_SIZE),
          n=st.integers(1, 3 * PAGE_SIZE))
    def read(self, i, near, offset, n):
        p, mp = self._proc(i)
        addr = self._near(mp, near, 0) + offset
        if addr < 0:
            return
        if mp.covered(addr, n):
            assert p.read(addr, n) == mp.read(addr, n)
            buf = bytearray(n)
            assert p.readinto(addr, buf) == n and buf == mp.read(addr, n)
        else:
            with pytest.raises(SegmentationFault):
                p.read(addr, n)

    @precondition(lambda self: self.procs and len(self.procs) < self.MAX_PROCS)
    @rule(i=IDX)
    def fork(self, i):
        p, mp = self._proc(i)
        c = p.fork()
        assert c.ksm_stat["ksm_mergeable"] == p.ksm_stat["ksm_mergeable"]
        assert c.ksm_stat["ksm_rmap_items"] == 0
        self.procs.append((c, mp.fork()))

    @precondition(lambda self: self.procs)
    @rule(i=IDX)
    def exit(self, i):
        p, _ = self.procs.pop(i % len(self.procs))
        p.exit()
        with pytest.raises(ProcessExited):
            p.read(MMAP_BASE, 1)

    @precondition(lambda self: self.procs)
    @rule(i=IDX)
    def exhaust(self, i):
        """A write of unique pages, as many as frames are free and a few
        more: ENOMEM after the OOM notifiers unless they freed enough."""
        p, mp = self._proc(i)
        n = min(self.m.free_pages + 4, self.MAX_MAPPED - len(mp.mapped))
        if n <= 0:
            return
        addr = p.mmap(n * PAGE_SIZE)
        mp.mmap(addr, n)
        data = b"".join(unique_page(self.serial + k) for k in range(n))
        self.serial += n
        self._store(p, mp, addr, data)

    # --- KSM -------------------------------------------------------------------

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, delta=st.integers(-2, 2), npages=st.integers(1, 16),
          advice=st.sampled_from([MADV_MERGEABLE, MADV_UNMERGEABLE]))
    def madvise(self, i, near, delta, npages, advice):
        p, mp = self._proc(i)
        addr = self._near(mp, near, delta)
        pages = [addr + k * PAGE_SIZE for k in range(npages)]
        full = all(q in mp.mapped for q in pages)
        need = _ksm_ptes(p, mp, addr, npages) if advice == MADV_UNMERGEABLE else 0
        try:
            p.madvise(addr, npages * PAGE_SIZE, advice)
        except OSError as e:
            assert e.errno == errno.ENOMEM, e
            if advice == MADV_MERGEABLE:
                assert not full
                mp.set_mergeable(addr, npages, True)
            else:
                # unmapped pages in the range, or frames short to unmerge
                assert not full or self.m.free_pages < need
                self._sync_flags(p, mp, pages)
            return
        assert full
        mp.set_mergeable(addr, npages, advice == MADV_MERGEABLE)
        if advice == MADV_MERGEABLE:
            assert p.ksm_stat["ksm_mergeable"]

    @precondition(lambda self: self.procs)
    @rule(i=IDX, on=st.booleans())
    def prctl(self, i, on):
        p, mp = self._proc(i)
        need = _ksm_ptes(p, mp)
        try:
            assert p.prctl(PR_SET_MEMORY_MERGE, int(on)) == 0
        except OSError as e:
            # ksm_disable_merge_any(): frames short to unmerge; the whole
            # call fails and every area is (again) mergeable
            assert e.errno == errno.ENOMEM and not on and mp.merge_any, e
            assert self.m.free_pages < need
            for q in mp.mapped:
                mp.mapped[q] = True
            return
        if on:
            mp.merge_any = True
            for q in mp.mapped:
                mp.mapped[q] = True
        elif mp.merge_any:
            mp.merge_any = False
            for q in mp.mapped:
                mp.mapped[q] = False

    @rule(data=st.data())
    def knob(self, data):
        name, value = data.draw(st.sampled_from(self.KNOBS))
        ksm = self.m.ksm
        old = ksm.sysfs[name]
        st_ = ksm.stats
        busy = bool(st_.get("kernel_pages_allocated", st_["pages_shared"])
                    or self.m.meminfo()["ksm_pages"])
        unmerging = name == "run" and value == "2" and old != "2\n"
        need = sum(_ksm_ptes(p, mp) for p, mp in self.procs) if unmerging else 0
        try:
            ksm.sysfs[name] = value
        except OSError as e:
            if name in ("max_page_sharing", "merge_across_nodes"):
                assert e.errno == errno.EBUSY and busy and value + "\n" != old
            elif name == "pages_to_scan":
                assert e.errno == errno.EINVAL and ksm.sysfs["advisor_mode"] != "[none] scan-time\n"
            elif name == "run":
                assert e.errno == errno.ENOMEM and unmerging
                assert ksm.sysfs["run"] == "0\n"
                assert self.m.free_pages < need
                return
            else:
                raise
            assert ksm.sysfs[name] == old
            return
        if name in ("max_page_sharing", "merge_across_nodes") and value + "\n" != old:
            assert not busy
        if name != "advisor_mode":
            assert ksm.sysfs[name] == value + "\n"
        if unmerging:
            # (a fork child's copy in an area that is not VM_MERGEABLE keeps
            # its KSM page, and the page its stable node, with no rmap_item:
            # the kernel cannot remove a stable node whose page is mapped)
            assert ksm.stats["rmap_items"] == 0 and ksm.stats["full_scans"] == 0
            assert all(n["rmap_hlist_len"] == 0 for n in ksm.stable_nodes() if n["kind"] != "chain")
            assert sum(_ksm_ptes(p, mp, mergeable_only=True) for p, mp in self.procs) == 0
            kept = {n["kpfn"] for n in ksm.stable_nodes() if n["kind"] != "chain"}
            outside = set()
            for p, mp in self.procs:
                for s_, k in mp.runs():
                    pfns, flags = p.ptes(s_, k)
                    outside |= {pfn for i, (pfn, f) in enumerate(zip(pfns, flags))
                                if f == FLAG_KSM and not mp.mapped[s_ + i * PAGE_SIZE]}
            assert kept <= outside

    @rule(n=st.integers(0, 400))
    def scan(self, n):
        done = self.m.ksm.scan(n)
        assert 0 <= done <= n

    @rule(passes=st.integers(1, 3))
    def full_scan(self, passes):
        """Whole passes (a page merges on its second pass at the earliest)."""
        before = self.m.ksm.stats["full_scans"]
        self.m.ksm.full_scan(passes)
        after = self.m.ksm.stats["full_scans"]
        assert after == before + passes or (before <= after < before + passes
                                            and not self.m.ksm.scanner.slots)

    @rule(passes=st.integers(1, 3))
    def full_scan_again(self, passes):
        """(The same rule twice: scans are worth drawing more often.)"""
        self.full_scan(passes)

    # --- the balloon -----------------------------------------------------------

    @rule(kb=st.sampled_from([0, 64, 512, 1000]) | st.integers(0, 1024), s=st.integers(0, 2))
    def hv_target(self, kb, s):
        """The hypervisor's target, and ``s`` seconds for the thread to act."""
        self.drv.partition.set_loan_target(kb * 1024)
        self.advance(s)

    @rule(s=st.integers(1, 4))
    def advance(self, s):
        """Time passes: the cmm thread's rounds, KSM's chain-prune clock."""
        self.clock.advance(s)
        self.now += s * 1000

    @rule()
    def oom(self):
        loaned = self.drv.loaned_pages.read()
        freed = self.m.out_of_memory()
        assert freed == min(loaned, 4) == loaned - self.drv.loaned_pages.read()

    @rule()
    def compact(self):
        on_list = len(self.drv.b_dev_info)
        res = self.drv.compact()
        assert res.migrated + sum(res.failed.values()) == on_list
        assert set(res.failed) <= {errno.ENOMEM, errno.EBUSY}

    @rule(after=st.integers(0, 40), count=st.integers(1, 4),
          rc=st.sampled_from([H_HARDWARE, H_BUSY, H_PARAMETER]))
    def fail_hcalls(self, after, count, rc):
        self.drv.partition.fail_page_hcalls(after, count, rc)

    @rule(count=st.integers(1, 3))
    def fail_mpp(self, count):
        self.drv.partition.fail_get_mpp(count)

    @rule()
    def reset_oom_freed(self):
        self.drv.sysfs.write("oom_freed_kb", "0", admin=True)
        assert self.drv.oom_freed_pages == 0

    @rule(v=st.sampled_from(["0", "1"]))
    def disable(self, v):
        self.drv.params.write("disable", v)
        if v == "1":
            assert self.drv.loaned_pages.read() == 0 and self.drv.cmm_thread_ptr is None

    @rule()
    def reboot(self):
        self.drv.reboot_chain.call_chain(SYS_RESTART)
        assert self.drv.loaned_pages.read() == 0

    @rule()
    def hotplug(self):
        self.drv.memory_chain.call_chain(MEM_GOING_OFFLINE)
        self.clock.advance(1)
        self.now += 1000
        self.drv.memory_chain.call_chain(MEM_OFFLINE)

    @rule(n=st.integers(1, 8))
    def direct_alloc(self, n):
        for _ in range(n):
            free = self.m.free_pages
            try:
                pfn = self.m.balloon_page_alloc()
            except OSError as e:
                assert e.errno == errno.ENOMEM and free == 0
                return
            assert pfn not in self.direct
            self.direct.append(pfn)

    @precondition(lambda self: self.direct)
    @rule(k=IDX)
    def direct_free(self, k):
        self.m.balloon_page_free(self.direct.pop(k % len(self.direct)))

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


class SystemModel2009(SystemModel):
    """The same system with the 2009 KSM (a merge copies into a new frame,
    so it can itself run out of frames) and 4 KiB CMO pages."""

    COMPAT = "2009"
    CMO_PAGE_SIZE = 4096
    KNOBS = KNOBS_2009


def _run(machine_class, label):
    start = time.monotonic()
    before = dict(COUNTS)
    run_state_machine_as_test(machine_class, settings=STATEFUL)
    runs = COUNTS["runs"] - before["runs"]
    steps = COUNTS["checks"] - before["checks"] - runs
    summary = {"model": label, "runs": runs, "steps": steps,
               "seconds": round(time.monotonic() - start, 1),
               "enomem_writes": COUNTS["enomem_writes"] - before["enomem_writes"],
               "oom_notifier_calls": COUNTS["ooms"] - before["ooms"],
               "long": LONG}
    report = os.environ.get("KSM_ENGINE_ROBUSTNESS_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(summary) + "\n")
    if LONG:
        print(f"\nsystem model {label}: {summary}")
    # Exhaustion must actually have been reached, or the OOM rules tested nothing.
    assert summary["oom_notifier_calls"] > 0


def test_system_model_6x():
    _run(SystemModel, "6.x")


def test_system_model_2009():
    _run(SystemModel2009, "2009")


def test_run2_rule_with_a_fork_copy_outside_mergeable_areas():
    """run=2 through the model's knob rule after a fork child unmerged its
    area and the parent's scan merged their shared frames in place: the
    child's KSM mappings and their stable nodes stay (as in the kernel)."""
    from ksm_engine import MADV_UNMERGEABLE

    class Run2:
        def draw(self, _):
            return ("run", "2")

    mdl = SystemModel()
    mdl.start(nprocs=1, npages=4, any_=False, knobs=[], zero=False, mps="256", kb=0)
    mdl.write_pages(0, 0, [1, 1, 1, 1])
    mdl.fork(0)
    mdl.madvise(1, 0, 0, 4, MADV_UNMERGEABLE)
    mdl.full_scan(2)
    assert mdl.m.ksm.stats["pages_shared"] == 1
    mdl.knob(Run2())
    assert mdl.m.ksm.stats["rmap_items"] == 0 and len(mdl.m.ksm.stable_nodes()) == 1
    mdl.teardown()
