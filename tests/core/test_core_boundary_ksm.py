"""The C core's bounds, called raw through cffi (ksm_engine._native.lib),
below every check the Python layer makes: the KSM scan (bad ranges, cursors and
budgets) and the introspection listings (paging bounds).  Each must come back as the negative
errno the header promises (-EINVAL, -ESRCH, -EFAULT, -ENOMEM), never as a
crash or a change to the machine.

Every case runs in a forked child (boundary.isolated), so a crash is
reported as this test failing with the signal, not as the end of the test
run; the child sends its results back through a pipe.
"""

import pytest

from ksm_engine import PAGE_SIZE
from ksm_engine._native import ffi, lib

from .boundary import EINVAL, NULL, TOP, U32_MAX, U64_MAX, intact, isolated


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
