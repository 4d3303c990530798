"""Settled counters of any group of sources, from the signature table.

A group of sources placed on one host holds, of each signature's
contents, the sum of the group's copies (0: not on this host).  Its
ContentSummary is those non-zero sums, each repeated for the signature's
contents (mult), with the group's pages and zero pages; the count model
(ksm_engine.ksm.settled.settled_counters) turns it into the kernel's
settled counters.  This module is the fleet's one way to counters: every
report goes through group_counters(); the placement search's faster
evaluation (placement.Evaluator) is tested equal to it.

Knobs (--set): max_page_sharing (>= 2, as the kernel's EINVAL) and
use_zero_pages (0 or 1: which run the placement optimises; the reports
give both).  Other knobs do not change settled counters and are refused.
"""
import errno

import numpy as np

from ... import PAGE_SIZE
from ...validate import int_arg

from ...ksm.settled import ContentSummary, settled_counters

DEFAULT_KNOBS = {"max_page_sharing": 256, "use_zero_pages": 0}


class KnobRefused(ValueError):
    def __init__(self, message, errno_=errno.EINVAL):
        super().__init__(message)
        self.errno = errno_


def parse_knobs(assignments):
    """{"max_page_sharing": "16"} -> the knobs dict with defaults filled.
    Raises KnobRefused (EINVAL) for a value the kernel would refuse or a
    knob that does not change settled counters."""
    knobs = dict(DEFAULT_KNOBS)
    for name, text in (assignments or {}).items():
        if name not in DEFAULT_KNOBS:
            raise KnobRefused(f"{name}: does not change the settled counters the fleet "
                              f"computes (it takes {', '.join(DEFAULT_KNOBS)})")
        try:
            value = int(str(text).strip())
        except ValueError:
            raise KnobRefused(f"{name}: not a number: {text!r}") from None
        try:
            knobs[name] = int_arg(name, value, min=2 if name == "max_page_sharing" else 0,
                                  max=None if name == "max_page_sharing" else 1)
        except ValueError as e:
            raise KnobRefused(f"{name}: {e} (EINVAL)") from None
    return knobs


def group_copies(table, members):
    """Copies of each signature's contents held by the sources with
    members[src] true (int64, one per signature row, 0 where none)."""
    if not len(table.length):
        return np.zeros(0, np.int64)
    w = np.where(np.asarray(members, bool)[table.src], table.count, 0)
    return np.add.reduceat(w, table.starts)


def group_summary(table, members, pages, zero_pages):
    """The ContentSummary of the sources with members[i] true; pages and
    zero_pages: per-source arrays from the files' metadata."""
    members = np.asarray(members, bool)
    per_row = group_copies(table, members)
    held = per_row > 0
    copies = np.repeat(per_row[held], table.mult[held]).astype(np.int64)
    p = int(np.asarray(pages, np.int64)[members].sum())
    z = int(np.asarray(zero_pages, np.int64)[members].sum())
    return ContentSummary(pages=p, zero_pages=z, copies=copies)


def run_report(summary, knobs, use_zero_pages):
    """One run in the estimate's shape: the counters and the saving."""
    c = settled_counters(summary, max_page_sharing=knobs["max_page_sharing"],
                         use_zero_pages=bool(use_zero_pages))
    out = {"use_zero_pages": int(use_zero_pages)}
    out.update({k: int(v) for k, v in c.items()})
    saved = out["pages_sharing"] + out["ksm_zero_pages"]
    out["saving_pages"] = saved
    out["saving_bytes"] = saved * PAGE_SIZE
    out["saving_percent"] = round(100.0 * saved / summary.pages, 3) if summary.pages else 0.0
    out["memory_after_pages"] = summary.pages - saved
    return out


def group_counters(table, members, pages, zero_pages, knobs):
    """{"pages", "zero_pages", "runs": [use_zero_pages 0, 1]} of a group."""
    s = group_summary(table, members, pages, zero_pages)
    return {"pages": s.pages, "zero_pages": s.zero_pages,
            "runs": [run_report(s, knobs, z) for z in (0, 1)]}
