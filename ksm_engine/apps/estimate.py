"""Estimates of KSM on real memory: what it would merge, and how fast.

Sources (one process of the engine's machine each, in the order given):

  PidSource    the private anonymous areas of a live process: /proc/PID/maps
               picks the areas (private, no file, readable: unnamed, [heap],
               [stack], [anon:NAME]); /proc/PID/pagemap picks the pages
               ksmd would see there (present; not the shared zero page when
               its pfn can be read, i.e. as root); /proc/PID/mem gives
               their bytes.  Needs ptrace read access to the process.  The
               pagemap is asked for the present and swapped regions
               (ioctl PAGEMAP_SCAN, Linux 6.7+), so that huge sparse areas
               cost nothing; where the kernel has no PAGEMAP_SCAN its
               entries are read and decoded 64 Ki at a time.
  CoreSource   an ELF core file: its PT_LOAD segments with contents, less
               those of file mappings (the NT_FILE note), the vdso (NT_AUXV's
               AT_SYSINFO_EHDR), kernel addresses (vsyscall) and unreadable
               ones, and less the holes of a sparse file (the kernel leaves
               pages it did not dump, never touched, as holes).  Read with
               pyelftools.
  ImageSource  a raw memory image (a multiple of the page size), all of it.

Each source is first planned (extents: (offset, bytes) ranges of what will
be loaded, in order, and figures for the report), without reading any
content; then the machine is made to fit and every source is streamed into
its process's one MERGEABLE area, CHUNK_BYTES at a time: files through a
read-only mmap (page cache straight into the arena), a live process
through one reusable buffer.  No content is held twice.

Then KSM runs twice on the same memory, by the settle rule of
ksm_engine.settle: with use_zero_pages=0, then (run=2 unmerges everything)
with use_zero_pages=1.  The second run's ksm_zero_pages is the number of
zero-filled pages.  Each run reports the kernel's counters, the saving
(pages_sharing + ksm_zero_pages frames: their bytes, and the percent of the
memory loaded), general_profit, and a prediction (predict()):

  full scans needed  N = the first full scan after which the convergence
                     counters hold their settled values
  pages scanned      P = sum over those N scans of the pages each scanned
                     (smart_scan's skips excluded, as in the kernel)
  batches            B = sum over them of floor(pages scanned / pages_to_scan)
                     + 1: ksm_do_scan ends a batch at the end of a full scan,
                     and a scan whose last page fills a batch needs one more
                     batch, scanning nothing, to reach that end
  time to settle     B x sleep_millisecs + CPU
  CPU                P x the engine's measured cost per scanned page
"""
import ctypes
import errno
import fcntl
import mmap
import os
import re
from dataclasses import dataclass, field

from .demo import KnobError, apply_knobs, check_fits
from ..images import ImageError, open_image
from ..machine import PAGE_SIZE, Machine
from ..process import MADV_MERGEABLE
from ..settle import DEFAULT_MAX_FULL_SCANS, settle

CHUNK_BYTES = 64 << 20        # bytes streamed per write into the machine
PAGEMAP_BATCH = 1 << 16       # pagemap entries read at once (512 KiB)
HEADROOM = 16 << 20           # machine memory beyond what is loaded
PFN_MASK = (1 << 55) - 1      # pagemap: bits 0-54 the pfn
PM_PRESENT, PM_SWAP = 0x80, 0x40   # pagemap bits 63, 62 (in the top byte)
PF_R = 4                      # ELF segment flag: readable
AT_SYSINFO_EHDR = 33          # auxv: the vdso's address
# Knobs the estimate sets itself.
RESERVED_KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "use_zero_pages", "advisor_mode")
# Counters each run reports.
REPORTED = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "rmap_items",
            "general_profit")


class EstimateError(ValueError):
    """A source that cannot be used; the message names it and says why."""


def _pages(nbytes):
    return (nbytes + PAGE_SIZE - 1) // PAGE_SIZE


