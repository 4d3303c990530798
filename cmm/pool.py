"""The shared memory pool and the hypervisor's policy over it.

Sources (read to understand; the code is this project's own):
  * IBM Redpaper REDP-4470, "PowerVM Virtualization Active Memory Sharing"
    (2009/2011), and the IBM Knowledge Center page "Shared memory
    distribution": partitions share one pool; each is guaranteed its I/O
    entitled memory and can use up to its logical memory; the hypervisor
    decides, by each partition's memory weight and by how the partition
    uses its memory, how much pool memory backs it; it asks partitions to
    loan pages (the loan request the CMM driver reads with H_GET_MPP) and,
    when loans do not free enough, stores the rest of their logical memory
    on a paging device and pages it back in when touched.
  * C. A. Waldspurger, "Memory Resource Management in VMware ESX Server",
    OSDI 2002: memory is reclaimed from the VM with the fewest shares per
    page, where idle pages are taxed (section 5: rho = S / (P * (f + k *
    (1 - f))), k = 1 / (1 - tau), tax rate tau 75% by default, f the
    fraction of the VM's pages found active by sampling); reclamation by
    ballooning first and swapping when that is not enough (section 6:
    free-memory thresholds "high" 6%, "soft" 4%, "hard" 2%: above high
    nothing is reclaimed, below soft the balloon is used, below hard the
    hypervisor swaps).

Data structures
---------------
SharedPool      the pool: ``pool_pages`` physical pages, the partitions'
                PartitionMemory records (cmm.paging), the PagingDevice, and
                ``reserved`` pages held for writes in progress.  Always:
                pool_pages == sum(backed) + free_pages + reserved, with
                free_pages >= 0 (check()).
PoolPolicy      the hypervisor's reclamation, run every ``period_s`` by a
                kernel thread on the partitions' clock (thread()):

  1. Free pool memory below ``high``: the shortfall to ``high`` is shared
     out as loan requests, a quantum at a time to the partition with the
     lowest shares per page (its weight over its backed pages, idle pages
     taxed), never asking a partition for more than its idle backed pages
     (what the tax says it uses least: what a balloon can hope to win),
     nor to go below its entitled memory, nor one whose recent loans gave
     the pool nothing (its balloon took pages the pool did not back:
     _barren()).
     Each partition's loan target is then what it has loaned plus its
     share (a balloon that could not loan is asked again, not more).
  2. Free memory above twice ``high``: half the excess goes back as lower
     loan targets, from the partitions with the most shares per page first.
  3. Free memory below ``hard``: the hypervisor pages out, coldest pages of
     the lowest-shares partition first, until ``hard`` is free again.
  A guest access that finds no room pages out at once (make_room, at
  least PAGEOUT_BATCH pages), the cost owed by the partition that asked.
  Each partition's active fraction f is measured once a round
  (PartitionMemory.active_f) and used until the next.

H_COALESCE_CAND hints are recorded by the stub (Partition.coalesce_cand)
but not acted on: each guest's own KSM already merges within the guest,
and the pool does not share pages between partitions (the isolation ESX
gave up sharing across VMs for).
"""
from ksm_engine import PAGE_SIZE

from .paging import PoolExhausted

ENOMEM = 12
# Pages paged out at least at a time when room is short: one pass over a
# partition's frames finds the coldest 1 MiB, not one page per guest access.
PAGEOUT_BATCH = 256
# Rounds a partition whose loans won nothing is left alone (_barren): long
# enough that a balloon is not inflated with never-touched frames round
# after round (its deflation gives them back first, LIFO, to be loaned
# again: churn that wins nothing).
BARREN_ROUNDS = 60


class SharedPool:
    """The physical pool (see the module doc).

    Fields:
      pool_pages   pages of physical memory in the pool
      device       the PagingDevice
      parts        the live partitions' PartitionMemory, in start order
      reserved     pages held for frames writes in progress may allocate
      clock        the SimClock (now_ms())
      policy       the PoolPolicy choosing victims
      shrink_short pages a pool shrink could not take (device full)
    """

    def __init__(self, pool_pages, device, clock, policy):
        self.pool_pages = int(pool_pages)
        self.device = device
        self.parts = []
        self.reserved = 0
        self.clock = clock
        self.policy = policy
        self.shrink_short = 0

    def now_ms(self):
        return self.clock.now_ms

    @property
    def backed_pages(self):
        return sum(p.backed for p in self.parts)

    @property
    def free_pages(self):
        return self.pool_pages - self.backed_pages - self.reserved

    def make_room(self, n, requester):
        """Page out until ``n`` pages are free, lowest shares per page first
        (the requester's own cold pages included).  The page-outs are owed
        by ``requester`` (a PartitionMemory; None for the hypervisor's own
        work).  PoolExhausted if the device cannot take enough."""
        short = n - self.free_pages
        while short > 0:
            victims = [p for p in self.parts if p.backed]
            if not victims or self.device.free <= 0:
                self.device.refused += short
                raise PoolExhausted(ENOMEM, f"pool full ({self.pool_pages} pages) and "
                                            f"paging device full ({self.device.size_pages} pages)")
            v = min(victims, key=lambda p: (self.policy.shares_per_page(p, f=p.active_f), p.name))
            got = v.page_out(max(short, PAGEOUT_BATCH), for_access=requester is v)
            if requester is not None and requester is not v:
                requester._owe(got * self.device.page_out_us)
            short -= got

    def resize(self, pool_pages):
        """The pool grows or shrinks to ``pool_pages``; a shrink below what
        the partitions hold pages the difference out, and if the device
        cannot take it the pool keeps what it cannot give (shrink_short).
        Returns the new size."""
        want = int(pool_pages)
        short = self.backed_pages + self.reserved - want
        if short > 0:
            try:
                self.make_room(self.pool_pages - want, None)
            except PoolExhausted:
                pass
            keep = self.backed_pages + self.reserved
            self.shrink_short = max(0, keep - want)
            want = max(want, keep)
        else:
            self.shrink_short = 0
        self.pool_pages = want
        return want

    def check(self):
        """AssertionError unless the pool's accounts add up."""
        for p in self.parts:
            p.check()
        assert self.free_pages >= 0, f"pool overdrawn: {self.free_pages} pages free"
        assert self.pool_pages == self.backed_pages + self.free_pages + self.reserved
        paged = sum(p.paged for p in self.parts)
        assert self.device.used == paged, f"device holds {self.device.used} pages, partitions {paged}"
        assert 0 <= self.device.used <= self.device.size_pages


