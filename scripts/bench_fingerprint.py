#!/usr/bin/env python3
"""`ksm-engine fingerprint --image` end to end: the same target
as the estimate's stream (>= 1 GB/s on one core, peak anonymous RSS
<= 1 GiB on 8 GiB), on the same images as scripts/bench_estimate_stream.py
(its write_images: shared, unique, zero and repeated 16 MiB blocks), from
start to the JSON, the Parquet files written.

    python scripts/bench_fingerprint.py                 # 8 GiB, 4 images
    python scripts/bench_fingerprint.py --total-gib 2
Raw results: benchmarks/results/fingerprint_stream.json (appended).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from benchmarks.machine_info import append_result, machine_info  # noqa: E402
from bench_estimate_stream import BLOCK, run_estimate, write_images  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-gib", type=int, default=8)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    size = (args.total_gib << 30) // args.images // BLOCK * BLOCK
    directory = tempfile.mkdtemp(prefix="ksm-fingerprint-bench-", dir=args.dir)
    try:
        paths, _ = write_images(directory, args.images, size, 0.0)
        out = os.path.join(directory, "fps")
        command = ("fingerprint", "--output", out)
        doc, wall, usage, peak_anon, _ = run_estimate(
            paths, command)
        files = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    nbytes = size * args.images
    assert sum(f["pages"] for f in doc["files"]) == nbytes // 4096
    record = {"images": args.images, "bytes": nbytes, "seconds": round(wall, 3),
              "GB_per_s": round(nbytes / wall / 1e9, 3), "max_rss_bytes": usage.ru_maxrss * 1024,
              "peak_rss_anon_bytes": peak_anon, "cpu_user_s": round(usage.ru_utime, 3),
              "cpu_sys_s": round(usage.ru_stime, 3), "file_bytes": files,
              "contents": sum(f["contents"] for f in doc["files"]), "machine": machine_info()}
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=1))
    append_result("fingerprint_stream.json", record)


if __name__ == "__main__":
    main()
