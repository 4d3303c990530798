"""Fixtures for the CMM tests.

Every driver a test makes through ``make_driver`` is checked against the
invariant when the test ends (and again after it is unloaded); tests call
``check_invariants`` themselves at the points that matter.  The machine is
the root conftest's (64 MiB, its core checked when the test ends, after the
drivers are unloaded), min_mem_mb 16, so the suite runs in seconds.
"""
import pytest

from cmm import CmmDriver, Hypervisor, SimClock
from cmm.hypervisor import H_PAGE_SET_LOANED
from ksm_engine import PAGE_SIZE, parse_size
from tests.conftest import SMALL_RAM

RAM = parse_size(SMALL_RAM)        # the root conftest's ``machine``
NR_FRAMES = RAM // PAGE_SIZE
MIN_MEM_MB = 16
MIN_MEM_PAGES = MIN_MEM_MB * 256
MAX_LOAN = NR_FRAMES - MIN_MEM_PAGES          # most the driver may loan


def target_kb(drv, kb):
    """The hypervisor asks the partition to loan ``kb`` KiB."""
    drv.partition.set_loan_target(kb * 1024)


def loaned_driver(make_driver, clock, kb=4096):
    """A driver (make_driver's defaults) whose thread has had a second to
    loan ``kb`` KiB."""
    drv = make_driver()
    target_kb(drv, kb)
    clock.advance(1)
    return drv


def record_hcalls(part):
    """Wrap the partition's H_PAGE_INIT to record (op, addr, rc)."""
    calls = []
    orig = part.hcall_page_init

    def rec(flags, addr):
        rc = orig(flags, addr)
        calls.append(("L" if flags == H_PAGE_SET_LOANED else "A", addr, rc))
        return rc

    part.hcall_page_init = rec
    return calls


def expected_hv_record(drv):
    """The CMO page addresses the hypervisor should hold as loaned for the
    driver's balloon pages."""
    if drv.simulate:
        return set()
    sz = drv.partition.cmo_page_size
    return {pfn * PAGE_SIZE + off for pfn in drv.balloon_pfns() for off in range(0, PAGE_SIZE, sz)}


def check_invariants(drv):
    """The invariant of every test:

    * the machine's free + used + balloon frames == its frames;
    * the driver's loaned count == pages on its balloon == the machine's
      balloon frames, and totalram == frames - loaned;
    * the hypervisor's record for the partition == the CMO pages of the
      balloon's pages (none in simulate mode), so hv loaned bytes ==
      loaned_pages * PAGE_SIZE.  Only after a failed H_PAGE_SET_ACTIVE,
      which cmm.c ignores, may the hypervisor hold more (never less).
    """
    m = drv.machine
    assert m.free_pages + m.used_pages + m.balloon_pages == m.nr_frames
    owned = drv.balloon_pfns()
    loaned = drv.loaned_pages.read()
    assert loaned == len(owned)
    assert drv.b_dev_info.vmstat["nr_balloon_pages"] == loaned
    assert m.balloon_pages == loaned
    assert m.totalram_pages == m.nr_frames - loaned
    part = drv.partition
    if part is None:
        return
    want = expected_hv_record(drv)
    if part.calls["failed_set_active"] == 0:
        assert part.loaned == want
        assert part.loaned_bytes == (0 if drv.simulate else loaned * PAGE_SIZE)
    else:
        assert want <= part.loaned


def check_counts(drv):
    """The O(1) part of check_invariants (for checks after every round)."""
    m = drv.machine
    assert m.free_pages + m.used_pages + m.balloon_pages == m.nr_frames
    loaned = drv.loaned_pages.read()
    b = drv.b_dev_info
    assert loaned == len(b.pages) + b.isolated_pages == m.balloon_pages
    assert m.totalram_pages == m.nr_frames - loaned
    part = drv.partition
    if part is not None and part.calls["failed_set_active"] == 0:
        assert part.loaned_bytes == (0 if drv.simulate else loaned * PAGE_SIZE)


@pytest.fixture
def hv():
    return Hypervisor()


@pytest.fixture
def clock():
    return SimClock()


@pytest.fixture
def make_driver(machine, hv, clock):
    """make_driver(**kw) -> CmmDriver on the test's machine, hypervisor and
    simulated clock, with min_mem_mb=16 unless given."""
    made = []

    def make(**kw):
        kw.setdefault("min_mem_mb", MIN_MEM_MB)
        kw.setdefault("clock", clock)
        m = kw.pop("machine", machine)
        h = kw.pop("hv", hv)
        drv = CmmDriver(m, h, **kw)
        made.append(drv)
        return drv

    yield make
    for drv in made:
        check_invariants(drv)
        drv.unload()
        check_invariants(drv)
        assert drv.loaned_pages.read() == 0 or drv.b_dev_info.isolated_pages
