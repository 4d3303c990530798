"""STAND-IN for ksm_engine.ksm.settled (the estimate branch's count model),
used only until that branch is merged: `git merge estimate` brings the real
module, and then this file and the one import fallback in counts.py are
deleted.  Same interface; not the project's count model.
"""
from dataclasses import dataclass

import numpy as np

from ... import PAGE_SIZE

RMAP_ITEM_BYTES = 64


@dataclass(frozen=True)
class ContentSummary:
    pages: int
    zero_pages: int
    copies: np.ndarray
    last_dup_index: int = -1
    last_zero_index: int = -1


def settled_counters(summary, *, max_page_sharing=256, use_zero_pages=False, compat=None):
    n = np.asarray(summary.copies, np.int64)
    if summary.zero_pages and not use_zero_pages:
        n = np.append(n, summary.zero_pages)
    m = max_page_sharing
    full, rest = n // m, n % m
    ksm = full + (rest >= 2)
    unshared = (rest == 1).astype(np.int64)
    shared = int(ksm.sum())
    sharing = int((n - unshared).sum()) - shared
    zero = summary.zero_pages if use_zero_pages else 0
    return {"pages_shared": shared, "pages_sharing": sharing,
            "pages_unshared": int(unshared.sum()), "pages_volatile": 0,
            "ksm_zero_pages": zero, "stable_node_chains": int((ksm > 1).sum()),
            "stable_node_dups": int(ksm[ksm > 1].sum()),
            "general_profit": (sharing + zero) * PAGE_SIZE - summary.pages * RMAP_ITEM_BYTES}
