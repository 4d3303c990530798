"""Copy-on-write benchmarks (group "cow").

The target: breaking COW on 100 thousand merged pages with one
write spanning them costs at most 3 microseconds a page.

Setup (untimed): two processes each map NPAGES distinct pages with the same
contents; KSM settles, so every page of process A maps a KSM page shared
with B (NPAGES stable nodes, pages_sharing == NPAGES).  Timed:

  break_merged      one p.write of NPAGES * 4096 new bytes over A's whole
                    area: every page takes a fresh frame, leaves its stable
                    node (its rmap_item drops off at once), and is written
  break_merged_fill the same with p.fill (memset): no source buffer
  write_private     the peer: the same write over A's pages when they are
                    private (never merged) - the cost of the write alone

extra_info: pages, bytes; us per page = time / pages.
"""
import numpy as np
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine

from ksm_engine.apps import workloads
from ksm_engine.settle import settle

GROUP = "cow"
NPAGES = 100_000
ROUNDS = 3


@pytest.fixture(scope="module")
def contents():
    img = workloads.ProcessImage(workloads.seed_range(5 << 40, NPAGES), np.zeros(NPAGES, dtype=bool))
    data = np.concatenate([c for _, c in img.chunks()])
    new = np.full(NPAGES * PAGE_SIZE, 0x5A, dtype=np.uint8)
    return data, new


def _machine(data, merge):
    m = Machine(ram=3 * NPAGES * PAGE_SIZE + (16 << 20))
    areas = []
    for k in range(2):
        p = m.spawn(name=f"p{k}")
        a = p.mmap(NPAGES * PAGE_SIZE)
        p.write(a, data)
        if merge:
            p.madvise(a, NPAGES * PAGE_SIZE, MADV_MERGEABLE)
        areas.append((p, a))
    if merge:
        assert settle(m).settled
        assert m.ksm.stats["pages_sharing"] == NPAGES
    return m, areas[0]


def _run(benchmark, contents, merge, how):
    data, new = contents
    state = {}

    def setup():
        m, (p, a) = _machine(data, merge)
        state.update(m=m, p=p, a=a)
        return (p, a), {}

    if how == "write":
        benchmark.pedantic(lambda p, a: p.write(a, new), setup=setup, rounds=ROUNDS)
    else:
        benchmark.pedantic(lambda p, a: p.fill(a, 0x5A, NPAGES * PAGE_SIZE), setup=setup, rounds=ROUNDS)
    benchmark.extra_info.update(pages=NPAGES, bytes=NPAGES * PAGE_SIZE)
    m, p, a = state["m"], state["p"], state["a"]
    st = m.ksm.stats
    assert p.read(a + 12345 * PAGE_SIZE, PAGE_SIZE) == b"\x5a" * PAGE_SIZE
    _, flags = p.ptes(a, NPAGES)
    assert set(flags) == {1}  # every page of A private again
    if merge:
        # B alone maps each KSM page now: pages_shared stays, nothing shares.
        assert st["pages_sharing"] == 0 and st["pages_shared"] == NPAGES
    m.check()


@pytest.mark.benchmark(group=GROUP)
def test_break_merged(benchmark, contents):
    _run(benchmark, contents, True, "write")


@pytest.mark.benchmark(group=GROUP)
def test_break_merged_fill(benchmark, contents):
    _run(benchmark, contents, True, "fill")


@pytest.mark.benchmark(group=GROUP)
def test_write_private(benchmark, contents):
    _run(benchmark, contents, False, "write")
