"""Every public entry point fed garbage (the API): a clear error, never a
crash or a hang, and the state as it was.

Machine, Process, Machine's balloon/zone/OOM calls, ksm.sysfs,
ksm.scan/full_scan, the CMM driver's sysfs files and module parameters, its
partition's fault and target calls, its clock, CmmDriver and Hypervisor
themselves: hypothesis draws an entry point and arguments mixing garbage
(wrong types, negative, zero, huge and overflowing numbers, NaN, unaligned
addresses, empty and binary strings; tests/robustness/garbage.py) with
near-valid values (addresses at the edges of real areas), on a world with
merged pages, a fork, an exited process and a loaned balloon.  A call may
succeed; if it raises, the exception is a TypeError, ValueError or OSError
with an errno, and a snapshot of everything (contents, page tables, areas,
counters, knobs, the driver and the hypervisor) is unchanged.

docs/robustness.md lists what is tried, with counts.
"""
import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmm import CmmDriver, Hypervisor, SimClock
from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, Machine, ProcessExited)
from ksm_engine.process import MMAP_BASE, TASK_SIZE

from .profiles import fuzz_settings
from .model import pattern_page
from .garbage import (BIG_INTS, CMM_FILE, CMM_PARAM, GARBAGE, INTS, KNOB, KNOB_TEXT, NOT_INTS, classify,
                      SMALL_GARBAGE, WRONG_TYPE)


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
            classify(e)
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
