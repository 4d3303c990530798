"""Synthetic processes: an mm with areas (VMAs) over the machine's frames.

A Process has
  * ``mm``: the id of its page table in the C core;
  * ``areas``: its VMAs, a SortedDict start -> Area, non-overlapping, every
    one anonymous and private; an Area carries VM_MERGEABLE when KSM may
    merge its pages (madvise MADV_MERGEABLE, or prctl PR_SET_MEMORY_MERGE);
  * ``merge_any``: the mm's MMF_VM_MERGE_ANY flag (prctl), inherited on fork.

Python checks every address against the areas (SegmentationFault, errno
EFAULT, and nothing changed when any byte falls outside them) and hands
whole ranges to C; no Python code runs per page.
"""
import errno

from sortedcontainers import SortedDict

from ._native import PAGE_SIZE, batches, check, ffi, lib
from .buffers import as_bytes, cbuffer, new_bytes, writable_cbuffer
from .errors import ProcessExited, SegmentationFault
from .ksm_stat import ksm_stat, ksm_stat_text
from .validate import int_arg

PAGE_MASK = PAGE_SIZE - 1
# Where mmap places areas, and the top of the address space (vpn < 2^32).
MMAP_BASE = 0x10000000
TASK_SIZE = (lib.KE_MAX_VPN + 1) * PAGE_SIZE

VM_MERGEABLE = 0x80000000
# Most pages one Process.ptes() call describes (64 GiB of address space).
PTES_MAX = 1 << 24

MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
PR_SET_MEMORY_MERGE = 67
PR_GET_MEMORY_MERGE = 68


class Area:
    """One VMA: [start, end) with its flags."""

    __slots__ = ("start", "end", "flags")

    def __init__(self, start, end, flags=0):
        self.start = start  # first byte, page aligned
        self.end = end      # one past the last byte, page aligned
        self.flags = flags  # VM_MERGEABLE or 0

    @property
    def mergeable(self):
        return bool(self.flags & VM_MERGEABLE)

    def __repr__(self):
        return f"<Area {self.start:#x}-{self.end:#x}{' mergeable' if self.mergeable else ''}>"


