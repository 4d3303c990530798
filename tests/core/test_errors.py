"""Bad input: every entry point of Machine and Process, called the
wrong way, raises a clear exception and changes nothing.

  wrong types                          TypeError
  unaligned, zero or negative ranges   OSError(EINVAL)
  access outside every area            SegmentationFault (OSError, EFAULT)
  any call on an exited process        ProcessExited (OSError, ESRCH)
  RAM sizes not positive / not pages   ValueError
  huge values                          an exception, never a crash

"Changes nothing" is checked by reading back: the bytes, the frames
(ptes), the frame counts and the areas are the same after the failed call.
"""
import errno
import pytest

from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE,
                        PR_SET_MEMORY_MERGE, Machine, ProcessExited, SegmentationFault)
from ksm_engine.process import TASK_SIZE
from tests.conftest import proc_status_kib

HUGE = [1 << 64, 1 << 100, -(1 << 64)]
NOT_INTS = [1.0, "4096", None, b"\x00", [4096], True]


def snapshot(m, p):
    """Everything a failed call must leave as it was."""
    areas = [(a.start, a.end, a.flags) for a in p.areas.values()]
    contents = [p.read(a.start, a.end - a.start) for a in p.areas.values()]
    ptes = [p.ptes(a.start, (a.end - a.start) // PAGE_SIZE) for a in p.areas.values()]
    return areas, contents, ptes, m.meminfo(), p.rss_pages


@pytest.fixture
def setup():
    """A 1 MiB machine with one process: two areas with data, a gap between."""
    m = Machine(ram="1MiB")
    p = m.spawn(name="victim")
    a = p.mmap(4 * PAGE_SIZE)
    b = p.mmap(2 * PAGE_SIZE)
    p.write(a, bytes(range(256)) * 16 * 3)
    p.fill(b, 0x77, PAGE_SIZE + 5)
    yield m, p, a, b
    m.check()


def unchanged(setup_tuple, before):
    m, p, _, _ = setup_tuple
    assert snapshot(m, p) == before
    m.check()


# --- the machine ------------------------------------------------------------------


@pytest.mark.parametrize("ram", [1.0, 4096.0, None, b"4096", [4096], True, object()])
def test_ram_of_the_wrong_type(ram):
    with pytest.raises(TypeError):
        Machine(ram=ram)


@pytest.mark.parametrize("ram", [0, -4096, "0", "0MiB", 1, 4095, 4097, PAGE_SIZE * 3 + 1,
                                 "1.5MiB", "abc", "", "12 XB", "-1M", "4096 4096"])
def test_ram_not_positive_or_not_pages(ram):
    with pytest.raises(ValueError):
        Machine(ram=ram)


@pytest.mark.parametrize("ram", [1 << 60, 1 << 100, "16TiB", "17T", "100000TiB", 2 ** 64])
def test_ram_too_large_is_refused_not_a_crash(ram):
    with pytest.raises(ValueError):
        Machine(ram=ram)


@pytest.mark.parametrize("kw, exc", [
    ({"nr_zones": 0}, ValueError),
    ({"nr_zones": 17}, ValueError),
    ({"nr_zones": 1.0}, TypeError),
    ({"nr_zones": True}, TypeError),
    ({"ksm_compat": "2010"}, ValueError),
    ({"ksm_compat": 2009}, ValueError),
    ({"clock": 5}, TypeError),
])
def test_machine_keywords(kw, exc):
    with pytest.raises(exc):
        Machine(ram=16 * PAGE_SIZE, **kw)


def test_spawn_name_must_be_a_string():
    m = Machine(ram="1MiB")
    for bad in (1, b"x", ["x"]):
        with pytest.raises(TypeError):
            m.spawn(name=bad)
    assert m.processes == []


def test_machine_process_of_an_unknown_pid():
    m = Machine(ram="1MiB")
    with pytest.raises(ProcessLookupError) as e:
        m.process(12345)
    assert e.value.errno == errno.ESRCH


@pytest.mark.parametrize("call", [
    lambda m: m.balloon_page_free(1.0),
    lambda m: m.balloon_page_free("0"),
    lambda m: m.balloon_page_free(True),
    lambda m: m.adjust_managed_page_count(1.0),
    lambda m: m.adjust_managed_page_count(None),
    lambda m: m.adjust_managed_page_count(False),
    lambda m: m.page_zone(0.0),
    lambda m: m.zone_managed_pages("0"),
    lambda m: m.register_oom_notifier(42),
    lambda m: m.process("1"),
    lambda m: m.process(1.0),
    lambda m: m.zone_size("0"),
    lambda m: m.zone_size(None),
])
def test_machine_methods_with_wrong_types(call):
    m = Machine(ram="1MiB")
    before = m.meminfo()
    with pytest.raises(TypeError):
        call(m)
    assert m.meminfo() == before


@pytest.mark.parametrize("pfn", [-1, 256, 1 << 32, 1 << 64, -(1 << 64)])
def test_balloon_free_of_huge_or_negative_pfns(pfn):
    m = Machine(ram="1MiB")
    with pytest.raises(ValueError):
        m.balloon_page_free(pfn)
    with pytest.raises(ValueError):
        m.page_zone(pfn)
    assert m.free_pages == 256
    m.check()


@pytest.mark.parametrize("zone", [-1, 1, 1 << 64])
def test_zone_out_of_range(zone):
    m = Machine(ram="1MiB")
    for call in (m.zone_size, m.zone_managed_pages):
        with pytest.raises(ValueError):
            call(zone)


@pytest.mark.parametrize("delta", [1 << 64, -(1 << 64), 1 << 100])
def test_huge_managed_page_adjustments(delta):
    m = Machine(ram="1MiB")
    with pytest.raises(ValueError):
        m.adjust_managed_page_count(delta)
    assert m.totalram_pages == 256


# --- mmap and munmap ----------------------------------------------------------------


@pytest.mark.parametrize("length", NOT_INTS)
def test_mmap_length_of_the_wrong_type(setup, length):
    m, p, _, _ = setup
    before = snapshot(m, p)
    with pytest.raises(TypeError):
        p.mmap(length)
    unchanged(setup, before)


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
    before = snapshot(m, p)
    with pytest.raises(OSError) as e:
        p.mmap(length)
    assert e.value.errno == errno.EINVAL
    unchanged(setup, before)


@pytest.mark.parametrize("addr", [1, PAGE_SIZE + 1, 0x40000000 - 1, -PAGE_SIZE, -1])
def test_mmap_bad_address_is_einval(setup, addr):
    m, p, _, _ = setup
    before = snapshot(m, p)
    with pytest.raises(OSError) as e:
        p.mmap(PAGE_SIZE, addr=addr)
    assert e.value.errno == errno.EINVAL
    unchanged(setup, before)


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
    before = snapshot(m, p)
    with pytest.raises(OSError) as e:
        p.mmap(length, addr=addr)
    assert e.value.errno == errno.ENOMEM
    unchanged(setup, before)


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
    before = snapshot(m, p)
    with pytest.raises(OSError) as e:
        p.munmap(a + offset, length)
    assert e.value.errno == errno.EINVAL
    unchanged(setup, before)


@pytest.mark.parametrize("addr", [-PAGE_SIZE, -(1 << 64), 1 << 64, TASK_SIZE, TASK_SIZE + PAGE_SIZE])
def test_munmap_bad_address_is_einval(setup, addr):
    m, p, _, _ = setup
    before = snapshot(m, p)
    with pytest.raises(OSError) as e:
        p.munmap(addr, PAGE_SIZE)
    assert e.value.errno == errno.EINVAL
    unchanged(setup, before)


# --- access outside the areas ------------------------------------------------------------


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
    before = snapshot(m, p)
    with pytest.raises(SegmentationFault) as e:
        p.write(addr, b"\xee" * length)
    assert e.value.errno == errno.EFAULT
    assert isinstance(e.value, OSError)
    unchanged(setup, before)


@pytest.mark.parametrize("k", _outside_cases())
def test_fill_outside_is_a_segfault_and_changes_nothing(setup, k):
    m, p, _, _ = setup
    addr, length = _range(setup, k)
    before = snapshot(m, p)
    with pytest.raises(SegmentationFault) as e:
        p.fill(addr, 0xEE, length)
    assert e.value.errno == errno.EFAULT
    unchanged(setup, before)


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
    before = snapshot(m, p)
    with pytest.raises(TypeError):
        p.write(a, data)
    unchanged(setup, before)


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
    before = snapshot(m, p)
    with pytest.raises(TypeError):
        call(p, a)
    unchanged(setup, before)
    assert p.prctl(PR_GET_MEMORY_MERGE) == 0


@pytest.mark.parametrize("byte", [-1, 256, 1 << 64, -(1 << 64)])
def test_fill_byte_out_of_range(setup, byte):
    m, p, a, _ = setup
    before = snapshot(m, p)
    with pytest.raises(ValueError):
        p.fill(a, byte, 10)
    unchanged(setup, before)


@pytest.mark.parametrize("call", [
    lambda p, a: p.read(a, -1),
    lambda p, a: p.read(a, -(1 << 64)),
    lambda p, a: p.fill(a, 1, -1),
    lambda p, a: p.fill(a, 1, -(1 << 70)),
])
def test_negative_counts(setup, call):
    m, p, a, _ = setup
    before = snapshot(m, p)
    with pytest.raises(ValueError):
        call(p, a)
    unchanged(setup, before)


# --- madvise, prctl, ptes ---------------------------------------------------------------------


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
    before = snapshot(m, p)
    with pytest.raises(OSError) as e:
        p.prctl(*args)
    assert e.value.errno == errno.EINVAL
    unchanged(setup, before)
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
