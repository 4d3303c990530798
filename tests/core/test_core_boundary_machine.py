"""The C core's bounds, called raw through cffi (ksm_engine._native.lib),
below every check the Python layer makes: the machine's calls: bad sizes, NULL machines
and out-pointers, balloon frames it does not hold, bad fault points, short
message buffers, bad configurations; and the harness itself.  Each must come back as the negative
errno the header promises (-EINVAL, -ESRCH, -EFAULT, -ENOMEM), never as a
crash or a change to the machine.

Every case runs in a forked child (boundary.isolated), so a crash is
reported as this test failing with the signal, not as the end of the test
run; the child sends its results back through a pipe.
"""

import pytest

from ksm_engine import PAGE_SIZE
from ksm_engine._native import ffi, lib

from .boundary import EINVAL, ESRCH, NULL, U32_MAX, U64_MAX, intact, isolated


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


def test_isolated_reports_a_crash():
    """The harness itself: a segfault in the child is a failure here."""
    def crash():
        ffi.cast("int *", 8)[0] = 1      # writes to address 8
    with pytest.raises(AssertionError, match="the core crashed"):
        isolated(crash)
