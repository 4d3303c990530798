"""The estimate's engine path (on request: --engine): the sources loaded
into the engine's machine, one process each, and KSM run over them until
it settles (ksm_engine.settle's rule), once per use_zero_pages value.

What it adds to the count path: the engine's own scan, full scan by full
scan, for the time model (the pages each full scan scanned, with
smart_scan's skips, and the engine's measured cost per page), and a check
of the count path on the same memory.

Each run has a machine of its own, sized to the pages loaded plus
HEADROOM: nothing is unmerged between the runs (run=2 would need a frame
per mapping of every KSM page), and merging only frees frames.  The
sources are read once per run; check_fits refuses a machine the host has
not the memory for (MemoryError, before anything is touched).
"""
import gc

from ..demo import apply_knobs, check_fits
from ...machine import PAGE_SIZE, Machine
from ...process import MADV_MERGEABLE
from ...settle import DEFAULT_MAX_FULL_SCANS, settle
from .sources import CHUNK_BYTES

HEADROOM = 16 << 20           # machine memory beyond what is loaded


def load_sources(sources, *, knobs=None, chunk_bytes=CHUNK_BYTES, progress=None):
    """A machine with one process per source holding its pages in one
    MERGEABLE area (in scan order; pages lost while read are left out).
    Returns (machine, processes)."""
    total = sum(s.pages for s in sources)
    check_fits(total * PAGE_SIZE + HEADROOM, f"loading {total} pages into the engine")
    m = Machine(ram=total * PAGE_SIZE + HEADROOM)
    apply_knobs(m, knobs)
    procs = []
    for i, src in enumerate(sources):
        p = m.spawn(name=f"{src.kind}{i}")
        src.info["lost_pages"] = 0
        length = max(src.pages, 1) * PAGE_SIZE
        a = p.mmap(length)
        pos = a
        for buf in src.read_pages(chunk_bytes):
            p.write(pos, buf)
            pos += len(buf)
            if progress:
                progress(f"loading {src.name}: {(pos - a) >> 20}/{length >> 20} MiB")
        if pos > a:
            p.madvise(a, pos - a, MADV_MERGEABLE)
        procs.append(p)
    return m, procs


def settle_with_scans(machine, max_full_scans=DEFAULT_MAX_FULL_SCANS, progress=None):
    """settle.settle, keeping what the prediction needs: per full scan the
    pages it scanned and its convergence counters.  progress(n, counters)
    after each full scan.  Returns (settled, [(pages scanned, counters
    tuple)], seconds of scanning)."""
    scanned = []
    last = [machine.ksm.stats["pages_scanned"]]

    def each(n, st):
        scanned.append(st["pages_scanned"] - last[0])
        last[0] = st["pages_scanned"]
        if progress:
            progress(n, st)

    res = settle(machine, max_full_scans=max_full_scans, progress=each)
    convergence = [tuple(h.values()) for h in res.history]
    return res.settled, list(zip(scanned, convergence)), res.seconds


def engine_runs(sources, *, knobs, max_full_scans=DEFAULT_MAX_FULL_SCANS,
                chunk_bytes=CHUNK_BYTES, progress=None):
    """One engine run per use_zero_pages value (0, 1).  Returns a list of
    dicts: use_zero_pages, counters (machine.ksm.stats), per_process
    (ksm_stat), settled, scans, seconds, pages (loaded)."""
    say = progress or (lambda text: None)
    runs = []
    for zero in (0, 1):
        m, procs = load_sources(sources, knobs=dict(knobs, use_zero_pages=str(zero)),
                                chunk_bytes=chunk_bytes, progress=say)
        m.ksm.sysfs["run"] = "1"
        ok, scans, seconds = settle_with_scans(
            m, max_full_scans, lambda n, st, z=zero: say(
                f"engine, use_zero_pages={z}: full scan {n}: pages_shared "
                f"{st['pages_shared']} pages_sharing {st['pages_sharing']}"))
        m.check()
        runs.append({"use_zero_pages": zero, "counters": m.ksm.stats,
                     "per_process": [p.ksm_stat for p in procs], "settled": ok,
                     "scans": scans, "seconds": seconds,
                     "pages": sum(s.loaded_pages for s in sources)})
        del m, procs
        gc.collect()                  # frees the arena before the next machine
    return runs
