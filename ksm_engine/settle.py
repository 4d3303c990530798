"""Running KSM until it settles, the way `ksm-engine scan` and the
comparison with the real kernel do.

The convergence rule (the same for the engine and the kernel): ksmd runs
unthrottled; after every full scan the counters in CONVERGENCE_COUNTERS are
recorded; KSM has settled when they have held still over two consecutive
full scans (the last three records equal) and at least MIN_FULL_SCANS full
scans have run.
"""
import time
from dataclasses import dataclass, field

from .images import open_image
from .ksm.sysfs import apply_knobs
from .machine import PAGE_SIZE, Machine
from .process import MADV_MERGEABLE

CONVERGENCE_COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared",
                        "ksm_zero_pages", "stable_node_chains", "stable_node_dups")
CONVERGENCE_COUNTERS_2009 = ("pages_shared", "kernel_pages_allocated")
MIN_FULL_SCANS = 3
HELD_SCANS = 2
DEFAULT_MAX_FULL_SCANS = 200


@dataclass
class SettleResult:
    """What a settled KSM looks like."""
    counters: dict             # every counter under the kernel's name (+ rmap_items)
    seconds: float             # scan time until settled (loading excluded)
    full_scans: int            # full scans run
    settled: bool              # False: max_full_scans reached first
    history: list = field(default_factory=list)  # convergence counters after each full scan
    per_process: list = field(default_factory=list)  # ksm_stat of each process


def settled(history, min_scans=MIN_FULL_SCANS, held=HELD_SCANS):
    """True when the last held+1 records are equal and enough scans ran."""
    return len(history) >= max(min_scans, held + 1) and all(
        history[-1] == h for h in history[-1 - held:-1])


def record_full_scan(history, counters, names=CONVERGENCE_COUNTERS, progress=None):
    """After a full scan: appends its convergence counters (``names`` of
    ``counters``) to history, calls progress(full scans, counters) if
    given, and returns whether KSM has now settled."""
    history.append(tuple(counters[n] for n in names))
    if progress:
        progress(len(history), counters)
    return settled(history)


def load_images(paths, *, knobs=None, compat=None, extra_ram=16 << 20):
    """A Machine with one process per image file, in order, each with one
    MERGEABLE area holding the image's bytes; knobs (name -> text) are
    written to its sysfs first (KnobError, an OSError with the kernel's
    errno, naming the first one rejected).  Returns (machine, processes).  Images are mapped, not read,
    so each is held once, in the machine."""
    buffers = []
    try:
        for path in paths:
            buffers.append(open_image(path))
        return load_buffers(buffers, knobs=knobs, compat=compat, extra_ram=extra_ram)
    finally:
        for b in buffers:
            b.close()


def load_buffers(buffers, *, knobs=None, compat=None, extra_ram=16 << 20):
    """As load_images, from bytes-like objects instead of files."""
    sizes = [len(memoryview(b).cast("B")) for b in buffers]
    for s in sizes:
        if s <= 0 or s % PAGE_SIZE:
            raise ValueError(f"an image must be a positive multiple of {PAGE_SIZE} bytes, got {s}")
    m = Machine(ram=sum(sizes) + extra_ram, ksm_compat=compat)
    apply_knobs(m, knobs)
    procs = []
    for i, b in enumerate(buffers):
        p = m.spawn(name=f"image{i}")
        a = p.mmap(sizes[i])
        p.write(a, b)
        p.madvise(a, sizes[i], MADV_MERGEABLE)
        procs.append(p)
    return m, procs


def settle(machine, *, max_full_scans=DEFAULT_MAX_FULL_SCANS, progress=None):
    """Runs the machine's KSM unthrottled until it settles (see the module
    doc).  progress(full_scans, counters) is called after each full scan.
    Returns a SettleResult; seconds counts scanning only."""
    ksm = machine.ksm
    names = CONVERGENCE_COUNTERS_2009 if ksm.compat_2009 else CONVERGENCE_COUNTERS
    history = []
    elapsed = 0.0
    done = False
    while len(history) < max_full_scans:
        t0 = time.perf_counter()
        ksm.full_scan(1)
        elapsed += time.perf_counter() - t0
        if record_full_scan(history, ksm.stats, names, progress):
            done = True
            break
        if not ksm.scanner.slots:
            break
    return SettleResult(
        counters=ksm.stats, seconds=elapsed, full_scans=len(history), settled=done,
        history=[dict(zip(names, h)) for h in history],
        per_process=[dict(p.ksm_stat, pid=p.pid, name=p.name) for p in machine.processes])
