"""madvise(MADV_MERGEABLE / MADV_UNMERGEABLE) and prctl(PR_SET/GET_MEMORY_MERGE).

madvise (mm/madvise.c do_madvise + mm/ksm.c ksm_madvise):
  * start not page aligned, or a length that wraps: EINVAL; an advice it
    does not know: EINVAL; length rounds up to whole pages; length 0: 0;
  * the areas inside the range get (or lose) VM_MERGEABLE, split at the
    range's ends; gaps in the range: ENOMEM, the mapped parts still done;
  * MERGEABLE registers the mm with KSM (if some area was covered);
    UNMERGEABLE first breaks every KSM page (and KSM zero page) of the range.
prctl (kernel/sys.c):
  * PR_SET_MEMORY_MERGE: arg3..arg5 must be 0 (EINVAL); arg2 != 0 sets
    merge-any: every area, present and future, is VM_MERGEABLE, and the mm
    is registered; arg2 == 0 (only if merge-any was set) unmerges every
    VM_MERGEABLE area, madvised ones included, and clears the flag;
  * PR_GET_MEMORY_MERGE: arg2..arg5 must be 0; returns 0 or 1;
  * any other option: EINVAL.
"""
import errno

import pytest

from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE, PR_SET_MEMORY_MERGE,
                        ProcessExited)

from .conftest import PTE_KSM, PTE_PRESENT, flags_of, frames_of, ksm_counts, map_pages, page, set_knobs


def mergeable_spans(p):
    return [(a.start, a.end) for a in p.areas.values() if a.mergeable]


def mergeable_pages(p):
    return [x for a in p.areas.values() if a.mergeable for x in range(a.start, a.end, PAGE_SIZE)]


def errno_of(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


@pytest.fixture
def two_areas(machine):
    """p with areas A (4 pages) and B (4 pages) and a one-page gap between
    them, all pages 0x5A, none mergeable yet."""
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    b = p.mmap(4 * PAGE_SIZE, addr=a + 5 * PAGE_SIZE)
    p.write(a, page(0x5A) * 4)
    p.write(b, page(0x5A) * 4)
    return p, a, b


def test_mergeable_over_a_gap_is_enomem_but_done(machine, two_areas):
    p, a, b = two_areas
    assert errno_of(p.madvise, a, 9 * PAGE_SIZE, MADV_MERGEABLE) == errno.ENOMEM
    assert mergeable_spans(p) == [(a, a + 4 * PAGE_SIZE), (b, b + 4 * PAGE_SIZE)]
    assert p.ksm_stat["ksm_mergeable"] == "yes"
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 7}


def test_range_starting_in_a_gap(machine, two_areas):
    p, a, b = two_areas
    assert errno_of(p.madvise, a + 4 * PAGE_SIZE, 3 * PAGE_SIZE, MADV_MERGEABLE) == errno.ENOMEM
    assert mergeable_spans(p) == [(b, b + 2 * PAGE_SIZE)]


def test_range_entirely_in_a_gap_registers_nothing(machine, two_areas):
    p, a, b = two_areas
    assert errno_of(p.madvise, a + 4 * PAGE_SIZE, PAGE_SIZE, MADV_MERGEABLE) == errno.ENOMEM
    assert mergeable_spans(p) == []
    assert p.ksm_stat["ksm_mergeable"] == "no"
    assert errno_of(p.madvise, b + 100 * PAGE_SIZE, PAGE_SIZE, MADV_MERGEABLE) == errno.ENOMEM


def test_madvise_splits_areas(machine, two_areas):
    p, a, b = two_areas
    p.madvise(a + PAGE_SIZE, 2 * PAGE_SIZE, MADV_MERGEABLE)
    assert [(x.start, x.end, x.mergeable) for x in p.areas.values()][:3] == [
        (a, a + PAGE_SIZE, False), (a + PAGE_SIZE, a + 3 * PAGE_SIZE, True),
        (a + 3 * PAGE_SIZE, a + 4 * PAGE_SIZE, False)]
    machine.ksm.full_scan(2)
    assert flags_of(p, a, 4) == [PTE_PRESENT, PTE_KSM, PTE_KSM, PTE_PRESENT]


def test_length_rounds_up(machine, two_areas):
    p, a, b = two_areas
    assert p.madvise(a, 1, MADV_MERGEABLE) == 0
    assert mergeable_spans(p) == [(a, a + PAGE_SIZE)]
    assert p.madvise(a + PAGE_SIZE, PAGE_SIZE + 1, MADV_MERGEABLE) == 0
    assert mergeable_pages(p) == [a, a + PAGE_SIZE, a + 2 * PAGE_SIZE]


