"""The ksmd model (ksm_engine.apps.ksmd_model) against the engine, which does
what the kernel's ksmd does page for page: the work it plans for each full
scan (pages scanned and skipped, when the counters change last) must be what
the engine's scanner does on the same memory; and the time model's arithmetic
(jiffies, the timer wheel's extra tick, batches per full scan, the advisor)."""
import numpy as np
import pytest

from ksm_engine import PAGE_SIZE
from ksm_engine.apps.ksmd_model import (CostModel, ModelError, batch_period, msecs_to_jiffies,
                                        predict, read_knobs, scan_plan, smart_scan_scans)
from ksm_engine.apps.estimate.count import summarize
from ksm_engine.ksm.advisor import ScanTimeAdvisor
from ksm_engine.settle import load_buffers

SETTLED = ("pages_shared", "pages_sharing", "ksm_zero_pages", "stable_node_chains",
           "stable_node_dups")


def _pages(rng, n):
    return rng.integers(0, 256, size=(n, PAGE_SIZE), dtype=np.uint8)


def _mix(seed, with_zero=True, tail_unique=0):
    """Two images: unique pages, pairs across them, a content with 9 copies,
    zero pages, then some unique pages at the end."""
    rng = np.random.default_rng(seed)
    shared, nine = _pages(rng, 40), _pages(rng, 1)
    zeros = np.zeros((13 if with_zero else 0, PAGE_SIZE), np.uint8)
    a = np.concatenate([_pages(rng, 60), shared, np.tile(nine, (5, 1)), zeros])
    b = np.concatenate([zeros[:4], _pages(rng, 30), np.tile(nine, (4, 1)), shared[::-1],
                        _pages(rng, tail_unique)])
    return [a.tobytes(), b.tobytes()]


def _engine_passes(buffers, knobs, passes):
    """Per full scan of the engine: (pages scanned, pages skipped, settled
    counters), and the index within the second full scan of the page after
    which the settled counters last changed (-1 if they do not)."""
    m, _ = load_buffers(buffers, knobs=knobs)
    ksm = m.ksm
    out, last = [], -1
    for k in range(1, passes + 1):
        st0 = ksm.stats
        if k == 2:          # page by page, to see where the counters change last
            i, before = 0, tuple(st0[c] for c in SETTLED)
            while ksm.stats["full_scans"] == st0["full_scans"]:
                if ksm.scan(1) == 0:
                    continue
                now = tuple(ksm.stats[c] for c in SETTLED)
                if now != before:
                    last, before = i, now
                i += 1
        else:
            ksm.full_scan(1)
        st = ksm.stats
        out.append((st["pages_scanned"] - st0["pages_scanned"],
                    st["pages_skipped"] - st0["pages_skipped"], tuple(st[c] for c in SETTLED)))
    m.check()
    return out, last


@pytest.mark.parametrize("knobs", [
    {}, {"use_zero_pages": "1"}, {"max_page_sharing": "4"}, {"smart_scan": "0"},
    {"max_page_sharing": "2", "use_zero_pages": "1"},
])
@pytest.mark.parametrize("seed,with_zero,tail", [(1, True, 0), (2, False, 25), (3, True, 7)])
def test_plan_is_what_the_engine_scans(knobs, seed, with_zero, tail):
    buffers = _mix(seed, with_zero, tail)
    passes = 9
    summary = summarize(buffers)
    plan = scan_plan(summary, read_knobs(knobs), passes)
    engine, last = _engine_passes(buffers, knobs, passes)
    for k, (scanned, skipped, _) in enumerate(engine, start=1):
        assert plan.scanned(k) == scanned, f"full scan {k}"
        assert plan.passes[k - 1].get("skip", 0) == skipped, f"full scan {k}"
    # nothing merges in the first full scan; everything in the second
    assert engine[0][2] == (0,) * len(SETTLED)
    assert all(e[2] == engine[1][2] for e in engine[2:])
    assert plan.settle_pass == 2
    assert plan.settle_index == last


def test_nothing_to_merge_settles_at_once():
    rng = np.random.default_rng(9)
    s = summarize([_pages(rng, 50).tobytes()])
    p = predict(s, {})
    assert (p["settle_seconds"], p["ksmd_cpu_seconds"], p["full_scans"], p["pages_scanned"]) == (0, 0, 0, 0)
    assert p["passes"][0]["work"] == {"checksum": 50}


def test_summary_of_known_pages():
    rng = np.random.default_rng(4)
    x, y = _pages(rng, 1), _pages(rng, 1)
    z = np.zeros((1, PAGE_SIZE), np.uint8)
    buf = np.concatenate([x, y, z, x, _pages(rng, 3), z, y, x, _pages(rng, 2)])
    s = summarize([buf.tobytes()])
    assert (s.pages, s.zero_pages) == (12, 2)
    assert sorted(s.copies.tolist()) == [1, 1, 1, 1, 1, 2, 3]
    assert (s.last_dup_index, s.last_zero_index) == (9, 7)
    # one bit apart is another content
    w = x.copy()
    w[0, 4095] ^= 1
    assert sorted(summarize([np.concatenate([x, w]).tobytes()]).copies.tolist()) == [1, 1]


