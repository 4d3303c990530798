"""Signatures: what the fleet keeps of each distinct content.

The *signature* of a content is the list of (source, copies) pairs of the
sources that hold it, sorted by source: content X held 3 times by source 0
and once by source 5 has signature ((0, 3), (5, 1)).  Every report depends
on a content only through its signature: the copies a host holds are the
sum of its sources' pairs, the pairs of sources sharing it are its
sources.  So the fleet reduces the distinct fingerprints (up to 10^8 and
more) to the distinct signatures (a few per source in practice: most
contents are held once by one source) and how many contents have each
(``mult``).

SigTable, one row per signature, in CSR form:

  key1, key2  uint64: a 128-bit hash of the signature, the sum over its
              pairs of two 64-bit mixes of (source << 48 | copies); a sum,
              so the pairs' order does not matter
  mult        int64: how many distinct contents have this signature
  length      int64: its number of pairs (>= 1)
  src, count  the pairs, concatenated in row order (int32, int64), sorted
              by source within a row
  src_contents, src_pages   int64 per source: distinct contents and pages
              (sum of copies) seen of each source: the fleet checks them
              against each file's metadata

reduce() merges rows with equal keys.  The keys only find candidates: each
merged row is compared pair by pair with the row it merges into, and a
difference (a hash collision: never seen; 2^-64 odds at 10^9 signatures)
raises SignatureCollision, so a report is never wrong by a collision.
Everything is vectorised numpy: no Python loop per content or per row.
Limits: copies < 2^48 per pair, sources < 2^15 (int32 src, the shift).
"""
from dataclasses import dataclass

import numpy as np

MAX_SOURCES = 1 << 15
BINCOUNT_LIMIT = 1 << 22       # (source, copies) cells counted with bincount
SEED1 = np.uint64(0x243F6A8885A308D3)    # pi's digits: two unrelated seeds
SEED2 = np.uint64(0x13198A2E03707344)


class SignatureCollision(RuntimeError):
    """Two different signatures with the same 128-bit key."""


@dataclass
class SigTable:
    key1: np.ndarray
    key2: np.ndarray
    mult: np.ndarray
    length: np.ndarray
    src: np.ndarray
    count: np.ndarray
    src_contents: np.ndarray
    src_pages: np.ndarray

    @property
    def starts(self):
        """Offset of each row's first pair in src/count."""
        return np.cumsum(self.length) - self.length

    @property
    def row_of_pair(self):
        """The row each pair belongs to."""
        return np.repeat(np.arange(len(self.length)), self.length)

    def totals(self):
        """Copies of a content of each row, all sources together."""
        return np.add.reduceat(self.count, self.starts) if len(self.length) else \
            np.zeros(0, np.int64)


def _mix(x):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _ranges(starts, lengths):
    """The concatenation of arange(s, s + n) for each (s, n)."""
    lengths = np.asarray(lengths, np.int64)
    offsets = np.cumsum(lengths) - lengths
    return (np.arange(int(lengths.sum()), dtype=np.int64)
            - np.repeat(offsets, lengths) + np.repeat(np.asarray(starts, np.int64), lengths))


def empty(nsources):
    z = np.zeros(0, np.int64)
    return SigTable(np.zeros(0, np.uint64), np.zeros(0, np.uint64), z, z,
                    np.zeros(0, np.int32), z, np.zeros(nsources, np.int64),
                    np.zeros(nsources, np.int64))


def _order(major, minor, low, fallback):
    """A permutation that sorts rows by the uint64 key (major with its low
    15 bits replaced by low) and so groups equal (major, minor) rows with
    low ascending inside: one argsort instead of a lexsort.  Two different
    (major, minor) that agree on major's high 49 bits could interleave:
    if any such pair ends up adjacent, fallback() (a full lexsort) is used."""
    key = (major & ~np.uint64(MAX_SOURCES - 1)) | low.astype(np.uint64)
    order = np.argsort(key)
    a, b = major[order], minor[order]
    near = (key[order][1:] >> np.uint64(15)) == (key[order][:-1] >> np.uint64(15))
    if np.any(near & ((a[1:] != a[:-1]) | (b[1:] != b[:-1]))):
        return fallback()
    return order


