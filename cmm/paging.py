"""Hypervisor paging: where each logical page of a shared-memory partition
lives, and what moving it costs.

PowerVM Active Memory Sharing (IBM Redpaper REDP-4470, "PowerVM
Virtualization Active Memory Sharing"; IBM Knowledge Center, "Shared memory
distribution") backs a partition's logical memory partly from the shared
pool and partly from a paging device (the VIOS paging space); a page the
partition touches while it is on the device faults and is paged in, at the
device's cost, before the partition goes on.  VMware ESX (Waldspurger,
"Memory Resource Management in VMware ESX Server", OSDI 2002, sections 3
and 6) swaps the same way when ballooning cannot free enough.

Data structures
---------------
PagingDevice       the paging space: ``size_pages`` slots, the cost of a
                   page-in and a page-out (simulated microseconds), its use
                   and its counters.
PartitionMemory    the hypervisor's view of one partition's logical memory,
                   one byte of state per guest page frame (numpy arrays of
                   nr_frames entries, so that no Python code runs per page):

  state[pfn]       UNBACKED  no pool page: never touched since the partition
                             started, or loaned by the CMM balloon
                   BACKED    held in the shared pool
                   PAGED     on the paging device (its slot holds it)
  last_touch[pfn]  simulated ms of the guest's last read or write of the
                   page (the hypervisor's reference bits: coldest pages are
                   paged out first, and the idle-memory tax counts pages not
                   touched for a while)

  The guest gives no free-page hints (Linux's cmo_free_hint off): a frame
  the guest frees stays BACKED (or PAGED) until the balloon loans it or the
  guest touches it again.  That is what makes the balloon worth having: KSM
  frees guest frames, and only loaning them gives their pool pages back.

The guest's touches arrive through the engine's own read and write paths:
PartitionMemory is the Machine's ``access_hook``.  before() runs ahead of a
process read or write of a byte range: pages of the range on the device are
paged in (pool room made first, by paging out others), and room is kept
for the frames a write may allocate; after() marks every frame the range
now maps as BACKED and touched.  A page-in, and a page-out made to find room
for this access, cost the partition simulated time (``stall_us``), which
its workload spends instead of working.  ksmd's reads of guest pages are
not seen (the scan runs in C with no hook): a page ksmd merges while on the
device is simply freed in the guest and stays PAGED until its frame is used
again.

Invariants (check()): counts match the arrays; PAGED pages hold exactly
the device slots this partition uses.
"""
import numpy as np

from ksm_engine import PAGE_SIZE
from ksm_engine.ptes import PTE_PRESENT, pte_arrays

UNBACKED, BACKED, PAGED = 0, 1, 2


class PoolExhausted(OSError):
    """The pool has no room and the paging device none either: the access
    that needed a page cannot go on (the partition stalls; nothing moved)."""


class PagingDevice:
    """The VIOS paging space shared by the pool's partitions.

    Fields:
      size_pages    slots (pages) the device holds
      page_in_us    simulated microseconds one page-in costs the partition
      page_out_us   simulated microseconds one page-out costs (charged to
                    a partition only when made for its own access)
      used          slots holding a page now
      page_ins, page_outs   pages moved since the start
      refused       page-outs asked for while the device was full
    """

    def __init__(self, size_pages, page_in_us, page_out_us):
        self.size_pages = int(size_pages)
        self.page_in_us = page_in_us
        self.page_out_us = page_out_us
        self.used = 0
        self.page_ins = 0
        self.page_outs = 0
        self.refused = 0

    @property
    def free(self):
        return self.size_pages - self.used