def _model(**kw):
    base = dict(costs={k: 0.0 for k in ("checksum", "unstable_insert", "unstable_merge",
                                        "stable_hit", "zero_merge", "ksm_noop", "skip",
                                        "stable_compare", "unstable_compare")},
                per_batch=0.0, per_full_scan=0.0, wake_latency=0.0, jitter=0.0, stretch=1.0, slice=1.4e-3,
                hz=250, source="calibrated")
    base.update(kw)
    return CostModel(**base)


def test_batch_length_in_jiffies():
    m = _model()
    assert msecs_to_jiffies(20, 250) == 5 and msecs_to_jiffies(1, 250) == 1
    assert msecs_to_jiffies(21, 1000) == 21 and msecs_to_jiffies(10, 300) == 3
    # 5 jiffies and the timer wheel's extra tick: 24 ms at HZ=250, not 20
    assert batch_period(0.0005, 20, m) == pytest.approx(0.024)
    # work crossing a tick boundary costs a tick more
    assert batch_period(0.0045, 20, m) == pytest.approx(0.028)
    assert batch_period(0.0005, 20, _model(hz=1000)) == pytest.approx(0.021)
    assert batch_period(0.0005, 0, m) == pytest.approx(0.0005)     # no sleep
    # the jitter smooths the step, monotonically
    j = _model(jitter=0.001)
    lengths = [batch_period(w * 1e-4, 20, j) for w in range(0, 80)]
    assert all(a <= b + 1e-12 for a, b in zip(lengths, lengths[1:]))
    assert 0.024 < batch_period(0.004, 20, j) < 0.028


def test_settle_time_counts_batches():
    """Free CPU: the time to settle is whole batches of 24 ms: pass 1 takes
    P // pts + 1 batches, pass 2 up to its last change."""
    buffers = _mix(5)
    s = summarize(buffers)
    pts = 10
    p = predict(s, {"pages_to_scan": pts, "sleep_millisecs": 20}, _model())
    first = s.pages // pts + 1
    assert p["passes"][0]["batches"] == first
    assert p["settle_seconds"] == pytest.approx((first + s.last_dup_index // pts) * 0.024)
    assert p["pages_scanned"] == s.pages + max(s.last_dup_index, s.last_zero_index) + 1
    assert p["model"] == "calibrated"
    # a full scan whose last page fills a batch takes an empty batch more
    assert predict(s, {"pages_to_scan": s.pages}, _model())["passes"][0]["batches"] == 2


def test_cpu_is_work_times_cost():
    buffers = _mix(6)
    s = summarize(buffers)
    m = _model(costs=dict(_model().costs, checksum=1e-6, unstable_merge=5e-6), per_batch=1e-5)
    p = predict(s, {"pages_to_scan": 1000}, m)
    merges = p["passes"][1]["work"]["unstable_merge"]
    assert merges > 0
    assert p["ksmd_cpu_seconds"] == pytest.approx(s.pages * 1e-6 + merges * 5e-6 + 2 * 1e-5, rel=1e-4)


def test_advisor_retunes_pages_to_scan():
    rng = np.random.default_rng(8)
    s = summarize([np.tile(_pages(rng, 300), (3, 1)).tobytes()])
    knobs = {"advisor_mode": "scan-time", "advisor_min_pages_to_scan": "200"}
    m = _model(costs=dict(_model().costs, checksum=2e-6))
    p = predict(s, knobs, m, ksmd_cpu_before=0.5)
    assert p["passes"][0]["pages_to_scan"] == 200
    # the engine's advisor, fed the first pass's time and CPU (and ksmd's CPU before)
    a = ScanTimeAdvisor()
    first = p["passes"][0]
    want = a.stop_scan(int(first["seconds"] * 1000), int((first["ksmd_cpu_seconds"] + 0.5) * 1e9),
                       200, 200, 70, 30000)
    assert p["passes"][1]["pages_to_scan"] == want != 200
    assert predict(s, knobs, m)["passes"][1]["pages_to_scan"] != want


def test_smart_scan_schedule():
    # should_skip_rmap_item: scanned at ages 0-3, then 1 skip, scan, 2 skips, scan, 4 skips, scan...
    got = smart_scan_scans(23)
    assert [k + 1 for k, s in enumerate(got) if s] == [1, 2, 3, 4, 6, 9, 14, 23]
    assert all(smart_scan_scans(10, smart_scan=False))


@pytest.mark.parametrize("knobs,what", [
    ({"pages_to_scan": "0"}, "pages_to_scan"), ({"max_page_sharing": "1"}, "max_page_sharing"),
    ({"sleep_millisecs": "-1"}, "sleep_millisecs"), ({"use_zero_pages": "maybe"}, "use_zero_pages"),
    ({"advisor_mode": "fast"}, "advisor_mode"), ({"advisor_target_scan_time": "0"}, "advisor_target"),
])
def test_bad_knobs(knobs, what):
    with pytest.raises(ModelError, match=what):
        read_knobs(knobs)


def test_knobs_as_read_back():
    k = read_knobs({"advisor_mode": "none [scan-time]", "use_zero_pages": "y", "pages_to_scan": 7})
    # scan-time sets pages_to_scan to advisor_min_pages_to_scan (set_advisor_defaults)
    assert (k["advisor_mode"], k["use_zero_pages"], k["pages_to_scan"]) == ("scan-time", 1, 500)
    assert read_knobs({"advisor_mode": "[none] scan-time", "pages_to_scan": 7})["pages_to_scan"] == 7
