"""Benchmarks of bulk memory access, pytest-benchmark.

Skipped in the normal test run (pytest runs with --benchmark-skip); run:

    python -m pytest benchmarks/bench_memory_access.py -o addopts="" --benchmark-only

Group "access", 256 MiB each, with a plain bytes copy of the same size as
the baseline (benchmarks/conftest.py prints every benchmark's time as a
ratio to its group's baseline):

  test_baseline_bytes_copy     bytearray(src): a fresh 256 MiB buffer
                               filled by memcpy (page faults included)
  test_baseline_copy_into      memcpy into an existing buffer
  test_write_fresh             p.write into an area never written: a
                               frame per page taken off the free list,
                               faulted in, written
  test_write_in_place          p.write over pages the process owns
  test_read                    p.read: a fresh 256 MiB bytes object filled
                               from the frames (as test_baseline_bytes_copy)

Group "cow" (with bench_cow.py's distinct merged pages), 100,000 pages
(391 MiB), one write spanning every page:
  test_cow_break_ksm_chains    100,000 identical pages merged by KSM into
                               391 KSM pages, dups of one stable_node_chain
                               (max_page_sharing 256): each pte gets its own
                               frame and leaves its dup
  test_cow_break_fork          the pages shared with a forked child
"""
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine

MIB = 1 << 20
SIZE = 256 * MIB
COW_PAGES = 100_000


@pytest.fixture(scope="module")
def src():
    """256 MiB of source data, every page different."""
    page_ids = bytes(range(256)) * (PAGE_SIZE // 256)
    return bytes(page_ids) * (SIZE // PAGE_SIZE)


@pytest.fixture(scope="module")
def machine():
    return Machine(ram=SIZE + 16 * MIB)


def _info(benchmark, nbytes):
    benchmark.extra_info["bytes"] = nbytes


@pytest.mark.benchmark(group="access")
def test_baseline_bytes_copy(benchmark, src):
    _info(benchmark, SIZE)
    out = benchmark.pedantic(bytearray, args=(src,), rounds=5, warmup_rounds=1)
    assert len(out) == SIZE


@pytest.mark.benchmark(group="access")
def test_baseline_copy_into(benchmark, src):
    _info(benchmark, SIZE)
    dst = bytearray(SIZE)
    view = memoryview(dst)

    def copy():
        view[:] = src

    benchmark.pedantic(copy, rounds=5, warmup_rounds=1)
    assert dst[-PAGE_SIZE:] == src[-PAGE_SIZE:]


@pytest.mark.benchmark(group="access")
def test_write_fresh(benchmark, src, machine):
    _info(benchmark, SIZE)
    p = machine.spawn()
    state = {}

    def setup():
        if "a" in state:
            p.munmap(state["a"], SIZE)     # frames back to the free list (and the OS)
        state["a"] = p.mmap(SIZE)
        return (state["a"], src), {}

    benchmark.pedantic(p.write, setup=setup, rounds=5, warmup_rounds=1)
    assert machine.used_pages == SIZE // PAGE_SIZE
    assert p.read(state["a"] + SIZE - PAGE_SIZE, PAGE_SIZE) == src[-PAGE_SIZE:]
    p.exit()


@pytest.fixture
def written(src, machine):
    """(process, address): a process of ``machine`` with ``src`` written
    into an area of its own; it exits after the benchmark."""
    p = machine.spawn()
    a = p.mmap(SIZE)
    p.write(a, src)
    yield p, a
    p.exit()


@pytest.mark.benchmark(group="access")
def test_write_in_place(benchmark, src, machine, written):
    _info(benchmark, SIZE)
    p, a = written
    pfns = p.ptes(a, 4)[0]
    benchmark.pedantic(p.write, args=(a, src), rounds=5, warmup_rounds=1)
    assert p.ptes(a, 4)[0] == pfns                  # no frame changed
    assert machine.used_pages == SIZE // PAGE_SIZE


@pytest.mark.benchmark(group="access")
def test_read(benchmark, src, written):
    _info(benchmark, SIZE)
    p, a = written
    out = benchmark.pedantic(p.read, args=(a, SIZE), rounds=5, warmup_rounds=1)
    assert out == src


def _merged_machine():
    """COW_PAGES identical pages of one process, merged by KSM."""
    m = Machine(ram=COW_PAGES * PAGE_SIZE + 16 * MIB)
    m.ksm.sysfs["pages_to_scan"] = str(COW_PAGES)
    p = m.spawn()
    a = p.mmap(COW_PAGES * PAGE_SIZE)
    p.fill(a, 0x5A, COW_PAGES * PAGE_SIZE)
    p.madvise(a, COW_PAGES * PAGE_SIZE, MADV_MERGEABLE)
    m.ksm.full_scan(2)
    assert m.ksm.stats["pages_shared"] + m.ksm.stats["pages_sharing"] == COW_PAGES
    return m, p, a


@pytest.mark.benchmark(group="cow")
def test_cow_break_ksm_chains(benchmark):
    data = bytes([0xA5]) * (COW_PAGES * PAGE_SIZE)
    _info(benchmark, len(data))
    runs = []

    def setup():
        runs[:] = [_merged_machine()]     # the previous round's machine goes
        return (runs[-1][2], data), {}

    def write(a, buf):
        runs[-1][1].write(a, buf)

    benchmark.pedantic(write, setup=setup, rounds=3)
    m, p, a = runs[-1]
    assert m.ksm.stats["pages_shared"] == m.ksm.stats["pages_sharing"] == 0
    assert m.used_pages == COW_PAGES
    assert p.read(a, 2) == b"\xa5\xa5"


@pytest.mark.benchmark(group="cow")
def test_cow_break_fork(benchmark):
    data = bytes([0xA5]) * (COW_PAGES * PAGE_SIZE)
    _info(benchmark, len(data))
    m = Machine(ram=2 * COW_PAGES * PAGE_SIZE + 16 * MIB)
    p = m.spawn()
    a = p.mmap(COW_PAGES * PAGE_SIZE)
    p.fill(a, 0x5A, COW_PAGES * PAGE_SIZE)
    children = []

    def setup():
        for c in children:
            c.exit()
        children[:] = [p.fork()]
        return (a, data), {}

    def write(addr, buf):
        children[0].write(addr, buf)

    benchmark.pedantic(write, setup=setup, rounds=3)
    assert m.used_pages == 2 * COW_PAGES
    assert p.read(a, 1) == b"\x5a" and children[0].read(a, 1) == b"\xa5"
