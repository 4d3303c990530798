"""`ksm-engine fingerprint`, and the issue's equality: `fleet` on the
fingerprints of some sources gives the counters `estimate` gives on those
sources (images, a core file with zero pages, a live process)."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from ksm_engine.contents import FINGERPRINT_VERSION

from ..cli import children
from ..cli.conftest import assert_usage_error, run_cli
from ..cli.elfcore import Segment, write_core

PAGE = 4096
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "rmap_items",
            "general_profit", "saving_pages", "saving_bytes", "saving_percent")


def _pages(ids, salt=0):
    """Whole pages: content id 0 is all zeros, each other id one pattern."""
    out = bytearray()
    for i in ids:
        out += bytes(PAGE) if i == 0 else (int(i) * 7919 + salt).to_bytes(8, "little") * (PAGE // 8)
    return bytes(out)


@pytest.fixture
def sources(tmp_path):
    """Three images and a core sharing contents, and their specs."""
    rng = np.random.default_rng(11)
    specs = []
    for k in range(3):
        ids = rng.integers(0, 40, 150)
        p = tmp_path / f"guest{k}.img"
        p.write_bytes(_pages(ids))
        specs += ["--image", str(p)]
    core = tmp_path / "core.1"
    write_core(str(core), [Segment(0x10000, _pages(rng.integers(0, 40, 60))),
                           Segment(0x80000, _pages([0] * 5 + [3, 3, 4]))])
    specs += ["--core", str(core)]
    return specs


def _json(*args):
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fleet_on_fingerprints_equals_estimate_on_the_sources(tmp_path, sources):
    knobs = ["--set", "max_page_sharing=3"]     # chains too (the live process: the default)
    out = tmp_path / "fps"
    fp = _json("fingerprint", *sources, "--output", out, "--host", "alpha")
    assert len(fp["files"]) == 4 and fp["skipped"] == []
    est = _json("estimate", *sources, *knobs)
    fleet = _json("fleet", out, "--threads", *knobs)
    assert fleet["pages"] == est["pages"]
    for got, want in zip(fleet["all_on_one_host"]["runs"], est["runs"]):
        assert {k: got[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}
    # and one host today: the same
    assert fleet["placed_today"]["hosts"][0]["runs"] == fleet["all_on_one_host"]["runs"]


def test_the_files_hold_the_documented_schema(tmp_path, sources):
    out = tmp_path / "fps"
    fp = _json("fingerprint", *sources[:2], "--output", out, "--host", "alpha")
    f = fp["files"][0]
    t = pq.read_table(f["file"])
    assert t.schema.names == ["fp_hi", "fp_lo", "count"]
    meta = json.loads(t.schema.metadata[b"ksm_engine.fingerprint"])
    assert meta["host"] == "alpha" and meta["kind"] == "image" and meta["pages"] == 150
    assert meta["fingerprint_version"] == FINGERPRINT_VERSION
    assert meta["format_version"] == 1 and meta["page_size"] == PAGE and meta["time"].endswith("+00:00")
    counts = t.column("count").to_numpy()
    assert counts.sum() + meta["zero_pages"] == meta["pages"] and len(counts) == meta["contents"]
    assert os.path.basename(f["file"]) == "alpha-image-guest0.img.parquet"
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_a_core_leaves_its_zero_pages_out_unless_asked(tmp_path, sources):
    core = sources[-1]
    a = _json("fingerprint", "--core", core, "--output", tmp_path / "a")["files"][0]
    b = _json("fingerprint", "--core", core, "--core-zero-pages", "--output", tmp_path / "b")["files"][0]
    assert a["zero_pages_left_out"] >= 5 and a["zero_pages"] == 0
    assert b["zero_pages"] == a["zero_pages_left_out"] and b["pages"] == a["pages"] + b["zero_pages"]


def test_a_live_process_equals_estimate(tmp_path):
    why = children.nolibc_unavailable()
    if why:
        pytest.skip(why)
    exe = children.build_nolibc(str(tmp_path))
    region = _pages([1, 2, 2, 2, 0, 0, 5] * 20)
    with children.nolibc_child(exe, region) as child:
        fp = _json("fingerprint", "--pid", child.pid, "--output", tmp_path / "fps")
        est = _json("estimate", "--pid", child.pid)
    f = fp["files"][0]
    assert f["kind"] == "pid" and f["source"] == f"pid {child.pid} (nolibc_child)"
    fleet = _json("fleet", tmp_path / "fps", "--threads")
    for got, want in zip(fleet["all_on_one_host"]["runs"], est["runs"]):
        assert {k: got[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}


def test_all_pids_skips_what_it_cannot_read(tmp_path):
    with children.python_child(_pages([1, 2, 3] * 10)) as child:
        r = run_cli("fingerprint", "--all-pids", "--output", tmp_path / "fps", "--json",
                    timeout=600)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
    names = [f["source"] for f in doc["files"]]
    assert any(n.startswith(f"pid {child.pid} ") for n in names)
    # kernel threads have no private anonymous memory: skipped, with the reason
    assert any(s["source"].startswith("pid 2") or "kthreadd" in s["source"] for s in doc["skipped"])
    assert all(s["reason"] for s in doc["skipped"])
    assert len(os.listdir(tmp_path / "fps")) == len(doc["files"])


def test_the_same_source_twice_is_read_once(tmp_path, sources):
    fp = _json("fingerprint", sources[0], sources[1], sources[0], sources[1],
               "--output", tmp_path / "fps")
    assert len(fp["files"]) == 1


def test_bad_sources_are_exit_2(tmp_path):
    assert_usage_error(run_cli("fingerprint", "--output", tmp_path), "at least one source")
    assert_usage_error(run_cli("fingerprint", "--image", tmp_path / "nope", "--output", tmp_path),
                       "nope")
    bad = tmp_path / "odd.img"
    bad.write_bytes(b"x" * 100)
    assert_usage_error(run_cli("fingerprint", "--image", bad, "--output", tmp_path / "o"), "odd.img")
    assert not (tmp_path / "o").exists()


def test_text_report(tmp_path, sources):
    r = run_cli("fingerprint", *sources[:4], "--output", tmp_path / "fps", "--host", "beta")
    assert r.returncode == 0, r.stderr
    assert "2 file(s) in" in r.stdout and "beta-image-guest1.img.parquet" in r.stdout
