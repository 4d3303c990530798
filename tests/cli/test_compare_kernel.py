"""`ksm-engine compare-kernel`: against the real kernel where its KSM is
usable (counters equal, every knob restored, run=2 at the end), the clear
exit-1 message where it is not, and bad input before the kernel is touched."""
import fcntl
import json
import os
import random

import pytest

from ksm_engine.apps import kernel_peer

from .conftest import BAD_KNOB_SETS, PAGE, assert_usage_error, run_cli, run_main

AVAILABLE, WHY = kernel_peer.availability()
rng = random.Random(17)
X = rng.randbytes(PAGE)
SHARED = rng.randbytes(6 * PAGE)
IMG0 = X * 12 + bytes(5 * PAGE) + SHARED + rng.randbytes(7 * PAGE)
IMG1 = X * 3 + SHARED + bytes(2 * PAGE)
# Settled with the default knobs: X (15 mappings), zero (7), 6 pairs.
WANT = {"pages_shared": 8, "pages_sharing": 14 + 6 + 6, "ksm_zero_pages": 0,
        "stable_node_chains": 0, "stable_node_dups": 0, "rmap_items": 41}

# Points the kernel peer at a directory that does not exist, as on a kernel
# without CONFIG_KSM.
NO_KSM = "import ksm_engine.apps.kernel_peer as kp\nkp.KSM_DIR = '/nonexistent/sys/kernel/mm/ksm'\n"


@pytest.fixture
def images(write_file):
    return write_file("g0.img", IMG0), write_file("g1.img", IMG1)


def _writable_knobs():
    """Every writable knob, read at rest: under the lock every run through
    kernel_peer holds (other runs may share this machine's KSM)."""
    d = kernel_peer.KSM_DIR
    with open(kernel_peer.LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return {n: kernel_peer.read_knob(n) for n in sorted(os.listdir(d))
                    if os.stat(os.path.join(d, n)).st_mode & 0o200}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.mark.kernel
@pytest.mark.skipif(not AVAILABLE, reason=f"real kernel KSM not usable here: {WHY}")
def test_counters_match_the_kernel_and_knobs_are_restored(images):
    before = _writable_knobs()
    r = run_cli("compare-kernel", *images, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    after = _writable_knobs()
    assert after.pop("run") == "2"
    before.pop("run")
    assert after == before
    rows = {c["counter"]: c for c in doc["counters"]}
    for name, want in WANT.items():
        assert rows[name]["compared"] is True
        assert rows[name]["kernel"] == rows[name]["engine"] == want, name
    assert doc["match"] is True
    assert doc["kernel"]["settled"] and doc["engine"]["settled"]
    ratio = doc["engine"]["seconds"] / doc["kernel"]["seconds"]     # both rounded to 1 us
    assert abs(doc["time_ratio"] - ratio) <= 0.01 * ratio + 1e-6
    assert [p["ksm_merging_pages"] for p in doc["kernel"]["per_process"]] == \
        [p["ksm_merging_pages"] for p in doc["engine"]["per_process"]]


@pytest.mark.kernel
@pytest.mark.skipif(not AVAILABLE, reason=f"real kernel KSM not usable here: {WHY}")
def test_text_side_by_side_with_knobs(images):
    before = _writable_knobs()
    r = run_cli("compare-kernel", *images, "--set", "use_zero_pages=1", "--set", "max_page_sharing=4")
    assert r.returncode == 0, r.stderr
    after = _writable_knobs()
    assert after.pop("run") == "2"
    before.pop("run")
    assert after == before
    out = r.stdout
    assert out.startswith("ksm-engine compare-kernel: 2 image(s), use_zero_pages=1 max_page_sharing=4")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["ksm_zero_pages"] == ["7", "7", "same"]
    assert rows["stable_node_chains"][:2] == ["1", "1"]       # 15 mappings, 4 per KSM page
    assert "time ratio engine/kernel:" in out
    assert out.rstrip().endswith("counters match")


@pytest.mark.skipif(AVAILABLE, reason="the kernel's KSM is usable here")
def test_unavailable_here(images):
    r = run_cli("compare-kernel", *images)
    assert r.returncode == 1
    assert r.stderr.startswith("ksm-engine: error: the kernel's KSM is not available: ")
    assert WHY in r.stderr and "Traceback" not in r.stderr


def test_unavailable_kernel_is_exit_1_with_the_reason(images):
    r = run_cli("compare-kernel", *images, prelude=NO_KSM)
    assert r.returncode == 1
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("ksm-engine: error: the kernel's KSM is not available: "
                                "/nonexistent/sys/kernel/mm/ksm does not exist (kernel without CONFIG_KSM?)")


@pytest.fixture
def no_ksm(monkeypatch):
    """NO_KSM in this process: had the kernel been reached first, a test
    using it would see exit 1."""
    monkeypatch.setattr(kernel_peer, "KSM_DIR", "/nonexistent/sys/kernel/mm/ksm")


def test_bad_image_before_the_kernel_is_touched(no_ksm, bad_image):
    path, words = bad_image
    assert_usage_error(run_main("compare-kernel", path), str(path), words)


@pytest.mark.parametrize("args,needle", BAD_KNOB_SETS + [
    (["--set", "pages_to_scan=10"], "sets pages_to_scan itself"),
    (["--set", "run=1"], "sets run itself"),
])
def test_bad_knob_before_the_kernel_is_touched(no_ksm, images, args, needle):
    assert_usage_error(run_main("compare-kernel", images[0], *args), needle)
