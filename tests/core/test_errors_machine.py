"""Bad input: every entry point of Machine and Process, called the
wrong way, raises a clear exception and changes nothing.  The machine:
RAM sizes not positive / not pages (ValueError), wrong types (TypeError),
huge values (an exception, never a crash), unknown pids, balloon frames and
zones out of range.

"Changes nothing" is checked by reading back (conftest.snapshot): the
bytes, the frames (ptes), the frame counts and the areas are the same after
the failed call.
"""
import errno
import pytest

from ksm_engine import PAGE_SIZE, Machine


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
