"""Every public entry point fed garbage: a clear error, never a crash or a
hang, and the state as it was.

  API       Machine, Process, Machine's balloon/zone/OOM calls, ksm.sysfs,
            ksm.scan/full_scan, the CMM driver's sysfs files and module
            parameters, its partition's fault and target calls, its clock,
            CmmDriver and Hypervisor themselves: hypothesis draws an entry
            point and arguments mixing garbage (wrong types, negative, zero,
            huge and overflowing numbers, NaN, unaligned addresses, empty and
            binary strings) with near-valid values (addresses at the edges of
            real areas), on a world with merged pages, a fork, an exited
            process and a loaned balloon.  A call may succeed; if it raises,
            the exception is a TypeError, ValueError or OSError with an errno,
            and a snapshot of everything (contents, page tables, areas,
            counters, knobs, the driver and the hypervisor) is unchanged.
  sysfs     KSM's and the CMM's files fed random text and bytes: the
            kernel's errno, the value unchanged when refused.
  files     scenario text (random bytes, random JSON, truncated and mutated
            valid scenarios) through the loader: a Scenario or a
            ScenarioError, nothing else; memory images and core files of
            random bytes through `estimate`.
  CLI       main() in-process on random argument lists of every command
            (exit 0, 1 or 2, never an exception or a traceback), and a
            bounded list of real subprocess runs (exit 2, `ksm-engine:
            error:` and no traceback), including the scenario files and
            devices that once broke the loader.

docs/robustness.md lists what is tried, with counts.
"""
import contextlib
import errno
import io
import json
import math
import os
import random
import resource
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmm import CmmDriver, Hypervisor, SimClock
from ksm_engine.apps.cmm_scenario import ScenarioError, loads_scenario, run_scenario
from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, Machine, ProcessExited)
from ksm_engine.cli.main import main as cli_main
from ksm_engine.process import MMAP_BASE, TASK_SIZE

from .profiles import fuzz_settings
from .model import pattern_page

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# --- garbage ----------------------------------------------------------------------

BIG_INTS = [0, -1, 1, 2, 4095, 4096, 4097, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
            1 << 44, TASK_SIZE, TASK_SIZE - PAGE_SIZE, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
            1 << 64, 1 << 200, -(1 << 31), -(1 << 63), -(1 << 64), -(1 << 200)]
NOT_INTS = [None, True, False, 1.5, 4096.0, -0.0, math.nan, "", "1", "4096", "abc", "\x00",
            "-1", "0x10", " 1 ", b"", b"1", b"\xff\xfe", bytearray(b"12"), [], [1], (4096,), {},
            object(), 1j, range(3)]
INTS = st.one_of(st.sampled_from(BIG_INTS), st.integers())
# Values of the wrong type: each argument is replaced by one of these with
# probability 1/4 (so most calls get past the type checks to the range ones)
WRONG_TYPE = st.one_of(st.sampled_from(NOT_INTS), st.text(max_size=12), st.binary(max_size=12),
                       st.floats())
GARBAGE = st.one_of(INTS, WRONG_TYPE)
# Numbers a loop may legitimately count up to (no hangs on purpose)
SMALL_GARBAGE = st.one_of(st.sampled_from([0, -1, 1, 2, -(1 << 64), 1.5, 0.5, math.nan, math.inf, None,
                                           True, "", "1", "abc", b"1", [], object()]),
                          st.integers(-5, 5))
ALLOWED = (TypeError, ValueError, OSError)


