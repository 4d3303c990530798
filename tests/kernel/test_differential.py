"""The engine against the real kernel's KSM, on the same memory.

Each workload is run the kernel way (kernel_peer.run_kernel: one child
process per image, MADV_MERGEABLE, ksmd unthrottled until the counters hold
still) and the engine way (settle.load_images + settle), and the settled
counters must be identical.  See docs/fidelity.md.
"""
import os

import pytest

from ksm_engine.apps import kernel_peer
from ksm_engine.settle import load_images, settle

from .workloads import WORKLOADS

COMPARED = ("pages_shared", "pages_sharing", "stable_node_chains", "stable_node_dups",
            "ksm_zero_pages", "rmap_items")


def _write_images(tmp_path, images):
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"image{i}.img"
        p.write_bytes(img)
        paths.append(str(p))
    return paths


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_engine_matches_kernel(tmp_path, name):
    images, knobs = WORKLOADS[name]()
    paths = _write_images(tmp_path, images)
    kernel = kernel_peer.run_kernel(paths, knobs)
    machine, procs = load_images(paths, knobs=knobs)
    engine = settle(machine)
    assert kernel.settled and engine.settled
    got = {k: engine.counters[k] for k in COMPARED}
    want = {k: kernel.counters[k] for k in COMPARED}
    assert got == want, f"{name}: engine {got} != kernel {want}"
    # Per process too: /proc/PID/ksm_stat of each child against p.ksm_stat.
    for kstat, proc in zip(kernel.per_process, procs):
        estat = proc.ksm_stat
        for key in ("ksm_rmap_items", "ksm_merging_pages", "ksm_zero_pages", "ksm_process_profit"):
            assert estat[key] == kstat[key], f"{name} {proc.name} {key}"
    # Something was actually exercised.
    assert sum(want.values()) > 0
    machine.check()


@pytest.mark.kernel
def test_kernel_knobs_restored(tmp_path):
    """run_kernel leaves every knob as it found it, and run=2."""
    images, _ = WORKLOADS["dup_across_processes"]()
    paths = _write_images(tmp_path, images)
    with kernel_peer.exclusive():  # no other user of the kernel's KSM meanwhile
        before = {n: kernel_peer.read_knob(n) for n in os.listdir(kernel_peer.KSM_DIR)
                  if os.stat(os.path.join(kernel_peer.KSM_DIR, n)).st_mode & 0o200 and n != "run"}
        kernel_peer.run_kernel(paths, {"max_page_sharing": "7", "use_zero_pages": "1",
                                       "smart_scan": "0"})
        after = {n: kernel_peer.read_knob(n) for n in before}
        assert kernel_peer.read_knob("run") == "2"
    assert after == before