def from_rows(fp_hi, fp_lo, count, src, nsources):
    """The reduced SigTable of rows (fingerprint, copies, source): one
    partition of the shuffled fleet, all rows of any fingerprint in it.
    Rows repeating a (fingerprint, source) pair are summed."""
    n = len(count)
    if n == 0:
        return empty(nsources)
    src = np.asarray(src).astype(np.int32)
    order = _order(fp_lo, fp_hi, src, lambda: np.lexsort((src, fp_hi, fp_lo)))
    fh, fl = fp_hi[order], fp_lo[order]
    s, c = src[order], count[order].astype(np.int64)
    same_fp = (fh[1:] == fh[:-1]) & (fl[1:] == fl[:-1])
    dup = same_fp & (s[1:] == s[:-1])
    if dup.any():                      # the same pair twice: one row, summed
        keep = np.flatnonzero(np.concatenate(([True], ~dup)))
        c = np.add.reduceat(c, keep)
        s, fh, fl = s[keep], fh[keep], fl[keep]
        same_fp = (fh[1:] == fh[:-1]) & (fl[1:] == fl[:-1])
    gstart = np.flatnonzero(np.concatenate(([True], ~same_fp)))
    length = np.diff(np.append(gstart, len(c)))
    per_source = (np.bincount(s, minlength=nsources).astype(np.int64),
                  np.bincount(s, weights=c, minlength=nsources).astype(np.int64))
    # most contents are held by one source: their signature is that one
    # pair, counted straight (no hashing, no sort of the contents)
    one = length == 1
    singles = _single_pairs(s[gstart[one]], c[gstart[one]], nsources)
    rows = _ranges(gstart[~one], length[~one])
    s, c, length = s[rows], c[rows], length[~one]
    gstart = np.cumsum(length) - length
    k1, k2 = _keys(s, c, gstart)
    t = SigTable(k1, k2, np.ones(len(gstart), np.int64), length, s, c, *per_source)
    return reduce(concat([singles, t]))


def _keys(s, c, gstart):
    """The 128-bit keys of the signatures whose pairs (s, c) start at gstart."""
    if not len(gstart):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    x = (s.astype(np.uint64) << np.uint64(48)) | c.astype(np.uint64)
    with np.errstate(over="ignore"):
        return (np.add.reduceat(_mix(x ^ SEED1), gstart),
                np.add.reduceat(_mix(x ^ SEED2), gstart))


def _single_pairs(s, c, nsources):
    """The SigTable of one-pair signatures (s[i], c[i]), each counted."""
    top = int(c.max()) + 1 if len(c) else 1
    if nsources * top <= BINCOUNT_LIMIT:         # small copies: count, no sort
        mult = np.bincount(s.astype(np.int64) * top + c, minlength=nsources * top)
        pairs = np.flatnonzero(mult)
        mult = mult[pairs]
        s1, c1 = (pairs // top).astype(np.int32), pairs % top
    else:
        pairs, mult = np.unique((s.astype(np.int64) << 48) | c, return_counts=True)
        s1, c1 = (pairs >> 48).astype(np.int32), pairs & ((1 << 48) - 1)
    k1, k2 = _keys(s1, c1, np.arange(len(pairs)))
    z = np.zeros(nsources, np.int64)
    return SigTable(k1, k2, mult.astype(np.int64), np.ones(len(pairs), np.int64), s1, c1, z, z)


def concat(tables):
    """The tables' rows one after another (not reduced)."""
    f = lambda name: np.concatenate([getattr(t, name) for t in tables])  # noqa: E731
    return SigTable(f("key1"), f("key2"), f("mult"), f("length"), f("src"), f("count"),
                    sum(t.src_contents for t in tables), sum(t.src_pages for t in tables))


def reduce(t):
    """t with the rows of equal signatures merged (mult summed), sorted by
    key.  Raises SignatureCollision if equal keys hide different pairs."""
    n = len(t.mult)
    if n == 0:
        return t
    order = _order(t.key1, t.key2, np.zeros(n, np.int32),
                   lambda: np.lexsort((t.key2, t.key1)))
    k1, k2 = t.key1[order], t.key2[order]
    first = np.concatenate(([True], (k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1])))
    gstart = np.flatnonzero(first)
    rep = order[gstart]                          # the row each group keeps
    starts = t.starts
    if len(gstart) < n:                          # check the merged rows, pair by pair
        member = order[~first]
        into = rep[np.cumsum(first)[~first] - 1]
        if np.any(t.length[member] != t.length[into]):
            raise SignatureCollision("two signatures share a 128-bit key (different lengths)")
        a = _ranges(starts[member], t.length[member])
        b = _ranges(starts[into], t.length[member])
        if np.any(t.src[a] != t.src[b]) or np.any(t.count[a] != t.count[b]):
            raise SignatureCollision("two signatures share a 128-bit key")
    pairs = _ranges(starts[rep], t.length[rep])
    return SigTable(k1[gstart], k2[gstart], np.add.reduceat(t.mult[order], gstart),
                    t.length[rep], t.src[pairs], t.count[pairs], t.src_contents, t.src_pages)


def combine(*tables):
    """One reduced table from several (the tree reduction's step)."""
    return reduce(concat(tables))
