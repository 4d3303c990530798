"""CoreSource: an ELF core file's anonymous memory.

Its PT_LOAD segments with contents, less those of file mappings (the
NT_FILE note), the vdso (NT_AUXV's AT_SYSINFO_EHDR), kernel addresses
(vsyscall) and unreadable ones, and less the holes of a sparse file (the
kernel leaves pages it did not dump, never touched, as holes).  Read with
pyelftools.  Cores written by the kernel, by gdb's gcore (which writes
untouched pages as zeros, not holes: the estimate reports all-zero core
pages apart, see count.py), and by QEMU's dump-guest-memory / `virsh dump
--memory-only` (ELF cores of the guest's physical memory, one PT_LOAD per
RAM block, no NT_FILE) load alike.
"""
import errno
import os

from ...machine import PAGE_SIZE
from .sources import EstimateError, FileSource, checked_file, npages

PF_R = 4                      # ELF segment flag: readable
AT_SYSINFO_EHDR = 33          # auxv: the vdso's address


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


class CoreSource(FileSource):
    """An ELF core file's anonymous loaded segments (see the module doc)."""

    def __init__(self, path):
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        path = os.fspath(path)
        super().__init__("core", path, path)
        size = checked_file(path, "core", False)
        try:
            with open(path, "rb") as f:
                try:
                    elf = ELFFile(f)
                    etype = elf["e_type"]
                    if etype != "ET_CORE":
                        raise EstimateError(f"{path}: an ELF file of type {etype}, not a core file")
                    files, vdso, guest = self._notes(elf)
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
                    if not guest and (vaddr == vdso or vaddr >> 63 or not flags & PF_R):
                        special += npages(filesz)   # vdso, vsyscall, unreadable
                        continue
                    if any(s <= vaddr < e for s, e in files):
                        file_backed += npages(filesz)
                        continue
                    loaded = 0
                    seg_pos = off                   # end of what this segment loaded so far
                    for a, b in _data_ranges(f.fileno(), off, off + filesz):
                        # whole pages of the segment, never one page twice
                        a = max(off + (a - off) // PAGE_SIZE * PAGE_SIZE, seg_pos)
                        b = min(off + npages(b - off) * PAGE_SIZE, off + filesz)
                        if a >= b:
                            continue
                        seg_pos = b
                        if self.extents and self.extents[-1][0] + self.extents[-1][1] == a \
                                and self.extents[-1][1] % PAGE_SIZE == 0:
                            a0, n0 = self.extents.pop()
                            self.extents.append((a0, n0 + b - a))
                        else:
                            self.extents.append((a, b - a))
                        loaded += npages(b - a)
                    holes += npages(filesz) - loaded
        except OSError as e:
            raise EstimateError(f"{path}: {e.strerror}") from None
        if not self.extents:
            raise EstimateError(f"{path}: the core file holds no anonymous memory "
                                f"({len(segs)} PT_LOAD segments, none with dumped anonymous pages)")
        self.info = {"segments": len(segs), "file_backed_pages": file_backed,
                     "hole_pages": holes, "special_pages": special, "guest_memory": guest}
        self._open(path)

    @staticmethod
    def _notes(elf):
        """From the notes: [(vm_start, vm_end)] of the file mappings
        (NT_FILE), the vdso's address (AT_SYSINFO_EHDR in NT_AUXV, None
        if absent), and whether it is a guest's memory: QEMU's dumps carry
        notes named "QEMU" (one per vCPU) and segments of guest RAM whose
        p_flags QEMU leaves 0 and whose p_vaddr may be 0 or a guest
        kernel address, so every dumped segment is taken."""
        files, vdso, guest = [], None, False
        word = 8 if elf.elfclass == 64 else 4
        order = "little" if elf.little_endian else "big"
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_NOTE":
                continue
            for note in seg.iter_notes():
                if note["n_name"] == "QEMU":
                    guest = True
                elif note["n_type"] == "NT_FILE":
                    files.extend((e["vm_start"], e["vm_end"])
                                 for e in note["n_desc"]["Elf_Nt_File_Entry"])
                elif note["n_type"] == "NT_AUXV" and isinstance(note["n_desc"], bytes):
                    d = note["n_desc"]
                    for i in range(0, len(d) - 2 * word + 1, 2 * word):
                        if int.from_bytes(d[i:i + word], order) == AT_SYSINFO_EHDR:
                            vdso = int.from_bytes(d[i + word:i + 2 * word], order)
        return files, vdso, guest


