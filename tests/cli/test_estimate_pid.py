"""`ksm-engine estimate --pid` and `--core` on processes this test starts
with known memory.

* The no-libc child holds nothing private and anonymous but the region it
  was given and a few stack pages, so the estimate must equal the engine's
  own scan of the same bytes exactly: counters, full scans, and the time
  model against a batch-by-batch run.  Its kernel-made core file must give
  the same estimate as the live process.
* The Python child has an interpreter's memory besides the known region:
  the known duplicates and zero pages are lower bounds, and the pages it
  only read (the shared zero page) are left out.
* Bad pids: one that does not exist, one we may not read, not a number.
"""
import errno
import glob
import json
import os
import random
import resource
import signal
import subprocess

import pytest

from ksm_engine.apps import estimate as est
from ksm_engine.apps.estimate import pid as est_pid

from . import children
from .conftest import PAGE, ROOT, assert_usage_error, run_cli, run_main
from .engine_check import assert_run_matches, engine_truth

rng = random.Random(11)
X, Y = rng.randbytes(PAGE), rng.randbytes(PAGE)
# 24 copies of X, 16 zero pages, 8 copies of Y, 12 unique pages.
REGION = X * 24 + bytes(16 * PAGE) + Y * 8 + rng.randbytes(12 * PAGE)
REGION_PAGES = len(REGION) // PAGE


