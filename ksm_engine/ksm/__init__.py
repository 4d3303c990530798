"""Kernel Samepage Merging for one Machine: ``machine.ksm``.

    m.ksm.sysfs["pages_to_scan"] = "5000"   # the /sys/kernel/mm/ksm files
    m.ksm.stats                             # every counter as an int
    m.ksm.scan(n)                           # one ksm_do_scan(n) batch
    m.ksm.start(); m.ksm.stop()             # ksmd: a thread, or start(SimClock())

What lives where:
  ksm.py      class Ksm: the counters, scans, ksmd control, and the internal
              hooks (_mm_enter, _store_knob, ...) the modules below and
              process.py call
  knobs.py    the knobs: defaults, the kernel's validation, their effects
  sysfs.py    the attribute files over the knobs and counters
  scanner.py  mm_slot list, scan cursor, ksm_do_scan
  ksmd.py     ksmd (ksm_scan_thread) as a kernel thread on a clock
  advisor.py  the scan-time advisor
and in C (csrc/ksm.c) every per-page step.  Process-side entry points
(madvise, prctl, fork, exit) are in ksm_engine/process.py and call
Ksm's internal _mm_* hooks.
"""

from .ksm import COUNTERS_2009, COUNTERS_6X, Ksm

__all__ = ["Ksm", "COUNTERS_6X", "COUNTERS_2009"]
