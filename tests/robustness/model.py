"""The pure-Python reference model of what processes must read back.

Whatever KSM, the balloon, fork, copy-on-write or an exhausted arena do
underneath, merging must be invisible: a process reads exactly what it
wrote.  ModelProcess is the oracle for one process.  It knows nothing of
frames, sharing or KSM; it holds

  mapped    page address -> VM_MERGEABLE flag, for every mapped page
            (per page, not per area: area boundaries are not observable
            except through madvise's and prctl's effect on the flag)
  data      page address -> the page's 4096 bytes, for pages written at
            least once (a mapped page missing here reads as zeros)
  merge_any the mm's MMF_VM_MERGE_ANY (prctl PR_SET_MEMORY_MERGE), which
            new areas and fork children inherit

Pages are immutable ``bytes`` objects, so fork is a shallow copy of the two
dicts and a write replaces the pages it touches.
"""
from ksm_engine import PAGE_SIZE

ZERO_PAGE = bytes(PAGE_SIZE)


def page_of(addr):
    """The address of the page holding byte ``addr``."""
    return addr - addr % PAGE_SIZE


def pages_spanned(addr, n):
    """The page addresses the byte range [addr, addr+n) touches (n > 0)."""
    return range(page_of(addr), page_of(addr + n - 1) + PAGE_SIZE, PAGE_SIZE)


def pattern_page(k):
    """Page contents from a small alphabet, so that equal pages are common
    (KSM merges them): 0 is the zero page, 1-3 fill one byte value, 4-5
    differ from each other only in the last byte (the longest memcmp), 6+
    are distinct two-byte patterns."""
    if k == 0:
        return ZERO_PAGE
    if k <= 3:
        return bytes([k]) * PAGE_SIZE
    if k <= 5:
        return b"\x07" * (PAGE_SIZE - 1) + bytes([k])
    return k.to_bytes(2, "little") * (PAGE_SIZE // 2)


def unique_page(serial):
    """A page no other serial produces, and never all zero."""
    return (serial | 1 << 62).to_bytes(8, "little") * (PAGE_SIZE // 8)


class ModelProcess:
    """The expected state of one process (see the module comment)."""

    def __init__(self):
        self.mapped = {}
        self.data = {}
        self.merge_any = False

    def fork(self):
        """The child's model: same pages, flags and merge_any."""
        child = ModelProcess()
        child.mapped = dict(self.mapped)
        child.data = dict(self.data)
        child.merge_any = self.merge_any
        return child

    # --- the address space ---------------------------------------------------

    def covered(self, addr, n):
        """True when every byte of [addr, addr+n) is mapped (n > 0)."""
        return addr >= 0 and all(p in self.mapped for p in pages_spanned(addr, n))

    def overlaps(self, addr, npages):
        return any(addr + i * PAGE_SIZE in self.mapped for i in range(npages))

    def mmap(self, addr, npages):
        """A new area: mergeable if merge_any is set, as the kernel does."""
        for i in range(npages):
            self.mapped[addr + i * PAGE_SIZE] = self.merge_any

    def munmap(self, addr, npages):
        for i in range(npages):
            p = addr + i * PAGE_SIZE
            self.mapped.pop(p, None)
            self.data.pop(p, None)

    def set_mergeable(self, addr, npages, flag):
        """madvise: sets the flag of the mapped pages in the range; returns
        True when every page of it was mapped (else madvise gives ENOMEM)."""
        full = True
        for i in range(npages):
            p = addr + i * PAGE_SIZE
            if p in self.mapped:
                self.mapped[p] = flag
            else:
                full = False
        return full

    def runs(self):
        """Mapped pages as maximal runs: [(start, npages)] in address order."""
        out = []
        for p in sorted(self.mapped):
            if out and out[-1][0] + out[-1][1] * PAGE_SIZE == p:
                out[-1][1] += 1
            else:
                out.append([p, 1])
        return [tuple(r) for r in out]

    # --- contents ------------------------------------------------------------

    def page(self, p):
        return self.data.get(p, ZERO_PAGE)

    def write(self, addr, data):
        """Applies a write the engine accepted (every byte mapped)."""
        data = bytes(data)
        pos = 0
        for p in pages_spanned(addr, len(data)):
            off = addr + pos - p
            chunk = min(PAGE_SIZE - off, len(data) - pos)
            old = self.page(p)
            self.data[p] = old[:off] + data[pos:pos + chunk] + old[off + chunk:]
            pos += chunk

    def read(self, addr, n):
        out = bytearray()
        for p in pages_spanned(addr, n):
            out += self.page(p)
        off = addr - page_of(addr)
        return bytes(out[off:off + n])
