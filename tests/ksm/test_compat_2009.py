"""Machine(ksm_compat="2009"): KSM as the 2009 patch made it (the ksm patch
of July 2009, "[PATCH 07/10] ksm: Kernel SamePage Merging", Izik Eidus).

What the patch says, and what the tests expect from it:
  * sysfs: sleep_millisecs, pages_to_scan, run, max_kernel_pages (rw);
    pages_shared, kernel_pages_allocated (ro).  None of today's knobs.
    Stores use strict_strtoul: base 10 digits, no sign, one optional
    newline, every error EINVAL; sleep_millisecs, pages_to_scan and run
    also EINVAL above UINT_MAX (run above 2); max_kernel_pages takes any
    unsigned long (an overflow wraps, as simple_strtoul's did).
  * ksm_kernel_pages_allocated counts stable tree nodes (KSM pages);
    ksm_pages_shared counts the mappings of them, and the pages_shared
    file shows ksm_pages_shared - ksm_kernel_pages_allocated: the saving.
  * try_to_merge_two_pages allocates a new page, copies the content, and
    points both ptes at it; it fails once kernel_pages_allocated reaches
    max_kernel_pages (0: no limit); merging into an existing KSM page is
    not limited.  No max_page_sharing: every mapping of a content shares
    one page; no zero pages.
  * cmp_and_merge_page searches the stable tree before the checksum test:
    a page equal to a KSM page merges in its first scan.
  * ksm_do_scan leaves a KSM page whose rmap_item is in the stable tree
    alone, even with one mapping left; a KSM page that fell out of the
    stable tree (reached through fork: its other mappings left the tree)
    is broken (break_cow) when scanned.
  * the checksum is jhash2(page, PAGE_SIZE / 4, 17).
"""
import errno

import pytest

from ksm_engine import MADV_UNMERGEABLE, PAGE_SIZE
from ksm_engine._native import ffi, lib

from .conftest import (PTE_KSM, PTE_PRESENT, flags_of, frames_of, map_pages, page, set_knobs, sysfs_store,
                       unique_page)

SEED_FILES = {"sleep_millisecs": True, "pages_to_scan": True, "run": True, "max_kernel_pages": True,
              "pages_shared": False, "kernel_pages_allocated": False}   # name: writable


@pytest.fixture
def m(machine_factory):
    return machine_factory(ksm_compat="2009")


def counts(m):
    st = m.ksm.stats
    return st["pages_shared"], st["kernel_pages_allocated"]


def test_sysfs_files(m):
    files = set(m.ksm.sysfs)
    assert set(SEED_FILES) <= files
    for name in ("pages_sharing", "max_page_sharing", "use_zero_pages", "smart_scan", "merge_across_nodes",
                 "advisor_mode", "ksm_zero_pages", "stable_node_chains", "general_profit", "pages_unshared"):
        assert name not in files
        with pytest.raises(FileNotFoundError):
            m.ksm.sysfs[name]
    for name, writable in SEED_FILES.items():
        if not writable:
            with pytest.raises(PermissionError) as e:
                m.ksm.sysfs[name] = "1"
            assert e.value.errno == errno.EACCES
    assert {k: m.ksm.sysfs[k] for k in SEED_FILES} == {
        "sleep_millisecs": "20\n", "pages_to_scan": "100\n", "run": "0\n", "max_kernel_pages": "0\n",
        "pages_shared": "0\n", "kernel_pages_allocated": "0\n"}


@pytest.mark.parametrize("name", ["pages_to_scan", "sleep_millisecs"])
@pytest.mark.parametrize("text,want", [
    ("5", "5"), ("5\n", "5"), ("007", "7"), ("4294967295", "4294967295"),
    ("+5", errno.EINVAL), ("-1", errno.EINVAL), (" 5", errno.EINVAL), ("5 ", errno.EINVAL),
    ("5\n\n", errno.EINVAL), ("0x10", errno.EINVAL), ("abc", errno.EINVAL), ("\n", errno.EINVAL),
    ("4294967296", errno.EINVAL),
    ("18446744073709551616", "0"),           # simple_strtoul wrapped: 2^64 reads as 0
])
def test_strict_strtoul_stores(m, name, text, want):
    before = m.ksm.sysfs[name]
    try:
        m.ksm.sysfs[name] = text
        got = m.ksm.sysfs[name].strip()
    except OSError as e:
        got = e.errno
        assert m.ksm.sysfs[name] == before
    assert got == want


@pytest.mark.parametrize("text,want", [
    ("0", "0"), ("1", "1"), ("2", "2"), ("3", errno.EINVAL), ("+1", errno.EINVAL), ("1\n", "1"),
    ("4294967296", errno.EINVAL),
])
def test_run_store(m, text, want):
    assert sysfs_store(m, "run", text) == want


