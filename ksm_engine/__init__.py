"""ksm-engine: Linux's Kernel Samepage Merging and the pSeries CMM balloon
over the memory of synthetic processes, with a native C core.

    from ksm_engine import Machine, PAGE_SIZE, MADV_MERGEABLE
    m = Machine(ram="256MiB")
    p = m.spawn(name="guest0")
    a = p.mmap(64 * PAGE_SIZE)
    p.write(a, b"x" * 64 * PAGE_SIZE)
    p.madvise(a, 64 * PAGE_SIZE, MADV_MERGEABLE)
    m.ksm.full_scan(2)
    m.ksm.stats["pages_sharing"]   # 63
"""
__version__ = "0.1.0"

from .errors import ProcessExited, SegmentationFault
from .machine import PAGE_SIZE, Machine
from .process import (MADV_MERGEABLE, MADV_UNMERGEABLE, PR_GET_MEMORY_MERGE,
                      PR_SET_MEMORY_MERGE, Area, Process)
from .units import parse_size

__all__ = [
    "Machine", "Process", "Area", "PAGE_SIZE", "SegmentationFault", "ProcessExited",
    "MADV_MERGEABLE", "MADV_UNMERGEABLE", "PR_SET_MEMORY_MERGE", "PR_GET_MEMORY_MERGE",
    "parse_size", "__version__",
]