class World:
    """A small system in an interesting state: two processes sharing KSM
    pages (one a fork child), a zero-filled area, an exited process, a
    loaned balloon with its hypervisor.  snapshot() is everything a refused
    call must leave as it was."""

    def __init__(self):
        self.m = m = Machine(ram="1MiB")
        m.ksm.sysfs["use_zero_pages"] = "1"
        self.p = p = m.spawn(name="p")
        self.a = p.mmap(8 * PAGE_SIZE)
        p.write(self.a, pattern_page(1) * 6 + pattern_page(6) * 2)
        self.b = p.mmap(4 * PAGE_SIZE)
        p.fill(self.b, 0, 4 * PAGE_SIZE)
        p.madvise(self.a, 8 * PAGE_SIZE, MADV_MERGEABLE)
        p.madvise(self.b, 4 * PAGE_SIZE, MADV_MERGEABLE)
        self.q = p.fork(name="q")
        self.q.write(self.a + 7 * PAGE_SIZE, b"child")
        m.ksm.full_scan(3)
        self.gone = m.spawn(name="gone")
        self.gone.mmap(PAGE_SIZE)
        self.gone.exit()
        self.hv = Hypervisor(cmo_page_size=1024)
        self.clock = SimClock()
        self.drv = CmmDriver(m, self.hv, delay=1, oom_kb=16, min_mem_mb=0, clock=self.clock)
        self.drv.partition.set_loan_target(64 << 10)
        self.clock.advance(1)
        assert m.ksm.stats["pages_sharing"] > 0 and m.ksm.stats["ksm_zero_pages"] == 8
        assert self.drv.loaned_kb == 64

    def addresses(self):
        """Addresses at and around the edges of real areas."""
        out = [0, MMAP_BASE, TASK_SIZE - PAGE_SIZE]
        for a in self.p.areas.values():
            out += [a.start, a.end - PAGE_SIZE, a.end, a.start - PAGE_SIZE]
        return out

    def snapshot(self):
        m = self.m
        procs = []
        for proc in m.processes:
            areas = [(a.start, a.end, a.flags) for a in proc.areas.values()]
            # every page of a small area; the first and last 64 of a huge
            # one (garbage can map terabytes, but writes only a few bytes)
            spans = []
            for s, e, _ in areas:
                n = (e - s) // PAGE_SIZE
                spans += [(s, n)] if n <= 128 else [(s, 64), (e - 64 * PAGE_SIZE, 64)]
            procs.append((proc.pid, areas, proc.merge_any, proc.rss_pages,
                          [proc.read(s, n * PAGE_SIZE) for s, n in spans],
                          [proc.ptes(s, n) for s, n in spans],
                          proc.rmap_items(), dict(proc.ksm_stat)))
        st_ = dict(m.ksm.stats)
        knobs = {n: m.ksm.sysfs[n] for n in m.ksm.knob_names()}
        drv, part = self.drv, self.drv.partition
        return (procs, st_, knobs, m.meminfo(), m.ksm.stable_nodes(),
                [m.zone_managed_pages(z) for z in range(m.nr_zones)],
                drv.loaned_pages.read(), drv.loaned_pages_target, drv.oom_freed_pages,
                drv.simulate_loan_target_kb, {n: drv.params[n] for n in drv.params},
                sorted(drv.balloon_pfns()), set(part.loaned), part.loan_target,
                dict(part.calls), part._page_fault, part._mpp_fault, self.clock.now_ms,
                len(m._oom_notifiers))


def _addr(w, v):
    """("near", k) -> an address at the edge of an area, shifted by a few
    bytes for odd k (unaligned); anything else is used as it is."""
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "near":
        addrs = w.addresses()
        a = addrs[v[1] % len(addrs)]
        return a + (v[1] % 3) * 1000 if v[1] % 2 else a
    return v


ADDR = st.one_of(INTS, st.tuples(st.just("near"), st.integers(0, 40)),
                 st.tuples(st.just("near"), st.integers(0, 40)))
LENGTH = st.one_of(INTS, st.integers(-2, 3 * PAGE_SIZE + 1),
                   st.sampled_from([PAGE_SIZE, 2 * PAGE_SIZE, 8 * PAGE_SIZE, 1 << 40]))
DATA = st.one_of(st.binary(max_size=40), st.text(max_size=8),
                 st.binary(max_size=40).map(bytearray), st.binary(max_size=40).map(memoryview),
                 st.lists(st.integers(0, 255), max_size=8), INTS)
WHO = st.sampled_from([0, 0, 1, 1, 2])      # p, its fork child q, the exited process
GONE = st.just(2)                           # the exited process
KNOB = st.one_of(st.sampled_from([
    "run", "pages_to_scan", "sleep_millisecs", "max_page_sharing", "merge_across_nodes",
    "use_zero_pages", "smart_scan", "stable_node_chains_prune_millisecs", "advisor_mode",
    "advisor_max_cpu", "advisor_target_scan_time", "pages_shared", "full_scans", "general_profit",
    "max_kernel_pages", "../run", "run\n", "RUN", ""]))
