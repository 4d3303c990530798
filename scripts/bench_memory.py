#!/usr/bin/env python3
"""The engine's own bookkeeping memory per tracked page.

Target: at most 48 bytes per tracked page (the kernel's
rmap_item alone is 64), measured from the process's resident memory beyond
the arena on at least one million pages.

Method, per workload (ksm_engine/apps/workloads.py), each in a fresh child
process so that one run's freed memory cannot hide in the next one's:
  1. build the workload's description (page seeds: the generator's, not the
     engine's memory) and read the process's RSS (smaps_rollup): `before`;
  2. make the Machine, load every page (Workload.load: written in 16 MiB
     chunks, MADV_MERGEABLE) and settle KSM (settle.settle);
  3. read RSS again: `after` (each reading after gc and malloc_trim, so
     the generator's freed chunks do not count).  The arena's resident frames are the machine's
     used frames (the core gives every freed frame back to the OS at the end
     of the call that freed it, and a frame never touched is not resident),
     so  bookkeeping = after - before - used_frames * 4096,
     and bytes per tracked page = bookkeeping / pages loaded.
It includes everything the engine keeps beside the page contents: frame
records, page tables and rmap slots, rmap_items, stable nodes, the Python
objects of processes and areas, the prehash buffers.

    python scripts/bench_memory.py                          # 1 Mi pages, 3 workloads
    python scripts/bench_memory.py --pages 2097152 --workloads vm_mix
Raw results: benchmarks/results/memory.json.
"""
import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine_info import machine_info, results_path, rss_bytes  # noqa: E402

_LIBC = ctypes.CDLL(None)


def settled_rss():
    """RSS once the generator's freed buffers are gone: Python's garbage
    collected and glibc's free heap memory handed back (malloc_trim)."""
    gc.collect()
    _LIBC.malloc_trim(0)
    return rss_bytes()


DEFAULT_WORKLOADS = "vm_mix,all_unique,dup_across_processes"
TARGET = 48


def measure(name, pages, seed):
    """Runs in the child: one workload, returns the figures as a dict."""
    from ksm_engine.apps import workloads
    from ksm_engine.settle import settle

    wl = workloads.make(name, pages * workloads.PAGE_SIZE, seed=seed)
    before = settled_rss()
    m, procs = wl.load()
    after_load = settled_rss()
    result = settle(m)
    after = settled_rss()
    used = m.used_pages
    c = result.counters
    book = after - before - used * workloads.PAGE_SIZE
    book_load = after_load - before - sum(p.rss_pages for p in procs) * workloads.PAGE_SIZE
    m.check()
    return {
        "workload": name, "pages": wl.total_pages, "settled": result.settled,
        "rss_before": before, "rss_after": after, "used_frames": used,
        "rmap_items": c["rmap_items"], "pages_shared": c["pages_shared"],
        "pages_sharing": c["pages_sharing"], "ksm_zero_pages": c["ksm_zero_pages"],
        "stable_node_dups": c["stable_node_dups"],
        "bookkeeping_bytes": book,
        "bytes_per_page": book / wl.total_pages,
        "bytes_per_page_loaded_unscanned": book_load / wl.total_pages,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=1 << 20, help="pages per workload (default 1Mi)")
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=results_path("memory.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.pages, args.seed)))
        return 0
    rows = []
    print(f"{'workload':24s} {'pages':>8s} {'used frames':>11s} {'rmap_items':>10s} "
          f"{'bookkeeping':>12s} {'B/page':>7s} {'loaded only':>11s}")
    for name in args.workloads.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--pages", str(args.pages),
                              "--seed", str(args.seed)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed: {out.stderr.strip()}", file=sys.stderr)
            return 1
        r = json.loads(out.stdout)
        rows.append(r)
        print(f"{name:24s} {r['pages']:8d} {r['used_frames']:11d} {r['rmap_items']:10d} "
              f"{r['bookkeeping_bytes'] / 2**20:9.1f} MiB {r['bytes_per_page']:7.1f} "
              f"{r['bytes_per_page_loaded_unscanned']:11.1f}", flush=True)
    worst = max(r["bytes_per_page"] for r in rows)
    print(f"worst: {worst:.1f} bytes per tracked page (target <= {TARGET}): "
          f"{'met' if worst <= TARGET else 'NOT met'}")
    with open(args.out, "w") as f:
        json.dump({"machine": machine_info(), "args": {k: v for k, v in vars(args).items() if k != "child"},
                   "target_bytes_per_page": TARGET, "rows": rows}, f, indent=1)
    print(f"raw results: {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
