#!/usr/bin/env python3
"""The engine and the real kernel's KSM side by side on the workload set.

For every size and workload (ksm_engine/apps/workloads.py) the images are
written to a temporary directory once; then, for each repetition, both run
on the same files under the same convergence rule (settle.py):

  engine   `python -m ksm_engine scan --json --set KNOB=V ... IMAGES` in a
           child process; its `seconds` is scan time until settled
           (loading the images excluded).  The child's wall time is kept too.
           It runs at ksmd's nice value (5): on a machine shared with other
           work both then get the same share of the CPU.
  kernel   kernel_peer.run_kernel(IMAGES, knobs): one child process per
           image, ksmd unthrottled, time from run=1 to the settling full
           scan less ksmd's pauses between scans.  It takes the kernel-KSM
           lock and restores every knob (run=2 last).

The order alternates between repetitions (engine first on even ones).
Counters "match" when COMPARED agree in every repetition (the set the
differential tests compare).  The table shows medians; the ratio is
kernel seconds / engine seconds (> 1: the engine is faster).  Raw runs and
the summary go to benchmarks/results/vs_kernel.json (or --out).

    python scripts/bench_vs_kernel.py                       # 128 MiB, 512 MiB, 1 GiB; 3 reps
    python scripts/bench_vs_kernel.py --sizes 128MiB --reps 1 --workloads chains
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.machine_info import machine_info, median, results_path  # noqa: E402
from ksm_engine.apps import kernel_peer, workloads  # noqa: E402
from ksm_engine.units import parse_size  # noqa: E402

COMPARED = ("pages_shared", "pages_sharing", "stable_node_chains", "stable_node_dups",
            "ksm_zero_pages", "rmap_items")


def ksmd_nice():
    """The nice value of the kernel's ksmd thread (5 on Linux), 0 if not found."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "ksmd":
                    continue
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[16])
        except (OSError, ValueError, IndexError):
            continue
    return 0


def run_engine(paths, knobs, nice=0):
    """One `ksm-engine scan` in a child process at the given nice value;
    returns its JSON plus wall."""
    cmd = [sys.executable, "-m", "ksm_engine", "scan", "--json"]
    for k, v in knobs.items():
        cmd += ["--set", f"{k}={v}"]
    # This checkout's ksm_engine, whatever else is installed.
    env = dict(os.environ, PYTHONPATH=REPO)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + list(paths), capture_output=True, text=True, env=env,
                          preexec_fn=(lambda: os.nice(nice)) if nice > 0 else None)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"ksm-engine scan failed ({proc.returncode}): {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    return {"seconds": out["seconds"], "wall": wall, "settled": out["settled"],
            "full_scans": out["full_scans"], "counters": out}


def run_kernel(paths, knobs):
    t0 = time.perf_counter()
    r = kernel_peer.run_kernel(paths, knobs)
    wall = time.perf_counter() - t0
    return {"seconds": r.seconds, "wall": wall, "settled": r.settled,
            "full_scans": len(r.history), "counters": r.counters}


