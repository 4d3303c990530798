"""Checksum benchmarks (group "checksum"): the page checksum KSM uses.

The target: the C checksum over page-sized blocks is at least as
fast as the xxhash package's xxh64 over the same bytes in one call.  Over
one buffer of NPAGES random pages:

  c_pages_bulk       ke_checksum_pages: one C call hashing every page on
                     its own (xxh64, seed 0, low 32 bits), as the scan does
  xxhash_one_call    xxhash.xxh64_intdigest(buffer): the package, one call
                     over all the bytes (its best case: no per-call cost)
  c_one_call         ke_xxh64 over all the bytes in one call (the same
                     work as xxhash_one_call, through our C)
  c_page_loop        a Python loop calling ke_checksum_page per page
                     (what per-page calls from Python would cost)
  xxhash_page_loop   a Python loop of xxhash.xxh64_intdigest per page
  c_pages_2009       ke_checksum_pages in 2009 mode (the 2009 jhash2, lookup2 hash2, initval 17)

extra_info["bytes"] lets a reader turn the times into GB/s.
"""
import numpy as np
import pytest
import xxhash

from ksm_engine._native import PAGE_SIZE as PAGE
from ksm_engine._native import ffi, lib

NPAGES = 16384  # 64 MiB, beyond the caches
GROUP = "checksum"


@pytest.fixture(scope="module")
def pages():
    buf = np.random.default_rng(6).integers(0, 256, NPAGES * PAGE, dtype=np.uint8).tobytes()
    return buf


@pytest.fixture(scope="module")
def expected(pages):
    return [xxhash.xxh64_intdigest(pages[i * PAGE:(i + 1) * PAGE]) & 0xFFFFFFFF
            for i in range(NPAGES)]


def _info(benchmark):
    benchmark.extra_info.update(bytes=NPAGES * PAGE, pages=NPAGES)


@pytest.mark.benchmark(group=GROUP)
def test_c_pages_bulk(benchmark, pages, expected):
    out = ffi.new("uint32_t[]", NPAGES)
    cbuf = ffi.from_buffer(pages)
    _info(benchmark)
    assert benchmark(lib.ke_checksum_pages, cbuf, NPAGES, 0, out) == 0
    assert list(out) == expected


@pytest.mark.benchmark(group=GROUP)
def test_xxhash_one_call(benchmark, pages):
    _info(benchmark)
    assert benchmark(xxhash.xxh64_intdigest, pages) == lib.ke_xxh64(ffi.from_buffer(pages), len(pages), 0)


@pytest.mark.benchmark(group=GROUP)
def test_c_one_call(benchmark, pages):
    cbuf = ffi.from_buffer(pages)
    _info(benchmark)
    assert benchmark(lib.ke_xxh64, cbuf, len(pages), 0) == xxhash.xxh64_intdigest(pages)


@pytest.mark.benchmark(group=GROUP)
def test_c_page_loop(benchmark, pages, expected):
    cbuf = ffi.from_buffer(pages)
    f = lib.ke_checksum_page
    _info(benchmark)
    got = benchmark(lambda: [f(cbuf + i * PAGE, 0) for i in range(NPAGES)])
    assert got == expected


@pytest.mark.benchmark(group=GROUP)
def test_xxhash_page_loop(benchmark, pages, expected):
    mv = memoryview(pages)
    f = xxhash.xxh64_intdigest
    _info(benchmark)
    got = benchmark(lambda: [f(mv[i * PAGE:(i + 1) * PAGE]) & 0xFFFFFFFF for i in range(NPAGES)])
    assert got == expected


@pytest.mark.benchmark(group=GROUP)
def test_c_pages_2009(benchmark, pages):
    out = ffi.new("uint32_t[]", NPAGES)
    cbuf = ffi.from_buffer(pages)
    _info(benchmark)
    assert benchmark(lib.ke_checksum_pages, cbuf, NPAGES, 1, out) == 0
    words = ffi.cast("uint32_t *", cbuf)
    assert out[0] == lib.ke_jhash2_2009(words, PAGE // 4, 17)
    assert out[NPAGES - 1] == lib.ke_jhash2_2009(words + (NPAGES - 1) * PAGE // 4, PAGE // 4, 17)
