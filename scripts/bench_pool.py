"""How fast `ksm-engine pool` runs, and how that grows with partitions and
memory.

    python scripts/bench_pool.py [--out benchmarks/results/pool.json] [--quick]

1. The headline: examples/pool-8x256.json (8 partitions x 256 MiB, 10
   simulated minutes, checks after every step) in each mode, each in a
   fresh child process: wall seconds, CPU seconds of the child, and the
   goal (KSM+CMM: no hypervisor paging and no guest OOM; CMM only: some
   paging; neither: more).  The target is <= 30 s.
2. Growth: the same partition shape (scaled) with 2, 4, 8, 16 partitions of
   256 MiB, and 8 partitions of 64, 128, 256, 512 MiB, the pool at 2x
   overcommit, 2 simulated minutes, mode KSM+CMM.

The machine is shared: the 1-minute load average is recorded with every
row, and CPU seconds are given beside wall seconds (a busy machine stretches
the wall time, not the CPU time).
"""
import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "pool-8x256.json")

CHILD = r"""
import json, sys, time
from ksm_engine.apps.pool import parse_pool_scenario, run_pool
doc, mode = json.loads(sys.argv[1]), sys.argv[2]
t0, c0 = time.perf_counter(), time.process_time()
r = run_pool(parse_pool_scenario(doc), mode)
s = r["summary"]
s["wall_s"] = time.perf_counter() - t0
s["cpu_s"] = time.process_time() - c0
print(json.dumps(s))
"""


def run_child(doc, mode):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(doc), mode], env=env,
                         check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = json.loads(out)
    s["child_cpu_s"] = round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 2)
    s["wall_s"] = round(s["wall_s"], 2)
    s["cpu_s"] = round(s["cpu_s"], 2)
    s["loadavg"] = os.getloadavg()[0]
    return s


def scaled(base, n, logical_mb, duration):
    """The example's partition shape for n partitions of logical_mb, the
    pool at 2x overcommit."""
    doc = copy.deepcopy(base)
    tmpl = doc["partitions"][0]
    f = logical_mb / tmpl["logical_mb"]
    parts = []
    for i in range(n):
        p = copy.deepcopy(tmpl)
        p["name"] = f"vm{i}"
        p["start_s"] = 15 * (i % 8)
        p["logical_mb"] = logical_mb
        p["entitled_mb"] = max(1, int(tmpl["entitled_mb"] * f))
        p["cmm_params"]["min_mem_mb"] = max(1, int(tmpl["cmm_params"]["min_mem_mb"] * f))
        w = p["workload"]
        w["process_mb"] = round(w["process_mb"] * f, 3)
        for ph in w["phases"]:
            if "mb" in ph:
                ph["mb"] = round(ph["mb"] * f, 3)
        parts.append(p)
    doc["partitions"] = parts
    doc["pool"]["size_mb"] = n * logical_mb // 2
    doc["duration_s"] = duration
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "pool.json"))
    ap.add_argument("--quick", action="store_true", help="the headline only")
    args = ap.parse_args()
    with open(EXAMPLE) as f:
        base = json.load(f)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    res = {"commit": commit, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "nproc": os.cpu_count(), "headline": {}, "partitions": [], "memory": []}
    for mode in ("ksm+cmm", "cmm", "neither"):
        s = run_child(base, mode)
        res["headline"][mode] = s
        print(f"example {mode:8s} wall {s['wall_s']:6.2f} s  cpu {s['cpu_s']:6.2f} s  "
              f"load {s['loadavg']:.1f}  page-ins {s['pool_page_ins']}  oom {s['guest_oom_calls']}",
              flush=True)
    h = res["headline"]
    goal = (h["ksm+cmm"]["pool_page_ins"] == h["ksm+cmm"]["pool_page_outs"] == 0
            and h["ksm+cmm"]["guest_oom_calls"] == 0
            and 0 < h["cmm"]["pool_page_ins"] < h["neither"]["pool_page_ins"])
    res["goal_met"] = goal
    print("goal met" if goal else "GOAL NOT MET", flush=True)
    if not args.quick:
        for n in (2, 4, 8, 16):
            s = run_child(scaled(base, n, 256, 120), "ksm+cmm")
            res["partitions"].append(dict(s, n=n, logical_mb=256))
            print(f"{n:2d} x 256 MiB, 120 s: wall {s['wall_s']:6.2f} s cpu {s['cpu_s']:6.2f} s "
                  f"load {s['loadavg']:.1f}", flush=True)
        for mb in (64, 128, 256, 512):
            s = run_child(scaled(base, 8, mb, 120), "ksm+cmm")
            res["memory"].append(dict(s, n=8, logical_mb=mb))
            print(f" 8 x {mb:3d} MiB, 120 s: wall {s['wall_s']:6.2f} s cpu {s['cpu_s']:6.2f} s "
                  f"load {s['loadavg']:.1f}", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"written to {args.out}")
    return 0 if goal else 1


if __name__ == "__main__":
    sys.exit(main())
