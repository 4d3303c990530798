"""`ksm-engine fleet` end to end (python -m ksm_engine in a subprocess) on
fingerprint files written from numpy: every report against figures
computed from the content ids alone; bad files and arguments."""
import json
import shutil

import numpy as np
import pytest

from ksm_engine.ksm.settled import ContentSummary, settled_counters

from ..cli.conftest import assert_usage_error, run_cli
from .conftest import write_source

PAGE = 4096
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "general_profit")


def _expected_runs(id_arrays, mps=256):
    ids = np.concatenate(id_arrays)
    _, c = np.unique(ids[ids != 0], return_counts=True)
    s = ContentSummary(pages=len(ids), zero_pages=int((ids == 0).sum()), copies=c)
    return [settled_counters(s, max_page_sharing=mps, use_zero_pages=z) for z in (False, True)]


def _fleet_json(*args, **kw):
    r = run_cli("fleet", *args, "--json", "--threads", **kw)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""          # no Dask warning or log line leaks out
    return json.loads(r.stdout)


def test_every_report_matches_the_ids(tmp_path, small_fleet):
    fleet, paths = small_fleet
    doc = _fleet_json(tmp_path / "fps", "--set", "max_page_sharing=4")
    names = [n for n, _, _ in fleet]
    assert [s["name"] for s in doc["sources"]] == names
    # 1. all on one host == the count model on every page's content
    for run, want in zip(doc["all_on_one_host"]["runs"], _expected_runs([i for _, _, i in fleet], 4)):
        assert {k: run[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}
        assert run["saving_pages"] == want["pages_sharing"] + want["ksm_zero_pages"]
    # 2. as placed today: each file's host
    hosts = doc["placed_today"]["hosts"]
    assert doc["placed_today"]["placement_from"] == "metadata"
    for h in hosts:
        mine = [ids for n, host, ids in fleet if host == h["host"]]
        assert h["sources"] == [n for n, host, _ in fleet if host == h["host"]]
        for run, want in zip(h["runs"], _expected_runs(mine, 4)):
            assert {k: run[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}
    total = doc["placed_today"]["total"]["runs"][0]
    assert total["pages_sharing"] == sum(h["runs"][0]["pages_sharing"] for h in hosts)
    # 3. the sharing matrix: distinct non-zero contents both hold
    sets = [set(ids[ids != 0].tolist()) for _, _, ids in fleet]
    m = doc["sharing"]["matrix"]
    for a in range(len(fleet)):
        for b in range(len(fleet)):
            assert m[a][b] == len(sets[a] & sets[b])
    top = doc["sharing"]["top_pairs"][0]
    assert top["contents"] == max(m[a][b] for a in range(5) for b in range(5) if a != b)
    # 4. the histogram: buckets of copies
    ids = np.concatenate([i for _, _, i in fleet])
    _, c = np.unique(ids[ids != 0], return_counts=True)
    h = doc["histogram"]
    assert sum(b["contents"] for b in h["buckets"]) == len(c) == doc["contents"]
    assert sum(b["pages"] for b in h["buckets"]) == int(c.sum())
    one = [b for b in h["buckets"] if b["copies"] == "1"]
    assert (one[0]["contents"] if one else 0) == int((c == 1).sum())
    b34 = [b for b in h["buckets"] if b["copies"] == "3-4"]
    assert b34[0]["pages"] == int(c[(c >= 3) & (c <= 4)].sum())
    assert h["zero"]["pages"] == int((ids == 0).sum())
    assert h["total"]["kept_pages"] == len(ids) - doc["all_on_one_host"]["runs"][0]["saving_pages"]


def test_text_report_and_placement_csv(tmp_path, small_fleet):
    fleet, paths = small_fleet
    csv = tmp_path / "today.csv"
    csv.write_text("source,host\n# all on two hosts\n" +
                   "".join(f"{n},{'x' if i < 2 else 'y'}\n" for i, (n, _, _) in enumerate(fleet)))
    r = run_cli("fleet", *paths, "--placement", csv, "--threads")
    assert r.returncode == 0, r.stderr
    for needle in ("1. All on one host", "2. As placed today (from the --placement CSV)",
                   "3. Sharing between sources", "4. Simulated KSM histogram", "dedup ="):
        assert needle in r.stdout
    doc = _fleet_json(*paths, "--placement", csv)
    assert [h["host"] for h in doc["placed_today"]["hosts"]] == ["x", "y"]
    x = doc["placed_today"]["hosts"][0]["runs"][0]
    want = _expected_runs([fleet[0][2], fleet[1][2]])[0]
    assert x["pages_sharing"] == want["pages_sharing"]


def test_placement_fits_and_beats_random_plot_and_a_file_named_twice(tmp_path, small_fleet):
    # one run for three things: placement, the heatmap, the same file read once
    pytest.importorskip("matplotlib")
    fleet, paths = small_fleet
    pages = sum(len(i) for _, _, i in fleet)
    ram = (pages // 2) * PAGE
    out = tmp_path / "sharing.png"
    doc = _fleet_json(paths[0], tmp_path / "fps", paths[0], "--hosts", "3", "--host-ram", str(ram),
                      "--plot", out)
    assert len(doc["sources"]) == len(fleet) and doc["pages"] == pages
    p = doc["placement"]
    assert p["feasible"] and p["plans"]["search"]["fits"]
    for h in p["plans"]["search"]["hosts"]:
        assert h["memory_after_pages"] * PAGE <= ram
    assert p["plans"]["search"]["saving_pages"] >= p["plans"]["random"]["saving_pages"]
    assert p["plans"]["search"]["saving_pages"] >= p["plans"]["today"]["saving_pages"]
    assert set(p["plans"]["search"]["assignment"]) == {n for n, _, _ in fleet}
    assert doc["plot"] == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_placement_that_cannot_fit_is_exit_1_saying_by_how_much(small_fleet):
    fleet, paths = small_fleet
    r = run_cli("fleet", *paths, "--hosts", "2", "--host-ram", "64KiB", "--threads")
    assert r.returncode == 1, r.stderr
    assert "no placement on 2 hosts of 64.0 KiB fits" in r.stderr
    assert "more" in r.stderr and "Traceback" not in r.stderr
    assert "5. Placement" in r.stdout


def test_the_same_source_in_two_files_is_refused(tmp_path, small_fleet):
    fleet, paths = small_fleet
    copy = tmp_path / "copy.parquet"
    shutil.copy(paths[1], copy)
    r = run_cli("fleet", tmp_path / "fps", copy)
    assert_usage_error(r, "the same source twice", str(copy), "src1")


def _bad_files(tmp_path, good):
    data = open(good, "rb").read()
    (tmp_path / "bad").mkdir()
    out = {}
    out["not Parquet"] = tmp_path / "bad" / "text.parquet"
    out["not Parquet"].write_text("source,host\n")
    out["truncated"] = tmp_path / "bad" / "trunc.parquet"
    out["truncated"].write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[200] ^= 0xFF                 # inside the first data page
    out["corrupt"] = tmp_path / "bad" / "corrupt.parquet"
    out["corrupt"].write_bytes(bytes(corrupt))
    return out


@pytest.mark.parametrize("kind", ["not Parquet", "truncated", "corrupt"])
def test_bad_files_are_exit_2_naming_the_file(tmp_path, small_fleet, kind):
    fleet, paths = small_fleet
    bad = _bad_files(tmp_path, paths[0])[kind]
    r = run_cli("fleet", paths[1], bad, "--threads")
    assert_usage_error(r, str(bad))


def test_a_newer_format_version_is_refused(tmp_path, monkeypatch):
    from ksm_engine.apps.fleet import fpfile
    monkeypatch.setattr(fpfile, "FORMAT_VERSION", fpfile.FORMAT_VERSION + 1)
    p = write_source(tmp_path / "new.parquet", np.arange(10), name="n", host="h")
    r = run_cli("fleet", p)
    assert_usage_error(r, str(p), "newer ksm-engine", "upgrade")


def test_mixed_fingerprint_versions_are_refused(tmp_path):
    a = write_source(tmp_path / "a.parquet", np.arange(10), name="a", host="h", version="v1")
    b = write_source(tmp_path / "b.parquet", np.arange(10), name="b", host="h", version="v2")
    assert_usage_error(run_cli("fleet", a, b), str(b), "cannot be compared")


def test_metadata_that_lies_is_exit_2(tmp_path):
    import pyarrow.parquet as pq
    p = write_source(tmp_path / "a.parquet", np.arange(1, 50), name="a", host="h")
    t = pq.read_table(p)
    meta = json.loads(t.schema.metadata[b"ksm_engine.fingerprint"])
    meta["pages"] += 5
    meta["zero_pages"] += 0
    pq.write_table(t.replace_schema_metadata({b"ksm_engine.fingerprint": json.dumps(meta)}), p)
    r = run_cli("fleet", p, "--threads")
    assert_usage_error(r, str(p), "do not match its metadata")


@pytest.mark.parametrize("args,needles", [
    (["--hosts", "2"], ["--hosts and --host-ram go together"]),
    (["--hosts", "0", "--host-ram", "1G"], ["--hosts must be at least 1"]),
    (["--set", "max_page_sharing=1"], ["max_page_sharing", "EINVAL"]),
    (["--set", "sleep_millisecs=5"], ["sleep_millisecs", "does not change"]),
    (["--placement", "/nonexistent.csv"], ["/nonexistent.csv"]),
])
def test_bad_arguments_are_exit_2(small_fleet, args, needles):
    fleet, paths = small_fleet
    assert_usage_error(run_cli("fleet", *paths, *args), *needles)


def test_bad_placement_csv(tmp_path, small_fleet):
    fleet, paths = small_fleet
    csv = tmp_path / "p.csv"
    csv.write_text("src0,a\nnosuch,b\n")
    assert_usage_error(run_cli("fleet", *paths, "--placement", csv), "no source 'nosuch'")
    csv.write_text("src0,a\n")
    assert_usage_error(run_cli("fleet", *paths, "--placement", csv), "no host for src1")


def test_missing_paths_and_empty_directories(tmp_path):
    assert_usage_error(run_cli("fleet", tmp_path / "nope"), "no such file or directory")
    (tmp_path / "empty").mkdir()
    assert_usage_error(run_cli("fleet", tmp_path / "empty"), "without *.parquet files")


HIDE_DASK = """
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed", "pyarrow"):
            raise ImportError("No module named " + repr(name))
        return None
sys.meta_path.insert(0, _Hide())
"""


@pytest.mark.parametrize("command", [["fleet", "x.parquet"], ["fingerprint", "--image", "x", "--output", "d"]])
def test_without_the_extra_exit_2_with_the_hint(command):
    r = run_cli(*command, prelude=HIDE_DASK)
    assert_usage_error(r, "needs dask, distributed and pyarrow", "pip install 'ksm-engine[fleet]'")


def test_a_local_cluster_of_processes_gives_the_same_result(tmp_path, small_fleet):
    fleet, paths = small_fleet
    r = run_cli("fleet", *paths, "--json", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["cluster"] == {"scheduler": "local", "processes": True, "workers": 2}
    for run, want in zip(doc["all_on_one_host"]["runs"], _expected_runs([i for _, _, i in fleet])):
        assert {k: run[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}
