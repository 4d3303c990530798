"""ksmd's time and CPU on memory that does not change: what the kernel's
ksmd does in each full scan, and how long that takes at a given pace.

The work (mm/ksm.c, Linux 6.x), for static memory summarised by content
counts (ContentSummary: pages in scan order, zero pages, copies of every
distinct non-zero content):

  pass 1    every page gets an rmap_item and its checksum; a new rmap_item
            has no old checksum, so nothing merges ("checksum").
  pass 2    the checksums hold: each page is searched.  Per content with n
            copies and max_page_sharing M (n = qM + r), in scan order: the
            first copy of every block of M goes into the unstable tree
            ("unstable_insert"), the second merges with it into a new KSM
            page ("unstable_merge"), the others join that KSM page from the
            stable tree ("stable_hit"); a last lone copy (r == 1) stays in the
            unstable tree.  With use_zero_pages every zero page is mapped to
            the zero page at its checksum ("zero_merge"), else the zero
            pages are one more content.
  pass 3+   a page already merged returns at once ("ksm_noop"); a page never
            merged is searched and inserted again ("unstable_insert") unless
            smart_scan skips it ("skip": not counted in pages_scanned, not
            in a batch).  All such pages were created in pass 1, so they
            share one age and are skipped in the same passes.  Pages mapped
            to the zero page are no longer seen by the walk.

The counters change for the last time in pass 2, at the last page whose
content has more than one copy (last_dup_index; last_zero_index for the zero
pages); unknown indexes are taken as the end of pass 2.

Time (ksm_scan_thread): a batch scans pages_to_scan pages (ksm_do_scan stops
early at the end of a full scan, so a full scan of P pages takes
P // pages_to_scan + 1 batches), then sleeps msecs_to_jiffies(sleep_millisecs)
jiffies in wait_event_freezable_timeout.  The timer wheel rounds a timeout up
to the next tick after it (calc_index: expires + 1 at level 0), and ksmd is
woken on a tick, so a batch of w seconds of work with wake-up latency d takes

    period = tick * (J + floor((d + w') / tick) + 1)      J = msecs_to_jiffies(ms)

(at HZ=250, sleep_millisecs=20: 24 ms for a short batch, not 20).  The floor
is smoothed over +-jitter.  w' is w on an idle machine; under load ksmd (nice
5) is preempted when its scheduler slice ends, so the work past the first
slice is stretched (a calibrated factor).  sleep_millisecs=0 does not sleep: period = d + w.
Timer slack does not apply to timer-wheel timeouts.

CPU: the work of each kind times its cost per page, plus a cost per batch and
per full scan, from a calibration (ksm-engine calibrate,
ksmd_calibration.py) or the default model below (measured on this project's
2-core test machine; CONFIG_HZ read from the running kernel's config).

advisor_mode=scan-time: pages_to_scan starts at advisor_min_pages_to_scan and
is retuned after every full scan by the engine's ScanTimeAdvisor (the
kernel's integer arithmetic), fed with this model's scan time and CPU.  The
kernel's advisor starts from ksmd CPU time 0, so its first scan counts all
the CPU ksmd used before (predict(..., ksmd_cpu_before=seconds)).
"""
import math
from dataclasses import dataclass

import numpy as np

from ..ksm.advisor import ScanTimeAdvisor
from ..ksm.knobs import KNOBS_6X
from ..ksm.sysfs import PARSERS

# The kinds of work ksmd does on a scanned (or skipped) page, see the module doc.
KINDS = ("checksum", "unstable_insert", "unstable_merge", "stable_hit", "zero_merge",
         "ksm_noop", "skip")
# Tree levels walked: every searched page walks the stable tree, then (not
# merged there) the unstable tree; a level costs a page lookup and a memcmp.
COMPARES = ("stable_compare", "unstable_compare")
COSTS = KINDS + COMPARES
LN2_BST = 1.0 / math.log(2)   # sum of log2(i), i <= n, is n * (log2(n) - 1/ln 2)

# Knobs the model reads (defaults and parsers: the engine's KNOBS_6X).
MODEL_KNOBS = ("pages_to_scan", "sleep_millisecs", "use_zero_pages", "max_page_sharing",
               "smart_scan", "advisor_mode", "advisor_max_cpu", "advisor_min_pages_to_scan",
               "advisor_max_pages_to_scan", "advisor_target_scan_time")