class PartitionMemory:
    """The hypervisor's record of one partition (see the module doc).

    Fields:
      pool          the SharedPool it draws on
      part          the cmm.hypervisor.Partition (loan records)
      name          the partition's name, for messages
      nr_frames     guest page frames (logical memory / PAGE_SIZE)
      state, last_touch   numpy arrays over the frames
      backed, paged       counts of BACKED and PAGED frames
      page_ins, page_outs, first_touches   pages moved or first backed
      reclaimed     pool pages given back by loans (BACKED or PAGED -> UNBACKED)
      active_f      the active fraction the policy measured last round
      idle_backed   BACKED frames untouched for the idle window, last round
      barren_loans  loans of frames the pool did not back (nothing won)
      barren_since  simulated ms of the last such loan, or None
      stall_us      simulated time owed by the partition for paging done on
                    its behalf, not yet spent (its workload takes it)
      stall_total_us   all simulated time paging has cost it
      machine       the Machine whose access_hook this is (None if none)
      _reserved     pool pages held for frames a write in progress may allocate
    """

    def __init__(self, pool, part, name, nr_frames):
        self.pool = pool
        self.part = part
        self.name = name
        self.nr_frames = nr_frames
        self.state = np.zeros(nr_frames, np.uint8)
        self.last_touch = np.zeros(nr_frames, np.int64)
        self.backed = 0
        self.paged = 0
        self.page_ins = 0
        self.page_outs = 0
        self.first_touches = 0
        self.reclaimed = 0
        self.stall_us = 0
        self.stall_total_us = 0
        self.active_f = 1.0
        self.idle_backed = 0
        self.barren_loans = 0
        self.barren_since = None
        self.machine = None
        self._reserved = 0

    # -- the guest's touches (Machine.access_hook) ----------------------------
    def _range_pfns(self, proc, addr, length):
        """(pfns of the present pages, number of pages not privately present)
        of the pages [addr, addr+length) covers."""
        first = addr // PAGE_SIZE
        npages = (addr + length - 1) // PAGE_SIZE - first + 1
        pfns, flags = pte_arrays(proc, first * PAGE_SIZE, npages)
        pfns = np.frombuffer(pfns, np.uint32)
        flags = np.frombuffer(flags, np.uint8)
        present = (flags & PTE_PRESENT).astype(bool)
        # a write gives a new frame to a page not present, on the zero page
        # or on a KSM page (copy on write): at most this many
        not_private = int(np.count_nonzero(flags != PTE_PRESENT))
        return pfns[present], not_private       # a KSM frame may appear twice

    def before(self, proc, addr, length, write):
        """Ahead of a guest read or write: page in what the range holds on
        the device, and keep room for the frames a write may allocate.
        Raises PoolExhausted (nothing changed but pages paged in) when the
        pool and the device are both full."""
        pfns, not_private = self._range_pfns(proc, addr, length)
        now = self.pool.now_ms()
        self.last_touch[pfns] = now            # hot: the last to be paged out
        new = not_private if write else 0
        for _ in range(4):                     # room made may evict the range itself
            st = self.state[pfns]
            if (st == BACKED).all():
                break
            need = len(np.unique(pfns[st != BACKED]))
            self.pool.make_room(need + new, self)
            self._back(pfns, stall=True)
        else:  # pragma: no cover - only a pool smaller than one access
            raise PoolExhausted(12, f"{self.name}: the pool cannot hold one access")
        if new:
            self.pool.make_room(new, self)
            self._reserved = new
            self.pool.reserved += new

    def after(self, proc, addr, length, write):
        """After a guest write: every frame the range maps now is BACKED
        and touched (new frames take the room kept).  A read changed no
        mapping: before() did all there was to do."""
        if not write:
            return
        self.pool.reserved -= self._reserved
        self._reserved = 0
        pfns, _ = self._range_pfns(proc, addr, length)
        self.last_touch[pfns] = self.pool.now_ms()
        self._back(pfns, stall=True, reserved=True)

    def _back(self, pfns, stall, reserved=False):
        """Make every frame of ``pfns`` BACKED: first touches of UNBACKED
        frames, page-ins of PAGED ones (their cost owed when ``stall``).
        The pool must have the room (``reserved``: room kept earlier)."""
        st = self.state[pfns]
        if (st == BACKED).all():
            return
        unbacked = np.unique(pfns[st == UNBACKED])
        paged = np.unique(pfns[st == PAGED])
        n = len(unbacked) + len(paged)
        if not n:
            return
        if not reserved and self.pool.free_pages < n:  # pragma: no cover - callers make room
            raise PoolExhausted(12, f"{self.name}: no pool room for {n} pages")
        dev = self.pool.device
        self.state[unbacked] = BACKED
        self.state[paged] = BACKED
        self.first_touches += len(unbacked)
        self.backed += n
        if len(paged):
            k = len(paged)
            self.paged -= k
            self.page_ins += k
            dev.used -= k
            dev.page_ins += k
            if stall:
                self._owe(k * dev.page_in_us)

    def _owe(self, us):
        self.stall_us += us
        self.stall_total_us += us

    # -- what the hypervisor does to the partition ------------------------------
    def page_out(self, k, for_access=False):
        """Page out up to ``k`` of the coldest BACKED frames (device room
        permitting); returns how many went.  ``for_access``: made to find
        room for this partition's own access, so their cost is owed."""
        dev = self.pool.device
        k = min(k, self.backed, dev.free)
        if k <= 0:
            return 0
        cand = np.flatnonzero(self.state == BACKED)
        if k < len(cand):
            cand = cand[np.argpartition(self.last_touch[cand], k - 1)[:k]]
        self.state[cand] = PAGED
        self.backed -= k
        self.paged += k
        self.page_outs += k
        dev.used += k
        dev.page_outs += k
        if for_access:
            self._owe(k * dev.page_out_us)
        return k

    def loaned_page(self, addr):
        """H_PAGE_SET_LOANED succeeded on the CMO page at ``addr``: once
        every CMO page of its frame is loaned, the frame's pool page (or
        device slot) goes back."""
        pfn = addr // PAGE_SIZE
        cps = self.part.hv.cmo_page_size
        base = pfn * PAGE_SIZE
        if cps < PAGE_SIZE and any(base + o not in self.part.loaned for o in range(0, PAGE_SIZE, cps)):
            return
        s = self.state[pfn]
        if s == BACKED:
            self.backed -= 1
        elif s == PAGED:
            self.paged -= 1
            self.pool.device.used -= 1
        else:
            self.barren_loans += 1             # the pool never backed it
            self.barren_since = self.pool.now_ms()
            return
        self.state[pfn] = UNBACKED
        self.reclaimed += 1

    def release_all(self):
        """The partition stopped or crashed: its pool pages and device slots
        all go back."""
        self.pool.device.used -= self.paged
        self.state[:] = UNBACKED
        self.backed = self.paged = 0
        self.stall_us = 0

    def measure(self, window_ms):
        """Sets ``active_f`` (ESX's f: the fraction of BACKED frames touched
        within the last ``window_ms``, 1.0 when none is backed) and
        ``idle_backed`` (BACKED frames not touched within it)."""
        if not self.backed:
            self.active_f, self.idle_backed = 1.0, 0
            return
        b = self.state == BACKED
        recent = int(np.count_nonzero(b & (self.last_touch >= self.pool.now_ms() - window_ms)))
        self.active_f = recent / self.backed
        self.idle_backed = self.backed - recent

    def in_use(self):
        """Boolean array: the frames the guest's processes map now."""
        used = np.zeros(self.nr_frames, bool)
        m = self.machine
        if m is None:
            return used
        for proc in m.processes:
            for a in proc.areas.values():
                pfns, flags = pte_arrays(proc, a.start, (a.end - a.start) // PAGE_SIZE)
                f = np.frombuffer(flags, np.uint8)
                used[np.frombuffer(pfns, np.uint32)[(f & PTE_PRESENT).astype(bool)]] = True
        return used

    def check(self):
        """AssertionError unless the counts match the arrays."""
        b = int(np.count_nonzero(self.state == BACKED))
        p = int(np.count_nonzero(self.state == PAGED))
        assert b == self.backed, f"{self.name}: {b} frames BACKED, counted {self.backed}"
        assert p == self.paged, f"{self.name}: {p} frames PAGED, counted {self.paged}"
        assert self.stall_us >= 0