@pytest.mark.parametrize("text,want", [
    ("0", "0"), ("7", "7"), ("18446744073709551615", "18446744073709551615"),
    ("18446744073709551617", "1"), ("4294967296", "4294967296"),
    ("+7", errno.EINVAL), ("-7", errno.EINVAL), ("7x", errno.EINVAL),
])
def test_max_kernel_pages_store(m, text, want):
    assert sysfs_store(m, "max_kernel_pages", text) == want


def test_pages_shared_is_mappings_minus_ksm_pages(m):
    set_knobs(m)
    p, q = m.spawn(), m.spawn()
    map_pages(p, [page(1)] * 3 + [page(2)] + [unique_page(0)])
    map_pages(q, [page(2)] + [page(1)] * 2)
    m.ksm.full_scan(2)
    # content 1: 5 mappings on one KSM page; content 2: 2 on another
    assert counts(m) == (5 + 2 - 2, 2)
    assert m.ksm.sysfs["pages_shared"] == "5\n"
    assert m.ksm.sysfs["kernel_pages_allocated"] == "2\n"


def test_no_max_page_sharing_no_zero_pages(m):
    p = m.spawn()
    a = map_pages(p, [page(0x2A)] * 300 + [page(0)] * 10)
    m.ksm.full_scan(2)
    assert counts(m) == (299 + 9, 2)
    assert len(set(frames_of(p, a, 300))) == 1
    assert flags_of(p, a + 300 * PAGE_SIZE, 10) == [PTE_KSM] * 10


def test_merge_copies_into_a_new_page(m):
    p = m.spawn()
    a = map_pages(p, [page(0x44)] * 2)
    f0, f1 = frames_of(p, a, 2)
    used = m.used_pages
    m.ksm.full_scan(2)
    k = frames_of(p, a, 2)
    assert k[0] == k[1] and k[0] not in (f0, f1)
    assert m.used_pages == used - 1           # two pages in, one KSM page out
    assert p.read(a, 2 * PAGE_SIZE) == page(0x44) * 2


def test_max_kernel_pages_limits_new_ksm_pages(m):
    set_knobs(m, max_kernel_pages=1)
    p = m.spawn()
    a = map_pages(p, [page(1)] * 2 + [page(2)] * 2)
    m.ksm.full_scan(3)
    assert counts(m) == (1, 1)
    assert flags_of(p, a, 4) == [PTE_KSM, PTE_KSM, PTE_PRESENT, PTE_PRESENT]
    # joining an existing KSM page is not limited
    q = m.spawn()
    map_pages(q, [page(1)] * 3)
    m.ksm.full_scan(2)
    assert counts(m) == (4, 1)
    # lowering the limit unmerges nothing; raising it lets content 2 merge
    set_knobs(m, max_kernel_pages=0)
    m.ksm.full_scan(1)
    assert counts(m) == (5, 2)
    assert flags_of(p, a, 4) == [PTE_KSM] * 4


def test_max_kernel_pages_counts_ksm_pages_not_merges(m):
    set_knobs(m, max_kernel_pages=2)
    p = m.spawn()
    map_pages(p, [page(i) for i in (1, 1, 2, 2, 3, 3, 4, 4)])
    m.ksm.full_scan(2)
    assert counts(m) == (2, 2)


def test_stable_tree_searched_before_the_checksum(m, machine_factory):
    def first_scan_merges(mm):
        p = mm.spawn()
        map_pages(p, [page(0x33)] * 2)
        mm.ksm.full_scan(2)
        q = mm.spawn()
        b = map_pages(q, [page(0x33)])
        mm.ksm.full_scan(1)                   # q's page: its first scan
        return flags_of(q, b, 1) == [PTE_KSM]
    assert first_scan_merges(m) is True
    assert first_scan_merges(machine_factory()) is False   # today: checksum first


def merged_pair(m, content):
    """p and q with one page of ``content`` each, merged after two full
    scans: (p, its address, q, its address, the KSM frame)."""
    p, q = m.spawn(), m.spawn()
    a = map_pages(p, [content])
    b = map_pages(q, [content])
    m.ksm.full_scan(2)
    return p, a, q, b, frames_of(p, a, 1)[0]


def test_ksm_page_with_one_mapping_left_stays(m):
    p, a, q, b, k = merged_pair(m, page(0x55))
    assert counts(m) == (1, 1)
    q.write(b, b"q")
    assert counts(m) == (0, 1)
    m.ksm.full_scan(3)
    # p's rmap_item is still in the stable tree: ksm_do_scan passes it by
    assert counts(m) == (0, 1)
    assert frames_of(p, a, 1) == [k] and flags_of(p, a, 1) == [PTE_KSM]
    assert m.meminfo()["ksm_pages"] == 1
    # a new copy of the content still finds it in the stable tree
    r = m.spawn()
    c = map_pages(r, [page(0x55)])
    m.ksm.full_scan(1)
    assert frames_of(r, c, 1) == [k] and counts(m) == (1, 1)


