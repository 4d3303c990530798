"""Page fingerprints and the count table of distinct contents.

ContentCounts is fed whole pages in scan order (a source index with each
buffer) and keeps, in the C core (csrc/contents.c), one entry per distinct
non-zero content: its 128-bit fingerprint, how many pages hold it, and the
scan-order index and source of its last page.  All-zero pages are counted
apart.  It never holds the pages: 32 bytes per table slot, 43-85 bytes per
distinct content (the table doubles at 3/4 full), bounded by max_bytes.

From it: the ContentSummary KSM's settled state follows from
(ksm_engine.ksm.settled), the per-source figures for ksm_stat, and the
(fingerprint, count) table that fleets combine.

The fingerprint is not cryptographic; for memory not crafted to collide
the odds that two of n distinct pages share one are at most n^2 / 2^129
(the birthday bound): 2^-73 for 2^28 pages, 1 TiB.  FINGERPRINT_VERSION
names the function; stored fingerprints carry it.
"""
import errno

import numpy as np

from ._native import PAGE_SIZE, check, ffi, lib
from .ksm.settled import ContentSummary, settled_ksm_stat
from .validate import int_arg

FINGERPRINT_VERSION = f"ke-fp128-v{lib.KE_FP_VERSION}"
DEFAULT_MAX_TABLE_BYTES = 8 << 30      # the count table's bound (256 Mi slots)
MAX_SOURCE = 0xFFFFFFFE                # source indexes are uint32 in the table


def _ptr(array):
    """A typed C pointer to a numpy array's data (NULL for an empty one)."""
    if not len(array):
        return ffi.NULL
    ctype = {np.dtype(np.uint64): "uint64_t[]", np.dtype(np.uint32): "uint32_t[]",
             np.dtype(np.uint8): "uint8_t[]"}[array.dtype]
    return ffi.from_buffer(ctype, array, require_writable=False)


def _pages_of(buf):
    """(cffi buffer pointer, memoryview, whole pages) of a bytes-like object."""
    view = memoryview(buf)
    if not view.contiguous:
        raise ValueError("the buffer must be contiguous")
    view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    if len(view) % PAGE_SIZE:
        raise ValueError(f"the buffer holds {len(view)} bytes, not a whole number of "
                         f"{PAGE_SIZE}-byte pages")
    return ffi.from_buffer(view), view, len(view) // PAGE_SIZE


def fingerprint_pages(buf):
    """(fp_hi, fp_lo, zero) numpy arrays (uint64, uint64, bool), one row per
    page of buf (whole pages)."""
    ptr, view, n = _pages_of(buf)
    hi = np.empty(n, dtype=np.uint64)
    lo = np.empty(n, dtype=np.uint64)
    zero = np.empty(n, dtype=np.uint8)
    check(lib.ke_fingerprint_pages(ptr, n, _ptr(hi), _ptr(lo), _ptr(zero)), "fingerprint")
    return hi, lo, zero.astype(bool)


