#!/usr/bin/env python3
"""`ksm-engine estimate` on real interpreters, then the kernel's own ksmd on
the same processes: the prediction beside what the kernel did.  Root.

    scripts/estimate_beside_kernel.py [--interpreters N] [--mib MIB]
        [--pages-to-scan P] [--sleep-millisecs S] [--calibration FILE] [--json]

Starts N Python interpreters, each with numpy imported and the same array
of MIB MiB (np.arange(MIB << 17, dtype=np.float64) * 1.5), sleeping, each
having set PR_SET_MEMORY_MERGE on itself first, so that the kernel's ksmd
walks every area an estimate of the process counts.  (Set before exec, as
systemd's MemoryKSM= does, the flag misses the initial stack, which exec
sets up before it applies: ksmd then never sees its pages, about ten a
process here, while the estimate counts them.)  Then:

  1. `python -m ksm_engine estimate --pid ... --pages-to-scan P
     --sleep-millisecs S [--calibration FILE]`, as a user runs it (its
     text report is printed as it is);
  2. the kernel's ksmd at that pace over the same processes
     (ksm_engine.apps.kernel_timing.run_paced: the machine-wide lock,
     every knob saved and restored, run=2 at the end) until its counters
     held still for two full scans: the settled counters, the time of
     their last change and ksmd's CPU until then (/proc/<ksmd>/schedstat).

Prints the estimate's use_zero_pages=0 run beside the kernel (which runs
with this machine's use_zero_pages, 0 unless changed), and the ratios of
the predicted time and CPU to the kernel's.  The figures in README.md and
docs/cli.md come from this script.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ksm_engine.apps import kernel_peer, kernel_timing  # noqa: E402
from ksm_engine.cli.render import table  # noqa: E402

CHILD = kernel_timing.MERGE_ANY_PRELUDE + """
import numpy as np
a = np.arange(int(sys.argv[1]) << 17, dtype=np.float64) * 1.5
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""
COUNTERS = ("pages_shared", "pages_sharing", "ksm_zero_pages", "stable_node_chains",
            "stable_node_dups")


@contextlib.contextmanager
def interpreters(n, mib):
    """n interpreters holding the array, merge-any set before exec."""
    kids = []
    try:
        for _ in range(n):
            c = subprocess.Popen([sys.executable, "-c", CHILD, str(mib)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            kids.append(c)
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("an interpreter failed to start (is numpy installed?)")
        yield kids
    finally:
        kernel_timing.stop_children(kids)


def run_estimate(kids, args):
    """The estimate CLI on the children: (its text report, its JSON)."""
    cmd = [sys.executable, "-m", "ksm_engine", "estimate"]
    for k in kids:
        cmd += ["--pid", str(k.pid)]
    cmd += ["--pages-to-scan", str(args.pages_to_scan),
            "--sleep-millisecs", str(args.sleep_millisecs)]
    if args.calibration:
        cmd += ["--calibration", args.calibration]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    doc = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True,
                                    check=True).stdout)
    return text, doc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interpreters", type=int, default=4)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--pages-to-scan", type=int, default=100)
    ap.add_argument("--sleep-millisecs", type=int, default=20)
    ap.add_argument("--calibration", metavar="FILE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ok, why = kernel_peer.availability()
    if not ok:
        sys.exit(f"estimate_beside_kernel: the kernel's KSM cannot be driven here: {why}")

    got = {}

    def estimate_first(kids):
        got["text"], got["doc"] = run_estimate(kids, args)

    knobs = {"pages_to_scan": str(args.pages_to_scan),
             "sleep_millisecs": str(args.sleep_millisecs)}
    kernel = kernel_timing.run_paced(lambda: interpreters(args.interpreters, args.mib), knobs,
                                     summary_of=estimate_first)
    run = got["doc"]["runs"][0]
    pred = run["prediction"]
    result = {
        "interpreters": args.interpreters, "mib": args.mib, "knobs": knobs,
        "estimate": {k: run[k] for k in COUNTERS},
        "kernel": kernel["counters"],
        "predicted": {"settle_seconds": pred["settle_seconds"],
                      "ksmd_cpu_seconds": pred["ksmd_cpu_seconds"],
                      "pages_scanned": pred["pages_scanned"], "full_scans": pred["full_scans"],
                      "model": pred["model"]},
        "measured": {k: kernel[k] for k in ("settle_seconds", "ksmd_cpu_seconds",
                                            "pages_scanned", "full_scans", "settled")},
        "ratio": {k: round(pred[k] / kernel[k], 3) if kernel[k] else None
                  for k in ("settle_seconds", "ksmd_cpu_seconds")},
        "ksmd_wait_per_wakeup_ms": round(1e3 * kernel["wait_seconds"] / kernel["slices"], 3)
        if kernel["slices"] else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(got["text"])
    rows = [[k, result["estimate"][k], result["kernel"][k],
             "same" if result["estimate"][k] == result["kernel"][k] else "DIFFERENT"]
            for k in COUNTERS]
    rows += [["time to settle (s)", pred["settle_seconds"], kernel["settle_seconds"],
              f"x{result['ratio']['settle_seconds']}"],
             ["ksmd CPU (s)", pred["ksmd_cpu_seconds"], kernel["ksmd_cpu_seconds"],
              f"x{result['ratio']['ksmd_cpu_seconds']}"],
             ["pages scanned to the last change", pred["pages_scanned"],
              kernel["pages_scanned"], ""]]
    print(table(rows, headers=["", "estimate (use_zero_pages=0)", "kernel", ""]))
    print(f"\nprediction model: {pred['model']}; ksmd waited "
          f"{result['ksmd_wait_per_wakeup_ms']} ms per wake-up on the run queue")


if __name__ == "__main__":
    main()