def fmt_size(n):
    return f"{n >> 30}GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}MiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="128MiB,512MiB,1GiB", help="total memory per workload")
    ap.add_argument("--workloads", default=",".join(workloads.NAMES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=results_path("vs_kernel.json"))
    ap.add_argument("--tmpdir", default=None, help="where the images go (default: a temp dir)")
    ap.add_argument("--engine-nice", type=int, default=None,
                    help="nice value of the engine's process (default: ksmd's, so both "
                         "compete alike with whatever else runs)")
    args = ap.parse_args(argv)
    # A kill ends the run through the finally clauses: the kernel's knobs
    # are restored (run=2) even then.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.engine_nice is None:
        args.engine_nice = ksmd_nice()

    ok, why = kernel_peer.availability()
    if not ok:
        print(f"the real kernel KSM is not usable here: {why}", file=sys.stderr)
        return 1
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    names = args.workloads.split(",")
    for n in names:
        if n not in workloads.WORKLOADS:
            print(f"unknown workload {n!r}; known: {', '.join(workloads.NAMES)}", file=sys.stderr)
            return 2
    runs, rows = [], []
    t_all = time.perf_counter()
    header = (f"{'workload':24s} {'size':>7s} {'pages':>8s} {'kernel s':>9s} {'engine s':>9s} "
              f"{'ratio':>7s} {'k Mpg/s':>8s} {'e Mpg/s':>8s} {'scans k/e':>9s} match  loadavg")
    print(header)
    print("-" * len(header))
    for size in sizes:
        for name in names:
            wl = workloads.make(name, size, seed=args.seed)
            with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="ksm-bench-") as d:
                paths = wl.write(d)
                per = {"engine": [], "kernel": []}
                for rep in range(args.reps):
                    order = ("engine", "kernel") if rep % 2 == 0 else ("kernel", "engine")
                    for who in order:
                        r = (run_engine(paths, wl.knobs, args.engine_nice) if who == "engine"
                             else run_kernel(paths, wl.knobs))
                        r.update(workload=name, size=size, rep=rep, who=who, knobs=wl.knobs)
                        per[who].append(r)
                        runs.append(r)
            ek = [tuple(r["counters"][k] for k in COMPARED) for r in per["engine"]]
            kk = [tuple(r["counters"][k] for k in COMPARED) for r in per["kernel"]]
            match = all(e == k for e, k in zip(ek, kk)) and len(set(ek)) == 1
            es = median([r["seconds"] for r in per["engine"]])
            ks = median([r["seconds"] for r in per["kernel"]])
            pages = wl.total_pages
            row = {
                "workload": name, "size": size, "pages": pages, "knobs": wl.knobs,
                "engine_seconds": es, "kernel_seconds": ks,
                "engine_wall": median([r["wall"] for r in per["engine"]]),
                "kernel_wall": median([r["wall"] for r in per["kernel"]]),
                "ratio": ks / es if es > 0 else float("inf"),
                "engine_full_scans": median([r["full_scans"] for r in per["engine"]]),
                "kernel_full_scans": median([r["full_scans"] for r in per["kernel"]]),
                "settled": all(r["settled"] for r in per["engine"] + per["kernel"]),
                "counters_match": match,
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "engine_counters": dict(zip(COMPARED, ek[0])),
                "kernel_counters": dict(zip(COMPARED, kk[0])),
            }
            rows.append(row)
            eps = pages * row["engine_full_scans"] / es / 1e6 if es else float("inf")
            kps = pages * row["kernel_full_scans"] / ks / 1e6 if ks else float("inf")
            print(f"{name:24s} {fmt_size(size):>7s} {pages:8d} {ks:9.3f} {es:9.3f} {row['ratio']:7.2f} "
                  f"{kps:8.2f} {eps:8.2f} {row['kernel_full_scans']:4.0f}/{row['engine_full_scans']:<4.0f} "
                  f"{'yes' if match else 'NO'}{'' if row['settled'] else ' (unsettled)'}  load {row['loadavg_1min']:.1f}",
                  flush=True)
            if not match:
                print(f"    engine {row['engine_counters']}\n    kernel {row['kernel_counters']}")
    ratios = [r["ratio"] for r in rows]
    summary = {
        "median_ratio": median(ratios),
        "min_ratio": min(ratios), "max_ratio": max(ratios),
        "median_ratio_by_size": {fmt_size(s): median([r["ratio"] for r in rows if r["size"] == s])
                                 for s in sizes},
        "all_counters_match": all(r["counters_match"] for r in rows),
        "rows": len(rows), "reps": args.reps,
        "total_seconds": time.perf_counter() - t_all,
    }
    print("-" * len(header))
    print(f"median ratio (kernel/engine) over {len(rows)} workload-size pairs: "
          f"{summary['median_ratio']:.2f} (min {summary['min_ratio']:.2f}, max {summary['max_ratio']:.2f})")
    for s, v in summary["median_ratio_by_size"].items():
        print(f"  {s}: median ratio {v:.2f}")
    print(f"counters match everywhere: {summary['all_counters_match']}; "
          f"run took {summary['total_seconds']:.0f} s")
    with open(args.out, "w") as f:
        json.dump({"machine": machine_info(), "args": vars(args), "compared": COMPARED,
                   "summary": summary, "rows": rows,
                   "runs": [{k: v for k, v in r.items() if k != "counters"} |
                            {"counters": {k: r["counters"].get(k) for k in
                                          COMPARED + ("pages_unshared", "pages_volatile",
                                                      "general_profit")}}
                            for r in runs]}, f, indent=1)
    print(f"raw results: {os.path.relpath(args.out)}")
    return 0 if summary["all_counters_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
