"""The synthetic machine: physical memory as an arena of page frames.

A Machine owns
  * the C core's machine (``ke_machine``): the mmap'd arena of ``nr_frames``
    frames, each frame's map count and state, the page tables of every
    process, and KSM's per-page structures;
  * its processes (``Process``), each with its areas in address order;
  * ``ksm``, the Kernel Samepage Merging of this machine (``ksm_engine.ksm``);
  * the OOM notifier chain, which a balloon driver joins;
  * ``lock``, an RLock every public operation takes, so ksmd's thread, a
    balloon thread and user threads can share a machine.  Calls into C
    release the GIL, so other Python threads run while the core works.

Frame accounting, always true: ``free_pages + used_pages + balloon_pages ==
nr_frames``.  ``totalram_pages`` is the kernel's managed page count: the
frames less what a balloon has loaned away (adjust_managed_page_count).
"""
import errno
import itertools
import threading
import time

from ._native import PAGE_SIZE, check, ffi, lib
from .units import parse_size
from .validate import int_arg


def _frame_count(field, doc):
    """A read-only Machine property: one field of the core's frame counts."""
    def get(self):
        with self.lock:
            return getattr(self._read_counts(), field)
    return property(get, doc=doc)


class Machine:
    """A machine with ``ram`` bytes of page frames (an int or e.g. "256MiB").

    ``ksm_compat="2009"`` makes its KSM behave as the 2009 patch (KSM as first merged, Linux 2.6.32);
    the default follows Linux 6.x.  ``nr_zones`` splits the frames into that
    many equal zones (``page_zone``) for the balloon's migration code.
    ``clock`` is a function returning milliseconds (default: monotonic time);
    KSM reads it for stable_node_chains_prune_millisecs and its advisor.
    """

    def __init__(self, ram="256MiB", *, ksm_compat=None, nr_zones=1, clock=None):
        nbytes = parse_size(ram)
        if nbytes <= 0:
            raise ValueError(f"ram must be positive, got {ram!r}")
        if nbytes % PAGE_SIZE:
            raise ValueError(f"ram must be a whole number of {PAGE_SIZE}-byte pages, got {ram!r}")
        nr_frames = nbytes // PAGE_SIZE
        if nr_frames >= 0xFFFFFFF0:
            raise ValueError(f"ram too large: {ram!r} (at most 16 TiB)")
        int_arg("nr_zones", nr_zones)
        if not 1 <= nr_zones <= nr_frames:
            raise ValueError(f"nr_zones must be between 1 and the number of frames, got {nr_zones}")
        if ksm_compat not in (None, "2009", "6.x"):
            raise ValueError(f"ksm_compat must be None, '6.x' or '2009', got {ksm_compat!r}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be callable (returning milliseconds)")
        out = ffi.new("ke_machine **")
        check(lib.ke_machine_new(nr_frames, out), "cannot create machine")
        self._handle = ffi.gc(out[0], lib.ke_machine_free)  # see ke_machine
        self.nr_frames = nr_frames
        self.nr_zones = nr_zones
        self._managed_delta = 0
        # managed pages per zone (zone z: frames z*nr/nz .. (z+1)*nr/nz - 1)
        self._zone_managed = [((z + 1) * nr_frames // nr_zones) - (z * nr_frames // nr_zones)
                              for z in range(nr_zones)]
        self.lock = threading.RLock()
        self._clock = clock or (lambda: int(time.monotonic() * 1000))
        self._pids = itertools.count(1)
        self._processes = {}  # pid -> Process, alive ones
        self._oom_notifiers = []
        # Set by a hypervisor that pages this machine's memory (cmm.paging):
        # an object whose before(proc, addr, length, write) and after(...)
        # run around every process read and write, once per call (a byte
        # range), never per page.  None: nothing runs.
        self.access_hook = None
        self._counts = ffi.new("struct ke_mem_counts *")
        from .ksm import Ksm

        self.ksm = Ksm(self, compat=ksm_compat)

    @property
    def ke_machine(self):
        """The C core's machine (a cffi ``ke_machine *``) behind this Machine.

        Internal: for the core's own modules (process, ksm) and for tests
        that call ``_native.lib`` directly; not part of the public API.
        Contract:
          * ownership: the Machine owns it; ffi.gc frees it
            (ke_machine_free) when the Machine is collected.  The pointer
            is valid only while the caller holds a reference to the
            Machine: never keep it past the Machine, never free it;
          * the core is not thread safe: call lib with ``self.lock`` held;
          * every ``int`` a ``ke_*`` function returns (0 or -errno) goes
            through ``_native.check``, the one errno -> exception path.
        """
        return self._handle

    # --- processes -------------------------------------------------------

    def spawn(self, name=None):
        """A new process (an empty mm).  Returns the Process."""
        from .process import Process

        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a string")
        with self.lock:
            mm = ffi.new("uint32_t *")
            check(lib.ke_mm_new(self._handle, mm), "spawn")
            pid = next(self._pids)
            proc = Process(self, pid, mm[0], name or f"proc{pid}")
            self._processes[pid] = proc
            return proc

    @property
    def processes(self):
        """The live processes, in pid order."""
        with self.lock:
            return [self._processes[pid] for pid in sorted(self._processes)]

    def process(self, pid):
        """The live process with this pid (ProcessLookupError if none)."""
        int_arg("pid", pid)
        with self.lock:
            try:
                return self._processes[pid]
            except KeyError:
                raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}") from None

    def _forget(self, proc):
        self._processes.pop(proc.pid, None)

    # --- frame accounting --------------------------------------------------

    def _read_counts(self):
        check(lib.ke_machine_counts(self._handle, self._counts))
        return self._counts

    free_pages = _frame_count("free_frames", "Frames on the free list.")
    used_pages = _frame_count("used_frames", "Frames mapped by processes or holding KSM pages.")
    balloon_pages = _frame_count("balloon_frames", "Frames a balloon has taken.")

    @property
    def totalram_pages(self):
        """Managed pages: the frames, less what the balloon has taken away."""
        return self.nr_frames + self._managed_delta

    def adjust_managed_page_count(self, delta, pfn=None):
        """totalram_pages += delta, and the managed count of pfn's zone with
        it when a pfn is given (the kernel's adjust_managed_page_count(page,
        count)).  ValueError if a count would leave its range: below 0, or
        above the frames plus the balloon's pages (as in the kernel, a page
        may be given back and counted before the count of its loan has
        been taken: for that moment the count is one above the frames)."""
        int_arg("delta", delta)
        with self.lock:
            slack = self._read_counts().balloon_frames
            if not 0 <= self.nr_frames + self._managed_delta + delta <= self.nr_frames + slack:
                raise ValueError("managed page count out of range")
            if pfn is not None:
                zone = self.page_zone(pfn)
                size = self.zone_size(zone)
                if not 0 <= self._zone_managed[zone] + delta <= size + slack:
                    raise ValueError(f"managed page count of zone {zone} out of range")
                self._zone_managed[zone] += delta
            self._managed_delta += delta

    def _zone_arg(self, zone):
        """zone if it is a zone of this machine (TypeError, ValueError)."""
        if not 0 <= int_arg("zone", zone) < self.nr_zones:
            raise ValueError(f"no zone {zone}")
        return zone

    def zone_size(self, zone):
        """Frames in a zone (TypeError / ValueError as zone_managed_pages)."""
        zone = self._zone_arg(zone)
        return ((zone + 1) * self.nr_frames // self.nr_zones) - (zone * self.nr_frames // self.nr_zones)

    def zone_managed_pages(self, zone):
        """Managed pages of one zone (its frames less what the balloon took
        from it, as adjusted with a pfn)."""
        return self._zone_managed[self._zone_arg(zone)]

    def meminfo(self):
        """Frame accounting as a dict of ints (pages)."""
        with self.lock:
            c = self._read_counts()
            return {
                "nr_frames": c.nr_frames,
                "totalram_pages": self.totalram_pages,
                "free_pages": c.free_frames,
                "used_pages": c.used_frames,
                "balloon_pages": c.balloon_frames,
                "ksm_pages": c.ksm_frames,
                "released_frames": c.released_frames,
            }

    # --- the balloon's frames ---------------------------------------------

    def balloon_page_alloc(self):
        """Takes one free frame for a balloon and returns its pfn.

        Raises OSError(ENOMEM) when no frame is free; the OOM notifiers are
        not called (as __GFP_NORETRY)."""
        with self.lock:
            pfn = ffi.new("uint32_t *")
            check(lib.ke_balloon_frame_alloc(self._handle, pfn), "balloon_page_alloc")
            return pfn[0]

    def balloon_page_free(self, pfn):
        """Gives a balloon frame back to the free list (ValueError if pfn is
        not a balloon frame: the core's EINVAL)."""
        int_arg("pfn", pfn)
        with self.lock:
            # (a pfn outside uint32_t would not even reach the core)
            rc = lib.ke_balloon_frame_free(self._handle, pfn) if 0 <= pfn < self.nr_frames else -errno.EINVAL
            try:
                check(rc, "balloon_page_free")
            except OSError:
                raise ValueError(f"pfn {pfn} is not a balloon frame") from None

    def page_zone(self, pfn):
        """The zone (0 .. nr_zones-1) a frame belongs to."""
        if not 0 <= int_arg("pfn", pfn) < self.nr_frames:
            raise ValueError(f"pfn {pfn} out of range")
        # zone z holds [z*nr//nz, (z+1)*nr//nz): the largest z whose start
        # is <= pfn (pfn * nz // nr disagrees when nz does not divide nr)
        return ((pfn + 1) * self.nr_zones + self.nr_frames - 1) // self.nr_frames - 1

    # --- out of memory ------------------------------------------------------

    def register_oom_notifier(self, fn):
        """Adds fn() -> pages freed to the chain called when frames run out."""
        if not callable(fn):
            raise TypeError("an OOM notifier must be callable")
        with self.lock:
            self._oom_notifiers.append(fn)

    def unregister_oom_notifier(self, fn):
        with self.lock:
            try:
                self._oom_notifiers.remove(fn)
            except ValueError:
                raise ValueError("not a registered OOM notifier") from None

    def out_of_memory(self):
        """Runs the OOM notifier chain, as the machine does when a write
        finds no free frame; returns the pages the notifiers freed."""
        with self.lock:
            return self._out_of_memory()

    def _out_of_memory(self):
        """Calls every OOM notifier (machine lock held); returns pages freed."""
        freed = 0
        for fn in list(self._oom_notifiers):
            n = fn()
            if isinstance(n, int) and n > 0:
                freed += n
        return freed

    def _with_oom_retry(self, call, what):
        """Runs call(short) (a core call that may return -ENOMEM with
        short[0] frames missing and nothing changed); on ENOMEM runs the OOM
        notifiers and retries once, then raises OSError(ENOMEM)."""
        short = ffi.new("uint64_t *")
        rc = call(short)
        if rc == -errno.ENOMEM:
            self._out_of_memory()
            rc = call(short)
        check(rc, what)

    def _access(self, proc, addr, length, write, op):
        """Runs op(), a read or write of [addr, addr+length) by proc, between
        the access hook's before() and after() when one is set (machine
        lock held).  before() may raise to refuse the access: op() then
        does not run."""
        hook = self.access_hook
        if hook is None:
            return op()
        hook.before(proc, addr, length, write)
        try:
            return op()
        finally:
            hook.after(proc, addr, length, write)

    # --- debugging ------------------------------------------------------------

    def check(self):
        """Recomputes every counter and link of the core from scratch; raises
        AssertionError naming the first inconsistency (the core's EUCLEAN),
        OSError for any other failure (ENOMEM).  O(memory): for tests."""
        with self.lock:
            buf = ffi.new("char[]", 512)
            try:
                check(lib.ke_ksm_check(self._handle, buf, 512), "ke_ksm_check")
            except OSError as e:
                if e.errno != errno.EUCLEAN:
                    raise
                raise AssertionError(ffi.string(buf).decode() or str(e)) from None
            c = self._read_counts()
            assert c.free_frames + c.used_frames + c.balloon_frames == c.nr_frames

    def now_ms(self):
        return int(self._clock())

    def __repr__(self):
        c = self.meminfo()
        return (f"<Machine {self.nr_frames} frames: {c['free_pages']} free, "
                f"{c['used_pages']} used, {c['balloon_pages']} balloon, "
                f"{len(self._processes)} processes>")
