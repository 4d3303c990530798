"""Scenarios: a JSON description of a machine, a hypervisor and a list of
events, run against CmmDriver on a simulated clock.  No rendering here: the
CLI (ksm_engine/cli/cmm_command.py) prints what run_scenario() returns.

Format
------
    {"ram_mb": 1024, "cmo_page_size": 4096,
     "params": {"delay": 1, "hotplug_delay": 5, "oom_kb": 1024,
                "min_mem_mb": 256, "simulate": false},
     "steps": [{"hv_target_kb": 204800}, {"advance_s": 3}, ...]}

Top level (all optional but "steps"):
  ram_mb         int > 0, machine RAM (default 1024)
  cmo_page_size  int, power of two, 256..4096 (default 4096)
  nr_zones       int >= 1, zones of the machine (default 1)
  params         object: delay, hotplug_delay, oom_kb, debug (uint),
                 min_mem_mb, simulate_loan_target_kb (ulong), simulate
                 (bool), disable (0/1), version ("000"/"002"), compaction
                 (bool); each an int (bool for the bools) or, for the
                 numbers, a string parsed as insmod would
  hv             object: cmo (bool, firmware has CMO; default true),
                 pool_mb, entitled_mb (ints), mem_weight (0-255)
  description    any string (ignored)
  steps          list of one-key objects:

  {"hv_target_kb": N}       the hypervisor wants N KiB loaned in total
  {"advance_s": S}          move the clock S seconds (a number >= 0),
                            running every thread wake-up due by then
  {"oom": true}             the machine runs out of memory: its OOM
                            notifier (cmm_oom_notify) runs
  {"hotplug": ACTION}       memory notifier: going_offline, offline,
                            cancel_offline, going_online, online,
                            cancel_online
  {"fail_hcalls": {"after": A, "count": C}}   the next A H_PAGE_INIT calls
                            succeed, the C after them fail (optional "rc")
  {"fail_hget_mpp": K}      the next K H_GET_MPP calls fail
  {"sysfs_write": {"name": F, "value": V, "admin": B}}  write string V to
                            /sys/devices/system/cmm/cmm0/F with or without
                            CAP_SYS_ADMIN (admin defaults to false)
  {"param": {"name": P, "value": V}}   write V (string or int) to
                            /sys/module/cmm/parameters/P
  {"simulate_loan_target_kb": N}   write N to that sysfs file (which only
                            exists in simulate mode; else ENOENT)
  {"allocate_mb": N}        a new process of the machine writes N MiB of
                            new memory (out of frames: the OOM notifiers
                            run, then the step's result is ENOMEM)
  {"exit_processes": true}  every process made by allocate_mb exits
  {"compact": true}         migrate every balloon page (result: the errno
                            of the first page that could not move, if any)
  {"reboot": true}          a restart notification ("restart", "halt",
                            "power_off" also accepted)

Semantics: the driver is loaded at t=0; its thread first wakes at t=delay.
After every step the state is recorded: t, loaned_kb, loaned_target_kb,
oom_freed_kb, totalram_kb, hv_loaned_kb and result ("ok" or the errno name
of the step's failure, e.g. "ENOMEM", "EPERM").

Errors in the file itself raise ScenarioError naming the step.
"""
import errno
import json
from dataclasses import dataclass

from ..clock import SimClock
from ..errors import errno_name as kernel_errno_name
from ..machine import Machine
from .scenario_fields import ScenarioError, decode_scenario_json, read_scenario_json
from .scenario_fields import bool_field as _bool
from .scenario_fields import int_field as _int
from .scenario_fields import num_field as _num
from .scenario_fields import obj_field as _obj
from .scenario_fields import str_or_int_field as _str_or_int
from .scenario_fields import true_field as _true
from cmm.driver import PAGE_SIZE, PAGES2KB, CmmDriver
from cmm.hypervisor import H_HARDWARE, Hypervisor
from cmm.notifier import MEM_ACTIONS, REBOOT_ACTIONS
from cmm.params import PARAMS

MAX_ADVANCE_S = 100_000          # seconds one advance_s step may move the clock

SYSFS_FILES = ("loaned_kb", "loaned_target_kb", "oom_freed_kb", "simulate_loan_target_kb")
UINT_MAX = (1 << 32) - 1
ULONG_MAX = (1 << 64) - 1


