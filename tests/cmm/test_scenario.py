"""Scenario validation and running (ksm_engine.apps.cmm_scenario), no CLI."""
import json

import pytest

from ksm_engine.apps.cmm_scenario import ScenarioError, load_scenario, loads_scenario, parse_scenario, run_scenario

from .conftest import check_invariants

BASE = {"ram_mb": 64, "params": {"min_mem_mb": 16}}


def scn(*steps, **top):
    d = dict(BASE, steps=list(steps))
    d.update(top)
    return parse_scenario(d)


def run(*steps, **top):
    r = run_scenario(scn(*steps, **top), after_step=lambda run, i: check_invariants(run.driver))
    return r


def test_a_scenario_of_every_kind_of_step_runs():
    r = run({"hv_target_kb": 8192}, {"advance_s": 3}, {"oom": True},
            {"hotplug": "going_offline"}, {"hotplug": "offline"},
            {"fail_hcalls": {"after": 10, "count": 1}}, {"fail_hget_mpp": 2},
            {"sysfs_write": {"name": "oom_freed_kb", "value": "0", "admin": True}},
            {"param": {"name": "disable", "value": "1"}},
            {"simulate_loan_target_kb": 4096},
            {"allocate_mb": 10}, {"compact": True}, {"reboot": True})
    s = r.steps
    assert [x["result"] for x in s] == ["ok"] * 9 + ["ENOENT"] + ["ok"] * 3
    assert s[1] == {"index": 1, "op": "advance_s", "arg": "3", "t": 3, "loaned_kb": 8192,
                    "loaned_target_kb": 8192, "oom_freed_kb": 0,
                    "totalram_kb": 65536 - 8192, "hv_loaned_kb": 8192, "result": "ok"}
    assert s[2]["loaned_kb"] == 7168 and s[2]["oom_freed_kb"] == 1024
    assert s[7]["oom_freed_kb"] == 0
    assert s[8]["loaned_kb"] == 0 and s[8]["totalram_kb"] == 65536


def test_thread_wakes_at_delay_and_hotplug_costs_hotplug_delay():
    r = run({"hv_target_kb": 4096}, {"advance_s": 1.5}, {"hv_target_kb": 8192},
            {"hotplug": "going_offline"}, {"advance_s": 1}, {"hotplug": "offline"},
            {"advance_s": 1}, {"advance_s": 5}, {"advance_s": 1},
            params={"min_mem_mb": 16, "delay": 1, "hotplug_delay": 5})
    loaned = [(x["t"], x["loaned_kb"]) for x in r.steps]
    assert loaned == [(0, 0), (1.5, 4096), (1.5, 4096), (1.5, 4096), (2.5, 4096),
                      (2.5, 4096), (3.5, 4096), (8.5, 4096), (9.5, 8192)]


def test_runs_are_deterministic():
    steps = [{"hv_target_kb": 20000}, {"advance_s": 2}, {"allocate_mb": 40}, {"oom": True},
             {"advance_s": 3}, {"compact": True}, {"hv_target_kb": 100}, {"advance_s": 1}]
    a = run(*steps).steps
    b = run(*steps).steps
    assert a == b


def test_allocate_out_of_frames_is_enomem_after_oom_notifier():
    r = run({"hv_target_kb": 40960}, {"advance_s": 1}, {"allocate_mb": 70},
            params={"min_mem_mb": 16, "oom_kb": 4096})
    last = r.steps[-1]
    assert last["result"] == "ENOMEM"
    assert last["oom_freed_kb"] == 40960           # the notifier gave back everything
    assert last["loaned_kb"] == 0 and last["totalram_kb"] == 65536


def test_allocate_succeeds_thanks_to_oom_notifier():
    r = run({"hv_target_kb": 40960}, {"advance_s": 1}, {"allocate_mb": 26},
            {"exit_processes": True}, params={"min_mem_mb": 16, "oom_kb": 4096})
    assert [x["result"] for x in r.steps] == ["ok"] * 4
    assert r.steps[2]["oom_freed_kb"] == 4096
    assert r.machine.used_pages == 0


