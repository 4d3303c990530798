"""The Machine: its frames and their accounting, spawning
processes, the balloon's frames, zones, the managed page count, the OOM
notifier chain and the consistency check.

Each test builds a small machine and asserts the exact frame counts the
operations must leave: free + used + balloon == nr_frames throughout.
"""
import errno

import pytest

from ksm_engine import PAGE_SIZE, Machine, Process, parse_size
from tests.conftest import assert_frames_add_up


# --- construction -------------------------------------------------------------


@pytest.mark.parametrize("ram, frames", [
    (PAGE_SIZE, 1),
    (64 * PAGE_SIZE, 64),
    ("4096", 1),
    ("64K", 16),
    ("64KiB", 16),
    ("1M", 256),
    ("1MB", 256),
    ("2MiB", 512),
    (" 3 mib ", 768),
    ("1G", 1 << 18),
])
def test_ram_sizes_give_whole_frames(ram, frames):
    m = Machine(ram=ram)
    assert m.nr_frames == frames
    assert m.totalram_pages == frames
    assert m.free_pages == frames
    assert m.used_pages == 0 and m.balloon_pages == 0
    info = m.meminfo()
    assert info == {"nr_frames": frames, "totalram_pages": frames, "free_pages": frames,
                    "used_pages": 0, "balloon_pages": 0, "ksm_pages": 0,
                    "released_frames": 0}
    m.check()


def test_default_machine_is_256mib():
    assert Machine().nr_frames == (256 << 20) // PAGE_SIZE


def test_page_size_is_4096():
    assert PAGE_SIZE == 4096


def test_parse_size_units():
    assert parse_size("256MiB") == 256 << 20
    assert parse_size("1t") == 1 << 40
    assert parse_size(0) == 0
    with pytest.raises(ValueError):
        parse_size("12 parsecs")
    with pytest.raises(ValueError):
        parse_size("-4K")
    with pytest.raises(TypeError):
        parse_size(4.0)


@pytest.mark.parametrize("compat", [None, "6.x", "2009"])
def test_ksm_compat_modes(compat):
    m = Machine(ram="1MiB", ksm_compat=compat)
    assert m.ksm.compat_2009 == (compat == "2009")
    # the 2009 sysfs has kernel_pages_allocated, today's has pages_sharing
    names = set(m.ksm.sysfs)
    if compat == "2009":
        assert "kernel_pages_allocated" in names
    else:
        assert "pages_sharing" in names


def test_two_machines_are_independent():
    m1, m2 = Machine(ram="1MiB"), Machine(ram="1MiB")
    p1, p2 = m1.spawn(), m2.spawn()
    a1, a2 = p1.mmap(8 * PAGE_SIZE), p2.mmap(8 * PAGE_SIZE)
    assert a1 == a2  # the same address in two machines is two pages
    p1.write(a1, b"\x01" * 3 * PAGE_SIZE)
    p2.write(a2, b"\x02" * PAGE_SIZE)
    assert (m1.used_pages, m2.used_pages) == (3, 1)
    assert p1.read(a1, 1) == b"\x01" and p2.read(a2, 1) == b"\x02"
    m1.check()
    m2.check()


def test_clock_is_called_in_milliseconds():
    t = [1234]
    m = Machine(ram="1MiB", clock=lambda: t[0])
    assert m.now_ms() == 1234
    t[0] = 99999
    assert m.now_ms() == 99999


# --- processes ------------------------------------------------------------------


def test_spawn_gives_distinct_pids_and_names(machine):
    a = machine.spawn(name="guest0")
    b = machine.spawn()
    c = machine.spawn(name="guest2")
    assert isinstance(a, Process)
    assert len({a.pid, b.pid, c.pid}) == 3
    assert a.name == "guest0" and c.name == "guest2"
    assert b.name == f"proc{b.pid}"
    assert machine.processes == [a, b, c]
    assert machine.process(b.pid) is b
    assert a.rss_pages == 0 and a.areas == {}


def test_exited_process_leaves_the_machine(machine):
    a, b = machine.spawn(), machine.spawn()
    a.exit()
    assert machine.processes == [b]
    with pytest.raises(ProcessLookupError) as e:
        machine.process(a.pid)
    assert e.value.errno == errno.ESRCH
    assert "exited" in repr(a)


def test_pids_are_not_reused(machine):
    seen = set()
    for _ in range(5):
        p = machine.spawn()
        assert p.pid not in seen
        seen.add(p.pid)
        p.exit()


