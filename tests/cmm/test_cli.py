"""`ksm-engine cmm` through a real subprocess: output and exit codes."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTRACT = {"t", "loaned_kb", "loaned_target_kb", "oom_freed_kb", "totalram_kb",
            "hv_loaned_kb", "result"}


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "ksm_engine", "cmm", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def write(tmp_path, doc, name="s.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


SCENARIO = {"ram_mb": 64, "params": {"delay": 1, "min_mem_mb": 16, "oom_kb": 1024},
            "steps": [{"hv_target_kb": 8192}, {"advance_s": 2}, {"oom": True},
                      {"sysfs_write": {"name": "oom_freed_kb", "value": "0"}},
                      {"allocate_mb": 100}]}


def test_json_output(tmp_path):
    r = cli(write(tmp_path, SCENARIO), "--json")
    assert r.returncode == 0, r.stderr
    steps = json.loads(r.stdout)["steps"]
    assert len(steps) == 5
    assert all(CONTRACT <= set(s) for s in steps)
    assert steps[1]["t"] == 2 and steps[1]["loaned_kb"] == 8192
    assert steps[1]["hv_loaned_kb"] == 8192 and steps[1]["totalram_kb"] == 65536 - 8192
    assert steps[2]["oom_freed_kb"] == 1024 and steps[2]["loaned_target_kb"] == 7168
    assert [s["result"] for s in steps] == ["ok", "ok", "ok", "EPERM", "ENOMEM"]


def test_text_output(tmp_path):
    r = cli(write(tmp_path, SCENARIO))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["#", "t", "step", "loaned_kb", "target_kb", "oom_freed_kb",
                                "totalram_kb", "hv_loaned_kb", "result"]
    assert len(lines) == 6
    assert lines[2].split()[:5] == ["1", "2", "advance_s", "2", "8192"]
    assert lines[4].split()[-1] == "EPERM"


@pytest.mark.parametrize("doc,needle", [
    ("{not json", "not JSON"),
    ({"steps": [{"advance_s": 1}, {"warp": 9}]}, "step 1: unknown step 'warp'"),
    ({"steps": [{"advance_s": "soon"}]}, "step 0: advance_s must be a number"),
    ({"steps": [{"sysfs_write": {"value": "0"}}]}, "step 0: sysfs_write is missing field 'name'"),
    ({"ram_mb": 64}, "missing field 'steps'"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_input_exit_2_no_traceback(tmp_path, doc, needle):
    r = cli(write(tmp_path, doc))
    assert r.returncode == 2
    assert needle in r.stderr
    assert r.stderr.startswith("ksm-engine: error:")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_missing_file_exit_2(tmp_path):
    r = cli(tmp_path / "nope.json")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_usage_error_exit_2():
    r = cli("--bogus")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_driver_load_failure_exit_1(tmp_path):
    r = cli(write(tmp_path, {"hv": {"cmo": False}, "steps": [{"advance_s": 1}]}), "--json")
    assert r.returncode == 1
    assert "EOPNOTSUPP" in r.stderr and "Traceback" not in r.stderr


def test_help_has_example():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "ksm_engine", "cmm", "--help"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0
    assert "example:" in r.stdout and "--json" in r.stdout
