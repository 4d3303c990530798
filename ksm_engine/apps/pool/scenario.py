"""Pool scenarios: the JSON schema (docs/pool.md) and its validation.

parse_pool_scenario(obj) checks a decoded scenario and returns a
PoolScenario with every default filled in; load_pool_scenario(path) reads
the file first.  Errors are ScenarioError (ksm_engine.apps.scenario_fields,
the checks ``ksm-engine cmm`` uses) naming the field, e.g.
"scenario: partitions[1].workload.phases[0].phase must be one of boot,
steady, growth, idle, not \\"run\\"" or "scenario: events[2].reboot names
no partition: \\"db9\\"".
"""
import json
from dataclasses import dataclass

from ..cmm_scenario import check_params
from ..scenario_fields import (ScenarioError, bool_field, decode_scenario_json, int_field,
                               num_field, obj_field, read_scenario_json, str_or_int_field)

PHASES = ("boot", "steady", "growth", "idle")
EVENT_KINDS = ("start", "stop", "reboot", "crash", "burst", "pool_resize_mb",
               "fail_hcalls", "fail_hget_mpp")
MODES = ("ksm+cmm", "cmm", "neither")
MAX_PARTITIONS = 64
MAX_DURATION_S = 86_400
MAX_MB = 1 << 20

POOL_DEFAULTS = {"cmo_page_size": 4096}
PAGING_DEFAULTS = {"size_mb": 4096, "page_in_us": 5000, "page_out_us": 1000}
POLICY_DEFAULTS = {"period_s": 1, "high_pct": 6, "soft_pct": 4, "hard_pct": 2,
                   "idle_tax_pct": 75, "idle_window_s": 30}
WORKLOAD_DEFAULTS = {"processes": 4, "process_mb": 32, "shared_pct": 50, "zero_pct": 10,
                     "hot_pct": 1, "sweep_pct": 1, "tick_s": 1}
PARTITION_DEFAULTS = {"entitled_mb": 32, "mem_weight": 128, "ksm": True, "cmm": True,
                      "start_s": 0}
CMM_DEFAULTS = {"delay": 1, "min_mem_mb": 64}


@dataclass
class PoolScenario:
    """A validated scenario (every default filled in)."""
    description: str
    seed: int
    duration_s: float
    step_s: float
    pool: dict          # size_mb, cmo_page_size, paging {...}, policy {...}
    partitions: list    # dicts: name, logical_mb, entitled_mb, mem_weight, ksm, cmm,
                        # knobs, cmm_params, start_s, workload {... phases}
    events: list        # dicts: t, kind, value (sorted by t, stable)

    @property
    def overcommit(self):
        """Sum of the partitions' logical memory over the pool."""
        return sum(p["logical_mb"] for p in self.partitions) / self.pool["size_mb"]


def _pos(v, what):
    v = num_field(v, what)
    if v <= 0:
        raise ScenarioError(f"scenario: {what} must be > 0, not {v}")
    return v


def _pct(v, what):
    return int_field(v, what, None, 0, 100)


def _defaults(obj, what, defaults, required=(), extra=()):
    obj_field(obj, what, None, required, tuple(defaults) + tuple(extra))
    out = dict(defaults)
    out.update(obj)
    return out


def _pool(obj):
    p = _defaults(obj, "pool", dict(POOL_DEFAULTS, paging={}, policy={}), ("size_mb",))
    p["size_mb"] = int_field(p["size_mb"], "pool.size_mb", None, 1, MAX_MB)
    cps = int_field(p["cmo_page_size"], "pool.cmo_page_size", None, 256, 4096)
    if cps & (cps - 1):
        raise ScenarioError(f"scenario: pool.cmo_page_size must be a power of two, not {cps}")
    pg = _defaults(p["paging"], "pool.paging", PAGING_DEFAULTS)
    pg["size_mb"] = int_field(pg["size_mb"], "pool.paging.size_mb", None, 0, MAX_MB)
    for k in ("page_in_us", "page_out_us"):
        pg[k] = num_field(pg[k], f"pool.paging.{k}")
    pol = _defaults(p["policy"], "pool.policy", POLICY_DEFAULTS)
    pol["period_s"] = _pos(pol["period_s"], "pool.policy.period_s")
    pol["idle_window_s"] = _pos(pol["idle_window_s"], "pool.policy.idle_window_s")
    for k in ("high_pct", "soft_pct", "hard_pct"):
        pol[k] = _pct(pol[k], f"pool.policy.{k}")
    pol["idle_tax_pct"] = int_field(pol["idle_tax_pct"], "pool.policy.idle_tax_pct", None, 0, 99)
    if not pol["hard_pct"] <= pol["soft_pct"] <= pol["high_pct"]:
        raise ScenarioError("scenario: pool.policy needs hard_pct <= soft_pct <= high_pct")
    p["paging"], p["policy"] = pg, pol
    return p