def test_length_zero_does_nothing(machine, two_areas):
    p, a, b = two_areas
    assert p.madvise(a, 0, MADV_MERGEABLE) == 0
    assert p.madvise(a + 4 * PAGE_SIZE, 0, MADV_MERGEABLE) == 0      # even in a gap
    assert mergeable_spans(p) == [] and p.ksm_stat["ksm_mergeable"] == "no"


@pytest.mark.parametrize("addr_off,length", [(1, PAGE_SIZE), (PAGE_SIZE // 2, PAGE_SIZE), (-PAGE_SIZE, PAGE_SIZE),
                                             (0, -1), (0, -PAGE_SIZE)])
def test_einval(machine, two_areas, addr_off, length):
    p, a, b = two_areas
    assert errno_of(p.madvise, a + addr_off if addr_off >= 0 else -PAGE_SIZE, length, MADV_MERGEABLE) == errno.EINVAL
    assert mergeable_spans(p) == []


@pytest.mark.parametrize("advice", [0, 1, 4, 11, 14, 100, -1])
def test_other_advice_is_einval(machine, two_areas, advice):
    p, a, b = two_areas
    assert errno_of(p.madvise, a, PAGE_SIZE, advice) == errno.EINVAL


def test_argument_types(machine, two_areas):
    p, a, b = two_areas
    for bad in ((str(a), PAGE_SIZE, MADV_MERGEABLE), (a, 1.0, MADV_MERGEABLE), (a, PAGE_SIZE, True)):
        with pytest.raises(TypeError):
            p.madvise(*bad)


def test_unmergeable_over_a_gap_unmerges_the_mapped_parts(machine, two_areas):
    p, a, b = two_areas
    with pytest.raises(OSError):
        p.madvise(a, 9 * PAGE_SIZE, MADV_MERGEABLE)
    machine.ksm.full_scan(2)
    assert flags_of(p, b, 4) == [PTE_KSM] * 4
    assert errno_of(p.madvise, a + 2 * PAGE_SIZE, 5 * PAGE_SIZE, MADV_UNMERGEABLE) == errno.ENOMEM
    assert flags_of(p, a, 4) == [PTE_KSM, PTE_KSM, PTE_PRESENT, PTE_PRESENT]
    assert flags_of(p, b, 4) == [PTE_PRESENT, PTE_PRESENT, PTE_KSM, PTE_KSM]
    assert mergeable_spans(p) == [(a, a + 2 * PAGE_SIZE), (b + 2 * PAGE_SIZE, b + 4 * PAGE_SIZE)]
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 3}
    assert p.read(a, 4 * PAGE_SIZE) == page(0x5A) * 4


def test_unmergeable_on_unmergeable_area_is_a_noop(machine, two_areas):
    p, a, b = two_areas
    assert p.madvise(a, 4 * PAGE_SIZE, MADV_UNMERGEABLE) == 0
    assert p.ksm_stat["ksm_mergeable"] == "no"


def test_madvise_on_exited_process(machine, two_areas):
    p, a, b = two_areas
    p.exit()
    with pytest.raises(ProcessExited) as e:
        p.madvise(a, PAGE_SIZE, MADV_MERGEABLE)
    assert e.value.errno == errno.ESRCH


# --- prctl ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(1, 1, 0, 0), (1, 0, 1, 0), (1, 0, 0, 1), (0, 5, 0, 0), (0, 0, 0, -1)])
def test_prctl_set_extra_args_einval(machine, args):
    p = machine.spawn()
    assert errno_of(p.prctl, PR_SET_MEMORY_MERGE, *args) == errno.EINVAL
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0
    assert p.ksm_stat["ksm_mergeable"] == "no"


@pytest.mark.parametrize("args", [(1,), (0, 1), (0, 0, 1), (0, 0, 0, 1)])
def test_prctl_get_extra_args_einval(machine, args):
    p = machine.spawn()
    assert errno_of(p.prctl, PR_GET_MEMORY_MERGE, *args) == errno.EINVAL


@pytest.mark.parametrize("option", [0, 1, 66, 69, 1000, -1])
def test_prctl_unknown_option(machine, option):
    p = machine.spawn()
    assert errno_of(p.prctl, option, 1) == errno.EINVAL


def test_prctl_any_nonzero_arg2_enables(machine):
    p = machine.spawn()
    assert p.prctl(PR_SET_MEMORY_MERGE, 42) == 0
    assert p.prctl(PR_GET_MEMORY_MERGE) == 1
    assert p.prctl(PR_SET_MEMORY_MERGE, 7) == 0          # twice: still on
    assert p.prctl(PR_GET_MEMORY_MERGE) == 1


