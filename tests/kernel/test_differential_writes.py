"""The engine against the kernel when memory changes after merging.

KSM settles, then the processes write (copy-on-write breaks merged pages,
unique pages become duplicates, duplicates become zero pages...), and KSM
settles again: the counters must again be the kernel's.  The kernel's
children take the writes while ksmd runs; the engine's processes take them
between full scans; both are then run until they hold still.
"""
import random

import pytest

from ksm_engine import PAGE_SIZE as P
from ksm_engine.apps import kernel_peer
from ksm_engine.settle import load_images, settle

COMPARED = ("pages_shared", "pages_sharing", "stable_node_chains", "stable_node_dups",
            "ksm_zero_pages", "rmap_items")


def _images():
    r = random.Random(11)
    common = [r.randbytes(P) for _ in range(150)]
    return [b"".join(common + [r.randbytes(P) for _ in range(60)] + [bytes(P)] * 10)
            for _ in range(3)]


def _phases():
    r = random.Random(12)
    unique = r.randbytes(P)
    phase1 = []
    # process 0 overwrites 40 merged pages with unique data (COW breaks)
    for k in range(40):
        phase1.append((0, k * P, r.randbytes(P)))
    # process 1 makes 20 of its unique pages copies of process 2's page 150
    img2_page = _images()[2][150 * P:151 * P]
    for k in range(20):
        phase1.append((1, (150 + k) * P, img2_page))
    # process 2 changes one byte in the middle of 30 merged pages
    for k in range(50, 80):
        phase1.append((2, k * P + 2000, b"\x01"))
    # every process turns 5 common pages into zero pages
    for i in range(3):
        for k in range(100, 105):
            phase1.append((i, k * P, bytes(P)))
    phase2 = [(1, (150 + k) * P, unique) for k in range(10)]  # more duplicates
    return [phase1, phase2]


@pytest.mark.kernel
@pytest.mark.parametrize("knobs", [{}, {"use_zero_pages": "1"}, {"max_page_sharing": "2"}],
                         ids=["default", "zero_pages", "max_page_sharing_2"])
def test_engine_matches_kernel_after_writes(tmp_path, knobs):
    paths = []
    for i, img in enumerate(_images()):
        p = tmp_path / f"image{i}.img"
        p.write_bytes(img)
        paths.append(str(p))
    phases = _phases()
    kernel = kernel_peer.run_kernel(paths, knobs, phases=phases)

    machine, procs = load_images(paths, knobs=knobs)
    first = settle(machine)
    assert first.settled
    for phase in phases:
        for index, offset, data in phase:
            proc = procs[index]
            area = next(iter(proc.areas))
            proc.write(area + offset, data)
        engine = settle(machine)
    assert kernel.settled and engine.settled
    got = {k: engine.counters[k] for k in COMPARED}
    want = {k: kernel.counters[k] for k in COMPARED}
    assert got == want
    assert got != {k: first.counters[k] for k in COMPARED}  # the writes mattered
    machine.check()
