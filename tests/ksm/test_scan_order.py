"""The mm_slot list and the scan cursor (mm/ksm.c ksm_mm_head, ksm_scan).

  * mms are scanned in the order they were registered (__ksm_enter:
    list_add_tail behind the cursor; at the list head that is the tail);
  * an mm registered while a pass is under way goes just behind the
    cursor: it is not reached in the rest of this pass, and in the next
    pass it comes after the mms that were before the cursor;
  * an mm is dropped from the list when the scanner reaches the end of it
    and found no VM_MERGEABLE area (scan_get_next_rmap_item,
    ksm_scan.address == 0); if it was the last mm, that ends the pass;
  * an mm that exits under the cursor: the scan goes on with the next mm,
    from its start.

Order is visible without looking at the list: in pass 2 of two equal pages
in processes A then B, A's page waits in the unstable tree and B's page,
scanned second, becomes the KSM page in place (A's pte moves to it).  So
the KSM page's frame tells which process was scanned last.
"""
from ksm_engine import MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE

from .conftest import frames_of, ksm_counts, map_pages, page, set_knobs, unique_page


def order(m):
    return [s.proc.pid for s in m.ksm.scanner.slots]


def register(p, pages):
    """Maps and writes pages in p (not yet mergeable); returns (addr, n)."""
    return map_pages(p, pages, mergeable=False), len(pages)


def madvise_all(p, area):
    a, n = area
    p.madvise(a, n * PAGE_SIZE, MADV_MERGEABLE)


def items(p):
    return p.ksm_stat["ksm_rmap_items"]


def test_registration_order_not_pid_order(machine):
    set_knobs(machine, smart_scan=0)
    procs = [machine.spawn() for _ in range(3)]
    areas = [register(p, [unique_page(i)] * 2) for i, p in enumerate(procs)]
    for i in (2, 0, 1):
        madvise_all(procs[i], areas[i])
    assert order(machine) == [procs[2].pid, procs[0].pid, procs[1].pid]
    assert machine.ksm.scan(2) == 2
    assert [items(p) for p in procs] == [0, 0, 2]
    assert machine.ksm.scan(2) == 2
    assert [items(p) for p in procs] == [2, 0, 2]


def test_scan_order_decides_the_ksm_frame(machine):
    set_knobs(machine, smart_scan=0)
    a, b = machine.spawn(), machine.spawn()
    area_a = register(a, [page(0x77)])
    area_b = register(b, [page(0x77)])
    fa, fb = frames_of(a, area_a[0], 1)[0], frames_of(b, area_b[0], 1)[0]
    madvise_all(b, area_b)                # b first
    madvise_all(a, area_a)
    machine.ksm.full_scan(2)
    # a was scanned second: its frame is the KSM page, b's was freed
    assert frames_of(a, area_a[0], 1) == frames_of(b, area_b[0], 1) == [fa]
    assert fb != fa


def test_new_mm_goes_behind_the_cursor(machine):
    set_knobs(machine, smart_scan=0)
    p1, p2, p3, p4 = (machine.spawn() for _ in range(4))
    for i, p in enumerate((p1, p2, p3)):
        map_pages(p, [unique_page(i, tag=k) for k in range(3)])
    machine.ksm.scan(4)                   # all of p1, first page of p2
    assert machine.ksm.scanner.slots[machine.ksm.scanner.cursor].proc is p2
    map_pages(p4, [unique_page(9, tag=k) for k in range(3)])
    assert order(machine) == [p1.pid, p4.pid, p2.pid, p3.pid]
    # the rest of this pass: p2, p3 - not p4
    assert machine.ksm.scan(100) == 5
    assert machine.ksm.stats["full_scans"] == 1
    assert [items(p) for p in (p1, p2, p3, p4)] == [3, 3, 3, 0]
    # next pass: p1, then p4
    assert machine.ksm.scan(4) == 4
    assert items(p4) == 1


