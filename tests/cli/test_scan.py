"""`ksm-engine scan` end to end, under the conventions of every command:
counters of known images, the 2009 mode, bad input."""
import json
import random

import pytest

from .conftest import BAD_KNOB_SETS, PAGE, assert_usage_error, run_cli, run_main

rng = random.Random(23)
X = rng.randbytes(PAGE)
IMG0 = X * 10 + bytes(4 * PAGE) + rng.randbytes(6 * PAGE)
IMG1 = X * 2 + rng.randbytes(3 * PAGE)
# the counters of /sys/kernel/mm/ksm in Linux 6.x (read-only files)
KERNEL_FILES = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
                "pages_scanned", "pages_skipped", "full_scans", "stable_node_chains",
                "stable_node_dups", "ksm_zero_pages", "general_profit")


@pytest.fixture
def images(write_file):
    return write_file("a.img", IMG0), write_file("b.img", IMG1)


def test_json_counters(images):
    r = run_cli("scan", *images, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # X: 12 mappings on one KSM page; zero-filled: 4 on another.
    assert (doc["pages_shared"], doc["pages_sharing"]) == (2, 11 + 3)
    assert doc["pages_unshared"] == 9 and doc["rmap_items"] == 25
    assert doc["settled"] is True and doc["full_scans"] >= 3
    assert doc["images"] == [str(p) for p in images]
    # every counter under the kernel's name, and the scan time
    assert set(KERNEL_FILES) <= set(doc), set(KERNEL_FILES) - set(doc)
    assert isinstance(doc["seconds"], float) and 0 < doc["seconds"] < 60


def test_text_and_use_zero_pages(images):
    r = run_cli("scan", *images, "--set", "use_zero_pages=1")
    assert r.returncode == 0, r.stderr
    rows = dict(line.split() for line in r.stdout.splitlines())
    assert rows["ksm_zero_pages"] == "4" and rows["pages_sharing"] == "11"
    assert set(KERNEL_FILES) <= set(rows) and float(rows["seconds"]) >= 0


def test_compat_2009(images):
    r = run_cli("scan", *images, "--compat", "2009", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # The 2009 names: pages_shared counts the sharing mappings there.
    assert (doc["kernel_pages_allocated"], doc["pages_shared"]) == (2, 14)


def test_bad_image(bad_image):
    path, words = bad_image
    assert_usage_error(run_main("scan", path), str(path), words)


@pytest.mark.parametrize("args,needle", BAD_KNOB_SETS + [
    (["--set", "sleep_millisecs=5"], "sets sleep_millisecs itself"),
    (["--max-full-scans", "0"], "at least 1"),
    (["--compat", "1999"], "invalid choice"),
])
def test_bad_arguments(images, args, needle):
    assert_usage_error(run_main("scan", images[0], *args), needle)
