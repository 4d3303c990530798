"""A writer of small ELF64 little-endian core files, laid out as the kernel
lays them out: the ELF header, the program headers, one PT_NOTE segment
(NT_FILE for file mappings, NT_AUXV), then every PT_LOAD segment's bytes
page aligned.  Pages listed as holes are not written (the file stays
sparse there, as the kernel leaves pages it did not dump)."""
import struct

PAGE = 4096
ET_CORE, ET_EXEC = 4, 2
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
NT_AUXV, NT_FILE = 6, 0x46494C45
AT_NULL, AT_SYSINFO_EHDR = 0, 33


class Segment:
    """One PT_LOAD: vaddr, its bytes (b"" for a segment not dumped, whose
    memsz is then memsz), flags, and page indexes left as holes."""

    def __init__(self, vaddr, data, flags=PF_R | PF_W, memsz=None, holes=()):
        self.vaddr, self.data, self.flags = vaddr, data, flags
        self.memsz = memsz if memsz is not None else len(data)
        self.holes = set(holes)


def _note(ntype, desc, name=b"CORE\0"):
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def write_core(path, segments, files=(), vdso=None, etype=ET_CORE, cut=0, qemu_cpus=0):
    """Writes the core file.  files: [(start, end, name)] for NT_FILE;
    vdso: its address for NT_AUXV; cut: bytes chopped off the end (a
    truncated core); qemu_cpus: that many notes named "QEMU" (QEMU's
    dump-guest-memory writes one QEMUCPUState note per vCPU).  Returns the
    file offset of every segment's data."""
    notes = b"".join(_note(0, bytes(0x1b8), b"QEMU\0") for _ in range(qemu_cpus))
    if files:
        desc = struct.pack("<QQ", len(files), PAGE)
        desc += b"".join(struct.pack("<QQQ", s, e, 0) for s, e, _ in files)
        desc += b"".join(n.encode() + b"\0" for _, _, n in files)
        notes += _note(NT_FILE, desc)
    if vdso is not None:
        notes += _note(NT_AUXV, struct.pack("<QQQQ", AT_SYSINFO_EHDR, vdso, AT_NULL, 0))
    phnum = 1 + len(segments)
    note_off = 64 + 56 * phnum
    off = (note_off + len(notes) + PAGE - 1) // PAGE * PAGE
    offsets = []
    for s in segments:
        offsets.append(off)
        off += len(s.data)
    ehdr = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
            + struct.pack("<HHIQQQIHHHHHH", etype, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0))
    phdrs = struct.pack("<IIQQQQQQ", PT_NOTE, 0, note_off, 0, 0, len(notes), 0, 4)
    for s, o in zip(segments, offsets):
        phdrs += struct.pack("<IIQQQQQQ", PT_LOAD, s.flags, o, s.vaddr, 0, len(s.data), s.memsz, PAGE)
    with open(path, "wb") as f:
        f.write(ehdr + phdrs + notes)
        for s, o in zip(segments, offsets):
            for i in range(0, len(s.data), PAGE):
                if i // PAGE not in s.holes:
                    f.seek(o + i)
                    f.write(s.data[i:i + PAGE])
        f.truncate(off - cut)
    return offsets
