"""The kernel's own ksmd, timed: runs memory through the real KSM at a given
pace and records when its counters changed, and what ksmd's CPU was then.

ksmd's CPU is read from /proc/<pid of ksmd>/schedstat: time on a CPU (ns),
time waiting on a run queue (ns), times run.  Everything goes through the
kernel peer (kernel_peer.kernel_ksm: the machine-wide lock, every knob saved
and restored, run=2 at the end).

Two kinds of children hold the memory, started in order (so that the order of
their mm_slots, the order ksmd scans them, is the order given):
  images        kernel_peer's children: a raw image in a private anonymous
                area madvised MERGEABLE.
  interpreters  real Python interpreters started with PR_SET_MEMORY_MERGE
                set before execve (merge-any: every anonymous page of the
                interpreter is scanned), each filling some arrays with a
                recipe of blocks (INTERPRETER_CHILD) and then waiting.

Runs:
  run_paced       ksmd at the given knobs until the settled counters have
                  held still for two full scans (as shared/tools/ksmd_timing.py);
                  returns settle_seconds, ksmd_cpu_seconds at the last change,
                  the pages scanned then, and the end of every full scan.
  run_passes      one batch per full scan (pages_to_scan above the pages,
                  a long sleep_millisecs), ksmd's CPU read in each pause:
                  the CPU of every full scan, for the calibration's fit.
"""
import contextlib
import json
import os
import subprocess
import sys
import time

from . import kernel_peer
from .kernel_peer import read_knob, write_knob

SETTLED = ("pages_shared", "pages_sharing", "ksm_zero_pages", "stable_node_chains",
           "stable_node_dups")
# The first lines of a child interpreter: merge-any (PR_SET_MEMORY_MERGE,
# 67) on itself.  Set before exec instead, the flag would miss the initial
# stack (exec sets it up before the flag applies), whose pages ksmd would
# then never scan while a content summary of the process counts them.
MERGE_ANY_PRELUDE = """
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl(67, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_MEMORY_MERGE) failed")
"""
POLL_SECONDS = 0.002
PASS_SLEEP_MS = 60           # run_passes: ksmd's pause after each full scan

# An interpreter child: argv[1] is a JSON recipe [[kind, pages, seed], ...]
# with kind "random" (pages of random bytes from the seed: equal seeds give
# equal blocks), "zero", or "sparse" (pages of zeros with a few random
# bytes: they compare deep in the trees, like real heap pages).
INTERPRETER_CHILD = MERGE_ANY_PRELUDE + r"""
import json, random
blocks = []
for kind, pages, seed in json.loads(sys.argv[1]):
    r = random.Random(seed)
    b = bytearray(pages * 4096)
    if kind == "random":
        b[:] = r.randbytes(len(b))
    elif kind == "sparse":
        for p in range(pages):
            for _ in range(4):
                b[p * 4096 + r.randrange(4096)] = r.randrange(1, 256)
    else:
        b[:] = bytes(len(b))           # touch every page: zeros, but present
    blocks.append(b)
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""


def ksmd_pid():
    """The pid of the kernel's ksmd thread (OSError if there is none)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().strip() == "ksmd":
                        return int(name)
            except OSError:
                continue
    raise kernel_peer.KernelKsmUnavailable(2, "no ksmd thread")


def schedstat(pid):
    """(ns on a CPU, ns waiting to run, times run) of a task."""
    with open(f"/proc/{pid}/schedstat") as f:
        run, wait, slices = (int(x) for x in f.read().split()[:3])
    return run, wait, slices


