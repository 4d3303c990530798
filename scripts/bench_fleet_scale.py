#!/usr/bin/env python3
"""Fleet scale: 10^8 fingerprints aggregated on Dask.

Target: 1e8 fingerprints (the distinct contents of about 381 GiB of
memory) aggregated on this 2-core, 24 GiB machine by 2 local worker
processes in <= 5 minutes and <= 3 GiB per worker; the result the same
with 1 and 2 workers, threads or processes; the time per 1e7 fingerprints
at 1e7, 3e7 and 1e8.

Input (generated once per size into --dir, reused): --sources files of
N / sources rows each, in the fingerprint file format.  Each source's
contents: 25% drawn from a pool shared by all sources (so contents are
held by several sources, as guests of one image share), the rest its
own; 10% of the rows count 2-4 copies, the others 1.  Fingerprints are
splitmix64 of the content id (two seeds).

Measured per run, each in a fresh embedded LocalCluster on 127.0.0.1
(--workers, processes or threads, --memory-limit each), the fleet's own
code path: aggregate.aggregate (read, shuffle by fingerprint, signatures,
tree merge) then the all-on-one-host counters (counts.group_counters):
  seconds        wall time of both (the cluster's start excluded)
  per_1e7        seconds / (fingerprints / 1e7)
  peak_rss       per worker process, the highest RSS sampled every 0.2 s
                 (psutil) during the run, in GiB; for thread workers,
                 the whole process's
  digest         sha256 of the signature table and the counters: equal
                 digests are equal results

    python scripts/bench_fleet_scale.py                       # 1e7, 3e7, 1e8 on 2 processes
    python scripts/bench_fleet_scale.py --sizes 1e7 --configs 1p 2p 1t 2t   # same result?
Raw results: benchmarks/results/fleet_scale.json (appended per run).
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine_info import append_result, machine_info  # noqa: E402
from ksm_engine.apps.fleet import aggregate  # noqa: E402
from ksm_engine.apps.fleet.counts import group_counters, parse_knobs  # noqa: E402
from ksm_engine.apps.fleet.fpfile import open_fingerprint_file, write_fingerprints  # noqa: E402



def _mix(x, seed):
    x = x + np.uint64(seed)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def generate(directory, total, nsources, seed=1):
    """The input of one size (see the module doc); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = total // nsources
    pool = per                                   # shared pool ids: [0, pool)
    paths = []
    for i in range(nsources):
        path = os.path.join(directory, f"src{i:03d}.parquet")
        paths.append(path)
        if os.path.exists(path):
            continue
        shared = np.unique(rng.integers(0, pool, per // 4, dtype=np.uint64))
        own = np.arange(per - len(shared), dtype=np.uint64) + np.uint64(pool + i * per)
        ids = np.concatenate([shared, own])
        count = np.ones(len(ids), np.uint64)
        more = rng.random(len(ids)) < 0.10
        count[more] = rng.integers(2, 5, int(more.sum()), dtype=np.uint64)
        with np.errstate(over="ignore"):
            hi, lo = _mix(ids, 0x9E3779B97F4A7C15), _mix(ids, 0x5555AAAA5555AAAA)
        write_fingerprints(path, hi, lo, count, source=f"src{i}", kind="image", spec=path,
                           host=f"h{i % 4}", pages=int(count.sum()), zero_pages=0,
                           fingerprint_version="bench")
    return paths


class RssSampler(threading.Thread):
    """Peak RSS of the given pids, sampled every 0.2 s."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        import psutil
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in pids}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid, p in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], p.memory_info().rss)
                except Exception:
                    pass
            self.stop.wait(0.2)


def run_one(paths, workers, processes, memory_limit, partition_rows):
    files = [open_fingerprint_file(p) for p in paths]
    with aggregate.connect(None, workers=workers, processes=processes,
                           memory_limit=memory_limit) as (client, where):
        pids = set(client.run(os.getpid).values()) if processes else {os.getpid()}
        sampler = RssSampler(pids)
        sampler.start()
        t0 = time.perf_counter()
        table = aggregate.aggregate(client, files, partition_rows=partition_rows)
        pages = [f.meta["pages"] for f in files]
        zeros = [f.meta["zero_pages"] for f in files]
        counters = group_counters(table, np.ones(len(files), bool), pages, zeros, parse_knobs({}))
        seconds = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
    h = hashlib.sha256()
    for a in (table.key1, table.key2, table.mult, table.length, table.src, table.count):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(counters, sort_keys=True).encode())
    return {"seconds": round(seconds, 2),
            "peak_rss_gib": sorted(round(v / 2 ** 30, 3) for v in sampler.peak.values()),
            "signatures": len(table.mult), "contents": int(table.mult.sum()),
            "pages_sharing": counters["runs"][0]["pages_sharing"], "digest": h.hexdigest()[:16]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1e7", "3e7", "1e8"])
    ap.add_argument("--sources", type=int, default=20)
    ap.add_argument("--configs", nargs="+", default=["2p"],
                    help="NP (N worker processes) or NT (N worker threads), e.g. 2p 1t")
    ap.add_argument("--memory-limit", default="3GiB")
    ap.add_argument("--partition-rows", type=int, default=aggregate.PARTITION_ROWS)
    ap.add_argument("--dir", default="/var/tmp/ksm-engine-fleet-bench")
    args = ap.parse_args()
    load = os.getloadavg()
    out = []
    for size in args.sizes:
        n = int(float(size))
        t0 = time.perf_counter()
        paths = generate(os.path.join(args.dir, f"n{n}"), n, args.sources)
        gen = time.perf_counter() - t0
        for cfg in args.configs:
            workers, kind = int(cfg[:-1]), cfg[-1].lower()
            r = run_one(paths, workers, kind == "p", args.memory_limit, args.partition_rows)
            r.update({"fingerprints": n, "sources": args.sources, "workers": workers,
                      "processes": kind == "p", "per_1e7": round(r["seconds"] / (n / 1e7), 2),
                      "generate_seconds": round(gen, 1)})
            print(json.dumps(r), flush=True)
            out.append(r)
    record = {"command": " ".join(sys.argv), "runs": out,
              "load_before": [round(x, 2) for x in load],
              "load_after": [round(x, 2) for x in os.getloadavg()], "machine": machine_info()}
    append_result("fleet_scale.json", record)
    print(json.dumps({"load_before": record["load_before"], "load_after": record["load_after"]}))


if __name__ == "__main__":
    main()
