"""Every text interface fed garbage: the sysfs files and the scenario loader.

  sysfs     KSM's and the CMM's files fed random text and bytes: the
            kernel's errno, the value unchanged when refused.
  files     scenario text (random bytes, random JSON, truncated and mutated
            valid scenarios) through the loader: a Scenario or a
            ScenarioError, nothing else.

docs/robustness.md lists what is tried, with counts.
"""
import errno
import json

from hypothesis import given
from hypothesis import strategies as st

from cmm import CmmDriver, Hypervisor, SimClock
from ksm_engine.apps.cmm_scenario import ScenarioError, loads_scenario, run_scenario
from ksm_engine import Machine

from .profiles import fuzz_settings
from .garbage import CMM_FILE, GARBAGE, KNOB, KNOB_TEXT, VALID_SCENARIO, classify


# --- sysfs text -------------------------------------------------------------------

@fuzz_settings(300)
@given(name=KNOB, value=KNOB_TEXT, compat=st.sampled_from([None, "2009"]))
def test_ksm_sysfs_text(name, value, compat):
    """A rejected write names the kernel's errno and changes nothing; an
    accepted one reads back as a number the text spelled (or the bool or
    word it spelled)."""
    m = Machine(ram="256KiB", ksm_compat=compat)
    before = {n: m.ksm.sysfs[n] for n in m.ksm.sysfs}
    try:
        m.ksm.sysfs[name] = value
    except BaseException as e:  # noqa: B902
        classify(e)
        if isinstance(e, OSError):
            assert e.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.EACCES,
                               errno.ENOENT), e
        assert {n: m.ksm.sysfs[n] for n in m.ksm.sysfs} == before
        return
    after = m.ksm.sysfs[name]
    text = value.decode("ascii") if isinstance(value, (bytes, bytearray)) else str(value)
    text = text.split("\0", 1)[0]
    if text == "" or name == "advisor_mode":
        return
    if name in ("use_zero_pages", "smart_scan"):    # kstrtobool: the first character(s)
        assert after == ("1\n" if text[:1] in "yYtT1" or text[:2].lower() == "on" else "0\n")
        return
    number = int(text.strip("\n").lstrip("+"))
    if compat == "2009":        # strict_strtoul then was simple_strtoul: it wrapped
        number %= 1 << 64
    assert int(after) == number, (name, value, after)


@fuzz_settings(200)
@given(name=CMM_FILE, value=st.one_of(GARBAGE, KNOB_TEXT), admin=st.booleans(),
       simulate=st.booleans())
def test_cmm_sysfs_text(name, value, admin, simulate):
    m = Machine(ram="256KiB")
    drv = CmmDriver(m, None if simulate else Hypervisor(), min_mem_mb=0, simulate=simulate,
                    clock=SimClock())
    drv.oom_freed_pages = 4
    before = (drv.oom_freed_pages, drv.simulate_loan_target_kb, dict(drv.sysfs.items()))
    try:
        drv.sysfs.write(name, value, admin=admin)
    except BaseException as e:  # noqa: B902
        classify(e)
        if isinstance(e, OSError):
            assert e.errno in (errno.EINVAL, errno.ERANGE, errno.EPERM, errno.EBADMSG,
                               errno.EACCES, errno.ENOENT), e
        assert (drv.oom_freed_pages, drv.simulate_loan_target_kb, dict(drv.sysfs.items())) == before
    drv.unload()


# --- scenario files ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON document."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return obj


def _cheap(scn):
    """Worth running: what the run costs is bounded by its numbers (a huge
    advance_s is its own reported case below)."""
    for kind, v in scn.steps:
        if kind == "advance_s" and v > 30 or kind == "allocate_mb" and v > 64:
            return False
    delay = scn.params.get("delay", 1)
    return scn.ram_mb <= 256 and not (isinstance(delay, int) and delay == 0)


def _load_or_refuse(text):
    try:
        scn = loads_scenario(text)
    except ScenarioError as e:
        assert e.message and "Traceback" not in e.message
        return None
    assert scn is not None
    return scn


@fuzz_settings(300)
@given(doc=st.one_of(
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    JSON_VALUES.map(json.dumps),
    st.builds(lambda steps: json.dumps({"steps": steps}), st.lists(JSON_VALUES, max_size=4)),
    st.integers(0, len(json.dumps(VALID_SCENARIO))).map(lambda n: json.dumps(VALID_SCENARIO)[:n]),
    st.tuples(st.integers(0, 200), JSON_VALUES).map(
        lambda t: json.dumps(_replace(VALID_SCENARIO, *_pick_path(t))))))
def test_scenario_text(doc):
    """Random bytes, random JSON, truncated and mutated valid scenarios: a
    Scenario or a ScenarioError naming what is wrong, never another
    exception; the ones that load and are cheap to run also run (every
    step's result "ok" or an errno name)."""
    scn = _load_or_refuse(doc)
    if scn is None or not _cheap(scn):
        return
    try:
        run = run_scenario(scn)
    except OSError as e:                    # the driver refusing to load (insmod)
        classify(e)
        return
    for s in run.steps:
        assert s["result"] == "ok" or s["result"].startswith("E"), s
    run.machine.check()


def _pick_path(t):
    k, value = t
    paths = [p for p, _ in _paths(VALID_SCENARIO) if p]
    return paths[k % len(paths)], value