def test_merge_any_covers_existing_and_later_areas(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    a = map_pages(p, [page(0x11)] * 3, mergeable=False)
    p.prctl(PR_SET_MEMORY_MERGE, 1)
    assert p.ksm_stat["ksm_mergeable"] == "yes" and p.ksm_stat["ksm_merge_any"] == "yes"
    b = map_pages(p, [page(0x11)] * 3, mergeable=False)   # mapped after the prctl
    c = p.mmap(2 * PAGE_SIZE, addr=b + 10 * PAGE_SIZE)
    p.write(c, page(0x11) * 2)
    assert len(mergeable_spans(p)) == 3
    machine.ksm.full_scan(2)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 1, "pages_sharing": 7}
    assert flags_of(p, a, 3) == flags_of(p, b, 3) == [PTE_KSM] * 3
    assert flags_of(p, c, 2) == [PTE_KSM] * 2


def test_prctl_zero_unmerges_madvised_areas_too(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    a = map_pages(p, [page(0x11)] * 3)                     # madvised
    p.prctl(PR_SET_MEMORY_MERGE, 1)
    b = map_pages(p, [page(0x11)] * 3, mergeable=False)
    machine.ksm.full_scan(2)
    assert p.ksm_stat["ksm_merging_pages"] == 6
    p.prctl(PR_SET_MEMORY_MERGE, 0)
    assert mergeable_spans(p) == []
    assert flags_of(p, a, 3) + flags_of(p, b, 3) == [PTE_PRESENT] * 6
    assert len(set(frames_of(p, a, 3) + frames_of(p, b, 3))) == 6
    st = p.ksm_stat
    assert (st["ksm_merging_pages"], st["ksm_rmap_items"], st["ksm_merge_any"]) == (0, 0, "no")
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 0, "pages_sharing": 0}
    assert p.read(a, 3 * PAGE_SIZE) + p.read(b, 3 * PAGE_SIZE) == page(0x11) * 6
    # a later area is not mergeable any more
    c = map_pages(p, [page(0x11)] * 2, mergeable=False)
    assert mergeable_spans(p) == []
    machine.ksm.full_scan(2)
    assert flags_of(p, c, 2) == [PTE_PRESENT] * 2


def test_prctl_zero_without_merge_any_leaves_madvise_alone(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    a = map_pages(p, [page(0x11)] * 3)
    machine.ksm.full_scan(2)
    assert p.prctl(PR_SET_MEMORY_MERGE, 0) == 0
    assert flags_of(p, a, 3) == [PTE_KSM] * 3
    assert mergeable_spans(p) == [(a, a + 3 * PAGE_SIZE)]


def test_madvise_unmergeable_under_merge_any(machine):
    set_knobs(machine, smart_scan=0)
    p = machine.spawn()
    p.prctl(PR_SET_MEMORY_MERGE, 1)
    a = map_pages(p, [page(0x22)] * 4, mergeable=False)
    machine.ksm.full_scan(2)
    p.madvise(a, 2 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert flags_of(p, a, 4) == [PTE_PRESENT, PTE_PRESENT, PTE_KSM, PTE_KSM]
    assert p.prctl(PR_GET_MEMORY_MERGE) == 1
    machine.ksm.full_scan(2)
    # the unmergeable half stays out
    assert flags_of(p, a, 4) == [PTE_PRESENT, PTE_PRESENT, PTE_KSM, PTE_KSM]


def test_prctl_on_exited_process(machine):
    p = machine.spawn()
    p.exit()
    with pytest.raises(ProcessExited):
        p.prctl(PR_GET_MEMORY_MERGE)


def test_ksm_mergeable_reflects_the_areas(machine):
    # /proc/PID/ksm_stat ksm_mergeable is ksm_process_mergeable(): does some
    # VMA carry VM_MERGEABLE now; being on KSM's mm list is another matter
    p = machine.spawn()
    assert p.ksm_stat["ksm_mergeable"] == "no"
    p.prctl(PR_SET_MEMORY_MERGE, 1)
    assert machine.ksm.is_registered(p)
    assert p.ksm_stat["ksm_mergeable"] == "no"            # merge-any, but no area yet
    a = map_pages(p, [page(1)] * 2, mergeable=False)
    assert p.ksm_stat["ksm_mergeable"] == "yes"
    p.prctl(PR_SET_MEMORY_MERGE, 0)
    assert p.ksm_stat["ksm_mergeable"] == "no"
    p.madvise(a, PAGE_SIZE, MADV_MERGEABLE)
    assert p.ksm_stat["ksm_mergeable"] == "yes"
    p.madvise(a, PAGE_SIZE, MADV_UNMERGEABLE)
    assert p.ksm_stat["ksm_mergeable"] == "no"
    assert machine.ksm.is_registered(p)                   # until ksmd passes it
    machine.ksm.full_scan(1)
    assert not machine.ksm.is_registered(p)
    assert p.ksm_stat_text().endswith("ksm_merge_any: no\nksm_mergeable: no\n")