def estimate_json(*args, env=None):
    r = run_cli("estimate", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def nolibc(tmp_path_factory):
    why = children.nolibc_unavailable()
    if why:
        pytest.skip(why)
    return children.build_nolibc(str(tmp_path_factory.mktemp("nolibc")))


def _stack_pages(doc):
    extra = doc["sources"][0]["pages"] - REGION_PAGES
    assert 1 <= extra <= 8, extra          # its stack: arguments, environment, auxv
    return extra


@pytest.mark.parametrize("pages_to_scan,sleep_ms", [(100, 20), (9, 5)])
def test_live_process_equals_the_engines_own_scan(nolibc, pages_to_scan, sleep_ms):
    with children.nolibc_child(nolibc, REGION) as child:
        doc = estimate_json("--pid", child.pid, "--pages-to-scan", pages_to_scan,
                            "--sleep-millisecs", sleep_ms)
        with open(f"/proc/{child.pid}/maps") as f:
            own = sum(1 for line in f if line.rstrip().endswith(str(nolibc))
                      and line.split()[1].startswith("r") and line.split()[1][3] == "p")
    src = doc["sources"][0]
    assert src["kind"] == "pid" and src["name"] == f"pid {child.pid} (nolibc_child)"
    # the region, [stack], and the program's own private mappings (ksmd
    # walks them under merge-any; only their written pages are anonymous)
    assert own >= 1 and src["areas"] == 2 + own
    stack = _stack_pages(doc)
    assert doc["zero_pages"] == 16
    # The stack pages are unique: they take part like unique random pages.
    buffers = [REGION + rng.randbytes(stack * PAGE)]
    for run in doc["runs"]:
        truth = engine_truth(buffers, pages_to_scan=pages_to_scan,
                             use_zero_pages=run["use_zero_pages"])
        assert_run_matches(run, truth, pages_to_scan, sleep_ms)
    r0, r1 = doc["runs"]
    assert (r0["pages_shared"], r0["pages_sharing"]) == (3, 23 + 15 + 7)
    assert (r1["pages_shared"], r1["pages_sharing"], r1["ksm_zero_pages"]) == (2, 23 + 7, 16)
    assert r0["pages_unshared"] == 12 + stack


def _core_pattern():
    try:
        with open("/proc/sys/kernel/core_pattern") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_kernel_core_file_gives_the_same_estimate(nolibc, tmp_path):
    pattern = _core_pattern()
    if not pattern or pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core files do not land in the process's directory here ({pattern!r})")

    def allow_core():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    child = children.nolibc_child(nolibc, REGION, cwd=str(tmp_path), preexec_fn=allow_core)
    try:
        live = estimate_json("--pid", child.pid)
        os.kill(child.pid, signal.SIGABRT)
        child.proc.wait(timeout=30)
    finally:
        child.stop()
    cores = [p for p in glob.glob(str(tmp_path / "*")) if os.path.basename(p).startswith("core")]
    if not cores:
        pytest.skip("the kernel wrote no core file (pattern or limits)")
    dumped = estimate_json("--core", cores[0], "--core-zero-pages")
    src = dumped["sources"][0]
    assert src["kind"] == "core"
    assert src["pages"] == live["sources"][0]["pages"]
    assert src["file_backed_pages"] >= 1       # the program's own pages
    assert src["hole_pages"] >= 1              # the stack's untouched pages
    keys = ("pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages",
            "stable_node_chains", "stable_node_dups", "rmap_items", "general_profit",
            "full_scans", "per_process")
    for a, b in zip(live["runs"], dumped["runs"]):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert a["prediction"]["batches"] == b["prediction"]["batches"]


def test_python_child_bounds_and_zero_page_mappings():
    with children.python_child(REGION, untouched_pages=64) as child:
        doc = estimate_json("--pid", child.pid)
        text = run_cli("estimate", "--pid", child.pid)
    src = doc["sources"][0]
    assert src["name"].startswith(f"pid {child.pid} (python")
    assert src["pages"] > REGION_PAGES
    if src["zero_page_mappings"] is not None:   # pfns readable (root): left out
        assert src["zero_page_mappings"] >= 64
    r0, r1 = doc["runs"]
    assert r0["pages_sharing"] >= 23 + 15 + 7
    assert doc["zero_pages"] >= 16 and r1["ksm_zero_pages"] == doc["zero_pages"]
    assert r0["pages_shared"] + r0["pages_sharing"] + r0["pages_unshared"] <= src["pages"]
    pred = r0["prediction"]
    assert pred["full_scans"] == 2 and pred["model"] == "default"
    # the whole first full scan, then the second up to its last change
    assert src["pages"] // 100 + 1 < pred["batches"] <= 2 * (src["pages"] // 100 + 1)
    assert text.returncode == 0, text.stderr
    assert f"pid {child.pid} (python" in text.stdout and "areas" in text.stdout


def test_memory_unmapped_while_read_is_counted_lost():
    with children.python_child(REGION) as child:
        srcs = est.open_sources([("pid", str(child.pid))])
        planned = srcs[0].pages
        os.kill(child.pid, signal.SIGUSR1)
        assert child.proc.stdout.readline() == b"unmapped\n"
        try:
            doc = est.estimate(srcs)
        finally:
            srcs[0].close()
    src = doc["sources"][0]
    assert src["lost_pages"] == REGION_PAGES
    assert src["pages"] == doc["pages"] == planned - REGION_PAGES
    assert doc["runs"][0]["rmap_items"] <= doc["pages"]


def test_pid_and_image_together_keep_their_order(nolibc, tmp_path):
    img = tmp_path / "region.img"
    img.write_bytes(REGION)
    with children.nolibc_child(nolibc, REGION) as child:
        doc = estimate_json("--image", img, "--pid", child.pid)
    assert [s["kind"] for s in doc["sources"]] == ["image", "pid"]
    stack = doc["sources"][1]["pages"] - REGION_PAGES
    # The live copy pairs with the image: everything in it is shared.
    r0 = doc["runs"][0]
    assert r0["pages_unshared"] == stack
    assert r0["per_process"][0]["ksm_merging_pages"] == REGION_PAGES


def _free_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_pid_that_does_not_exist():
    pid = _free_pid()
    assert not os.path.exists(f"/proc/{pid}")
    assert_usage_error(run_main("estimate", "--pid", pid), f"--pid {pid}: no such process")


@pytest.mark.parametrize("text,needle", [("0", "not a process id"), ("-5", "not a process id"),
                                         ("abc", "'abc': not a process id")])
def test_pid_that_is_not_a_pid(text, needle):
    assert_usage_error(run_main("estimate", f"--pid={text}"), needle)


def test_estimating_itself_is_refused():
    code = ("import os\nfrom ksm_engine.cli.main import main\n"
            "raise SystemExit(main(['estimate', '--pid', str(os.getpid())]))")
    r = subprocess.run([children.sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert_usage_error(r, "that is ksm-engine itself")


# Drops root after everything is imported (this interpreter's own files
# may not be readable by nobody), then runs the command as nobody.
AS_NOBODY = """
import ctypes, locale, os
import elftools.elf.elffile
import ksm_engine.cli.estimate_command, ksm_engine.apps.estimate
from ksm_engine.cli.main import build_parser
build_parser().parse_args(["estimate", "--pid", "1"])
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
"""


def test_permission_denied_names_the_process():
    """Another user's process: as root, the command drops to nobody and
    reads a child of ours; otherwise it is pointed at pid 1."""
    if os.geteuid() == 0:
        with children.python_child(REGION) as child:
            r = run_cli("estimate", "--pid", child.pid, prelude=AS_NOBODY)
        target = f"--pid {child.pid} (python"
    else:
        if os.stat("/proc/1").st_uid == os.geteuid():
            pytest.skip("pid 1 is ours here")
        r = run_cli("estimate", "--pid", "1")
        target = "--pid 1 ("
    assert_usage_error(r, target, "permission denied")


def test_zero_pfn_is_found_as_root():
    pfn = est_pid.zero_pfn()
    if os.geteuid() == 0:
        assert pfn is not None and pfn > 0
    else:
        assert pfn is None or pfn > 0


@pytest.mark.parametrize("as_root_reads_pfns", [True, False])
def test_pagemap_scan_and_entry_decoding_plan_the_same(as_root_reads_pfns):
    """The two ways to plan a --pid source, PAGEMAP_SCAN's regions and the
    decoded pagemap entries, give the same extents and figures on a child
    with written pages, pages only read (zero page mappings) and holes.
    Without a zero pfn (pfns hidden) both load the zero page mappings."""
    zero_pfn = est_pid.zero_pfn() if as_root_reads_pfns else None
    if as_root_reads_pfns and zero_pfn is None:
        pytest.skip("pfns are hidden here (not root)")
    def plan(use_scan):
        src.extents = []
        src._plan(child.pid, areas, zero_pfn, use_scan=use_scan)
        return list(src.extents), dict(src.info)

    # The child is a live interpreter: its memory may still change a little
    # after it said it was ready.  Each try plans by PAGEMAP_SCAN, by the
    # entries, then by PAGEMAP_SCAN again; a try whose two scans differ saw
    # the process change and says nothing about the two ways.  In a try
    # where it held still, the two ways must agree.
    with children.python_child(REGION, untouched_pages=64) as child:
        src = est_pid.PidSource(child.pid, zero_pfn)
        try:
            areas = src._areas(child.pid)
            for _ in range(10):
                before, entries, after = plan(True), plan(False), plan(True)
                if before == after:
                    break
            else:
                pytest.fail("the child's memory changed during every one of 10 tries")
        finally:
            src.close()
    assert entries == before
    extents, info = before
    assert sum(n for _, n in extents) // PAGE >= REGION_PAGES
    if zero_pfn:
        assert info["zero_page_mappings"] >= 64
    else:
        assert info["zero_page_mappings"] is None


def test_a_huge_sparse_area_is_planned_by_regions(tmp_path):
    """A process with 64 GiB of private anonymous address space and 4 MiB
    of it written: PAGEMAP_SCAN returns the written regions only (an
    entry-by-entry read would decode 16 Mi entries)."""
    code = ("import mmap, os, sys\n"
            "m = mmap.mmap(-1, 64 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)\n"
            "for off in range(0, 4 << 20, 4096): m[off] = 7\n"
            "print('ready', flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([children.sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=children.target_env())
    try:
        assert p.stdout.readline() == b"ready\n"
        with open(f"/proc/{p.pid}/pagemap", "rb", buffering=0) as pm:
            try:
                regions = list(est_pid._pagemap_scan(pm.fileno(), 0, (1 << 47) - PAGE))
            except OSError as e:
                if e.errno not in (errno.ENOTTY, errno.EINVAL):
                    raise
                pytest.skip("no PAGEMAP_SCAN on this kernel (before 6.7)")
        src = est_pid.PidSource(p.pid)
        src.close()
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert src.info["virtual_pages"] >= (64 << 30) // PAGE
    assert src.pages >= (4 << 20) // PAGE
    assert len(regions) < 10_000                    # regions, not pages
