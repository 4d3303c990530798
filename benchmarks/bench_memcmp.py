"""Page comparison benchmarks (group "memcmp").

KSM orders its trees by page content, so every tree step is a memcmp of
two pages.  The core has no public memcmp of its own; what matters is what
the tree walks pay, so this measures:

  bytes_eq_*          the peer: Python's bytes == over NPAIRS page pairs
                      (libc memcmp plus one call each), equal pages (a full
                      4096-byte compare) and pages differing in byte 0
  scan_differ_last    the second full scan (the one that fills the
                      unstable tree) over pages equal but for their last 8
                      bytes: every tree step must compare up to the end
                      of the page, the worst case
  scan_differ_first   the same scan over pages differing in their first
                      bytes (every compare ends at once)

extra_info of the scans holds the core's memcmps counter for that scan, so
time per full memcmp can be read off the JSON.
"""
import numpy as np
import pytest

from ksm_engine import PAGE_SIZE

from ksm_engine.apps import workloads

GROUP = "memcmp"
NPAIRS = 16384
NPAGES = 16384  # per process, 2 processes: 128 MiB


@pytest.fixture(scope="module")
def page_pairs():
    rng = np.random.default_rng(7)
    a = [rng.integers(0, 256, PAGE_SIZE, dtype=np.uint8).tobytes() for _ in range(64)]
    equal = [bytes(bytearray(p)) for p in a]       # distinct objects, same bytes
    first = [bytes([p[0] ^ 1]) + p[1:] for p in a]
    return a, equal, first


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("case", ["equal", "differ_first"])
def test_bytes_eq(benchmark, page_pairs, case):
    a, equal, first = page_pairs
    b = equal if case == "equal" else first
    idx = [i % 64 for i in range(NPAIRS)]
    benchmark.extra_info.update(compares=NPAIRS, bytes=NPAIRS * PAGE_SIZE)
    got = benchmark(lambda: sum(a[i] == b[i] for i in idx))
    assert got == (NPAIRS if case == "equal" else 0)


def _tail_workload(first):
    """2 processes of NPAGES pages; all share a body and differ in 8 bytes:
    the last 8 (first=False) or the first 8 (first=True)."""
    wl = workloads.make("differ_in_last_bytes", 2 * NPAGES * PAGE_SIZE, seed=3)
    if first:
        for img in wl.images:
            img.seeds = img.tail.copy()  # content from the tail value: differs at once
            img.tail = None
    return wl


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("where", ["last", "first"])
def test_scan_differ(benchmark, where):
    wl = _tail_workload(where == "first")
    state = {}

    def setup():
        m, _ = wl.load()
        m.ksm.full_scan(1)  # pass 1: checksums only
        state["m"] = m
        state["before"] = m.ksm.perf_counters()["memcmps"]
        return (m,), {}

    result = benchmark.pedantic(lambda m: m.ksm.full_scan(1), setup=setup, rounds=3)
    m = state["m"]
    memcmps = m.ksm.perf_counters()["memcmps"] - state["before"]
    benchmark.extra_info.update(pages=wl.total_pages, memcmps=memcmps)
    assert result == wl.total_pages
    assert m.ksm.stats["pages_sharing"] > 0  # a third of the tails repeat
    m.check()