def test_ksm_page_left_to_a_fork_child_is_broken(m):
    p, a, q, b, k = merged_pair(m, page(0x66))
    child = p.fork()                    # maps k, no rmap_item yet
    q.write(b, b"q")
    p.write(a, b"p")                    # k's last rmap_item leaves: out of the tree
    assert counts(m) == (0, 0)
    assert flags_of(child, a, 1) == [PTE_KSM] and frames_of(child, a, 1) == [k]
    m.ksm.full_scan(1)
    # "A ksm page might have got here by fork, but its other references
    # have already been removed from the stable tree": break_cow
    assert flags_of(child, a, 1) == [PTE_PRESENT]
    assert frames_of(child, a, 1) != [k]
    assert child.read(a, PAGE_SIZE) == page(0x66)
    assert m.meminfo()["ksm_pages"] == 0
    assert counts(m) == (0, 0)


def test_fork_child_joins_a_ksm_page_in_the_tree(m):
    p, q = m.spawn(), m.spawn()
    a = map_pages(p, [page(0x77)] * 2)
    map_pages(q, [page(0x77)])
    m.ksm.full_scan(2)
    assert counts(m) == (2, 1)
    child = p.fork()
    m.ksm.full_scan(1)
    # "forked": the child's mappings join the stable node
    assert counts(m) == (4, 1)
    assert child.ksm_stat["ksm_merging_pages"] == 2
    assert frames_of(child, a, 2) == frames_of(p, a, 2)


def test_write_and_unmergeable_and_run_2(m):
    p = m.spawn()
    a = map_pages(p, [page(9)] * 6)
    m.ksm.full_scan(2)
    assert counts(m) == (5, 1)
    p.write(a, b"x")
    assert counts(m) == (4, 1)
    p.madvise(a + PAGE_SIZE, 2 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert counts(m) == (2, 1)
    set_knobs(m, run=2)
    assert counts(m) == (0, 0)
    assert m.ksm.stats["rmap_items"] == 0
    assert PTE_KSM not in flags_of(p, a, 6)
    assert p.read(a, 6 * PAGE_SIZE) == b"x" + page(9)[1:] + page(9) * 5


def test_checksum_is_the_2009_one(m):
    # the 2009 path records the 2009 kernel's jhash2 (lookup2) checksums,
    # initval 17, not today's xxh64: an rmap_item's oldchecksum after its
    # first scan is the core's 2009 page checksum of the page
    p = m.spawn()
    content = unique_page(5)
    map_pages(p, [content])
    m.ksm.full_scan(1)
    buf = ffi.from_buffer(content)
    assert p.rmap_items()[0]["oldchecksum"] == lib.ke_checksum_page(buf, 1)
    assert lib.ke_checksum_page(buf, 1) != lib.ke_checksum_page(buf, 0)
    words = ffi.cast("uint32_t *", buf)
    assert lib.ke_checksum_page(buf, 1) == lib.ke_jhash2_2009(words, PAGE_SIZE // 4, 17)
    assert lib.ke_checksum_page(buf, 1) != lib.ke_jhash2(words, PAGE_SIZE // 4, 17)


def test_rewritten_page_keeps_its_checksum(m):
    p = m.spawn()
    a = map_pages(p, [page(0x10)] * 2)
    m.ksm.full_scan(1)
    p.write(a, b"\x10")                       # rewritten, same content
    m.ksm.full_scan(1)
    assert counts(m) == (1, 1)                # same checksum: both stable
    p.write(a + PAGE_SIZE, b"\x11")
    m.ksm.full_scan(1)
    # the changed page left; the KSM page keeps its other mapping
    assert counts(m) == (0, 1)
    assert flags_of(p, a, 2) == [PTE_KSM, PTE_PRESENT]


def test_max_kernel_pages_counts_stable_tree_nodes(m):
    # The patch compares max_kernel_pages with ksm_kernel_pages_allocated,
    # the stable tree's nodes.  A KSM page that left the tree but is still
    # mapped (by a fork child not yet scanned) does not count.
    set_knobs(m, max_kernel_pages=1, pages_to_scan=1)
    p, q, r = m.spawn(), m.spawn(), m.spawn()
    a = map_pages(p, [page(0x41)])
    b = map_pages(q, [page(0x41)])
    c = map_pages(r, [page(0x5A)] * 2)
    m.ksm.full_scan(2)
    assert counts(m) == (1, 1)                        # r's pair hit the limit
    assert flags_of(r, c, 2) == [PTE_PRESENT] * 2
    child = p.fork()                                  # scanned after r
    q.write(b, b"q")
    p.write(a, b"p")
    assert counts(m) == (0, 0) and m.meminfo()["ksm_pages"] == 1
    m.ksm.full_scan(1)
    # r, scanned before the child breaks the old KSM page, may merge
    assert flags_of(r, c, 2) == [PTE_KSM] * 2
    assert flags_of(child, a, 1) == [PTE_PRESENT]
    assert counts(m) == (1, 1)