def _check_step(i, step):
    """Validate step ``i``; returns (kind, normalised value)."""
    if not isinstance(step, dict):
        raise ScenarioError(f"step {i}: must be an object with one key, not {json.dumps(step)}", i)
    if len(step) != 1:
        keys = ", ".join(sorted(step)) or "none"
        raise ScenarioError(f"step {i}: must have exactly one key, has {keys}", i)
    (kind, v), = step.items()
    if kind == "hv_target_kb":
        return kind, _int(v, kind, i)
    if kind == "advance_s":
        v = _num(v, kind, i)
        if v > MAX_ADVANCE_S:
            raise ScenarioError(f"step {i}: advance_s must be at most {MAX_ADVANCE_S} "
                                f"(split a longer time into several steps), not {v}", i)
        return kind, v
    if kind in ("oom", "compact", "exit_processes"):
        return kind, _true(v, kind, i)
    if kind == "reboot":
        if v is True:
            return kind, "restart"
        if isinstance(v, str) and v in REBOOT_ACTIONS:
            return kind, v
        raise ScenarioError(f"step {i}: reboot must be true or one of "
                            f"{', '.join(REBOOT_ACTIONS)}, not {json.dumps(v)}", i)
    if kind == "hotplug":
        if not isinstance(v, str) or v not in MEM_ACTIONS:
            raise ScenarioError(f"step {i}: hotplug must be one of "
                                f"{', '.join(MEM_ACTIONS)}, not {json.dumps(v)}", i)
        return kind, v
    if kind == "fail_hcalls":
        _obj(v, kind, i, ("after", "count"), ("rc",))
        out = {"after": _int(v["after"], kind + ".after", i),
               "count": _int(v["count"], kind + ".count", i),
               "rc": H_HARDWARE}
        if "rc" in v:
            out["rc"] = _int(v["rc"], kind + ".rc", i, lo=-(1 << 63), hi=(1 << 63) - 1)
            if out["rc"] == 0:
                raise ScenarioError(f"step {i}: fail_hcalls.rc must not be 0 (H_SUCCESS)", i)
        return kind, out
    if kind == "fail_hget_mpp":
        return kind, _int(v, kind, i)
    if kind == "sysfs_write":
        _obj(v, kind, i, ("name", "value"), ("admin",))
        if not isinstance(v["name"], str) or v["name"] not in SYSFS_FILES:
            raise ScenarioError(f"step {i}: sysfs_write.name must be one of "
                                f"{', '.join(SYSFS_FILES)}, not {json.dumps(v['name'])}", i)
        if not isinstance(v["value"], str):
            raise ScenarioError(f"step {i}: sysfs_write.value must be a string, "
                                f"not {json.dumps(v['value'])}", i)
        admin = _bool(v.get("admin", False), kind + ".admin", i)
        return kind, {"name": v["name"], "value": v["value"], "admin": admin}
    if kind == "param":
        _obj(v, kind, i, ("name", "value"))
        if not isinstance(v["name"], str) or v["name"] not in PARAMS:
            raise ScenarioError(f"step {i}: param.name must be one of "
                                f"{', '.join(PARAMS)}, not {json.dumps(v['name'])}", i)
        return kind, {"name": v["name"], "value": _str_or_int(v["value"], kind + ".value", i)}
    if kind == "simulate_loan_target_kb":
        return kind, _str_or_int(v, kind, i) if isinstance(v, str) else str(_int(v, kind, i))
    if kind == "allocate_mb":
        return kind, _num(v, kind, i)
    raise ScenarioError(f"step {i}: unknown step '{kind}'", i)


_PARAM_TYPES = {
    "delay": "uint", "hotplug_delay": "uint", "oom_kb": "uint", "debug": "uint",
    "min_mem_mb": "ulong", "simulate_loan_target_kb": "ulong",
    "simulate": "bool", "compaction": "bool", "disable": "disable", "version": "version",
}


def check_params(p, field="params"):
    """The driver's load parameters (CmmDriver keywords) of the object at
    ``field``; ScenarioError naming the field."""
    _obj(p, field, None, (), tuple(_PARAM_TYPES))
    out = {}
    for k, v in p.items():
        t = _PARAM_TYPES[k]
        what = field + "." + k
        if t == "bool":
            out[k] = _bool(v, what)
        elif t == "version":
            if v not in ("000", "002"):
                raise ScenarioError(f"scenario: {what} must be \"000\" or \"002\", not {json.dumps(v)}")
            out[k] = v
        elif t == "disable":
            if isinstance(v, bool):
                v = int(v)
            out[k] = _int(v, what, None, 0, 1)
        elif isinstance(v, str):
            out[k] = v                 # parsed by the driver as insmod would
        else:
            out[k] = _int(v, what, None, 0, UINT_MAX if t == "uint" else ULONG_MAX)
    return out


