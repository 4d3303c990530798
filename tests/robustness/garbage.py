"""Garbage for the boundary fuzz tests (test_fuzz_*.py): the values and the
hypothesis strategies every entry point is fed.  ALLOWED is what a refusal
may raise: TypeError, ValueError or OSError with an errno."""
import errno
import math

from hypothesis import strategies as st

from ksm_engine import PAGE_SIZE
from ksm_engine.process import TASK_SIZE

# --- garbage ----------------------------------------------------------------------

BIG_INTS = [0, -1, 1, 2, 4095, 4096, 4097, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
            1 << 44, TASK_SIZE, TASK_SIZE - PAGE_SIZE, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
            1 << 64, 1 << 200, -(1 << 31), -(1 << 63), -(1 << 64), -(1 << 200)]
NOT_INTS = [None, True, False, 1.5, 4096.0, -0.0, math.nan, "", "1", "4096", "abc", "\x00",
            "-1", "0x10", " 1 ", b"", b"1", b"\xff\xfe", bytearray(b"12"), [], [1], (4096,), {},
            object(), 1j, range(3)]
INTS = st.one_of(st.sampled_from(BIG_INTS), st.integers())
# Values of the wrong type: each argument is replaced by one of these with
# probability 1/4 (so most calls get past the type checks to the range ones)
WRONG_TYPE = st.one_of(st.sampled_from(NOT_INTS), st.text(max_size=12), st.binary(max_size=12),
                       st.floats())
GARBAGE = st.one_of(INTS, WRONG_TYPE)
# Numbers a loop may legitimately count up to (no hangs on purpose)
SMALL_GARBAGE = st.one_of(st.sampled_from([0, -1, 1, 2, -(1 << 64), 1.5, 0.5, math.nan, math.inf, None,
                                           True, "", "1", "abc", b"1", [], object()]),
                          st.integers(-5, 5))
ALLOWED = (TypeError, ValueError, OSError)


KNOB = st.one_of(st.sampled_from([
    "run", "pages_to_scan", "sleep_millisecs", "max_page_sharing", "merge_across_nodes",
    "use_zero_pages", "smart_scan", "stable_node_chains_prune_millisecs", "advisor_mode",
    "advisor_max_cpu", "advisor_target_scan_time", "pages_shared", "full_scans", "general_profit",
    "max_kernel_pages", "../run", "run\n", "RUN", ""]))
KNOB_TEXT = st.one_of(INTS, st.text(alphabet="0123456789+-x \n\t\x00abcyYnNoOfF", max_size=24),
                      st.sampled_from(["0", "1", "2", "3", "-1", "+1", "1\n", "1\n\n", " 1",
                                       "99999999999999999999999", "4294967296", "2147483648",
                                       "-2147483649", "none", "scan-time", "scan-time\n", "on",
                                       "off", "1\x00junk"]))
CMM_FILE = st.one_of(st.sampled_from(["loaned_kb", "loaned_target_kb", "oom_freed_kb",
                                               "simulate_loan_target_kb", "bogus", ""]))
CMM_PARAM = st.one_of(st.sampled_from(["delay", "hotplug_delay", "oom_kb", "min_mem_mb",
                                                "debug", "simulate", "disable", "bogus"]))


def classify(exc):
    """A refusal is one of ALLOWED, an OSError with a real errno."""
    assert isinstance(exc, ALLOWED), f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        assert isinstance(exc.errno, int) and exc.errno > 0, f"OSError without errno: {exc!r}"
        assert exc.errno in errno.errorcode


# A valid scenario (cmm_scenario.py), the start of the mutated ones.
VALID_SCENARIO = {"ram_mb": 16, "cmo_page_size": 1024, "nr_zones": 2,
                  "params": {"delay": 1, "hotplug_delay": 1, "oom_kb": 64, "min_mem_mb": 4},
                  "hv": {"cmo": True, "pool_mb": 64, "entitled_mb": 8, "mem_weight": 10},
                  "steps": [{"hv_target_kb": 4096}, {"advance_s": 2}, {"oom": True},
                            {"hotplug": "going_offline"}, {"hotplug": "offline"},
                            {"fail_hcalls": {"after": 1, "count": 1}}, {"fail_hget_mpp": 1},
                            {"sysfs_write": {"name": "oom_freed_kb", "value": "0", "admin": True}},
                            {"param": {"name": "disable", "value": "0"}},
                            {"allocate_mb": 1}, {"exit_processes": True}, {"compact": True},
                            {"reboot": True}]}