def test_many_processes_spawn_and_exit(machine):
    procs = [machine.spawn() for _ in range(200)]
    for i, p in enumerate(procs):
        a = p.mmap(PAGE_SIZE)
        p.write(a, bytes([i % 256]) * 10)
    assert machine.used_pages == 200
    for i, p in enumerate(procs):
        assert p.read(p.areas.peekitem(0)[0], 10) == bytes([i % 256]) * 10
    for p in procs[::2]:
        p.exit()
    assert machine.used_pages == 100
    for p in procs[1::2]:
        p.exit()
    assert machine.free_pages == machine.nr_frames
    assert machine.processes == []


# --- frame accounting ------------------------------------------------------------


def test_reading_never_written_memory_uses_no_frame(machine, proc):
    a = proc.mmap(1024 * PAGE_SIZE)
    assert proc.read(a, 1024 * PAGE_SIZE) == bytes(1024 * PAGE_SIZE)
    assert machine.used_pages == 0
    assert machine.free_pages == machine.nr_frames
    assert proc.rss_pages == 0


def test_used_pages_count_frames_not_mappings(machine, proc):
    a = proc.mmap(16 * PAGE_SIZE)
    proc.write(a, b"x" * 16 * PAGE_SIZE)
    child = proc.fork()
    grandchild = child.fork()
    # three processes map the same 16 frames
    assert machine.used_pages == 16
    assert proc.rss_pages == child.rss_pages == grandchild.rss_pages == 16
    grandchild.write(a, b"y")
    assert machine.used_pages == 17
    assert_frames_add_up(machine)


def test_meminfo_matches_properties(machine, proc):
    a = proc.mmap(40 * PAGE_SIZE)
    proc.fill(a, 0x5A, 40 * PAGE_SIZE)
    pfn = machine.balloon_page_alloc()
    info = machine.meminfo()
    assert info["used_pages"] == machine.used_pages == 40
    assert info["balloon_pages"] == machine.balloon_pages == 1
    assert info["free_pages"] == machine.free_pages == machine.nr_frames - 41
    assert info["totalram_pages"] == machine.totalram_pages
    machine.balloon_page_free(pfn)


def test_repr_names_the_counts(machine, proc):
    a = proc.mmap(4 * PAGE_SIZE)
    proc.write(a, b"1" * 3 * PAGE_SIZE)
    r = repr(machine)
    assert f"{machine.nr_frames} frames" in r
    assert "3 used" in r and "1 processes" in r


def test_exit_frees_every_frame_it_alone_used(machine, proc):
    a = proc.mmap(100 * PAGE_SIZE)
    proc.fill(a, 1, 100 * PAGE_SIZE)
    child = proc.fork()
    child.write(a, b"\x02" * 10 * PAGE_SIZE)   # 10 private copies
    assert machine.used_pages == 110
    proc.exit()
    assert machine.used_pages == 100            # the child's 10 + 90 shared
    assert child.read(a + 10 * PAGE_SIZE, PAGE_SIZE) == b"\x01" * PAGE_SIZE
    child.exit()
    assert machine.used_pages == 0
    assert machine.free_pages == machine.nr_frames


def test_released_frames_count_frames_given_back(machine, proc):
    a = proc.mmap(64 * PAGE_SIZE)
    proc.fill(a, 7, 64 * PAGE_SIZE)
    before = machine.meminfo()["released_frames"]
    proc.munmap(a, 64 * PAGE_SIZE)
    assert machine.meminfo()["released_frames"] - before == 64


# --- the balloon's frames ----------------------------------------------------------


def test_balloon_frames_are_neither_free_nor_used():
    m = Machine(ram=16 * PAGE_SIZE)
    pfns = [m.balloon_page_alloc() for _ in range(5)]
    assert len(set(pfns)) == 5 and all(0 <= f < 16 for f in pfns)
    assert (m.free_pages, m.used_pages, m.balloon_pages) == (11, 0, 5)
    m.check()
    for f in pfns:
        m.balloon_page_free(f)
    assert (m.free_pages, m.used_pages, m.balloon_pages) == (16, 0, 0)
    m.check()


