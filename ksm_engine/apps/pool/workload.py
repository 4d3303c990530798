"""A partition's workload: processes that boot, work, grow and idle, seeded
and deterministic, as a kernel thread on the pool's SimClock.

Memory of each of the partition's ``processes`` (one MERGEABLE area of
``process_mb`` each when the partition runs KSM, laid out in this order):

  shared   ``shared_pct``: the same bytes in every process of the partition
           (a program, its libraries, a common heap image): what the
           guest's KSM merges
  zero     ``zero_pct``: touched, zero-filled pages
  private  the rest: distinct pages (a random row per process, each page
           stamped with its own 8-byte number); its first ``hot_pct`` is
           the hot working set, rewritten every tick with new stamps

Phases run in the order given, each for its ``s`` seconds; after the last
one the workload idles:

  boot     the processes start and write their memory, an equal part each
           tick, so that it is all written by the end of the phase
  steady   every tick: rewrite the hot set and read ``sweep_pct`` of the
           memory (a cursor that goes round it), one unit of work
  growth   steady's work, plus ``mb`` MiB of new distinct memory written
           over the phase (a temporary area of process 0), unmapped when
           the phase ends: the transient use a balloon can win back
  idle     nothing is touched: the memory goes cold

A burst (an event) is a growth of ``mb`` MiB over ``s`` seconds that runs
alongside whatever phase is current.

Every tick sleeps ``tick_s`` plus the simulated time the hypervisor's
paging cost the partition since the last tick (page-ins of what the tick
touched, page-outs made for it): a partition that pages does less work in
the same time.  A tick whose access the pool could not serve (paging
device full: cmm.paging.PoolExhausted) or that the guest could not serve
(no frame even after the OOM notifiers: ENOMEM) does no work and is
counted (``stalls``, ``failed_allocs``).

Content is numpy-built (one buffer per write, no Python code per page)
from a numpy Generator seeded by (scenario seed, partition index), so a
scenario gives the same memory, the same touches and the same JSON on
every run.
"""
import errno

import numpy as np

from cmm.paging import PoolExhausted
from ksm_engine import MADV_MERGEABLE, PAGE_SIZE

WORDS = PAGE_SIZE // 8          # uint64 words in a page


class Burst:
    """Transient memory being written: ``pages`` over ``ticks`` ticks into
    an area of process 0, unmapped when done."""

    def __init__(self, pages, ticks):
        self.pages = pages
        self.ticks = max(1, ticks)
        self.done_ticks = 0
        self.written = 0
        self.addr = None


