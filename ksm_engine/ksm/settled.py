"""KSM's settled state from content counts, for memory that does not change.

Once ksmd has settled over memory that nobody writes, its counters depend
only on how many pages hold each content and on the knobs, not on the
order of the pages, except for which page of a content is the one left
over (the per-process figures, below).  The rules, from mm/ksm.c:

* A page is merged no earlier than its second full scan (a new rmap_item's
  oldchecksum is 0, so cmp_and_merge_page first records the checksum).  In
  the second scan the copies of a content meet in scan order: the first
  goes into the unstable tree, the second finds it there and the two
  become a KSM page (a stable node); every later copy finds that stable
  node in stable_tree_search and joins it while it has room
  (is_page_sharing_candidate: fewer than max_page_sharing mappings).
* With max_page_sharing M, when every KSM page of a content is full the
  next copy finds no candidate, goes into the unstable tree, and the copy
  after it pairs with it there: stable_tree_insert then turns the content's
  stable node into a chain (stable_node_chains) whose KSM pages are its
  dups (stable_node_dups).  So n copies give floor(n/M) full KSM pages and
  one more KSM page of n mod M mappings when n mod M >= 2; when
  n mod M == 1 the last copy in scan order stays alone in the unstable
  tree (pages_unshared).  A content with two or more KSM pages is one
  chain with that many dups; one KSM page is a plain stable node.
* use_zero_pages=1: an all-zero page is replaced by the zero page
  (ksm_zero_pages) instead of merging, and its rmap_item is freed on the
  next scan (the zero pte is no anonymous page), so it is neither in
  rmap_items nor in pages_volatile.  use_zero_pages=0: all-zero pages are
  one content like any other.
* pages_volatile: rmap_items - shared - sharing - unshared, 0 when nothing
  changes.  general_profit = (pages_sharing + ksm_zero_pages) * PAGE_SIZE -
  rmap_items * 64 (sizeof(struct ksm_rmap_item)).
* The 2009 interface (compat="2009", KSM as first merged) has no max_page_sharing: a
  content of n >= 2 copies is one KSM page (kernel_pages_allocated) with
  n - 1 more mappings (its pages_shared), n == 1 stays in the unstable
  tree.  max_kernel_pages other than 0 (unlimited) makes which contents
  merge depend on scan order: settled_counters refuses it (ValueError).

Per process (/proc/PID/ksm_stat): a process's merging pages are its pages
of contents with two or more copies, less the copy left over (n mod M == 1)
when that copy, the last in scan order, is its own; zero pages and rmap
items as above.  tests/ksm/test_settled.py checks every rule against the
engine (Machine, processes, full scans until settled) over random
multisets and knobs.
"""
from dataclasses import dataclass

import numpy as np

from .._native import PAGE_SIZE

RMAP_ITEM_BYTES = 64          # sizeof(struct ksm_rmap_item), in general_profit
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "rmap_items",
            "general_profit")
COUNTERS_2009 = ("pages_shared", "kernel_pages_allocated", "rmap_items")


@dataclass(frozen=True)
class ContentSummary:
    """What KSM's settled state (and ksmd's work) depend on, for memory that does not change."""
    pages: int            # pages ksmd tracks: every present page of every mergeable area, in scan order
    zero_pages: int       # of them, the all-zero pages
    copies: "np.ndarray"  # int64, one entry per distinct NON-zero content: how many pages hold it (>= 1);
                          # copies.sum() + zero_pages == pages
    last_dup_index: int = -1   # scan-order index (0-based over all pages) of the last page whose non-zero
                               # content has >= 2 copies; -1 if none or unknown
    last_zero_index: int = -1  # scan-order index of the last zero page; -1 if none or unknown

    def __post_init__(self):
        copies = np.asarray(self.copies, dtype=np.int64)
        object.__setattr__(self, "copies", copies)
        if self.pages < 0 or self.zero_pages < 0 or self.zero_pages > self.pages:
            raise ValueError(f"ContentSummary: pages {self.pages}, zero_pages {self.zero_pages}")
        if copies.size and copies.min() < 1:
            raise ValueError("ContentSummary: every distinct content has at least one copy")
        if int(copies.sum()) + self.zero_pages != self.pages:
            raise ValueError(f"ContentSummary: copies sum to {int(copies.sum())}, plus "
                             f"{self.zero_pages} zero pages is not {self.pages} pages")


def _sharing_limit(max_page_sharing, compat, max_kernel_pages=0):
    """M: mappings one KSM page may hold (None: no limit, the 2009 mode)."""
    if compat == "2009":
        if max_kernel_pages:
            raise ValueError("max_kernel_pages limits which contents merge by scan order: "
                             "the settled state does not follow from content counts")
        return None
    if compat not in (None, "6.x"):
        raise ValueError(f"compat must be None, '6.x' or '2009', got {compat!r}")
    if int(max_page_sharing) < 2:
        raise ValueError(f"max_page_sharing must be at least 2, got {max_page_sharing}")
    return int(max_page_sharing)


