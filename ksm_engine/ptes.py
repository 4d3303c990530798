"""Page table entries of a range as flat arrays, for callers that use numpy.

Process.ptes() returns Python lists, one item per page: fine for tests and
inspection, too slow for a hypervisor that looks at a whole guest every
second.  pte_arrays() makes the same single C call (ke_mm_ptes) and hands
back the two C arrays as bytes, with no Python code per page:

    pfns, flags = pte_arrays(proc, addr, npages)
    numpy.frombuffer(pfns, numpy.uint32), numpy.frombuffer(flags, numpy.uint8)

flags per page are Process.ptes()'s: 0 not present, PTE_PRESENT (1), with
PTE_KSM (2) on a KSM page, PTE_ZERO (4) for the shared zero page; a pfn is
meaningful only where flags & PTE_PRESENT.
"""
import errno

from ._native import check, ffi, lib
from .process import PAGE_MASK, PAGE_SIZE, PTES_MAX, TASK_SIZE
from .validate import int_arg

PTE_PRESENT = 1
PTE_KSM = 2
PTE_ZERO = 4


def pte_arrays(proc, addr, npages):
    """(pfns as uint32 bytes, flags as uint8 bytes) of npages pages of proc
    from addr.  OSError(EINVAL) for a bad range (as Process.ptes),
    ProcessExited for an exited process."""
    addr = int_arg("addr", addr)
    npages = int_arg("npages", npages)
    if addr & PAGE_MASK or addr < 0 or npages < 0 or addr + npages * PAGE_SIZE > TASK_SIZE:
        raise OSError(errno.EINVAL, "pte_arrays: bad range")
    if npages > PTES_MAX:
        raise OSError(errno.EINVAL, f"pte_arrays: at most {PTES_MAX} pages a call")
    m = proc.machine
    with m.lock:
        proc._check_alive()
        pfns = ffi.new("uint32_t[]", max(npages, 1))
        flags = ffi.new("uint8_t[]", max(npages, 1))
        check(lib.ke_mm_ptes(m.ke_machine, proc.mm, addr, npages, pfns, flags))
        return bytes(ffi.buffer(pfns, 4 * npages)), bytes(ffi.buffer(flags, npages))