# The default model: ksmd's costs measured on the project's test machine
# (2-core Xeon VM, Linux 6.18, HZ=250; docs/ksmd_model.md), used when no
# calibration is given.  Seconds per page of each kind, per batch, per full
# scan; wake-up latency and the jitter of a batch's end, in seconds.
DEFAULT_COSTS = {"checksum": 1.3e-6, "unstable_insert": 0.3e-6, "unstable_merge": 0.8e-6,
                 "stable_hit": 3.0e-6, "zero_merge": 2.5e-6, "ksm_noop": 0.28e-6,
                 "skip": 0.25e-6, "stable_compare": 0.17e-6, "unstable_compare": 0.3e-6}
DEFAULT_TIMING = {"per_batch": 60e-6, "per_full_scan": 20e-6, "wake_latency": 200e-6,
                  "jitter": 500e-6, "stretch": 1.0, "slice": 1.4e-3}
ASSUMED_HZ = 250           # when the kernel's config cannot be read
PASSES_AFTER_SETTLE = 2    # passes the settle rule watches after the last change
HISTOGRAM_LIMIT = 1 << 20  # copy counts up to this are binned (scan_plan)



class ModelError(ValueError):
    """A knob or summary the model cannot use; the message says which."""


def read_knobs(knobs):
    """The model's knobs from {name: text or int}: names the model does not
    use are ignored, values are parsed and checked as the kernel's sysfs
    stores do (the engine's parsers); ModelError names a bad one."""
    out = {name: KNOBS_6X[name][0] for name in MODEL_KNOBS}
    for name, value in (knobs or {}).items():
        if name not in MODEL_KNOBS:
            continue
        text = str(value).strip()
        if name == "advisor_mode":
            if "[" in text and "]" in text:     # as read back: "none [scan-time]"
                text = text[text.index("[") + 1:text.index("]")]
            if text not in ("none", "scan-time"):
                raise ModelError(f"advisor_mode: {value!r} is neither none nor scan-time")
            out[name] = text
            continue
        try:
            out[name] = int(PARSERS[KNOBS_6X[name][1]](text))
        except OSError:
            raise ModelError(f"{name}: {value!r} is not a value the kernel takes") from None
    if out["max_page_sharing"] < 2:
        raise ModelError("max_page_sharing: must be at least 2")
    if out["advisor_mode"] == "none" and out["pages_to_scan"] < 1:
        raise ModelError("pages_to_scan: 0 scans nothing, KSM would never settle")
    if out["advisor_target_scan_time"] < 1:
        raise ModelError("advisor_target_scan_time: must be at least 1")
    if out["advisor_mode"] == "scan-time":
        out["pages_to_scan"] = out["advisor_min_pages_to_scan"]   # set_advisor_defaults()
    return out


def _check_summary(s):
    copies = np.asarray(s.copies, dtype=np.int64)
    if s.pages < 0 or s.zero_pages < 0 or (copies.size and copies.min() < 1):
        raise ModelError("content summary: negative counts")
    if int(copies.sum()) + s.zero_pages != s.pages:
        raise ModelError(f"content summary: {s.pages} pages, but copies and zero pages "
                         f"add up to {int(copies.sum()) + s.zero_pages}")
    return copies


def _copy_histogram(copies):
    """(values, how many contents have each) of the copy counts: a
    bincount for the common small counts, the rare large ones as they are."""
    small = copies <= HISTOGRAM_LIMIT
    hist = np.bincount(copies[small]) if small.any() else np.zeros(1, np.int64)
    values = np.flatnonzero(hist)
    large = copies[~small]
    return (np.concatenate([values, large]).astype(np.int64),
            np.concatenate([hist[values], np.ones(large.size, np.int64)]))


def _merge_work(values, weights, m):
    """Pass 2's work for contents with these copy counts (values, each
    held by `weights` contents) at max_page_sharing m: (inserts, merges,
    hits, lone) summed."""
    q, r = values // m, values % m
    inserts = int(((q + (r >= 1)) * weights).sum())
    merges = int(((q + (r >= 2)) * weights).sum())
    hits = int(((q * (m - 2) + np.maximum(r - 2, 0)) * weights).sum())
    lone = int(((r == 1) * weights).sum())
    return inserts, merges, hits, lone


