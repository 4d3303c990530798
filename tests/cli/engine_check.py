"""The engine's own scan of given bytes, run the way ksmd runs it, to check
`ksm-engine estimate` against.

engine_truth(buffers, knobs, pages_to_scan) loads the buffers (one process
each, in order) into a fresh machine, lets KSM settle (the engine's rule) to
learn the settled counters, then loads them again into another machine and
runs ksm_do_scan(pages_to_scan) batches one by one, as ksmd does, until a
full scan ends with the counters at their settled values.  The batches and
pages that took are what the estimate's time model must predict.
"""
from ksm_engine.settle import CONVERGENCE_COUNTERS, load_buffers, settle

COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages",
            "stable_node_chains", "stable_node_dups", "rmap_items", "general_profit")


def _load(buffers, knobs, use_zero_pages):
    m, procs = load_buffers(buffers, knobs=dict(knobs or {}, use_zero_pages=str(use_zero_pages)))
    m.ksm.sysfs["run"] = "1"
    return m, procs


def engine_truth(buffers, knobs=None, pages_to_scan=100, use_zero_pages=0):
    """Returns dict(counters, full_scans, settled, needed, batches,
    pages_scanned, per_process) for the buffers (see the module doc)."""
    m, settled_procs = _load(buffers, knobs, use_zero_pages)
    res = settle(m)
    final = tuple(res.counters[k] for k in CONVERGENCE_COUNTERS)

    m2, _ = _load(buffers, knobs, use_zero_pages)
    ksm = m2.ksm
    batches = 0
    start = ksm.stats["pages_scanned"]
    while True:
        seq = ksm.scanner.seqnr
        ksm.scan(pages_to_scan)
        batches += 1
        if ksm.scanner.seqnr != seq:
            st = ksm.stats
            if tuple(st[k] for k in CONVERGENCE_COUNTERS) == final:
                break
            assert ksm.scanner.seqnr < res.full_scans, "the batch run did not reach the settled counters"
    return {"counters": {k: res.counters[k] for k in COUNTERS}, "full_scans": res.full_scans,
            "settled": res.settled, "needed": ksm.scanner.seqnr, "batches": batches,
            "pages_scanned": ksm.stats["pages_scanned"] - start,
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
    assert pred["full_scans_needed"] == truth["needed"]
    assert pred["batches"] == truth["batches"]
    assert pred["pages_scanned"] == truth["pages_scanned"]
    assert pred["sleep_seconds"] == round(truth["batches"] * sleep_millisecs / 1000.0, 6)
    assert pred["cpu_seconds"] > 0
    assert abs(pred["settle_seconds"] - (pred["sleep_seconds"] + pred["cpu_seconds"])) < 2e-6
    assert abs(pred["cpu_seconds"] - pred["pages_scanned"] * pred["ns_per_page"] * 1e-9) \
        <= 1e-6 + pred["cpu_seconds"] * 1e-3
    for got, want in zip(run["per_process"], truth["per_process"]):
        for key in ("ksm_rmap_items", "ksm_merging_pages", "ksm_zero_pages", "ksm_process_profit"):
            assert got[key] == want[key], key