class Process:
    """A synthetic process.  Made by Machine.spawn() or Process.fork()."""

    def __init__(self, machine, pid, mm, name):
        self.machine = machine
        self.pid = pid
        self.name = name
        self.mm = mm
        self.areas = SortedDict()
        self.merge_any = False
        self.alive = True
        self._next_addr = MMAP_BASE
        self._stat = ffi.new("struct ke_mm_stat *")

    def __repr__(self):
        state = "" if self.alive else " exited"
        return f"<Process {self.name!r} pid {self.pid}{state}>"

    # --- helpers -------------------------------------------------------------

    def _check_alive(self):
        if not self.alive:
            raise ProcessExited(self)

    def _check_covered(self, addr, length):
        """SegmentationFault unless every byte of [addr, addr+length) is in an area."""
        end = addr + length
        if addr < 0 or end > TASK_SIZE:
            raise SegmentationFault(f"address {addr:#x}+{length} outside the address space")
        pos = addr
        while pos < end:
            a = self.area_at(pos)
            if a is None:
                raise SegmentationFault(f"address {pos:#x} is not mapped in {self.name}")
            pos = a.end

    def area_at(self, addr):
        """The area holding addr, or None."""
        i = self.areas.bisect_right(addr) - 1
        if i < 0:
            return None
        a = self.areas.peekitem(i)[1]
        return a if a.start <= addr < a.end else None

    def _split(self, addr):
        """Splits the area holding addr at addr (a page boundary)."""
        a = self.area_at(addr)
        if a is not None and a.start < addr:
            self.areas[addr] = Area(addr, a.end, a.flags)
            a.end = addr

    def _areas_in(self, start, end):
        """Areas overlapping [start, end), in order (splitting at the ends)."""
        self._split(start)
        self._split(end)
        return [self.areas[s] for s in self.areas.irange(start, end, inclusive=(True, False))]

    def _range_args(self, addr, length, what):
        addr = int_arg("addr", addr)
        length = int_arg("length", length)
        if addr & PAGE_MASK or addr < 0:
            raise OSError(errno.EINVAL, f"{what}: address {addr:#x} is not page aligned")
        if length < 0 or length & PAGE_MASK or addr + length > TASK_SIZE:
            raise OSError(errno.EINVAL, f"{what}: bad length {length} (a multiple of {PAGE_SIZE} "
                                        f"within the address space)")
        return addr, length

    # --- memory map ------------------------------------------------------------

    def mmap(self, length, addr=None):
        """Maps an anonymous private area of ``length`` bytes (a multiple of
        PAGE_SIZE) and returns its address.  With ``addr`` the area goes
        exactly there (EEXIST if that overlaps an area, as MAP_FIXED_NOREPLACE)."""
        length = int_arg("length", length)
        with self.machine.lock:
            self._check_alive()
            if length <= 0 or length & PAGE_MASK:
                raise OSError(errno.EINVAL, f"mmap: length {length} is not a positive multiple of {PAGE_SIZE}")
            if addr is None:
                addr = self._next_addr
                if addr + length > TASK_SIZE:
                    addr = self._find_gap(length)
                else:
                    self._next_addr = addr + length + PAGE_SIZE  # a guard gap
            else:
                addr = int_arg("addr", addr)
                if addr & PAGE_MASK or addr < 0:
                    raise OSError(errno.EINVAL, f"mmap: bad address {addr:#x}")
                if addr + length > TASK_SIZE:  # as get_unmapped_area
                    raise OSError(errno.ENOMEM, f"mmap: {addr:#x}+{length} beyond the address space")
                if any(True for _ in self._overlapping(addr, addr + length)):
                    raise OSError(errno.EEXIST, f"mmap: {addr:#x}+{length} overlaps an area")
                self._next_addr = max(self._next_addr, addr + length + PAGE_SIZE)
            area = Area(addr, addr + length, VM_MERGEABLE if self.merge_any else 0)
            self.areas[addr] = area
            if self.merge_any:
                self.machine.ksm._mm_enter(self)
            self._areas_changed()
            return addr

    def _find_gap(self, length):
        """The lowest address >= MMAP_BASE where ``length`` bytes fit
        between the areas, with a guard page after any area below (first
        fit, once the bump pointer has reached the top: an area mapped at
        a fixed high address must not use up the address space).
        OSError(ENOMEM) when no gap is big enough."""
        pos = MMAP_BASE
        for a in self.areas.values():
            if a.end + PAGE_SIZE <= pos:
                continue
            if a.start >= pos + length:
                return pos
            pos = max(pos, a.end + PAGE_SIZE)
        if pos + length <= TASK_SIZE:
            return pos
        raise OSError(errno.ENOMEM, "mmap: address space exhausted")

    def _overlapping(self, start, end):
        i = max(self.areas.bisect_right(start) - 1, 0)
        for s in self.areas.islice(i):
            a = self.areas[s]
            if a.start >= end:
                break
            if a.end > start:
                yield a

    def munmap(self, addr, length):
        """Unmaps [addr, addr+length): frees its frames and KSM's rmap_items.
        Unmapped parts of the range are not an error (as Linux); an address
        or length that is not page aligned, or zero or negative length, is
        OSError(EINVAL)."""
        with self.machine.lock:
            self._check_alive()
            addr, length = self._range_args(addr, length, "munmap")
            if length == 0:
                raise OSError(errno.EINVAL, "munmap: length 0")
            for a in self._areas_in(addr, addr + length):
                del self.areas[a.start]
            check(lib.ke_mm_unmap(self.machine.ke_machine, self.mm, addr, length), "munmap")
            self._areas_changed()

    def _areas_changed(self):
        self.machine.ksm._mm_areas_changed(self)

    # --- access --------------------------------------------------------------

    def write(self, addr, data):
        """Writes ``data`` (any bytes-like object) at addr, copying shared
        pages first.  All or nothing: SegmentationFault if any byte is
        outside the areas, OSError(ENOMEM) if frames run out even after the
        OOM notifiers ran."""
        addr = int_arg("addr", addr)
        buf = cbuffer(data)
        n = len(buf)
        self._store(addr, n, "write", lambda ke, short: lib.ke_mm_write(ke, self.mm, addr, buf, n, short))

    def fill(self, addr, byte, length):
        """Writes ``length`` copies of ``byte`` (0-255) at addr (like memset)."""
        addr = int_arg("addr", addr)
        byte = int_arg("byte", byte)
        length = int_arg("length", length)
        if not 0 <= byte <= 255:
            raise ValueError(f"byte must be 0..255, got {byte}")
        if length < 0:
            raise ValueError(f"length must not be negative, got {length}")
        self._store(addr, length, "fill", lambda ke, short: lib.ke_mm_fill(ke, self.mm, addr, byte, length, short))

    def _store(self, addr, length, what, call):
        """Runs ``call(ke_machine, short)``, a core write of [addr,
        addr+length) that may return -ENOMEM with nothing changed, with the
        OOM notifiers' one retry (Machine._with_oom_retry); nothing for
        length 0, SegmentationFault unless the whole range is mapped."""
        m = self.machine
        with m.lock:
            self._check_alive()
            if length == 0:
                return
            self._check_covered(addr, length)
            m._access(self, addr, length, True,
                      lambda: m._with_oom_retry(lambda short: call(m.ke_machine, short), what))

    def read(self, addr, n):
        """Reads n bytes at addr; pages never written read as zeros."""
        addr = int_arg("addr", addr)
        n = int_arg("n", n)
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        with self.machine.lock:
            self._check_alive()
            if n == 0:
                return b""
            self._check_covered(addr, n)
            out = new_bytes(n)
            self.machine._access(self, addr, n, False, lambda: check(
                lib.ke_mm_read(self.machine.ke_machine, self.mm, addr, ffi.from_buffer(out), n), "read"))
            return as_bytes(out)

    def readinto(self, addr, buf):
        """Reads len(buf) bytes at addr into a writable buffer; returns the count."""
        addr = int_arg("addr", addr)
        cbuf = writable_cbuffer(buf)
        n = len(cbuf)
        with self.machine.lock:
            self._check_alive()
            if n:
                self._check_covered(addr, n)
                self.machine._access(self, addr, n, False, lambda: check(
                    lib.ke_mm_read(self.machine.ke_machine, self.mm, addr, cbuf, n), "read"))
            return n

    # --- fork and exit -----------------------------------------------------------

    def fork(self, name=None):
        """A child sharing every page copy-on-write, with the same areas,
        merge_any flag, and (if this mm is registered with KSM) registered
        with KSM too, behind the scan cursor.  The child starts with no
        rmap_items and no merging pages of its own."""
        m = self.machine
        with m.lock:
            self._check_alive()
            child = m.spawn(name or f"{self.name}-child")
            try:
                check(lib.ke_mm_fork(m.ke_machine, self.mm, child.mm), "fork")
            except BaseException:
                child.exit()
                raise
            for s, a in self.areas.items():
                child.areas[s] = Area(a.start, a.end, a.flags)
            child.merge_any = self.merge_any
            child._next_addr = self._next_addr
            m.ksm._mm_fork(self, child)
            return child

    def exit(self):
        """Ends the process: every frame it alone used is freed."""
        m = self.machine
        with m.lock:
            self._check_alive()
            m.ksm._mm_exit(self)
            check(lib.ke_mm_destroy(m.ke_machine, self.mm), "exit")
            self.alive = False
            self.areas.clear()
            m._forget(self)

    # --- KSM ---------------------------------------------------------------------

    def madvise(self, addr, length, advice):
        """madvise(2) for MADV_MERGEABLE and MADV_UNMERGEABLE.

        EINVAL for an unaligned addr, a negative length or another advice;
        ENOMEM if part of the range is not mapped (the mapped parts are still
        done, as Linux does)."""
        addr = int_arg("addr", addr)
        length = int_arg("length", length)
        advice = int_arg("advice", advice)
        with self.machine.lock:
            self._check_alive()
            if advice not in (MADV_MERGEABLE, MADV_UNMERGEABLE):
                raise OSError(errno.EINVAL, f"madvise: unsupported advice {advice}")
            if addr & PAGE_MASK or addr < 0:
                raise OSError(errno.EINVAL, f"madvise: address {addr:#x} is not page aligned")
            if length < 0:
                raise OSError(errno.EINVAL, f"madvise: negative length {length}")
            length = (length + PAGE_MASK) & ~PAGE_MASK
            if addr + length >= 1 << 64:
                raise OSError(errno.EINVAL, "madvise: the range wraps around")
            # beyond the address space is simply not mapped: ENOMEM below
            if length == 0:
                return 0
            end = addr + length
            areas = self._areas_in(addr, end)
            covered = sum(a.end - a.start for a in areas)
            ksm = self.machine.ksm
            try:
                if advice == MADV_MERGEABLE:
                    for a in areas:
                        a.flags |= VM_MERGEABLE
                    if areas:
                        ksm._mm_enter(self)
                else:
                    # area by area, as the kernel: an ENOMEM leaves the areas
                    # before the failing one unmerged and not VM_MERGEABLE
                    for a in areas:
                        if a.mergeable:
                            ksm._unmerge_range(self, a.start, a.end)
                            a.flags &= ~VM_MERGEABLE
            finally:
                self._areas_changed()  # the scan must see the flags as they are
            if covered != length:
                raise OSError(errno.ENOMEM, "madvise: part of the range is not mapped")
            return 0

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0):
        """prctl(2) for PR_SET_MEMORY_MERGE and PR_GET_MEMORY_MERGE."""
        for name, v in (("option", option), ("arg2", arg2), ("arg3", arg3), ("arg4", arg4), ("arg5", arg5)):
            int_arg(name, v)
        with self.machine.lock:
            self._check_alive()
            ksm = self.machine.ksm
            if option == PR_SET_MEMORY_MERGE:
                if arg3 or arg4 or arg5:
                    raise OSError(errno.EINVAL, "prctl: unused arguments must be 0")
                if arg2:
                    if not self.merge_any:
                        self.merge_any = True
                        for a in self.areas.values():
                            a.flags |= VM_MERGEABLE
                        ksm._mm_enter(self)
                else:
                    if self.merge_any:
                        try:
                            for a in self.areas.values():
                                if a.mergeable:
                                    ksm._unmerge_range(self, a.start, a.end)
                                    a.flags &= ~VM_MERGEABLE
                        except OSError:
                            # ksm_disable_merge_any(): if unmerging fails the
                            # whole call fails and every area stays mergeable
                            for a in self.areas.values():
                                a.flags |= VM_MERGEABLE
                            self._areas_changed()
                            raise
                        self.merge_any = False
                self._areas_changed()
                return 0
            if option == PR_GET_MEMORY_MERGE:
                if arg2 or arg3 or arg4 or arg5:
                    raise OSError(errno.EINVAL, "prctl: unused arguments must be 0")
                return int(self.merge_any)
            raise OSError(errno.EINVAL, f"prctl: unsupported option {option}")

    def _mm_stat(self):
        check(lib.ke_mm_stat(self.machine.ke_machine, self.mm, self._stat))
        return self._stat

    @property
    def rss_pages(self):
        """Pages of this process mapped to frames (shared ones included)."""
        with self.machine.lock:
            if not self.alive:
                return 0
            return self._mm_stat().rss_pages

    @property
    def ksm_stat(self):
        """/proc/PID/ksm_stat as a dict (counters as ints, flags as YesNo)."""
        with self.machine.lock:
            self._check_alive()
            # ksm_mergeable is ksm_process_mergeable(): some VMA is
            # VM_MERGEABLE now (an mm stays on KSM's list until ksmd next
            # passes it)
            return ksm_stat(self._mm_stat(), self.merge_any,
                            any(a.flags & VM_MERGEABLE for a in self.areas.values()))

    def ksm_stat_text(self):
        """/proc/PID/ksm_stat exactly as the kernel prints it."""
        return ksm_stat_text(self.ksm_stat)

    def rmap_items(self):
        """KSM's rmap_items of this process in address order, as dicts:
        address, state ("volatile", "unstable" or "stable"), stable_node,
        oldchecksum, checksum_valid, age, remaining_skips, seqnr.  For
        inspection; it copies every item, so not for hot paths."""
        states = ("volatile", "unstable", "stable")
        with self.machine.lock:
            self._check_alive()
            ke = self.machine.ke_machine
            return [{"address": o.address, "state": states[o.state], "stable_node": o.stable_node,
                     "oldchecksum": o.oldchecksum, "checksum_valid": bool(o.checksum_valid),
                     "age": o.age, "remaining_skips": o.remaining_skips, "seqnr": o.seqnr}
                    for o in batches(lambda *a: lib.ke_mm_rmap_items(ke, self.mm, *a),
                                     "struct ke_rmap_info", "uint64_t")]

    def ptes(self, addr, npages):
        """(pfns, flags) of npages pages from addr: for tests and inspection.
        flags per page: 0 none, 1 present, 3 present KSM, 4 KSM zero page."""
        addr = int_arg("addr", addr)
        npages = int_arg("npages", npages)
        if addr & PAGE_MASK or addr < 0 or npages < 0 or addr + npages * PAGE_SIZE > TASK_SIZE:
            raise OSError(errno.EINVAL, "ptes: bad range")
        if npages > PTES_MAX:  # the lists alone would take tens of GiB
            raise OSError(errno.EINVAL, f"ptes: at most {PTES_MAX} pages a call, ask in parts")
        with self.machine.lock:
            self._check_alive()
            pfns = ffi.new("uint32_t[]", max(npages, 1))
            flags = ffi.new("uint8_t[]", max(npages, 1))
            check(lib.ke_mm_ptes(self.machine.ke_machine, self.mm, addr, npages, pfns, flags))
            return list(pfns)[:npages], list(flags)[:npages]
