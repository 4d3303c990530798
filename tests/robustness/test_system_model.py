"""The whole system against a pure-Python reference model (hypothesis).

One state machine drives a small Machine (256 frames) with everything at
once: processes (spawn, mmap, munmap, write, fill, read, fork, exit,
madvise, prctl), KSM (knob writes including run=2 and the EBUSY ones, scan
batches, full scans), the CMM balloon driver on a simulated clock (the
hypervisor's target, thread rounds, H_PAGE_INIT and H_GET_MPP failures,
OOM, compaction, disable, reboot, hotplug), frames taken and given back
with Machine.balloon_page_alloc/free directly, and writes that exhaust the
arena.  Every rule predicts its outcome from the model (EEXIST, EFAULT,
ENOMEM, EBUSY, EINVAL) or, where it cannot (an ENOMEM that depends on how
much sharing a write must break), checks the failure was justified and that
nothing changed.  After every step invariants.check_system() verifies all
reads, Machine.check(), the KSM counters recomputed from the page tables,
frame accounting and the hypervisor's record.  Teardown exits everything
and unloads the driver: every frame must be free again.

Profiles: a short one by default (CI), KSM_ENGINE_LONG=1 for a soak run
that prints how many steps it ran (docs/robustness.md).

The state (its data structures listed there), helpers, start, invariant
and teardown are in system_model.py, the rules in system_process_rules.py
and system_ksm_balloon_rules.py.
"""
import json
import os
import time

import pytest
from hypothesis.stateful import run_state_machine_as_test

from .profiles import LONG, STATEFUL
from .system_ksm_balloon_rules import KsmBalloonRules
from .system_model import COUNTS, KNOBS_2009, SystemState
from .system_process_rules import ProcessRules

if LONG:
    pytestmark = pytest.mark.timeout(0)


class SystemModel(ProcessRules, KsmBalloonRules, SystemState):
    """See the module comment: the whole system, every rule."""


class SystemModel2009(SystemModel):
    """The same system with the 2009 KSM (a merge copies into a new frame,
    so it can itself run out of frames) and 4 KiB CMO pages."""

    COMPAT = "2009"
    CMO_PAGE_SIZE = 4096
    KNOBS = KNOBS_2009


def _run(machine_class, label):
    start = time.monotonic()
    before = dict(COUNTS)
    run_state_machine_as_test(machine_class, settings=STATEFUL)
    runs = COUNTS["runs"] - before["runs"]
    steps = COUNTS["checks"] - before["checks"] - runs
    summary = {"model": label, "runs": runs, "steps": steps,
               "seconds": round(time.monotonic() - start, 1),
               "enomem_writes": COUNTS["enomem_writes"] - before["enomem_writes"],
               "oom_notifier_calls": COUNTS["ooms"] - before["ooms"],
               "long": LONG}
    report = os.environ.get("KSM_ENGINE_ROBUSTNESS_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(summary) + "\n")
    if LONG:
        print(f"\nsystem model {label}: {summary}")
    # Exhaustion must actually have been reached, or the OOM rules tested nothing.
    assert summary["oom_notifier_calls"] > 0


def test_system_model_6x():
    _run(SystemModel, "6.x")


def test_system_model_2009():
    _run(SystemModel2009, "2009")


def test_run2_rule_with_a_fork_copy_outside_mergeable_areas():
    """run=2 through the model's knob rule after a fork child unmerged its
    area and the parent's scan merged their shared frames in place: the
    child's KSM mappings and their stable nodes stay (as in the kernel)."""
    from ksm_engine import MADV_UNMERGEABLE

    class Run2:
        def draw(self, _):
            return ("run", "2")

    mdl = SystemModel()
    mdl.start(nprocs=1, npages=4, any_=False, knobs=[], zero=False, mps="256", kb=0)
    mdl.write_pages(0, 0, [1, 1, 1, 1])
    mdl.fork(0)
    mdl.madvise(1, 0, 0, 4, MADV_UNMERGEABLE)
    mdl.full_scan(2)
    assert mdl.m.ksm.stats["pages_shared"] == 1
    mdl.knob(Run2())
    assert mdl.m.ksm.stats["rmap_items"] == 0 and len(mdl.m.ksm.stable_nodes()) == 1
    mdl.teardown()
