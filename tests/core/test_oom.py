"""Out of free frames: the machine calls its OOM notifiers, retries
once, and otherwise raises OSError(ENOMEM).  Nothing already written is
lost, and the write that failed changed nothing (all or nothing, even when
part of its range had room).

The machines here have 16-64 frames, so running out takes a few writes.
"""
import errno

import pytest

from ksm_engine import MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, Machine
from ksm_engine._native import lib


def full_machine(nr_frames=16, keep_free=0):
    """A machine whose process has written all but ``keep_free`` frames,
    each page with its own content."""
    m = Machine(ram=nr_frames * PAGE_SIZE)
    p = m.spawn()
    a = p.mmap(64 * PAGE_SIZE)
    used = nr_frames - keep_free
    data = b"".join(bytes([k + 1]) * PAGE_SIZE for k in range(used))
    p.write(a, data)
    assert m.free_pages == keep_free
    return m, p, a, data


class Notifier:
    """An OOM notifier that counts its calls and frees balloon frames."""

    def __init__(self, m, frees=0):
        self.m = m
        self.calls = 0
        self.frees = frees     # balloon frames to give back per call
        self.held = []

    def take(self, n):
        self.held += [self.m.balloon_page_alloc() for _ in range(n)]

    def __call__(self):
        self.calls += 1
        freed = 0
        while self.held and freed < self.frees:
            self.m.balloon_page_free(self.held.pop())
            freed += 1
        return freed


def test_enomem_when_no_notifier_helps():
    m, p, a, data = full_machine(keep_free=2)
    n = Notifier(m)
    m.register_oom_notifier(n)
    before = m.meminfo()
    with pytest.raises(OSError) as e:
        p.write(a + len(data), b"z" * 3 * PAGE_SIZE)   # needs 3 frames, 2 free
    assert e.value.errno == errno.ENOMEM
    assert n.calls == 1                                 # called once, then one retry
    # everything written before is intact; the failed write changed nothing,
    # not even the two pages it had frames for
    assert p.read(a, len(data)) == data
    assert p.read(a + len(data), 3 * PAGE_SIZE) == bytes(3 * PAGE_SIZE)
    assert p.ptes(a + len(data), 3)[1] == [0, 0, 0]
    assert m.meminfo() == before
    m.check()
    # a write that fits still works afterwards
    p.write(a + len(data), b"y" * 2 * PAGE_SIZE)
    assert m.free_pages == 0
    assert p.read(a, len(data)) == data


def test_enomem_without_any_notifier():
    m, p, a, data = full_machine()
    with pytest.raises(OSError) as e:
        p.fill(a + len(data), 7, 1)
    assert e.value.errno == errno.ENOMEM
    assert p.read(a, len(data)) == data
    m.check()


def test_a_write_spanning_written_and_new_pages_is_all_or_nothing():
    m, p, a, data = full_machine(keep_free=1)
    # starts in the last written page (in place, no frame needed) and runs
    # into two new pages (two frames needed, one free)
    start = a + len(data) - 100
    with pytest.raises(OSError) as e:
        p.write(start, b"\xaa" * (100 + 2 * PAGE_SIZE))
    assert e.value.errno == errno.ENOMEM
    assert p.read(a, len(data)) == data          # the in-place part did not happen
    assert p.read(a + len(data), 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)
    assert m.free_pages == 1
    m.check()


def test_a_notifier_that_frees_balloon_frames_lets_the_write_succeed():
    m = Machine(ram=32 * PAGE_SIZE)
    n = Notifier(m, frees=4)
    n.take(20)                                   # the balloon holds 20 frames
    m.register_oom_notifier(n)
    p = m.spawn()
    a = p.mmap(32 * PAGE_SIZE)
    p.fill(a, 1, 12 * PAGE_SIZE)                 # the 12 free frames
    assert m.free_pages == 0
    p.write(a + 12 * PAGE_SIZE, b"\x02" * 3 * PAGE_SIZE)
    assert n.calls == 1
    assert (m.used_pages, m.balloon_pages, m.free_pages) == (15, 16, 1)
    assert p.read(a + 11 * PAGE_SIZE, 4 * PAGE_SIZE) == b"\x01" * PAGE_SIZE + b"\x02" * 3 * PAGE_SIZE
    # needs 6, 1 free + 4 from the notifier = 5: one retry only, then ENOMEM
    with pytest.raises(OSError) as e:
        p.write(a + 15 * PAGE_SIZE, b"\x03" * 6 * PAGE_SIZE)
    assert e.value.errno == errno.ENOMEM
    assert n.calls == 2
    assert m.free_pages == 5 and m.balloon_pages == 12   # the freed frames stay free
    assert p.read(a + 15 * PAGE_SIZE, 6 * PAGE_SIZE) == bytes(6 * PAGE_SIZE)
    # and now the same write fits without asking
    p.write(a + 15 * PAGE_SIZE, b"\x03" * 5 * PAGE_SIZE)
    assert n.calls == 2
    m.check()


