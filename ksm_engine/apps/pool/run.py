"""Running a pool scenario: the partitions, the hypervisor and its policy
on one SimClock, with the per-step figures, the checks and a summary.

run_pool(scenario, mode) builds:
  * a cmm.Hypervisor (the CMO firmware, the loan records) whose pool is a
    cmm.pool.SharedPool of ``pool.size_mb`` with a cmm.paging.PagingDevice;
  * one PoolPartition per scenario partition (a Machine with its KSM and
    CMM driver), started at its ``start_s``;
  * the PoolPolicy's thread, a round every ``policy.period_s``;
and then moves the clock to every step time (a multiple of ``step_s``, and
the end) and every event time, in order.  Events at a time run before the
step recorded at that time.  After every step it records the pool's and
every partition's figures and runs the checks of checks.py (nothing lost).

``mode`` overrides every partition's ksm/cmm flags: "ksm+cmm", "cmm"
(balloon only) or "neither"; None keeps the scenario's own.  compare()
runs the three modes.

The result is plain data (dicts, lists, numbers): the CLI renders it.  The
same scenario and mode give the same result every time (the clock is
simulated, the workloads seeded); only ``seconds`` (wall time) differs.
"""
import time

from cmm.hypervisor import H_HARDWARE, Hypervisor
from cmm.paging import PagingDevice
from cmm.pool import PoolPolicy, SharedPool
from ksm_engine import PAGE_SIZE
from ksm_engine.clock import SimClock
from ksm_engine.ksm.sysfs import KnobError

from ..cmm_scenario import errno_name
from .checks import check_pool
from .partition import PoolPartition
from .scenario import MODES

MB_PAGES = (1 << 20) // PAGE_SIZE


class PoolRun:
    """One run in progress: clock, hv, pool, policy, partitions, steps,
    events (what each did), mode, checks (how many check rounds passed)."""

    def __init__(self, scn, mode):
        self.scn = scn
        self.mode = mode
        self.clock = SimClock()
        pool_cfg = scn.pool
        pol = pool_cfg["policy"]
        self.policy = PoolPolicy(period_s=pol["period_s"], high=pol["high_pct"] / 100,
                                 soft=pol["soft_pct"] / 100, hard=pol["hard_pct"] / 100,
                                 tax_rate=pol["idle_tax_pct"] / 100,
                                 idle_window_s=pol["idle_window_s"])
        pg = pool_cfg["paging"]
        self.device = PagingDevice(pg["size_mb"] * MB_PAGES, pg["page_in_us"], pg["page_out_us"])
        self.pool = SharedPool(pool_cfg["size_mb"] * MB_PAGES, self.device, self.clock, self.policy)
        self.policy.pool = self.pool
        self.hv = Hypervisor(pool_size=pool_cfg["size_mb"] << 20,
                             cmo_page_size=pool_cfg["cmo_page_size"])
        self.partitions = []
        for i, spec in enumerate(scn.partitions):
            ksm, cmm = spec["ksm"], spec["cmm"]
            if mode is not None:
                ksm, cmm = "ksm" in mode, "cmm" in mode
            self.partitions.append(PoolPartition(spec, i, self.hv, self.pool, self.clock,
                                                 scn.seed, ksm, cmm))
        self.by_name = {p.name: p for p in self.partitions}
        self.steps = []
        self.events = []
        self.checks = 0
        self._use = 0.0            # integral of pool use (pages * s)
        self._last_t = 0.0

    # -- events -----------------------------------------------------------------
    def apply(self, ev):
        """Run one event; returns "ok" or the errno name of its failure."""
        kind, v = ev["kind"], ev["value"]
        try:
            if kind == "start":
                self.by_name[v].start()
            elif kind == "stop":
                self.by_name[v].stop()
            elif kind == "reboot":
                self.by_name[v].reboot()
            elif kind == "crash":
                p = self.by_name[v]
                p.crash()
                p.start()
            elif kind == "burst":
                self.by_name[v["partition"]].burst(v["mb"], v["s"])
            elif kind == "pool_resize_mb":
                got = self.pool.resize(v * MB_PAGES)
                self.hv.pool_size = got * PAGE_SIZE
                if got != v * MB_PAGES:
                    return f"short {self.pool.shrink_short} pages"
            elif kind == "fail_hcalls":
                self.by_name[v["partition"]].part.fail_page_hcalls(v["after"], v["count"], H_HARDWARE)
            elif kind == "fail_hget_mpp":
                self.by_name[v["partition"]].part.fail_get_mpp(v["count"])
        except KnobError:
            raise               # the scenario's knobs are bad input, not a step's failure
        except OSError as e:
            return errno_name(e)
        return "ok"

    # -- figures -------------------------------------------------------------------
    def record(self):
        t = self.clock.now()
        pool, dev = self.pool, self.device
        self._use += pool.backed_pages * (t - self._last_t)
        self._last_t = t
        self.steps.append({
            "t": t,
            "pool": {"pool_pages": pool.pool_pages, "backed_pages": pool.backed_pages,
                     "free_pages": pool.free_pages, "device_used": dev.used,
                     "page_ins": dev.page_ins, "page_outs": dev.page_outs},
            "partitions": [p.sample() for p in self.partitions],
        })

    def summary(self, seconds):
        scn, dev, pol = self.scn, self.device, self.policy
        last = self.steps[-1]["partitions"] if self.steps else []
        dur = self.clock.now() or 1
        return {
            "mode": self.mode or "scenario",
            "overcommit": round(scn.overcommit, 3),
            "pool_pages": self.pool.pool_pages,
            "pool_page_ins": dev.page_ins,
            "pool_page_outs": dev.page_outs,
            "max_paged_pages": max((s["pool"]["device_used"] for s in self.steps), default=0),
            "time_weighted_pool_use": round(self._use / dur / max(self.pool.pool_pages, 1), 4),
            "guest_oom_calls": sum(p["oom_calls"] for p in last),
            "failed_allocs": sum(p["failed_allocs"] for p in last),
            "stalls": sum(p["stalls"] for p in last),
            "work": {p["name"]: p["work"] for p in last},
            "total_work": sum(p["work"] for p in last),
            "max_loan_target_pages": pol.max_loan_target,
            "loans_released_pages": pol.released,
            "loaned_pages_end": sum(p["loaned_pages"] for p in last),
            "device_refused_pages": dev.refused,
            "checks": self.checks,
            "simulated_seconds": self.clock.now(),
            "seconds": round(seconds, 3),
        }


