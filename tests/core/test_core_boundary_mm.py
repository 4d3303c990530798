"""The C core's bounds, called raw through cffi (ksm_engine._native.lib),
below every check the Python layer makes: the mm calls: unknown and stale mm ids,
unaligned, overflowing and huge addresses and lengths, NULL buffers, fill
bytes out of range.  Each must come back as the negative
errno the header promises (-EINVAL, -ESRCH, -EFAULT, -ENOMEM), never as a
crash or a change to the machine.

Every case runs in a forked child (boundary.isolated), so a crash is
reported as this test failing with the signal, not as the end of the test
run; the child sends its results back through a pipe.
"""

import pytest

from ksm_engine import PAGE_SIZE
from ksm_engine._native import ffi, lib

from .boundary import EFAULT, EINVAL, ENOMEM, ESRCH, NULL, TOP, U32_MAX, U64_MAX, counts, intact, isolated


# --- mm ids -------------------------------------------------------------------------------


def bad_ids(p, stale):
    return [0, stale, p.mm + 1000, lib.KE_MAX_MMS - 1, lib.KE_MAX_MMS, U32_MAX]


def test_every_mm_call_with_bad_ids_is_esrch(world):
    m, p, a, stale = world

    def run():
        buf = ffi.new("char[]", PAGE_SIZE)
        s = ffi.new("struct ke_mm_stat *")
        pfn, fl = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        pfns, fls = ffi.new("uint32_t[]", 4), ffi.new("uint8_t[]", 4)
        out = ffi.new("struct ke_scan_out *")
        rng = ffi.new("struct ke_range *", {"start": 0, "end": PAGE_SIZE})
        items = ffi.new("struct ke_rmap_info[]", 4)
        n, nxt = ffi.new("uint32_t *"), ffi.new("uint64_t *")
        short = ffi.new("uint64_t *")
        results = []
        for bad in bad_ids(p, stale):
            results.append([
                lib.ke_mm_destroy(m.ke_machine, bad),
                lib.ke_mm_fork(m.ke_machine, bad, p.mm),
                lib.ke_mm_fork(m.ke_machine, p.mm, bad),
                lib.ke_mm_write(m.ke_machine, bad, a, buf, 16, short),
                lib.ke_mm_fill(m.ke_machine, bad, a, 1, 16, short),
                lib.ke_mm_read(m.ke_machine, bad, a, buf, 16),
                lib.ke_mm_unmap(m.ke_machine, bad, a, PAGE_SIZE),
                lib.ke_mm_unmerge(m.ke_machine, bad, a, PAGE_SIZE, short),
                lib.ke_mm_drop_rmap_items(m.ke_machine, bad, a, PAGE_SIZE),
                lib.ke_mm_stat(m.ke_machine, bad, s),
                lib.ke_mm_pte(m.ke_machine, bad, a, pfn, fl),
                lib.ke_mm_ptes(m.ke_machine, bad, a, 4, pfns, fls),
                lib.ke_ksm_scan_mm(m.ke_machine, bad, rng, 1, 0, 10, 0, out),
                lib.ke_mm_rmap_items(m.ke_machine, bad, 0, items, 4, n, nxt),
            ])
        return results, intact(m, p, a)
    results, ok = isolated(run)
    assert ok
    for row in results:
        assert row == [ESRCH] * 14


def test_fork_onto_itself_or_a_used_child(world):
    m, p, a, _ = world

    def run():
        other = m.spawn()
        o = other.mmap(PAGE_SIZE)
        other.write(o, b"x")
        return (lib.ke_mm_fork(m.ke_machine, p.mm, p.mm),
                lib.ke_mm_fork(m.ke_machine, p.mm, other.mm),      # the child must be fresh
                other.read(o, 1), m.used_pages)
    assert isolated(run) == (ESRCH, EINVAL, b"x", 3)


def test_destroyed_mm_id_stays_dead_until_reused(world):
    m, p, a, _ = world

    def run():
        mm = ffi.new("uint32_t *")
        assert lib.ke_mm_new(m.ke_machine, mm) == 0
        first = lib.ke_mm_destroy(m.ke_machine, mm[0])
        second = lib.ke_mm_destroy(m.ke_machine, mm[0])
        return first, second, intact(m, p, a)
    assert isolated(run) == (0, ESRCH, True)