def start_interpreters(recipes):
    """Starts one interpreter per recipe, in order, each waiting once its
    memory is filled.  Returns the Popen objects (stop_children ends them)."""
    children = []
    try:
        for recipe in recipes:
            c = subprocess.Popen([sys.executable, "-S", "-c", INTERPRETER_CHILD, json.dumps(recipe)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            children.append(c)
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("an interpreter child failed to start")
        return children
    except BaseException:
        stop_children(children)
        raise


def stop_children(children):
    kernel_peer._stop_children(children)


@contextlib.contextmanager
def children_of(images=(), recipes=()):
    """Image children then interpreter children, ended on exit."""
    kids = []
    try:
        if images:
            kids += kernel_peer._start_children(images)
        if recipes:
            kids += start_interpreters(recipes)
        yield kids
    finally:
        stop_children(kids)


def _read_int(name):
    return int(read_knob(name))


def run_paced(start, knobs, timeout=600.0, summary_of=None, max_full_scans=None):
    """ksmd at the knobs over the memory of the children start() makes
    (a context manager yielding them) until the settled counters held still
    for two full scans.  summary_of(children), if given, is called before
    ksmd runs (to read the memory as ksmd will find it).  Returns a dict
    (settle_seconds, ksmd_cpu_seconds, pages_scanned and full_scans at the
    last change, scan_ends [(seconds, pages_scanned)], wait_seconds and
    slices of ksmd over the run, seconds, settled, summary).  max_full_scans:
    stop after that many full scans even if not settled by the rule (a
    test that knows static memory settles in the second).  ksmd_cpu_before:
    ksmd's CPU seconds at run=1 (what the scan-time advisor's first step
    counts)."""
    ksmd = ksmd_pid()
    with kernel_peer.kernel_ksm():
        write_knob("run", "0")
        for name, value in knobs.items():
            if name not in ("pages_to_scan", "sleep_millisecs"):
                write_knob(name, value)
        with start() as kids:
            summary = summary_of(kids) if summary_of else None
            for name in ("sleep_millisecs", "pages_to_scan"):
                if name in knobs:
                    write_knob(name, knobs[name])
            scans0, scanned0 = _read_int("full_scans"), _read_int("pages_scanned")
            c0 = schedstat(ksmd)
            t0 = time.perf_counter()
            write_knob("run", "1")
            out = _watch(ksmd, t0, c0, scans0, scanned0, timeout, max_full_scans)
            out["ksmd_cpu_before"] = c0[0] / 1e9
            write_knob("run", "0")
    out["summary"] = summary
    return out


def _watch(ksmd, t0, c0, scans0, scanned0, timeout, max_full_scans=None):
    last, since, at_change = None, 0, (0.0, c0, 0, 0)
    scan_ends, seen, done = [], 0, False
    while True:
        time.sleep(POLL_SECONDS)
        now = time.perf_counter() - t0
        scans = _read_int("full_scans") - scans0
        cur = tuple(_read_int(k) for k in SETTLED)
        if scans != seen:
            scan_ends.append((round(now, 4), _read_int("pages_scanned") - scanned0))
            seen = scans
        if cur != last:
            stat = schedstat(ksmd)
            last, since = cur, scans
            at_change = (now, stat, _read_int("pages_scanned") - scanned0, scans)
        elif scans >= 3 and scans >= since + 2:
            done = True
            break
        if now > timeout or (max_full_scans and scans >= max_full_scans):
            break
    end = schedstat(ksmd)
    t, stat, scanned, scans = at_change
    return {"settle_seconds": round(t, 4),
            "ksmd_cpu_seconds": round((stat[0] - c0[0]) / 1e9, 5),
            "pages_scanned": scanned, "full_scans": scans, "settled": done,
            "counters": dict(zip(SETTLED, last)), "scan_ends": scan_ends,
            "seconds": round(time.perf_counter() - t0, 4),
            "cpu_seconds": round((end[0] - c0[0]) / 1e9, 5),
            "wait_seconds": round((end[1] - c0[1]) / 1e9, 5), "slices": end[2] - c0[2]}


def run_passes(start, knobs, passes, summary_of=None, timeout=120.0):
    """ksmd doing one full scan per batch (see the module doc), for `passes`
    full scans.  Returns (summary, [per full scan: {cpu_seconds,
    pages_scanned, pages_skipped, counters}])."""
    ksmd = ksmd_pid()
    out = []
    with kernel_peer.kernel_ksm():
        write_knob("run", "0")
        for name, value in knobs.items():
            write_knob(name, value)
        with start() as kids:
            summary = summary_of(kids) if summary_of else None
            write_knob("pages_to_scan", str(1 << 30))
            write_knob("sleep_millisecs", str(PASS_SLEEP_MS))
            scans = _read_int("full_scans")
            prev = (schedstat(ksmd)[0], _read_int("pages_scanned"), _read_int("pages_skipped"))
            deadline = time.perf_counter() + timeout
            write_knob("run", "1")
            while len(out) < passes and time.perf_counter() < deadline:
                time.sleep(POLL_SECONDS)
                if _read_int("full_scans") == scans:
                    continue
                scans += 1
                cur = (schedstat(ksmd)[0], _read_int("pages_scanned"), _read_int("pages_skipped"))
                out.append({"cpu_seconds": (cur[0] - prev[0]) / 1e9,
                            "pages_scanned": cur[1] - prev[1], "pages_skipped": cur[2] - prev[2],
                            "counters": {k: _read_int(k) for k in SETTLED}})
                prev = cur
            write_knob("run", "0")
    return summary, out