class ContentCounts:
    """Distinct page contents and how many pages hold each, fed in scan order; never holds the pages."""

    _c = None

    def __init__(self, max_bytes=DEFAULT_MAX_TABLE_BYTES):
        max_bytes = int_arg("max_bytes", max_bytes, min=lib.KE_COUNTS_MIN_BYTES, max=1 << 62)
        out = ffi.new("ke_counts **")
        check(lib.ke_counts_new(max_bytes, out), "count table")
        self._c = out[0]
        self.max_bytes = max_bytes
        self.source_pages = []        # per source: pages fed
        self.source_zero_pages = []   # per source: all-zero pages fed
        self.last_zero_source = -1    # the source of the last zero page

    # --- feeding ---------------------------------------------------------

    def _live(self):
        if self._c is None:
            raise ValueError("the count table is closed")
        return self._c

    def _account(self, source, npages, zeros):
        while len(self.source_pages) <= source:
            self.source_pages.append(0)
            self.source_zero_pages.append(0)
        self.source_pages[source] += npages
        self.source_zero_pages[source] += zeros
        if zeros:
            self.last_zero_source = source

    def _result(self, rc, source, npages, zero_out, what):
        if rc < 0:
            # pages entered before the failure stay counted: account them
            self._account(source, self.pages - sum(self.source_pages), zero_out[0])
            if rc == -errno.ENOMEM:
                raise MemoryError(f"{what}: the count table would pass its bound of "
                                  f"{self.max_bytes} bytes ({self.distinct} distinct contents)")
            check(rc, what)
        self._account(source, npages, zero_out[0])

    def add(self, buf, source=0) -> None:
        """Enters buf's whole pages, next in scan order, as pages of source."""
        source = int_arg("source", source, min=0, max=MAX_SOURCE)
        ptr, view, n = _pages_of(buf)
        zero_out = ffi.new("uint64_t *")
        rc = lib.ke_counts_add(self._live(), ptr, n, source, zero_out)
        self._result(rc, source, n, zero_out, "count pages")

    def add_fingerprints(self, fp_hi, fp_lo, zero=None, count=None, source=0) -> None:
        """Enters pages by fingerprint: row i is count[i] pages (1 if count
        is None) of content (fp_hi[i], fp_lo[i]), all zero where zero[i]."""
        source = int_arg("source", source, min=0, max=MAX_SOURCE)
        hi = np.ascontiguousarray(fp_hi, dtype=np.uint64)
        lo = np.ascontiguousarray(fp_lo, dtype=np.uint64)
        n = len(hi)
        if len(lo) != n:
            raise ValueError("fp_hi and fp_lo differ in length")
        z = None if zero is None else np.ascontiguousarray(zero, dtype=np.uint8)
        k = None if count is None else np.ascontiguousarray(count, dtype=np.uint64)
        for name, arr in (("zero", z), ("count", k)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} differs in length from the fingerprints")
        npages = n if k is None else int(k.sum())
        zero_out = ffi.new("uint64_t *")
        rc = lib.ke_counts_add_fps(
            self._live(), _ptr(hi), _ptr(lo), ffi.NULL if z is None else _ptr(z),
            ffi.NULL if k is None else _ptr(k), n, source, zero_out)
        self._result(rc, source, npages, zero_out, "count fingerprints")

    # --- reading ---------------------------------------------------------

    def info(self):
        """The table's figures (pages, zero_pages, distinct, capacity,
        table_bytes, entry_bytes, last_zero_index: -1 if none)."""
        out = ffi.new("struct ke_counts_info *")
        check(lib.ke_counts_info(self._live(), out))
        d = {k: getattr(out, k) for k in ("pages", "zero_pages", "distinct", "capacity",
                                          "table_bytes", "entry_bytes", "last_zero_index")}
        if d["last_zero_index"] == 2 ** 64 - 1:
            d["last_zero_index"] = -1
        return d

    @property
    def pages(self):
        return self.info()["pages"]

    @property
    def zero_pages(self):
        return self.info()["zero_pages"]

    @property
    def distinct(self):
        return self.info()["distinct"]

    def _export(self):
        """(fp_hi, fp_lo, count, last_index, last_source) arrays, table order."""
        n = self.distinct
        hi, lo, count, last = (np.empty(n, dtype=np.uint64) for _ in range(4))
        src = np.empty(n, dtype=np.uint32)
        n_out = ffi.new("uint64_t *")
        check(lib.ke_counts_export(self._live(), _ptr(hi), _ptr(lo), _ptr(count), _ptr(last),
                                   _ptr(src), n, n_out), "export")
        assert n_out[0] == n
        return hi, lo, count, last, src

    def table(self) -> tuple:
        """(fp_hi, fp_lo, count) numpy uint64 arrays, one row per distinct
        NON-zero content (zero pages are counted in zero_pages only)."""
        hi, lo, count, _, _ = self._export()
        return hi, lo, count

    def summary(self) -> ContentSummary:
        _, _, count, last, _ = self._export()
        info = self.info()
        copies = count.astype(np.int64)
        dup = copies >= 2
        return ContentSummary(pages=info["pages"], zero_pages=info["zero_pages"], copies=copies,
                              last_dup_index=int(last[dup].max()) if dup.any() else -1,
                              last_zero_index=info["last_zero_index"])

    def ksm_stat(self, *, nsources=None, **knobs):
        """Each source's settled ksm_stat figures (settled.settled_ksm_stat;
        knobs: max_page_sharing, use_zero_pages, compat, max_kernel_pages)."""
        _, _, count, _, src = self._export()
        n = max(len(self.source_pages), nsources or 0)
        pad = lambda xs: list(xs) + [0] * (n - len(xs))
        return settled_ksm_stat(pad(self.source_pages), pad(self.source_zero_pages),
                                count.astype(np.int64), src, self.zero_pages,
                                self.last_zero_source, **knobs)

    # --- lifetime --------------------------------------------------------

    def close(self):
        """Frees the C table (idempotent)."""
        if self._c is not None:
            lib.ke_counts_free(self._c)
            self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
