"""Random pool scenarios: whatever the partitions, phases, knobs, pool and
device sizes and events (faults included), every step passes the checks
(run_pool runs them: Machine.check, pool = backing + free, no page both
loaned and in use, loaned_kb = the hypervisor's record give or take stale
pages, nothing in use without a pool page or a device slot), and the run
repeats exactly."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksm_engine.apps.pool import MODES, parse_pool_scenario, run_pool

PHASE = st.sampled_from(["steady", "growth", "idle"])


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 3))
    names = [f"p{i}" for i in range(n)]
    parts = []
    for name in names:
        procs = draw(st.integers(1, 3))
        pmb = draw(st.integers(1, 3))
        phases = [{"phase": "boot", "s": draw(st.integers(1, 6))}]
        for _ in range(draw(st.integers(0, 3))):
            ph = {"phase": draw(PHASE), "s": draw(st.integers(1, 10))}
            if ph["phase"] == "growth":
                ph["mb"] = draw(st.integers(0, 3))
            phases.append(ph)
        parts.append({
            "name": name, "logical_mb": procs * pmb + draw(st.integers(2, 8)),
            "entitled_mb": draw(st.integers(0, 2)), "mem_weight": draw(st.integers(0, 255)),
            "ksm": draw(st.booleans()), "cmm": draw(st.booleans()),
            "start_s": draw(st.integers(0, 10)),
            "knobs": {"pages_to_scan": draw(st.sampled_from([50, 500, 5000])),
                      "sleep_millisecs": draw(st.sampled_from([10, 100])),
                      "use_zero_pages": draw(st.sampled_from([0, 1]))},
            "cmm_params": {"min_mem_mb": draw(st.integers(0, 4)),
                           "delay": draw(st.integers(0, 2)), "oom_kb": draw(st.sampled_from([4, 1024]))},
            "workload": {"processes": procs, "process_mb": pmb,
                         "shared_pct": draw(st.integers(0, 80)), "zero_pct": draw(st.integers(0, 20)),
                         "hot_pct": draw(st.integers(0, 10)), "sweep_pct": draw(st.integers(0, 10)),
                         "phases": phases}})
    name = st.sampled_from(names)
    event = st.one_of(
        st.builds(lambda k, v: {k: v}, st.sampled_from(["start", "stop", "reboot", "crash"]), name),
        st.builds(lambda p, mb, s: {"burst": {"partition": p, "mb": mb, "s": s}},
                  name, st.integers(1, 3), st.integers(1, 4)),
        st.builds(lambda mb: {"pool_resize_mb": mb}, st.integers(1, 40)),
        st.builds(lambda p, a, c: {"fail_hcalls": {"partition": p, "after": a, "count": c}},
                  name, st.integers(0, 50), st.integers(1, 100)),
        st.builds(lambda p, c: {"fail_hget_mpp": {"partition": p, "count": c}},
                  name, st.integers(1, 5)))
    events = [dict(e, t=draw(st.integers(0, 30))) for e in draw(st.lists(event, max_size=6))]
    return {"seed": draw(st.integers(0, 1000)), "duration_s": draw(st.integers(5, 30)),
            "step_s": 5,
            "pool": {"size_mb": draw(st.integers(4, 40)),
                     "cmo_page_size": draw(st.sampled_from([1024, 4096])),
                     "paging": {"size_mb": draw(st.integers(0, 40)),
                                "page_in_us": draw(st.sampled_from([0, 100, 5000]))}},
            "partitions": parts, "events": events}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=scenarios(), mode=st.sampled_from([None, *MODES]))
def test_random_scenarios_lose_nothing(doc, mode):
    scn = parse_pool_scenario(doc)
    r = run_pool(scn, mode)                  # PoolCheckError if any step loses anything
    steps = len(r["steps"])
    assert r["summary"]["checks"] == steps >= 1
    for s in r["steps"]:
        pool = s["pool"]
        assert pool["free_pages"] >= 0
        assert pool["backed_pages"] == sum(p["backed_pages"] for p in s["partitions"])
        assert pool["device_used"] == sum(p["paged_pages"] for p in s["partitions"])
    again = run_pool(scn, mode)
    for x in (r, again):
        x["summary"].pop("seconds")
    assert json.dumps(r, sort_keys=True) == json.dumps(again, sort_keys=True)
