"""The application layer: what combines the core and the balloon driver.

The layers import one way only:

  core         ksm_engine (machine, process, ksm, the C core): knows
               nothing of cmm nor of this package
  driver       cmm: the CMM balloon driver and its hypervisor stub; takes
               the machine it runs on, imports only the core
  applications ksm_engine.apps (this package) and ksm_engine.cli: the demo,
               the cmm scenario runner, the pool (pool/), the estimate,
               the kernel peer, the built-in workloads and plots, and the
               scenario field checks both runners share
               (scenario_fields.py); they import both

tests/core/test_layers.py checks the import graph.
"""