# --- sources ------------------------------------------------------------------

@dataclass
class Source:
    """One input: what to load (extents) and what the report says of it.

    kind     "pid", "core" or "image"
    spec     what the user gave (the pid or path, as text)
    name     a label for the report ("pid 42 (python3)", a path)
    extents  [(offset, nbytes)]: ranges of the source to load, in order
    info     figures for the report (areas, segments, skipped pages...)
    """
    kind: str
    spec: str
    name: str
    extents: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def pages(self):
        """Pages this source loads (each extent rounded up to whole pages)."""
        return sum(_pages(n) for _, n in self.extents)

    @property
    def loaded_pages(self):
        """Pages actually loaded: a live process may unmap some meanwhile."""
        return self.pages - self.info.get("lost_pages", 0)

    def chunks(self, offset, nbytes, chunk_bytes):
        """Yields (position in the range, memoryview) pieces of the
        source's bytes [offset, offset+nbytes), at most chunk_bytes each,
        each valid until the next is asked for.  A live process may skip
        pages (unmapped meanwhile: counted in info["lost_pages"])."""
        raise NotImplementedError

    def close(self):
        pass


class _FileSource(Source):
    """A source read through a read-only mmap of a file."""
    _map = None

    def _open_map(self, path, size):
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)

    def chunks(self, offset, nbytes, chunk_bytes):
        view = memoryview(self._map)
        try:
            for pos in range(offset, offset + nbytes, chunk_bytes):
                yield pos - offset, view[pos:min(pos + chunk_bytes, offset + nbytes)]
        finally:
            view.release()

    def close(self):
        if self._map is not None:
            self._map.close()
            self._map = None


class ImageSource(_FileSource):
    """A raw memory image: every page of it."""

    def __init__(self, path):
        path = os.fspath(path)
        super().__init__("image", path, path)
        try:
            self._map = open_image(path)
        except ImageError as e:
            raise EstimateError(str(e)) from None
        self.extents = [(0, len(self._map))]
        self.info = {"bytes": len(self._map)}