def smart_scan_scans(n_passes, smart_scan=True):
    """For an rmap_item created in pass 1 and never merged: [True if it is
    scanned in pass k] for k = 1..n_passes (should_skip_rmap_item: the age
    goes up every pass; from age 3 on, it is scanned once, then skipped
    skip_age(age) passes)."""
    out, age, remaining = [], 0, 0
    for _ in range(n_passes):
        scan = True
        if smart_scan:
            a = age
            age = min(age + 1, 255)
            if a >= 3:
                if remaining == 0:
                    remaining = 1 if a <= 3 else 2 if a <= 5 else 4 if a <= 8 else 8
                else:
                    remaining -= 1
                    scan = False
        out.append(scan)
    return out


def _growing_depth(n):
    """Mean levels walked per search in a balanced tree filled from empty
    to n items during the pass."""
    return max(math.log2(n) - LN2_BST, 0.0) if n > 1 else 0.0


def scanned_pages(work):
    """Pages a pass's work counts in pages_scanned (skips and compares not)."""
    return sum(v for k, v in work.items() if k in KINDS and k != "skip")


@dataclass
class ScanPlan:
    """What ksmd does on static memory, pass by pass (see the module doc)."""
    passes: list          # per full scan, in order: {kind: pages, compare kind: tree levels}
    settle_pass: int      # full scan in which the counters change last (0: never change)
    settle_index: int     # scan-order index of the page making the last change (-1: none)

    def scanned(self, k):
        """Pages scanned (counted in pages_scanned) in pass k (1-based)."""
        return scanned_pages(self.passes[k - 1])


def scan_plan(summary, knobs, n_passes=None):
    """The ScanPlan of a ContentSummary under the knobs (read_knobs'
    output), for n_passes full scans (default: to the settling one and
    PASSES_AFTER_SETTLE more)."""
    values, weights = _copy_histogram(_check_summary(summary))
    nonzero_dups = bool((values >= 2).any())
    m = knobs["max_page_sharing"]
    zero_merge = knobs["use_zero_pages"] and summary.zero_pages
    if not knobs["use_zero_pages"] and summary.zero_pages:     # one more content
        values, weights = np.append(values, summary.zero_pages), np.append(weights, 1)
    inserts, merges, hits, lone = _merge_work(values, weights, m)
    zeros = summary.zero_pages if zero_merge else 0
    unmerged = lone                          # never merged: unique pages and lone copies
    merged = summary.pages - zeros - unmerged
    # where the counters change last in pass 2 (unknown index: the pass's end)
    ends = []
    if nonzero_dups:
        ends.append(summary.last_dup_index)
    if zeros or (not knobs["use_zero_pages"] and summary.zero_pages >= 2):
        ends.append(summary.last_zero_index)
    if ends:
        last = max(summary.pages - 1 if i < 0 else i for i in ends)
        settle_pass, settle_index = 2, min(last, summary.pages - 1)
    else:
        settle_pass, settle_index = 0, -1
    n = n_passes or max(settle_pass, 1) + PASSES_AFTER_SETTLE
    scans = smart_scan_scans(n, knobs["smart_scan"])
    stable_nodes = int(weights[values >= 2].sum())   # a chain is one node of the tree
    passes = [{"checksum": summary.pages}]
    if n >= 2:
        searched = inserts + merges + hits
        passes.append({"unstable_insert": inserts, "unstable_merge": merges,
                       "stable_hit": hits, "zero_merge": zeros,
                       "stable_compare": searched * _growing_depth(stable_nodes),
                       "unstable_compare": (inserts + merges) * _growing_depth(inserts)})
    for k in range(3, n + 1):
        if scans[k - 1]:
            passes.append({"ksm_noop": merged, "unstable_insert": unmerged,
                           "stable_compare": unmerged * math.log2(stable_nodes + 1),
                           "unstable_compare": unmerged * _growing_depth(unmerged)})
        else:
            passes.append({"ksm_noop": merged, "skip": unmerged})
    return ScanPlan(passes=passes[:n], settle_pass=settle_pass, settle_index=settle_index)


