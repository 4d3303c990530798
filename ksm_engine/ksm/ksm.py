"""class Ksm: the KSM of one machine (machine.ksm); the package docstring
(ksm_engine/ksm/__init__.py) says what lives where."""

from .._native import batches, check, ffi, lib
from ..ksm_stat import profit
from ..validate import int_arg
from . import advisor as _advisor
from .knobs import Knobs
from .ksmd import Ksmd
from .scanner import Scanner
from .sysfs import KsmSysfs

# Counters of today's kernel, in the order `ksm-engine scan` prints them.
COUNTERS_6X = (
    "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
    "pages_scanned", "pages_skipped", "full_scans", "stable_node_chains",
    "stable_node_dups", "ksm_zero_pages", "general_profit",
)
# The counters of the 2009 patch (KSM as first merged, Linux 2.6.32).
COUNTERS_2009 = ("pages_shared", "kernel_pages_allocated")


class Ksm:
    """The KSM of one machine.  ``compat="2009"`` gives the 2009 behaviour
    and sysfs interface; the default is today's kernel.

    The public API is the knobs and counters (``sysfs``, ``stats``), the
    scans (``scan``, ``full_scan``), ksmd (``start``, ``stop``) and the
    inspection views.  The methods with a leading underscore are the
    engine's internal hooks, called with the machine lock held by the
    core's own modules and nothing else: ``_mm_*`` and ``_unmerge_range``
    by process.py (madvise, prctl, mmap, fork, exit), ``_store_knob`` and
    ``_advisor_mode_text`` by sysfs.py, ``_apply_config`` and
    ``_unmerge_all`` by knobs.py, ``_advisor_*_scan`` by scanner.py."""

    def __init__(self, machine, compat=None):
        self.machine = machine
        self.compat_2009 = compat == "2009"
        self.knobs = Knobs(self)
        self.scanner = Scanner(self)
        self.advisor = _advisor.ScanTimeAdvisor()
        self.sysfs = KsmSysfs(self)
        self._ksmd = Ksmd(self)
        self._cstats = ffi.new("struct ke_ksm_stats *")
        self._apply_config()

    # --- knobs ---------------------------------------------------------------

    @property
    def run(self):
        return self.knobs["run"]

    def knob_names(self):
        return self.knobs.names()

    def counter_names(self):
        return COUNTERS_2009 if self.compat_2009 else COUNTERS_6X

    def _store_knob(self, name, text):
        """A sysfs write (see knobs.Knobs.store)."""
        with self.machine.lock:
            self.knobs.store(name, text)
        self._ksmd.wake()

    def _advisor_mode_text(self):
        mode = self.knobs["advisor_mode"]
        return "[none] scan-time" if mode == "none" else "none [scan-time]"

    def _apply_config(self):
        """Hands the knobs the per-page path reads to the C core."""
        k = self.knobs
        cfg = ffi.new("struct ke_ksm_config *")
        cfg.max_page_sharing = k.get("max_page_sharing", 256)
        cfg.use_zero_pages = int(bool(k.get("use_zero_pages", 0)))
        cfg.smart_scan = int(bool(k.get("smart_scan", 0)))
        cfg.compat_2009 = int(self.compat_2009)
        cfg.max_kernel_pages = k.get("max_kernel_pages", 0)
        cfg.prune_millisecs = k.get("stable_node_chains_prune_millisecs", 2000)
        check(lib.ke_ksm_configure(self.machine.ke_machine, cfg))

    # --- counters --------------------------------------------------------------

    def _raw(self):
        check(lib.ke_ksm_get_stats(self.machine.ke_machine, self._cstats))
        return self._cstats

    @property
    def stats(self):
        """Every counter of the sysfs directory as an int, plus ``rmap_items``
        (the kernel's internal ksm_rmap_items, which general_profit uses)."""
        with self.machine.lock:
            s = self._raw()
            if self.compat_2009:
                return {
                    "pages_shared": s.pages_sharing,
                    "kernel_pages_allocated": s.pages_shared,
                    "full_scans": self.scanner.seqnr,
                    "pages_scanned": s.pages_scanned,
                    "rmap_items": s.rmap_items,
                }
            volatile = s.rmap_items - s.pages_shared - s.pages_sharing - s.pages_unshared
            return {
                "pages_shared": s.pages_shared,
                "pages_sharing": s.pages_sharing,
                "pages_unshared": s.pages_unshared,
                "pages_volatile": max(volatile, 0),
                "pages_scanned": s.pages_scanned,
                "pages_skipped": s.pages_skipped,
                "full_scans": self.scanner.seqnr,
                "stable_node_chains": s.stable_node_chains,
                "stable_node_dups": s.stable_node_dups,
                "ksm_zero_pages": s.ksm_zero_pages,
                "general_profit": profit(s.pages_sharing, s.ksm_zero_pages, s.rmap_items),
                "rmap_items": s.rmap_items,
            }

    def stable_nodes(self):
        """The stable tree's nodes as dicts: node, kind ("plain", "chain" or
        "dup"), kpfn (the KSM frame; None for a chain), rmap_hlist_len
        (rmap_items on it; for a chain, its number of dups), chain (a dup's
        chain).  For inspection, not for hot paths."""
        kinds = {1: "plain", 2: "chain", 3: "dup"}
        with self.machine.lock:
            ke = self.machine.ke_machine
            return [{"node": o.node, "kind": kinds[o.kind], "kpfn": None if o.kind == 2 else o.kpfn,
                     "rmap_hlist_len": o.rmap_hlist_len, "chain": o.chain or None}
                    for o in batches(lambda *a: lib.ke_ksm_stable_nodes(ke, *a),
                                     "struct ke_stable_info", "uint32_t")]

    def perf_counters(self):
        """Work counters of the core: hashes done and avoided, memcmps, tree
        nodes read ahead of the scan (prewalk_steps)."""
        with self.machine.lock:
            s = self._raw()
            return {"checksums": s.checksums, "checksums_avoided": s.checksums_avoided,
                    "memcmps": s.memcmps, "prewalk_steps": s.prewalk_steps,
                    "ksm_pages": s.ksm_pages}

    # --- scanning ----------------------------------------------------------------

    def scan(self, n):
        """One ksm_do_scan(n) batch, synchronously: gives up to n pages to
        cmp_and_merge_page (fewer at the end of a full scan).  Returns the
        number scanned."""
        n = min(int_arg("n", n, min=0), 0xFFFFFFFF)
        with self.machine.lock:
            return self.scanner.do_scan(n)

    def full_scan(self, passes=1):
        """Scans until ``passes`` more full scans have completed; returns
        pages scanned.  Returns early if no process is registered.
        ``passes`` is an int >= 0 (TypeError, ValueError otherwise)."""
        passes = int_arg("passes", passes, min=0)
        done = 0
        with self.machine.lock:
            target = self.scanner.seqnr + passes
            while self.scanner.seqnr < target and self.scanner.slots:
                done += self.scanner.do_scan(1 << 30)
        return done

    def start(self, clock=None):
        """Starts ksmd (and writes run=1 if run is 0): a real thread, or
        on ``clock`` (a ksm_engine.clock.SimClock) wake-ups in simulated
        time, the first batch at once."""
        with self.machine.lock:
            if self.knobs["run"] == 0:
                self.knobs.store("run", "1")
        self._ksmd.start(clock)

    def stop(self, timeout=10.0):
        """Stops the ksmd thread and waits for it (run is left as it is)."""
        self._ksmd.stop(timeout)

    @property
    def ksmd_running(self):
        return self._ksmd.running

    @property
    def ksmd_hooks(self):
        """hook(ksm, scanned) callables run after each of ksmd's batches."""
        return self._ksmd.hooks

    # --- advisor (called by the scanner at pass boundaries) --------------------

    def _advisor_start_scan(self):
        if self.knobs.get("advisor_mode") == "scan-time":
            self.advisor.start_scan(self.machine.now_ms(), self.scanner.ksmd_cpu_ns)

    def _advisor_stop_scan(self):
        if self.knobs.get("advisor_mode") == "scan-time":
            k = self.knobs
            k.set_raw("pages_to_scan", self.advisor.stop_scan(
                self.machine.now_ms(), self.scanner.ksmd_cpu_ns, k["pages_to_scan"],
                k["advisor_target_scan_time"], k["advisor_max_cpu"],
                k["advisor_max_pages_to_scan"]))

    # --- the process side ------------------------------------------------------

    def is_registered(self, proc):
        return self.scanner.is_registered(proc)

    def _mm_enter(self, proc):
        self.scanner.enter(proc)
        self._ksmd.wake()

    def _mm_areas_changed(self, proc):
        self.scanner.refresh(proc)

    def _mm_fork(self, parent, child):
        if self.scanner.is_registered(parent):
            self.scanner.enter(child)

    def _mm_exit(self, proc):
        """Called before the process's mm is destroyed."""
        self.scanner.exit(proc, had_rmap_items=proc._mm_stat().ksm_rmap_items > 0)

    def _unmerge_range(self, proc, start, end):
        """Breaks KSM sharing on [start, end) of proc and frees its
        rmap_items there (MADV_UNMERGEABLE, prctl 0).  ENOMEM if frames run
        out even after the OOM notifiers: nothing of the range changed."""
        m = self.machine
        m._with_oom_retry(lambda short: lib.ke_mm_unmerge(m.ke_machine, proc.mm, start, end - start, short),
                          "unmerge")
        check(lib.ke_mm_drop_rmap_items(m.ke_machine, proc.mm, start, end - start))

    def _unmerge_all(self):
        """run=2 (unmerge_and_remove_all_rmap_items): breaks every KSM page
        in the VM_MERGEABLE areas of the registered processes and frees
        every rmap_item; exited processes leave the list, the others stay;
        full_scans back to 0.  As in the kernel, a KSM page still mapped
        elsewhere (a fork child's area that is not mergeable) stays a KSM
        page, its stable node kept, with no rmap_item on it."""
        from ..process import TASK_SIZE

        m = self.machine
        for slot in list(self.scanner.slots):
            if slot.exited:
                self.scanner.remove(slot.proc)
                continue
            proc = slot.proc
            for a in list(proc.areas.values()):
                if a.mergeable:
                    m._with_oom_retry(
                        lambda short, a=a, mm=proc.mm: lib.ke_mm_unmerge(m.ke_machine, mm, a.start,
                                                                         a.end - a.start, short),
                        "unmerge")
            check(lib.ke_mm_drop_rmap_items(m.ke_machine, proc.mm, 0, TASK_SIZE))
        check(lib.ke_ksm_remove_all(m.ke_machine), "run=2")
        self.scanner.reset()
