"""Content summaries (ksmd_model.ContentSummary) of memory, for the ksmd
model's tests, its calibration and its validation script: from bytes in scan
order, from image files, and from live processes as ksmd sees them.

Pages are told apart by a 128-bit fingerprint computed with numpy (each
64-bit word mixed by splitmix64's finaliser, then two sums with fixed random
odd multipliers), chunk by chunk: no Python loop per page, and only 16 bytes
per page are held.

A live process is read the way ksmd walks it: the areas marked mergeable
("mg" in /proc/PID/smaps VmFlags), in address order; in them, the pages
/proc/PID/pagemap shows present, anonymous (not PM_FILE) and not the shared
zero page (root reads the pfns); their bytes from /proc/PID/mem.
"""
import os

import numpy as np

from .. import PAGE_SIZE
from .ksmd_model import ContentSummary

WORDS = PAGE_SIZE // 8
CHUNK_PAGES = 4096                   # pages fingerprinted at once (16 MiB)
_RNG = np.random.default_rng(0x6b736d64)
_MUL = _RNG.integers(1, 2 ** 63, size=(2, WORDS), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
PM_PRESENT, PM_FILE = 1 << 63, 1 << 61
PFN_MASK = (1 << 55) - 1


def _mix(w):
    """splitmix64's finaliser, on a uint64 array (wrapping arithmetic)."""
    w = (w ^ (w >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    w = (w ^ (w >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return w ^ (w >> np.uint64(31))


def fingerprints(buf):
    """(fingerprints as an (n, 2) uint64 array, zero mask) of the whole
    pages of a bytes-like object."""
    words = np.frombuffer(buf, dtype=np.uint64, count=len(buf) // PAGE_SIZE * WORDS)
    words = words.reshape(-1, WORDS)
    zero = ~words.any(axis=1)
    with np.errstate(over="ignore"):
        mixed = _mix(words)
        fp = np.stack([(mixed * _MUL[0]).sum(axis=1, dtype=np.uint64),
                       (mixed * _MUL[1]).sum(axis=1, dtype=np.uint64)], axis=1)
    return fp, zero


def summarize(chunks):
    """ContentSummary of the pages in an iterable of bytes-like chunks
    (each a whole number of pages), in scan order."""
    fps, zeros = [], []
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        if len(view) % PAGE_SIZE:
            raise ValueError(f"a chunk of {len(view)} bytes is not a whole number of pages")
        for a in range(0, len(view), CHUNK_PAGES * PAGE_SIZE):
            fp, zero = fingerprints(view[a:a + CHUNK_PAGES * PAGE_SIZE])
            fps.append(fp)
            zeros.append(zero)
    if not fps:
        return ContentSummary(pages=0, zero_pages=0, copies=np.zeros(0, np.int64))
    fp, zero = np.concatenate(fps), np.concatenate(zeros)
    nonzero = np.flatnonzero(~zero)
    keys = np.ascontiguousarray(fp[nonzero]).view(np.dtype((np.void, 16))).ravel()
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    dup = nonzero[counts[inverse.ravel()] >= 2]
    zidx = np.flatnonzero(zero)
    return ContentSummary(pages=len(fp), zero_pages=int(zero.sum()),
                          copies=counts.astype(np.int64),
                          last_dup_index=int(dup[-1]) if dup.size else -1,
                          last_zero_index=int(zidx[-1]) if zidx.size else -1)


def _file_chunks(paths, chunk_bytes=CHUNK_PAGES * PAGE_SIZE):
    for path in paths:
        with open(path, "rb") as f:
            while True:
                data = f.read(chunk_bytes)
                if not data:
                    break
                yield data


def summarize_files(paths):
    """ContentSummary of raw images, one after another (as the kernel peer's
    children hold them, in order)."""
    return summarize(_file_chunks(paths))


def mergeable_areas(pid):
    """[(start, end)] of the areas of a process marked VM_MERGEABLE."""
    out, area = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                a, b = head.split("-")
                area = (int(a, 16), int(b, 16))
            elif head == "VmFlags:" and area and " mg" in " " + line.split(":", 1)[1]:
                out.append(area)
    return out


def _zero_pfn():
    from .estimate import _zero_pfn as probe        # the estimate's one probe of it
    return probe()


def ksmd_pages(pid, zero_pfn=None):
    """Yields the bytes of the pages ksmd would scan in a process, in its
    scan order, a run of contiguous pages at a time (see the module doc)."""
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm, \
            open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end in mergeable_areas(pid):
            for base in range(start, end, CHUNK_PAGES * PAGE_SIZE):
                n = min(CHUNK_PAGES, (end - base) // PAGE_SIZE)
                raw = os.pread(pm.fileno(), n * 8, base // PAGE_SIZE * 8)
                e = np.frombuffer(raw, dtype=np.uint64)
                take = ((e & np.uint64(PM_PRESENT)) != 0) & ((e & np.uint64(PM_FILE)) == 0)
                if zero_pfn:
                    take &= (e & np.uint64(PFN_MASK)) != np.uint64(zero_pfn)
                idx = np.flatnonzero(take)
                if not idx.size:
                    continue
                # runs of consecutive pages
                breaks = np.flatnonzero(np.diff(idx) != 1) + 1
                for run in np.split(idx, breaks):
                    a = base + int(run[0]) * PAGE_SIZE
                    yield os.pread(mem.fileno(), run.size * PAGE_SIZE, a)


def summarize_pids(pids):
    """ContentSummary of live processes as ksmd scans them, in the given
    order (the order they were registered with KSM)."""
    zero_pfn = _zero_pfn()

    def chunks():
        for pid in pids:
            yield from ksmd_pages(pid, zero_pfn)
    return summarize(chunks())