def test_simulate_scenario_and_sysfs_results():
    r = run({"simulate_loan_target_kb": 4096}, {"advance_s": 1},
            {"sysfs_write": {"name": "oom_freed_kb", "value": "0"}},
            {"sysfs_write": {"name": "oom_freed_kb", "value": "3", "admin": True}},
            {"sysfs_write": {"name": "loaned_kb", "value": "3", "admin": True}},
            {"param": {"name": "simulate", "value": "0"}},
            {"param": {"name": "disable", "value": 2}},
            {"param": {"name": "delay", "value": "x"}},
            params={"min_mem_mb": 16, "simulate": True})
    assert [x["result"] for x in r.steps] == ["ok", "ok", "EPERM", "EBADMSG", "EACCES",
                                               "EACCES", "EINVAL", "EINVAL"]
    assert r.steps[1]["loaned_kb"] == 4096 and r.steps[1]["hv_loaned_kb"] == 0


def test_compact_ebusy_and_hotplug_misuse_results():
    r = run({"hv_target_kb": 400}, {"advance_s": 1}, {"fail_hcalls": {"after": 0, "count": 1}},
            {"compact": True}, {"hotplug": "offline"}, {"hotplug": "going_offline"},
            {"hotplug": "going_offline"}, {"hotplug": "cancel_offline"})
    assert [x["result"] for x in r.steps] == ["ok", "ok", "ok", "EBUSY", "EINVAL", "ok",
                                               "EDEADLK", "ok"]
    assert r.driver.vmstat()["balloon_migrate"] == 99


def test_reboot_variants():
    r = run({"hv_target_kb": 400}, {"advance_s": 1}, {"reboot": "halt"}, {"reboot": True},
            {"advance_s": 5})
    assert [x["loaned_kb"] for x in r.steps] == [0, 400, 400, 0, 0]


def test_small_cmo_pages_and_failures():
    r = run({"hv_target_kb": 400}, {"fail_hcalls": {"after": 6, "count": 1}}, {"advance_s": 1},
            {"advance_s": 1}, cmo_page_size=1024)
    assert r.steps[2]["loaned_kb"] == 4                 # 1 page, then the 2nd's 3rd call failed
    assert r.steps[3]["loaned_kb"] == 400
    assert r.driver.partition.calls["failed_page_init"] == 1


def test_driver_load_failure_raises():
    with pytest.raises(OSError):
        run({"advance_s": 1}, hv={"cmo": False})


def test_hv_options_and_version():
    r = run({"advance_s": 1}, hv={"pool_mb": 1024, "entitled_mb": 32, "mem_weight": 7},
            params={"min_mem_mb": 16, "version": "000", "compaction": False})
    p = r.driver.partition
    assert p.mem_weight == 7 and p.entitled_mem == 32 << 20 and r.hv.pool_size == 1 << 30
    assert r.driver.version == "000"


