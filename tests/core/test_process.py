"""Processes: mmap and munmap with their areas, read, write, fill
and readinto over page and area boundaries, copy-on-write after fork, exit,
RSS and the ptes, on a small machine.

Copy-on-write is checked through the page tables (p.ptes gives each page's
frame): a page mapped once is written in place (same frame), a page mapped
by several processes is copied first (new frame for the writer, the others
keep the old one and its content).
"""
import array

import numpy as np
import pytest

from ksm_engine import PAGE_SIZE, Machine
from ksm_engine.process import MMAP_BASE, TASK_SIZE

PTE_NONE, PTE_PRESENT = 0, 1
PFN_NONE = 0xFFFFFFFF


def pattern(n, seed=0):
    """n bytes that differ from page to page and within a page."""
    return bytes((i * 7 + seed + (i >> 12) * 13) & 0xFF for i in range(n))


# --- mmap and the areas ------------------------------------------------------------


def test_mmap_returns_page_aligned_addresses_with_gaps(proc):
    a = proc.mmap(3 * PAGE_SIZE)
    b = proc.mmap(PAGE_SIZE)
    c = proc.mmap(5 * PAGE_SIZE)
    assert a == MMAP_BASE
    for x in (a, b, c):
        assert x % PAGE_SIZE == 0
    assert b >= a + 3 * PAGE_SIZE and c >= b + PAGE_SIZE
    assert [(r.start, r.end) for r in proc.areas.values()] == [
        (a, a + 3 * PAGE_SIZE), (b, b + PAGE_SIZE), (c, c + 5 * PAGE_SIZE)]
    # a guard gap between areas: the byte after an area faults
    assert proc.area_at(a + 3 * PAGE_SIZE) is None
    assert proc.area_at(a).start == a and proc.area_at(a + 3 * PAGE_SIZE - 1).start == a


def test_mmap_at_a_fixed_address(proc):
    addr = 0x40000000
    assert proc.mmap(2 * PAGE_SIZE, addr=addr) == addr
    # right next to it, touching, is fine (no overlap)
    assert proc.mmap(PAGE_SIZE, addr=addr + 2 * PAGE_SIZE) == addr + 2 * PAGE_SIZE
    proc.write(addr + 2 * PAGE_SIZE - 3, b"abcdef")   # spans both areas
    assert proc.read(addr + 2 * PAGE_SIZE - 3, 6) == b"abcdef"
    # the next automatic placement goes after the fixed areas
    c = proc.mmap(PAGE_SIZE)
    assert c >= addr + 3 * PAGE_SIZE


def test_mmap_fixed_at_the_top_of_the_address_space(proc):
    top = TASK_SIZE - 2 * PAGE_SIZE
    assert proc.mmap(2 * PAGE_SIZE, addr=top) == top
    proc.write(top, b"x" * PAGE_SIZE + b"y" * PAGE_SIZE)
    assert proc.read(top + PAGE_SIZE - 1, 2) == b"xy"
    assert proc.read(TASK_SIZE - 1, 1) == b"y"


def test_mmap_fixed_at_address_zero(proc):
    assert proc.mmap(PAGE_SIZE, addr=0) == 0
    proc.write(0, b"null page")
    assert proc.read(0, 9) == b"null page"


def test_munmap_whole_area(machine, proc):
    a = proc.mmap(8 * PAGE_SIZE)
    proc.fill(a, 0xAB, 8 * PAGE_SIZE)
    assert machine.used_pages == 8
    proc.munmap(a, 8 * PAGE_SIZE)
    assert proc.areas == {}
    assert machine.used_pages == 0
    assert proc.rss_pages == 0