@dataclass
class Scenario:
    """A validated scenario."""
    ram_mb: int
    cmo_page_size: int
    nr_zones: int
    params: dict        # CmmDriver keywords
    hv: dict            # Hypervisor options
    steps: list         # [(kind, value)]
    raw_steps: list     # as given


def parse_scenario(obj):
    """Validate a decoded JSON scenario; returns a Scenario or raises
    ScenarioError."""
    if not isinstance(obj, dict):
        raise ScenarioError("scenario: must be a JSON object")
    known = ("ram_mb", "cmo_page_size", "nr_zones", "params", "hv", "steps", "description")
    for k in obj:
        if k not in known:
            raise ScenarioError(f"scenario: unknown field '{k}'")
    if "steps" not in obj:
        raise ScenarioError("scenario: missing field 'steps'")
    if not isinstance(obj["steps"], list):
        raise ScenarioError("scenario: steps must be a list")
    ram_mb = _int(obj.get("ram_mb", 1024), "ram_mb", None, 1, 1 << 20)
    cps = _int(obj.get("cmo_page_size", 4096), "cmo_page_size", None, 256, PAGE_SIZE)
    if cps & (cps - 1):
        raise ScenarioError(f"scenario: cmo_page_size must be a power of two, not {cps}")
    nr_zones = _int(obj.get("nr_zones", 1), "nr_zones", None, 1, 64)
    params = check_params(obj.get("params", {}))
    hv = _obj(obj.get("hv", {}), "hv", None, (), ("cmo", "pool_mb", "entitled_mb", "mem_weight"))
    hv_opts = {}
    if "cmo" in hv:
        hv_opts["cmo"] = _bool(hv["cmo"], "hv.cmo")
    if "pool_mb" in hv:
        hv_opts["pool_size"] = _int(hv["pool_mb"], "hv.pool_mb") << 20
    if "entitled_mb" in hv:
        hv_opts["entitled_mem"] = _int(hv["entitled_mb"], "hv.entitled_mb") << 20
    if "mem_weight" in hv:
        hv_opts["mem_weight"] = _int(hv["mem_weight"], "hv.mem_weight", None, 0, 255)
    steps = [_check_step(i, s) for i, s in enumerate(obj["steps"])]
    return Scenario(ram_mb, cps, nr_zones, params, hv_opts, steps, obj["steps"])


def load_scenario(path):
    """Read and validate a scenario file; ScenarioError on any problem."""
    return parse_scenario(read_scenario_json(path))


def loads_scenario(text, name="scenario"):
    """Parse and validate scenario text."""
    return parse_scenario(decode_scenario_json(text, name))


# -- running --------------------------------------------------------------
class ScenarioRun:
    """The outcome of run_scenario().

    Fields: steps (one dict per step), machine, hv, driver, clock.
    """

    def __init__(self, machine, hv, driver, clock):
        self.steps = []
        self.machine = machine
        self.hv = hv
        self.driver = driver
        self.clock = clock


def errno_name(e):
    """A step's result for a failure ``e``: the kernel's errno symbol of an
    OSError ("ENOMEM"), else the exception's type name."""
    if not isinstance(e, OSError):
        return type(e).__name__
    return kernel_errno_name(e.errno)


def state(run):
    """The state reported after a step (without t/result)."""
    d, m = run.driver, run.machine
    return {
        "loaned_kb": d.loaned_kb,
        "loaned_target_kb": d.loaned_target_kb,
        "oom_freed_kb": d.oom_freed_kb,
        "totalram_kb": PAGES2KB(m.totalram_pages),
        "hv_loaned_kb": d.partition.loaned_kb if d.partition is not None else 0,
    }


def make_machine(ram_bytes, nr_zones=1):
    """A ksm_engine Machine of ``ram_bytes``."""
    if nr_zones != 1:
        return Machine(ram=ram_bytes, nr_zones=nr_zones)
    return Machine(ram=ram_bytes)