# --- addresses and lengths -------------------------------------------------------------------


@pytest.mark.parametrize("addr, length, rc", [
    (TOP, 1, EFAULT),                       # past the last page
    (TOP - 1, 2, EFAULT),                   # across the top
    (U64_MAX, 1, EFAULT),
    (U64_MAX - PAGE_SIZE + 1, 2 * PAGE_SIZE, EFAULT),   # addr + len wraps 64 bits
    (0, TOP + 1, EFAULT),
    (0, U64_MAX, EFAULT),
    (TOP - 1, 1, 0),                        # the very last byte is addressable
    (0, 0, 0),
])
def test_read_bounds(world, addr, length, rc):
    m, p, a, _ = world

    def run():
        n = min(length, 16)
        buf = ffi.new("char[]", max(n, 1))
        got = lib.ke_mm_read(m.ke_machine, p.mm, addr, buf, length if rc else n)
        return got, intact(m, p, a)
    assert isolated(run) == (rc, True)


@pytest.mark.parametrize("addr, length, rc", [
    (TOP, 1, EFAULT),
    (TOP - 1, 2, EFAULT),
    (U64_MAX, 1, EFAULT),
    (U64_MAX - PAGE_SIZE + 1, 2 * PAGE_SIZE, EFAULT),
    (0, TOP + 1, EFAULT),
    (0, U64_MAX, EFAULT),
])
def test_write_and_fill_bounds(world, addr, length, rc):
    m, p, a, _ = world

    def run():
        buf = ffi.new("char[]", 16)
        short = ffi.new("uint64_t *")
        return (lib.ke_mm_write(m.ke_machine, p.mm, addr, buf, length, short),
                lib.ke_mm_fill(m.ke_machine, p.mm, addr, 7, length, short),
                lib.ke_mm_fill(m.ke_machine, p.mm, addr, 7, length, NULL),
                intact(m, p, a))
    assert isolated(run) == (rc, rc, rc, True)


@pytest.mark.parametrize("length", [1 << 30, 1 << 40, TOP])
def test_huge_writes_run_out_of_frames_before_touching_the_buffer(world, length):
    """A length far beyond the machine's frames fails with -ENOMEM and the
    number of frames missing, before a byte of the (small) buffer is read
    and before any page table is built for the range."""
    m, p, a, _ = world

    def run():
        buf = ffi.new("char[]", 16)
        short = ffi.new("uint64_t *")
        rc = lib.ke_mm_write(m.ke_machine, p.mm, 0, buf, length, short)
        missing = short[0]
        rc2 = lib.ke_mm_fill(m.ke_machine, p.mm, 0, 1, length, NULL)
        return rc, missing, rc2, intact(m, p, a)
    rc, missing, rc2, ok = isolated(run)
    assert (rc, rc2, ok) == (ENOMEM, ENOMEM, True)
    # the two pages already written need no frame; the fixture's 254 are free
    need = length // PAGE_SIZE - (2 if length > a else 0)
    assert missing == need - 254


def test_null_buffers(world):
    m, p, a, _ = world

    def run():
        short = ffi.new("uint64_t *")
        return [
            lib.ke_mm_write(m.ke_machine, p.mm, a, NULL, 16, short),
            lib.ke_mm_read(m.ke_machine, p.mm, a, NULL, 16),
            lib.ke_mm_write(m.ke_machine, p.mm, a, NULL, 0, short),    # nothing to copy: fine
            lib.ke_mm_read(m.ke_machine, p.mm, a, NULL, 0),
            lib.ke_checksum_pages(NULL, 1, 0, ffi.new("uint32_t[]", 1)),
            lib.ke_checksum_pages(ffi.new("char[]", PAGE_SIZE), 1, 0, NULL),
            intact(m, p, a),
        ]
    assert isolated(run) == [EINVAL, EINVAL, 0, 0, EINVAL, EINVAL, True]