def test_munmap_middle_splits_the_area(machine, proc):
    a = proc.mmap(10 * PAGE_SIZE)
    data = pattern(10 * PAGE_SIZE)
    proc.write(a, data)
    proc.munmap(a + 3 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert [(r.start, r.end) for r in proc.areas.values()] == [
        (a, a + 3 * PAGE_SIZE), (a + 7 * PAGE_SIZE, a + 10 * PAGE_SIZE)]
    assert proc.read(a, 3 * PAGE_SIZE) == data[:3 * PAGE_SIZE]
    assert proc.read(a + 7 * PAGE_SIZE, 3 * PAGE_SIZE) == data[7 * PAGE_SIZE:]
    assert machine.used_pages == 6 and proc.rss_pages == 6
    # the hole is gone: mapping it again gives zeros, not the old data
    assert proc.mmap(4 * PAGE_SIZE, addr=a + 3 * PAGE_SIZE) == a + 3 * PAGE_SIZE
    assert proc.read(a + 3 * PAGE_SIZE, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE)
    assert proc.read(a, 10 * PAGE_SIZE) == data[:3 * PAGE_SIZE] + bytes(4 * PAGE_SIZE) + data[7 * PAGE_SIZE:]


def test_munmap_head_and_tail(proc):
    a = proc.mmap(6 * PAGE_SIZE)
    proc.munmap(a, PAGE_SIZE)
    proc.munmap(a + 5 * PAGE_SIZE, PAGE_SIZE)
    assert [(r.start, r.end) for r in proc.areas.values()] == [(a + PAGE_SIZE, a + 5 * PAGE_SIZE)]


def test_munmap_spanning_several_areas_and_holes(machine, proc):
    a = proc.mmap(4 * PAGE_SIZE)
    b = proc.mmap(4 * PAGE_SIZE)
    c = proc.mmap(4 * PAGE_SIZE)
    for x in (a, b, c):
        proc.fill(x, 1, 4 * PAGE_SIZE)
    # from the middle of a to the middle of c, holes included
    proc.munmap(a + 2 * PAGE_SIZE, c + 2 * PAGE_SIZE - (a + 2 * PAGE_SIZE))
    assert [(r.start, r.end) for r in proc.areas.values()] == [
        (a, a + 2 * PAGE_SIZE), (c + 2 * PAGE_SIZE, c + 4 * PAGE_SIZE)]
    assert machine.used_pages == 4


def test_munmap_of_unmapped_range_is_not_an_error(machine, proc):
    a = proc.mmap(PAGE_SIZE)
    proc.munmap(a + 16 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert list(proc.areas) == [a]


def test_munmap_of_a_single_page_in_the_middle(proc):
    a = proc.mmap(4 * PAGE_SIZE)
    proc.munmap(a + PAGE_SIZE, PAGE_SIZE)
    assert [(r.start, r.end) for r in proc.areas.values()] == [
        (a, a + PAGE_SIZE), (a + 2 * PAGE_SIZE, a + 4 * PAGE_SIZE)]


# --- read, write, fill --------------------------------------------------------------


def test_fresh_area_reads_zeros_without_frames(machine, proc):
    a = proc.mmap(64 * PAGE_SIZE)
    assert proc.read(a + 123, 10 * PAGE_SIZE) == bytes(10 * PAGE_SIZE)
    pfns, flags = proc.ptes(a, 64)
    assert flags == [PTE_NONE] * 64 and pfns == [PFN_NONE] * 64
    assert machine.used_pages == 0


def test_write_then_read_back_across_pages(machine, proc):
    a = proc.mmap(16 * PAGE_SIZE)
    data = pattern(5 * PAGE_SIZE + 77)
    proc.write(a + 1000, data)
    assert proc.read(a + 1000, len(data)) == data
    # the untouched bytes around it still read zero
    assert proc.read(a, 1000) == bytes(1000)
    end = a + 1000 + len(data)
    assert proc.read(end, a + 16 * PAGE_SIZE - end) == bytes(a + 16 * PAGE_SIZE - end)
    # pages 0..6 got frames (the write touches 7 pages), the rest none
    flags = proc.ptes(a, 16)[1]
    assert flags == [PTE_PRESENT] * 6 + [PTE_NONE] * 10
    assert machine.used_pages == 6 == proc.rss_pages


def test_partial_page_write_keeps_the_rest_of_the_page(proc):
    a = proc.mmap(2 * PAGE_SIZE)
    proc.fill(a, 0x11, 2 * PAGE_SIZE)
    proc.write(a + PAGE_SIZE - 2, b"\xff\xee\xdd\xcc")
    assert proc.read(a + PAGE_SIZE - 4, 8) == b"\x11\x11\xff\xee\xdd\xcc\x11\x11"


def test_write_spanning_two_touching_areas(proc):
    a = proc.mmap(PAGE_SIZE, addr=0x20000000)
    b = proc.mmap(PAGE_SIZE, addr=0x20000000 + PAGE_SIZE)
    data = pattern(2 * PAGE_SIZE, 5)
    proc.write(a, data)
    assert proc.read(a, PAGE_SIZE) == data[:PAGE_SIZE]
    assert proc.read(b, PAGE_SIZE) == data[PAGE_SIZE:]


def test_rewrite_of_a_private_page_is_in_place(machine, proc):
    a = proc.mmap(4 * PAGE_SIZE)
    proc.write(a, b"1" * 4 * PAGE_SIZE)
    before = proc.ptes(a, 4)[0]
    proc.write(a + 5, b"2" * (3 * PAGE_SIZE))
    assert proc.ptes(a, 4)[0] == before
    assert machine.used_pages == 4


@pytest.mark.parametrize("make", [
    bytes, bytearray,
    lambda b: memoryview(b),
    lambda b: array.array("B", b),
    lambda b: np.frombuffer(b, dtype=np.uint8).copy(),
    lambda b: np.frombuffer(b, dtype=np.uint32).copy(),
    lambda b: memoryview(bytearray(b)).cast("I"),
])
def test_write_takes_any_buffer(proc, make):
    a = proc.mmap(2 * PAGE_SIZE)
    data = pattern(PAGE_SIZE + 400, 3)
    proc.write(a + 4, make(data))
    assert proc.read(a + 4, len(data)) == data


def test_write_takes_non_contiguous_buffers(proc):
    a = proc.mmap(2 * PAGE_SIZE)
    base = np.arange(2 * PAGE_SIZE, dtype=np.uint8)
    strided = base[::2]                      # not contiguous
    proc.write(a, strided)
    assert proc.read(a, PAGE_SIZE) == strided.tobytes()
    mv = memoryview(bytes(range(256)) * 2)[::3]
    proc.write(a + PAGE_SIZE, mv)
    assert proc.read(a + PAGE_SIZE, len(mv)) == mv.tobytes()


def test_write_copies_the_data_at_once(proc):
    a = proc.mmap(PAGE_SIZE)
    buf = bytearray(b"before")
    proc.write(a, buf)
    buf[:] = b"after!"
    assert proc.read(a, 6) == b"before"


def test_empty_write_and_read(machine, proc):
    a = proc.mmap(PAGE_SIZE)
    proc.write(a, b"")
    assert proc.read(a, 0) == b""
    proc.fill(a, 1, 0)
    assert machine.used_pages == 0


def test_fill(proc):
    a = proc.mmap(8 * PAGE_SIZE)
    proc.fill(a + 10, 0xC3, 3 * PAGE_SIZE)
    assert proc.read(a + 10, 3 * PAGE_SIZE) == b"\xc3" * 3 * PAGE_SIZE
    assert proc.read(a, 10) == bytes(10)
    assert proc.read(a + 10 + 3 * PAGE_SIZE, 1) == b"\x00"
    proc.fill(a, 0, 8 * PAGE_SIZE)
    assert proc.read(a, 8 * PAGE_SIZE) == bytes(8 * PAGE_SIZE)


def test_read_returns_bytes(proc):
    a = proc.mmap(PAGE_SIZE)
    out = proc.read(a, 10)
    assert type(out) is bytes and out == bytes(10)


def test_readinto(proc):
    a = proc.mmap(4 * PAGE_SIZE)
    data = pattern(3 * PAGE_SIZE, 9)
    proc.write(a + 100, data)
    buf = bytearray(3 * PAGE_SIZE)
    assert proc.readinto(a + 100, buf) == len(buf)
    assert bytes(buf) == data
    arr = np.zeros(PAGE_SIZE // 4, dtype=np.uint32)
    assert proc.readinto(a + 100, arr) == PAGE_SIZE
    assert arr.tobytes() == data[:PAGE_SIZE]
    assert proc.readinto(a, bytearray()) == 0


# --- fork and copy-on-write -------------------------------------------------------------


def test_fork_shares_every_page(machine, proc):
    a = proc.mmap(8 * PAGE_SIZE)
    b = proc.mmap(4 * PAGE_SIZE)
    data = pattern(8 * PAGE_SIZE)
    proc.write(a, data)
    proc.write(b + PAGE_SIZE, b"second area")
    child = proc.fork()
    assert child.pid != proc.pid
    assert [(r.start, r.end) for r in child.areas.values()] == [(r.start, r.end) for r in proc.areas.values()]
    assert child.read(a, 8 * PAGE_SIZE) == data
    assert child.read(b + PAGE_SIZE, 11) == b"second area"
    assert child.ptes(a, 8) == proc.ptes(a, 8)
    assert child.ptes(b, 4) == proc.ptes(b, 4)
    assert machine.used_pages == 9
    assert child.rss_pages == proc.rss_pages == 9


def test_child_write_copies_and_parent_keeps_its_data(machine, proc):
    a = proc.mmap(4 * PAGE_SIZE)
    data = pattern(4 * PAGE_SIZE)
    proc.write(a, data)
    child = proc.fork()
    parent_pfns = proc.ptes(a, 4)[0]
    child.write(a + PAGE_SIZE + 10, b"child")
    assert child.read(a + PAGE_SIZE, PAGE_SIZE) == data[PAGE_SIZE:PAGE_SIZE + 10] + b"child" + data[PAGE_SIZE + 15:2 * PAGE_SIZE]
    assert proc.read(a, 4 * PAGE_SIZE) == data
    cpfns = child.ptes(a, 4)[0]
    assert cpfns[1] != parent_pfns[1]
    assert cpfns[0] == parent_pfns[0] and cpfns[2:] == parent_pfns[2:]
    assert proc.ptes(a, 4)[0] == parent_pfns
    assert machine.used_pages == 5


def test_parent_write_after_fork_copies_too(machine, proc):
    a = proc.mmap(PAGE_SIZE)
    proc.write(a, b"old")
    child = proc.fork()
    proc.write(a, b"new")
    assert proc.read(a, 3) == b"new" and child.read(a, 3) == b"old"
    assert machine.used_pages == 2
    # the child is now the only mapper of the old frame: written in place
    pfn = child.ptes(a, 1)[0][0]
    child.write(a, b"own")
    assert child.ptes(a, 1)[0][0] == pfn
    assert machine.used_pages == 2


def test_full_page_cow_write_needs_no_copy_but_gives_a_new_frame(machine, proc):
    a = proc.mmap(2 * PAGE_SIZE)
    proc.fill(a, 1, 2 * PAGE_SIZE)
    child = proc.fork()
    child.fill(a, 2, 2 * PAGE_SIZE)
    assert proc.read(a, 2 * PAGE_SIZE) == b"\x01" * 2 * PAGE_SIZE
    assert child.read(a, 2 * PAGE_SIZE) == b"\x02" * 2 * PAGE_SIZE
    assert machine.used_pages == 4


def test_fork_of_never_written_pages_shares_nothing(machine, proc):
    a = proc.mmap(8 * PAGE_SIZE)
    child = proc.fork()
    child.write(a, b"c")
    assert proc.read(a, 1) == b"\x00"
    assert machine.used_pages == 1 and proc.rss_pages == 0


def test_fork_chain_and_exit_in_any_order(machine, proc):
    a = proc.mmap(4 * PAGE_SIZE)
    proc.write(a, b"A" * 4 * PAGE_SIZE)
    c1 = proc.fork()
    c1.write(a, b"B" * PAGE_SIZE)
    c2 = c1.fork()
    c2.write(a + PAGE_SIZE, b"C" * PAGE_SIZE)
    proc.exit()
    assert c1.read(a, 2 * PAGE_SIZE) == b"B" * PAGE_SIZE + b"A" * PAGE_SIZE
    assert c2.read(a, 3 * PAGE_SIZE) == b"B" * PAGE_SIZE + b"C" * PAGE_SIZE + b"A" * PAGE_SIZE
    c1.exit()
    assert c2.read(a, 4 * PAGE_SIZE) == b"B" * PAGE_SIZE + b"C" * PAGE_SIZE + b"A" * 2 * PAGE_SIZE
    assert machine.used_pages == 4
    c2.exit()
    assert machine.free_pages == machine.nr_frames


def test_fork_names_and_areas_are_independent(proc):
    a = proc.mmap(4 * PAGE_SIZE)
    child = proc.fork(name="kid")
    assert child.name == "kid"
    assert proc.fork().name == f"{proc.name}-child"
    child.munmap(a, 2 * PAGE_SIZE)
    assert list(proc.areas) == [a]
    assert list(child.areas) == [a + 2 * PAGE_SIZE]
    # each places new areas on its own
    assert proc.mmap(PAGE_SIZE) == child.mmap(PAGE_SIZE)


def test_munmap_in_child_leaves_parent_pages(machine, proc):
    a = proc.mmap(4 * PAGE_SIZE)
    proc.fill(a, 5, 4 * PAGE_SIZE)
    child = proc.fork()
    child.munmap(a, 4 * PAGE_SIZE)
    assert proc.read(a, 4 * PAGE_SIZE) == b"\x05" * 4 * PAGE_SIZE
    assert machine.used_pages == 4
    # the parent is the only mapper again: in-place writes
    pfns = proc.ptes(a, 4)[0]
    proc.fill(a, 6, 4 * PAGE_SIZE)
    assert proc.ptes(a, 4)[0] == pfns


# --- exit, rss ------------------------------------------------------------------------


def test_exit_frees_frames_and_areas(machine, proc):
    a = proc.mmap(32 * PAGE_SIZE)
    proc.fill(a, 9, 32 * PAGE_SIZE)
    proc.exit()
    assert not proc.alive
    assert proc.rss_pages == 0
    assert proc.areas == {}
    assert machine.used_pages == 0


def test_rss_counts_mapped_pages(proc):
    a = proc.mmap(16 * PAGE_SIZE)
    assert proc.rss_pages == 0
    proc.write(a + PAGE_SIZE - 1, b"xy")         # two pages
    assert proc.rss_pages == 2
    proc.read(a, 16 * PAGE_SIZE)                  # reads add nothing
    assert proc.rss_pages == 2
    proc.munmap(a, PAGE_SIZE)
    assert proc.rss_pages == 1


def test_ptes_of_a_range(proc):
    a = proc.mmap(4 * PAGE_SIZE)
    proc.write(a + 2 * PAGE_SIZE, b"!")
    pfns, flags = proc.ptes(a, 4)
    assert flags == [0, 0, 1, 0]
    assert pfns[2] != PFN_NONE and pfns[0] == pfns[1] == pfns[3] == PFN_NONE
    assert proc.ptes(a, 0) == ([], [])


def test_big_area_in_a_small_machine():
    """Address space is not memory: a 1 TiB area costs nothing until
    written, and far apart pages each take one frame."""
    m = Machine(ram="1MiB")
    p = m.spawn()
    a = p.mmap(1 << 40)
    for off in (0, 1 << 30, (1 << 40) - PAGE_SIZE):
        p.write(a + off, b"far")
    assert m.used_pages == 3
    assert p.read(a + (1 << 30), 3) == b"far"
    assert p.read(a + (1 << 39), 16) == bytes(16)
    p.munmap(a, 1 << 40)
    assert m.used_pages == 0
    m.check()


def test_mmap_after_a_fixed_area_at_the_top_finds_a_gap(proc):
    """An area mapped at the very top must not use up the address space:
    mmap without an address then takes the lowest gap that fits."""
    a = proc.mmap(PAGE_SIZE)
    top = proc.mmap(PAGE_SIZE, addr=TASK_SIZE - PAGE_SIZE)
    b = proc.mmap(4 * PAGE_SIZE)
    assert a + PAGE_SIZE < b < top
    assert proc.area_at(b).end == b + 4 * PAGE_SIZE
    c = proc.mmap(PAGE_SIZE)
    assert b + 4 * PAGE_SIZE < c < top
    # fill the space between: no gap is left for 4 pages, ENOMEM
    rest = TASK_SIZE - PAGE_SIZE - (c + 2 * PAGE_SIZE) - 2 * PAGE_SIZE
    big = proc.mmap(rest)
    assert big == c + 2 * PAGE_SIZE
    with pytest.raises(OSError) as e:
        proc.mmap(4 * PAGE_SIZE)
    assert e.value.errno == 12
    # a hole made by munmap is found again
    proc.munmap(b, 4 * PAGE_SIZE)
    assert proc.mmap(2 * PAGE_SIZE) == b