KNOB_TEXT = st.one_of(INTS, st.text(alphabet="0123456789+-x \n\t\x00abcyYnNoOfF", max_size=24),
                      st.sampled_from(["0", "1", "2", "3", "-1", "+1", "1\n", "1\n\n", " 1",
                                       "99999999999999999999999", "4294967296", "2147483648",
                                       "-2147483649", "none", "scan-time", "scan-time\n", "on",
                                       "off", "1\x00junk"]))
CMM_FILE = st.one_of(st.sampled_from(["loaned_kb", "loaned_target_kb", "oom_freed_kb",
                                               "simulate_loan_target_kb", "bogus", ""]))
CMM_PARAM = st.one_of(st.sampled_from(["delay", "hotplug_delay", "oom_kb", "min_mem_mb",
                                                "debug", "simulate", "disable", "bogus"]))


def _proc(w, which):
    return {0: w.p, 1: w.q, 2: w.gone}[which % 3]


def _no_driver_pfn(w, v):
    """Machine.balloon_page_free of the driver's own frames would be the
    kernel's __free_page of another driver's page (corruption, not bad
    input): those pfns are replaced by a mapped one."""
    if isinstance(v, int) and v in w.drv.balloon_pfns():
        return w.p.ptes(w.a, 1)[0][0]
    return v


