"""Nothing lost: the checks the pool runner makes after every step.

check_pool(run) raises PoolCheckError (an AssertionError) naming the first
thing that does not add up:

  1. every running partition's Machine.check() (the core recomputes its
     counters and links: free + used + balloon frames == frames, ...);
  2. the pool: pool pages == the partitions' backed pages + free +
     reserved, free >= 0, the device's used slots == the partitions'
     PAGED pages <= its size, each partition's counts == its arrays;
  3. no page both loaned and in use: no frame the hypervisor holds as
     loaned (all its CMO pages in Partition.loaned) is mapped by a guest
     process or backed, unless its last H_PAGE_INIT was a failed
     set-active (Partition.stale: cmm.c ignores that failure and the guest
     takes the page back: documented in docs/cmm.md);
  4. each partition's loaned_kb is the hypervisor's record give or take
     the stale pages: the CMO pages of the balloon's frames are all in the
     record, and what the record holds beyond them is stale;
  5. a partition that is not running holds nothing: no loan, no pool page;
  6. every page a guest process maps is in the pool or on the device
     (a touch the hooks missed would show here).
"""
import numpy as np

from cmm.paging import UNBACKED
from ksm_engine import PAGE_SIZE


class PoolCheckError(AssertionError):
    """Something in the pool does not add up (the message says what)."""


def _fail(msg):
    raise PoolCheckError(msg)


def _cmo_pages(pfns, cps):
    return {pfn * PAGE_SIZE + o for pfn in pfns for o in range(0, PAGE_SIZE, cps)}


def check_partition(p, cps):
    """Checks 1, 3, 4 and 5 for one PoolPartition."""
    part = p.part
    if not p.running:
        if part.loaned or part.memory is not None:
            _fail(f"{p.name} is not running but the hypervisor still holds loans or pages of it")
        return
    try:
        p.machine.check()
    except AssertionError as e:
        _fail(f"{p.name}: Machine.check: {e}")
    pm = p.pm
    in_use = pm.in_use()
    lost = np.flatnonzero(in_use & (pm.state == UNBACKED))
    if len(lost):
        _fail(f"{p.name}: {len(lost)} pages in use have neither a pool page nor a device "
              f"slot (pfn {int(lost[0])})")
    stale_pfns = {a // PAGE_SIZE for a in part.stale}
    loaned_pfns = {a // PAGE_SIZE for a in part.loaned}
    full = [f for f in loaned_pfns - stale_pfns
            if all(f * PAGE_SIZE + o in part.loaned for o in range(0, PAGE_SIZE, cps))]
    if full:
        idx = np.fromiter(full, np.int64, len(full))
        if in_use[idx].any():
            _fail(f"{p.name}: a page is both loaned and in use (pfn "
                  f"{int(idx[in_use[idx]][0])})")
        if (pm.state[idx] != UNBACKED).any():
            _fail(f"{p.name}: a loaned page still holds a pool page or device slot")
    drv = p.drv
    balloon = drv.balloon_pfns() if drv is not None else set()
    if drv is not None and drv.loaned_kb != len(balloon) * (PAGE_SIZE // 1024):
        _fail(f"{p.name}: loaned_kb {drv.loaned_kb} but the balloon holds {len(balloon)} pages")
    if drv is not None and drv.simulate:
        return
    mine = _cmo_pages(balloon, cps)
    if not mine <= part.loaned:
        _fail(f"{p.name}: the balloon holds pages the hypervisor does not have as loaned")
    if not part.loaned - mine <= part.stale:
        _fail(f"{p.name}: the hypervisor holds {len(part.loaned - mine - part.stale)} loaned "
              f"CMO pages that are neither in the balloon nor stale")


def check_pool(run):
    """Every check of the module doc over a PoolRun; PoolCheckError."""
    cps = run.hv.cmo_page_size
    for p in run.partitions:
        check_partition(p, cps)
    try:
        run.pool.check()
    except AssertionError as e:
        _fail(f"pool: {e}")
