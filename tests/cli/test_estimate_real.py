"""`ksm-engine estimate` on real memory: interpreters holding
identical numpy arrays well past any headroom, gdb's gcore of a live
process against the process itself, a core in QEMU's dump-guest-memory
layout, pages that change while watched, and faults (a process that exits
while read) with a one-line reason and no traceback."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from ksm_engine.cli import estimate_command
from ksm_engine.cli.errors import EXIT_FAILURE, CliError
from ksm_engine.cli.main import build_parser

from . import elfcore
from .children import Child, target_env
from .conftest import PAGE, run_cli

# An interpreter holding MIB MiB of numpy array (the same in every child)
# and VOLATILE pages that a thread keeps writing.
NUMPY_CHILD = r"""
import ctypes, mmap, os, sys, threading, time
import numpy as np
try:  # allow a sibling process to read us where Yama restricts ptrace
    ctypes.CDLL(None, use_errno=True).prctl(0x59616d61, ctypes.c_ulong(-1), 0, 0, 0)
except Exception:
    pass
arr = np.arange(int(sys.argv[1]) << 17, dtype=np.float64) * 1.5
volatile = int(sys.argv[2])
if volatile:
    region = mmap.mmap(-1, volatile * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    def churn():
        n = 0
        while True:
            n += 1
            for i in range(volatile):
                region[i * 4096:i * 4096 + 8] = n.to_bytes(8, "little")
            time.sleep(0.002)
    threading.Thread(target=churn, daemon=True).start()
sys.stdout.write(f"{os.getpid()}\n")
sys.stdout.flush()
sys.stdin.buffer.read()
"""
STABLE = ("pages_shared", "pages_sharing", "pages_unshared", "stable_node_chains",
          "stable_node_dups")


def numpy_child(mib, volatile=0):
    pytest.importorskip("numpy")
    p = subprocess.Popen([sys.executable, "-c", NUMPY_CHILD, str(mib), str(volatile)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=target_env())
    return Child(p)


def estimate_json(*args):
    r = run_cli("estimate", *args, "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def pid_args(children):
    return [x for c in children for x in ("--pid", c.pid)]


def test_interpreters_with_identical_arrays_past_any_headroom():
    """Four interpreters with 40 MiB of identical arrays each (160 MiB,
    ten times the engine path's old 16 MiB headroom): the count path holds
    no page, and every array page but one copy of each is pages_sharing."""
    children = [numpy_child(40) for _ in range(4)]
    try:
        doc = estimate_json(*pid_args(children))
    finally:
        for c in children:
            c.stop()
    array_pages = 40 << 20 >> 12
    r0, r1 = doc["runs"]
    assert doc["answered_by"] == "counts"
    assert r0["pages_sharing"] >= 3 * array_pages
    for st in r0["per_process"]:
        assert st["ksm_merging_pages"] >= array_pages
    # the table holds the distinct contents, not the pages
    assert doc["contents"]["table_bytes"] < doc["bytes"] // 8
    assert r1["pages_shared"] + r1["pages_sharing"] + r1["pages_unshared"] \
        + r1["ksm_zero_pages"] == doc["pages"]


def test_the_engine_path_no_longer_runs_out_of_frames():
    """The issue's crash: two interpreters with identical 16 MiB arrays,
    --engine (it unmerged between its two runs in a machine with 16 MiB to
    spare).  Now each run has its own machine: exit 0, and the engine
    agrees with the counts on the same memory."""
    children = [numpy_child(16) for _ in range(2)]
    try:
        doc = estimate_json(*pid_args(children), "--engine")
    finally:
        for c in children:
            c.stop()
    assert doc["answered_by"] == "engine"
    assert doc["engine_agrees"] is True
    assert doc["runs"][0]["pages_sharing"] >= 4096
    assert all(r["settled"] for r in doc["runs"])


def test_gcore_of_a_live_process_equals_the_process():
    """gdb's gcore writes untouched pages as zeros: left out by default,
    the core gives the process's non-zero counters."""
    if not shutil.which("gcore"):
        pytest.skip("gdb's gcore is not installed here")
    with numpy_child(8) as child:
        live = estimate_json("--pid", child.pid)
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ksm-estimate-gcore-{os.getpid()}")
        try:
            r = subprocess.run(["gcore", "-o", out, str(child.pid)], capture_output=True,
                               text=True, timeout=300, env=target_env())
            core = f"{out}.{child.pid}"
            if r.returncode != 0 or not os.path.exists(core):
                pytest.skip(f"gcore could not dump the child here: {r.stderr.strip()[-200:]}")
            dumped = estimate_json("--core", core)
            counted = estimate_json("--core", core, "--core-zero-pages")
        finally:
            for path in (out, f"{out}.{child.pid}"):
                if os.path.exists(path):
                    os.unlink(path)
    src = dumped["sources"][0]
    assert src["zero_pages_left_out"] > 0
    assert dumped["zero_pages"] == 0
    # the process's non-zero counters (use_zero_pages=1 keeps zero pages out
    # of them).  The live process has one kind of page more: the copied-on-
    # write pages of its private file mappings (the libraries' written data),
    # which ksmd walks under merge-any, while gcore dumps such a mapping whole
    # (file pages too) and the core source leaves file mappings out: unique
    # or all-zero here, they add to pages_unshared or to the zero pages only.
    merged = [k for k in STABLE if k != "pages_unshared"]
    assert {k: dumped["runs"][1][k] for k in merged} == {k: live["runs"][1][k] for k in merged}
    extra = live["pages"] - dumped["pages"]
    assert extra >= 0
    assert 0 <= live["runs"][1]["pages_unshared"] - dumped["runs"][1]["pages_unshared"] <= extra
    # counted, gcore's zeros inflate the zero pages well past the process's
    assert counted["zero_pages"] >= live["zero_pages"] + src["zero_pages_left_out"] // 2


def test_a_qemu_dump_guest_memory_core_loads(tmp_path):
    """QEMU's layout: notes named QEMU, guest RAM as PT_LOAD segments whose
    p_flags are 0 and whose p_vaddr is 0 or a guest kernel address."""
    x = os.urandom(PAGE)
    ram0 = x * 6 + os.urandom(4 * PAGE) + bytes(2 * PAGE)
    ram1 = x * 2 + os.urandom(PAGE)
    path = tmp_path / "guest.core"
    elfcore.write_core(str(path), [elfcore.Segment(0, ram0, flags=0),
                                   elfcore.Segment(0xFFFF888000000000, ram1, flags=0)],
                       qemu_cpus=2)
    doc = estimate_json("--core", path, "--core-zero-pages")
    src = doc["sources"][0]
    assert src["guest_memory"] is True and src["special_pages"] == 0
    assert src["pages"] == (len(ram0) + len(ram1)) // PAGE
    r0 = doc["runs"][0]
    assert (r0["pages_shared"], r0["pages_sharing"]) == (2, 7 + 1)
    img = tmp_path / "guest.img"
    img.write_bytes(ram0 + ram1)
    same = estimate_json("--image", img)
    assert [{k: r[k] for k in STABLE} for r in doc["runs"]] == \
        [{k: r[k] for k in STABLE} for r in same["runs"]]


def test_watch_reports_pages_that_changed_as_volatile():
    with numpy_child(4, volatile=32) as child:
        doc = estimate_json("--pid", child.pid, "--watch", "0.3")
        text = run_cli("estimate", "--pid", child.pid, "--watch", "0.2")
    src = doc["sources"][0]
    assert src["volatile_pages"] >= 32
    assert doc["volatile_pages"] == src["volatile_pages"]
    r0, r1 = doc["runs"]
    for r in (r0, r1):
        assert r["pages_volatile"] == doc["volatile_pages"]
        assert r["pages_shared"] + r["pages_sharing"] + r["pages_unshared"] + r["pages_volatile"] \
            + r["ksm_zero_pages"] == doc["pages"]
        assert r["per_process"][0]["ksm_rmap_items"] == r["rmap_items"]
    assert text.returncode == 0, text.stderr
    assert "volatile pages (changed while watched; never merged):" in text.stdout


@pytest.mark.parametrize("args,needle", [
    (["--watch", "-1"], "--watch must be between 0 and 86400"),
    (["--watch", "1", "--engine"], "--watch and --engine do not go together"),
])
def test_watch_bad_arguments(tmp_path, args, needle):
    img = tmp_path / "a.img"
    img.write_bytes(bytes(PAGE))
    r = run_cli("estimate", "--image", img, *args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_a_process_that_exits_while_read_is_a_runtime_failure():
    """Exit 1 with a one-line reason: the child is killed at the first
    progress report, between two reads of its memory."""
    child = numpy_child(32)
    args = build_parser().parse_args(["estimate", "--pid", str(child.pid), "--json"])

    def kill(text):
        if child.proc.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.proc.wait()

    try:
        with pytest.raises(CliError) as e:
            estimate_command.compute(args, progress=kill)
    finally:
        child.stop()
    assert e.value.exit_code == EXIT_FAILURE
    assert f"pid {child.pid}" in str(e.value) and "exited while being read" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_image_truncated_while_read_is_bad_input(tmp_path):
    """Planned at 64 pages, cut to 10 before the read: a one-line reason."""
    from ksm_engine.apps import estimate as est

    path = tmp_path / "a.img"
    path.write_bytes(os.urandom(64 * PAGE))
    srcs = est.open_sources([("image", str(path))])
    try:
        os.truncate(path, 10 * PAGE)
        with pytest.raises(est.EstimateError, match="the file ended at byte 40960"):
            est.estimate(srcs)
    finally:
        for s in srcs:
            s.close()


def test_images_with_more_than_64_mib_duplicated(tmp_path):
    """Two identical 40 MiB images (80 MiB duplicated, 40 MiB of it saved):
    the counts and the engine (one machine per run, no unmerge) agree."""
    import numpy as np

    data = np.random.default_rng(12).bytes(40 << 20)
    paths = []
    for name in ("a.img", "b.img"):
        path = tmp_path / name
        path.write_bytes(data)
        paths += ["--image", path]
    doc = estimate_json(*paths, "--engine")
    assert doc["engine_agrees"] is True and doc["answered_by"] == "engine"
    for r in doc["runs"]:
        assert (r["pages_shared"], r["pages_sharing"], r["pages_unshared"]) == (10240, 10240, 0)
        assert r["saving_bytes"] == 40 << 20
