"""Signature tables (ksm_engine.apps.fleet.signatures) against a plain
dict of each fingerprint's holders, however the rows are split into
partitions."""
import collections

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ksm_engine.apps.fleet import signatures as sg


def _rows(rng, nsources, nfp, nrows, spread):
    """Rows of nfp fingerprints.  spread: fingerprints drawn over 64 bits
    (from_rows' one-argsort path); else small numbers that agree on their
    high bits (its lexsort fallback)."""
    fp = rng.integers(0, nfp, nrows).astype(np.uint64)
    src = rng.integers(0, nsources, nrows).astype(np.int32)
    count = rng.integers(1, 5, nrows).astype(np.uint64)
    lo = fp * np.uint64(3) + np.uint64(1)
    if spread:
        with np.errstate(over="ignore"):
            lo = lo * np.uint64(0x9E3779B97F4A7C15)
    return fp, lo, count, src


def _expected(fh, fl, count, src):
    """{signature: contents} from a dict of holders per fingerprint."""
    holders = collections.defaultdict(collections.Counter)
    for hi, lo, c, s in zip(fh.tolist(), fl.tolist(), count.tolist(), src.tolist()):
        holders[(hi, lo)][s] += c
    sigs = collections.Counter(tuple(sorted(v.items())) for v in holders.values())
    return sigs


def _as_dict(t):
    out = collections.Counter()
    starts = t.starts
    for r in range(len(t.mult)):
        a, n = starts[r], t.length[r]
        key = tuple(zip(t.src[a:a + n].tolist(), t.count[a:a + n].tolist()))
        assert key not in out            # reduced: each signature once
        out[key] = int(t.mult[r])
    return out


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), nsources=st.integers(1, 6),
       nfp=st.integers(1, 50), nrows=st.integers(0, 300), parts=st.integers(1, 5),
       spread=st.booleans())
def test_signatures_equal_a_dict_of_holders_however_partitioned(seed, nsources, nfp, nrows, parts,
                                                                spread):
    rng = np.random.default_rng(seed)
    fh, fl, count, src = _rows(rng, nsources, nfp, nrows, spread)
    # partitions hold all rows of a fingerprint (the shuffle's promise)
    part = (fh % np.uint64(parts)).astype(np.int64)
    tables = [sg.from_rows(fh[part == p], fl[part == p], count[part == p], src[part == p],
                           nsources) for p in range(parts)]
    t = sg.combine(*tables)
    assert _as_dict(t) == _expected(fh, fl, count, src)
    assert t.src_pages.tolist() == np.bincount(src, weights=count, minlength=nsources).tolist()
    assert int(t.totals().astype(np.int64) @ t.mult) == int(count.sum())


def test_a_collision_is_detected_not_merged():
    a = sg.from_rows(np.array([1], np.uint64), np.array([1], np.uint64),
                     np.array([2], np.uint64), np.array([0], np.int32), 2)
    b = sg.from_rows(np.array([2], np.uint64), np.array([2], np.uint64),
                     np.array([3], np.uint64), np.array([1], np.int32), 2)
    b.key1[:], b.key2[:] = a.key1, a.key2            # forge a 128-bit collision
    with pytest.raises(sg.SignatureCollision):
        sg.combine(a, b)
    assert sg.combine(a, a).mult.tolist() == [2]


def test_empty_and_concat():
    e = sg.empty(3)
    assert len(sg.combine(e, e).mult) == 0
    assert sg.from_rows(*(np.zeros(0, np.uint64),) * 3, np.zeros(0, np.int32), 3).src_pages.tolist() == [0, 0, 0]


def test_the_one_argsort_path_and_its_fallback_agree():
    rng = np.random.default_rng(4)
    fh, fl, count, src = _rows(rng, 7, 5000, 40000, True)
    fast = sg.from_rows(fh, fl, count, src, 7)
    fl2 = fl.copy()
    fl2[:10] = fl2[0] ^ np.uint64(1)       # distinct fingerprints that agree on high bits
    assert _as_dict(sg.from_rows(fh, fl2, count, src, 7)) == _expected(fh, fl2, count, src)
    assert _as_dict(fast) == _expected(fh, fl, count, src)