class Workload:
    """The workload of one partition (see the module doc).

    Fields:
      machine, spec (the partition's validated "workload" object), ksm
      (merge the areas), seed, index
      procs          [(Process, area address)] once booted
      counters       work (units), stalls, failed_allocs, ticks
      phase          name of the current phase ("idle" after the last)
    """

    def __init__(self, machine, spec, ksm, seed, index, counters):
        self.machine = machine
        self.spec = spec
        self.ksm = ksm
        self.index = index
        self.rng = np.random.default_rng([seed, index])
        self.counters = counters
        self.procs = []
        self.phase = "idle"
        self.bursts = []
        self._gen = 0                       # stamp generation
        pages = int(spec["process_mb"] * (1 << 20)) // PAGE_SIZE
        self.pages = pages
        self.shared = pages * spec["shared_pct"] // 100
        self.zero = pages * spec["zero_pct"] // 100
        self.private = pages - self.shared - self.zero
        self.hot = max(1, self.private * spec["hot_pct"] // 100) if self.private else 0
        self.sweep = max(1, pages * spec["sweep_pct"] // 100)
        self._cursor = 0
        self._booted = 0                    # pages of each process written so far
        self._image = self.rng.bytes(self.shared * PAGE_SIZE)
        self._rows = [np.frombuffer(self.rng.bytes(PAGE_SIZE), np.uint64)
                      for _ in range(spec["processes"])]
        self._readbuf = bytearray(self.sweep * PAGE_SIZE)

    # -- content ----------------------------------------------------------------
    def _stamped(self, row, first, n):
        """n distinct pages: ``row`` with its first word replaced by a stamp
        unique to (partition, row, generation, page)."""
        buf = np.empty((n, WORDS), np.uint64)
        buf[:] = row
        base = (self.index << 56) | (self._gen << 28)
        buf[:, 0] = np.arange(first, first + n, dtype=np.uint64) + np.uint64(base)
        return buf

    # -- phases -------------------------------------------------------------------
    def _boot_tick(self, ticks_left):
        """Write the next part of every process's memory."""
        if not self.procs:
            for i in range(self.spec["processes"]):
                p = self.machine.spawn(name=f"w{i}")
                a = p.mmap(self.pages * PAGE_SIZE)
                if self.ksm:
                    p.madvise(a, self.pages * PAGE_SIZE, MADV_MERGEABLE)
                self.procs.append((p, a))
        start = self._booted
        end = self.pages if ticks_left <= 1 else min(
            self.pages, start + -(-(self.pages - start) // ticks_left))
        for i, (p, a) in enumerate(self.procs):
            self._write_pages(p, a, i, start, end)
        self._booted = end

    def _write_pages(self, p, a, i, start, end):
        """Process i writes its pages [start, end) with their boot content."""
        s_end, z_end = self.shared, self.shared + self.zero
        if start < s_end:
            e = min(end, s_end)
            p.write(a + start * PAGE_SIZE, memoryview(self._image)[start * PAGE_SIZE:e * PAGE_SIZE])
        if start < z_end and end > s_end:
            b, e = max(start, s_end), min(end, z_end)
            p.fill(a + b * PAGE_SIZE, 0, (e - b) * PAGE_SIZE)
        if end > z_end:
            b = max(start, z_end)
            p.write(a + b * PAGE_SIZE, self._stamped(self._rows[i], b, end - b))

    def _work_tick(self):
        """Rewrite the hot set, read the sweep window."""
        self._gen = (self._gen + 1) & 0xFFFFFFF
        off = self.shared + self.zero
        for i, (p, a) in enumerate(self.procs):
            if self.hot:
                p.write(a + off * PAGE_SIZE, self._stamped(self._rows[i], off, self.hot))
        n = min(self.sweep, self.pages)
        for p, a in self.procs:
            first = self._cursor % self.pages
            n1 = min(n, self.pages - first)
            p.readinto(a + first * PAGE_SIZE, memoryview(self._readbuf)[:n1 * PAGE_SIZE])
        self._cursor = (self._cursor + n) % self.pages

    def _burst_tick(self, b):
        """The next part of a transient area; unmapped when complete."""
        p, _ = self.procs[0]
        if b.addr is None:
            b.addr = p.mmap(b.pages * PAGE_SIZE)
        b.done_ticks += 1
        end = b.pages if b.done_ticks >= b.ticks else min(
            b.pages, b.written + -(-b.pages // b.ticks))
        if end > b.written:
            row = self._rows[0]
            p.write(b.addr + b.written * PAGE_SIZE, self._stamped(row, (1 << 27) + b.written,
                                                                   end - b.written))
            b.written = end

    def _end_burst(self, b):
        if b.addr is not None and self.procs:
            self.procs[0][0].munmap(b.addr, b.pages * PAGE_SIZE)
        b.addr = None

    def add_burst(self, mb, seconds):
        """A burst event: ``mb`` MiB over ``seconds``."""
        self.bursts.append(Burst(int(mb * (1 << 20)) // PAGE_SIZE,
                                 int(round(seconds / self.spec["tick_s"]))))

    # -- the thread -----------------------------------------------------------------
    def _tick(self, phase, ticks_left):
        """One tick's accesses; True when it did a unit of work."""
        if phase == "boot":
            self._boot_tick(ticks_left)
        for b in list(self.bursts):
            if not self.procs:
                break
            self._burst_tick(b)
            if b.written >= b.pages:
                self._end_burst(b)
                self.bursts.remove(b)
        if phase in ("steady", "growth") and self.procs:
            self._work_tick()
            return True
        return False

    def _guarded(self, phase, ticks_left, pm):
        """One tick, its failures counted (see the module doc); returns the
        seconds it lasts: tick_s plus the paging it cost."""
        c = self.counters
        c["ticks"] += 1
        try:
            if self._tick(phase, ticks_left):
                c["work"] += 1
        except PoolExhausted:
            c["stalls"] += 1
        except OSError as e:
            if e.errno != errno.ENOMEM:
                raise
            c["failed_allocs"] += 1
        owed, pm.stall_us = pm.stall_us, 0
        return self.spec["tick_s"] + owed / 1e6

    def thread(self, pm):
        """The workload as a kernel thread; ``pm`` (the partition's
        cmm.paging.PartitionMemory) is where its paging cost is owed."""
        for ph in self.spec["phases"]:
            ticks = max(1, int(round(ph["s"] / self.spec["tick_s"])))
            self.phase = ph["phase"]
            growth = None
            if self.phase == "growth" and ph.get("mb"):
                growth = Burst(int(ph["mb"] * (1 << 20)) // PAGE_SIZE, ticks)
                self.bursts.append(growth)
            for t in range(ticks):
                yield self._guarded(self.phase, ticks - t, pm)
            if growth is not None and growth in self.bursts:
                self._end_burst(growth)
                self.bursts.remove(growth)
        self.phase = "idle"
        while self.bursts:                          # bursts outlive the phases
            yield self._guarded("idle", 1, pm)
