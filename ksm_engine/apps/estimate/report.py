"""The estimate's report: settled counters, savings, per-process figures
and the time prediction, from the count path (and the engine path when it
ran).

predict_time() is the one place the time to settle and ksmd's CPU are
predicted; ksm_engine.apps.ksmd_model will take its place.  Until then:

  engine path  predict(): the engine's own full scans (pages each scanned,
               smart_scan's skips excluded) and its measured cost per page
  count path   the same formula over the scans static memory takes: every
               tracked page is scanned in each full scan, and the settled
               counters hold from the second full scan on (the first only
               records checksums; tests/ksm/test_settled.py), or the first
               when nothing merges; CPU at KSMD_NS_PER_PAGE, ksmd's cost per
               scanned page measured on this host (real-hosts notes)

  batches  B = sum over the scans needed of floor(pages scanned /
           pages_to_scan) + 1: ksm_do_scan ends a batch at the end of a full
           scan, and a scan whose last page fills a batch needs one more,
           empty, batch to reach that end
  time to settle = B x sleep_millisecs + CPU
"""
from ...contents import FINGERPRINT_VERSION
from ...ksm.settled import RMAP_ITEM_BYTES, settled_counters
from ...machine import PAGE_SIZE
from ...settle import CONVERGENCE_COUNTERS

KSMD_NS_PER_PAGE = 3000       # ksmd's CPU per scanned page, measured here (count path)
REPORTED = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "rmap_items",
            "general_profit")
STAT = ("ksm_rmap_items", "ksm_zero_pages", "ksm_merging_pages", "ksm_process_profit")


def predict(scans, seconds, pages_to_scan, sleep_millisecs):
    """The time model of the module doc, from [(pages scanned, convergence
    counters)] per full scan and the seconds those scans cost."""
    final = scans[-1][1]
    needed = next(i for i, (_, c) in enumerate(scans) if c == final) + 1
    scanned = [n for n, _ in scans[:needed]]
    total_scanned = sum(n for n, _ in scans)
    cost = seconds / total_scanned if total_scanned else 0.0
    pages = sum(scanned)
    batches = sum(n // pages_to_scan + 1 for n in scanned)
    sleep_s = batches * sleep_millisecs / 1000.0
    cpu_s = pages * cost
    settle_s = sleep_s + cpu_s
    return {"pages_to_scan": pages_to_scan, "sleep_millisecs": sleep_millisecs,
            "full_scans_needed": needed, "pages_scanned": pages, "batches": batches,
            "sleep_seconds": round(sleep_s, 6), "cpu_seconds": round(cpu_s, 6),
            "settle_seconds": round(settle_s, 6),
            "cpu_percent": round(100.0 * cpu_s / settle_s, 3) if settle_s else 0.0,
            "ns_per_page": round(cost * 1e9, 1)}


def predict_time(tracked, counters, *, pages_to_scan, sleep_millisecs, engine_run=None):
    """The prediction for one run (see the module doc): tracked pages (rmap
    items at the first full scan), the run's settled counters."""
    if engine_run is not None and engine_run["scans"]:
        out = predict(engine_run["scans"], engine_run["seconds"], pages_to_scan, sleep_millisecs)
        return dict(out, model="engine scans")
    final = tuple(counters[k] for k in CONVERGENCE_COUNTERS)
    first = final if not any(final) else tuple(0 for _ in final)
    scans = [(tracked, first), (tracked, final)]
    seconds = tracked * len(scans) * KSMD_NS_PER_PAGE * 1e-9
    return dict(predict(scans, seconds, pages_to_scan, sleep_millisecs), model="static memory")


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