ENTRY_POINTS = {
    "Machine": ((GARBAGE, GARBAGE, GARBAGE, GARBAGE),
                lambda w, ram, compat, zones, clock: Machine(
                    ram=ram, ksm_compat=compat, nr_zones=zones, clock=clock)),
    "Machine(ram)": ((st.one_of(GARBAGE, st.sampled_from(["1MiB", "0", "-1", "1.5M", "4095",
                                                          "16TiB", "1PiB", "4096 ", "1 G",
                                                          "0x1000", "1e6", "4KiB\x00"])),),
                     lambda w, ram: Machine(ram=ram)),
    "spawn": ((GARBAGE,), lambda w, name: w.m.spawn(name=name)),
    "process": ((GARBAGE,), lambda w, pid: w.m.process(pid)),
    "mmap": ((WHO, LENGTH, st.one_of(st.none(), ADDR)),
             lambda w, i, length, addr: _proc(w, i).mmap(length, addr=_addr(w, addr))),
    "munmap": ((WHO, ADDR, LENGTH),
               lambda w, i, addr, length: _proc(w, i).munmap(_addr(w, addr), length)),
    "write": ((WHO, ADDR, DATA),
              lambda w, i, addr, data: _proc(w, i).write(_addr(w, addr), data)),
    "fill": ((WHO, ADDR, st.one_of(INTS, st.integers(-1, 256)), LENGTH),
             lambda w, i, addr, byte, length: _proc(w, i).fill(_addr(w, addr), byte, length)),
    "read": ((WHO, ADDR, LENGTH),
             lambda w, i, addr, n: _proc(w, i).read(_addr(w, addr), n)),
    "readinto": ((WHO, ADDR, st.one_of(st.integers(0, 9000).map(bytearray),
                                       st.binary(max_size=9).map(memoryview), INTS)),
                 lambda w, i, addr, buf: _proc(w, i).readinto(_addr(w, addr), buf)),
    "madvise": ((WHO, ADDR, LENGTH,
                 st.one_of(INTS, st.sampled_from([MADV_MERGEABLE, MADV_UNMERGEABLE, 0, 14]))),
                lambda w, i, addr, length, adv: _proc(w, i).madvise(_addr(w, addr), length, adv)),
    "prctl": ((WHO, st.one_of(INTS, st.sampled_from([PR_SET_MEMORY_MERGE, PR_GET_MEMORY_MERGE])),
               st.one_of(st.sampled_from([0, 1]), INTS), st.one_of(st.just(0), INTS),
               st.one_of(st.just(0), INTS)),
              lambda w, i, opt, a2, a3, a4: _proc(w, i).prctl(opt, a2, a3, a4)),
    "ptes": ((WHO, ADDR, LENGTH),
             lambda w, i, addr, n: _proc(w, i).ptes(_addr(w, addr), n)),
    "fork": ((WHO, GARBAGE), lambda w, i, name: _proc(w, i).fork(name=name)),
    "exit": ((GONE,), lambda w, i: _proc(w, i).exit()),
    "ksm_stat": ((GONE,), lambda w, i: _proc(w, i).ksm_stat),
    "sysfs[name] = value": ((KNOB, KNOB_TEXT),
                            lambda w, name, value: w.m.ksm.sysfs.__setitem__(name, value)),
    "sysfs[name]": ((KNOB,), lambda w, name: w.m.ksm.sysfs[name]),
    "sysfs.write(name, value, admin)": ((KNOB, KNOB_TEXT, st.one_of(st.booleans(), GARBAGE)),
                                        lambda w, name, value, admin:
                                        w.m.ksm.sysfs.write(name, value, admin=admin)),
    "ksm.scan": ((GARBAGE,), lambda w, n: w.m.ksm.scan(n)),
    "ksm.full_scan": ((SMALL_GARBAGE,), lambda w, n: w.m.ksm.full_scan(n)),
    "balloon_page_free": ((st.one_of(INTS, st.integers(0, 300)),),
                          lambda w, pfn: w.m.balloon_page_free(_no_driver_pfn(w, pfn))),
    "page_zone": ((GARBAGE,), lambda w, pfn: w.m.page_zone(pfn)),
    "zone_size": ((GARBAGE,), lambda w, z: w.m.zone_size(z)),
    "zone_managed_pages": ((GARBAGE,), lambda w, z: w.m.zone_managed_pages(z)),
    "adjust_managed_page_count": ((st.one_of(INTS, st.integers(-3, 3)),
                                   st.one_of(st.none(), INTS, st.integers(0, 300))),
                                  lambda w, d, pfn: w.m.adjust_managed_page_count(d, pfn)),
    "register_oom_notifier": ((st.sampled_from(NOT_INTS + BIG_INTS),),
                              lambda w, fn: w.m.register_oom_notifier(fn)),
    "unregister_oom_notifier": ((GARBAGE,), lambda w, fn: w.m.unregister_oom_notifier(fn)),
    "cmm sysfs write": ((CMM_FILE, KNOB_TEXT, st.one_of(st.booleans(), INTS)),
                        lambda w, name, value, admin: w.drv.sysfs.write(name, value, admin=admin)),
    "cmm sysfs read": ((CMM_FILE,), lambda w, name: w.drv.sysfs.read(name)),
    "cmm param write": ((CMM_PARAM, st.one_of(KNOB_TEXT, INTS)),
                        lambda w, name, value: w.drv.params.write(name, value)),
    "cmm param read": ((CMM_PARAM,), lambda w, name: w.drv.params[name]),
    "set_loan_target": ((GARBAGE,), lambda w, x: w.drv.partition.set_loan_target(x)),
    "fail_page_hcalls": ((GARBAGE, GARBAGE, GARBAGE),
                         lambda w, a, c, rc: w.drv.partition.fail_page_hcalls(a, c, rc)),
    "fail_get_mpp": ((GARBAGE, GARBAGE), lambda w, c, rc: w.drv.partition.fail_get_mpp(c, rc)),
    "clock.advance": ((SMALL_GARBAGE,), lambda w, s: w.clock.advance(s)),
    "CmmDriver": ((GARBAGE, GARBAGE, GARBAGE, GARBAGE, GARBAGE, GARBAGE, GARBAGE),
                  lambda w, d, hd, oom, mm, dbg, sim, dis: CmmDriver(
                      Machine(ram="1MiB"), Hypervisor(), delay=d, hotplug_delay=hd, oom_kb=oom,
                      min_mem_mb=mm, debug=dbg, simulate=sim, disable=dis,
                      clock=SimClock()).unload()),
    "Hypervisor": ((GARBAGE, GARBAGE, st.one_of(GARBAGE, st.sampled_from([256, 512, 1024, 4096]))),
                   lambda w, pool, cmo, cps: Hypervisor(pool_size=pool, cmo=cmo,
                                                        cmo_page_size=cps)),
}

# Calls that count up to their argument (a huge one is a long job, not
# garbage): they get SMALL_GARBAGE only.
BOUNDED = {"ksm.full_scan", "clock.advance"}

def _classify(exc):
    assert isinstance(exc, ALLOWED), f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        assert isinstance(exc.errno, int) and exc.errno > 0, f"OSError without errno: {exc!r}"
        assert exc.errno in errno.errorcode


