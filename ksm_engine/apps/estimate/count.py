"""The estimate's count path: every source streamed once through a
ContentCounts (ksm_engine.contents), in scan order, one source index each.

Nothing holds the pages: each buffer read is fingerprinted and counted in
C and the buffer is reused.  What the count keeps is the table of distinct
contents (bytes per distinct content: docs/estimate.md) and, for a watched
process, 17 bytes per page (two fingerprint halves and the zero flag of
its first read).

All-zero pages of a core file may be memory that was never touched (gdb's
gcore writes every page of every anonymous mapping, untouched ones as
zeros): unless core_zero_pages, they are left out of the count and
reported on their own (info["zero_pages_left_out"]).

watch (seconds, pid sources only): each process is read twice, watch
seconds apart; a page whose fingerprint changed (or that could be read
only the second time) is volatile: ksmd would count it in pages_volatile
and never merge it, so only the pages that held still are counted, and the
volatile ones are reported (info["volatile_pages"]).  Pages unmapped by the
second read are lost (info["lost_pages"]).
"""
import time

import numpy as np

from ...contents import ContentCounts, fingerprint_pages
from ...machine import PAGE_SIZE
from .sources import CHUNK_BYTES
from .specs import open_sources


def _fingerprints(src, chunk_bytes, say):
    """(hi, lo, zero, read) arrays over the source's planned pages from one
    read of it; read is False where a page could not be read."""
    n = src.pages
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    zero = np.zeros(n, dtype=bool)
    read = np.zeros(n, dtype=bool)
    done = 0
    for index, buf in src.read_extents(chunk_bytes):
        fp_hi, fp_lo, is_zero = fingerprint_pages(buf)
        k = len(fp_hi)
        hi[index:index + k], lo[index:index + k], zero[index:index + k] = fp_hi, fp_lo, is_zero
        read[index:index + k] = True
        done += k
        say(f"fingerprinting {src.name}: {done * PAGE_SIZE >> 20}/{n * PAGE_SIZE >> 20} MiB")
    return hi, lo, zero, read


def _count_watched(counts, i, src, first, chunk_bytes, say):
    """The second read of a watched source: counts its stable pages."""
    src.info["lost_pages"] = 0
    hi, lo, zero, read = _fingerprints(src, chunk_bytes, say)
    hi1, lo1, _, read1 = first
    stable = read & read1 & (hi == hi1) & (lo == lo1)
    volatile = read & ~stable
    counts.add_fingerprints(hi[stable], lo[stable], zero[stable], source=i)
    src.info["volatile_pages"] = int(volatile.sum())
    return int(stable.sum())


def _count_stream(counts, i, src, chunk_bytes, core_zero_pages, say):
    """One read of a source, counted as it streams."""
    left_out = src.kind == "core" and not core_zero_pages
    done = zeros = 0
    total = src.pages * PAGE_SIZE >> 20
    for buf in src.read_pages(chunk_bytes):
        if left_out:
            hi, lo, zero = fingerprint_pages(buf)
            keep = ~zero
            counts.add_fingerprints(hi[keep], lo[keep], source=i)
            zeros += int(zero.sum())
        else:
            counts.add(buf, source=i)
        done += len(buf)
        say(f"counting {src.name}: {done >> 20}/{total} MiB")
    if left_out:
        src.info["zero_pages_left_out"] = zeros


def count_sources(sources, *, chunk_bytes=CHUNK_BYTES, core_zero_pages=False, watch=None,
                  max_table_bytes=None, progress=None):
    """A ContentCounts over the sources, source i's pages as source i, in
    order (see the module doc).  watch: seconds between the two reads of
    each pid source (None: one read).  Returns the ContentCounts; the caller
    closes it.  Figures for the report go into each source's info."""
    say = progress or (lambda text: None)
    counts = ContentCounts() if max_table_bytes is None else ContentCounts(max_table_bytes)
    try:
        watched = [i for i, s in enumerate(sources) if watch is not None and s.kind == "pid"]
        first = {}
        for i in watched:
            first[i] = _fingerprints(sources[i], chunk_bytes, say)
        if watched:
            say(f"watching for {watch} s")
            time.sleep(watch)
        for i, src in enumerate(sources):
            if i in first:
                _count_watched(counts, i, src, first.pop(i), chunk_bytes, say)
            else:
                _count_stream(counts, i, src, chunk_bytes, core_zero_pages, say)
        return counts
    except BaseException:
        counts.close()
        raise


def summarize(buffers):
    """The ContentSummary of the pages in an iterable of bytes-like buffers
    (each a whole number of pages), in scan order: the count path over
    memory the caller already holds (the ksmd model's tests)."""
    with ContentCounts() as counts:
        for buf in buffers:
            counts.add(buf)
        return counts.summary()


def summarize_sources(specs, *, chunk_bytes=CHUNK_BYTES):
    """The ContentSummary of the estimate's sources ([(kind, text)] as
    open_sources takes them), read once in order: what ksmd would scan in
    those processes, cores or images."""
    sources = open_sources(specs)
    try:
        with count_sources(sources, chunk_bytes=chunk_bytes, core_zero_pages=True) as counts:
            return counts.summary()
    finally:
        for s in sources:
            s.close()
