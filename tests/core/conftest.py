"""Fixtures and helpers of the core tests.

The C boundary tests (test_core_boundary_*.py) share ``world`` (a 1 MiB
machine, an mm with two written pages, a destroyed mm id); their harness is
boundary.py.  The bad-input tests (test_errors_*.py) share ``setup`` (a 1 MiB machine with
one process: two areas with data, a gap between) and ``snapshot`` /
``unchanged``: everything a failed call must leave as it was, read back."""
import pytest

from ksm_engine import PAGE_SIZE, Machine

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



def refused(setup, exc, call, err=None):
    """call() raises ``exc`` (with errno ``err`` when given) and leaves the
    setup as it was; returns the exception."""
    m, p, _, _ = setup
    before = snapshot(m, p)
    with pytest.raises(exc) as e:
        call()
    if err is not None:
        assert e.value.errno == err
    unchanged(setup, before)
    return e.value


@pytest.fixture
def world():
    """A 1 MiB machine, an mm with two written pages, a destroyed mm id,
    and the frame counts to compare against."""
    m = Machine(ram="1MiB")
    p = m.spawn()
    a = p.mmap(8 * PAGE_SIZE)
    p.write(a, b"\x11" * PAGE_SIZE + b"\x22" * PAGE_SIZE)
    gone = m.spawn()
    stale = gone.mm
    gone.exit()
    return m, p, a, stale
