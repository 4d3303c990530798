"""PidSource: a live process's private anonymous memory.

/proc/PID/maps picks the areas (private, no file, readable: unnamed,
[heap], [stack], [anon:NAME]); /proc/PID/pagemap picks the pages ksmd
would see there (present; not the shared zero page when its pfn can be
read, i.e. as root); /proc/PID/mem gives their bytes.  Needs ptrace read
access to the process (the owner or root: PR_SET_MEMORY_MERGE is not
needed).  The pagemap is asked for the present and swapped regions (ioctl
PAGEMAP_SCAN, Linux 6.7+), so that huge sparse areas cost nothing; where
the kernel has no PAGEMAP_SCAN its entries are read and decoded 64 Ki at a
time, without a Python loop per page.

Pages unmapped between the plan and the read are counted lost
(info["lost_pages"]); a process that exits while read raises
ProcessLookupError; no read access raises EstimateError.
"""
import ctypes
import errno
import fcntl
import mmap
import os
import re

from ...machine import PAGE_SIZE
from .sources import EstimateError, Source, is_gone

PAGEMAP_BATCH = 1 << 16       # pagemap entries read at once (512 KiB)
PFN_MASK = (1 << 55) - 1      # pagemap: bits 0-54 the pfn
PM_PRESENT, PM_SWAP = 0x80, 0x40   # pagemap bits 63, 62 (in the top byte)


def parse_pid(text):
    """The process id in text, or EstimateError."""
    try:
        pid = int(text)
    except (TypeError, ValueError):
        raise EstimateError(f"--pid {text!r}: not a process id") from None
    if pid <= 0:
        raise EstimateError(f"--pid {pid}: not a process id")
    return pid


# pagemap decoding without a Python loop per page: one byte per page
# (bytes[j::8] is byte j of every 8-byte entry), mapped through
# translate tables to 0/1, combined as big integers.
_PRESENT = bytes(1 if b & PM_PRESENT else 0 for b in range(256))
_SWAPPED = bytes(1 if b & PM_SWAP and not b & PM_PRESENT else 0 for b in range(256))
_RUN = re.compile(rb"\x01+")

# ioctl(PAGEMAP_SCAN) on /proc/PID/pagemap (linux/fs.h, Linux 6.7): the
# regions of a range whose pages have the asked categories, coalesced.
PAGEMAP_SCAN = 0xC0606610            # _IOWR('f', 16, struct pm_scan_arg)
PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_PFNZERO = 1 << 3, 1 << 4, 1 << 5
SCAN_REGIONS = 4096                  # struct page_region entries per ioctl


class _PmScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


def _pagemap_scan(fd, start, end):
    """Yields (start, end, categories) for the regions of [start, end) that
    are present or swapped, in order.  Raises OSError (ENOTTY, EINVAL) where
    the kernel has no PAGEMAP_SCAN, before yielding anything."""
    vec = (ctypes.c_uint64 * (3 * SCAN_REGIONS))()
    arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), vec=ctypes.addressof(vec),
                     vec_len=SCAN_REGIONS, category_anyof_mask=PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                     return_mask=PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO)
    addr = start
    while addr < end:
        arg.start, arg.end, arg.walk_end = addr, end, 0
        n = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
        for k in range(n):
            yield vec[3 * k], vec[3 * k + 1], vec[3 * k + 2]
        if arg.walk_end <= addr:         # (cannot happen: the walk always advances)
            break
        addr = arg.walk_end