# --- time and CPU -------------------------------------------------------------

@dataclass(frozen=True)
class CostModel:
    """ksmd's costs on one kernel and machine (seconds)."""
    costs: dict           # kind -> CPU seconds per page of that kind
    per_batch: float      # CPU per batch (wake-up, locks, timer)
    per_full_scan: float  # CPU per full scan (its start: lru_add_drain_all, the tree reset)
    wake_latency: float   # from the tick that ends a sleep to ksmd running
    jitter: float         # +- spread of a batch's end, smoothing the tick rounding
    stretch: float        # wall seconds per CPU second of a batch's work past its first
                          # scheduler slice (>= 1: others' load preempts ksmd, nice 5)
    slice: float          # ksmd's scheduler slice (se.slice in /proc/<ksmd>/sched)
    hz: int               # CONFIG_HZ
    source: str           # "calibrated" or "default"
    note: str = ""        # why the default is used, where it is


def default_model(note=""):
    """The documented default model with this kernel's CONFIG_HZ (ASSUMED_HZ
    if its config cannot be read, said in the note)."""
    from .ksmd_calibration import kernel_hz

    hz = kernel_hz()
    if hz is None:
        hz = ASSUMED_HZ
        note = (note + "; " if note else "") + f"CONFIG_HZ unreadable, {ASSUMED_HZ} assumed"
    return CostModel(costs=dict(DEFAULT_COSTS), hz=hz, source="default", note=note,
                     **DEFAULT_TIMING)


