"""`ksm-engine calibrate`: measures the kernel's ksmd on a built-in mix and
fits the ksmd model's costs (ksmd_model.CostModel).

The built-in mix (MIX): raw images in kernel_peer's children, chosen so
that their full scans separate the kinds of work (unique pages: checksums,
unstable inserts, smart_scan skips, at three sizes for the tree depth; pairs:
unstable merges; groups of 64 copies: stable hits; zero pages with
use_zero_pages: zero merges; merged pages afterwards: ksm_noop), and real
interpreters (merge-any) whose memory is like the processes the estimate is
asked about.

  1. Work: each mix runs one batch per full scan (kernel_timing.run_passes)
     for PASSES full scans; ksmd's CPU in each scan is one equation
     sum(work of each kind x its cost) + per_full_scan, with the work from
     ksmd_model.scan_plan of the mix's content summary.  Solved by least
     squares with non-negative costs.
  2. Pace: the interpreters at PACES (pages_to_scan, sleep_millisecs)
     until settled (kernel_timing.run_paced), and a small image in batches
     of 10 pages for two full scans: the CPU the one-batch fit does
     not explain is spread over the batches (per_batch) and the pages
     (a factor on every cost, cold caches between batches); the run-queue
     wait per wake-up (schedstat) is the wake_latency; the length of the
     full scans fixes stretch and jitter (a small grid search); CONFIG_HZ is
     the kernel's, or the one the batch lengths fit best.
"""
import contextlib
import functools
import math
import os
import tempfile

import numpy as np

from .. import PAGE_SIZE
from . import kernel_timing
from .ksmd_calibration import kernel_hz
from .ksmd_model import (COSTS, DEFAULT_COSTS, DEFAULT_TIMING, CostModel, predict, timed_pass,
                         read_knobs, scan_plan)
from .estimate.count import summarize_sources

PASSES = 6                    # full scans per mix in step 1 (the 5th skips under smart_scan)
PACES = (("100", "20"), ("1000", "20"))
SMALL_BATCHES = ("10", "20", 512)     # pages_to_scan, sleep_millisecs, pages of a small image