class PoolPolicy:
    """The hypervisor's reclamation policy (see the module doc).

    Fields (fractions of the pool unless said otherwise):
      period_s       seconds between two rounds of the policy thread
      high, soft, hard   free-memory thresholds (ESX: 6%, 4%, 2%)
      tax_rate       idle-memory tax rate tau (ESX default 0.75)
      idle_window_ms a page untouched this long counts as idle
      weights        PartitionMemory -> mem_weight (0-255; shares = weight + 1)
      entitled       PartitionMemory -> entitled pages (never asked below)
      pool           the SharedPool (set by the runner)
      rounds, released, background_page_outs   counters
      max_loan_target   the largest sum of the loan targets set
    """

    def __init__(self, period_s=1, high=0.06, soft=0.04, hard=0.02, tax_rate=0.75,
                 idle_window_s=30):
        self.period_s = period_s
        self.high, self.soft, self.hard = high, soft, hard
        self.tax_rate = tax_rate
        self.idle_window_ms = int(idle_window_s * 1000)
        self.pool = None
        self.rounds = 0
        self.max_loan_target = 0
        self.released = 0
        self.background_page_outs = 0

    def shares_per_page(self, pm, pages=None, f=None):
        """rho = S / (P * (f + k * (1 - f))): S the partition's shares
        (mem_weight + 1), P its backed pages (``pages`` if given), f its
        active fraction (the last round's if not given), k = 1 / (1 - tax_rate)."""
        P = pm.backed if pages is None else pages
        if P <= 0:
            return float("inf")
        if f is None:
            f = pm.active_f
        k = 1.0 / (1.0 - self.tax_rate)
        return (pm.part.mem_weight + 1) / (P * (f + k * (1.0 - f)))

    def _pages(self, frac):
        return int(self.pool.pool_pages * frac)

    def set_loan_targets(self):
        """Steps 1 and 2 of the module doc; returns {pm: target pages}."""
        pool = self.pool
        parts = [p for p in pool.parts if p.part.hv.cmo]
        free = pool.free_pages
        high = self._pages(self.high)
        loaned = {p: p.part.loaned_bytes // PAGE_SIZE for p in parts}
        share = {p: 0 for p in parts}
        if free < high and parts:
            need = high - free
            q = max(1, need // 64)
            f = {p: p.active_f for p in parts}
            barren = {p for p in parts if self._barren(p)}
            rho = {p: self.shares_per_page(p, f=f[p]) for p in parts}
            while need > 0:
                room = [p for p in parts if p not in barren
                        and share[p] + q <= p.idle_backed
                        and p.backed - share[p] - q >= p.part.entitled_mem // PAGE_SIZE]
                if not room:
                    break
                p = min(room, key=lambda p: (rho[p], p.name))
                share[p] += q
                need -= q
                rho[p] = self.shares_per_page(p, p.backed - share[p], f[p])
        elif free > 2 * high and parts:
            give = (free - 2 * high) // 2
            for p in sorted(parts, key=lambda p: (-self.shares_per_page(p), p.name)):
                g = min(give, loaned[p])
                share[p] = -g
                give -= g
                self.released += g
        targets = {}
        for p in parts:
            t = max(0, loaned[p] + share[p])
            p.part.set_loan_target(t * PAGE_SIZE)
            targets[p] = t
        self.max_loan_target = max(self.max_loan_target, sum(targets.values()))
        return targets

    def _barren(self, pm):
        """True while the partition's recent loans won the pool nothing:
        its balloon took only frames the pool did not back (pages the
        guest never touched), so asking it for more would only shrink the
        guest.  It is asked again BARREN_ROUNDS rounds after such a loan.  (The stub's own rule: a hypervisor sees which pages
        a loan returns, and neither source asks for loans that free
        nothing.)"""
        return pm.barren_since is not None and \
            self.pool.now_ms() - pm.barren_since < BARREN_ROUNDS * self.period_s * 1000

    def round(self):
        """One round: loan targets, then background paging below ``hard``."""
        self.rounds += 1
        pool = self.pool
        for p in pool.parts:
            p.measure(self.idle_window_ms)
        self.set_loan_targets()
        hard = self._pages(self.hard)
        if pool.free_pages < hard:
            before = pool.device.page_outs
            try:
                pool.make_room(hard, None)
            except PoolExhausted:
                pass
            self.background_page_outs += pool.device.page_outs - before

    def thread(self):
        """The policy as a kernel thread (ksm_engine.clock): a round every
        period_s."""
        while True:
            yield self.period_s
            self.round()