def _workload(obj, what):
    w = _defaults(obj, what, WORKLOAD_DEFAULTS, ("phases",))
    w["processes"] = int_field(w["processes"], what + ".processes", None, 1, 64)
    w["process_mb"] = _pos(w["process_mb"], what + ".process_mb")
    for k in ("shared_pct", "zero_pct", "hot_pct", "sweep_pct"):
        w[k] = _pct(w[k], f"{what}.{k}")
    if w["shared_pct"] + w["zero_pct"] > 100:
        raise ScenarioError(f"scenario: {what}.shared_pct + zero_pct must be at most 100")
    w["tick_s"] = _pos(w["tick_s"], what + ".tick_s")
    if not isinstance(w["phases"], list) or not w["phases"]:
        raise ScenarioError(f"scenario: {what}.phases must be a non-empty list")
    phases = []
    for i, ph in enumerate(w["phases"]):
        pw = f"{what}.phases[{i}]"
        obj_field(ph, pw, None, ("phase", "s"), ("mb",))
        if ph["phase"] not in PHASES:
            raise ScenarioError(f"scenario: {pw}.phase must be one of {', '.join(PHASES)}, "
                                f"not {json.dumps(ph['phase'])}")
        if (ph["phase"] == "boot") != (i == 0):
            raise ScenarioError(f"scenario: {pw}: the first phase, and only it, is boot")
        q = {"phase": ph["phase"], "s": _pos(ph["s"], pw + ".s")}
        if "mb" in ph:
            if ph["phase"] != "growth":
                raise ScenarioError(f"scenario: {pw}.mb is for growth phases only")
            q["mb"] = num_field(ph["mb"], pw + ".mb")
        phases.append(q)
    w["phases"] = phases
    return w


def _partition(obj, i):
    what = f"partitions[{i}]"
    p = _defaults(obj, what, dict(PARTITION_DEFAULTS, knobs={}, cmm_params={}),
                  ("name", "logical_mb", "workload"))
    if not isinstance(p["name"], str) or not p["name"]:
        raise ScenarioError(f"scenario: {what}.name must be a non-empty string, not {json.dumps(p['name'])}")
    p["logical_mb"] = int_field(p["logical_mb"], what + ".logical_mb", None, 1, MAX_MB)
    p["entitled_mb"] = int_field(p["entitled_mb"], what + ".entitled_mb", None, 0, p["logical_mb"])
    p["mem_weight"] = int_field(p["mem_weight"], what + ".mem_weight", None, 0, 255)
    p["ksm"] = bool_field(p["ksm"], what + ".ksm")
    p["cmm"] = bool_field(p["cmm"], what + ".cmm")
    p["start_s"] = num_field(p["start_s"], what + ".start_s")
    if not isinstance(p["knobs"], dict):
        raise ScenarioError(f"scenario: {what}.knobs must be an object, not {json.dumps(p['knobs'])}")
    p["knobs"] = {k: str_or_int_field(v, f"{what}.knobs.{k}", None) for k, v in p["knobs"].items()}
    if "run" in p["knobs"]:
        raise ScenarioError(f"scenario: {what}.knobs.run is the runner's (ksm on or off)")
    p["cmm_params"] = dict(CMM_DEFAULTS, **check_params(p["cmm_params"], what + ".cmm_params"))
    p["workload"] = _workload(p["workload"], what + ".workload")
    work_mb = p["workload"]["processes"] * p["workload"]["process_mb"]
    if work_mb > p["logical_mb"]:
        raise ScenarioError(f"scenario: {what}.workload needs {work_mb:g} MiB, more than "
                            f"logical_mb {p['logical_mb']}")
    return p


