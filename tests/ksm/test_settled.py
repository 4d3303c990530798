"""KSM's settled state from content counts (ksm_engine.ksm.settled) equals
the engine's: random multisets of page contents spread over a few
processes, random knobs (max_page_sharing 2..5 and 256, use_zero_pages,
smart_scan, the 2009 mode), the engine run until settled; every counter
and every process's ksm_stat compared."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksm_engine import PAGE_SIZE
from ksm_engine.contents import ContentCounts
from ksm_engine.ksm.settled import ContentSummary, settled_counters, settled_ksm_stat
from ksm_engine.settle import load_buffers, settle

STAT = ("ksm_rmap_items", "ksm_zero_pages", "ksm_merging_pages", "ksm_process_profit")


def content(i):
    """Page content number i; 0 is the all-zero page."""
    if i == 0:
        return bytes(PAGE_SIZE)
    return i.to_bytes(4, "little") * (PAGE_SIZE // 4)


# a few processes, each a list of content numbers (0: zero page); few
# distinct numbers so that contents repeat, across processes too
sources = st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=30), min_size=1, max_size=3)
knobs = st.fixed_dictionaries({
    "max_page_sharing": st.sampled_from([2, 3, 4, 5, 256]),
    "use_zero_pages": st.booleans(),
    "smart_scan": st.booleans(),
    "compat": st.sampled_from([None, None, "2009"]),
})


def engine(srcs, k):
    bufs = [b"".join(content(i) for i in s) for s in srcs]
    sysfs = {}
    if k["compat"] != "2009":
        sysfs = {"max_page_sharing": str(k["max_page_sharing"]),
                 "use_zero_pages": str(int(k["use_zero_pages"])),
                 "smart_scan": str(int(k["smart_scan"]))}
    m, procs = load_buffers(bufs, knobs=sysfs, compat=k["compat"])
    m.ksm.sysfs["run"] = "1"
    res = settle(m)
    assert res.settled
    m.check()
    return res.counters, [p.ksm_stat for p in procs]


def counted(srcs):
    c = ContentCounts()
    for i, s in enumerate(srcs):
        c.add(b"".join(content(j) for j in s), source=i)
    return c


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(srcs=sources, k=knobs)
def test_settled_counters_equal_the_engine(srcs, k):
    counters, stats = engine(srcs, k)
    with counted(srcs) as c:
        kw = {"max_page_sharing": k["max_page_sharing"], "use_zero_pages": k["use_zero_pages"],
              "compat": k["compat"]}
        got = settled_counters(c.summary(), **kw)
        assert got == {name: counters[name] for name in got}
        per = c.ksm_stat(**kw)
    assert per == [{name: s[name] for name in STAT} for s in stats]


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 11, 12, 13])
@pytest.mark.parametrize("m", [2, 3, 5])
def test_one_content_n_copies(n, m):
    """The selftest's rule: N % M in {0, 1}: N/M KSM pages of M; else one more."""
    s = ContentSummary(pages=n, zero_pages=0, copies=np.array([n]))
    got = settled_counters(s, max_page_sharing=m)
    shared = n // m + (n % m >= 2)
    assert got["pages_shared"] == shared
    assert got["pages_unshared"] == (n % m == 1)
    assert got["pages_sharing"] == n - shared - (n % m == 1)
    assert got["stable_node_chains"] == (shared >= 2)
    assert got["stable_node_dups"] == (shared if shared >= 2 else 0)
    counters, _ = engine([[1] * n], {"max_page_sharing": m, "use_zero_pages": False,
                                      "smart_scan": True, "compat": None})
    assert got == {name: counters[name] for name in got}


def test_a_million_distinct_counts_are_vectorised():
    """settled_counters works on np.unique of the copies: a million contents
    take well under a second (no Python loop per content)."""
    rng = np.random.default_rng(1)
    copies = rng.integers(1, 600, size=1_000_000)
    s = ContentSummary(pages=int(copies.sum()) + 5, zero_pages=5, copies=copies)
    got = settled_counters(s, max_page_sharing=7)
    rem = copies % 7
    ksm = copies // 7 + (rem >= 2)
    assert got["pages_shared"] == int(ksm.sum()) + 1      # the zero pages: one KSM page
    assert got["stable_node_chains"] == int((ksm >= 2).sum())


def test_summary_checks_itself():
    with pytest.raises(ValueError):
        ContentSummary(pages=3, zero_pages=0, copies=np.array([1, 1]))
    with pytest.raises(ValueError):
        ContentSummary(pages=1, zero_pages=0, copies=np.array([0, 1]))
    with pytest.raises(ValueError):
        ContentSummary(pages=1, zero_pages=2, copies=np.array([], dtype=np.int64))


def test_bad_knobs():
    s = ContentSummary(pages=2, zero_pages=0, copies=np.array([2]))
    with pytest.raises(ValueError):
        settled_counters(s, max_page_sharing=1)
    with pytest.raises(ValueError):
        settled_counters(s, compat="1999")
    with pytest.raises(ValueError, match="max_kernel_pages"):
        settled_counters(s, compat="2009", max_kernel_pages=3)
    with pytest.raises(ValueError, match="max_kernel_pages"):
        settled_ksm_stat([2], [0], [2], [0], 0, -1, compat="2009", max_kernel_pages=3)
