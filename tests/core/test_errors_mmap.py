"""Bad input: every entry point of Machine and Process, called the
wrong way, raises a clear exception and changes nothing.  mmap and munmap:
wrong types (TypeError), unaligned, zero or negative ranges (OSError
EINVAL), overlaps (EEXIST), beyond the address space (ENOMEM).

"Changes nothing" is checked by reading back (conftest.snapshot): the
bytes, the frames (ptes), the frame counts and the areas are the same after
the failed call.
"""
import errno
import pytest

from ksm_engine import PAGE_SIZE
from ksm_engine.process import TASK_SIZE

from .conftest import NOT_INTS, refused, snapshot, unchanged


@pytest.mark.parametrize("length", NOT_INTS)
def test_mmap_length_of_the_wrong_type(setup, length):
    m, p, _, _ = setup
    refused(setup, TypeError, lambda: p.mmap(length))


@pytest.mark.parametrize("addr", NOT_INTS)
def test_mmap_addr_of_the_wrong_type(setup, addr):
    m, p, _, _ = setup
    before = snapshot(m, p)
    if addr is None:      # None means "anywhere": not an error
        return
    with pytest.raises(TypeError):
        p.mmap(PAGE_SIZE, addr=addr)
    unchanged(setup, before)


@pytest.mark.parametrize("length", [0, -PAGE_SIZE, -1, 1, PAGE_SIZE - 1, PAGE_SIZE + 1, 3 * PAGE_SIZE // 2])
def test_mmap_bad_length_is_einval(setup, length):
    m, p, _, _ = setup
    refused(setup, OSError, lambda: p.mmap(length), errno.EINVAL)


@pytest.mark.parametrize("addr", [1, PAGE_SIZE + 1, 0x40000000 - 1, -PAGE_SIZE, -1])
def test_mmap_bad_address_is_einval(setup, addr):
    m, p, _, _ = setup
    refused(setup, OSError, lambda: p.mmap(PAGE_SIZE, addr=addr), errno.EINVAL)


def test_mmap_over_an_area_is_eexist(setup):
    m, p, a, b = setup
    before = snapshot(m, p)
    for addr, length in ((a, PAGE_SIZE), (a + PAGE_SIZE, PAGE_SIZE), (a - PAGE_SIZE, 2 * PAGE_SIZE),
                         (b + PAGE_SIZE, 4 * PAGE_SIZE), (a - PAGE_SIZE, b + 8 * PAGE_SIZE - a)):
        with pytest.raises(OSError) as e:
            p.mmap(length, addr=addr)
        assert e.value.errno == errno.EEXIST
    unchanged(setup, before)


@pytest.mark.parametrize("length, addr", [
    (1 << 64, None), (1 << 100, None), (TASK_SIZE, None), (TASK_SIZE + PAGE_SIZE, None),
    (1 << 64, 0), (2 * PAGE_SIZE, TASK_SIZE - PAGE_SIZE), (PAGE_SIZE, TASK_SIZE), (PAGE_SIZE, 1 << 80),
])
def test_mmap_beyond_the_address_space_is_enomem(setup, length, addr):
    m, p, _, _ = setup
    refused(setup, OSError, lambda: p.mmap(length, addr=addr), errno.ENOMEM)


@pytest.mark.parametrize("addr, length", [
    ("a", PAGE_SIZE), (None, PAGE_SIZE), (1.0, PAGE_SIZE),
    ("setup-a", 4096.0), ("setup-a", None), ("setup-a", "4096"), ("setup-a", True),
])
def test_munmap_wrong_types(setup, addr, length):
    m, p, a, _ = setup
    addr = a if addr == "setup-a" else addr
    before = snapshot(m, p)
    with pytest.raises(TypeError):
        p.munmap(addr, length)
    unchanged(setup, before)


@pytest.mark.parametrize("offset, length", [
    (1, PAGE_SIZE),                 # unaligned address
    (PAGE_SIZE - 1, PAGE_SIZE),
    (0, 0),                         # zero length
    (0, -PAGE_SIZE),                # negative length
    (0, -1),
    (0, 1),                         # unaligned lengths
    (0, PAGE_SIZE + 1),
    (0, 1 << 64),                   # beyond the address space
    (0, TASK_SIZE),
])
def test_munmap_bad_range_is_einval(setup, offset, length):
    m, p, a, _ = setup
    refused(setup, OSError, lambda: p.munmap(a + offset, length), errno.EINVAL)


@pytest.mark.parametrize("addr", [-PAGE_SIZE, -(1 << 64), 1 << 64, TASK_SIZE, TASK_SIZE + PAGE_SIZE])
def test_munmap_bad_address_is_einval(setup, addr):
    m, p, _, _ = setup
    refused(setup, OSError, lambda: p.munmap(addr, PAGE_SIZE), errno.EINVAL)


# --- access outside the areas ------------------------------------------------------------
