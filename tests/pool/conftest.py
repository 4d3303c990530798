"""Small pool scenarios for the tests: partitions of a few MiB, so that a
whole run takes a second or two."""
import copy

import pytest

PHASES = [{"phase": "boot", "s": 5}, {"phase": "steady", "s": 15},
          {"phase": "growth", "s": 10, "mb": 6}, {"phase": "steady", "s": 10},
          {"phase": "idle", "s": 10}]


def small_partition(name, start_s=0, **over):
    p = {"name": name, "logical_mb": 24, "entitled_mb": 2, "start_s": start_s,
         "knobs": {"pages_to_scan": 1000, "sleep_millisecs": 100},
         "cmm_params": {"min_mem_mb": 4},
         "workload": {"processes": 3, "process_mb": 4, "shared_pct": 60, "zero_pct": 10,
                      "hot_pct": 2, "sweep_pct": 2, "phases": copy.deepcopy(PHASES)}}
    p.update(over)
    return p


def small_scenario(n=4, pool_mb=None, **over):
    """n partitions of 24 MiB, each using 12 MiB and growing by 6 MiB for a
    while, starting 3 s apart, on a pool of 15 MiB a partition (60 MiB for
    four: 1.6x overcommit, the steady use 80% of the pool): the shipped
    example's proportions, small."""
    doc = {"seed": 11, "duration_s": 60, "step_s": 5,
           "pool": {"size_mb": pool_mb or 15 * n,
                    "paging": {"size_mb": 256, "page_in_us": 2000, "page_out_us": 500}},
           "partitions": [small_partition(f"p{i}", 3 * i) for i in range(n)]}
    doc.update(over)
    return doc


@pytest.fixture
def scenario():
    return small_scenario()
