"""Fixtures shared by every test folder: a small machine, a process on it,
and the check that runs after each test that used them.

Kept generic on purpose: subfolders (tests/cmm, tests/kernel, ...) add
their own conftest.py for what only they need.

    machine   a 64 MiB Machine (16384 frames), checked (Machine.check and
              the frame identity) when the test ends
    proc      a process spawned on ``machine``

and model_settings(), the hypothesis settings of the core and KSM state
machines (tests/core/test_model_core.py, tests/ksm/test_model_ksm.py).
"""
import os

import pytest
from hypothesis import HealthCheck, settings

from ksm_engine import Machine

SMALL_RAM = "64MiB"


@pytest.fixture(autouse=True, scope="session")
def no_user_calibration(tmp_path_factory):
    """The estimate's time model reads the user's ksmd calibration when no
    file is named: tests see none (a path that does not exist), so their
    results do not depend on whether this machine was calibrated."""
    path = tmp_path_factory.mktemp("calibration") / "none.json"
    old = os.environ.get("KSM_ENGINE_CALIBRATION")
    os.environ["KSM_ENGINE_CALIBRATION"] = str(path)
    yield
    if old is None:
        del os.environ["KSM_ENGINE_CALIBRATION"]
    else:
        os.environ["KSM_ENGINE_CALIBRATION"] = old


def assert_frames_add_up(m):
    """free + used + balloon frames == nr_frames, read through the public
    properties (meminfo and the single properties must agree)."""
    info = m.meminfo()
    assert info["free_pages"] + info["used_pages"] + info["balloon_pages"] == info["nr_frames"]
    assert m.free_pages + m.used_pages + m.balloon_pages == m.nr_frames


def model_settings(ci_examples):
    """Settings of a model state machine: ``ci_examples`` runs unless
    KSM_ENGINE_MODEL_EXAMPLES says otherwise, 40 steps each, no deadline
    (nothing is timed) and no slow-data health checks (every step re-reads
    all memory on purpose)."""
    return settings(
        max_examples=int(os.environ.get("KSM_ENGINE_MODEL_EXAMPLES", str(ci_examples))),
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def proc_status_kib(field="VmRSS"):
    """A field of /proc/self/status in KiB (VmRSS, RssAnon, ...): the real
    resident memory of this Python process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def machine():
    """A small machine; its core is verified from scratch after the test."""
    m = Machine(ram=SMALL_RAM)
    yield m
    m.check()
    assert_frames_add_up(m)


@pytest.fixture
def proc(machine):
    """A fresh process on ``machine``."""
    return machine.spawn(name="t")
