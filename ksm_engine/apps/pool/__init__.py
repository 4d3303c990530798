"""The shared memory pool: many partitions, each a Machine with its own KSM
and CMM balloon, under a hypervisor that overcommits (docs/pool.md).

  scenario.py   the JSON schema and its validation
  workload.py   a partition's processes and their phases (boot, steady,
                growth, idle), seeded
  partition.py  a partition: Machine, KSM, CmmDriver, workload; start,
                stop, crash, reboot
  run.py        running a scenario on one SimClock: events, per-step
                figures, summary, the three-way comparison
  checks.py     nothing lost: the checks after every step
  plot.py       pool use, loans and paging over time

The hypervisor's side (the pool, its policy, paging) is the driver layer's
(cmm/pool.py, cmm/paging.py).
"""
from .checks import PoolCheckError, check_pool
from .run import compare, run_pool
from .scenario import MODES, PoolScenario, load_pool_scenario, loads_pool_scenario, parse_pool_scenario

__all__ = ["PoolCheckError", "check_pool", "compare", "run_pool", "MODES", "PoolScenario",
           "load_pool_scenario", "loads_pool_scenario", "parse_pool_scenario"]
