"""The reference-count histogram, as `zdb -S POOL` prints its simulated
DDT histogram: the distinct non-zero contents bucketed by how many pages
of the fleet hold each (1, 2, 3-4, 5-8, ..., 2^(k-1)+1 - 2^k), and per
bucket the contents, the pages, and the pages KSM would keep for them
all on one host (pages - pages_sharing, from the count model with the
fleet's max_page_sharing); then the zero-filled pages (kept: 1 page per
max_page_sharing with use_zero_pages=0, none with 1), the totals, and the
ratio pages / kept, as zdb's "dedup =".
"""
import numpy as np

from .counts import ContentSummary, settled_counters


def bucket_of(copies):
    """Bucket index of copy counts: 0 for 1, 1 for 2, k for 2^(k-1)+1..2^k."""
    c = np.asarray(copies, np.int64)
    return np.where(c <= 1, 0, np.ceil(np.log2(np.maximum(c, 1))).astype(np.int64))


def bucket_label(k):
    lo, hi = (1 << (k - 1)) + 1 if k else 1, 1 << k
    return str(hi) if lo == hi else f"{lo}-{hi}"


def _kept(pages, zero, copies, knobs, use_zero_pages=False):
    c = settled_counters(ContentSummary(pages=pages, zero_pages=zero, copies=copies),
                         max_page_sharing=knobs["max_page_sharing"], use_zero_pages=use_zero_pages)
    return pages - int(c["pages_sharing"]) - int(c["ksm_zero_pages"])


def histogram(table, zero_pages, knobs):
    """{"buckets": [{"copies", "contents", "pages", "kept_pages"}], "zero",
    "total", "dedup"} of the fleet's signature table."""
    totals = table.totals()
    buckets = bucket_of(totals)
    rows = []
    all_pages = all_kept = all_contents = 0
    for k in (np.unique(buckets) if len(buckets) else ()):
        sel = buckets == k
        copies = np.repeat(totals[sel], table.mult[sel])
        pages = int(copies.sum())
        kept = _kept(pages, 0, copies, knobs)
        rows.append({"copies": bucket_label(int(k)), "contents": int(len(copies)),
                     "pages": pages, "kept_pages": kept})
        all_pages += pages
        all_kept += kept
        all_contents += len(copies)
    empty = np.zeros(0, np.int64)
    zero = {"pages": int(zero_pages),
            "kept_pages": {"use_zero_pages=0": _kept(zero_pages, zero_pages, empty, knobs),
                           "use_zero_pages=1": _kept(zero_pages, zero_pages, empty, knobs, True)}}
    kept0 = all_kept + zero["kept_pages"]["use_zero_pages=0"]
    total = {"contents": all_contents, "pages": all_pages + int(zero_pages), "kept_pages": kept0}
    return {"buckets": rows, "zero": zero, "total": total,
            "dedup": round(total["pages"] / kept0, 3) if kept0 else 1.0,
            "dedup_nonzero": round(all_pages / all_kept, 3) if all_kept else 1.0}