def _times(scn):
    """Step times: every step_s and the end."""
    out, k = [], 1
    while k * scn.step_s < scn.duration_s:
        out.append(round(k * scn.step_s, 3))
        k += 1
    out.append(scn.duration_s)
    return out


def run_pool(scn, mode=None, check=True, progress=None):
    """Run ``scn`` (a PoolScenario) in ``mode`` (see the module doc).
    Returns {"summary", "steps", "events"}.  ``check``: run the checks
    after every step (PoolCheckError if one fails).  ``progress(t)`` is
    called after every step.  KnobError for a knob a partition's KSM
    refuses."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    t0 = time.perf_counter()
    run = PoolRun(scn, mode)
    clock = run.clock
    policy_k = clock.kthread_run(run.policy.thread(), "pool-policy")
    pending = sorted([{"t": p.spec["start_s"], "kind": "start", "value": p.name, "auto": True}
                      for p in run.partitions if p.spec["start_s"] <= scn.duration_s]
                     + scn.events, key=lambda e: e["t"])
    try:
        for t in _times(scn):
            while pending and pending[0]["t"] <= t:
                ev = pending.pop(0)
                clock.advance(max(0.0, ev["t"] - clock.now()))
                res = run.apply(ev)
                if not ev.get("auto"):
                    run.events.append({"t": clock.now(), "op": ev["kind"],
                                       "arg": ev["value"], "result": res})
            clock.advance(max(0.0, t - clock.now()))
            run.record()
            if check:
                check_pool(run)
                run.checks += 1
            if progress:
                progress(t)
    finally:
        policy_k.stop()
        for p in run.partitions:
            if p.running:
                p._discard(clean=False)     # the run ends: drop everything
    return {"summary": run.summary(time.perf_counter() - t0), "steps": run.steps,
            "events": run.events}


def compare(scn, check=True, progress=None):
    """The scenario in the three modes: {mode: run_pool result}."""
    return {m: run_pool(scn, m, check=check,
                        progress=(lambda t, m=m: progress(m, t)) if progress else None)
            for m in MODES}

