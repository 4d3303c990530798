"""A hypothesis state machine over KSM: random writes, mmap/munmap, forks,
exits, madvise, prctl, scan batches and knob changes, against a pure-Python
model of what every process must read.

The model (``Model``) knows, per process, every mapped page's bytes and
whether its area is VM_MERGEABLE, and the process's merge-any flag.  It
knows nothing of KSM: whatever KSM merges, a process must read exactly what
it wrote, and KSM may only touch pages in mergeable areas.

Invariants after every step:
  * every process reads exactly its model's bytes; areas and their
    VM_MERGEABLE flags are the model's;
  * Machine.check() (the core recomputes every counter and link);
  * pages_shared + pages_sharing == the rmap_items on stable nodes, each of
    which maps (flag 3) the KSM frame of its node; pages_shared == the
    stable nodes (plain or dup) holding an item; ptes mapping a KSM page
    without a stable rmap_item exist only in mms the scanner has not
    reached since a fork gave them the mapping;
  * ksm_zero_pages == the ptes at the zero page (flag 4), globally and per
    process; rmap_items, ksm_merging_pages per process as ksm_stat says;
    pages_volatile and general_profit by their formulas;
  * zero pages and rmap_items only in VM_MERGEABLE areas (a KSM page may
    be mapped elsewhere: by a fork child whose copy of a page the parent's
    scan made KSM in place);
  * after run=2 (written while run was not 2): no pte maps a KSM page or
    the zero page (flags never 3 or 4), no rmap_item, no stable node,
    full_scans 0.  (Frames shared by fork copy-on-write may stay shared:
    that sharing is not KSM's.)

KsmModel2009 runs the same rules (less today's knobs, plus max_kernel_pages)
on a Machine(ksm_compat="2009"), with the 2009 counters' identities.

CI runs a small profile; KSM_ENGINE_MODEL_EXAMPLES raises the number of runs.

The model and the rules are in ksm_model.py; this module adds the
invariants and runs the machines.
"""
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from ksm_engine import PAGE_SIZE, Machine
from tests.conftest import model_settings

from .conftest import PTE_KSM, PTE_ZERO
from .ksm_model import PATTERNS, KsmRules


