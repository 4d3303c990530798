"""The engine's own scan of given bytes, run the way ksmd runs it, to check
`ksm-engine estimate` against.

engine_truth(buffers, knobs, pages_to_scan) loads the buffers (one process
each, in order) into a fresh machine, lets KSM settle (the engine's rule) to
learn the settled counters, then loads them again into another machine and
runs ksm_do_scan(pages_to_scan) batches one by one, as ksmd does, until a
full scan ends with the counters at their settled values.  The batch in
which the counters the kernel's timing watches (kernel_timing.SETTLED:
pages_unshared is not one) changed for the last time (its full scan, its number,
the pages scanned before it and by its end) is what the estimate's time
model (ksm_engine.apps.ksmd_model) must predict.
"""
from ksm_engine.apps.kernel_timing import SETTLED
from ksm_engine.settle import CONVERGENCE_COUNTERS, load_buffers, settle

COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages",
            "stable_node_chains", "stable_node_dups", "rmap_items", "general_profit")


def _load(buffers, knobs, use_zero_pages):
    m, procs = load_buffers(buffers, knobs=dict(knobs or {}, use_zero_pages=str(use_zero_pages)))
    m.ksm.sysfs["run"] = "1"
    return m, procs


def engine_truth(buffers, knobs=None, pages_to_scan=100, use_zero_pages=0):
    """Returns dict(counters, full_scans, settled, last_change, per_process)
    for the buffers (see the module doc); last_change: full_scan, batches,
    pages_before and pages_after (scanned before and by the end of the batch
    of the last change; all 0 when the counters never change)."""
    m, settled_procs = _load(buffers, knobs, use_zero_pages)
    res = settle(m)
    final = tuple(res.counters[k] for k in CONVERGENCE_COUNTERS)

    m2, _ = _load(buffers, knobs, use_zero_pages)
    ksm = m2.ksm
    batches = 0
    start = ksm.stats["pages_scanned"]
    now = tuple(ksm.stats[k] for k in SETTLED)
    last = {"full_scan": 0, "batches": 0, "pages_before": 0, "pages_after": 0}
    while True:
        seq = ksm.scanner.seqnr
        before = ksm.stats["pages_scanned"] - start
        ksm.scan(pages_to_scan)
        batches += 1
        st = ksm.stats
        watched = tuple(st[k] for k in SETTLED)
        if watched != now:
            now = watched
            last = {"full_scan": seq + 1, "batches": batches, "pages_before": before,
                    "pages_after": st["pages_scanned"] - start}
        if ksm.scanner.seqnr != seq:
            if tuple(st[k] for k in CONVERGENCE_COUNTERS) == final:
                break
            assert ksm.scanner.seqnr < res.full_scans, "the batch run did not reach the settled counters"
    return {"counters": {k: res.counters[k] for k in COUNTERS}, "full_scans": res.full_scans,
            "settled": res.settled, "last_change": last,
            "per_process": [p.ksm_stat for p in settled_procs]}


def assert_run_matches(run, truth, pages_to_scan, sleep_millisecs):
    """One run of the estimate's JSON against engine_truth(): the count
    path's (full_scans None) or the engine path's."""
    assert run["settled"] is True and truth["settled"] is True
    assert {k: run[k] for k in COUNTERS} == truth["counters"]
    if run["full_scans"] is not None:
        assert run["full_scans"] == truth["full_scans"]
    pred = run["prediction"]
    assert pred["pages_to_scan"] == pages_to_scan and pred["sleep_millisecs"] == sleep_millisecs
    last = truth["last_change"]
    assert pred["full_scans"] == last["full_scan"]
    assert pred["batches"] == last["batches"]
    assert last["pages_before"] < pred["pages_scanned"] <= last["pages_after"] or \
        pred["pages_scanned"] == last["pages_after"] == 0
    assert pred["ksmd_cpu_seconds"] > 0 or last["batches"] == 0
    assert pred["settle_seconds"] >= pred["ksmd_cpu_seconds"]
    for got, want in zip(run["per_process"], truth["per_process"]):
        for key in ("ksm_rmap_items", "ksm_merging_pages", "ksm_zero_pages", "ksm_process_profit"):
            assert got[key] == want[key], key
