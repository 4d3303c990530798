"""Helpers of the fault tests (test_faults_*.py): processes with a model,
a process that takes every free frame, the KSM counters that must come out
the same, fault injection into the core, and a machine full of duplicates."""
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