def msecs_to_jiffies(ms, hz):
    """The kernel's msecs_to_jiffies: rounded up."""
    return -(-ms * hz // 1000)


def _smooth_ceil(x, h):
    """E[floor(X) + 1] for X uniform on [x-h, x+h] (floor(x) + 1 when h is
    0): the ticks from the one ksmd woke on to the end of its work, that
    one included (ceil, but a batch of no work still ends in its tick)."""
    if h <= 0:
        return float(math.floor(x) + 1)

    def integral(t):       # integral of ceil from 0 to t, t >= 0
        n = math.floor(t)
        return n * (n + 1) / 2 + (t - n) * (n + 1)
    a, b = max(x - h, 0.0), x + h
    return (integral(b) - integral(a)) / (b - a)


def _on_cpu(work, model):
    """Wall seconds a batch of `work` CPU seconds takes once running: the
    part past one scheduler slice stretched by the others' load."""
    return work + max(work - model.slice, 0.0) * (model.stretch - 1.0)


def batch_period(work, sleep_ms, model):
    """Wall seconds from one batch's wake-up to the next's, for a batch of
    `work` CPU seconds (see the module doc)."""
    busy = model.wake_latency + _on_cpu(work, model)
    if sleep_ms == 0:
        return busy
    tick = 1.0 / model.hz
    return tick * (msecs_to_jiffies(sleep_ms, model.hz) + _smooth_ceil(busy / tick, model.jitter / tick))


def _pass_cost(work, model):
    """CPU of a pass's pages (skips and compares included) and the pages it scans."""
    cpu = sum(n * model.costs[k] for k, n in work.items())
    return cpu, scanned_pages(work)


def timed_pass(work, pts, sleep_ms, model):
    """(wall seconds, CPU seconds, batches) of one full scan."""
    cpu_pages, scanned = _pass_cost(work, model)
    per_page = cpu_pages / scanned if scanned else 0.0
    full, rest = divmod(scanned, pts)
    w_full = pts * per_page + model.per_batch
    w_last = rest * per_page + model.per_batch + model.per_full_scan
    wall = full * batch_period(w_full, sleep_ms, model) + batch_period(w_last, sleep_ms, model)
    batches = full + 1
    return wall, cpu_pages + batches * model.per_batch + model.per_full_scan, batches


def _settle_point(plan, pts, sleep_ms, model):
    """(wall, CPU, pages, batches) from the start of the settling pass to
    its last change: every merge lies at or before it, the rest of the pages
    up to it are unstable inserts."""
    work = plan.passes[plan.settle_pass - 1]
    n = plan.settle_index + 1
    changes = {k: work.get(k, 0) for k in ("unstable_merge", "stable_hit", "zero_merge")}
    early = dict(changes, unstable_insert=max(n - sum(changes.values()), 0))
    searched = sum(work.get(k, 0) for k in ("unstable_insert", "unstable_merge", "stable_hit"))
    if searched:        # tree levels walked by the pages searched so far
        done = min((sum(early.values()) - early["zero_merge"]) / searched, 1.0)
        early.update({k: work.get(k, 0) * done for k in COMPARES})
    cpu_pages = sum(v * model.costs[k] for k, v in early.items())
    per_page = cpu_pages / n
    full, rest = divmod(n, pts)
    w_full = pts * per_page + model.per_batch
    wall = (full * batch_period(w_full, sleep_ms, model) + model.wake_latency
            + _on_cpu(rest * per_page, model))
    batches = full + (1 if rest else 0)
    return wall, cpu_pages + batches * model.per_batch, n, batches


def predict(summary, knobs, calibration=None, ksmd_cpu_before=0.0):
    """ksmd's time to settle and CPU on the summarised memory at the knobs.

    calibration: a CostModel (ksmd_calibration.load_model() gives the
    user's, or the default with a note), a calibration file's path (loaded
    the same way), or None for the default model.  ksmd_cpu_before: seconds of CPU ksmd had used before
    (only the scan-time advisor's first step sees it).  Returns a dict:
    model, hz, settle_seconds, ksmd_cpu_seconds, full_scans (the full scan
    in which the counters change last, 0 if they never change),
    pages_scanned and batches up to then, batch_seconds (a batch's length
    in the first full scan), and per full scan (to PASSES_AFTER_SETTLE
    after settling) its pages_to_scan, work by kind, pages scanned and
    skipped, batches, seconds and CPU."""
    k = read_knobs(knobs)
    if calibration is None:
        model = default_model("no calibration given")
    elif isinstance(calibration, CostModel):
        model = calibration
    else:
        from .ksmd_calibration import load_model
        model = load_model(calibration, explicit=True)
    plan = scan_plan(summary, k)
    advisor = ScanTimeAdvisor() if k["advisor_mode"] == "scan-time" else None
    pts, sleep_ms = k["pages_to_scan"], k["sleep_millisecs"]
    now = cpu = 0.0
    passes, settle = [], None
    for i, work in enumerate(plan.passes, start=1):
        if i == plan.settle_pass:
            w, c, p, b = _settle_point(plan, pts, sleep_ms, model)
            before = sum(q["pages_scanned"] for q in passes)
            settle = (now + w, cpu + c, before + p, sum(q["batches"] for q in passes) + b)
        wall, c, batches = timed_pass(work, pts, sleep_ms, model)
        scanned = scanned_pages(work)
        passes.append({"full_scan": i, "pages_to_scan": pts,
                       "work": {kind: round(v) for kind, v in work.items()},
                       "pages_scanned": scanned, "pages_skipped": work.get("skip", 0),
                       "batches": batches, "seconds": round(wall, 6),
                       "ksmd_cpu_seconds": round(c, 6)})
        now, cpu = now + wall, cpu + c
        if advisor is not None:
            pts = advisor.stop_scan(int((now) * 1000), int((cpu + ksmd_cpu_before) * 1e9), pts,
                                    k["advisor_target_scan_time"], k["advisor_max_cpu"],
                                    k["advisor_max_pages_to_scan"])
            advisor.start_scan(int(now * 1000), 0)
    if settle is None:
        settle = (0.0, 0.0, 0, 0)
    first = passes[0]
    out = {"model": model.source, "hz": model.hz,
           "pages_to_scan": k["pages_to_scan"], "sleep_millisecs": sleep_ms,
           "advisor_mode": k["advisor_mode"],
           "settle_seconds": round(settle[0], 6), "ksmd_cpu_seconds": round(settle[1], 6),
           "cpu_percent": round(100 * settle[1] / settle[0], 3) if settle[0] else 0.0,
           "full_scans": plan.settle_pass, "pages_scanned": settle[2], "batches": settle[3],
           "batch_seconds": round(first["seconds"] / first["batches"], 6),
           "passes": passes}
    if model.note:
        out["note"] = model.note
    return out
