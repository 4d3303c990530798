"""The system model's rules for KSM (madvise, prctl, knob writes, scan
batches, full scans) and the balloon (the hypervisor's target, the driver's
thread on the simulated clock, hcall failures, OOM, compaction, disable,
reboot, hotplug, frames taken and given back directly): a mixin of
SystemModel (test_system_model.py), on the state of system_model.SystemState."""
import errno

from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from cmm.hypervisor import H_BUSY, H_HARDWARE, H_PARAMETER
from cmm.notifier import MEM_GOING_OFFLINE, MEM_OFFLINE, SYS_RESTART
from ksm_engine import MADV_MERGEABLE, MADV_UNMERGEABLE, PR_SET_MEMORY_MERGE

from .invariants import FLAG_KSM
from .model import PAGE_SIZE
from .system_model import IDX, _ksm_ptes


class KsmBalloonRules:
    """Rules on KSM and the balloon."""

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
