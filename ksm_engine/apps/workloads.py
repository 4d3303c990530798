"""The benchmark workload set: synthetic memory images, deterministic from
a seed, streamed in chunks so that a 1 GiB (or 8 GiB) workload is never
held in memory at once.

Data structures:

  page seed   every page's content is a pure function of one 64-bit seed:
              word j of the page (512 little-endian uint64 words) is
              splitmix64(seed + j * GOLDEN).  Two pages are equal exactly
              when their seeds are (a 64-bit collision aside), so a
              workload is described by its seeds alone and any chunk of
              any image can be produced on demand, vectorised with numpy
              (no Python loop per page).
  ProcessImage
              one process's memory: ``seeds`` (uint64 per page), ``zero``
              (bool per page: an all-zero page, seed ignored) and ``tail``
              (uint64 per page, or None): when given, word 511 (the last 8
              bytes) of every non-zero page is replaced by it, which gives
              pages that differ only in their last bytes.
  Workload    a named list of ProcessImages plus the KSM knobs to set
              (sysfs name -> text), as `ksm-engine scan --set` and the
              kernel peer take them.

The set (WORKLOADS, name -> builder(total_pages, rng, base)):

  dup_across_processes   4 guests booted from one image: 75% of each one's
                         pages shared, in the same order, 25% unique
  zero_pages             2 processes, half zero pages, use_zero_pages=1
  zero_pages_off         the same with use_zero_pages=0: the zero pages
                         merge as one content, far past max_page_sharing
  chains                 2 processes of copies of 16 pages (thousands of
                         copies each: stable_node_chains and dups)
  differ_in_last_bytes   pages equal but for their last 8 bytes; a third of
                         the tails repeat, so some merge
  all_unique             2 processes, nothing merges
  vm_mix                 4 guests: 40% shared OS pages (shuffled per guest),
                         15% zero, 5% copies of 8 pages, 40% unique
  vm_mix_small_sharing   the same with max_page_sharing=16, use_zero_pages=1

Use:
    wl = make("vm_mix", 256 << 20, seed=1)
    paths = wl.write(directory)            # one image file per process
    machine, procs = wl.load()             # or straight into a Machine
"""
import os
from dataclasses import dataclass, field

import numpy as np

from .._native import PAGE_SIZE
from ..machine import Machine
from ..process import MADV_MERGEABLE

WORDS = PAGE_SIZE // 8
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_WORD_OFFSETS = np.arange(WORDS, dtype=np.uint64) * GOLDEN
CHUNK_PAGES = 4096  # 16 MiB per generated chunk


def splitmix64(x):
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic)."""
    x = x + GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def seed_range(base, n):
    """n distinct page seeds derived from a 64-bit base (uint64 array)."""
    return splitmix64(np.uint64(base) + np.arange(n, dtype=np.uint64))


@dataclass
class ProcessImage:
    """One process's memory, page by page (see the module doc)."""
    seeds: np.ndarray             # uint64 per page: its content
    zero: np.ndarray              # bool per page: all zero instead
    tail: np.ndarray = None       # uint64 per page for word 511, or None

    @property
    def npages(self):
        return len(self.seeds)

    @property
    def nbytes(self):
        return self.npages * PAGE_SIZE

    def chunk(self, start, stop):
        """Pages [start, stop) as a (stop-start, PAGE_SIZE) uint8 array."""
        words = splitmix64(self.seeds[start:stop, None] + _WORD_OFFSETS)
        if self.tail is not None:
            words[:, WORDS - 1] = self.tail[start:stop]
        words[self.zero[start:stop]] = 0
        return words.view(np.uint8).reshape(stop - start, PAGE_SIZE)

    def chunks(self, chunk_pages=CHUNK_PAGES):
        """Yields (first page, uint8 array of pages) over the whole image."""
        for start in range(0, self.npages, chunk_pages):
            yield start, self.chunk(start, min(start + chunk_pages, self.npages))

    def write(self, path):
        """Writes the image to a file (streamed, chunk by chunk)."""
        with open(path, "wb") as f:
            for _, c in self.chunks():
                f.write(c.data)


@dataclass
class Workload:
    """A named set of process images plus the knobs they are run with."""
    name: str
    images: list
    knobs: dict = field(default_factory=dict)

    @property
    def total_bytes(self):
        return sum(i.nbytes for i in self.images)

    @property
    def total_pages(self):
        return sum(i.npages for i in self.images)

    def write(self, directory):
        """Writes one image file per process into directory; returns the paths."""
        os.makedirs(directory, exist_ok=True)
        paths = []
        for k, img in enumerate(self.images):
            path = os.path.join(directory, f"{self.name}-{k}.img")
            img.write(path)
            paths.append(path)
        return paths

    def load(self, *, compat=None, extra_ram=16 << 20):
        """A Machine with one process per image, each with one MERGEABLE
        area holding its pages (written, then madvised, as
        settle.load_images does) and the knobs written.  Returns
        (machine, processes)."""
        m = Machine(ram=self.total_bytes + extra_ram, ksm_compat=compat)
        for name, value in self.knobs.items():
            m.ksm.sysfs[name] = value
        procs = []
        for k, img in enumerate(self.images):
            p = m.spawn(name=f"image{k}")
            a = p.mmap(img.nbytes)
            for start, c in img.chunks():
                p.write(a + start * PAGE_SIZE, c)
            p.madvise(a, img.nbytes, MADV_MERGEABLE)
            procs.append(p)
        return m, procs


