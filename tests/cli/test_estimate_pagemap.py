"""The pagemap decoding of `estimate --pid` (no Python loop per page):
which pages are loaded, which map the shared zero page, which are swapped."""
import struct

from ksm_engine.apps import estimate as est
from ksm_engine.apps.estimate import pid as est_pid

PRESENT, SWAPPED, SOFT_DIRTY, EXCLUSIVE = 1 << 63, 1 << 62, 1 << 55, 1 << 56
ZERO_PFN = 0x1A2B3C


def entries(*values):
    return struct.pack(f"<{len(values)}Q", *values)


def test_present_swapped_and_zero_page():
    raw = entries(
        PRESENT | EXCLUSIVE | 0x1000,          # an ordinary page
        0,                                     # nothing mapped
        SWAPPED | 0x55,                        # swapped out (swap entry in the low bits)
        PRESENT | ZERO_PFN,                    # the zero page
        PRESENT | SOFT_DIRTY | ZERO_PFN,       # the zero page, soft-dirty
        PRESENT | (ZERO_PFN + 1),              # the pfn next to it: an ordinary page
        PRESENT | (ZERO_PFN | (1 << 40)),      # same low bytes, other high bytes
        PRESENT | SOFT_DIRTY | EXCLUSIVE | 7,
    )
    load, zero, swap = est_pid._pagemap_masks(raw, est_pid._zero_tables(ZERO_PFN))
    assert list(load) == [1, 0, 0, 0, 0, 1, 1, 1]
    assert list(zero) == [0, 0, 0, 1, 1, 0, 0, 0]
    assert list(swap) == [0, 0, 1, 0, 0, 0, 0, 0]


def test_without_pfns_every_present_page_loads():
    raw = entries(PRESENT, PRESENT | ZERO_PFN, 0, PRESENT | SOFT_DIRTY)
    load, zero, swap = est_pid._pagemap_masks(raw, None)
    assert list(load) == [1, 1, 0, 1]
    assert list(zero) == [0, 0, 0, 0] and list(swap) == [0, 0, 0, 0]


def test_runs_of_loaded_pages():
    raw = entries(*([PRESENT] * 3 + [0] * 2 + [PRESENT] + [0] + [PRESENT] * 4))
    load, _, _ = est_pid._pagemap_masks(raw, None)
    assert [(m.start(), m.end()) for m in est_pid._RUN.finditer(load)] == [(0, 3), (5, 6), (7, 11)]


def test_is_private_anonymous():
    ok = est_pid._is_private_anonymous
    assert ok("rw-p", "0", "") and ok("rw-p", "0", "[heap]") and ok("rw-p", "0", "[stack]")
    assert ok("r--p", "0", "[anon:jemalloc]")
    assert not ok("rw-s", "0", "")                  # shared
    assert not ok("rw-p", "1234", "/usr/lib/libc.so.6")
    assert not ok("---p", "0", "")                  # guard region
    assert not ok("r--p", "0", "[vvar]") and not ok("r-xp", "0", "[vdso]")