def test_new_mm_between_passes_goes_to_the_tail(machine):
    set_knobs(machine, smart_scan=0)
    p1, p2, p3 = (machine.spawn() for _ in range(3))
    map_pages(p1, [unique_page(1)])
    map_pages(p2, [unique_page(2)])
    machine.ksm.full_scan(1)
    assert machine.ksm.scanner.cursor is None
    map_pages(p3, [unique_page(3)])
    assert order(machine) == [p1.pid, p2.pid, p3.pid]


def test_fork_child_goes_behind_the_cursor(machine):
    set_knobs(machine, smart_scan=0)
    p1, p2 = machine.spawn(), machine.spawn()
    a1 = map_pages(p1, [page(0x10)] * 2)
    map_pages(p2, [page(0x20)] * 2)
    machine.ksm.scan(3)                    # cursor in p2
    child = p1.fork()
    assert order(machine) == [p1.pid, child.pid, p2.pid]
    f0, f1 = frames_of(p1, a1, 2)
    machine.ksm.scan(100)
    assert items(child) == 0
    # pass 2: p1's second page merges with its first in place (frame f1
    # becomes the KSM page; the child still maps it too, fork-shared);
    # the child, scanned last, gets its first rmap_items: the one on f1
    # joins the stable node at once, the other only records its checksum
    machine.ksm.full_scan(1)
    assert frames_of(p1, a1, 2) == [f1, f1]
    assert frames_of(child, a1, 2) == [f0, f1]
    # (p2's two pages of 0x20 make the other KSM page: 1 shared, 1 sharing)
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 3}
    machine.ksm.full_scan(1)
    assert frames_of(child, a1, 2) == [f1, f1]
    assert ksm_counts(machine, "pages_shared", "pages_sharing") == {"pages_shared": 2, "pages_sharing": 4}


def test_unregistered_process_is_not_listed(machine):
    p = machine.spawn()
    register(p, [page(1)])
    assert order(machine) == []
    assert machine.ksm.full_scan(3) == 0
    assert machine.ksm.stats["full_scans"] == 0   # nothing registered: no pass


def test_mm_with_nothing_mergeable_is_dropped_when_reached(machine):
    set_knobs(machine, smart_scan=0)
    p1, p2, p3 = (machine.spawn() for _ in range(3))
    areas = [map_pages(p, [unique_page(i)] * 2) for i, p in enumerate((p1, p2, p3))]
    machine.ksm.full_scan(1)
    p2.madvise(areas[1], 2 * PAGE_SIZE, MADV_UNMERGEABLE)
    # still listed, in its place, until the scanner gets to it
    assert order(machine) == [p1.pid, p2.pid, p3.pid]
    assert machine.ksm.scan(2) == 2                 # p1
    assert order(machine) == [p1.pid, p2.pid, p3.pid]
    assert machine.ksm.scan(1) == 1                 # p2 found empty and dropped; p3 scanned
    assert order(machine) == [p1.pid, p3.pid]
    assert items(p3) == 2 and machine.ksm.stats["full_scans"] == 1
    # madvised again, it goes behind the cursor like any new mm
    p2.madvise(areas[1], 2 * PAGE_SIZE, MADV_MERGEABLE)
    assert order(machine) == [p1.pid, p2.pid, p3.pid]


def test_munmap_of_every_mergeable_area_drops_the_mm(machine):
    p, q = machine.spawn(), machine.spawn()
    a = map_pages(p, [unique_page(0)] * 3)
    map_pages(q, [unique_page(1)])
    keep = p.mmap(PAGE_SIZE)                          # an area that is not mergeable
    p.write(keep, b"k")
    p.munmap(a, 3 * PAGE_SIZE)
    machine.ksm.full_scan(1)
    assert order(machine) == [q.pid]


