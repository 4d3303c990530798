"""`ksm-engine estimate --image`: known content, exact counters, the time
model against the engine's own batch-by-batch scan, streaming, bad input."""
import json
import os
import random
import tracemalloc

import pytest

from ksm_engine.apps import estimate as est
from ksm_engine.apps.estimate import engine as est_engine

from .conftest import PAGE, assert_usage_error, run_cli
from .engine_check import assert_run_matches, engine_truth

rng = random.Random(5)
X = rng.randbytes(PAGE)
SHARED_UNIQUE = rng.randbytes(10 * PAGE)
# A: 30 copies of X, 10 zero pages, 10 pages also in B, 10 pages of its own.
A = X * 30 + bytes(10 * PAGE) + SHARED_UNIQUE + rng.randbytes(10 * PAGE)
# B: 10 copies of X and the 10 pages it shares with A.
B = X * 10 + SHARED_UNIQUE
# Settled, use_zero_pages=0: X (40 mappings), zero (10), 10 pairs.
WANT0 = {"pages_shared": 12, "pages_sharing": 39 + 9 + 10, "pages_unshared": 10,
         "ksm_zero_pages": 0}
WANT1 = {"pages_shared": 11, "pages_sharing": 39 + 10, "pages_unshared": 10,
         "ksm_zero_pages": 10}


@pytest.fixture
def images(write_file):
    return write_file("a.img", A), write_file("b.img", B)


def estimate_json(*args):
    r = run_cli("estimate", *args, "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return json.loads(r.stdout)


def test_known_content(images):
    a, b = images
    doc = estimate_json("--image", a, "--image", b)
    assert [s["name"] for s in doc["sources"]] == [str(a), str(b)]
    assert [s["pages"] for s in doc["sources"]] == [60, 20]
    assert doc["pages"] == 80 and doc["bytes"] == 80 * PAGE
    assert doc["zero_pages"] == 10
    r0, r1 = doc["runs"]
    assert r0["use_zero_pages"] == 0 and r1["use_zero_pages"] == 1
    assert {k: r0[k] for k in WANT0} == WANT0
    assert {k: r1[k] for k in WANT1} == WANT1
    assert r0["saving_pages"] == 58 and r0["saving_bytes"] == 58 * PAGE
    assert r0["saving_percent"] == round(100 * 58 / 80, 3)
    assert r1["saving_pages"] == 49 + 10
    assert r0["general_profit"] == 58 * PAGE - 80 * 64
    assert r1["general_profit"] == 59 * PAGE - 70 * 64   # zero-page ptes lose their rmap_items


@pytest.mark.parametrize("pages_to_scan,sleep_ms", [(100, 20), (7, 3), (1, 0)])
def test_prediction_against_the_engines_own_scan(images, pages_to_scan, sleep_ms):
    a, b = images
    doc = estimate_json("--image", a, "--image", b, "--pages-to-scan", pages_to_scan,
                        "--sleep-millisecs", sleep_ms)
    for run in doc["runs"]:
        truth = engine_truth([A, B], pages_to_scan=pages_to_scan,
                             use_zero_pages=run["use_zero_pages"])
        assert_run_matches(run, truth, pages_to_scan, sleep_ms)


def test_knobs_are_applied(images):
    a, b = images
    doc = estimate_json("--image", a, "--image", b, "--set", "max_page_sharing=4",
                        "--set", "smart_scan=0")
    assert doc["knobs"] == {"max_page_sharing": "4", "smart_scan": "0"}
    truth = engine_truth([A, B], knobs={"max_page_sharing": "4", "smart_scan": "0"})
    assert_run_matches(doc["runs"][0], truth, 100, 20)
    assert doc["runs"][0]["stable_node_chains"] >= 1     # 40 copies of X, 4 per KSM page


def test_text_report(images):
    a, b = images
    r = run_cli("estimate", "--image", a, "--image", b)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("ksm-engine estimate: 2 source(s), 80 pages (320.0 KiB)")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["pages_shared"] == ["12", "11"]
    assert rows["pages_sharing"] == ["58", "49"]
    assert rows["ksm_zero_pages"] == ["0", "10"]
    assert rows[str(a)][:2] == ["image", "60"]
    assert "zero-filled pages: 10 (40.0 KiB)" in out
    assert "saving" in rows and "(72.50%)" in " ".join(rows["saving"])
    assert "time model (static memory): pages_to_scan=100, sleep_millisecs=20" in out
    assert "answered by: content counts" in out
    r = run_cli("estimate", "--image", a, "--image", b, "--engine")
    assert r.returncode == 0, r.stderr
    assert "answered by: the engine's KSM run (the content counts agree)" in r.stdout
    assert "time model (engine scans): pages_to_scan=100" in r.stdout


def test_streams_in_chunks_without_a_second_copy(tmp_path):
    """A 16 MiB image read 1 MiB at a time gives the same estimate as in
    8 MiB pieces; the count path allocates no Python memory beyond its one
    buffer (the pages are fingerprinted and counted in C), and the engine
    path loads every byte into the arena."""
    data = (X * 256 + bytes(PAGE * 256) + rng.randbytes(PAGE * 512)) * 4
    path = tmp_path / "big.img"
    path.write_bytes(data)
    results = []
    for chunk in (1 << 20, est.CHUNK_BYTES):
        srcs = est.open_sources([("image", str(path))])
        tracemalloc.start()
        try:
            results.append(est.estimate(srcs, chunk_bytes=chunk))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < chunk + (2 << 20), peak
        m, procs = est_engine.load_sources(srcs, chunk_bytes=chunk)
        assert procs[0].read(procs[0].areas.peekitem(0)[0], len(data)) == data
        for s in srcs:
            s.close()
    assert results[0]["runs"] == results[1]["runs"]
    # X and the zero page: 1024 copies each (4 full KSM pages of 256); the
    # random pages: 4 copies each
    assert results[0]["runs"][0]["pages_sharing"] == 1020 + 1020 + 512 * 3
    assert [r["zero_pages"] for r in results] == [1024, 1024]


def _file(directory, name, data):
    path = directory / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,needle", [
    (lambda d: d / "missing.img", "no such file"),
    (lambda d: _file(d, "empty.img", b""), "empty file"),
    (lambda d: _file(d, "odd.img", b"x" * 5000), "size 5000 is not a multiple of the page size 4096"),
    (lambda d: d, "is a directory"),
])
def test_bad_image(tmp_path, make, needle):
    path = make(tmp_path)
    assert_usage_error(run_cli("estimate", "--image", path), str(path), needle)