@pytest.mark.parametrize("doc,msg", [
    ([], "must be a JSON object"),
    ({}, "missing field 'steps'"),
    ({"steps": {}}, "steps must be a list"),
    ({"steps": [], "bogus": 1}, "unknown field 'bogus'"),
    ({"steps": [], "ram_mb": "1"}, "ram_mb must be an integer"),
    ({"steps": [], "ram_mb": 0}, "ram_mb must be"),
    ({"steps": [], "cmo_page_size": 3000}, "power of two"),
    ({"steps": [], "cmo_page_size": 8192}, "cmo_page_size must be 256..4096"),
    ({"steps": [], "params": {"delay": -1}}, "params.delay must be"),
    ({"steps": [], "params": {"delay": True}}, "params.delay must be an integer"),
    ({"steps": [], "params": {"simulate": 1}}, "params.simulate must be true or false"),
    ({"steps": [], "params": {"nope": 1}}, "unknown field 'nope'"),
    ({"steps": [], "params": {"disable": 2}}, "params.disable must be 0..1"),
    ({"steps": [], "params": {"version": "001"}}, "params.version"),
    ({"steps": [], "hv": {"mem_weight": 300}}, "hv.mem_weight"),
    ({"steps": [{"advance_s": 1}, {"jump": 1}]}, "step 1: unknown step 'jump'"),
    ({"steps": [{"advance_s": -1}]}, "step 0: advance_s must be >= 0"),
    ({"steps": [{"advance_s": "1"}]}, "step 0: advance_s must be a number"),
    ({"steps": [{"advance_s": 1, "oom": True}]}, "step 0: must have exactly one key"),
    ({"steps": [{}]}, "step 0: must have exactly one key"),
    ({"steps": [7]}, "step 0: must be an object"),
    ({"steps": [{"hv_target_kb": 1.5}]}, "step 0: hv_target_kb must be an integer"),
    ({"steps": [{"oom": False}]}, "step 0: oom must be true"),
    ({"steps": [{"hotplug": "sideways"}]}, "step 0: hotplug must be one of"),
    ({"steps": [{"fail_hcalls": {"after": 1}}]}, "step 0: fail_hcalls is missing field 'count'"),
    ({"steps": [{"fail_hcalls": {"after": 1, "count": "2"}}]}, "fail_hcalls.count must be an integer"),
    ({"steps": [{"fail_hcalls": {"after": 1, "count": 2, "x": 0}}]}, "unknown field 'x'"),
    ({"steps": [{"fail_hcalls": 3}]}, "fail_hcalls must be an object"),
    ({"steps": [{"fail_hget_mpp": -2}]}, "fail_hget_mpp must be >= 0"),
    ({"steps": [{"sysfs_write": {"name": "oom_freed_kb"}}]}, "missing field 'value'"),
    ({"steps": [{"sysfs_write": {"name": "x", "value": "0"}}]}, "sysfs_write.name must be one of"),
    ({"steps": [{"sysfs_write": {"name": "oom_freed_kb", "value": 0}}]}, "value must be a string"),
    ({"steps": [{"sysfs_write": {"name": "oom_freed_kb", "value": "0", "admin": 1}}]},
     "admin must be true or false"),
    ({"steps": [{"param": {"name": "speed", "value": "1"}}]}, "param.name must be one of"),
    ({"steps": [{"param": {"name": "delay", "value": 1.5}}]}, "param.value must be a string or an integer"),
    ({"steps": [{"simulate_loan_target_kb": -1}]}, "must be >= 0"),
    ({"steps": [{"allocate_mb": None}]}, "allocate_mb must be a number"),
    ({"steps": [{"reboot": "now"}]}, "reboot must be true or one of"),
])
def test_validation_errors(doc, msg):
    with pytest.raises(ScenarioError) as e:
        parse_scenario(doc)
    assert msg in e.value.message


def test_error_names_the_step_index():
    with pytest.raises(ScenarioError) as e:
        parse_scenario({"steps": [{"advance_s": 1}, {"advance_s": 1}, {"oom": "yes"}]})
    assert e.value.step == 2 and e.value.message.startswith("step 2:")


def test_load_errors(tmp_path):
    with pytest.raises(ScenarioError) as e:
        load_scenario(tmp_path / "missing.json")
    assert "no such file" in e.value.message
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": [}')
    with pytest.raises(ScenarioError) as e:
        load_scenario(bad)
    assert "not JSON" in e.value.message and "line 1" in e.value.message
    with pytest.raises(ScenarioError):
        load_scenario(tmp_path)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"steps": [{"advance_s": 1}]}))
    assert load_scenario(good).steps == [("advance_s", 1)]
    assert loads_scenario('{"steps": []}').steps == []
