"""The system model's rules for processes (spawn, mmap, munmap, write,
fill, read, fork, exit, exhausting the arena): a mixin of SystemModel
(test_system_model.py), on the state of system_model.SystemState."""
import errno

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from ksm_engine import ProcessExited, SegmentationFault
from ksm_engine.process import MMAP_BASE

from .model import PAGE_SIZE, ModelProcess, pattern_page, unique_page
from .system_model import COUNTS, IDX, PATTERNS


class ProcessRules:
    """Rules on processes; each predicts its outcome from the model."""

    # --- processes -------------------------------------------------------------

    @precondition(lambda self: len(self.procs) < self.MAX_PROCS)
    @rule()
    def spawn(self):
        self.procs.append((self.m.spawn(name=f"p{COUNTS['runs']}"), ModelProcess()))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, npages=st.integers(1, 24), fixed=st.booleans(), near=IDX,
          delta=st.integers(-6, 6))
    def mmap(self, i, npages, fixed, near, delta):
        p, mp = self._proc(i)
        if len(mp.mapped) + npages > self.MAX_MAPPED:
            return
        if not fixed:
            addr = p.mmap(npages * PAGE_SIZE)
            assert addr % PAGE_SIZE == 0 and not mp.overlaps(addr, npages)
            mp.mmap(addr, npages)
            return
        addr = self._near(mp, near, delta)
        clash = mp.overlaps(addr, npages)
        try:
            got = p.mmap(npages * PAGE_SIZE, addr=addr)
        except OSError as e:
            assert e.errno == errno.EEXIST and clash, e
            return
        assert got == addr and not clash
        mp.mmap(addr, npages)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, delta=st.integers(-2, 2), npages=st.integers(1, 16))
    def munmap(self, i, near, delta, npages):
        p, mp = self._proc(i)
        addr = self._near(mp, near, delta)
        p.munmap(addr, npages * PAGE_SIZE)
        mp.munmap(addr, npages)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, patterns=PATTERNS)
    def write_pages(self, i, near, patterns):
        """Whole pages from a small alphabet: what KSM merges."""
        p, mp = self._proc(i)
        self._store(p, mp, self._near(mp, near, 0),
                    b"".join(pattern_page(k) for k in patterns))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, patterns=PATTERNS)
    def write_pages_again(self, i, near, patterns):
        """(write_pages drawn twice as often: merges need duplicates.)"""
        self.write_pages(i, near, patterns)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, j=IDX, near=IDX, near2=IDX, npages=st.integers(1, 8))
    def copy_pages(self, i, j, near, near2, npages):
        """Pages of one process written into another: duplicates across
        processes, what KSM exists for."""
        p, mp = self._proc(i)
        q, mq = self._proc(j)
        src = self._near(mp, near, 0)
        self._store(q, mq, self._near(mq, near2, 0), mp.read(src, npages * PAGE_SIZE))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, offset=st.integers(-64, 2 * PAGE_SIZE),
          data=st.binary(min_size=1, max_size=300))
    def write_bytes(self, i, near, offset, data):
        """A few bytes anywhere, often across a page boundary or an edge."""
        p, mp = self._proc(i)
        addr = self._near(mp, near, 0) + offset
        if addr >= 0:
            self._store(p, mp, addr, data)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, offset=st.integers(-16, PAGE_SIZE),
          byte=st.sampled_from([0, 1, 7]) | st.integers(0, 255),
          length=st.integers(1, 3 * PAGE_SIZE))
    def fill(self, i, near, offset, byte, length):
        p, mp = self._proc(i)
        addr = self._near(mp, near, 0) + offset
        if addr >= 0:
            self._store(p, mp, addr, bytes([byte]) * length, byte=byte)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, near=IDX, offset=st.integers(-64, 2 * PAGE_SIZE),
          n=st.integers(1, 3 * PAGE_SIZE))
    def read(self, i, near, offset, n):
        p, mp = self._proc(i)
        addr = self._near(mp, near, 0) + offset
        if addr < 0:
            return
        if mp.covered(addr, n):
            assert p.read(addr, n) == mp.read(addr, n)
            buf = bytearray(n)
            assert p.readinto(addr, buf) == n and buf == mp.read(addr, n)
        else:
            with pytest.raises(SegmentationFault):
                p.read(addr, n)

    @precondition(lambda self: self.procs and len(self.procs) < self.MAX_PROCS)
    @rule(i=IDX)
    def fork(self, i):
        p, mp = self._proc(i)
        c = p.fork()
        assert c.ksm_stat["ksm_mergeable"] == p.ksm_stat["ksm_mergeable"]
        assert c.ksm_stat["ksm_rmap_items"] == 0
        self.procs.append((c, mp.fork()))

    @precondition(lambda self: self.procs)
    @rule(i=IDX)
    def exit(self, i):
        p, _ = self.procs.pop(i % len(self.procs))
        p.exit()
        with pytest.raises(ProcessExited):
            p.read(MMAP_BASE, 1)

    @precondition(lambda self: self.procs)
    @rule(i=IDX)
    def exhaust(self, i):
        """A write of unique pages, as many as frames are free and a few
        more: ENOMEM after the OOM notifiers unless they freed enough."""
        p, mp = self._proc(i)
        n = min(self.m.free_pages + 4, self.MAX_MAPPED - len(mp.mapped))
        if n <= 0:
            return
        addr = p.mmap(n * PAGE_SIZE)
        mp.mmap(addr, n)
        data = b"".join(unique_page(self.serial + k) for k in range(n))
        self.serial += n
        self._store(p, mp, addr, data)