@fuzz_settings(400)
@given(data=st.data())
def test_api_garbage(data):
    """One world, several garbage calls in a row: each refused call leaves
    the snapshot as it was; the machine stays consistent throughout."""
    w = World()
    for _ in range(data.draw(st.integers(1, 6), label="calls")):
        name = data.draw(st.sampled_from(sorted(ENTRY_POINTS)), label="entry point")
        strategies, call = ENTRY_POINTS[name]
        args = [data.draw(WRONG_TYPE if name not in BOUNDED and s not in (WHO, GONE) and data.draw(
                    st.integers(0, 3), label="wrong type?") == 0 else s, label=f"{name} arg{i}")
                for i, s in enumerate(strategies)]
        before = w.snapshot()
        try:
            call(w, *args)
        except BaseException as e:  # noqa: B902 - classified below
            _classify(e)
            if not (name == "madvise" and getattr(e, "errno", None) == errno.ENOMEM):
                assert w.snapshot() == before, f"{name}{tuple(args)!r} failed and changed the state"
            # (madvise's ENOMEM for a partly unmapped range is Linux's partial
            # success: the advice is applied to the mapped parts)
        w.m.check()
        info = w.m.meminfo()
        assert info["free_pages"] + info["used_pages"] + info["balloon_pages"] == info["nr_frames"]
    # the system still works: a process writes and reads, KSM scans
    fresh = w.m.spawn(name="after")
    a = fresh.mmap(PAGE_SIZE)
    try:
        fresh.write(a, b"still works")
    except OSError as e:                 # garbage may have left no frame free
        assert e.errno == errno.ENOMEM and w.m.free_pages == 0
    else:
        assert fresh.read(a, 11) == b"still works"
    w.m.ksm.scan(1000)
    w.m.check()


def test_calls_on_an_exited_process_are_esrch():
    w = World()
    before = w.snapshot()
    for call in (lambda p: p.read(MMAP_BASE, 1), lambda p: p.write(MMAP_BASE, b"x"),
                 lambda p: p.fill(MMAP_BASE, 1, 1), lambda p: p.mmap(PAGE_SIZE),
                 lambda p: p.munmap(MMAP_BASE, PAGE_SIZE), lambda p: p.fork(),
                 lambda p: p.exit(), lambda p: p.madvise(MMAP_BASE, PAGE_SIZE, MADV_MERGEABLE),
                 lambda p: p.prctl(PR_GET_MEMORY_MERGE), lambda p: p.ksm_stat,
                 lambda p: p.ptes(MMAP_BASE, 1), lambda p: p.rmap_items(),
                 lambda p: p.readinto(MMAP_BASE, bytearray(1))):
        with pytest.raises(ProcessExited) as e:
            call(w.gone)
        assert e.value.errno == errno.ESRCH
    assert w.gone.rss_pages == 0
    assert w.snapshot() == before


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
        _classify(e)
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
        _classify(e)
        if isinstance(e, OSError):
            assert e.errno in (errno.EINVAL, errno.ERANGE, errno.EPERM, errno.EBADMSG,
                               errno.EACCES, errno.ENOENT), e
        assert (drv.oom_freed_pages, drv.simulate_loan_target_kb, dict(drv.sysfs.items())) == before
    drv.unload()


# --- scenario files ------------------------------------------------------------------

VALID_SCENARIO = {"ram_mb": 16, "cmo_page_size": 1024, "nr_zones": 2,
                  "params": {"delay": 1, "hotplug_delay": 1, "oom_kb": 64, "min_mem_mb": 4},
                  "hv": {"cmo": True, "pool_mb": 64, "entitled_mb": 8, "mem_weight": 10},
                  "steps": [{"hv_target_kb": 4096}, {"advance_s": 2}, {"oom": True},
                            {"hotplug": "going_offline"}, {"hotplug": "offline"},
                            {"fail_hcalls": {"after": 1, "count": 1}}, {"fail_hget_mpp": 1},
                            {"sysfs_write": {"name": "oom_freed_kb", "value": "0", "admin": True}},
                            {"param": {"name": "disable", "value": "0"}},
                            {"allocate_mb": 1}, {"exit_processes": True}, {"compact": True},
                            {"reboot": True}]}

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
        _classify(e)
        return
    for s in run.steps:
        assert s["result"] == "ok" or s["result"].startswith("E"), s
    run.machine.check()


def _pick_path(t):
    k, value = t
    paths = [p for p, _ in _paths(VALID_SCENARIO) if p]
    return paths[k % len(paths)], value