def test_balloon_alloc_enomem_does_not_call_notifiers():
    m = Machine(ram=4 * PAGE_SIZE)
    calls = []
    m.register_oom_notifier(lambda: calls.append(1) or 0)
    pfns = [m.balloon_page_alloc() for _ in range(4)]
    with pytest.raises(OSError) as e:
        m.balloon_page_alloc()
    assert e.value.errno == errno.ENOMEM
    assert calls == []
    assert m.balloon_pages == 4
    for f in pfns:
        m.balloon_page_free(f)


def test_balloon_frame_is_not_mapped_by_processes():
    m = Machine(ram=8 * PAGE_SIZE)
    pfn = m.balloon_page_alloc()
    p = m.spawn()
    a = p.mmap(7 * PAGE_SIZE)
    p.fill(a, 3, 7 * PAGE_SIZE)
    pfns, flags = p.ptes(a, 7)
    assert pfn not in pfns
    assert flags == [1] * 7
    assert m.free_pages == 0
    m.check()


@pytest.mark.parametrize("bad", [-1, 16, 1 << 40])
def test_balloon_free_of_a_non_balloon_frame(bad):
    m = Machine(ram=16 * PAGE_SIZE)
    with pytest.raises(ValueError):
        m.balloon_page_free(bad)
    # a used frame is not a balloon frame either
    p = m.spawn()
    a = p.mmap(PAGE_SIZE)
    p.write(a, b"z")
    used = p.ptes(a, 1)[0][0]
    with pytest.raises(ValueError):
        m.balloon_page_free(used)
    # nor is a free one, nor one freed twice
    pfn = m.balloon_page_alloc()
    m.balloon_page_free(pfn)
    with pytest.raises(ValueError):
        m.balloon_page_free(pfn)
    assert p.read(a, 1) == b"z"
    assert (m.used_pages, m.balloon_pages) == (1, 0)
    m.check()


# --- managed pages and zones ------------------------------------------------------------


def test_adjust_managed_page_count():
    m = Machine(ram=64 * PAGE_SIZE)
    m.adjust_managed_page_count(-10)
    assert m.totalram_pages == 54
    m.adjust_managed_page_count(4)
    assert m.totalram_pages == 58
    with pytest.raises(ValueError):
        m.adjust_managed_page_count(7)    # above nr_frames
    with pytest.raises(ValueError):
        m.adjust_managed_page_count(-59)  # below 0
    assert m.totalram_pages == 58
    m.adjust_managed_page_count(6)
    assert m.totalram_pages == 64


def test_zones_split_frames_evenly():
    m = Machine(ram=10 * PAGE_SIZE, nr_zones=3)
    sizes = [m.zone_size(z) for z in range(3)]
    assert sum(sizes) == 10 and max(sizes) - min(sizes) <= 1
    zones = [m.page_zone(pfn) for pfn in range(10)]
    assert zones == sorted(zones)
    assert [zones.count(z) for z in range(3)] == sizes
    assert [m.zone_managed_pages(z) for z in range(3)] == sizes
    m.adjust_managed_page_count(-1, pfn=9)
    assert m.zone_managed_pages(2) == sizes[2] - 1
    assert m.totalram_pages == 9
    with pytest.raises(ValueError):
        m.zone_managed_pages(3)
    with pytest.raises(ValueError):
        m.page_zone(10)


@pytest.mark.parametrize("nr_frames, nr_zones", [(10, 3), (7, 7), (13, 4), (64, 5), (9, 1)])
def test_zone_of_a_pfn_agrees_with_zone_sizes(nr_frames, nr_zones):
    """page_zone and zone_size describe the same split: taking every frame
    away one pfn at a time (as a balloon does) drains each zone exactly to
    zero, never below."""
    m = Machine(ram=nr_frames * PAGE_SIZE, nr_zones=nr_zones)
    for z in range(nr_zones):
        start = z * nr_frames // nr_zones
        assert [m.page_zone(pfn) for pfn in range(start, start + m.zone_size(z))] == [z] * m.zone_size(z)
    pfns = [m.balloon_page_alloc() for _ in range(nr_frames)]
    for pfn in pfns:
        m.adjust_managed_page_count(-1, pfn=pfn)
    assert [m.zone_managed_pages(z) for z in range(nr_zones)] == [0] * nr_zones
    assert m.totalram_pages == 0
    for pfn in pfns:
        m.adjust_managed_page_count(1, pfn=pfn)
        m.balloon_page_free(pfn)
    assert [m.zone_managed_pages(z) for z in range(nr_zones)] == [m.zone_size(z) for z in range(nr_zones)]
    m.check()


