"""The C core's bounds, called raw through cffi (ksm_engine._native.lib),
below every check the Python layer makes: unknown and stale ids, NULL
machines, NULL buffers and out-pointers, unaligned, overflowing and huge
addresses and lengths, bad enum values.  Each must come back as the
negative errno the header promises (-EINVAL, -ESRCH, -EFAULT, -ENOMEM),
never as a crash or a change to the machine.

Every case runs in a forked child (``isolated``), so a crash is reported
as this test failing with the signal, not as the end of the test run; the
child sends its results back through a pipe.
"""
import errno
import faulthandler
import os
import pickle
import resource
import signal

import pytest

from ksm_engine import PAGE_SIZE, Machine
from ksm_engine._native import ffi, lib

NULL = ffi.NULL
U32_MAX = 0xFFFFFFFF
U64_MAX = (1 << 64) - 1
TOP = (lib.KE_MAX_VPN + 1) * PAGE_SIZE       # 2**44: the end of an mm's address space
EINVAL, ESRCH, EFAULT, ENOMEM = -errno.EINVAL, -errno.ESRCH, -errno.EFAULT, -errno.ENOMEM


def isolated(fn):
    """Runs fn() in a forked child and returns its (picklable) result;
    a crash or an exception in the child fails the test here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        # a crash is expected to be possible: no core file, no traceback
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        faulthandler.disable()
        code = 0
        try:
            payload = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - report anything
            payload = ("error", repr(e))
            code = 1
        try:
            with os.fdopen(w, "wb") as f:
                pickle.dump(payload, f)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(f"the core crashed: {signal.Signals(os.WTERMSIG(status)).name}")
    if not data:   # died without a word (a sanitizer's report and exit)
        raise AssertionError(f"the core crashed: exit status {os.waitstatus_to_exitcode(status)}")
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise AssertionError(f"in the child: {value}")
    return value


@pytest.fixture
def world():
    """A 1 MiB machine, an mm with two written pages, a destroyed mm id,
    and the frame counts to compare against."""
    m = Machine(ram="1MiB")
    p = m.spawn()
    a = p.mmap(8 * PAGE_SIZE)
    p.write(a, b"\x11" * PAGE_SIZE + b"\x22" * PAGE_SIZE)
    gone = m.spawn()
    stale = gone.mm
    gone.exit()
    return m, p, a, stale


def counts(m):
    c = ffi.new("struct ke_mem_counts *")
    assert lib.ke_machine_counts(m.ke_machine, c) == 0
    return (c.nr_frames, c.free_frames, c.used_frames, c.balloon_frames, c.ksm_frames)


def intact(m, p, a):
    """The machine and the mm are as the fixture made them."""
    assert counts(m) == (256, 254, 2, 0, 0)
    assert p.read(a, 2 * PAGE_SIZE) == b"\x11" * PAGE_SIZE + b"\x22" * PAGE_SIZE
    m.check()
    return True


# --- the machine -------------------------------------------------------------------------


def test_machine_new_bad_sizes():
    def run():
        out = ffi.new("ke_machine **")
        rcs = [lib.ke_machine_new(n, out) for n in (0, U32_MAX - 1, U32_MAX, 1 << 32, U64_MAX)]
        null_out = lib.ke_machine_new(1, NULL)
        lib.ke_machine_free(NULL)
        return rcs, null_out, out[0] == NULL
    rcs, null_out, left_null = isolated(run)
    assert rcs == [EINVAL] * 5
    assert null_out == EINVAL
    assert left_null


def test_machine_calls_with_null():
    def run():
        c = ffi.new("struct ke_mem_counts *")
        pfn = ffi.new("uint32_t *")
        st = ffi.new("struct ke_ksm_stats *")
        cfg = ffi.new("struct ke_ksm_config *", {"max_page_sharing": 256})
        mm = ffi.new("uint32_t *")
        n = ffi.new("uint32_t *")
        nxt32 = ffi.new("uint32_t *")
        info = ffi.new("struct ke_stable_info[]", 4)
        return [
            lib.ke_machine_counts(NULL, c),
            lib.ke_balloon_frame_alloc(NULL, pfn),
            lib.ke_balloon_frame_free(NULL, 0),
            lib.ke_release_flush(NULL),
            lib.ke_fault_inject(NULL, 0, 0, 1),
            lib.ke_mm_new(NULL, mm),
            lib.ke_ksm_configure(NULL, cfg),
            lib.ke_ksm_get_stats(NULL, st),
            lib.ke_ksm_begin_pass(NULL, 1),
            lib.ke_ksm_remove_all(NULL),
            lib.ke_ksm_check(NULL, NULL, 0),
            lib.ke_ksm_stable_nodes(NULL, 0, info, 4, n, nxt32),
        ]
    assert isolated(run) == [EINVAL] * 12


def test_null_machine_with_mm_ids_is_esrch():
    def run():
        buf = ffi.new("char[]", 16)
        s = ffi.new("struct ke_mm_stat *")
        out = ffi.new("struct ke_scan_out *")
        return [
            lib.ke_mm_destroy(NULL, 1),
            lib.ke_mm_fork(NULL, 1, 2),
            lib.ke_mm_write(NULL, 1, 0, buf, 16, NULL),
            lib.ke_mm_fill(NULL, 1, 0, 0, 16, NULL),
            lib.ke_mm_read(NULL, 1, 0, buf, 16),
            lib.ke_mm_unmap(NULL, 1, 0, PAGE_SIZE),
            lib.ke_mm_unmerge(NULL, 1, 0, PAGE_SIZE, NULL),
            lib.ke_mm_drop_rmap_items(NULL, 1, 0, PAGE_SIZE),
            lib.ke_mm_stat(NULL, 1, s),
            lib.ke_mm_pte(NULL, 1, 0, NULL, NULL),
            lib.ke_mm_ptes(NULL, 1, 0, 1, NULL, NULL),
            lib.ke_ksm_scan_mm(NULL, 1, NULL, 0, 0, 1, 0, out),
        ]
    assert isolated(run) == [ESRCH] * 12


def test_machine_out_pointers_null(world):
    m, p, a, _ = world

    def run():
        return [
            lib.ke_machine_counts(m.ke_machine, NULL),
            lib.ke_balloon_frame_alloc(m.ke_machine, NULL),
            lib.ke_mm_new(m.ke_machine, NULL),
            lib.ke_ksm_configure(m.ke_machine, NULL),
            lib.ke_ksm_get_stats(m.ke_machine, NULL),
            lib.ke_ksm_scan_mm(m.ke_machine, p.mm, NULL, 0, 0, 1, 0, NULL),
            lib.ke_mm_stat(m.ke_machine, p.mm, NULL),
            intact(m, p, a),
        ]
    assert isolated(run) == [EINVAL] * 7 + [True]


@pytest.mark.parametrize("pfn", [256, 257, U32_MAX - 1, U32_MAX, 0, 1, 100])
def test_balloon_free_of_frames_it_does_not_hold(world, pfn):
    """Out of range, used (0 and 1 hold the fixture's pages) or free: -EINVAL."""
    m, p, a, _ = world

    def run():
        return lib.ke_balloon_frame_free(m.ke_machine, pfn), intact(m, p, a)
    assert isolated(run) == (EINVAL, True)


@pytest.mark.parametrize("point", [-1, lib.KE_FAULT_NR, 1 << 30, -(1 << 31)])
def test_fault_inject_bad_point(world, point):
    m, p, a, _ = world
    assert isolated(lambda: (lib.ke_fault_inject(m.ke_machine, point, 0, 1), intact(m, p, a))) == (EINVAL, True)


def test_check_with_null_or_short_message_buffers(world):
    m, p, a, _ = world

    def run():
        one = ffi.new("char[]", 1)
        return [lib.ke_ksm_check(m.ke_machine, NULL, 0), lib.ke_ksm_check(m.ke_machine, NULL, 100),
                lib.ke_ksm_check(m.ke_machine, one, 0), lib.ke_ksm_check(m.ke_machine, one, 1), intact(m, p, a)]
    assert isolated(run) == [0, 0, 0, 0, True]


def test_configure_rejects_max_page_sharing_below_two(world):
    m, p, a, _ = world

    def run():
        rcs = []
        for mps in (0, 1):
            cfg = ffi.new("struct ke_ksm_config *", {"max_page_sharing": mps})
            rcs.append(lib.ke_ksm_configure(m.ke_machine, cfg))
        return rcs, intact(m, p, a)
    assert isolated(run) == ([EINVAL, EINVAL], True)


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


# --- the KSM scan and introspection ---------------------------------------------------------


@pytest.mark.parametrize("ranges", [
    [(1, PAGE_SIZE)],                            # unaligned
    [(0, 1)],
    [(PAGE_SIZE, PAGE_SIZE)],                    # empty
    [(2 * PAGE_SIZE, PAGE_SIZE)],                # reversed
    [(0, TOP + PAGE_SIZE)],                      # beyond the address space
    [(U64_MAX - 2 * PAGE_SIZE + 1, U64_MAX - PAGE_SIZE + 1)],     # near 2**64
    [(4 * PAGE_SIZE, 8 * PAGE_SIZE), (0, 2 * PAGE_SIZE)],    # unsorted
    [(0, 4 * PAGE_SIZE), (2 * PAGE_SIZE, 8 * PAGE_SIZE)],    # overlapping
])
def test_scan_rejects_bad_ranges(world, ranges):
    m, p, a, _ = world

    def run():
        rs = ffi.new("struct ke_range[]", [{"start": s, "end": e} for s, e in ranges])
        out = ffi.new("struct ke_scan_out *")
        rc = lib.ke_ksm_scan_mm(m.ke_machine, p.mm, rs, len(ranges), 0, 100, 0, out)
        st = ffi.new("struct ke_ksm_stats *")
        lib.ke_ksm_get_stats(m.ke_machine, st)
        return rc, st.rmap_items, st.pages_scanned, intact(m, p, a)
    assert isolated(run) == (EINVAL, 0, 0, True)


def test_scan_with_null_ranges_or_many_of_them(world):
    m, p, a, _ = world

    def run():
        out = ffi.new("struct ke_scan_out *")
        return [lib.ke_ksm_scan_mm(m.ke_machine, p.mm, NULL, 1, 0, 10, 0, out),
                lib.ke_ksm_scan_mm(m.ke_machine, p.mm, NULL, U32_MAX, 0, 10, 0, out),
                lib.ke_ksm_scan_mm(m.ke_machine, p.mm, NULL, 0, 0, 10, 0, out), out.mm_done,
                intact(m, p, a)]
    assert isolated(run) == [EINVAL, EINVAL, 0, 1, True]


@pytest.mark.parametrize("cursor, budget", [(U64_MAX, 10), (TOP, 10), (0, 1), (0, U32_MAX), (0, 0)])
def test_scan_cursor_and_budget_extremes(world, cursor, budget):
    """A cursor past every range scans nothing; budget 0 or 2**32-1 scans
    the range (at most its 8 pages), never beyond."""
    m, p, a, _ = world

    def run():
        rs = ffi.new("struct ke_range *", {"start": a, "end": a + 8 * PAGE_SIZE})
        out = ffi.new("struct ke_scan_out *")
        assert lib.ke_ksm_begin_pass(m.ke_machine, 1) == 0
        rc = lib.ke_ksm_scan_mm(m.ke_machine, p.mm, rs, 1, cursor, budget, 0, out)
        m.check()
        return rc, out.scanned, out.mm_done
    rc, scanned, done = isolated(run)
    assert rc == 0
    if cursor >= a + 8 * PAGE_SIZE:
        assert (scanned, done) == (0, 1)
    elif budget == 1:
        assert (scanned, done) == (1, 0)
    else:
        assert scanned <= 8 and done == 1


def test_rmap_items_and_stable_nodes_paging_bounds(world):
    m, p, a, _ = world

    def run():
        items = ffi.new("struct ke_rmap_info[]", 4)
        nodes = ffi.new("struct ke_stable_info[]", 4)
        n = ffi.new("uint32_t *")
        nxt64 = ffi.new("uint64_t *")
        nxt32 = ffi.new("uint32_t *")
        r = [lib.ke_mm_rmap_items(m.ke_machine, p.mm, 0, NULL, 4, n, nxt64),      # NULL out, max > 0
             lib.ke_mm_rmap_items(m.ke_machine, p.mm, 0, items, 4, NULL, nxt64),
             lib.ke_mm_rmap_items(m.ke_machine, p.mm, 0, items, 4, n, NULL),
             lib.ke_ksm_stable_nodes(m.ke_machine, 0, NULL, 4, n, nxt32),
             lib.ke_ksm_stable_nodes(m.ke_machine, 0, nodes, 4, NULL, nxt32),
             lib.ke_ksm_stable_nodes(m.ke_machine, 0, nodes, 4, n, NULL)]
        ok = [lib.ke_mm_rmap_items(m.ke_machine, p.mm, U64_MAX, items, 4, n, nxt64), n[0], nxt64[0],
              lib.ke_mm_rmap_items(m.ke_machine, p.mm, TOP, items, 4, n, nxt64), n[0],
              lib.ke_mm_rmap_items(m.ke_machine, p.mm, 0, NULL, 0, n, nxt64), n[0],
              lib.ke_ksm_stable_nodes(m.ke_machine, U32_MAX, nodes, 4, n, nxt32), n[0], nxt32[0],
              lib.ke_ksm_stable_nodes(m.ke_machine, 0, NULL, 0, n, nxt32), n[0]]
        return r, ok, intact(m, p, a)
    r, ok, fine = isolated(run)
    assert r == [EINVAL] * 6
    assert ok == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert fine


def test_isolated_reports_a_crash():
    """The harness itself: a segfault in the child is a failure here."""
    def crash():
        ffi.cast("int *", 8)[0] = 1      # writes to address 8
    with pytest.raises(AssertionError, match="the core crashed"):
        isolated(crash)
