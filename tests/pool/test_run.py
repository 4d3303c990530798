"""Running pool scenarios: what KSM and the balloon do together, the
figures, determinism, and the faults (every step checked: nothing lost)."""
import json

import pytest

from ksm_engine.apps.pool import MODES, compare, parse_pool_scenario, run_pool

from .conftest import small_scenario


def run(doc, mode=None):
    return run_pool(parse_pool_scenario(doc), mode)


@pytest.fixture(scope="module")
def three():
    return compare(parse_pool_scenario(small_scenario()))


def test_ksm_and_cmm_avoid_paging_that_the_others_cannot(three):
    a, c, n = (three[m]["summary"] for m in MODES)
    assert a["pool_page_ins"] == a["pool_page_outs"] == 0
    assert a["guest_oom_calls"] == a["failed_allocs"] == a["stalls"] == 0
    assert c["pool_page_outs"] > 0 and c["pool_page_ins"] > 0        # measurable
    assert n["pool_page_outs"] > 1.5 * c["pool_page_outs"]           # heavier
    assert n["pool_page_ins"] > c["pool_page_ins"]
    assert c["loaned_pages_end"] > 0 and n["loaned_pages_end"] == 0  # no balloon, no loans
    assert a["time_weighted_pool_use"] < c["time_weighted_pool_use"] <= n["time_weighted_pool_use"]
    for s in (a, c, n):
        assert s["checks"] == len(three["ksm+cmm"]["steps"]) == 12
        assert s["overcommit"] == 1.6


def test_per_step_figures(three):
    r = three["ksm+cmm"]
    assert [s["t"] for s in r["steps"]] == list(range(5, 61, 5))
    last = r["steps"][-1]
    assert [p["name"] for p in last["partitions"]] == ["p0", "p1", "p2", "p3"]
    for p in last["partitions"]:
        assert p["running"] and p["pages_sharing"] > 0 and p["pages_shared"] > 0
        assert p["work"] > 0
        assert {"loaned_pages", "free_pages", "paged_pages", "page_ins", "oom_calls",
                "failed_allocs"} <= set(p)
    pool = last["pool"]
    assert pool["pool_pages"] == pool["backed_pages"] + pool["free_pages"] == 60 * 256
    # CMM only: the hypervisor's record and the balloons agree, and some
    # partition pages to the device
    c = three["cmm"]["steps"][-1]
    assert sum(p["hv_loaned_pages"] for p in c["partitions"]) == \
        sum(p["loaned_pages"] for p in c["partitions"]) > 0
    assert max(s["pool"]["device_used"] for s in three["neither"]["steps"]) > 0


def test_paging_costs_work(three):
    a, n = three["ksm+cmm"]["summary"], three["neither"]["summary"]
    assert all(w > 0 for w in a["work"].values())
    # a partition that pages spends simulated time on it: page-ins cost
    # 2 ms each here, and the stall shows in the per-step figures
    stalled = [p for p in three["neither"]["steps"][-1]["partitions"] if p["page_ins"]]
    assert stalled and all(p["stall_ms"] >= p["page_ins"] * 2.0 for p in stalled)
    assert n["total_work"] <= a["total_work"]


def test_same_seed_same_json():
    doc = small_scenario(n=2, duration_s=30)
    for mode in ("ksm+cmm", "cmm"):
        a, b = run(doc, mode), run(doc, mode)
        for r in (a, b):
            r["summary"].pop("seconds")
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_the_seed_makes_the_content():
    """The seed picks the bytes (the figures depend only on the layout):
    the same seed and partition give the same memory, another seed or
    partition other memory."""
    from ksm_engine import Machine
    from ksm_engine.apps.pool.workload import Workload

    spec = parse_pool_scenario(small_scenario(n=1)).partitions[0]["workload"]

    def image(seed, index):
        w = Workload(Machine(ram="24MiB"), spec, True, seed, index, {})
        return w._image, bytes(w._rows[0])
    assert image(11, 0) == image(11, 0)
    assert image(11, 0)[0] != image(12, 0)[0] and image(11, 0)[0] != image(11, 1)[0]


def test_faults_leave_nothing_unaccounted():
    doc = small_scenario(duration_s=80, events=[
        {"t": 8, "fail_hcalls": {"partition": "p0", "after": 5, "count": 40}},
        {"t": 9, "fail_hget_mpp": {"partition": "p1", "count": 3}},
        {"t": 12, "crash": "p2"},
        {"t": 22, "reboot": "p0"},
        {"t": 25, "burst": {"partition": "p1", "mb": 4, "s": 4}},
        {"t": 30, "pool_resize_mb": 8},             # below the entitlements (4 x 2 MiB) and use
        {"t": 35, "pool_resize_mb": 60},
        {"t": 40, "stop": "p3"},
        {"t": 50, "start": "p3"},
        {"t": 55, "burst": {"partition": "p3", "mb": 2, "s": 2}},
    ])
    doc["pool"]["paging"]["size_mb"] = 16           # fills during the shrink
    r = run(doc, "ksm+cmm")
    ev = {e["op"] + str(e["t"]): e["result"] for e in r["events"]}
    assert ev["crash12"] == ev["reboot22"] == ev["stop40"] == ev["start50"] == "ok"
    assert ev["pool_resize_mb30"].startswith("short ")        # the device filled
    assert ev["pool_resize_mb35"] == "ok"
    s = r["summary"]
    assert s["checks"] == 16 and s["device_refused_pages"] > 0
    st = {(x["t"], p["name"]): p for x in r["steps"] for p in x["partitions"]}
    assert not st[(45, "p3")]["running"] and st[(45, "p3")]["backed_pages"] == 0
    assert st[(55, "p3")]["running"]
    assert r["steps"][-1]["pool"]["pool_pages"] == 60 * 256


def test_a_stopped_partition_gives_everything_back():
    doc = small_scenario(n=2, duration_s=20, events=[{"t": 10, "stop": "p1"}])
    r = run(doc, "cmm")
    after = r["steps"][-1]
    p1 = after["partitions"][1]
    assert not p1["running"] and p1["hv_loaned_pages"] == 0
    assert after["pool"]["backed_pages"] == after["partitions"][0]["backed_pages"]


def test_a_full_paging_device_stalls_the_partition_not_the_accounts():
    doc = small_scenario(n=4, pool_mb=40)
    doc["pool"]["paging"]["size_mb"] = 1
    r = run(doc, "neither")
    s = r["summary"]
    assert s["stalls"] > 0 and s["device_refused_pages"] > 0
    assert max(x["pool"]["device_used"] for x in r["steps"]) <= 256
    assert s["checks"] == 12
