"""Pool scenario files: every mistake is a ScenarioError naming the field
(the CLI's exit 2), the defaults, and the shipped examples parse."""
import copy
import glob
import json
import os

import pytest

from ksm_engine.apps.pool import load_pool_scenario, loads_pool_scenario, parse_pool_scenario
from ksm_engine.apps.scenario_fields import ScenarioError

from .conftest import small_scenario

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bad(mutate, *needles):
    doc = small_scenario(n=2)
    mutate(doc)
    with pytest.raises(ScenarioError) as e:
        parse_pool_scenario(doc)
    for n in needles:
        assert n in e.value.message, e.value.message
    return e.value.message


def test_defaults_are_filled_in():
    doc = {"duration_s": 10, "pool": {"size_mb": 64},
           "partitions": [{"name": "a", "logical_mb": 256,
                           "workload": {"phases": [{"phase": "boot", "s": 5}]}}]}
    s = parse_pool_scenario(doc)
    p = s.partitions[0]
    assert (s.seed, s.step_s, s.events, s.overcommit) == (1, 10, [], 4.0)
    assert s.pool["paging"] == {"size_mb": 4096, "page_in_us": 5000, "page_out_us": 1000}
    assert s.pool["policy"]["high_pct"] == 6 and s.pool["policy"]["idle_tax_pct"] == 75
    assert (p["ksm"], p["cmm"], p["mem_weight"], p["entitled_mb"]) == (True, True, 128, 32)
    assert p["cmm_params"] == {"delay": 1, "min_mem_mb": 64}
    assert p["workload"]["processes"] == 4 and p["workload"]["process_mb"] == 32


@pytest.mark.parametrize("mutate,needles", [
    (lambda d: d.pop("duration_s"), ["missing field 'duration_s'"]),
    (lambda d: d.update(durations=3), ["unknown field 'durations'"]),
    (lambda d: d.update(duration_s=-1), ["duration_s must be >= 0"]),
    (lambda d: d.update(step_s=0), ["step_s must be > 0"]),
    (lambda d: d.update(seed="x"), ["seed must be an integer"]),
    (lambda d: d["pool"].update(size_mb=0), ["pool.size_mb must be 1.."]),
    (lambda d: d["pool"].update(cmo_page_size=1000), ["pool.cmo_page_size must be a power of two"]),
    (lambda d: d["pool"]["paging"].update(page_in_us="fast"), ["pool.paging.page_in_us must be a number"]),
    (lambda d: d["pool"].update(policy={"hard_pct": 9}), ["hard_pct <= soft_pct <= high_pct"]),
    (lambda d: d["pool"].update(policy={"idle_tax_pct": 100}), ["pool.policy.idle_tax_pct must be 0..99"]),
    (lambda d: d.update(partitions=[]), ["partitions must be a list of 1 to"]),
    (lambda d: d["partitions"][1].update(name="p0"), ["partitions[1].name \"p0\" is used twice"]),
    (lambda d: d["partitions"][0].pop("logical_mb"), ["partitions[0] is missing field 'logical_mb'"]),
    (lambda d: d["partitions"][0].update(mem_weight=256), ["partitions[0].mem_weight must be 0..255"]),
    (lambda d: d["partitions"][0].update(ksm="yes"), ["partitions[0].ksm must be true or false"]),
    (lambda d: d["partitions"][0].update(knobs=[1]), ["partitions[0].knobs must be an object"]),
    (lambda d: d["partitions"][0].update(knobs={"run": 1}), ["partitions[0].knobs.run"]),
    (lambda d: d["partitions"][0].update(cmm_params={"delay": -1}), ["partitions[0].cmm_params.delay must be 0.."]),
    (lambda d: d["partitions"][0].update(cmm_params={"bogus": 1}), ["partitions[0].cmm_params has unknown field 'bogus'"]),
    (lambda d: d["partitions"][1]["workload"].update(processes=0), ["partitions[1].workload.processes must be 1..64"]),
    (lambda d: d["partitions"][1]["workload"].update(process_mb=100), ["partitions[1].workload needs 300 MiB"]),
    (lambda d: d["partitions"][1]["workload"].update(shared_pct=95), ["shared_pct + zero_pct must be at most 100"]),
    (lambda d: d["partitions"][1]["workload"]["phases"][1].update(phase="run"),
     ["partitions[1].workload.phases[1].phase must be one of boot, steady, growth, idle"]),
    (lambda d: d["partitions"][1]["workload"]["phases"][0].update(phase="steady"),
     ["partitions[1].workload.phases[0]: the first phase, and only it, is boot"]),
    (lambda d: d["partitions"][1]["workload"]["phases"][1].update(mb=3),
     ["phases[1].mb is for growth phases only"]),
    (lambda d: d["partitions"][1]["workload"].update(phases=[]), ["phases must be a non-empty list"]),
    (lambda d: d.update(events=[{"t": 1, "reboot": "p9"}]), ["events[0].reboot names no partition: \"p9\""]),
    (lambda d: d.update(events=[{"t": 1, "explode": "p0"}]), ["events[0]: unknown event 'explode'"]),
    (lambda d: d.update(events=[{"reboot": "p0"}]), ["events[0] must be an object with \"t\""]),
    (lambda d: d.update(events=[{"t": 1, "burst": {"partition": "p0", "mb": 1}}]),
     ["events[0].burst is missing field 's'"]),
    (lambda d: d.update(events=[{"t": 1, "pool_resize_mb": 0}]), ["events[0].pool_resize_mb must be 1.."]),
    (lambda d: d.update(events=[{"t": 1, "fail_hcalls": {"partition": "p0", "after": -1, "count": 1}}]),
     ["events[0].fail_hcalls.after must be >= 0"]),
])
def test_bad_fields_are_named(mutate, needles):
    bad(mutate, *needles)


def test_not_json_and_files():
    with pytest.raises(ScenarioError, match="not JSON"):
        loads_pool_scenario("{")
    with pytest.raises(ScenarioError, match="must be a JSON object"):
        loads_pool_scenario("[]")
    with pytest.raises(ScenarioError, match="no such file"):
        load_pool_scenario("/nonexistent/pool.json")
    with pytest.raises(ScenarioError, match="is a directory"):
        load_pool_scenario(ROOT)


def test_events_are_sorted_by_time_keeping_their_order():
    doc = small_scenario(n=2, events=[{"t": 9, "stop": "p1"}, {"t": 3, "crash": "p0"},
                                      {"t": 9, "start": "p1"}])
    ev = parse_pool_scenario(doc).events
    assert [(e["t"], e["kind"]) for e in ev] == [(3, "crash"), (9, "stop"), (9, "start")]


def test_the_shipped_examples_parse():
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "pool-*.json")))
    assert len(files) >= 2
    for f in files:
        s = load_pool_scenario(f)
        assert s.partitions
    main = load_pool_scenario(os.path.join(ROOT, "examples", "pool-8x256.json"))
    assert len(main.partitions) == 8 and main.overcommit == 2.0
    assert {p["logical_mb"] for p in main.partitions} == {256}
    assert main.duration_s == 600


def test_the_scenario_is_not_changed_by_parsing():
    doc = small_scenario(n=2)
    before = copy.deepcopy(doc)
    parse_pool_scenario(doc)
    assert json.dumps(doc, sort_keys=True) == json.dumps(before, sort_keys=True)
