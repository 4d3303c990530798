"""Bad input: every entry point of Machine and Process, called the
wrong way, raises a clear exception and changes nothing.  Access: outside
every area is a SegmentationFault (OSError, EFAULT) that changes nothing;
data and arguments of the wrong type are TypeError, out of range ValueError.

"Changes nothing" is checked by reading back (conftest.snapshot): the
bytes, the frames (ptes), the frame counts and the areas are the same after
the failed call.
"""
import errno
import pytest

from ksm_engine import (MADV_MERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, SegmentationFault)
from ksm_engine.process import TASK_SIZE
from tests.conftest import proc_status_kib

from .conftest import refused, snapshot, unchanged


def outside_ranges(a, b):
    """(addr, length) pairs with at least one byte outside every area."""
    return [
        (a - 1, 1),                        # just before the first area
        (a - 1, 2),                        # straddles its start
        (a + 4 * PAGE_SIZE - 1, 2),        # straddles its end (guard gap)
        (a + 4 * PAGE_SIZE, PAGE_SIZE),    # in the gap
        (a, b + 2 * PAGE_SIZE - a),        # a..b's end, gap included
        (b + 2 * PAGE_SIZE - 10, 11),      # one byte past the last area
        (0, 16),                           # page zero
        (TASK_SIZE - 8, 8),                # the top page (unmapped here)
        (TASK_SIZE - 1, 2),                # across the top of the address space
        (TASK_SIZE, 1),
        (1 << 64, 1),
        (-1, 1),
        (-(1 << 64), 8),
    ]


def _outside_cases():
    return range(len(outside_ranges(0x10000000, 0x10005000)))


def _range(setup, k):
    _, _, a, b = setup
    return outside_ranges(a, b)[k]


@pytest.mark.parametrize("k", _outside_cases())
def test_write_outside_is_a_segfault_and_changes_nothing(setup, k):
    m, p, _, _ = setup
    addr, length = _range(setup, k)
    e = refused(setup, SegmentationFault, lambda: p.write(addr, b"\xee" * length), errno.EFAULT)
    assert isinstance(e, OSError)


@pytest.mark.parametrize("k", _outside_cases())
def test_fill_outside_is_a_segfault_and_changes_nothing(setup, k):
    m, p, _, _ = setup
    addr, length = _range(setup, k)
    refused(setup, SegmentationFault, lambda: p.fill(addr, 0xEE, length), errno.EFAULT)


@pytest.mark.parametrize("k", _outside_cases())
def test_read_outside_is_a_segfault(setup, k):
    m, p, _, _ = setup
    addr, length = _range(setup, k)
    before = snapshot(m, p)
    with pytest.raises(SegmentationFault):
        p.read(addr, length)
    buf = bytearray(b"\x55" * length)
    with pytest.raises(SegmentationFault):
        p.readinto(addr, buf)
    assert buf == b"\x55" * length          # nothing was copied into it
    unchanged(setup, before)


@pytest.mark.parametrize("length", [1 << 40, 1 << 64, 1 << 100])
def test_huge_lengths_outside_are_segfaults_without_allocating(setup, length):
    m, p, a, _ = setup
    before = snapshot(m, p)
    with pytest.raises(SegmentationFault):
        p.read(a, length)            # refused before a buffer is made
    with pytest.raises(SegmentationFault):
        p.fill(a, 1, length)
    unchanged(setup, before)


def test_access_after_munmap_is_a_segfault(setup):
    m, p, a, _ = setup
    p.munmap(a + PAGE_SIZE, PAGE_SIZE)
    before = snapshot(m, p)
    with pytest.raises(SegmentationFault):
        p.write(a + PAGE_SIZE + 10, b"x")
    with pytest.raises(SegmentationFault):
        p.read(a, 2 * PAGE_SIZE)          # crosses the hole
    with pytest.raises(SegmentationFault):
        p.write(a, b"y" * 3 * PAGE_SIZE)  # starts mapped, crosses the hole
    unchanged(setup, before)