# --- the CLI in-process -------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzfiles")
    rnd = random.Random(7)
    made = {
        "missing": d / "missing.img",
        "dir": d,
        "empty": d / "empty",
        "page-1": d / "short.img",
        "page": d / "one.img",
        "pages": d / "two.img",
        "elf-junk": d / "elf-junk",
        "scenario": d / "s.json",
        "scenario-bad": d / "bad.json",
        "binary": d / "binary.json",
        "oversized": d / "oversized.json",
    }
    made["empty"].write_bytes(b"")
    made["page-1"].write_bytes(bytes(PAGE_SIZE - 1))
    made["page"].write_bytes(bytes(PAGE_SIZE))
    made["pages"].write_bytes(rnd.randbytes(PAGE_SIZE) * 2)
    made["elf-junk"].write_bytes(b"\x7fELF\x02\x01\x01" + rnd.randbytes(300))
    made["scenario"].write_text(json.dumps({"ram_mb": 16, "steps": [{"advance_s": 1}]}))
    made["scenario-bad"].write_text('{"steps": [{"advance_s": -1}]}')
    made["binary"].write_bytes(rnd.randbytes(500))
    # 8 MiB of whitespace around an invalid scenario: read, parsed, refused
    made["oversized"].write_text(" " * (8 << 20) + '{"steps": [{"nope": 1}]}')
    return {k: str(v) for k, v in made.items()}


TOKENS = ["--json", "--set", "max_page_sharing=1", "use_zero_pages=2", "pages_to_scan=5",
          "bogus=1", "=", "run=2", "--compat", "2009", "2010", "--max-full-scans", "0", "-1",
          "abc", "99999999999999999999", "--pid", "0", "abc", "4194304", "--core", "--image",
          "--pages-to-scan", "--sleep-millisecs", "1e3", "", "-", "--", "é", "--help-me",
          "--bogus", "-x"]


@fuzz_settings(120)
@given(data=st.data())
def test_cli_in_process(files, data):
    """main() on random argument lists: it returns 0, 1 or 2 and never
    raises; no traceback on stderr; an exit 2 says `ksm-engine: error:`."""
    cmd = data.draw(st.sampled_from(["scan", "estimate", "cmm", "bogus-command", None]))
    # (a real argv cannot hold a NUL: it is C strings)
    words = st.one_of(st.sampled_from(TOKENS), st.sampled_from(sorted(files)).map(files.get),
                      st.text(max_size=6).filter(lambda t: "\x00" not in t))
    argv = ([cmd] if cmd else []) + data.draw(st.lists(words, max_size=6))
    if cmd == "cmm" and files["scenario"] in argv:
        argv = [a for a in argv if a != files["scenario"]]    # (valid: runs, covered elsewhere)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(argv)
        except SystemExit as e:          # --help/--version print and exit 0
            rc = e.code
    assert rc in (0, 1, 2), (argv, rc, err.getvalue())
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
    if rc == 2:
        assert "ksm-engine: error:" in err.getvalue() or "usage:" in err.getvalue(), argv


@fuzz_settings(60)
@given(blob=st.binary(min_size=0, max_size=3 * PAGE_SIZE), kind=st.sampled_from(["--image", "--core"]),
       elf=st.booleans())
def test_estimate_of_random_files(tmp_path_factory, blob, kind, elf):
    """Random bytes (with an ELF header's first bytes or not) as a core
    file or an image: a result or exit 2, never a traceback."""
    path = tmp_path_factory.mktemp("blob") / "f"
    path.write_bytes((b"\x7fELF\x02\x01\x01\x00" if elf else b"") + blob)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["estimate", kind, str(path), "--json"])
    assert rc in (0, 2), (rc, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if rc == 0:
        assert kind == "--image" and (len(blob) + 8 * elf) % PAGE_SIZE == 0 and blob
        assert json.loads(out.getvalue())["pages"] == (len(blob) + 8 * elf) // PAGE_SIZE


# --- the CLI as a user runs it (bounded: ~0.3 s each) ---------------------------------

def run_cli(*args, timeout=120, limit_memory=False):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def limits():
        if limit_memory:                  # a runaway read stops at 2 GiB, not at the host's RAM
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "ksm_engine", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout,
                          preexec_fn=limits, stdin=subprocess.DEVNULL)


def assert_usage_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout[-300:], r.stderr[-1000:])
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("ksm-engine: error:") or r.stderr.startswith("usage:"), r.stderr
    assert len(r.stderr.splitlines()) <= 3 or r.stderr.startswith("usage:"), r.stderr


