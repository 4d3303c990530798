"""ContentCounts and the page fingerprint (csrc/contents.c): counts right
through the table's growth, zero pages apart, fingerprints stable and
distinct, every bound checked at the Python boundary."""
import numpy as np
import pytest

from ksm_engine import PAGE_SIZE
from ksm_engine.contents import FINGERPRINT_VERSION, ContentCounts, fingerprint_pages


def pages_of(ids):
    """Pages whose content is their id (0: all zero), as one buffer."""
    ids = np.asarray(ids, dtype=np.uint64)
    out = np.zeros((len(ids), PAGE_SIZE // 8), dtype=np.uint64)
    out[:, 0] = ids
    out[:, 7] = ids * 3        # a second word, so ids differ in two places
    return out.tobytes()


def test_counts_through_growth():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 5000, size=20000)        # ~5000 distinct: the table grows 1024 -> 8192
    with ContentCounts() as c:
        buf = pages_of(ids)
        for i in range(0, len(buf), 4096 * PAGE_SIZE // 4096 * 777):   # uneven chunks
            c.add(buf[i:i + 777 * PAGE_SIZE], source=(i // PAGE_SIZE) % 3)
        info = c.info()
        _, want = np.unique(ids[ids != 0], return_counts=True)
        assert info["pages"] == len(ids)
        assert info["zero_pages"] == int((ids == 0).sum())
        assert info["distinct"] == len(want)
        assert info["distinct"] * 4 <= info["capacity"] * 3
        assert info["table_bytes"] == info["capacity"] * info["entry_bytes"]
        hi, lo, count = c.table()
        assert sorted(count.tolist()) == sorted(want.tolist())
        assert len(set(zip(hi.tolist(), lo.tolist()))) == len(hi)
        s = c.summary()
        assert s.pages == len(ids) and s.zero_pages == info["zero_pages"]
        assert s.last_zero_index == int(np.nonzero(ids == 0)[0][-1])
        _, inv, cnt = np.unique(ids, return_inverse=True, return_counts=True)
        dup = (cnt[inv] >= 2) & (ids != 0)
        assert s.last_dup_index == int(np.nonzero(dup)[0][-1])
        assert sum(c.source_pages) == len(ids)


def test_fingerprints_are_stable_distinct_and_flag_zero():
    ids = list(range(0, 3000)) + [5, 0, 7]
    hi, lo, zero = fingerprint_pages(pages_of(ids))
    assert zero.tolist() == [i == 0 for i in ids]
    keys = list(zip(hi.tolist(), lo.tolist()))
    assert len(set(keys[:3000])) == 3000
    assert keys[3000] == keys[5] and keys[3001] == keys[0] and keys[3002] == keys[7]
    # one bit anywhere changes the fingerprint
    base = bytearray(pages_of([9]))
    seen = {keys[0]}
    for bit in range(0, PAGE_SIZE * 8, 997):
        b = bytearray(base)
        b[bit // 8] ^= 1 << (bit % 8)
        h, l, _ = fingerprint_pages(b)
        seen.add((int(h[0]), int(l[0])))
    assert len(seen) == 1 + len(range(0, PAGE_SIZE * 8, 997))
    assert FINGERPRINT_VERSION.startswith("ke-fp128-")


def test_add_fingerprints_equals_add():
    ids = [3, 3, 0, 4, 3, 0, 9]
    hi, lo, zero = fingerprint_pages(pages_of(ids))
    with ContentCounts() as a, ContentCounts() as b:
        a.add(pages_of(ids), source=1)
        b.add_fingerprints(hi, lo, zero, source=1)
        assert a.info() == b.info()
        assert [x.tolist() for x in a.table()] == [x.tolist() for x in b.table()]
        assert a.source_pages == b.source_pages and a.source_zero_pages == b.source_zero_pages
        # counts: 3 pages of one content and 2 zero pages in two rows
        b.add_fingerprints(hi[:1], lo[:1], count=[3], source=0)
        b.add_fingerprints(hi[2:3], lo[2:3], zero=[1], count=[2], source=2)
        info = b.info()
        assert info["pages"] == len(ids) + 5 and info["zero_pages"] == 4
        assert b.source_zero_pages[2] == 2 and b.last_zero_source == 2


def test_bounds_at_the_boundary():
    with ContentCounts() as c:
        with pytest.raises(ValueError, match="whole number"):
            c.add(b"x" * 100)
        with pytest.raises(ValueError):
            c.add(pages_of([1]), source=-1)
        with pytest.raises(ValueError):
            c.add(pages_of([1]), source=2 ** 32)
        with pytest.raises(TypeError):
            c.add(pages_of([1]), source=True)
        with pytest.raises(ValueError, match="length"):
            c.add_fingerprints([1, 2], [1])
        c.add(b"")
        assert c.pages == 0
    with pytest.raises(ValueError, match="closed"):
        c.add(pages_of([1]))
    c.close()                                   # idempotent
    with pytest.raises(ValueError):
        ContentCounts(max_bytes=1000)           # under the smallest table


def test_the_bound_gives_memory_error_and_keeps_counts():
    with ContentCounts(max_bytes=32 * 1024) as c:     # 1024 slots: 768 distinct at most
        with pytest.raises(MemoryError, match="bound"):
            c.add(pages_of(range(1, 2000)))
        info = c.info()
        assert info["distinct"] == 768 and info["pages"] == 768
        assert c.source_pages == [768]