def _per_content(n, limit):
    """Vectorised over copy counts n (int64 array): (KSM pages, unshared)."""
    if limit is None:
        return (n >= 2).astype(np.int64), (n == 1).astype(np.int64)
    rem = n % limit
    return n // limit + (rem >= 2), (rem == 1).astype(np.int64)


def settled_counters(summary, *, max_page_sharing=256, use_zero_pages=False, compat=None,
                     max_kernel_pages=0) -> dict:
    """The kernel's counters once ksmd has settled: pages_shared, pages_sharing, pages_unshared,
    pages_volatile, ksm_zero_pages, stable_node_chains, stable_node_dups, general_profit
    (compat="2009": that interface's counters). Vectorised over distinct copy counts (np.unique
    of copies), never a Python loop per content.  rmap_items is given too."""
    limit = _sharing_limit(max_page_sharing, compat, max_kernel_pages)
    uzp = bool(use_zero_pages) and compat != "2009"
    values, weights = np.unique(summary.copies, return_counts=True)
    if summary.zero_pages and not uzp:        # zero pages: one more content
        values = np.append(values, np.int64(summary.zero_pages))
        weights = np.append(weights, 1)
    values = values.astype(np.int64)
    weights = weights.astype(np.int64)
    ksm_pages, unshared = _per_content(values, limit)
    shared = int((ksm_pages * weights).sum())
    merged = int(((values - unshared) * weights).sum())       # pages mapping a KSM page
    sharing = merged - shared
    rmap_items = summary.pages - (summary.zero_pages if uzp else 0)
    if compat == "2009":
        return {"pages_shared": sharing, "kernel_pages_allocated": shared, "rmap_items": rmap_items}
    chained = ksm_pages >= 2
    zero = summary.zero_pages if uzp else 0
    out = {
        "pages_shared": shared,
        "pages_sharing": sharing,
        "pages_unshared": int((unshared * weights).sum()),
        "ksm_zero_pages": zero,
        "stable_node_chains": int((chained * weights).sum()),
        "stable_node_dups": int((ksm_pages * chained * weights).sum()),
        "rmap_items": rmap_items,
    }
    out["pages_volatile"] = max(0, rmap_items - shared - sharing - out["pages_unshared"])
    out["general_profit"] = (sharing + zero) * PAGE_SIZE - rmap_items * RMAP_ITEM_BYTES
    return {k: out[k] for k in COUNTERS}


def settled_ksm_stat(source_pages, source_zero_pages, copies, last_source, zero_pages,
                     last_zero_source, *, max_page_sharing=256, use_zero_pages=False,
                     compat=None, max_kernel_pages=0):
    """Each source's /proc/PID/ksm_stat figures once settled: a list of
    dicts (ksm_rmap_items, ksm_zero_pages, ksm_merging_pages,
    ksm_process_profit), one per source.

    source_pages, source_zero_pages: per source, its pages and zero pages;
    copies, last_source: per distinct non-zero content, its copies and the
    source of its last page in scan order; zero_pages, last_zero_source:
    the same for the all-zero content.  Vectorised (np.bincount)."""
    limit = _sharing_limit(max_page_sharing, compat, max_kernel_pages)
    uzp = bool(use_zero_pages) and compat != "2009"
    pages = np.asarray(source_pages, dtype=np.int64)
    zeros = np.asarray(source_zero_pages, dtype=np.int64)
    nsrc = len(pages)
    copies = np.asarray(copies, dtype=np.int64)
    _, left = _per_content(copies, limit)
    unshared = np.bincount(np.asarray(last_source, dtype=np.int64)[left == 1],
                           minlength=nsrc)[:nsrc]
    if zero_pages and not uzp:
        _, zleft = _per_content(np.array([zero_pages], dtype=np.int64), limit)
        if zleft[0]:
            unshared = unshared.copy()
            unshared[last_zero_source] += 1
    rmap = pages - (zeros if uzp else 0)
    merging = rmap - unshared
    ksm_zero = zeros if uzp else np.zeros(nsrc, dtype=np.int64)
    profit = (merging + ksm_zero) * PAGE_SIZE - rmap * RMAP_ITEM_BYTES
    return [{"ksm_rmap_items": int(rmap[i]), "ksm_zero_pages": int(ksm_zero[i]),
             "ksm_merging_pages": int(merging[i]), "ksm_process_profit": int(profit[i])}
            for i in range(nsrc)]
