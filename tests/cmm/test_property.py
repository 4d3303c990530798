"""Random scenarios (hypothesis), with the hypervisor or in simulate mode
(simulate_loan_target_kb): the invariant holds after every step, and
after every polling round that computed a target the balloon never leaves
the machine below min_mem_mb."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksm_engine.apps.cmm_scenario import parse_scenario, run_scenario

from .conftest import check_counts, check_invariants

RAM_MB = 16
MIN_MEM_MB = 4

target_kb = st.sampled_from([0, 400, 4096, 12288, 14000, 16384, 24576]) | st.integers(0, 24 << 10)

step = st.one_of(
    st.builds(lambda v: {"hv_target_kb": v}, target_kb),
    st.builds(lambda v: {"hv_target_kb": v}, target_kb),
    st.builds(lambda v: {"advance_s": v}, st.sampled_from([0, 0.5, 1, 2, 3, 7])),
    st.builds(lambda v: {"advance_s": v}, st.sampled_from([1, 2])),
    st.just({"oom": True}),
    st.builds(lambda v: {"hotplug": v}, st.sampled_from(
        ["going_offline", "offline", "cancel_offline", "online"])),
    st.builds(lambda a, c: {"fail_hcalls": {"after": a, "count": c}},
              st.integers(0, 50), st.integers(0, 3)),
    st.builds(lambda k: {"fail_hget_mpp": k}, st.integers(0, 3)),
    st.builds(lambda v, a: {"sysfs_write": {"name": "oom_freed_kb", "value": v, "admin": a}},
              st.sampled_from(["0", "1"]), st.booleans()),
    st.builds(lambda v: {"param": {"name": "disable", "value": v}}, st.sampled_from(["0", "1", "2"])),
    st.builds(lambda v: {"param": {"name": "min_mem_mb", "value": v}}, st.integers(0, 20)),
    st.builds(lambda v: {"param": {"name": "oom_kb", "value": v}}, st.integers(0, 8192)),
    st.builds(lambda v: {"allocate_mb": v}, st.integers(0, 6)),
    st.just({"exit_processes": True}),
    st.just({"compact": True}),
    st.just({"reboot": True}),
)
# simulate mode: the target is simulate_loan_target_kb, no hcall is made
sim_step = st.one_of(step, st.builds(lambda v: {"simulate_loan_target_kb": v}, target_kb),
                     st.builds(lambda v: {"simulate_loan_target_kb": v}, target_kb))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=target_kb, data=st.data(), cmo=st.sampled_from([4096, 1024]),
       delay=st.integers(0, 2), hotplug_delay=st.integers(0, 3), simulate=st.booleans())
def test_random_scenarios_keep_the_invariant(first, data, cmo, delay, hotplug_delay, simulate):
    steps = data.draw(st.lists(sim_step if simulate else step, max_size=14))
    start = {"simulate_loan_target_kb": first} if simulate else {"hv_target_kb": first}
    scn = parse_scenario({"ram_mb": RAM_MB, "cmo_page_size": cmo,
                          "params": {"min_mem_mb": MIN_MEM_MB, "delay": delay,
                                     "hotplug_delay": hotplug_delay, "oom_kb": 1024,
                                     "simulate": simulate},
                          "steps": [start] + steps})
    polls = []

    def after_poll(drv, mpp_ok):
        check_counts(drv)
        if mpp_ok:
            min_mem_pages = drv.min_mem_mb * 256
            loaned = drv.loaned_pages.read()
            assert loaned == 0 or drv.machine.totalram_pages >= min_mem_pages
            polls.append(loaned)

    def after_step(run, i):
        check_invariants(run.driver)

    run = run_scenario(scn, after_step=after_step, poll_hook=after_poll)
    drv = run.driver
    run.clock.advance(3)                  # a few more rounds after the last step
    check_invariants(drv)
    drv.unload()
    check_invariants(drv)
    assert drv.loaned_pages.read() == 0