CLI_CASES = [
    (),                                                   # no command
    ("--bogus",),
    ("bogus-command",),
    ("scan",),
    ("scan", "{missing}"),
    ("scan", "{dir}"),
    ("scan", "{empty}"),
    ("scan", "{page-1}"),
    ("scan", "/dev/zero"),
    ("scan", "{fifo}"),
    ("scan", "{page}", "--max-full-scans", "-1"),
    ("scan", "{page}", "--max-full-scans", "1e3"),
    ("scan", "{page}", "--set", "max_page_sharing=99999999999999999999999"),
    ("scan", "{page}", "--set", "run=1"),
    ("scan", "{page}", "--set", "=1"),
    ("scan", "{page}", "--compat", "2010"),
    ("estimate",),
    ("estimate", "--pid", "0"),
    ("estimate", "--pid", "99999999999999999999999"),
    ("estimate", "--core", "{elf-junk}"),
    ("estimate", "--core", "{binary}"),
    ("estimate", "--image", "{page}", "--pages-to-scan", "0"),
    ("estimate", "--image", "{page}", "--sleep-millisecs", "-5"),
    ("demo", "--guests", "0"),
    ("demo", "--bogus"),
    ("compare-kernel", "{page-1}"),
    ("cmm",),
    ("cmm", "{missing}"),
    ("cmm", "{dir}"),
    ("cmm", "{empty}"),
    ("cmm", "{binary}"),
    ("cmm", "{scenario-bad}"),
    ("cmm", "{oversized}"),
    ("cmm", "{truncated}"),
]


@pytest.fixture(scope="module")
def cli_files(files, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    fifo = d / "fifo"
    os.mkfifo(fifo)
    truncated = d / "truncated.json"
    truncated.write_text(json.dumps(VALID_SCENARIO)[:57])
    return dict(files, fifo=str(fifo), truncated=str(truncated))


@pytest.mark.parametrize("args", CLI_CASES, ids=lambda a: " ".join(a) or "(none)")
def test_cli_bad_input_as_a_user_runs_it(cli_files, args):
    assert_usage_error(run_cli(*(a.format(**cli_files) for a in args)))


# Scenario files that once broke the loader (ksm_engine/apps/cmm_scenario.py): each case showed a bug.
ONCE_BAD = [
    pytest.param("nested", "[" * 100000, id="deeply-nested-json-RecursionError"),
    pytest.param("digits", '{"steps": [{"hv_target_kb": 1' + "0" * 5000 + "}]}",
                 id="5000-digit-integer-ValueError"),
    pytest.param("advance", json.dumps({"ram_mb": 16, "steps": [{"advance_s": 1e12}]}),
                 id="advance_s-1e12-runs-forever"),
]


@pytest.mark.parametrize("kind, text", ONCE_BAD)
def test_cli_scenario_edge_cases(tmp_path, kind, text):
    path = tmp_path / f"{kind}.json"
    path.write_text(text)
    try:
        r = run_cli("cmm", path, timeout=6)
    except subprocess.TimeoutExpired:
        raise AssertionError("ksm-engine cmm did not finish") from None
    assert_usage_error(r)


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="RLIMIT_AS cannot hold ASan's shadow memory")
@pytest.mark.parametrize("path", ["{fifo}", "/dev/zero", "/dev/urandom"])
def test_cli_scenario_from_a_device(cli_files, path):
    try:
        r = run_cli("cmm", path.format(**cli_files), timeout=6, limit_memory=True)
    except subprocess.TimeoutExpired:
        raise AssertionError("ksm-engine cmm did not finish") from None
    assert_usage_error(r)


@pytest.mark.parametrize("call", [
    lambda: SimClock().advance(math.inf),
    lambda: Hypervisor(cmo_page_size=math.inf),
    lambda: Hypervisor().add_partition(1 << 20).set_loan_target(math.inf),
    lambda: Hypervisor().add_partition(1 << 20).fail_get_mpp(math.inf),
    lambda: Hypervisor().add_partition(1 << 20).fail_page_hcalls(math.inf, 1),
], ids=["advance", "cmo_page_size", "set_loan_target", "fail_get_mpp", "fail_page_hcalls"])
def test_cmm_infinity(call):
    """Infinity where cmm once converted numbers with int() unchecked
    (OverflowError): now a ValueError."""
    with pytest.raises(ValueError):
        call()