def _event(obj, i, names):
    what = f"events[{i}]"
    if not isinstance(obj, dict) or "t" not in obj or len(obj) != 2:
        raise ScenarioError(f"scenario: {what} must be an object with \"t\" and one event, "
                            f"not {json.dumps(obj)}")
    t = num_field(obj["t"], what + ".t")
    (kind, v), = ((k, v) for k, v in obj.items() if k != "t")
    if kind not in EVENT_KINDS:
        raise ScenarioError(f"scenario: {what}: unknown event '{kind}' "
                            f"(events: {', '.join(EVENT_KINDS)})")

    def name(n, w):
        if n not in names:
            raise ScenarioError(f"scenario: {w} names no partition: {json.dumps(n)}")
        return n

    if kind in ("start", "stop", "reboot", "crash"):
        v = name(v, f"{what}.{kind}")
    elif kind == "pool_resize_mb":
        v = int_field(v, f"{what}.{kind}", None, 1, MAX_MB)
    elif kind == "burst":
        obj_field(v, f"{what}.burst", None, ("partition", "mb", "s"))
        v = {"partition": name(v["partition"], f"{what}.burst.partition"),
             "mb": _pos(v["mb"], f"{what}.burst.mb"), "s": _pos(v["s"], f"{what}.burst.s")}
    elif kind == "fail_hcalls":
        obj_field(v, f"{what}.fail_hcalls", None, ("partition", "after", "count"))
        v = {"partition": name(v["partition"], f"{what}.fail_hcalls.partition"),
             "after": int_field(v["after"], f"{what}.fail_hcalls.after"),
             "count": int_field(v["count"], f"{what}.fail_hcalls.count")}
    else:
        obj_field(v, f"{what}.fail_hget_mpp", None, ("partition", "count"))
        v = {"partition": name(v["partition"], f"{what}.fail_hget_mpp.partition"),
             "count": int_field(v["count"], f"{what}.fail_hget_mpp.count")}
    return {"t": t, "kind": kind, "value": v}


def parse_pool_scenario(obj):
    """A PoolScenario from decoded JSON, or ScenarioError naming the field."""
    if not isinstance(obj, dict):
        raise ScenarioError("scenario: must be a JSON object")
    obj_field(obj, "scenario", None, ("pool", "partitions", "duration_s"),
              ("description", "seed", "step_s", "events"))
    duration = _pos(obj["duration_s"], "duration_s")
    if duration > MAX_DURATION_S:
        raise ScenarioError(f"scenario: duration_s must be at most {MAX_DURATION_S}, not {duration}")
    step = _pos(obj.get("step_s", 10), "step_s")
    seed = int_field(obj.get("seed", 1), "seed", None, 0, (1 << 32) - 1)
    desc = obj.get("description", "")
    if not isinstance(desc, str):
        raise ScenarioError("scenario: description must be a string")
    pool = _pool(obj["pool"])
    parts = obj["partitions"]
    if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTITIONS:
        raise ScenarioError(f"scenario: partitions must be a list of 1 to {MAX_PARTITIONS} partitions")
    parts = [_partition(p, i) for i, p in enumerate(parts)]
    names = [p["name"] for p in parts]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ScenarioError(f"scenario: partitions[{i}].name {json.dumps(n)} is used twice")
    events = obj.get("events", [])
    if not isinstance(events, list):
        raise ScenarioError("scenario: events must be a list")
    events = sorted((_event(e, i, names) for i, e in enumerate(events)), key=lambda e: e["t"])
    return PoolScenario(desc, seed, duration, step, pool, parts, events)


def load_pool_scenario(path):
    """Read and validate a scenario file (ScenarioError on any problem)."""
    return parse_pool_scenario(read_scenario_json(path))


def loads_pool_scenario(text, name="scenario"):
    return parse_pool_scenario(decode_scenario_json(text, name))