def _check_regular_file(path):
    """Size of a non-empty regular file, or EstimateError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise EstimateError(f"{path}: no such file") from None
    except OSError as e:
        raise EstimateError(f"{path}: {e.strerror}") from None
    if os.path.isdir(path):
        raise EstimateError(f"{path}: is a directory, not a core file")
    if not os.path.isfile(path):
        raise EstimateError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise EstimateError(f"{path}: empty file, not a core file")
    return st.st_size


def _data_ranges(fd, start, end):
    """The parts of [start, end) of a file that are not holes (SEEK_DATA /
    SEEK_HOLE; the whole range where the filesystem cannot tell)."""
    out = []
    pos = start
    try:
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:      # only a hole up to the end
                    break
                raise
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            out.append((data, hole))
            pos = hole
    except (OSError, AttributeError):
        return [(start, end)]
    return out


class CoreSource(_FileSource):
    """An ELF core file's anonymous loaded segments (see the module doc)."""

    def __init__(self, path):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        path = os.fspath(path)
        super().__init__("core", path, path)
        size = _check_regular_file(path)
        try:
            with open(path, "rb") as f:
                try:
                    elf = ELFFile(f)
                    etype = elf["e_type"]
                    if etype != "ET_CORE":
                        raise EstimateError(f"{path}: an ELF file of type {etype}, not a core file")
                    files, vdso = self._notes(elf)
                    segs = [(s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_flags"])
                            for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
                except ELFError as e:
                    raise EstimateError(f"{path}: not an ELF core file ({e})") from None
                except EstimateError:
                    raise
                except Exception as e:  # pyelftools on a damaged file
                    raise EstimateError(f"{path}: damaged ELF file ({type(e).__name__}: {e})") from None
                holes = file_backed = special = 0
                for vaddr, off, filesz, flags in segs:
                    if not filesz:
                        continue
                    if off + filesz > size:
                        raise EstimateError(f"{path}: truncated core file: the segment at "
                                            f"{vaddr:#x} ends at byte {off + filesz}, the file at {size}")
                    if vaddr == vdso or vaddr >> 63 or not flags & PF_R:
                        special += _pages(filesz)   # vdso, vsyscall, unreadable
                        continue
                    if any(s <= vaddr < e for s, e in files):
                        file_backed += _pages(filesz)
                        continue
                    loaded = 0
                    seg_pos = off                   # end of what this segment loaded so far
                    for a, b in _data_ranges(f.fileno(), off, off + filesz):
                        # whole pages of the segment, never one page twice
                        a = max(off + (a - off) // PAGE_SIZE * PAGE_SIZE, seg_pos)
                        b = min(off + _pages(b - off) * PAGE_SIZE, off + filesz)
                        if a >= b:
                            continue
                        seg_pos = b
                        if self.extents and self.extents[-1][0] + self.extents[-1][1] == a \
                                and self.extents[-1][1] % PAGE_SIZE == 0:
                            a0, n0 = self.extents.pop()
                            self.extents.append((a0, n0 + b - a))
                        else:
                            self.extents.append((a, b - a))
                        loaded += _pages(b - a)
                    holes += _pages(filesz) - loaded
        except OSError as e:
            raise EstimateError(f"{path}: {e.strerror}") from None
        if not self.extents:
            raise EstimateError(f"{path}: the core file holds no anonymous memory "
                                f"({len(segs)} PT_LOAD segments, none with dumped anonymous pages)")
        self.info = {"segments": len(segs), "file_backed_pages": file_backed,
                     "hole_pages": holes, "special_pages": special}
        try:
            self._open_map(path, size)
        except OSError as e:
            raise EstimateError(f"{path}: {e.strerror}") from None

    @staticmethod
    def _notes(elf):
        """From the notes: [(vm_start, vm_end)] of the file mappings
        (NT_FILE) and the vdso's address (AT_SYSINFO_EHDR in NT_AUXV, None
        if absent)."""
        files, vdso = [], None
        word = 8 if elf.elfclass == 64 else 4
        order = "little" if elf.little_endian else "big"
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_NOTE":
                continue
            for note in seg.iter_notes():
                if note["n_type"] == "NT_FILE":
                    files.extend((e["vm_start"], e["vm_end"])
                                 for e in note["n_desc"]["Elf_Nt_File_Entry"])
                elif note["n_type"] == "NT_AUXV" and isinstance(note["n_desc"], bytes):
                    d = note["n_desc"]
                    for i in range(0, len(d) - 2 * word + 1, 2 * word):
                        if int.from_bytes(d[i:i + word], order) == AT_SYSINFO_EHDR:
                            vdso = int.from_bytes(d[i + word:i + 2 * word], order)
        return files, vdso


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


def _zero_pfn():
    """The pfn of the shared zero page, as /proc/self/pagemap shows it
    (None where pfns are hidden: without CAP_SYS_ADMIN they read as 0)."""
    import ctypes

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
        if pid <= 0:
            raise EstimateError(f"--pid {pid}: not a process id")
        if pid == os.getpid():
            raise EstimateError(f"--pid {pid}: that is ksm-engine itself")
        if not os.path.isdir(f"/proc/{pid}"):
            raise EstimateError(f"--pid {pid}: no such process")
        comm = _proc_name(pid)
        self.name = f"pid {pid} ({comm})"
        self.pid = pid
        self._fd = None
        self._buf = None
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

    def chunks(self, offset, nbytes, chunk_bytes):
        size = min(chunk_bytes, max(n for _, n in self.extents))
        if self._buf is None or len(self._buf) != size:
            self._buf = bytearray(size)     # the one buffer a process is read through
        view = memoryview(self._buf)
        end = offset + nbytes
        try:
            pos = offset
            while pos < end:
                k = min(size, end - pos)
                try:
                    got = os.preadv(self._fd, [view[:k]], pos)
                except OSError as e:
                    if e.errno not in (errno.EIO, errno.EFAULT):
                        raise
                    # unmapped since the plan: lose this page, go on
                    self.info["lost_pages"] = self.info.get("lost_pages", 0) + 1
                    pos = (pos // PAGE_SIZE + 1) * PAGE_SIZE
                    continue
                if got <= 0:        # the mm is gone: the process exited
                    raise ProcessLookupError(errno.ESRCH, f"{self.name} exited while being read")
                yield pos - offset, view[:got]
                pos += got
        finally:
            view.release()

    def close(self):
        self._buf = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_sources(specs):
    """Sources from [(kind, text)] with kind "pid", "core" or "image".
    Raises EstimateError for the first unusable one (the opened ones are
    closed)."""
    out = []
    zero_pfn = None
    try:
        for kind, text in specs:
            if kind == "pid":
                try:
                    pid = int(text)
                except ValueError:
                    raise EstimateError(f"--pid {text!r}: not a process id") from None
                if zero_pfn is None:
                    zero_pfn = _zero_pfn() or 0
                out.append(PidSource(pid, zero_pfn or None))
            elif kind == "core":
                out.append(CoreSource(text))
            elif kind == "image":
                out.append(ImageSource(text))
            else:
                raise ValueError(f"unknown source kind {kind!r}")
        return out
    except BaseException:
        for s in out:
            s.close()
        raise


# --- the estimate -----------------------------------------------------------

def load_sources(sources, *, knobs=None, chunk_bytes=CHUNK_BYTES, progress=None):
    """A machine with one process per source holding its planned pages in
    one MERGEABLE area (in extent order).  progress(text) reports loading.
    Returns (machine, processes)."""
    total = sum(s.pages for s in sources)
    check_fits(total * PAGE_SIZE + HEADROOM + min(chunk_bytes, total * PAGE_SIZE),
               f"loading {total} pages")
    m = Machine(ram=total * PAGE_SIZE + HEADROOM)
    apply_knobs(m, knobs)
    procs = []
    for i, src in enumerate(sources):
        p = m.spawn(name=f"{src.kind}{i}")
        length = src.pages * PAGE_SIZE
        a = p.mmap(length)
        pos = a
        done = 0
        for off, n in src.extents:
            for rel, view in src.chunks(off, n, chunk_bytes):
                p.write(pos + rel, view)
                done += len(view)
                if progress:
                    progress(f"loading {src.name}: {done >> 20}/{length >> 20} MiB")
            pos += _pages(n) * PAGE_SIZE
        p.madvise(a, length, MADV_MERGEABLE)
        procs.append(p)
    return m, procs


def settle_with_scans(machine, max_full_scans=DEFAULT_MAX_FULL_SCANS, progress=None):
    """settle.settle, keeping what the prediction needs: per full scan the
    pages it scanned and its convergence counters.  progress(n, counters)
    after each full scan.  Returns (settled, [(pages scanned, counters
    tuple)], seconds of scanning)."""
    scanned = []
    last = [machine.ksm.stats["pages_scanned"]]

    def each(n, st):
        scanned.append(st["pages_scanned"] - last[0])
        last[0] = st["pages_scanned"]
        if progress:
            progress(n, st)

    res = settle(machine, max_full_scans=max_full_scans, progress=each)
    convergence = [tuple(h.values()) for h in res.history]
    return res.settled, list(zip(scanned, convergence)), res.seconds


def predict(scans, seconds, pages_to_scan, sleep_millisecs):
    """The time model of the module doc, from one settle run's scans."""
    final = scans[-1][1]
    needed = next(i for i, (_, c) in enumerate(scans) if c == final) + 1
    scanned = [n for n, _ in scans[:needed]]
    total_scanned = sum(n for n, _ in scans)
    cost = seconds / total_scanned if total_scanned else 0.0
    pages = sum(scanned)
    batches = sum(n // pages_to_scan + 1 for n in scanned)
    sleep_s = batches * sleep_millisecs / 1000.0
    cpu_s = pages * cost
    settle_s = sleep_s + cpu_s
    return {"pages_to_scan": pages_to_scan, "sleep_millisecs": sleep_millisecs,
            "full_scans_needed": needed, "pages_scanned": pages, "batches": batches,
            "sleep_seconds": round(sleep_s, 6), "cpu_seconds": round(cpu_s, 6),
            "settle_seconds": round(settle_s, 6),
            "cpu_percent": round(100.0 * cpu_s / settle_s, 3) if settle_s else 0.0,
            "ns_per_page": round(cost * 1e9, 1)}


def _run_report(machine, procs, total_pages, ok, scans, seconds, pages_to_scan, sleep_ms):
    st = machine.ksm.stats
    out = {k: st[k] for k in REPORTED}
    saved = st["pages_sharing"] + st["ksm_zero_pages"]
    out["saving_pages"] = saved
    out["saving_bytes"] = saved * PAGE_SIZE
    out["saving_percent"] = round(100.0 * saved / total_pages, 3) if total_pages else 0.0
    out["full_scans"] = len(scans)
    out["settled"] = ok
    out["engine_seconds"] = round(seconds, 6)
    out["prediction"] = predict(scans, seconds, pages_to_scan, sleep_ms) if scans else None
    out["per_process"] = [{k: (str(v) if k in ("ksm_merge_any", "ksm_mergeable") else v)
                           for k, v in p.ksm_stat.items()} for p in procs]
    return out


def estimate(sources, *, knobs=None, pages_to_scan=100, sleep_millisecs=20,
             max_full_scans=DEFAULT_MAX_FULL_SCANS, chunk_bytes=CHUNK_BYTES, progress=None):
    """Loads the sources and runs KSM over them twice (see the module doc).
    Returns a dict: sources, pages, bytes, zero_pages, knobs, runs (one
    report per use_zero_pages value, 0 then 1).  Raises KnobError for a
    knob KSM refuses or one the estimate sets itself, MemoryError if the
    host lacks the memory."""
    knobs = dict(knobs or {})
    for name in knobs:
        if name in RESERVED_KNOBS:
            raise KnobError(errno.EINVAL, f"{name}: the estimate sets {name} itself", name)
    if pages_to_scan < 1 or sleep_millisecs < 0:
        raise ValueError("pages_to_scan must be >= 1 and sleep_millisecs >= 0")
    say = progress or (lambda text: None)
    machine, procs = load_sources(sources, knobs=dict(knobs, use_zero_pages="0"),
                                  chunk_bytes=chunk_bytes, progress=say)
    total = sum(s.loaded_pages for s in sources)
    runs = []
    for zero in (0, 1):
        if zero:
            machine.ksm.sysfs["run"] = "2"              # unmerge everything
            machine.ksm.sysfs["use_zero_pages"] = "1"
        machine.ksm.sysfs["run"] = "1"
        ok, scans, seconds = settle_with_scans(
            machine, max_full_scans, lambda n, st, z=zero: say(
                f"use_zero_pages={z}: full scan {n}: pages_shared {st['pages_shared']} "
                f"pages_sharing {st['pages_sharing']}"))
        report = _run_report(machine, procs, total, ok, scans, seconds, pages_to_scan, sleep_millisecs)
        runs.append(dict({"use_zero_pages": zero}, **report))
    machine.check()
    return {
        "sources": [dict({"kind": s.kind, "source": s.spec, "name": s.name,
                          "pages": s.loaded_pages, "bytes": s.loaded_pages * PAGE_SIZE}, **s.info)
                    for s in sources],
        "pages": total,
        "bytes": total * PAGE_SIZE,
        "zero_pages": runs[1]["ksm_zero_pages"],
        "knobs": knobs,
        "runs": runs,
    }
