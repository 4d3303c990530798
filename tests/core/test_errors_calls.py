"""Bad input: every entry point of Machine and Process, called the
wrong way, raises a clear exception and changes nothing.  madvise, prctl
and ptes with bad arguments (EINVAL, ENOMEM), and every call on an exited
process (ProcessExited: OSError, ESRCH).

"Changes nothing" is checked by reading back (conftest.snapshot): the
bytes, the frames (ptes), the frame counts and the areas are the same after
the failed call.
"""
import errno
import pytest

from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, Machine, ProcessExited)
from ksm_engine.process import TASK_SIZE

from .conftest import refused, snapshot, unchanged


@pytest.mark.parametrize("args, err", [
    ((1, PAGE_SIZE, MADV_MERGEABLE), errno.EINVAL),          # unaligned
    ((0, -1, MADV_MERGEABLE), errno.EINVAL),                  # negative length
    ((0, PAGE_SIZE, 9999), errno.EINVAL),                     # unknown advice
    ((0, PAGE_SIZE, -1), errno.EINVAL),
    ((0, 1 << 64, MADV_MERGEABLE), errno.EINVAL),             # beyond the address space
    ((-PAGE_SIZE, PAGE_SIZE, MADV_MERGEABLE), errno.EINVAL),
    ((1 << 64, PAGE_SIZE, MADV_UNMERGEABLE), errno.EINVAL),
])
def test_madvise_bad_arguments(setup, args, err):
    m, p, a, _ = setup
    before = snapshot(m, p)
    addr, length, advice = args
    with pytest.raises(OSError) as e:
        p.madvise(a + addr if addr < 1 << 60 and addr >= 0 else addr, length, advice)
    assert e.value.errno == err
    unchanged(setup, before)
    assert p.ksm_stat["ksm_mergeable"] == "no"


def test_madvise_of_unmapped_memory_is_enomem(setup):
    m, p, a, b = setup
    with pytest.raises(OSError) as e:
        p.madvise(a, b + 2 * PAGE_SIZE - a, MADV_MERGEABLE)   # the gap is unmapped
    assert e.value.errno == errno.ENOMEM
    # as Linux, the mapped parts were still advised
    assert all(area.mergeable for area in p.areas.values())
    with pytest.raises(OSError) as e:
        p.madvise(TASK_SIZE - PAGE_SIZE, PAGE_SIZE, MADV_MERGEABLE)
    assert e.value.errno == errno.ENOMEM


@pytest.mark.parametrize("args", [
    (PR_SET_MEMORY_MERGE, 1, 1),
    (PR_SET_MEMORY_MERGE, 1, 0, 0, 1),
    (PR_GET_MEMORY_MERGE, 1),
    (9999,),
    (-1,),
    (1 << 64, 0),
])
def test_prctl_bad_arguments_are_einval(setup, args):
    m, p, _, _ = setup
    refused(setup, OSError, lambda: p.prctl(*args), errno.EINVAL)
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0


@pytest.mark.parametrize("addr, n", [(1, 1), (0, -1), (-PAGE_SIZE, 1), (0, 1 << 64),
                                      (TASK_SIZE, 1), (TASK_SIZE - PAGE_SIZE, 2), (1 << 64, 0),
                                      (0, 1 << 32), (0, (1 << 24) + 1)])
def test_ptes_bad_range_is_einval(setup, addr, n):
    _, p, _, _ = setup
    with pytest.raises(OSError) as e:
        p.ptes(addr, n)
    assert e.value.errno == errno.EINVAL


# --- exited processes ---------------------------------------------------------------------------


EXITED_CALLS = {
    "mmap": lambda p, a: p.mmap(PAGE_SIZE),
    "mmap_fixed": lambda p, a: p.mmap(PAGE_SIZE, addr=a),
    "munmap": lambda p, a: p.munmap(a, PAGE_SIZE),
    "write": lambda p, a: p.write(a, b"x"),
    "write_empty": lambda p, a: p.write(a, b""),
    "fill": lambda p, a: p.fill(a, 1, 1),
    "read": lambda p, a: p.read(a, 1),
    "read_empty": lambda p, a: p.read(a, 0),
    "readinto": lambda p, a: p.readinto(a, bytearray(1)),
    "fork": lambda p, a: p.fork(),
    "exit": lambda p, a: p.exit(),
    "madvise": lambda p, a: p.madvise(a, PAGE_SIZE, MADV_MERGEABLE),
    "prctl_set": lambda p, a: p.prctl(PR_SET_MEMORY_MERGE, 1),
    "prctl_get": lambda p, a: p.prctl(PR_GET_MEMORY_MERGE),
    "ksm_stat": lambda p, a: p.ksm_stat,
    "ksm_stat_text": lambda p, a: p.ksm_stat_text(),
    "rmap_items": lambda p, a: p.rmap_items(),
    "ptes": lambda p, a: p.ptes(a, 1),
}


@pytest.mark.parametrize("name", sorted(EXITED_CALLS))
def test_calls_on_an_exited_process(name):
    m = Machine(ram="1MiB")
    p = m.spawn(name="gone")
    a = p.mmap(2 * PAGE_SIZE)
    p.write(a, b"data")
    other = m.spawn()
    o = other.mmap(PAGE_SIZE)
    other.write(o, b"keep")
    p.exit()
    before = m.meminfo()
    with pytest.raises(ProcessExited) as e:
        EXITED_CALLS[name](p, a)
    assert e.value.errno == errno.ESRCH
    assert isinstance(e.value, OSError) and isinstance(e.value, ProcessLookupError)
    assert "gone" in str(e.value)
    assert m.meminfo() == before
    assert m.processes == [other]
    assert other.read(o, 4) == b"keep"
    assert p.rss_pages == 0          # a property: an exited process maps nothing
    m.check()


def test_exited_parent_does_not_affect_its_child():
    m = Machine(ram="1MiB")
    p = m.spawn()
    a = p.mmap(PAGE_SIZE)
    p.write(a, b"inherited")
    c = p.fork()
    p.exit()
    with pytest.raises(ProcessExited):
        p.fork()
    assert c.read(a, 9) == b"inherited"
    c.write(a, b"mine")
    assert m.used_pages == 1
    m.check()