def test_dropping_the_last_mm_ends_the_pass(machine):
    p = machine.spawn()
    a = map_pages(p, [unique_page(0)] * 4)
    machine.ksm.full_scan(1)
    p.madvise(a, 4 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert machine.ksm.scan(100) == 0
    # the scanner reached the end of the (empty) mm, dropped it, and found
    # itself back at the list head: full_scans counts that pass
    assert order(machine) == []
    assert machine.ksm.stats["full_scans"] == 2
    assert machine.ksm.scan(100) == 0
    assert machine.ksm.stats["full_scans"] == 2


def test_dropping_the_last_of_several_mms(machine):
    p, q = machine.spawn(), machine.spawn()
    map_pages(p, [unique_page(0)] * 2)
    b = map_pages(q, [unique_page(1)] * 2)
    machine.ksm.full_scan(1)
    q.madvise(b, 2 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert machine.ksm.scan(100) == 2
    assert machine.ksm.stats["full_scans"] == 2
    assert order(machine) == [p.pid]


def test_exit_under_the_cursor(machine):
    set_knobs(machine, smart_scan=0)
    p1, p2, p3 = (machine.spawn() for _ in range(3))
    for i, p in enumerate((p1, p2, p3)):
        map_pages(p, [unique_page(i, tag=k) for k in range(4)])
    machine.ksm.scan(6)                       # p1 and half of p2
    assert machine.ksm.scanner.slots[machine.ksm.scanner.cursor].proc is p2
    p2.exit()
    # as the kernel's __ksm_exit: the slot under the cursor stays on the
    # list, empty, for ksmd to drop when it gets there
    assert order(machine) == [p1.pid, p2.pid, p3.pid]
    # the scan drops it and resumes at the start of p3
    assert machine.ksm.scan(2) == 2
    assert order(machine) == [p1.pid, p3.pid]
    assert p3.rmap_items()[1]["address"] - p3.rmap_items()[0]["address"] == PAGE_SIZE
    assert items(p3) == 2
    assert machine.ksm.scan(100) == 2
    assert machine.ksm.stats["full_scans"] == 1
    assert machine.ksm.stats["rmap_items"] == 8
    machine.check()


def test_exit_before_and_after_the_cursor(machine):
    set_knobs(machine, smart_scan=0)
    procs = [machine.spawn() for _ in range(4)]
    for i, p in enumerate(procs):
        map_pages(p, [unique_page(i, tag=k) for k in range(2)])
    machine.ksm.scan(5)                       # p0, p1, first page of p2
    procs[0].exit()                           # before the cursor, had rmap_items: stays for ksmd
    procs[3].exit()                           # after it, never scanned: goes at once
    assert machine.ksm.scanner.slots[machine.ksm.scanner.cursor].proc is procs[2]
    assert machine.ksm.scan(100) == 1         # the rest of p2, then the pass ends
    assert machine.ksm.stats["full_scans"] == 1
    assert order(machine) == [procs[0].pid, procs[1].pid, procs[2].pid]
    machine.ksm.full_scan(1)                  # ksmd reaches p0's empty slot and drops it
    assert order(machine) == [procs[1].pid, procs[2].pid]


def test_exit_of_every_process(machine):
    procs = [machine.spawn() for _ in range(3)]
    for i, p in enumerate(procs):
        map_pages(p, [page(5)] * 2)
    machine.ksm.full_scan(2)
    for p in procs:
        p.exit()
    # they had rmap_items: their slots wait, empty, for ksmd (kernel's __ksm_exit)
    assert order(machine) == [p.pid for p in procs]
    st = machine.ksm.stats
    assert (st["rmap_items"], st["pages_shared"], st["pages_sharing"]) == (0, 0, 0)
    assert machine.ksm.scan(10) == 0          # ksmd drops them: one more full scan
    assert order(machine) == []
    assert machine.ksm.stats["full_scans"] == 3
    assert machine.ksm.scan(10) == 0          # and then there is nothing to scan
    assert machine.ksm.stats["full_scans"] == 3
    assert machine.used_pages == 0
