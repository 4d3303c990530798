"""The KSM state machine's model and rules (test_model_ksm.py says what it
checks): ``Model``, what one process must read, and ``KsmRules``, the start
and every rule (processes, memory, KSM advice, ksmd, knobs), each keeping
the model in step.  test_model_ksm.py adds the invariants (KsmModel)."""
import copy
import errno

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PAGE_SIZE, PR_GET_MEMORY_MERGE, PR_SET_MEMORY_MERGE,
                        Machine)

MAX_PROCS = 5
MAX_AREAS = 3
# a few page contents, so that pages often turn out equal
PATTERNS = [bytes(PAGE_SIZE), b"\x11" * PAGE_SIZE, b"\x22" * PAGE_SIZE,
            bytes(range(256)) * (PAGE_SIZE // 256)]

IDX = st.integers(min_value=0, max_value=1 << 16)


class Model:
    """What one process must read: page address -> bytearray, and which
    pages are VM_MERGEABLE; plus merge-any."""

    def __init__(self):
        self.pages = {}
        self.mergeable = {}
        self.merge_any = False

    def fork(self):
        """The child's model: a copy of everything."""
        c = copy.copy(self)
        c.pages = {a: bytearray(b) for a, b in self.pages.items()}
        c.mergeable = dict(self.mergeable)
        return c

    def write(self, addr, data):
        pos = 0
        while pos < len(data):
            a = addr + pos
            base, off = a - a % PAGE_SIZE, a % PAGE_SIZE
            n = min(PAGE_SIZE - off, len(data) - pos)
            self.pages[base][off:off + n] = data[pos:pos + n]
            pos += n


class KsmRules(RuleBasedStateMachine):
    """The start and the rules; KsmModel (test_model_ksm.py) adds the invariants."""

    @initialize(mps=st.sampled_from(["2", "3", "256"]), zero=st.booleans(), smart=st.booleans(),
                layout=st.lists(st.lists(st.integers(0, len(PATTERNS) - 1), min_size=1, max_size=8),
                                min_size=1, max_size=3))
    def start(self, mps, zero, smart, layout):
        self._start(Machine(ram="8MiB"), layout, max_page_sharing=mps, use_zero_pages=str(int(zero)),
                    smart_scan=str(int(smart)))

    def _start(self, m, layout, **knobs):
        """The machine with these knobs and run=1, and processes with a
        mergeable area of pattern pages each (``layout``), so that runs
        start with something to merge."""
        self.m = m
        for name, value in knobs.items():
            m.ksm.sysfs[name] = value
        m.ksm.sysfs["run"] = "1"
        self.procs = []          # [(Process, Model)]
        self.after_run2 = False
        # since run=2: some area was made mergeable (madvise, prctl), which
        # may put a KSM page run=2 left (a fork copy) in a mergeable area
        self.marked_after_run2 = False
        for patterns in layout:
            p, mp = m.spawn(), Model()
            self.procs.append((p, mp))
            self._map(p, mp, [PATTERNS[k] for k in patterns], True)

    # --- helpers -------------------------------------------------------------------

    def _proc(self, i):
        return self.procs[i % len(self.procs)]

    def _map(self, p, mp, pages, mergeable):
        a = p.mmap(len(pages) * PAGE_SIZE)
        for k, content in enumerate(pages):
            mp.pages[a + k * PAGE_SIZE] = bytearray(content)
            mp.mergeable[a + k * PAGE_SIZE] = mp.merge_any or mergeable
        p.write(a, b"".join(pages))
        if mergeable:
            p.madvise(a, len(pages) * PAGE_SIZE, MADV_MERGEABLE)
        return a

    def _area(self, p, i):
        areas = list(p.areas.values())
        return areas[i % len(areas)]

    # --- processes ---------------------------------------------------------------------

    @precondition(lambda self: len(self.procs) < MAX_PROCS)
    @rule()
    def spawn(self):
        self.procs.append((self.m.spawn(), Model()))

    @precondition(lambda self: self.procs)
    @rule(i=IDX, npages=st.integers(1, 8), fill=st.sampled_from([None, 0, 1, 2, 3]))
    def mmap_empty(self, i, npages, fill):
        """An area of npages pages, not written (fill None: no page
        present) or filled with one pattern; not madvised."""
        p, mp = self._proc(i)
        if len(p.areas) >= MAX_AREAS:
            return
        a = p.mmap(npages * PAGE_SIZE)
        for k in range(npages):
            mp.pages[a + k * PAGE_SIZE] = bytearray(PAGE_SIZE)
            mp.mergeable[a + k * PAGE_SIZE] = mp.merge_any
        if fill is not None:
            data = PATTERNS[fill] * npages
            p.write(a, data)
            mp.write(a, data)

    @precondition(lambda self: self.procs)
    @rule(i=IDX, patterns=st.lists(st.integers(0, len(PATTERNS) - 1), min_size=1, max_size=8))
    def mmap_mergeable(self, i, patterns):
        """An area of pattern pages, madvised MERGEABLE."""
        p, mp = self._proc(i)
        if len(p.areas) < MAX_AREAS:
            self._map(p, mp, [PATTERNS[k] for k in patterns], True)

    @precondition(lambda self: any(p.areas for p, _ in self.procs))
    @rule(i=IDX, j=IDX, first=st.integers(0, 7), n=st.integers(1, 8))
    def munmap(self, i, j, first, n):
        p, mp = self._proc(i)
        if not p.areas:
            return
        a = self._area(p, j)
        npages = (a.end - a.start) // PAGE_SIZE
        first %= npages
        n = min(n, npages - first)
        start = a.start + first * PAGE_SIZE
        p.munmap(start, n * PAGE_SIZE)
        for k in range(n):
            del mp.pages[start + k * PAGE_SIZE]
            del mp.mergeable[start + k * PAGE_SIZE]

    @precondition(lambda self: self.procs and len(self.procs) < MAX_PROCS)
    @rule(i=IDX)
    def fork(self, i):
        p, mp = self._proc(i)
        c = p.fork()
        st_ = c.ksm_stat
        assert st_["ksm_rmap_items"] == 0 and st_["ksm_merging_pages"] == 0
        assert c.prctl(PR_GET_MEMORY_MERGE) == int(mp.merge_any)
        self.procs.append((c, mp.fork()))

    @precondition(lambda self: self.procs)
    @rule(i=IDX)
    def exit(self, i):
        k = i % len(self.procs)
        p, _ = self.procs.pop(k)
        p.exit()

    # --- memory ------------------------------------------------------------------------

    @precondition(lambda self: any(p.areas for p, _ in self.procs))
    @rule(i=IDX, j=IDX, page_no=st.integers(0, 7), pattern=st.integers(0, len(PATTERNS) - 1))
    def write_page(self, i, j, page_no, pattern):
        p, mp = self._proc(i)
        if not p.areas:
            return
        a = self._area(p, j)
        addr = a.start + (page_no % ((a.end - a.start) // PAGE_SIZE)) * PAGE_SIZE
        p.write(addr, PATTERNS[pattern])
        mp.write(addr, PATTERNS[pattern])

    @precondition(lambda self: any(p.areas for p, _ in self.procs))
    @rule(i=IDX, j=IDX, offset=st.integers(0, 8 * PAGE_SIZE), data=st.binary(min_size=1, max_size=24))
    def write_bytes(self, i, j, offset, data):
        p, mp = self._proc(i)
        if not p.areas:
            return
        a = self._area(p, j)
        addr = a.start + offset % (a.end - a.start)
        data = data[:a.end - addr]
        p.write(addr, data)
        mp.write(addr, data)

    # --- KSM advice ---------------------------------------------------------------------

    @precondition(lambda self: any(p.areas for p, _ in self.procs))
    @rule(i=IDX, j=IDX, first=st.integers(-1, 7), n=st.integers(1, 10), merge=st.booleans())
    def madvise(self, i, j, first, n, merge):
        p, mp = self._proc(i)
        if not p.areas:
            return
        a = self._area(p, j)
        start = a.start + first * PAGE_SIZE            # may start in the gap before
        advice = MADV_MERGEABLE if merge else MADV_UNMERGEABLE
        covered = [start + k * PAGE_SIZE for k in range(n)]
        gap = any(x not in mp.pages for x in covered)
        try:
            p.madvise(start, n * PAGE_SIZE, advice)
            assert not gap
        except OSError as e:
            assert e.errno == errno.ENOMEM and gap
        for x in covered:
            if x in mp.pages:
                mp.mergeable[x] = merge
        if merge:
            self.marked_after_run2 = True

    @precondition(lambda self: self.procs)
    @rule(i=IDX, on=st.booleans())
    def prctl(self, i, on):
        p, mp = self._proc(i)
        assert p.prctl(PR_SET_MEMORY_MERGE, int(on)) == 0
        if on and not mp.merge_any:
            for x in mp.mergeable:
                mp.mergeable[x] = True
            self.marked_after_run2 = True
        elif not on and mp.merge_any:
            for x in mp.mergeable:
                mp.mergeable[x] = False
        mp.merge_any = on
        assert p.prctl(PR_GET_MEMORY_MERGE) == int(on)

    # --- ksmd ---------------------------------------------------------------------------

    @rule(n=st.integers(1, 64))
    def scan(self, n):
        self.m.ksm.scan(n)
        self.after_run2 = False

    @rule(passes=st.integers(1, 3))
    def full_scan(self, passes):
        self.m.ksm.full_scan(passes)
        self.after_run2 = False

    @rule()
    def settle(self):
        """Two more full scans: whatever can merge by now has."""
        self.m.ksm.full_scan(2)
        self.after_run2 = False

    # --- knobs --------------------------------------------------------------------------

    @rule(value=st.sampled_from(["2", "3", "4", "256"]))
    def max_page_sharing(self, value):
        s = self.m.ksm.sysfs
        old = s["max_page_sharing"]
        busy = self.m.ksm.stats["pages_shared"] > 0 or self.m.meminfo()["ksm_pages"] > 0
        try:
            s["max_page_sharing"] = value
            assert not busy or old == value + "\n"
            assert s["max_page_sharing"] == value + "\n"
        except OSError as e:
            assert e.errno == errno.EBUSY and busy and old != value + "\n"
            assert s["max_page_sharing"] == old

    @rule(on=st.booleans())
    def use_zero_pages(self, on):
        self.m.ksm.sysfs["use_zero_pages"] = str(int(on))

    @rule(on=st.booleans())
    def smart_scan(self, on):
        self.m.ksm.sysfs["smart_scan"] = str(int(on))

    @rule(back_to_1=st.booleans())
    def run_2(self, back_to_1):
        s = self.m.ksm.sysfs
        if s["run"] == "2\n":
            # run_store: writing the value run already has does nothing
            # (scan() may have merged since: it is ksm_do_scan, not ksmd)
            before = self.m.ksm.stats
            s["run"] = "2"
            assert self.m.ksm.stats == before
        else:
            s["run"] = "2"
            self.after_run2 = True
            self.marked_after_run2 = False
        # the processes stay registered: those with mergeable areas (and
        # merge-any ones) are still on KSM's list
        for p, mp in self.procs:
            if any(mp.mergeable.values()):
                assert self.m.ksm.is_registered(p)
        if back_to_1:
            s["run"] = "1"
