"""Freed frames go back to the operating system: the real
resident memory of this Python process follows the machine's accounting.

Measured with /proc/self/status: VmRSS (what a user sees in ps and top) for the
128 MiB test, RssAnon (the arena is anonymous memory, so this excludes
file-backed noise) for the finer ones.  Each test compares its own before
and after, with 10% slack for allocator noise; the sizes (16-128 MiB) are
far above that noise.  No big Python object is made or freed between two
measurements (malloc may keep a freed one resident).
"""
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine
from tests.conftest import proc_status_kib

MIB = 1 << 20


def filled(ram, byte, size):
    """A machine of ``ram`` with one process whose area of ``size`` bytes
    is filled with ``byte``: (machine, process, address)."""
    m = Machine(ram=ram)
    p = m.spawn()
    a = p.mmap(size)
    p.fill(a, byte, size)
    return m, p, a


def test_write_128mib_then_exit_gives_the_memory_back():
    size = 128 * MIB
    m = Machine(ram="192MiB")
    p = m.spawn()
    a = p.mmap(size)
    chunk = bytes(range(256)) * (MIB // 256)       # one reusable 1 MiB buffer
    base = proc_status_kib("VmRSS")
    for off in range(0, size, MIB):
        p.write(a + off, chunk)
    assert m.used_pages == size // PAGE_SIZE
    written = proc_status_kib("VmRSS")
    # the frames really are resident (so the drop below means something)
    assert written - base >= 0.9 * size / 1024
    p.exit()
    after = proc_status_kib("VmRSS")
    assert m.free_pages == m.nr_frames
    assert written - after >= 0.9 * size / 1024, (base, written, after)
    m.check()


def test_munmap_gives_the_frames_back():
    m, p, a = filled("64MiB", 0x3C, 32 * MIB)
    released = m.meminfo()["released_frames"]
    before = proc_status_kib("RssAnon")
    p.munmap(a + 8 * MIB, 16 * MIB)
    after = proc_status_kib("RssAnon")
    assert before - after >= 0.9 * 16 * MIB / 1024
    assert m.meminfo()["released_frames"] - released == 16 * MIB // PAGE_SIZE
    # what is left is intact, and refilling the hole makes it resident again
    assert p.read(a + 8 * MIB - 1, 1) == b"\x3c" and p.read(a + 24 * MIB, 1) == b"\x3c"
    p.mmap(16 * MIB, addr=a + 8 * MIB)
    assert p.read(a + 8 * MIB, 16) == bytes(16)
    p.fill(a + 8 * MIB, 1, 16 * MIB)
    assert proc_status_kib("RssAnon") - after >= 0.9 * 16 * MIB / 1024
    p.exit()
    m.check()


def test_partial_exit_after_fork_frees_only_private_frames():
    m, p, a = filled("96MiB", 1, 32 * MIB)
    c = p.fork()
    c.fill(a, 2, 16 * MIB)                 # 16 MiB of private copies
    before = proc_status_kib("RssAnon")
    p.exit()                               # frees p's 16 MiB no one else maps
    after = proc_status_kib("RssAnon")
    assert before - after >= 0.9 * 16 * MIB / 1024
    assert before - after <= 1.1 * 16 * MIB / 1024   # c's frames stay
    assert c.read(a + 16 * MIB, 4) == b"\x01" * 4
    c.exit()
    m.check()


def _distinct_pages(n, tag):
    """n pages, every one different from the others (and from other tags)."""
    return b"".join((tag * 1000003 + k).to_bytes(8, "little") * (PAGE_SIZE // 8) for k in range(n))


def test_ksm_merge_and_cow_break_release_the_frames_they_free():
    """KSM merging frees the duplicate frames; breaking the sharing again
    by writing frees the KSM frames once their last mapper has its own copy.
    Both must leave the process's resident memory."""
    n = 4096                               # 16 MiB per copy
    m = Machine(ram="96MiB")
    p = m.spawn()
    a = p.mmap(n * PAGE_SIZE)
    b = p.mmap(n * PAGE_SIZE)
    # every buffer is made before the first measurement: a 16 MiB bytes
    # object freed inside the window may stay in malloc's heap
    data, new_a, new_b = _distinct_pages(n, 1), _distinct_pages(n, 2), _distinct_pages(n, 3)
    base = proc_status_kib("RssAnon")
    p.write(a, data)
    p.write(b, data)
    two_copies = proc_status_kib("RssAnon")
    p.madvise(a, n * PAGE_SIZE, MADV_MERGEABLE)
    p.madvise(b, n * PAGE_SIZE, MADV_MERGEABLE)
    m.ksm.full_scan(2)
    assert m.ksm.stats["pages_shared"] == n and m.ksm.stats["pages_sharing"] == n
    assert m.used_pages == n
    merged = proc_status_kib("RssAnon")
    assert two_copies - merged >= 0.9 * n * PAGE_SIZE / 1024
    # COW breaks: new content in both copies, page by page through one write
    # each; every KSM frame loses its two mappers and is freed
    p.write(a, new_a)
    p.write(b, new_b)
    assert m.ksm.stats["pages_shared"] == 0 and m.meminfo()["ksm_pages"] == 0
    assert m.used_pages == 2 * n
    broken = proc_status_kib("RssAnon")
    # 2n private frames resident; the n KSM frames were given back (if they
    # were not, growth over base would be 3n pages)
    assert broken - base <= 1.1 * 2 * n * PAGE_SIZE / 1024, (base, two_copies, merged, broken)
    assert p.read(a, 8) == (2 * 1000003).to_bytes(8, "little")
    p.exit()
    m.check()


@pytest.mark.parametrize("how", ["munmap", "exit"])
def test_released_frames_are_reused_and_read_as_written(how):
    """A frame given back to the OS and taken again holds exactly what its
    new owner writes (no stale data, zeros where nothing was written)."""
    m, p, a = filled(64 * PAGE_SIZE, 0xFF, 64 * PAGE_SIZE)
    if how == "munmap":
        p.munmap(a, 64 * PAGE_SIZE)
    else:
        p.exit()
        p = m.spawn()
    b = p.mmap(64 * PAGE_SIZE)
    for k in range(64):
        p.write(b + k * PAGE_SIZE + k, b"\x01")      # one byte per page
    expect = b"".join(bytes(k) + b"\x01" + bytes(PAGE_SIZE - k - 1) for k in range(64))
    assert p.read(b, 64 * PAGE_SIZE) == expect
    assert m.free_pages == 0
    m.check()