def test_segfault_of_a_shared_page_breaks_no_cow(setup):
    m, p, a, _ = setup
    child = p.fork()
    ptes = child.ptes(a, 4)
    with pytest.raises(SegmentationFault):
        child.write(a, b"c" * 5 * PAGE_SIZE)
    assert child.ptes(a, 4) == ptes == p.ptes(a, 4)
    assert m.used_pages == 5


def test_huge_fill_of_a_huge_area_fails_cleanly(setup):
    """128 GiB asked of a 1 MiB machine inside a 1 TiB area: ENOMEM at once,
    nothing written, and no page tables built for the range on the way
    (the interpreter's memory must not grow with the length)."""
    m, p, _, _ = setup
    before = snapshot(m, p)
    big = p.mmap(1 << 40)
    rss0 = proc_status_kib()
    for _ in range(4):
        with pytest.raises(OSError) as e:
            p.fill(big, 0x42, 1 << 37)
        assert e.value.errno == errno.ENOMEM
    grown_kib = proc_status_kib() - rss0
    assert grown_kib < 32 * 1024
    assert p.read(big, 16) == bytes(16)
    assert p.read(big + (1 << 37) - 16, 16) == bytes(16)
    assert p.ptes(big, 4)[1] == [0, 0, 0, 0]
    p.munmap(big, 1 << 40)
    unchanged(setup, before)


# --- wrong types of data and arguments --------------------------------------------------------


@pytest.mark.parametrize("data", ["text", 5, None, 1.5, [1, 2], object(), {b"a": 1}])
def test_write_data_of_the_wrong_type(setup, data):
    m, p, a, _ = setup
    refused(setup, TypeError, lambda: p.write(a, data))


@pytest.mark.parametrize("call", [
    lambda p, a: p.write(float(a), b"x"),
    lambda p, a: p.write(str(a), b"x"),
    lambda p, a: p.write(None, b"x"),
    lambda p, a: p.read(float(a), 1),
    lambda p, a: p.read(a, 1.0),
    lambda p, a: p.read(a, "1"),
    lambda p, a: p.read(a, None),
    lambda p, a: p.fill(a, 1.0, 1),
    lambda p, a: p.fill(a, b"\x01", 1),
    lambda p, a: p.fill(a, 1, 1.0),
    lambda p, a: p.fill(str(a), 1, 1),
    lambda p, a: p.readinto(a, b"read only"),
    lambda p, a: p.readinto(a, "str"),
    lambda p, a: p.readinto(a, 10),
    lambda p, a: p.readinto(float(a), bytearray(1)),
    lambda p, a: p.ptes(float(a), 1),
    lambda p, a: p.ptes(a, "1"),
    lambda p, a: p.madvise(a, PAGE_SIZE, "12"),
    lambda p, a: p.madvise(float(a), PAGE_SIZE, MADV_MERGEABLE),
    lambda p, a: p.madvise(a, None, MADV_MERGEABLE),
    lambda p, a: p.prctl("67", 1),
    lambda p, a: p.prctl(PR_SET_MEMORY_MERGE, 1.0),
    lambda p, a: p.prctl(PR_SET_MEMORY_MERGE, None),
    lambda p, a: p.fork(name=5),
])
def test_process_methods_with_wrong_types(setup, call):
    m, p, a, _ = setup
    refused(setup, TypeError, lambda: call(p, a))
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0


@pytest.mark.parametrize("byte", [-1, 256, 1 << 64, -(1 << 64)])
def test_fill_byte_out_of_range(setup, byte):
    m, p, a, _ = setup
    refused(setup, ValueError, lambda: p.fill(a, byte, 10))


@pytest.mark.parametrize("call", [
    lambda p, a: p.read(a, -1),
    lambda p, a: p.read(a, -(1 << 64)),
    lambda p, a: p.fill(a, 1, -1),
    lambda p, a: p.fill(a, 1, -(1 << 70)),
])
def test_negative_counts(setup, call):
    m, p, a, _ = setup
    refused(setup, ValueError, lambda: call(p, a))


# --- madvise, prctl, ptes ---------------------------------------------------------------------
