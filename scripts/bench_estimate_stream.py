#!/usr/bin/env python3
"""`ksm-engine estimate --image` end to end on large images.

Targets: 8 GiB of images at >= 1 GB/s end to end on one core (read, hash,
count: the whole command, from start to its JSON), with peak anonymous RSS
<= 1 GiB; 64 GiB of images completes on this 24 GiB machine.

Method:
  1. Write IMAGES images of TOTAL/IMAGES bytes each into a temporary
     directory (--dir; deleted afterwards), in 16 MiB blocks whose kind
     cycles over 8: 3 blocks shared by every image (the same bytes in
     each: a base system), 3 unique to the image (random), 1 zero-filled,
     1 of one page repeated (a filled buffer).  --holes F leaves that
     fraction of the blocks as holes instead (sparse files: the 64 GiB run
     reads 64 GiB while the disk holds a quarter).
  2. Run `python -m ksm_engine estimate --image ... --json` in a child
     process, timed from start to exit (wall clock); its peak RSS from
     wait4 (ru_maxrss: VmHWM, anonymous and file-mapped together, so an
     upper bound of the anonymous peak) and RssAnon sampled from
     /proc/PID/status every 20 ms.
  3. By default (hot) every image is read once before the timed run, so
     that its pages are in the page cache and the run measures the
     estimate (read from the cache, hash, count), not the disk.  --cold
     drops the images from the page cache instead (posix_fadvise(DONTNEED)
     on each file, nothing else's cache): the disk is read too.
  4. Besides the wall clock: the CPU time it took (user + system, from
     wait4: GB per CPU second is the speed on one core of its own) and the
     time it spent runnable but waiting for a CPU (/proc/PID/schedstat's
     second field, sampled): on a shared machine the wall clock includes
     other programs' turns.
  5. The JSON's pages and zero pages are checked against the layout.

    python scripts/bench_estimate_stream.py                       # 8 GiB, 4 images
    python scripts/bench_estimate_stream.py --total-gib 64 --images 8 --holes 0.75
Raw results: benchmarks/results/estimate_stream.json (one record per run, appended).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.machine_info import append_result, machine_info  # noqa: E402

BLOCK = 16 << 20
PAGE = 4096
KINDS = ("shared", "shared", "shared", "unique", "unique", "unique", "zero", "repeated")


def block_bytes(kind, image, j):
    if kind == "shared":
        return np.random.default_rng([1, j]).bytes(BLOCK)
    if kind == "unique":
        return np.random.default_rng([2, image, j]).bytes(BLOCK)
    if kind == "repeated":
        return np.random.default_rng([3, j % 64]).bytes(PAGE) * (BLOCK // PAGE)
    return bytes(BLOCK)


def write_images(directory, images, size, holes):
    """Writes the images; returns their paths and how many of their pages
    are zero (zero blocks and holes)."""
    paths = []
    zero = 0
    rng = np.random.default_rng(0)
    nblocks = size // BLOCK
    hole = rng.random((images, nblocks)) < holes
    for i in range(images):
        path = os.path.join(directory, f"image{i}.img")
        with open(path, "wb") as f:
            f.truncate(size)
            for j in range(nblocks):
                if hole[i, j] or KINDS[j % len(KINDS)] == "zero":
                    zero += BLOCK // PAGE
                if hole[i, j]:
                    continue
                f.seek(j * BLOCK)
                f.write(block_bytes(KINDS[j % len(KINDS)], i, j))
        paths.append(path)
    return paths, zero


def warm_cache(paths):
    buf = bytearray(BLOCK)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def drop_cache(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_estimate(paths, command=("estimate",)):
    """Runs `ksm-engine COMMAND --json --image PATH...` (also used for
    `fingerprint` by bench_fingerprint.py); returns (its JSON, wall seconds,
    rusage, peak RssAnon bytes, seconds it waited for a CPU)."""
    cmd = [sys.executable, "-m", "ksm_engine", *command, "--json"]
    for p in paths:
        cmd += ["--image", p]
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak_anon = [0]
    sched = [0, 0]                 # /proc/PID/schedstat: ns on a CPU, ns waiting for one
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak_anon[0] = max(peak_anon[0], int(line.split()[1]) * 1024)
                with open(f"/proc/{proc.pid}/schedstat") as f:
                    sched[:] = [int(x) for x in f.read().split()[:2]]
            except (OSError, ValueError):
                pass
            done.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[0]} failed: {err.decode()[-2000:]}")
    return json.loads(out), wall, usage, peak_anon[0], sched[1] / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-gib", type=int, default=8)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--holes", type=float, default=0.0)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--dir", default=None, help="where the images go (default: a temporary directory)")
    args = ap.parse_args()
    total = args.total_gib << 30
    size = total // args.images // BLOCK * BLOCK
    directory = tempfile.mkdtemp(prefix="ksm-estimate-bench-", dir=args.dir)
    try:
        t0 = time.perf_counter()
        paths, zero_pages = write_images(directory, args.images, size, args.holes)
        written = time.perf_counter() - t0
        if args.cold:
            drop_cache(paths)
        else:
            warm_cache(paths)
        doc, wall, usage, peak_anon, waited = run_estimate(paths)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    nbytes = size * args.images
    assert doc["pages"] == nbytes // PAGE, (doc["pages"], nbytes // PAGE)
    assert doc["zero_pages"] == zero_pages, (doc["zero_pages"], zero_pages)
    r0 = doc["runs"][0]
    record = {
        "images": args.images, "bytes": nbytes, "holes": args.holes, "cold": args.cold,
        "seconds": round(wall, 3), "GB_per_s": round(nbytes / wall / 1e9, 3),
        "max_rss_bytes": usage.ru_maxrss * 1024, "peak_rss_anon_bytes": peak_anon,
        "cpu_user_s": round(usage.ru_utime, 3), "cpu_sys_s": round(usage.ru_stime, 3),
        "GB_per_cpu_s": round(nbytes / (usage.ru_utime + usage.ru_stime) / 1e9, 3),
        "runqueue_wait_s": round(waited, 3),
        "loadavg_after": os.getloadavg(),
        "distinct": doc["contents"]["distinct"], "table_bytes": doc["contents"]["table_bytes"],
        "zero_pages": doc["zero_pages"], "pages_shared": r0["pages_shared"],
        "pages_sharing": r0["pages_sharing"], "saving_percent": r0["saving_percent"],
        "write_seconds": round(written, 1), "machine": machine_info(),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=1))
    append_result("estimate_stream.json", record)


if __name__ == "__main__":
    main()