def test_every_notifier_is_called_and_their_frees_add_up():
    m = Machine(ram=16 * PAGE_SIZE)
    n1, n2 = Notifier(m, frees=1), Notifier(m, frees=1)
    n1.take(4)
    n2.take(4)
    m.register_oom_notifier(n1)
    m.register_oom_notifier(n2)
    p = m.spawn()
    a = p.mmap(16 * PAGE_SIZE)
    p.fill(a, 9, 8 * PAGE_SIZE)
    p.fill(a + 8 * PAGE_SIZE, 8, 2 * PAGE_SIZE)  # needs 2: one from each
    assert (n1.calls, n2.calls) == (1, 1)
    assert m.balloon_pages == 6
    m.check()


def test_a_notifier_is_not_called_while_frames_are_free():
    m = Machine(ram=16 * PAGE_SIZE)
    n = Notifier(m)
    m.register_oom_notifier(n)
    p = m.spawn()
    a = p.mmap(16 * PAGE_SIZE)
    p.fill(a, 1, 16 * PAGE_SIZE)
    p.fill(a, 2, 16 * PAGE_SIZE)                 # in place: no frame needed
    assert n.calls == 0


def test_cow_break_out_of_frames():
    """A write to a page shared after fork needs a frame for its copy."""
    m, p, a, data = full_machine()
    c = p.fork()
    n = Notifier(m)
    m.register_oom_notifier(n)
    with pytest.raises(OSError) as e:
        c.write(a, b"child")
    assert e.value.errno == errno.ENOMEM
    assert n.calls == 1
    assert c.read(a, len(data)) == data == p.read(a, len(data))
    assert c.ptes(a, 16) == p.ptes(a, 16)
    # once the parent is gone the child owns the frames and writes in place
    p.exit()
    c.write(a, b"child")
    assert c.read(a, 6) == b"child" + bytes([1])
    m.check()


def test_retry_once_with_injected_allocation_failures():
    """KE_FAULT_FRAME_ALLOC makes the next frame allocations fail as if the
    arena were full: one failure is absorbed by the retry, two are not."""
    m = Machine(ram=16 * PAGE_SIZE)
    n = Notifier(m)
    m.register_oom_notifier(n)
    p = m.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    assert lib.ke_fault_inject(m.ke_machine, lib.KE_FAULT_FRAME_ALLOC, 0, 1) == 0
    p.write(a, b"one")
    assert n.calls == 1 and p.read(a, 3) == b"one"
    assert lib.ke_fault_inject(m.ke_machine, lib.KE_FAULT_FRAME_ALLOC, 0, 2) == 0
    with pytest.raises(OSError) as e:
        p.write(a + PAGE_SIZE, b"two")
    assert e.value.errno == errno.ENOMEM
    assert n.calls == 2
    assert p.read(a + PAGE_SIZE, 3) == bytes(3)
    assert m.used_pages == 1
    m.check()


def test_unmerge_out_of_frames_keeps_the_ksm_pages():
    """MADV_UNMERGEABLE must copy every KSM page; without frames it fails
    with ENOMEM (after the notifiers) and the pages stay merged."""
    m = Machine(ram=16 * PAGE_SIZE)
    p = m.spawn()
    a = p.mmap(8 * PAGE_SIZE)
    p.fill(a, 0x61, 8 * PAGE_SIZE)               # 8 identical pages
    p.madvise(a, 8 * PAGE_SIZE, MADV_MERGEABLE)
    m.ksm.full_scan(2)
    assert m.used_pages == 1 and m.ksm.stats["pages_sharing"] == 7
    b = p.mmap(16 * PAGE_SIZE)
    p.fill(b, 0x62, 13 * PAGE_SIZE)              # 2 frames left, 8 needed
    n = Notifier(m)
    m.register_oom_notifier(n)
    with pytest.raises(OSError) as e:
        p.madvise(a, 8 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert e.value.errno == errno.ENOMEM
    assert n.calls == 1
    assert m.ksm.stats["pages_sharing"] == 7
    assert p.read(a, 8 * PAGE_SIZE) == b"\x61" * 8 * PAGE_SIZE
    assert p.read(b, 13 * PAGE_SIZE) == b"\x62" * 13 * PAGE_SIZE
    m.check()


def test_a_notifier_that_raises_leaves_the_machine_unchanged():
    m, p, a, data = full_machine()

    def broken():
        raise RuntimeError("notifier bug")

    m.register_oom_notifier(broken)
    before = m.meminfo()
    with pytest.raises(RuntimeError):
        p.write(a + len(data), b"x")
    assert m.meminfo() == before
    assert p.read(a, len(data)) == data
    m.check()