def _allocate(run, nbytes, tag):
    """A new process writes ``nbytes`` of distinct, non-zero pages."""
    m = run.machine
    p = m.spawn(name=f"cmm-alloc{tag}")
    run._procs.append(p)
    npages = nbytes // PAGE_SIZE
    if npages == 0:
        return
    addr = p.mmap(npages * PAGE_SIZE)
    chunk = 256                                  # pages per write
    for first in range(0, npages, chunk):
        n = min(chunk, npages - first)
        buf = bytearray(b"\xa5" * (n * PAGE_SIZE))
        for j in range(n):
            off = j * PAGE_SIZE
            buf[off:off + 16] = (tag * (1 << 40) + first + j + 1).to_bytes(16, "little")
        p.write(addr + first * PAGE_SIZE, bytes(buf))


def _step(run, i, kind, v):
    d, m, part = run.driver, run.machine, run.driver.partition
    if kind == "hv_target_kb":
        if part is not None:
            part.set_loan_target(v * 1024)
    elif kind == "advance_s":
        run.clock.advance(v)
    elif kind == "oom":
        m.out_of_memory()  # the machine's OOM notifier chain (cmm_oom_notify)
    elif kind == "hotplug":
        d.memory_chain.call_chain(MEM_ACTIONS[v], None)
    elif kind == "fail_hcalls":
        if part is not None:
            part.fail_page_hcalls(v["after"], v["count"], v["rc"])
    elif kind == "fail_hget_mpp":
        if part is not None:
            part.fail_get_mpp(v)
    elif kind == "sysfs_write":
        d.sysfs.write(v["name"], v["value"], admin=v["admin"])
    elif kind == "param":
        d.params.write(v["name"], v["value"])
    elif kind == "simulate_loan_target_kb":
        d.sysfs.write("simulate_loan_target_kb", v, admin=True)
    elif kind == "allocate_mb":
        _allocate(run, int(v * (1 << 20)), i + 1)
    elif kind == "exit_processes":
        for p in run._procs:
            p.exit()
        run._procs = []
    elif kind == "compact":
        res = d.compact()
        if res.first_error:
            raise OSError(res.first_error, errno.errorcode[res.first_error])
    elif kind == "reboot":
        d.reboot_chain.call_chain(REBOOT_ACTIONS[v], None)
    else:  # pragma: no cover - parse_scenario() rejects these
        raise ScenarioError(f"step {i}: unknown step '{kind}'", i)


def _arg_text(kind, v):
    """A short text of a step's argument, for display."""
    if v is True:
        return ""
    if isinstance(v, dict):
        return ",".join(f"{k}={v[k]}" for k in v)
    return str(v)


def run_scenario(scn, after_step=None, driver_kwargs=None, poll_hook=None):
    """Run a Scenario on a SimClock.  Returns a ScenarioRun whose ``steps``
    holds, per step: index, op, arg (display text), t, loaned_kb, loaned_target_kb,
    oom_freed_kb, totalram_kb, hv_loaned_kb, result.

    ``after_step(run, index)`` is called after each step and
    ``poll_hook(driver, mpp_ok)`` after each polling round of the thread
    (for checks); ``driver_kwargs`` are extra CmmDriver keywords (tests).
    Raises OSError if the driver fails to load (e.g. EOPNOTSUPP)."""
    m = make_machine(scn.ram_mb << 20, scn.nr_zones)
    hv_opts = dict(scn.hv)
    part_opts = {k: hv_opts.pop(k) for k in ("entitled_mem", "mem_weight") if k in hv_opts}
    hv = Hypervisor(cmo_page_size=scn.cmo_page_size, **hv_opts)
    part = hv.add_partition(logical_mem=m.nr_frames * PAGE_SIZE, **part_opts)
    clock = SimClock()
    kw = dict(scn.params)
    kw.update(driver_kwargs or {})
    drv = CmmDriver(m, hv, clock=clock, partition=part, **kw)
    if poll_hook is not None:
        drv.poll_hooks.append(poll_hook)
    run = ScenarioRun(m, hv, drv, clock)
    run._procs = []
    for i, (kind, v) in enumerate(scn.steps):
        try:
            _step(run, i, kind, v)
            result = "ok"
        except OSError as e:
            result = errno_name(e)
        rec = {"index": i, "op": kind, "arg": _arg_text(kind, scn.raw_steps[i][kind]),
               "t": clock.now()}
        rec.update(state(run))
        rec["result"] = result
        run.steps.append(rec)
        if after_step is not None:
            after_step(run, i)
    return run
