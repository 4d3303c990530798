"""Helpers of the fault tests (test_faults_*.py): processes with a model,
a process that takes every free frame, the KSM counters that must come out
the same, fault injection into the core, a machine full of duplicates,
and the sweep of a fault over every position on the way to its settled
state."""
from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine
from ksm_engine._native import lib

from .invariants import check_system
from .model import ModelProcess, pattern_page, unique_page


def spawn_with(m, pages, mergeable=True, name=None):
    """A process with one area holding ``pages`` (bytes each), and its model."""
    p, mp = m.spawn(name=name), ModelProcess()
    a = p.mmap(len(pages) * PAGE_SIZE)
    mp.mmap(a, len(pages))
    data = b"".join(pages)
    p.write(a, data)
    mp.write(a, data)
    if mergeable:
        p.madvise(a, len(pages) * PAGE_SIZE, MADV_MERGEABLE)
        mp.set_mergeable(a, len(pages), True)
    return p, mp, a


def hog_all(m, keep=0):
    """A process that takes every free frame but ``keep``; returns it and its model."""
    n = m.free_pages - keep
    p, mp = m.spawn(name="hog"), ModelProcess()
    if n > 0:
        a = p.mmap(n * PAGE_SIZE)
        mp.mmap(a, n)
        data = b"".join(unique_page(k) for k in range(n))
        p.write(a, data)
        mp.write(a, data)
    assert m.free_pages == keep
    return p, mp


def counters(m):
    st = m.ksm.stats
    return {k: st[k] for k in st if k not in ("pages_scanned", "pages_skipped", "full_scans",
                                                 "general_profit")}


def inject(m, point, after, count):
    assert lib.ke_fault_inject(m.ke_machine, point, after, count) == 0


DUPS = [pattern_page(1)] * 5 + [pattern_page(4), pattern_page(5)] * 3 + [pattern_page(6)] * 2


def dup_machine(compat=None, nprocs=3):
    """A machine whose processes hold many duplicate pages (within and
    across processes), mergeable."""
    m = Machine(ram="1MiB", ksm_compat=compat)
    procs = [spawn_with(m, DUPS, name=f"g{i}")[:2] for i in range(nprocs)]
    return m, procs


def settle(m, procs, passes=6):
    """Full scans, checking everything after each; returns the machine."""
    for _ in range(passes):
        m.ksm.full_scan(1)
        check_system(m, procs)
    return m


def reference_run(compat, passes):
    """A dup_machine scanned ``passes`` times without faults: the machine
    and its counters after each full scan."""
    ref_m, _ = dup_machine(compat)
    ref = []
    for _ in range(passes):
        ref_m.ksm.full_scan(1)
        ref.append(counters(ref_m))
    return ref_m, ref


def sweep_fault(compat, point, count, ref, what):
    """For each position k in 0..5: a dup_machine with fault ``point``
    firing ``count`` times after k events, scanned as the reference run
    ``ref``; after each pass everything is consistent, the counters lag the
    reference exactly when k < 4 (four events on the way: the fault puts
    one off) and end where it ends.  ``what`` names the fault in failures
    ({after} is k)."""
    for after in range(0, 6):
        m, procs = dup_machine(compat)
        inject(m, point, after, count)
        lagged = False
        for want in ref:
            m.ksm.full_scan(1)
            check_system(m, procs)
            lagged |= counters(m) != want
        assert counters(m) == ref[-1], what.format(after=after)
        assert lagged == (after < 4), what.format(after=after)
