"""The machine against a pure-Python reference model: hypothesis
drives random sequences of spawn, mmap (anywhere or fixed), munmap (whole,
partial, across holes), write and fill (random offsets and lengths spanning
pages and area boundaries), read, fork and exit on a machine of 32 frames,
some of which a balloon takes and gives back, so that writes also run out
of frames.

The model, per live process: ``pages``, a dict vpn -> Page for every mapped
virtual page.  A Page holds the bytes the process must read there (None:
never written, reads zeros and must map no frame) and a frame token: fork
shares the token, a write to a page whose token is shared gets a new one
(copy-on-write), a write to an unshared page keeps it (in place).  From it
the model predicts every outcome: SegmentationFault when a byte is outside
the areas, OSError(ENOMEM) when more frames are needed than are free (and
then nothing changes), and otherwise the new bytes.

Invariants after every step, for every process: its areas cover exactly the
model's pages; it reads exactly the model's bytes (all of it: processes are
at most 32 pages); a page maps a frame iff it was written, never a
balloon's; two ptes map the
same frame iff their tokens are equal, and a token keeps its frame while it
lives; rss_pages is the written pages; used_pages is the live tokens;
free + used + balloon == nr_frames; Machine.check() passes.  When the run
ends every process exits and every frame must be free again.

KSM_ENGINE_MODEL_EXAMPLES=N runs N examples instead of the CI's 60.
"""
import errno
import itertools
import random

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ksm_engine import PAGE_SIZE, Machine, SegmentationFault
from tests.conftest import model_settings

NR_FRAMES = 32
MAX_PROCS = 5
MAX_PAGES_PER_PROC = 32
MAX_AREA_PAGES = 8
FIXED_BASE = 0x7000_0000        # fixed mmaps go in a window of 48 pages here
FIXED_WINDOW = 48

_tokens = itertools.count(1)


class Page:
    """One mapped virtual page of the model: its bytes (None: never written)
    and the token of the frame it maps (None when it maps none)."""

    __slots__ = ("data", "token")

    def __init__(self, data=None, token=None):
        self.data = data
        self.token = token


def payload(seed, n):
    """n pseudo-random bytes (cheaper to draw than st.binary of KiBs)."""
    return random.Random(seed).randbytes(n)


def _fails(op, exc, err, what, success):
    """op() must raise ``exc`` with errno ``err`` (counted as the hypothesis
    event ``what``); AssertionError(``success``) if it succeeds."""
    try:
        op()
    except exc as e:
        assert e.errno == err
        event(what)
        return
    raise AssertionError(success)


class CoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.m = Machine(ram=NR_FRAMES * PAGE_SIZE)
        self.procs = {}         # pid -> (Process, {vpn: Page})
        self.frame_of = {}      # token -> pfn, learned on first sight
        self.balloon = []       # pfns the balloon holds

    # --- model helpers ------------------------------------------------------

    def _pick(self, i):
        pids = sorted(self.procs)
        return self.procs[pids[i % len(pids)]]

    def _areas(self, pages):
        """The model's mapped pages as sorted runs [start_vpn, end_vpn)."""
        runs = []
        for v in sorted(pages):
            if runs and runs[-1][1] == v:
                runs[-1][1] = v + 1
            else:
                runs.append([v, v + 1])
        return runs

    def _live_tokens(self):
        return {pg.token for _, pages in self.procs.values() for pg in pages.values()
                if pg.token is not None}

    def _token_shared(self, token, me, vpn):
        for pages in (pp for _, pp in self.procs.values()):
            for v, pg in pages.items():
                if pg.token == token and not (pages is me and v == vpn):
                    return True
        return False

    def _anchor(self, p, pages, i, offset):
        """An address near one of the process's areas (or near the fixed
        window when it has none): offset may fall before, inside or after."""
        if p.areas:
            a = p.areas.peekitem(i % len(p.areas))[1]
            return a.start + offset
        return FIXED_BASE + offset

    def _spot(self, p, i, at, slack):
        """An address in or around area i: ``at`` (0..1000) runs from
        ``slack`` bytes before the area to ``slack`` bytes after it, so most
        accesses fall inside and some cross its ends."""
        if not p.areas:
            return FIXED_BASE + at
        a = p.areas.peekitem(i % len(p.areas))[1]
        return a.start - slack + at * (a.end - a.start + 2 * slack) // 1000

    def _store(self, p, pages, addr, data, op=None):
        """Applies a write of ``data`` at addr to process p and the model,
        asserting the outcome the model predicts.  ``op()`` does it on the
        machine (default p.write(addr, data); fill passes its own)."""
        n = len(data)
        if op is None:
            def op():
                p.write(addr, data)
        if n == 0:
            op()
            return
        first, last = addr // PAGE_SIZE, (addr + n - 1) // PAGE_SIZE
        covered = addr >= 0 and all(v in pages for v in range(first, last + 1))
        if not covered:
            _fails(op, SegmentationFault, errno.EFAULT, "store: segfault",
                   f"write {addr:#x}+{n} outside the areas succeeded")
            return
        need = sum(1 for v in range(first, last + 1)
                   if pages[v].token is None or self._token_shared(pages[v].token, pages, v))
        if need > self.m.free_pages:
            _fails(op, OSError, errno.ENOMEM, "store: out of frames",
                   f"write needing {need} frames with {self.m.free_pages} free succeeded")
            return
        op()
        for v in range(first, last + 1):
            pg = pages[v]
            if pg.token is not None:
                shared = self._token_shared(pg.token, pages, v)
                event("page: copy-on-write" if shared else "page: written in place")
            if pg.token is None or self._token_shared(pg.token, pages, v):
                pages[v] = pg = Page(bytearray(pg.data or bytes(PAGE_SIZE)), next(_tokens))
            lo = max(addr, v * PAGE_SIZE)
            hi = min(addr + n, (v + 1) * PAGE_SIZE)
            pg.data[lo - v * PAGE_SIZE:hi - v * PAGE_SIZE] = data[lo - addr:hi - addr]

    # --- rules ----------------------------------------------------------------

    @initialize(npages=st.integers(1, MAX_AREA_PAGES))
    def first_process(self, npages):
        p = self.m.spawn()
        self.procs[p.pid] = (p, {})
        addr = p.mmap(npages * PAGE_SIZE)
        for v in range(addr // PAGE_SIZE, addr // PAGE_SIZE + npages):
            self.procs[p.pid][1][v] = Page()

    @precondition(lambda self: len(self.procs) < MAX_PROCS)
    @rule()
    def spawn(self):
        p = self.m.spawn()
        self.procs[p.pid] = (p, {})

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), npages=st.integers(1, MAX_AREA_PAGES))
    def mmap_anywhere(self, i, npages):
        p, pages = self._pick(i)
        if len(pages) + npages > MAX_PAGES_PER_PROC:
            return
        addr = p.mmap(npages * PAGE_SIZE)
        assert addr % PAGE_SIZE == 0
        new = range(addr // PAGE_SIZE, addr // PAGE_SIZE + npages)
        assert not any(v in pages for v in new), "mmap placed an area over another"
        for v in new:
            pages[v] = Page()

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), page=st.integers(0, FIXED_WINDOW - 1), npages=st.integers(1, MAX_AREA_PAGES))
    def mmap_fixed(self, i, page, npages):
        p, pages = self._pick(i)
        if len(pages) + npages > MAX_PAGES_PER_PROC:
            return
        addr = FIXED_BASE + page * PAGE_SIZE
        new = range(addr // PAGE_SIZE, addr // PAGE_SIZE + npages)
        if any(v in pages for v in new):
            try:
                p.mmap(npages * PAGE_SIZE, addr=addr)
            except OSError as e:
                assert e.errno == errno.EEXIST
                return
            raise AssertionError("mmap over an area succeeded")
        assert p.mmap(npages * PAGE_SIZE, addr=addr) == addr
        for v in new:
            pages[v] = Page()

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), first=st.integers(-2, MAX_AREA_PAGES + 1),
          npages=st.integers(1, 2 * MAX_AREA_PAGES))
    def munmap(self, i, j, first, npages):
        p, pages = self._pick(i)
        addr = self._anchor(p, pages, j, first * PAGE_SIZE)
        if addr < 0:
            return
        p.munmap(addr, npages * PAGE_SIZE)
        for v in range(addr // PAGE_SIZE, addr // PAGE_SIZE + npages):
            pages.pop(v, None)

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), at=st.integers(0, 1000),
          slack=st.sampled_from([0, 1, 64, PAGE_SIZE]),
          n=st.one_of(st.integers(0, 64), st.integers(0, 3 * PAGE_SIZE + 64)),
          seed=st.integers(0, 2 ** 32))
    def write(self, i, j, at, slack, n, seed):
        p, pages = self._pick(i)
        self._store(p, pages, self._spot(p, j, at, slack), payload(seed, n))

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), first=st.integers(-1, MAX_AREA_PAGES),
          npages=st.integers(1, 3), byte=st.integers(0, 255))
    def write_whole_pages(self, i, j, first, npages, byte):
        """Page-aligned full-page writes: the path that skips the COW copy."""
        p, pages = self._pick(i)
        self._store(p, pages, self._anchor(p, pages, j, first * PAGE_SIZE),
                    bytes([byte]) * (npages * PAGE_SIZE))

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), at=st.integers(0, 1000),
          slack=st.sampled_from([0, 1, PAGE_SIZE]), n=st.integers(0, 2 * PAGE_SIZE + 10),
          byte=st.integers(0, 255))
    def fill(self, i, j, at, slack, n, byte):
        """fill must behave exactly as a write of n copies of byte: the
        model applies it as one, the machine runs p.fill."""
        p, pages = self._pick(i)
        addr = self._spot(p, j, at, slack)
        self._store(p, pages, addr, bytes([byte]) * n, op=lambda: p.fill(addr, byte, n))

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), at=st.integers(0, 1000),
          slack=st.sampled_from([0, 1, PAGE_SIZE]), n=st.integers(1, 3 * PAGE_SIZE))
    def read(self, i, j, at, slack, n):
        p, pages = self._pick(i)
        addr = self._spot(p, j, at, slack)
        first, last = addr // PAGE_SIZE, (addr + n - 1) // PAGE_SIZE
        if addr < 0 or not all(v in pages for v in range(first, last + 1)):
            try:
                p.read(addr, n)
            except SegmentationFault:
                return
            raise AssertionError("read outside the areas succeeded")
        want = b"".join(bytes(pages[v].data or bytes(PAGE_SIZE)) for v in range(first, last + 1))
        skip = addr - first * PAGE_SIZE
        assert p.read(addr, n) == want[skip:skip + n]

    def _shared_pages(self):
        """(process, pages, vpn) of every mapping whose frame another
        mapping shares, in a stable order."""
        count = {}
        for _, pages in self.procs.values():
            for pg in pages.values():
                if pg.token is not None:
                    count[pg.token] = count.get(pg.token, 0) + 1
        return [(p, pages, v) for pid, (p, pages) in sorted(self.procs.items())
                for v, pg in sorted(pages.items()) if pg.token is not None and count[pg.token] > 1]

    @precondition(lambda self: any(len(pages) for _, pages in self.procs.values()))
    @rule(i=st.integers(0, 99), byte=st.integers(0, 255))
    def fill_everything(self, i, byte):
        """Fills every area of one process: frames run out often."""
        p, pages = self._pick(i)
        for s, e in self._areas(pages):
            addr, n = s * PAGE_SIZE, (e - s) * PAGE_SIZE
            self._store(p, pages, addr, bytes([byte]) * n, op=lambda: p.fill(addr, byte, n))

    @precondition(lambda self: self._shared_pages())
    @rule(k=st.integers(0, 10 ** 6), offset=st.integers(0, PAGE_SIZE - 1), n=st.integers(1, 2 * PAGE_SIZE),
          seed=st.integers(0, 2 ** 32))
    def write_shared_page(self, k, offset, n, seed):
        """A write into a page a fork shares: copy-on-write (if frames last)."""
        shared = self._shared_pages()
        p, pages, v = shared[k % len(shared)]
        self._store(p, pages, v * PAGE_SIZE + offset, payload(seed, n))

    @rule(n=st.integers(1, NR_FRAMES))
    def balloon_take(self, n):
        """Frames go to a balloon (as the CMM driver takes them): fewer
        free frames, so writes run out of them."""
        for _ in range(n):
            if self.m.free_pages == 0:
                try:
                    self.m.balloon_page_alloc()
                except OSError as e:
                    assert e.errno == errno.ENOMEM
                    return
                raise AssertionError("balloon_page_alloc with no free frame succeeded")
            pfn = self.m.balloon_page_alloc()
            assert pfn not in self.balloon
            self.balloon.append(pfn)

    @precondition(lambda self: self.balloon)
    @rule(n=st.integers(1, NR_FRAMES))
    def balloon_give_back(self, n):
        for _ in range(min(n, len(self.balloon))):
            self.m.balloon_page_free(self.balloon.pop())

    @precondition(lambda self: self.procs and len(self.procs) < MAX_PROCS)
    @rule(i=st.integers(0, 99))
    def fork(self, i):
        p, pages = self._pick(i)
        c = p.fork()
        # the child sees the same bytes through the same frames (tokens)
        self.procs[c.pid] = (c, {v: Page(pg.data, pg.token) for v, pg in pages.items()})

    @precondition(lambda self: self.procs)
    @rule(i=st.integers(0, 99))
    def exit(self, i):
        p, _ = self._pick(i)
        p.exit()
        del self.procs[p.pid]

    # --- invariants -------------------------------------------------------------

    @invariant()
    def every_process_reads_what_the_model_says(self):
        for p, pages in self.procs.values():
            got = [(a.start // PAGE_SIZE, a.end // PAGE_SIZE) for a in p.areas.values()]
            # areas may be split where the model has one run: compare pages
            assert {v for s, e in got for v in range(s, e)} == set(pages)
            for s, e in self._areas(pages):
                data = p.read(s * PAGE_SIZE, (e - s) * PAGE_SIZE)
                want = b"".join(bytes(pages[v].data or bytes(PAGE_SIZE)) for v in range(s, e))
                assert data == want, f"pid {p.pid}: pages {s:#x}..{e:#x} differ from the model"

    @invariant()
    def frames_follow_the_tokens(self):
        by_pfn = {}
        for p, pages in self.procs.values():
            written = 0
            for s, e in self._areas(pages):
                pfns, flags = p.ptes(s * PAGE_SIZE, e - s)
                for v, pfn, fl in zip(range(s, e), pfns, flags):
                    pg = pages[v]
                    if pg.token is None:
                        assert fl == 0, f"never written page {v:#x} maps frame {pfn}"
                        continue
                    written += 1
                    assert fl == 1
                    assert by_pfn.setdefault(pfn, pg.token) == pg.token, "two tokens share a frame"
                    assert self.frame_of.setdefault(pg.token, pfn) == pfn, "a frame moved under its mappers"
            assert p.rss_pages == written
        live = self._live_tokens()
        assert len(by_pfn) == len(live)
        for t in list(self.frame_of):
            if t not in live:
                del self.frame_of[t]
        assert self.m.used_pages == len(live)
        assert self.m.balloon_pages == len(self.balloon)
        assert not set(self.balloon) & set(by_pfn), "a balloon frame is mapped"

    @invariant()
    def frames_add_up(self):
        m = self.m
        assert m.free_pages + m.used_pages + m.balloon_pages == m.nr_frames
        m.check()

    def teardown(self):
        for p, _ in list(self.procs.values()):
            p.exit()
        m = self.m
        assert m.balloon_pages == len(self.balloon)
        for pfn in self.balloon:
            m.balloon_page_free(pfn)
        assert m.used_pages == 0
        assert m.free_pages == m.nr_frames
        m.check()


CoreModel.TestCase.settings = model_settings(60)
TestCoreModel = CoreModel.TestCase