def interpreters(n, pages):
    """Recipes (kernel_timing.INTERPRETER_CHILD) of n interpreters with about
    `pages` pages of arrays each: a block all share, one of their own, zero
    pages, and sparse pages shared by every other interpreter."""
    return [[["random", pages // 2, 1], ["random", pages // 4, 100 + i], ["zero", pages // 16, 0],
             ["sparse", pages // 4, 7 + i % 2]] for i in range(n)]


# The built-in mix: pages of the largest image, and the interpreters.
FULL = {"pages": 8192, "interpreters": interpreters(3, 2048)}
QUICK = {"pages": 2048, "interpreters": interpreters(2, 1024)}   # for tests: less precise
HZ_CANDIDATES = (100, 250, 300, 1000)
PRIOR_PAGES = 200             # weight of the default costs in the fit (pages' worth)


def _mix_images(directory, n):
    """[(name, [image paths], knobs)] of the built-in mix's images (the
    largest of n pages), written to directory."""
    rng = np.random.default_rng(0x6b736d)

    def img(name, arr):
        path = os.path.join(directory, name + ".img")
        arr.tofile(path)
        return path

    def rand(pages):
        return rng.integers(0, 256, size=(pages, PAGE_SIZE), dtype=np.uint8)
    pairs = rand(n // 4)
    groups = rand(n // 64)
    return [("unique-tiny", [img("unique-tiny", rand(n // 32))], {}),
            ("unique-small", [img("unique-small", rand(n // 4))], {}),
            ("unique", [img("unique", rand(n))], {}),
            ("pairs", [img("pairs", np.concatenate([pairs, pairs]))], {}),
            ("groups", [img("groups", np.tile(groups, (64, 1)))], {}),
            ("zero", [img("zero", np.zeros((n // 2, PAGE_SIZE), np.uint8))], {"use_zero_pages": "1"})]


def _nnls(a, b):
    """Least squares with x >= 0 (drop the most negative, refit)."""
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return x


def measure_work(directory, mix, progress=None):
    """Step 1's equations: [(mix, pass, work dict, cpu seconds, pages scanned
    measured, pages scanned planned)]."""
    rows = []
    mixes = _mix_images(directory, mix["pages"])
    interp = ("interpreters", None, {})
    for name, paths, knobs in mixes + [interp]:
        if progress:
            progress(f"calibrate: full scans of {name}")
        if paths:
            start = functools.partial(kernel_timing.children_of, images=paths)
            summary_of = functools.partial(_files_summary, paths)
        else:
            start = functools.partial(kernel_timing.children_of, recipes=mix["interpreters"])
            summary_of = _pids_summary
        summary, passes = kernel_timing.run_passes(start, knobs, PASSES, summary_of=summary_of)
        plan = scan_plan(summary, read_knobs(knobs), PASSES)
        for k, (got, work) in enumerate(zip(passes, plan.passes), start=1):
            rows.append((name, k, work, got["cpu_seconds"], got["pages_scanned"], plan.scanned(k)))
    return rows


def _files_summary(paths, kids):
    return summarize_sources([("image", p) for p in paths])


def _pids_summary(kids):
    return summarize_sources([("pid", str(k.pid)) for k in kids])


def fit_work(rows):
    """(costs dict, per_full_scan) from step 1's rows.  Costs the mix
    separates poorly (an unstable merge always comes with an insert) are held
    near the default model's by a weak prior: one row per cost, worth
    PRIOR_PAGES pages of that kind."""
    a = [[w.get(c, 0.0) for c in COSTS] + [1.0] for _, _, w, _, _, _ in rows]
    b = [cpu for _, _, _, cpu, _, _ in rows]
    for i, c in enumerate(COSTS):
        a.append([PRIOR_PAGES if j == i else 0.0 for j in range(len(COSTS))] + [0.0])
        b.append(PRIOR_PAGES * DEFAULT_COSTS[c])
    x = _nnls(np.array(a), np.array(b))
    return dict(zip(COSTS, (float(v) for v in x[:-1]))), float(x[-1])


def measure_paces(mix, directory, progress=None):
    """Step 2's runs: [(knobs, kernel_timing.run_paced result)]: the
    interpreters at PACES, and a small image (pairs and unique pages) in
    batches of SMALL_BATCHES pages for two full scans (the advisor's small
    batches: the cost of a batch apart from its pages)."""
    out = []
    for pts, sleep in PACES:
        if progress:
            progress(f"calibrate: pages_to_scan={pts} sleep_millisecs={sleep}")
        knobs = {"pages_to_scan": pts, "sleep_millisecs": sleep}
        start = functools.partial(kernel_timing.children_of, recipes=mix["interpreters"])
        out.append((knobs, kernel_timing.run_paced(start, knobs, summary_of=_pids_summary)))
    pts, sleep, pages = SMALL_BATCHES
    if progress:
        progress(f"calibrate: pages_to_scan={pts} sleep_millisecs={sleep}")
    rng = np.random.default_rng(0x736d616c)
    half = rng.integers(0, 256, size=(pages // 4, PAGE_SIZE), dtype=np.uint8)
    path = os.path.join(directory, "small.img")
    np.concatenate([half, half, rng.integers(0, 256, size=(pages // 2, PAGE_SIZE),
                                             dtype=np.uint8)]).tofile(path)
    knobs = {"pages_to_scan": pts, "sleep_millisecs": sleep}
    start = functools.partial(kernel_timing.children_of, images=[path])
    out.append((knobs, kernel_timing.run_paced(start, knobs, max_full_scans=2,
                                               summary_of=functools.partial(_files_summary, [path]))))
    return out


def _pass_walls(result):
    """Measured lengths of the full scans of a paced run."""
    ends = [0.0] + [t for t, _ in result["scan_ends"]]
    return [b - a for a, b in zip(ends, ends[1:])]


def fit_pace(costs, per_full_scan, runs, hz):
    """The CostModel from the step-1 fit and the paced runs (module doc)."""
    work, batches, cpu = [], [], []
    for knobs, r in runs:
        k = read_knobs(knobs)
        plan = scan_plan(r["summary"], k, len(r["scan_ends"]))
        work.append(sum(sum(n * costs[c] for c, n in w.items()) for w in plan.passes))
        batches.append(sum(plan.scanned(i) // k["pages_to_scan"] + 1
                           for i in range(1, len(plan.passes) + 1)))
        cpu.append(r["cpu_seconds"] - len(plan.passes) * per_full_scan)
    # cpu = (1 + f) * work + batches * per_batch, f >= 0, per_batch >= 0
    a = np.array([[w, n] for w, n in zip(work, batches)])
    factor, per_batch = _nnls(a, np.array(cpu))
    factor = max(float(factor), 1.0)
    costs = {c: float(v * factor) for c, v in costs.items()}
    slices = sum(r["slices"] for _, r in runs)
    latency = sum(r["wait_seconds"] for _, r in runs) / slices if slices else DEFAULT_TIMING["wake_latency"]
    base = dict(costs=costs, per_batch=float(per_batch), per_full_scan=per_full_scan,
                wake_latency=latency, slice=ksmd_slice(), source="calibrated")
    best = None
    for h in ([hz] if hz else HZ_CANDIDATES):
        for stretch in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0):
            for jitter in (0.0, 0.25e-3, 0.5e-3, 1e-3, 2e-3, 3e-3, 4e-3):
                model = CostModel(hz=h, stretch=stretch, jitter=jitter, **base)
                err = _wall_error(model, runs)
                if best is None or err < best[0]:
                    best = (err, model)
    return best[1], best[0]


def _wall_error(model, runs):
    """Sum of squared log ratios of the modelled to the measured lengths
    of the paced runs' full scans."""
    err = 0.0
    for knobs, r in runs:
        k = read_knobs(knobs)
        measured = _pass_walls(r)
        plan = scan_plan(r["summary"], k, len(measured))
        # from the second full scan on: the first starts off the tick (run=1 wakes ksmd)
        for work, wall in list(zip(plan.passes, measured))[1:]:
            got, _, _ = timed_pass(work, k["pages_to_scan"], k["sleep_millisecs"], model)
            err += math.log(max(got, 1e-6) / max(wall, 1e-6)) ** 2
    return err


def calibrate(progress=None, quick=False):
    """Runs both steps against the kernel (root; the kernel peer's lock) on
    the FULL mix (QUICK: smaller, for tests).  Returns (CostModel,
    measurements dict for the file and the report)."""
    mix = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="ksm-engine-calibrate-") as d:
        rows = measure_work(d, mix, progress)
        runs = measure_paces(mix, d, progress)
    costs, per_full_scan = fit_work(rows)
    hz = kernel_hz()
    model, err = fit_pace(costs, per_full_scan, runs, hz)
    measurements = {
        "full_scans": [{"mix": m, "full_scan": k, "cpu_seconds": round(c, 6),
                        "pages_scanned": got, "pages_scanned_planned": planned}
                       for m, k, _, c, got, planned in rows],
        "paces": [{"pages_to_scan": int(kn["pages_to_scan"]),
                   "sleep_millisecs": int(kn["sleep_millisecs"]),
                   "pages": r["summary"].pages,
                   "settle_seconds": r["settle_seconds"], "ksmd_cpu_seconds": r["ksmd_cpu_seconds"],
                   "full_scan_seconds": [round(w, 4) for w in _pass_walls(r)],
                   "batch_seconds": round(_pass_walls(r)[1] / (r["summary"].pages // int(kn["pages_to_scan"]) + 1), 6),
                   "wake_ups": r["slices"], "run_queue_wait_seconds": r["wait_seconds"]}
                  for kn, r in runs],
        "mix": "quick" if quick else "full", "hz_from_config": hz, "wall_fit_error": round(err, 4),
        "ksmd_timer_slack_ns": _timer_slack(),
    }
    return model, measurements


def ksmd_slice():
    """ksmd's scheduler slice in seconds (se.slice in /proc/<ksmd>/sched;
    the default model's when unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{kernel_timing.ksmd_pid()}/sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    return int(line.split(":")[1]) / 1e9
    return DEFAULT_TIMING["slice"]


def _timer_slack():
    with contextlib.suppress(OSError):
        with open(f"/proc/{kernel_timing.ksmd_pid()}/timerslack_ns") as f:
            return int(f.read())
    return None


def against_kernel(recipes, knobs, model, max_full_scans=None, images=()):
    """Real interpreters (recipes), or raw images in kernel_peer's children,
    through the kernel's ksmd at the knobs, and the model's prediction for
    the memory they hold: {"kernel":
    settle_seconds, ksmd_cpu_seconds, pages_scanned, full_scans;
    "predicted": the same from ksmd_model.predict; "ratio": predicted /
    kernel for the time and the CPU; "wait_per_wakeup": ksmd's mean
    run-queue wait per time it ran, seconds: how busy the machine was}."""
    start = functools.partial(kernel_timing.children_of, recipes=recipes or (), images=images)
    summary_of = functools.partial(_files_summary, images) if images else _pids_summary
    r = kernel_timing.run_paced(start, knobs, summary_of=summary_of,
                                max_full_scans=max_full_scans)
    p = predict(r["summary"], knobs, model, ksmd_cpu_before=r["ksmd_cpu_before"])
    keys = ("settle_seconds", "ksmd_cpu_seconds", "pages_scanned")
    kernel = {k: r[k] for k in keys}
    return {"pages": r["summary"].pages, "kernel": kernel,
            "predicted": {k: p[k] for k in keys},
            "ratio": {k: round(p[k] / kernel[k], 4) if kernel[k] else None for k in keys[:2]},
            "model": p["model"], "scan_ends": r["scan_ends"],
            "wait_per_wakeup": r["wait_seconds"] / r["slices"] if r["slices"] else 0.0}