class KsmModel(KsmRules):
    """KsmRules with the invariants above."""

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def memory_matches_model(self):
        if not hasattr(self, "m"):
            return
        for p, mp in self.procs:
            got = {}
            for a in p.areas.values():
                data = p.read(a.start, a.end - a.start)
                for k in range(0, a.end - a.start, PAGE_SIZE):
                    got[a.start + k] = (data[k:k + PAGE_SIZE], a.mergeable)
            assert set(got) == set(mp.pages)
            for x, (content, mergeable) in got.items():
                assert content == mp.pages[x], (p, hex(x))
                assert mergeable == mp.mergeable[x], (p, hex(x))
            assert bool(p.ksm_stat["ksm_merge_any"]) == mp.merge_any

    def _ksm_state(self):
        """The machine, its KSM counters and its stable nodes by id."""
        m = self.m
        return m, m.ksm.stats, {n["node"]: n for n in m.ksm.stable_nodes()}

    @invariant()
    def core_consistent(self):
        if hasattr(self, "m"):
            self.m.check()

    @invariant()
    def ksm_accounting(self):
        if not hasattr(self, "m"):
            return
        m, stats, nodes = self._ksm_state()
        stable_items = zero_ptes = ksm_ptes = unknown_ksm_ptes = total_items = 0
        ksm_ptes_mergeable = 0
        frames_outside = set()  # KSM frames mapped from areas not VM_MERGEABLE
        nodes_with_items = set()
        for p, mp in self.procs:
            flags = {}
            frames = {}
            for a in p.areas.values():
                pfns, fl = p.ptes(a.start, (a.end - a.start) // PAGE_SIZE)
                for k, (pfn, f) in enumerate(zip(pfns, fl)):
                    flags[a.start + k * PAGE_SIZE] = f
                    frames[a.start + k * PAGE_SIZE] = pfn
            items = p.rmap_items()
            mine_stable = 0
            stable_addrs = set()
            for it in items:
                assert mp.mergeable.get(it["address"]), "rmap_item outside a mergeable area"
                if it["state"] == "stable":
                    node = nodes[it["stable_node"]]
                    assert flags[it["address"]] == PTE_KSM
                    assert frames[it["address"]] == node["kpfn"]
                    nodes_with_items.add(node["node"])
                    stable_addrs.add(it["address"])
                    mine_stable += 1
            for x, f in flags.items():
                # (a KSM page may be mapped outside: a fork child's copy
                # of a page its parent's scan then made KSM in place, as
                # the kernel's write_protect_page allows for a page
                # mapped by both; a zero page never)
                if f == PTE_ZERO:
                    assert mp.mergeable[x], "KSM zero page outside a mergeable area"
                if f == PTE_KSM:
                    ksm_ptes += 1
                    if x not in stable_addrs:
                        unknown_ksm_ptes += 1
                    if mp.mergeable[x]:
                        ksm_ptes_mergeable += 1
                    else:
                        frames_outside.add(frames[x])
            my_zero = sum(1 for f in flags.values() if f == PTE_ZERO)
            zero_ptes += my_zero
            stable_items += mine_stable
            total_items += len(items)
            ks = p.ksm_stat
            assert ks["ksm_rmap_items"] == len(items)
            assert ks["ksm_merging_pages"] == mine_stable
            assert ks["ksm_zero_pages"] == my_zero
            assert ks["ksm_process_profit"] == (mine_stable + my_zero) * PAGE_SIZE - len(items) * 64
            assert bool(ks["ksm_mergeable"]) == any(mp.mergeable.values())
        assert stats["pages_shared"] + stats["pages_sharing"] == stable_items
        assert stats["pages_shared"] == len(nodes_with_items)
        assert stats["ksm_zero_pages"] == zero_ptes
        assert stats["rmap_items"] == total_items
        assert stats["pages_volatile"] == max(0, total_items - stable_items - stats["pages_unshared"])
        assert stats["general_profit"] == (stats["pages_sharing"] + zero_ptes) * PAGE_SIZE - total_items * 64
        assert stats["stable_node_chains"] == sum(1 for n in nodes.values() if n["kind"] == "chain")
        assert stats["stable_node_dups"] == sum(1 for n in nodes.values() if n["kind"] == "dup")
        # KSM mappings no rmap_item knows of: fork copies not scanned yet
        assert ksm_ptes - unknown_ksm_ptes == stable_items
        if self.after_run2:
            # run=2 unmerges the VM_MERGEABLE areas; a fork child's copy
            # in an area that is not keeps its KSM page, and that page's
            # stable node stays, with no rmap_item (the kernel cannot
            # remove a stable node whose page is mapped either); an area
            # made mergeable since (madvise, prctl) may hold such a page
            assert ksm_ptes_mergeable == 0 or self.marked_after_run2
            assert zero_ptes == 0
            assert stats["rmap_items"] == 0 and stats["full_scans"] == 0
            kept = {n["kpfn"] for n in nodes.values() if n["kind"] != "chain"}
            assert all(n["rmap_hlist_len"] == 0 for n in nodes.values() if n["kind"] != "chain")
            assert kept <= frames_outside
            assert m.meminfo()["ksm_pages"] == len(frames_outside)

    def teardown(self):
        if not hasattr(self, "m"):
            return
        for p, _ in self.procs:
            p.exit()
        st_ = self.m.ksm.stats
        assert (st_["rmap_items"], st_["pages_shared"], st_.get("ksm_zero_pages", 0)) == (0, 0, 0)
        assert self.m.used_pages == 0
        self.m.check()


KsmModel.TestCase.settings = model_settings(50)
TestKsmModel = KsmModel.TestCase


class KsmModel2009(KsmModel):
    """The same machine in the 2009 mode (the 2009 patch): no knobs but
    max_kernel_pages, no zero pages, no chains; kernel_pages_allocated is
    the stable nodes (each holds at least one rmap_item: a node whose last
    item leaves is erased), pages_shared the stable rmap_items beyond one
    per node."""

    @initialize(kb=st.sampled_from(["0", "1", "2"]),
                layout=st.lists(st.lists(st.integers(0, len(PATTERNS) - 1), min_size=1, max_size=8),
                                min_size=1, max_size=3))
    def start(self, kb, layout):
        self._start(Machine(ram="8MiB", ksm_compat="2009"), layout, max_kernel_pages=kb)

    # today's knobs do not exist here: these are no longer rules
    def max_page_sharing(self, value):
        raise AssertionError("not a rule in the 2009 model")

    def use_zero_pages(self, on):
        raise AssertionError("not a rule in the 2009 model")

    def smart_scan(self, on):
        raise AssertionError("not a rule in the 2009 model")

    @rule(value=st.sampled_from(["0", "1", "2", "5"]))
    def max_kernel_pages(self, value):
        before = self.m.ksm.stats["kernel_pages_allocated"]
        self.m.ksm.sysfs["max_kernel_pages"] = value
        # a lower limit unmerges nothing
        assert self.m.ksm.stats["kernel_pages_allocated"] == before

    @invariant()
    def ksm_accounting(self):
        if not hasattr(self, "m"):
            return
        m, stats, nodes = self._ksm_state()
        assert all(n["kind"] == "plain" and n["rmap_hlist_len"] >= 1 for n in nodes.values())
        stable_items = ksm_ptes = total_items = 0
        for p, mp in self.procs:
            flags, frames = {}, {}
            for a in p.areas.values():
                pfns, fl = p.ptes(a.start, (a.end - a.start) // PAGE_SIZE)
                for k, (pfn, f) in enumerate(zip(pfns, fl)):
                    flags[a.start + k * PAGE_SIZE] = f
                    frames[a.start + k * PAGE_SIZE] = pfn
            assert PTE_ZERO not in flags.values()
            items = p.rmap_items()
            mine = 0
            for it in items:
                assert mp.mergeable.get(it["address"]), "rmap_item outside a mergeable area"
                if it["state"] == "stable":
                    assert flags[it["address"]] == PTE_KSM
                    assert frames[it["address"]] == nodes[it["stable_node"]]["kpfn"]
                    mine += 1
            stable_items += mine
            total_items += len(items)
            ksm_ptes += sum(1 for f in flags.values() if f == PTE_KSM)
            assert p.ksm_stat["ksm_merging_pages"] == mine
            assert p.ksm_stat["ksm_rmap_items"] == len(items)
        assert stats["kernel_pages_allocated"] == len(nodes)
        assert stats["pages_shared"] == stable_items - len(nodes)
        assert stats["rmap_items"] == total_items
        assert ksm_ptes >= stable_items
        assert m.meminfo()["ksm_pages"] >= len(nodes)
        if self.after_run2:
            assert ksm_ptes == 0 and total_items == 0 and not nodes
            assert m.meminfo()["ksm_pages"] == 0


KsmModel2009.TestCase.settings = KsmModel.TestCase.settings
TestKsmModel2009 = KsmModel2009.TestCase


def test_model_after_run2_keeps_a_fork_copy_outside_mergeable_areas():
    """The sequence the invariants once got wrong: a fork child unmerges its
    area before the parent's scan makes their shared frame a KSM page in
    place; run=2 then cannot take the child's mapping away (nor can the
    kernel), and its stable node stays, with no rmap_item."""
    mdl = KsmModel()
    mdl.start(mps="256", zero=False, smart=False, layout=[[1, 1]])
    mdl.fork(0)
    mdl.madvise(1, 0, 0, 2, False)
    mdl.full_scan(2)
    assert mdl.m.ksm.stats["pages_shared"] == 1
    mdl.run_2(False)
    mdl.memory_matches_model()
    mdl.core_consistent()
    mdl.ksm_accounting()
    child = mdl.procs[1][0]
    a = next(iter(child.areas.values()))
    assert PTE_KSM in child.ptes(a.start, 2)[1]
    nodes = mdl.m.ksm.stable_nodes()
    assert len(nodes) == 1 and nodes[0]["rmap_hlist_len"] == 0
    mdl.teardown()