# --- the builders: (total_pages, rng, base) -> (images, knobs) ---------------
#
# rng: a numpy Generator for shuffles and choices; base(): a fresh 64-bit
# seed base for a new family of distinct pages.  Every builder spends exactly
# total_pages pages (split as evenly as the process count allows).

def _split(total, nproc):
    return [total // nproc + (1 if k < total % nproc else 0) for k in range(nproc)]


def _image(seeds, zero=None, tail=None):
    seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
    if zero is None:
        zero = np.zeros(len(seeds), dtype=bool)
    return ProcessImage(seeds, np.ascontiguousarray(zero, dtype=bool), tail)


def _mix(rng, parts):
    """Concatenates (seeds, zero) parts and shuffles them together."""
    seeds = np.concatenate([s for s, _ in parts])
    zero = np.concatenate([z for _, z in parts])
    order = rng.permutation(len(seeds))
    return _image(seeds[order], zero[order])


def _plain(seeds):
    return seeds, np.zeros(len(seeds), dtype=bool)


def _zeros(n):
    return np.zeros(n, dtype=np.uint64), np.ones(n, dtype=bool)


def dup_across_processes(total, rng, base):
    sizes = _split(total, 4)
    shared = seed_range(base(), max(sizes))
    images = []
    for n in sizes:
        ns = n * 3 // 4
        seeds = np.concatenate([shared[:ns], seed_range(base(), n - ns)])
        images.append(_image(seeds))
    return images, {}


def _zero_pages(total, rng, base, use_zero_pages):
    sizes = _split(total, 2)
    pool = seed_range(base(), max(sizes) // 4 + 1)
    images = []
    for n in sizes:
        nz, npool = n // 2, n // 4
        images.append(_mix(rng, [_zeros(nz), _plain(pool[:npool]),
                                 _plain(seed_range(base(), n - nz - npool))]))
    return images, {"use_zero_pages": str(use_zero_pages)}


def zero_pages(total, rng, base):
    return _zero_pages(total, rng, base, 1)


def zero_pages_off(total, rng, base):
    return _zero_pages(total, rng, base, 0)


def chains(total, rng, base):
    few = seed_range(base(), 16)
    return [_image(few[rng.integers(0, 16, n)]) for n in _split(total, 2)], {}


def differ_in_last_bytes(total, rng, base):
    body = seed_range(base(), 1)[0]
    images = []
    distinct = max(total * 2 // 3, 1)  # a third of the tails repeat
    for n in _split(total, 2):
        tail = rng.integers(0, distinct, n, dtype=np.uint64) + np.uint64(1)
        images.append(ProcessImage(np.full(n, body, dtype=np.uint64),
                                   np.zeros(n, dtype=bool), tail))
    return images, {}


def all_unique(total, rng, base):
    return [_image(seed_range(base(), n)) for n in _split(total, 2)], {}


def _vm_mix(total, rng, base):
    sizes = _split(total, 4)
    os_pages = seed_range(base(), max(sizes) * 2 // 5 + 1)
    few = seed_range(base(), 8)
    images = []
    for n in sizes:
        nos, nzero, nfew = n * 2 // 5, n * 3 // 20, n // 20
        images.append(_mix(rng, [_plain(os_pages[:nos]), _zeros(nzero),
                                 _plain(few[rng.integers(0, 8, nfew)]),
                                 _plain(seed_range(base(), n - nos - nzero - nfew))]))
    return images


def vm_mix(total, rng, base):
    return _vm_mix(total, rng, base), {}


def vm_mix_small_sharing(total, rng, base):
    return _vm_mix(total, rng, base), {"max_page_sharing": "16", "use_zero_pages": "1"}


WORKLOADS = {
    "dup_across_processes": dup_across_processes,
    "zero_pages": zero_pages,
    "zero_pages_off": zero_pages_off,
    "chains": chains,
    "differ_in_last_bytes": differ_in_last_bytes,
    "all_unique": all_unique,
    "vm_mix": vm_mix,
    "vm_mix_small_sharing": vm_mix_small_sharing,
}
NAMES = tuple(WORKLOADS)


def make(name, total_bytes, seed=0):
    """The workload ``name`` over total_bytes (a positive multiple of
    PAGE_SIZE, at least 16 pages), deterministic from seed.  ValueError for
    an unknown name or a bad size."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(NAMES)})")
    if total_bytes <= 0 or total_bytes % PAGE_SIZE or total_bytes < 16 * PAGE_SIZE:
        raise ValueError(f"total_bytes must be a positive multiple of {PAGE_SIZE} "
                         f"of at least 16 pages, got {total_bytes}")
    ss = np.random.SeedSequence([seed, NAMES.index(name)])
    rng = np.random.default_rng(ss)
    bases = np.random.default_rng(ss.spawn(1)[0])

    def base():
        return int(bases.integers(0, 1 << 63, dtype=np.uint64)) << 1

    images, knobs = WORKLOADS[name](total_bytes // PAGE_SIZE, rng, base)
    return Workload(name, images, dict(knobs))
