"""`ksm-engine pool`: the command end to end (a small scenario), its JSON,
--compare, --plot, and exit 2 naming the field for bad scenario files."""
import json

import pytest

from ksm_engine.cli.main import main

from ..pool.conftest import small_scenario
from .conftest import assert_usage_error, run_cli
from .test_plot import HIDE_MATPLOTLIB


@pytest.fixture
def scn(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(small_scenario(n=2, duration_s=20,
                                              events=[{"t": 12, "reboot": "p1"}])))
    return path


def test_json_has_steps_summary_and_events(scn):
    r = run_cli("pool", scn, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scenario"] == {"description": "", "seed": 11, "overcommit": 1.6}
    assert [s["t"] for s in doc["steps"]] == [5, 10, 15, 20]
    assert doc["events"] == [{"t": 12, "op": "reboot", "arg": "p1", "result": "ok"}]
    assert doc["summary"]["checks"] == 4 and doc["summary"]["mode"] == "scenario"
    step = doc["steps"][-1]
    assert set(step["pool"]) >= {"pool_pages", "backed_pages", "free_pages", "device_used", "page_ins"}
    assert set(step["partitions"][0]) >= {"loaned_pages", "pages_shared", "pages_sharing",
                                          "free_pages", "paged_pages", "page_ins", "oom_calls",
                                          "failed_allocs", "work"}


def test_compare_prints_the_three_side_by_side(scn):
    r = run_cli("pool", scn, "--compare")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "summary (side by side)"
    assert lines[1].split() == ["ksm+cmm", "cmm", "neither"]
    assert any(line.split()[:1] == ["pool_page_ins"] and len(line.split()) == 4 for line in lines)
    assert "work per partition" in r.stdout
    r = run_cli("pool", scn, "--compare", "--json")
    doc = json.loads(r.stdout)
    assert list(doc["runs"]) == ["ksm+cmm", "cmm", "neither"]
    assert all(doc["runs"][m]["summary"]["mode"] == m for m in doc["runs"])


def test_text_shows_each_step_and_the_summary(scn, capsys):
    assert main(["pool", str(scn)]) == 0
    out = capsys.readouterr().out
    assert out.count("pool: backed") == 4 and "summary" in out and "events" in out
    assert "pages_sharing" in out and "paged_pages" in out


def test_plot(scn, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pool.png"
    r = run_cli("pool", scn, "--compare", "--plot", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plot"] == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_plot_without_matplotlib_is_a_usage_error(scn, tmp_path):
    r = run_cli("pool", scn, "--plot", tmp_path / "p.png", prelude=HIDE_MATPLOTLIB)
    assert_usage_error(r, "matplotlib", "pip install")


@pytest.mark.parametrize("doc,needle", [
    ("{", "not JSON"),
    (json.dumps({"pool": {"size_mb": 8}, "duration_s": 5}), "missing field 'partitions'"),
    (json.dumps(small_scenario(n=1, events=[{"t": 1, "crash": "nope"}])),
     "events[0].crash names no partition"),
])
def test_bad_scenarios_exit_2_naming_the_field(tmp_path, capsys, doc, needle):
    path = tmp_path / "bad.json"
    path.write_text(doc)
    assert main(["pool", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ksm-engine: error: ") and needle in err


def test_a_missing_file_and_a_refused_knob(tmp_path, capsys):
    assert main(["pool", str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    doc = small_scenario(n=1, duration_s=5)
    doc["partitions"][0]["knobs"] = {"max_page_sharing": "1"}
    path = tmp_path / "knob.json"
    path.write_text(json.dumps(doc))
    r = run_cli("pool", path)
    assert_usage_error(r, "max_page_sharing")
