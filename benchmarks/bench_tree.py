"""Tree benchmarks (group "tree"): the unstable and stable trees.

Today's KSM only hashes a page on its first full scan (a page must keep
its checksum over one pass before it may enter a tree), so the tree work
happens from the second full scan on.  Each benchmark loads N pages per
process into a fresh machine, runs the first full scan untimed, then times
one full scan:

  insert_unique      2 x N distinct pages: N*2 unstable tree searches and
                     insertions, nothing merges
  merge_duplicates   N distinct pages present in both processes: the first
                     process's pages go into the unstable tree, the second
                     one's find their twin there, merge, and enter the
                     stable tree (N stable tree insertions)
  stable_lookup      the scan after settling on merge_duplicates: every page
                     is already a KSM page in the stable tree
"""
import numpy as np
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine

from ksm_engine.apps import workloads

GROUP = "tree"
N = 32768  # pages per process: 2 x 128 MiB


def _machine(seeds_per_proc):
    m = Machine(ram=sum(len(s) for s in seeds_per_proc) * PAGE_SIZE + (16 << 20))
    for k, seeds in enumerate(seeds_per_proc):
        img = workloads.ProcessImage(seeds, np.zeros(len(seeds), dtype=bool))
        p = m.spawn(name=f"p{k}")
        a = p.mmap(img.nbytes)
        for start, c in img.chunks():
            p.write(a + start * PAGE_SIZE, c)
        p.madvise(a, img.nbytes, MADV_MERGEABLE)
    return m


def _bench_second_scan(benchmark, seeds_per_proc, passes_before=1):
    state = {}

    def setup():
        m = _machine(seeds_per_proc)
        m.ksm.full_scan(passes_before)
        state["m"] = m
        return (m,), {}

    scanned = benchmark.pedantic(lambda m: m.ksm.full_scan(1), setup=setup, rounds=3)
    benchmark.extra_info.update(pages=sum(len(s) for s in seeds_per_proc))
    return state["m"], scanned


@pytest.mark.benchmark(group=GROUP)
def test_insert_unique(benchmark):
    seeds = [workloads.seed_range(1 << 40, N), workloads.seed_range(2 << 40, N)]
    m, scanned = _bench_second_scan(benchmark, seeds)
    st = m.ksm.stats
    assert scanned == 2 * N
    assert st["pages_unshared"] == 2 * N and st["pages_shared"] == 0
    m.check()


@pytest.mark.benchmark(group=GROUP)
def test_merge_duplicates(benchmark):
    seeds = workloads.seed_range(3 << 40, N)
    m, scanned = _bench_second_scan(benchmark, [seeds, seeds])
    st = m.ksm.stats
    assert scanned == 2 * N
    assert st["pages_shared"] == N and st["pages_sharing"] == N
    m.check()


@pytest.mark.benchmark(group=GROUP)
def test_stable_lookup(benchmark):
    seeds = workloads.seed_range(4 << 40, N)
    m, scanned = _bench_second_scan(benchmark, [seeds, seeds], passes_before=3)
    st = m.ksm.stats
    assert scanned == 2 * N
    assert st["pages_shared"] == N and st["pages_sharing"] == N and st["pages_unshared"] == 0
    m.check()
