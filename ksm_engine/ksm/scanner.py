"""The scan: the mm_slot list, the scan cursor, and ksm_do_scan().

Data structures (names as in mm/ksm.c):

  mm_slot   one per process registered with KSM (MADV_MERGEABLE, prctl
            merge-any, or fork of a registered process).  ``slots`` is the
            kernel's ksm_mm_head list, in scan order; a slot carries the
            process and its mergeable ranges, rebuilt whenever its areas
            change, as a C array ready for ke_ksm_scan_mm().
  cursor    ksm_scan: ``cursor`` is the index in ``slots`` of the mm being
            scanned, or None at the list head (between two full scans);
            ``address`` is where in that mm the next batch resumes.
  seqnr     full scans completed (the kernel's ksm_scan.seqnr, shown as
            full_scans); its low 8 bits tag unstable-tree insertions.

Python walks mms; ke_ksm_scan_mm() walks the pages of one mm in C.  The
rmap_items of each mm live in C beside its ptes, in address order; the
core frees the items of addresses that vanished as it passes them (and at
once on munmap, exit and MADV_UNMERGEABLE).
"""
import time

from .._native import check, ffi, lib


class MmSlot:
    """A process registered with KSM (the kernel's ksm_mm_slot)."""

    __slots__ = ("proc", "ranges", "nranges", "exited")

    def __init__(self, proc):
        self.proc = proc
        self.ranges = ffi.NULL  # struct ke_range[] of its mergeable areas
        self.nranges = 0
        self.exited = False     # its process exited; ksmd drops it on its way
        self.refresh()

    def refresh(self):
        """Rebuilds the mergeable ranges from the process's areas, merging
        neighbours (the scan treats consecutive areas as one walk)."""
        spans = []
        for a in self.proc.areas.values():
            if a.mergeable:
                if spans and spans[-1][1] == a.start:
                    spans[-1][1] = a.end
                else:
                    spans.append([a.start, a.end])
        self.nranges = len(spans)
        if spans:
            self.ranges = ffi.new("struct ke_range[]", [tuple(s) for s in spans])
        else:
            self.ranges = ffi.NULL


class Scanner:
    """mm_slot list + cursor + ksm_do_scan for one machine."""

    def __init__(self, ksm):
        self.ksm = ksm
        self.machine = ksm.machine
        self.slots = []          # ksm_mm_head list, scan order
        self.by_pid = {}         # pid -> MmSlot
        self.cursor = None       # index into slots, None: at the head
        self.address = 0         # resume address inside slots[cursor]
        self.seqnr = 0           # full scans done (full_scans)
        self.ksmd_cpu_ns = 0     # CPU time spent scanning, for the advisor
        self._out = ffi.new("struct ke_scan_out *")

    # --- registration ---------------------------------------------------------

    def enter(self, proc):
        """__ksm_enter: registers proc behind the cursor (at the tail while
        at the head or while run=2 unmerges).  No-op if registered."""
        if proc.pid in self.by_pid:
            return
        slot = MmSlot(proc)
        self.by_pid[proc.pid] = slot
        if self.cursor is None or self.ksm.run & 2 or self.cursor >= len(self.slots):
            self.slots.append(slot)
        else:
            self.slots.insert(self.cursor, slot)
            self.cursor += 1

    def exit(self, proc, had_rmap_items):
        """__ksm_exit: an exiting process's slot goes at once if it had no
        rmap_items and the cursor is not on it; otherwise, as in the kernel,
        it stays on the list, empty, until ksmd reaches it and drops it
        (which, for the last process, completes one more full scan)."""
        slot = self.by_pid.get(proc.pid)
        if slot is None:
            return
        under_cursor = self.cursor is not None and self.cursor < len(self.slots) \
            and self.slots[self.cursor] is slot
        if not had_rmap_items and not under_cursor:
            self.remove(proc)
            return
        slot.exited = True
        slot.ranges = ffi.NULL
        slot.nranges = 0

    def remove(self, proc):
        """Drops proc's slot (exit, or nothing mergeable left)."""
        slot = self.by_pid.pop(proc.pid, None)
        if slot is None:
            return
        i = self.slots.index(slot)
        del self.slots[i]
        if self.cursor is not None:
            if i < self.cursor:
                self.cursor -= 1
            elif i == self.cursor:
                self.address = 0  # the next slot starts from its beginning
            if not self.slots:
                self.cursor = None

    def refresh(self, proc):
        slot = self.by_pid.get(proc.pid)
        if slot is not None and not slot.exited:
            slot.refresh()

    def is_registered(self, proc):
        return proc.pid in self.by_pid

    # --- scanning ----------------------------------------------------------------

    def do_scan(self, budget):
        """ksm_do_scan(budget): gives up to ``budget`` pages to
        cmp_and_merge_page, mm by mm from the cursor.  Like the kernel, a
        batch ends early at the end of a full scan.  Returns pages scanned."""
        m = self.machine
        t0 = time.thread_time_ns()
        scanned = 0
        out = self._out
        try:
            while budget > 0 and self.slots:
                if self.cursor is None:
                    self._start_pass()
                if self.cursor >= len(self.slots):
                    self._end_pass()
                    break
                slot = self.slots[self.cursor]
                if not slot.exited:
                    rc = lib.ke_ksm_scan_mm(m.ke_machine, slot.proc.mm, slot.ranges, slot.nranges,
                                            self.address, budget, m.now_ms(), out)
                    scanned += out.scanned
                    budget -= out.scanned
                    check(rc, "ksm scan")
                    if not out.mm_done:
                        self.address = out.cursor
                        continue
                # End of this mm: one with nothing mergeable leaves the list.
                self.address = 0
                if slot.nranges == 0:
                    self.remove(slot.proc)
                    if not self.slots:
                        # it was the last: the cursor is back at the head,
                        # which ends the pass (seqnr++) as in the kernel
                        self._end_pass()
                        break
                else:
                    self.cursor += 1
            return scanned
        finally:
            self.ksmd_cpu_ns += time.thread_time_ns() - t0

    def _start_pass(self):
        self.ksm._advisor_start_scan()
        check(lib.ke_ksm_begin_pass(self.machine.ke_machine, self.seqnr & 0xFF))
        self.cursor = 0
        self.address = 0

    def _end_pass(self):
        self.cursor = None
        self.address = 0
        self.ksm._advisor_stop_scan()
        self.seqnr += 1

    def reset(self):
        """run=2: the cursor back at the head, full_scans back to 0."""
        self.cursor = None
        self.address = 0
        self.seqnr = 0
