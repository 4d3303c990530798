"""cmm: the IBM pSeries Collaborative Memory Manager balloon (Linux's
arch/powerpc/platforms/pseries/cmm.c) over a ksm_engine Machine, with a stub
of the PowerVM hypervisor it loans pages to.

  hypervisor.py  Hypervisor (the shared pool) and Partition: H_GET_MPP,
                 H_PAGE_INIT, the stub's record of loaned CMO pages, faults
  driver.py      CmmDriver: cmm.c itself
  balloon.py     the generic balloon (balloon_dev_info) and compaction
  params.py      /sys/module/cmm/parameters
  sysfs.py       /sys/devices/system/cmm/cmm0
  notifier.py    reboot and memory-hotplug notifier chains
  (the clocks, RealClock and SimClock, are the core's ksm_engine.clock)
  cint.py        C integer arithmetic and kernel number parsing

    from ksm_engine import Machine
    from cmm import CmmDriver, Hypervisor, SimClock
    m = Machine(ram="512MiB")
    hv = Hypervisor()
    clock = SimClock()
    drv = CmmDriver(m, hv, min_mem_mb=64, clock=clock)
    drv.partition.set_loan_target(100 << 20)
    clock.advance(3)
    drv.sysfs["loaned_kb"]        # '102400\\n'
"""
from .balloon import BalloonDevInfo, CompactResult
from ksm_engine.clock import RealClock, SimClock
from .driver import CmmDriver, KB2PAGES, PAGES2KB
from .hypervisor import (H_COALESCE_CAND, H_PAGE_SET_ACTIVE, H_PAGE_SET_LOANED,
                         Hypervisor, MppData, Partition, h_get_mpp)
from .notifier import NotifierChain

__all__ = [
    "BalloonDevInfo", "CompactResult", "RealClock", "SimClock", "CmmDriver",
    "KB2PAGES", "PAGES2KB", "H_COALESCE_CAND", "H_PAGE_SET_ACTIVE",
    "H_PAGE_SET_LOANED", "Hypervisor", "MppData", "Partition", "h_get_mpp",
    "NotifierChain",
]
