"""Helpers for the KSM behaviour tests (tests/ksm).

The tests build small workloads by hand and compare KSM's counters with
values worked out from mm/ksm.c, so the helpers here only set up memory and
count things; they never compute an expected counter themselves.

  page(b)                 one page filled with byte b
  machine fixture         a 64 MiB Machine (today's KSM), checked at teardown
  map_pages(p, pages)     maps len(pages) pages in p, writes them, and
                          (by default) madvises the area MERGEABLE
  ksm_counts(m)           the counters the selftests read, as a dict
  ksm_mappings(m)         ptes that map a KSM page, over every process
  frames_of(p, a, n)      the frames n pages from a map (None where none)
  set_knobs(m, **kv)      writes knobs through sysfs, as a shell would

Every machine the ``machine`` / ``machine_factory`` fixtures make is run
through Machine.check() when the test ends, so a test that leaves the core
inconsistent fails even if its own assertions passed.
"""
import pytest

from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, PR_SET_MEMORY_MERGE, Machine

# ke_mm_ptes() flags (see Process.ptes)
PTE_NONE, PTE_PRESENT, PTE_KSM, PTE_ZERO = 0, 1, 3, 4

SMALL_RAM = "64MiB"


def page(byte):
    """One page of ``byte`` (0..255)."""
    return bytes([byte]) * PAGE_SIZE


def unique_page(n, tag=0):
    """A page no other call with a different (n, tag) returns: its first
    16 bytes spell n and tag, the rest is a fixed pattern."""
    head = n.to_bytes(8, "little") + tag.to_bytes(8, "little")
    return head + bytes((i * 7 + 3) & 0xFF for i in range(PAGE_SIZE - 16))


def map_pages(p, pages, mergeable=True):
    """Maps one area of len(pages) pages in process p, writes each page's
    bytes (so every page is present), madvises it MERGEABLE unless told not
    to, and returns its address."""
    n = len(pages)
    a = p.mmap(n * PAGE_SIZE)
    p.write(a, b"".join(pages))
    if mergeable:
        p.madvise(a, n * PAGE_SIZE, MADV_MERGEABLE)
    return a


def set_knobs(m, **knobs):
    """Writes each knob=value to m's sysfs (values as text)."""
    for name, value in knobs.items():
        m.ksm.sysfs[name] = str(value)


def scanned_process(m, pages, passes, **knobs):
    """With these knobs, a process with ``pages`` in one mergeable area,
    then ``passes`` full scans: (process, its area's address)."""
    set_knobs(m, **knobs)
    p = m.spawn()
    a = map_pages(p, pages)
    m.ksm.full_scan(passes)
    return p, a


def merge_any_pair(m, p_pages, q_pages, **knobs):
    """With these knobs: p, merge-any by prctl, with ``p_pages`` in an area
    it did not madvise; q with ``q_pages`` madvised; two full scans.
    Returns (p, a, q, b), a and b their areas."""
    set_knobs(m, **knobs)
    p, q = m.spawn(), m.spawn()
    p.prctl(PR_SET_MEMORY_MERGE, 1)
    a = map_pages(p, p_pages, mergeable=False)
    b = map_pages(q, q_pages)
    m.ksm.full_scan(2)
    return p, a, q, b


def sysfs_store(m, name, text):
    """A write of ``text`` to KSM's sysfs file ``name``: the value read back
    (without its newline), or the errno when the write is refused."""
    try:
        m.ksm.sysfs[name] = text
    except OSError as e:
        return e.errno
    return m.ksm.sysfs[name].rstrip("\n")


def ksm_counts(m, *names):
    """The named counters (default: shared, sharing, unshared, zero pages,
    chains, dups) from m.ksm.stats."""
    names = names or ("pages_shared", "pages_sharing", "pages_unshared",
                      "ksm_zero_pages", "stable_node_chains", "stable_node_dups")
    st = m.ksm.stats
    return {k: st[k] for k in names}


def area_flags(p):
    """{address: pte flag} over every area of p (one p.ptes call per area)."""
    out = {}
    for a in list(p.areas.values()):
        n = (a.end - a.start) // PAGE_SIZE
        _, flags = p.ptes(a.start, n)
        for k, f in enumerate(flags):
            out[a.start + k * PAGE_SIZE] = f
    return out


def area_frames(p):
    """{address: pfn} of every present (non zero page) pte over p's areas."""
    out = {}
    for a in list(p.areas.values()):
        n = (a.end - a.start) // PAGE_SIZE
        pfns, flags = p.ptes(a.start, n)
        for k, (pfn, f) in enumerate(zip(pfns, flags)):
            if f in (PTE_PRESENT, PTE_KSM):
                out[a.start + k * PAGE_SIZE] = pfn
    return out


def ksm_mappings(m, procs=None):
    """ptes mapping a KSM page, over ``procs`` (default: every live one)."""
    procs = m.processes if procs is None else procs
    return sum(1 for p in procs for f in area_flags(p).values() if f == PTE_KSM)


def frames_of(p, addr, npages):
    """The frame of each of npages pages from addr (None where no frame)."""
    pfns, flags = p.ptes(addr, npages)
    return [pfn if f in (PTE_PRESENT, PTE_KSM) else None for pfn, f in zip(pfns, flags)]


def flags_of(p, addr, npages):
    return p.ptes(addr, npages)[1]


@pytest.fixture
def machine_factory():
    """make(**kw) -> Machine (ram 64 MiB unless given); all are checked at
    teardown."""
    made = []

    def make(ram=SMALL_RAM, **kw):
        m = Machine(ram=ram, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.ksm.stop()
        m.check()


@pytest.fixture
def machine(machine_factory):
    """A 64 MiB machine with today's KSM (checked at teardown)."""
    return machine_factory()
