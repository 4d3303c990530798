"""Ingest benchmarks (group "estimate"): getting a memory image into the
engine, the first step of `ksm-engine estimate --image`.

The target: `ksm-engine estimate --image` ingests a 1 GiB image
at 1 GB/s or faster.  One IMAGE_BYTES image (the vm_mix workload's pages,
one file) is written once to a temporary directory; its pages are in the
page cache for every round (the ingest, not the disk, is measured).

  estimate_count    the estimate's count path: the image read
                    8 MiB at a time, each page fingerprinted and counted
                    in C (estimate.count.count_sources), the summary taken
  estimate_ingest   estimate.open_sources([("image", path)]) and
                    estimate.engine.load_sources: the machine made to fit,
                    the image streamed into one MERGEABLE area (what
                    `estimate --engine` does before KSM runs)
  load_images       settle.load_images: `ksm-engine scan`'s loading
  bytes_copy        the peer: a plain copy of the mmap'd image into a
                    preallocated bytearray (page cache to anonymous memory,
                    first touch included, as the arena's)

extra_info: bytes; GB/s = bytes / time / 1e9.
"""
import mmap

import numpy as np
import pytest

from ksm_engine.apps import workloads
from ksm_engine.settle import load_images

GROUP = "estimate"
IMAGE_BYTES = 1 << 30
ROUNDS = 3


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("ingest") / "vm_mix.img"
    wl = workloads.make("vm_mix", IMAGE_BYTES, seed=2)
    with open(path, "wb") as f:
        for img in wl.images:
            for _, c in img.chunks():
                f.write(c.data)
    yield str(path)
    path.unlink()


def _check_loaded(m, procs, path):
    assert len(procs) == 1
    p = procs[0]
    assert p.rss_pages == IMAGE_BYTES // 4096
    with open(path, "rb") as f:
        f.seek(IMAGE_BYTES - 8192)
        tail = f.read(8192)
    a = p.areas.peekitem(0)[1].start
    assert p.read(a + IMAGE_BYTES - 8192, 8192) == tail


@pytest.mark.benchmark(group=GROUP)
def test_estimate_count(benchmark, image):
    from ksm_engine.apps.estimate import open_sources
    from ksm_engine.apps.estimate.count import count_sources

    def count():
        sources = open_sources([("image", image)])
        try:
            with count_sources(sources) as counts:
                return counts.summary()
        finally:
            for s in sources:
                s.close()

    summary = benchmark.pedantic(count, rounds=ROUNDS)
    benchmark.extra_info.update(bytes=IMAGE_BYTES)
    assert summary.pages == IMAGE_BYTES // 4096


@pytest.mark.benchmark(group=GROUP)
def test_estimate_ingest(benchmark, image):
    estimate = pytest.importorskip("ksm_engine.apps.estimate")
    from ksm_engine.apps.estimate.engine import load_sources
    kept = {}

    def ingest():
        sources = estimate.open_sources([("image", image)])
        try:
            kept["m"], kept["procs"] = load_sources(sources)
        finally:
            for s in sources:
                s.close()

    def setup():
        kept.clear()  # the previous round's machine goes before the next is made
        return (), {}

    benchmark.pedantic(ingest, setup=setup, rounds=ROUNDS)
    benchmark.extra_info.update(bytes=IMAGE_BYTES)
    _check_loaded(kept["m"], kept["procs"], image)


@pytest.mark.benchmark(group=GROUP)
def test_load_images(benchmark, image):
    kept = {}

    def ingest():
        kept["m"], kept["procs"] = load_images([image])

    benchmark.pedantic(ingest, setup=lambda: (kept.clear(), ((), {}))[1], rounds=ROUNDS)
    benchmark.extra_info.update(bytes=IMAGE_BYTES)
    _check_loaded(kept["m"], kept["procs"], image)


@pytest.mark.benchmark(group=GROUP)
def test_bytes_copy(benchmark, image):
    with open(image, "rb") as f:
        src = mmap.mmap(f.fileno(), IMAGE_BYTES, prot=mmap.PROT_READ)
    kept = {}

    def setup():
        kept["dst"] = None
        kept["dst"] = bytearray(IMAGE_BYTES)  # calloc'd: untouched until the copy
        return (kept["dst"],), {}

    def copy(dst):
        memoryview(dst)[:] = src

    benchmark.pedantic(copy, setup=setup, rounds=ROUNDS)
    benchmark.extra_info.update(bytes=IMAGE_BYTES)
    dst = np.frombuffer(kept["dst"], dtype=np.uint8)
    assert (dst[-4096:] == np.frombuffer(src, dtype=np.uint8, count=4096, offset=IMAGE_BYTES - 4096)).all()
    kept.clear()
    src.close()
