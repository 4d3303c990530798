"""Estimates of KSM on real memory: what it would merge, and how fast.

The input sources (sources.py: planning and reading; pid.py, core.py) and
the estimate (count.py: streaming the pages into content counts;
report.py: the settled counters, savings and prediction; engine.py: the
engine's own run, on request).

The count path answers by default: every source is streamed once, in the
order given, through ksm_engine.contents.ContentCounts (a 128-bit
fingerprint per page and a count per distinct content, in C), and KSM's
settled counters, for use_zero_pages 0 and 1, follow from the counts
(ksm_engine.ksm.settled, proved equal to the engine by property tests).
The pages are never held: memory is the count table, whatever the input.

engine=True (--engine) also loads the sources into the engine and runs
KSM until it settles, once per use_zero_pages value, each in a machine of
its own sized to the pages loaded: the engine's counters then answer, its
own full scans feed the time model, and engine_agrees says whether the
count path said the same.
"""
import errno

from ...ksm.sysfs import KnobError, apply_knobs
from ...machine import Machine
from ..ksmd_calibration import load_model
from ...settle import DEFAULT_MAX_FULL_SCANS
from .count import count_sources
from .engine import engine_runs
from .report import build, count_run, engine_run_report, predict_time
from .sources import CHUNK_BYTES, EstimateError, Source  # noqa: F401
from .specs import open_sources  # noqa: F401  (re-exported)

# Knobs the estimate sets itself (pages_to_scan and sleep_millisecs are the
# pace of the prediction, given apart; advisor_mode=scan-time may be set: the
# prediction then follows the advisor's pages_to_scan).
RESERVED_KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "use_zero_pages")
COMPARED = ("pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages",
            "stable_node_chains", "stable_node_dups", "rmap_items", "general_profit")


def checked_knobs(knobs):
    """The knobs (name -> text), checked on a small machine of the engine
    (KnobError as KSM refuses them), and max_page_sharing as KSM reads it."""
    knobs = dict(knobs or {})
    for name in knobs:
        if name in RESERVED_KNOBS:
            raise KnobError(errno.EINVAL, f"{name}: the estimate sets {name} itself", name)
    m = Machine(ram="1MiB")
    apply_knobs(m, knobs)
    return knobs, int(m.ksm.sysfs["max_page_sharing"])


def estimate(sources, *, knobs=None, pages_to_scan=100, sleep_millisecs=20,
             max_full_scans=DEFAULT_MAX_FULL_SCANS, chunk_bytes=CHUNK_BYTES, progress=None,
             engine=False, watch=None, core_zero_pages=False, max_table_bytes=None,
             calibration=None):
    """The estimate of the module doc.  Returns a dict (report.build):
    sources, pages, bytes, zero_pages, zero_pages_left_out, volatile_pages,
    knobs, answered_by ("counts" or "engine"), engine_agrees, contents,
    runs (one per use_zero_pages value, 0 then 1).  Raises KnobError for a
    knob KSM refuses or one the estimate sets itself, MemoryError past the
    count table's bound or (engine) the host's memory, ProcessLookupError
    for a process that exits while read.  calibration: the ksmd CostModel
    (or a calibration file's path) the prediction is timed with; None: the
    user's calibration (ksmd_calibration.load_model()), else the default
    model, which each run's prediction says ("model", "note")."""
    knobs, mps = checked_knobs(knobs)
    if pages_to_scan < 1 or sleep_millisecs < 0:
        raise ValueError("pages_to_scan must be >= 1 and sleep_millisecs >= 0")
    if calibration is None:
        calibration = load_model()
    if watch is not None and (watch < 0 or engine):
        raise ValueError("watch must be >= 0 seconds, and works on the count path only")
    counts = count_sources(sources, chunk_bytes=chunk_bytes, core_zero_pages=core_zero_pages,
                           watch=watch, max_table_bytes=max_table_bytes, progress=progress)
    with counts:
        summary = counts.summary()
        volatile = [s.info.get("volatile_pages", 0) for s in sources]
        runs = [count_run(counts, summary, len(sources), volatile, use_zero_pages=z,
                          max_page_sharing=mps) for z in (0, 1)]
        for r in runs:
            pace = dict(knobs, pages_to_scan=pages_to_scan, sleep_millisecs=sleep_millisecs,
                        use_zero_pages=r["use_zero_pages"])
            r["prediction"] = predict_time(summary, pace, volatile=sum(volatile),
                                           calibration=calibration)
        agrees = None
        if engine:
            eruns = engine_runs(sources, knobs=knobs, max_full_scans=max_full_scans,
                                chunk_bytes=chunk_bytes, progress=progress)
            reports = [engine_run_report(e) for e in eruns]
            agrees = all({k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}
                         for a, b in zip(runs, reports))
            for r, c in zip(reports, runs):
                r["prediction"] = c["prediction"]
            runs = reports
        return build(sources, counts, runs, knobs=knobs, volatile=volatile,
                     answered_by="engine" if engine else "counts", engine_agrees=agrees)