def test_the_first_bad_source_is_named(images, tmp_path):
    a, _ = images
    assert_usage_error(run_cli("estimate", "--image", a, "--image", tmp_path / "nope.img"),
                       "nope.img: no such file")


@pytest.mark.parametrize("args,needle", [
    ([], "give at least one source"),
    (["--pages-to-scan", "0"], "--pages-to-scan must be at least 1"),
    (["--pages-to-scan", "many"], "invalid int value"),
    (["--sleep-millisecs=-1"], "--sleep-millisecs must not be negative"),
    (["--max-full-scans", "0"], "--max-full-scans must be at least 1"),
    (["--set", "bogus=1"], "unknown knob 'bogus'"),
    (["--set", "max_page_sharing=1"], "max_page_sharing='1'"),
    (["--set", "smart_scan=maybe"], "(EINVAL)"),
    (["--set", "use_zero_pages=1"], "the estimate sets use_zero_pages itself"),
    (["--set", "pages_to_scan=5"], "the estimate sets pages_to_scan itself"),
])
def test_bad_arguments(images, args, needle):
    a, _ = images
    srcs = ["--image", a] if args else []
    assert_usage_error(run_cli("estimate", *srcs, *args), needle)


def test_not_settled_is_exit_1(images):
    a, b = images
    r = run_cli("estimate", "--image", a, "--image", b, "--engine", "--max-full-scans", "1", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert [x["settled"] for x in doc["runs"]] == [False, False]
    assert os.path.exists(a)