def zero_pfn():
    """The pfn of the shared zero page, as /proc/self/pagemap shows it
    (None where pfns are hidden: without CAP_SYS_ADMIN they read as 0)."""
    m = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m[0]                                    # a read fault maps the zero page
        c = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(c)
        del c
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            entry = int.from_bytes(os.pread(f.fileno(), 8, addr // PAGE_SIZE * 8), "little")
    except OSError:
        return None
    finally:
        m.close()
    pfn = entry & PFN_MASK
    return pfn if entry >> 63 and pfn else None


def _zero_tables(pfn):
    """Per byte j of an entry, a table giving 1 where that byte matches the
    zero page's pfn (byte 6 without bit 55, the soft-dirty bit)."""
    want = (pfn | (1 << 63)).to_bytes(8, "little")
    masks = [0xFF] * 6 + [0x7F]
    return [bytes(1 if b & masks[j] == want[j] else 0 for b in range(256)) for j in range(7)]


def _pagemap_masks(entries, zero_tables):
    """From raw pagemap entries: (load, zero_mapped, swapped), each one byte
    per page, 1 where the page is to be loaded / maps the zero page / is
    swapped out."""
    n = len(entries) // 8
    top = entries[7::8]
    present = int.from_bytes(top.translate(_PRESENT), "little")
    zero = 0
    if zero_tables is not None:
        zero = present
        for j, table in enumerate(zero_tables):
            zero &= int.from_bytes(entries[j::8].translate(table), "little")
    load = present & ~zero
    return (load.to_bytes(n, "little"), zero.to_bytes(n, "little"),
            top.translate(_SWAPPED))


def _proc_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _is_private_anonymous(perms, inode, path):
    """An area KSM would call anonymous: private, no file, readable."""
    if perms[3] != "p" or perms[0] != "r" or inode != "0":
        return False
    return path in ("", "[heap]") or path.startswith(("[stack", "[anon:"))


class PidSource(Source):
    """A live process's private anonymous memory (see the module doc)."""

    def __init__(self, pid, zero_pfn=None):
        super().__init__("pid", str(pid), f"pid {pid}")
        if pid == os.getpid():
            raise EstimateError(f"--pid {pid}: that is ksm-engine itself")
        if not os.path.isdir(f"/proc/{pid}"):
            raise EstimateError(f"--pid {pid}: no such process")
        comm = _proc_name(pid)
        self.name = f"pid {pid} ({comm})"
        self.pid = pid
        self._fd = None
        try:
            areas = self._areas(pid)
            if not areas:
                raise EstimateError(f"--pid {pid} ({comm}): no private anonymous memory "
                                    f"(a kernel thread, or a process that has exited?)")
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
            self._plan(pid, areas, zero_pfn)
        except PermissionError:
            self.close()
            raise EstimateError(
                f"--pid {pid} ({comm}): permission denied reading its memory; reading "
                f"another user's process takes root or ptrace rights "
                f"(see /proc/sys/kernel/yama/ptrace_scope)") from None
        except FileNotFoundError:
            self.close()
            raise EstimateError(f"--pid {pid}: no such process (it exited)") from None
        except ProcessLookupError:
            self.close()
            raise EstimateError(f"--pid {pid}: no such process (it exited)") from None
        except BaseException:
            self.close()
            raise
        if not self.extents:
            self.close()
            raise EstimateError(f"--pid {pid} ({comm}): no resident private anonymous pages")

    @staticmethod
    def _areas(pid):
        """[(start, end)] of the private anonymous areas, from /proc/PID/maps."""
        out = []
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 5:
                    continue
                path = parts[5].strip() if len(parts) > 5 else ""
                if _is_private_anonymous(parts[1], parts[4], path):
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    out.append((start, end))
        return out

    def _add_extent(self, a, nbytes):
        if self.extents and sum(self.extents[-1]) == a:
            a0, n0 = self.extents.pop()
            self.extents.append((a0, n0 + nbytes))
        else:
            self.extents.append((a, nbytes))

    def _plan(self, pid, areas, zero_pfn, use_scan=True):
        """The extents to load and the report's figures, from the pagemap:
        with PAGEMAP_SCAN where the kernel has it (and use_scan), else by
        decoding its entries.  Both give the same (tests/cli/test_estimate_pagemap.py)."""
        with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pm:
            if use_scan:
                try:
                    zero_mapped, swapped = self._plan_scan(pm.fileno(), areas, zero_pfn)
                except OSError as e:
                    if e.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    self.extents = []
                    use_scan = False
            if not use_scan:
                zero_mapped, swapped = self._plan_entries(pm, areas, zero_pfn)
        self.info = {"areas": len(areas),
                     "virtual_pages": sum(e - s for s, e in areas) // PAGE_SIZE,
                     "swapped_pages": swapped,
                     "zero_page_mappings": zero_mapped if zero_pfn else None}

    def _plan_scan(self, fd, areas, zero_pfn):
        zero_mapped = swapped = 0
        for start, end in areas:
            for a, b, cat in _pagemap_scan(fd, start, end):
                if cat & PAGE_IS_PRESENT:
                    if zero_pfn and cat & PAGE_IS_PFNZERO:
                        zero_mapped += (b - a) // PAGE_SIZE
                    else:
                        self._add_extent(a, b - a)
                elif cat & PAGE_IS_SWAPPED:
                    swapped += (b - a) // PAGE_SIZE
        return zero_mapped, swapped

    def _plan_entries(self, pm, areas, zero_pfn):
        tables = _zero_tables(zero_pfn) if zero_pfn else None
        zero_mapped = swapped = 0
        for start, end in areas:
            for base in range(start, end, PAGEMAP_BATCH * PAGE_SIZE):
                n = min(PAGEMAP_BATCH, (end - base) // PAGE_SIZE)
                entries = os.pread(pm.fileno(), n * 8, base // PAGE_SIZE * 8)
                load, zero, swap = _pagemap_masks(entries, tables)
                zero_mapped += zero.count(1)
                swapped += swap.count(1)
                for r in _RUN.finditer(load):
                    self._add_extent(base + r.start() * PAGE_SIZE, (r.end() - r.start()) * PAGE_SIZE)
        return zero_mapped, swapped

    def _read(self, view, pos):
        try:
            got = os.preadv(self._fd, [view], pos)
        except OSError as e:
            if is_gone(e):                 # unmapped since the plan
                return None
            raise
        if got <= 0:                       # the mm is gone: the process exited
            raise ProcessLookupError(errno.ESRCH, f"{self.name} exited while being read")
        return got

    def _short_read(self, pos, partial):
        return False                       # read again from pos: lost there if unmapped

    def close(self):
        super().close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
