"""The estimate's report: settled counters, savings, per-process figures
and the time prediction, from the count path (and the engine path when it
ran).

predict_time() is the one place the time to settle and ksmd's CPU are
predicted: ksm_engine.apps.ksmd_model over the content summary (what ksmd
does in each full scan of this memory, smart_scan's skips and the scan-time
advisor included, timed by the user's calibration or the default model).
Pages that changed while watched (--watch) are tracked by ksmd but never
merge: the model sees them as contents of one copy each.
"""
import numpy as np

from ...contents import FINGERPRINT_VERSION
from ...ksm.settled import RMAP_ITEM_BYTES, ContentSummary, settled_counters
from ...machine import PAGE_SIZE
from .. import ksmd_model

REPORTED = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "rmap_items",
            "general_profit")
STAT = ("ksm_rmap_items", "ksm_zero_pages", "ksm_merging_pages", "ksm_process_profit")


def predict_time(summary, knobs, *, volatile=0, calibration=None):
    """ksmd's time to settle and CPU for one run (ksmd_model.predict): the
    summary of the stable pages, the run's knobs (every one the model reads:
    pages_to_scan, sleep_millisecs, use_zero_pages, max_page_sharing,
    smart_scan, advisor_*), ``volatile`` pages that never merge, and the
    CostModel to time with."""
    if volatile:
        summary = ContentSummary(pages=summary.pages + volatile, zero_pages=summary.zero_pages,
                                 copies=np.concatenate([summary.copies,
                                                        np.ones(volatile, dtype=np.int64)]),
                                 last_dup_index=summary.last_dup_index,
                                 last_zero_index=summary.last_zero_index)
    out = ksmd_model.predict(summary, knobs, calibration)
    out["passes"] = out["passes"][:out["full_scans"] or 1]
    return out


def _saving(out, tracked):
    saved = out["pages_sharing"] + out["ksm_zero_pages"]
    out["saving_pages"] = saved
    out["saving_bytes"] = saved * PAGE_SIZE
    out["saving_percent"] = round(100.0 * saved / tracked, 3) if tracked else 0.0


def count_run(counts, summary, nsources, volatile, *, use_zero_pages, max_page_sharing):
    """One run's report from the count path.  volatile: per source, pages
    that changed while watched (each an rmap_item ksmd never merges)."""
    c = settled_counters(summary, max_page_sharing=max_page_sharing, use_zero_pages=use_zero_pages)
    v = sum(volatile)
    c["pages_volatile"] += v
    c["rmap_items"] += v
    c["general_profit"] -= v * RMAP_ITEM_BYTES
    per = counts.ksm_stat(nsources=nsources, max_page_sharing=max_page_sharing,
                          use_zero_pages=use_zero_pages)
    for st, vs in zip(per, volatile):
        st["ksm_rmap_items"] += vs
        st["ksm_process_profit"] -= vs * RMAP_ITEM_BYTES
    out = dict({"use_zero_pages": int(use_zero_pages)}, **c)
    _saving(out, summary.pages + v)
    out.update(settled=True, full_scans=None, per_process=per)
    return out


def engine_run_report(run):
    """One run's report from the engine path."""
    st = run["counters"]
    out = dict({"use_zero_pages": run["use_zero_pages"]}, **{k: st[k] for k in REPORTED})
    _saving(out, run["pages"])
    out.update(settled=run["settled"], full_scans=len(run["scans"]),
               engine_seconds=round(run["seconds"], 6),
               per_process=[{k: p[k] for k in STAT} for p in run["per_process"]])
    return out


def build(sources, counts, runs, *, knobs, answered_by, volatile, engine_agrees=None):
    """The estimate's result (a JSON-ready dict)."""
    info = counts.info()
    srcs = []
    for i, s in enumerate(sources):
        pages = (counts.source_pages[i] if i < len(counts.source_pages) else 0) + volatile[i]
        srcs.append(dict({"kind": s.kind, "source": s.spec, "name": s.name,
                          "pages": pages, "bytes": pages * PAGE_SIZE}, **s.info))
    tracked = sum(s["pages"] for s in srcs)
    return {
        "sources": srcs,
        "pages": tracked,
        "bytes": tracked * PAGE_SIZE,
        "zero_pages": info["zero_pages"],
        "zero_pages_left_out": sum(s.info.get("zero_pages_left_out", 0) for s in sources),
        "volatile_pages": sum(volatile),
        "knobs": knobs,
        "answered_by": answered_by,
        "engine_agrees": engine_agrees,
        "contents": {"distinct": info["distinct"], "table_bytes": info["table_bytes"],
                     "fingerprint": FINGERPRINT_VERSION},
        "runs": runs,
    }
