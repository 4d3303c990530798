"""Scan benchmarks: one full scan (group "scan") and settling (group
"settle") on every workload of ksm_engine/apps/workloads.py at SIZE bytes.

  first_full_scan[W]   the first full scan after loading workload W: every
                       page gets its rmap_item and is hashed
  settle[W]            settle.settle() from a fresh load: full scans until
                       the counters hold still (the rule `ksm-engine scan`
                       and the kernel comparison use); this is the engine
                       side of scripts/bench_vs_kernel.py, without the
                       kernel

Loading is untimed (pedantic setup).  extra_info: pages, full_scans.
"""
import pytest

from ksm_engine.apps import workloads
from ksm_engine.settle import settle

SIZE = 128 << 20
ROUNDS = 3


@pytest.fixture(scope="module", params=workloads.NAMES)
def workload(request):
    return workloads.make(request.param, SIZE, seed=1)


@pytest.mark.benchmark(group="scan")
def test_first_full_scan(benchmark, workload):
    def setup():
        m, _ = workload.load()
        return (m,), {}

    scanned = benchmark.pedantic(lambda m: m.ksm.full_scan(1), setup=setup, rounds=ROUNDS)
    benchmark.extra_info.update(pages=workload.total_pages, workload=workload.name)
    assert scanned == workload.total_pages


@pytest.mark.benchmark(group="settle")
def test_settle(benchmark, workload):
    state = {}

    def setup():
        m, _ = workload.load()
        state["m"] = m
        return (m,), {}

    result = benchmark.pedantic(settle, setup=setup, rounds=ROUNDS)
    benchmark.extra_info.update(pages=workload.total_pages, workload=workload.name,
                                full_scans=result.full_scans)
    assert result.settled
    # Every page is tracked, by an rmap_item or (use_zero_pages) as a zero page.
    c = result.counters
    assert c["rmap_items"] + c["ksm_zero_pages"] == workload.total_pages
    state["m"].check()
