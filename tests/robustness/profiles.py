"""Hypothesis settings of the robustness tests: a small profile for CI, a
long one for soak runs.

    KSM_ENGINE_LONG=1 python -m pytest tests/robustness -p no:randomly

selects "long" (see docs/robustness.md); KSM_ENGINE_LONG_EXAMPLES sets its
number of runs.  No deadline in either (nothing here is timed), and the
slow-data health checks are off: every step of these state machines
re-reads all memory on purpose.
"""
import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("KSM_ENGINE_LONG", "") not in ("", "0")

_COMMON = dict(deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

settings.register_profile("robustness-ci", max_examples=150, stateful_step_count=60, **_COMMON)
settings.register_profile(
    "robustness-long", max_examples=int(os.environ.get("KSM_ENGINE_LONG_EXAMPLES", "2000")),
    stateful_step_count=120, **_COMMON)

# The settings the state machines of this folder run with.
STATEFUL = settings.get_profile("robustness-long" if LONG else "robustness-ci")


def fuzz_settings(ci_examples):
    """Settings for a @given fuzz test: ``ci_examples`` runs in CI, ten
    times as many in the long profile."""
    return settings(max_examples=ci_examples * (10 if LONG else 1), **_COMMON)
