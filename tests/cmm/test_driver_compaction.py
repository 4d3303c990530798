"""CmmDriver against cmm.c, branch by branch, on a simulated clock: balloon
compaction (page migration) and the balloon list."""
import errno
import logging

import pytest

from cmm import CmmDriver
from cmm.balloon import BalloonBug, balloon_page_isolate, balloon_page_putback

from .conftest import NR_FRAMES, check_invariants, target_kb


# ---------------------------------------------------------------- compaction
def test_compact_migrates_every_page(make_driver, clock, machine):
    drv = make_driver()
    target_kb(drv, 400)
    clock.advance(1)
    before = drv.balloon_pfns()
    res = drv.compact()
    assert res.migrated == 100 and not res.failed
    after = drv.balloon_pfns()
    assert len(after) == 100
    assert {old for old, _ in res.moves} == before       # every page moved once
    assert all(old != new for old, new in res.moves)
    assert res.moves[-1][1] in after
    assert drv.vmstat()["balloon_migrate"] == 100
    assert drv.b_dev_info.isolated_pages == 0
    check_invariants(drv)                        # the hv record moved too
    assert machine.totalram_pages == NR_FRAMES - 100


def test_compact_ebusy_when_new_page_cannot_be_loaned(make_driver, clock, machine):
    drv = make_driver()
    target_kb(drv, 40)
    clock.advance(1)
    before = drv.balloon_pfns()
    drv.partition.fail_page_hcalls(after=0, count=1)
    res = drv.compact()
    assert res.failed == {errno.EBUSY: 1} and res.migrated == 9
    stayed = before - {old for old, _ in res.moves}
    assert len(stayed) == 1 and stayed <= drv.balloon_pfns()   # put back
    assert len(drv.balloon_pfns()) == 10
    assert drv.vmstat()["balloon_migrate"] == 9
    check_invariants(drv)


def test_compact_enomem_without_free_frame(make_driver, machine):
    drv = make_driver(disable=1, min_mem_mb=0)
    drv.cmm_alloc_pages(NR_FRAMES)
    res = drv.compact()
    assert res.failed == {errno.ENOMEM: NR_FRAMES} and res.migrated == 0
    check_invariants(drv)


def test_compact_across_zones_fixes_managed_count(hv, clock):
    from ksm_engine import Machine
    m = Machine(ram=8 << 20, nr_zones=2)
    drv = CmmDriver(m, hv, clock=clock, min_mem_mb=0, disable=1)
    n = m.nr_frames // 2
    drv.cmm_alloc_pages(n)                   # whichever frames the machine gives
    adjust = []
    orig = m.adjust_managed_page_count

    def spy(delta, pfn=None):
        adjust.append(delta)
        orig(delta, pfn)

    m.adjust_managed_page_count = spy
    res = drv.compact()
    assert res.migrated == n
    moved_zone = sum(m.page_zone(o) != m.page_zone(nw) for o, nw in res.moves)
    # one +1 (old zone) / -1 (new zone) pair per cross-zone move, none else
    assert adjust == [1, -1] * moved_zone
    assert m.totalram_pages == m.nr_frames - n
    # per zone: each zone's managed pages are its frames less the balloon's there
    for z in range(2):
        in_zone = sum(1 for p in drv.b_dev_info.pages if m.page_zone(p) == z)
        assert m.zone_managed_pages(z) == m.zone_size(z) - in_zone
    check_invariants(drv)
    drv.unload()


def test_compaction_not_configured(make_driver, clock):
    drv = make_driver(compaction=False)
    target_kb(drv, 40)
    clock.advance(1)
    assert drv.b_dev_info.migratepage is None
    res = drv.compact()
    assert res.migrated == 0 and not res.failed


def test_dequeue_while_isolated_returns_fewer(make_driver, clock):
    drv = make_driver()
    target_kb(drv, 40)
    clock.advance(1)
    pfns = list(drv.b_dev_info.pages)
    for p in pfns[:4]:
        assert balloon_page_isolate(drv.b_dev_info, p)
    assert not balloon_page_isolate(drv.b_dev_info, pfns[0])
    assert drv.cmm_free_pages(10) == 4          # 6 freed, 4 isolated
    assert drv.loaned_pages.read() == 4
    for p in pfns[:4]:
        balloon_page_putback(drv.b_dev_info, p)
    assert drv.cmm_free_pages(10) == 6
    check_invariants(drv)


def test_dequeue_from_empty_balloon_is_a_bug(make_driver, caplog):
    from cmm.balloon import balloon_page_dequeue
    drv = make_driver(disable=1)
    with caplog.at_level(logging.WARNING, logger="cmm"):
        assert balloon_page_dequeue(drv.b_dev_info) is None
    assert "would BUG()" in caplog.text and drv.b_dev_info.empty_dequeues == 1
    drv.b_dev_info.bug_on_empty = True
    with pytest.raises(BalloonBug):
        balloon_page_dequeue(drv.b_dev_info)
    # the OOM notifier asks for oom_kb worth whatever the balloon holds
    with pytest.raises(BalloonBug):
        drv.cmm_oom_notify()


def test_balloon_is_lifo_and_counts(make_driver):
    drv = make_driver(disable=1)
    drv.cmm_alloc_pages(5)
    order = list(drv.b_dev_info.pages)
    drv.cmm_free_pages(2)
    assert list(drv.b_dev_info.pages) == order[:3]      # newest went first
    assert drv.vmstat() == {"nr_balloon_pages": 3, "balloon_inflate": 5,
                            "balloon_deflate": 2, "balloon_migrate": 0}