# --- the OOM notifier chain -----------------------------------------------------------


def test_oom_notifiers_register_and_unregister(machine):
    calls = []

    def a():
        calls.append("a")
        return 2

    def b():
        calls.append("b")
        return 3

    machine.register_oom_notifier(a)
    machine.register_oom_notifier(b)
    assert machine.out_of_memory() == 5
    assert calls == ["a", "b"]
    machine.unregister_oom_notifier(a)
    assert machine.out_of_memory() == 3
    with pytest.raises(ValueError):
        machine.unregister_oom_notifier(a)


def test_oom_notifier_results_that_are_not_pages_count_zero(machine):
    machine.register_oom_notifier(lambda: None)
    machine.register_oom_notifier(lambda: -5)
    machine.register_oom_notifier(lambda: 4)
    assert machine.out_of_memory() == 4


# --- the consistency check ------------------------------------------------------------


def test_check_passes_after_every_kind_of_operation(machine, proc):
    a = proc.mmap(32 * PAGE_SIZE)
    machine.check()
    proc.write(a + 100, b"q" * (5 * PAGE_SIZE))
    machine.check()
    child = proc.fork()
    machine.check()
    child.fill(a, 9, 3 * PAGE_SIZE)
    machine.check()
    proc.munmap(a + 8 * PAGE_SIZE, 8 * PAGE_SIZE)
    machine.check()
    child.exit()
    machine.check()


def test_check_counts_an_mm_made_through_the_core():
    """check() recomputes from every mm the core has, not only those Python
    knows: a raw fork sharing the frames, then its destruction, both pass,
    and the shared frames' map counts go up and back down."""
    from ksm_engine._native import ffi, lib

    m = Machine(ram=16 * PAGE_SIZE)
    p = m.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    p.write(a, b"x" * 4 * PAGE_SIZE)
    m.check()
    mm = ffi.new("uint32_t *")
    assert lib.ke_mm_new(m.ke_machine, mm) == 0
    assert lib.ke_mm_fork(m.ke_machine, p.mm, mm[0]) == 0
    m.check()
    # the parent's write now copies: its frame is shared with the raw mm
    p.write(a, b"y")
    assert m.used_pages == 5
    assert lib.ke_mm_destroy(m.ke_machine, mm[0]) == 0
    assert m.used_pages == 4
    assert p.read(a, 2) == b"yx"
    m.check()


def test_frames_are_handed_out_in_address_order_and_reused_first():
    """A fresh machine gives frames 0, 1, 2, ... in order; a freed frame is
    the next one handed out (the free list is LIFO)."""
    m = Machine(ram=64 * PAGE_SIZE)
    p = m.spawn()
    a = p.mmap(64 * PAGE_SIZE)
    p.fill(a, 1, 10 * PAGE_SIZE)
    assert p.ptes(a, 10)[0] == list(range(10))
    p.munmap(a + 3 * PAGE_SIZE, PAGE_SIZE)
    p.munmap(a + 7 * PAGE_SIZE, PAGE_SIZE)
    p.fill(a + 20 * PAGE_SIZE, 2, 3 * PAGE_SIZE)
    assert p.ptes(a + 20 * PAGE_SIZE, 3)[0] == [7, 3, 10]
    pfn = m.balloon_page_alloc()
    assert pfn == 11
    b = p.mmap(52 * PAGE_SIZE)
    p.fill(b, 3, 52 * PAGE_SIZE)                 # every frame left, in order
    assert p.ptes(b, 52)[0] == list(range(12, 64))
    assert m.free_pages == 0
    m.check()


def test_a_huge_machine_costs_nothing_until_its_frames_are_used():
    """15 TiB of frames: made at once, without touching a record per frame
    (that would be 30 GiB of this process's memory)."""
    from tests.conftest import proc_status_kib

    before = proc_status_kib()
    m = Machine(ram="15TiB")
    assert proc_status_kib() - before < 64 * 1024
    assert m.nr_frames == m.free_pages == 15 << 28
    p = m.spawn()
    a = p.mmap(1 << 30)
    p.write(a + (1 << 29) + 5, b"far away")
    assert p.read(a + (1 << 29), 13) == bytes(5) + b"far away"
    assert (m.used_pages, m.free_pages) == (1, (15 << 28) - 1)
    p.exit()
    assert m.free_pages == m.nr_frames
