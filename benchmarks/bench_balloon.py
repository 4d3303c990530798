"""Benchmarks of the CMM balloon (pytest-benchmark, group "balloon").

Skipped in the normal test run (pytest runs with --benchmark-skip); run them
with:

    python -m pytest benchmarks/bench_balloon.py -o addopts="" --benchmark-only

What is measured: inflating and deflating N pages through cmm_alloc_pages /
cmm_free_pages (frame from the Machine, H_PAGE_INIT per CMO page, balloon
list, managed count), the same with 1 KiB CMO pages (4 hcalls a page), one
polling round of the thread that loans N pages, and compacting a balloon of
N pages.
"""
import pytest

from cmm import CmmDriver, Hypervisor, SimClock

SIZES = [1024, 16384]
RAM = 256 << 20


def make(cmo=4096):
    from ksm_engine import Machine
    m = Machine(ram=RAM)
    return CmmDriver(m, Hypervisor(cmo_page_size=cmo), clock=SimClock(), min_mem_mb=0,
                     disable=1)


@pytest.mark.benchmark(group="balloon")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cmo", [4096, 1024])
def test_inflate(benchmark, n, cmo):
    drv = make(cmo)

    def setup():
        drv.cmm_free_pages(drv.loaned_pages.read())
        return (n,), {}

    assert benchmark.pedantic(drv.cmm_alloc_pages, setup=setup, rounds=5) == 0
    assert drv.loaned_pages.read() == n


@pytest.mark.benchmark(group="balloon")
@pytest.mark.parametrize("n", SIZES)
def test_deflate(benchmark, n):
    drv = make()

    def setup():
        drv.cmm_alloc_pages(n - drv.loaned_pages.read())
        return (n,), {}

    assert benchmark.pedantic(drv.cmm_free_pages, setup=setup, rounds=5) == 0
    assert drv.loaned_pages.read() == 0


@pytest.mark.benchmark(group="balloon")
@pytest.mark.parametrize("n", SIZES)
def test_poll_round(benchmark, n):
    """One wake-up of the thread: H_GET_MPP, cmm_get_mpp, loan n pages."""
    from ksm_engine import Machine
    clock = SimClock()
    drv = CmmDriver(Machine(ram=RAM), Hypervisor(), clock=clock, min_mem_mb=0)

    def setup():
        drv.cmm_free_pages(drv.loaned_pages.read())
        drv.partition.set_loan_target(n * 4096)
        return (1,), {}

    benchmark.pedantic(clock.advance, setup=setup, rounds=5)
    assert drv.loaned_pages.read() == n


@pytest.mark.benchmark(group="balloon")
@pytest.mark.parametrize("n", SIZES)
def test_compact(benchmark, n):
    drv = make()
    drv.cmm_alloc_pages(n)
    res = benchmark.pedantic(drv.compact, rounds=3)
    assert res.migrated == n