def test_null_hash_buffers_hash_as_empty():
    def run():
        empty = ffi.new("char[]", 1)
        return (lib.ke_xxh64(NULL, 0, 5) == lib.ke_xxh64(empty, 0, 5),
                lib.ke_xxh64(NULL, 1 << 40, 5) == lib.ke_xxh64(empty, 0, 5),
                lib.ke_jhash2(NULL, U32_MAX, 17) == lib.ke_jhash2(ffi.cast("uint32_t *", empty), 0, 17),
                lib.ke_checksum_page(NULL, 0), lib.ke_checksum_page(NULL, 1))
    assert isolated(run) == (True, True, True, 0, 0)


@pytest.mark.parametrize("byte", [-1, 256, 1 << 30, -(1 << 31)])
def test_fill_byte_out_of_range(world, byte):
    m, p, a, _ = world
    assert isolated(lambda: (lib.ke_mm_fill(m.ke_machine, p.mm, a, byte, 16, NULL), intact(m, p, a))) == (EINVAL, True)


RANGE_CASES = [
    (1, PAGE_SIZE),                          # unaligned address
    (0, 1),                                  # unaligned length
    (0, PAGE_SIZE + 1),
    (TOP, PAGE_SIZE),                        # beyond the address space
    (0, TOP + PAGE_SIZE),
    (U64_MAX - PAGE_SIZE + 1, 2 * PAGE_SIZE),  # wraps
    (PAGE_SIZE, U64_MAX - PAGE_SIZE + 1),
]


@pytest.mark.parametrize("addr, length", RANGE_CASES)
def test_range_calls_reject_bad_ranges(world, addr, length):
    m, p, a, _ = world

    def run():
        short = ffi.new("uint64_t *")
        return ([lib.ke_mm_unmap(m.ke_machine, p.mm, addr, length),
                 lib.ke_mm_unmerge(m.ke_machine, p.mm, addr, length, short),
                 lib.ke_mm_unmerge(m.ke_machine, p.mm, addr, length, NULL),
                 lib.ke_mm_drop_rmap_items(m.ke_machine, p.mm, addr, length)],
                intact(m, p, a))
    assert isolated(run) == ([EINVAL] * 4, True)


def test_range_calls_over_the_whole_address_space(world):
    """[0, 2**44) is a valid range: unmerge and drop walk it (nothing to
    do), unmap empties the mm."""
    m, p, a, _ = world

    def run():
        short = ffi.new("uint64_t *")
        r = [lib.ke_mm_unmerge(m.ke_machine, p.mm, 0, TOP, short),
             lib.ke_mm_drop_rmap_items(m.ke_machine, p.mm, 0, TOP),
             intact(m, p, a),
             lib.ke_mm_unmap(m.ke_machine, p.mm, 0, TOP)]
        return r, counts(m)
    r, c = isolated(run)
    assert r == [0, 0, True, 0]
    assert c == (256, 256, 0, 0, 0)


@pytest.mark.parametrize("addr, npages", [
    (1, 1), (TOP, 1), (TOP - PAGE_SIZE, 2), (0, (1 << 32) + 1), (0, U64_MAX), (0, 1 << 52),
    (U64_MAX - PAGE_SIZE + 1, 1),
])
def test_ptes_bad_ranges(world, addr, npages):
    m, p, a, _ = world
    assert isolated(lambda: (lib.ke_mm_ptes(m.ke_machine, p.mm, addr, npages, NULL, NULL),
                             intact(m, p, a))) == (EINVAL, True)


def test_ptes_and_pte_with_null_outputs(world):
    m, p, a, _ = world

    def run():
        pfn = ffi.new("uint32_t *")
        fl = ffi.new("uint32_t *")
        return [lib.ke_mm_ptes(m.ke_machine, p.mm, a, 4, NULL, NULL),
                lib.ke_mm_pte(m.ke_machine, p.mm, a + 5, NULL, NULL),
                lib.ke_mm_pte(m.ke_machine, p.mm, a + 5, pfn, fl), fl[0],
                lib.ke_mm_pte(m.ke_machine, p.mm, TOP, pfn, fl),
                lib.ke_mm_ptes(m.ke_machine, p.mm, TOP - PAGE_SIZE, 1, NULL, NULL)]
    assert isolated(run) == [0, 0, 0, lib.KE_PTE_PRESENT, EINVAL, 0]
