"""The hypervisor's paging (cmm/paging.py, cmm/pool.py) on one small
partition: pages go to the device when the pool is short and come back
through the engine's own read and write paths, at their cost."""
import numpy as np
import pytest

from cmm import CmmDriver, Hypervisor
from cmm.paging import BACKED, PAGED, UNBACKED, PagingDevice, PartitionMemory, PoolExhausted
from cmm.pool import PAGEOUT_BATCH, PoolPolicy, SharedPool
from ksm_engine import PAGE_SIZE, Machine
from ksm_engine.clock import SimClock

MB = 256          # pages in a MiB


def make(pool_pages, device_pages=4096, frames=8 * MB):
    clock = SimClock()
    hv = Hypervisor(pool_size=pool_pages * PAGE_SIZE)
    part = hv.add_partition(frames * PAGE_SIZE, entitled_mem=0)
    policy = PoolPolicy()
    pool = SharedPool(pool_pages, PagingDevice(device_pages, 2000, 500), clock, policy)
    policy.pool = pool
    m = Machine(ram=frames * PAGE_SIZE, clock=lambda: clock.now_ms)
    pm = PartitionMemory(pool, part, "lpar", m.nr_frames)
    pm.machine, part.memory, m.access_hook = m, pm, pm
    pool.parts.append(pm)
    return clock, hv, part, pool, m, pm


def pages(n, tag):
    return b"".join(bytes([tag, i & 0xFF, i >> 8]) * (PAGE_SIZE // 3) + b"\0" * (PAGE_SIZE % 3)
                    for i in range(n))


def test_touches_back_pages_and_the_pool_adds_up():
    clock, hv, part, pool, m, pm = make(pool_pages=4 * MB)
    p = m.spawn()
    a = p.mmap(2 * MB * PAGE_SIZE)
    p.write(a, pages(MB, 1))
    assert pm.backed == m.used_pages == MB and pm.first_touches == MB
    assert pool.free_pages == 3 * MB and pool.reserved == 0
    p.read(a + MB * PAGE_SIZE, 10)                 # an untouched page: no frame, no backing
    assert pm.backed == MB
    pool.check()


def test_a_write_to_a_paged_out_page_costs_a_page_in():
    clock, hv, part, pool, m, pm = make(pool_pages=MB + 16)
    p = m.spawn()
    a = p.mmap(2 * MB * PAGE_SIZE)
    first = pages(MB, 2)
    p.write(a, first)
    clock.advance(5)
    q = m.spawn()
    b = q.mmap(MB * PAGE_SIZE)
    q.write(b, pages(64, 3))                       # no room: p's cold pages go out
    assert pm.paged >= 48 and pool.device.used == pm.paged and pool.free_pages >= 0
    assert pm.page_outs >= PAGEOUT_BATCH           # in batches
    assert pm.stall_us == pm.page_outs * 500       # made for this partition's access
    pm.stall_us = 0
    out = np.flatnonzero(pm.state == PAGED)
    vpage = int(out[0])                            # p's pages are its frames in order
    ins = pm.page_ins
    p.write(a + vpage * PAGE_SIZE, b"new")         # through the engine's write path
    assert pm.page_ins == ins + 1 and pm.state[vpage] == BACKED
    assert pm.stall_us >= 2000
    assert p.read(a + vpage * PAGE_SIZE, PAGE_SIZE) == b"new" + first[vpage * PAGE_SIZE + 3:(vpage + 1) * PAGE_SIZE]
    other = int(out[1])
    p.read(a + other * PAGE_SIZE, 1)               # a read pages in too
    assert pm.page_ins == ins + 2 and pm.state[other] == BACKED
    pool.check()
    pm.check()
    m.check()


def test_a_full_device_refuses_the_access_and_moves_nothing():
    clock, hv, part, pool, m, pm = make(pool_pages=MB, device_pages=0)
    p = m.spawn()
    a = p.mmap(2 * MB * PAGE_SIZE)
    p.write(a, pages(MB, 4))
    before = (pm.backed, pm.paged, m.used_pages)
    with pytest.raises(PoolExhausted):
        p.write(a + MB * PAGE_SIZE, pages(1, 5))
    assert (pm.backed, pm.paged, m.used_pages) == before
    assert p.read(a + MB * PAGE_SIZE, 3) == b"\0\0\0"   # the write did not happen
    assert pool.device.refused > 0 and pool.reserved == 0
    pool.check()


def test_loans_give_pool_pages_back_and_barren_loans_are_seen():
    clock, hv, part, pool, m, pm = make(pool_pages=8 * MB)
    p = m.spawn()
    a = p.mmap(4 * MB * PAGE_SIZE)
    p.write(a, pages(4 * MB, 6))
    p.munmap(a, 2 * MB * PAGE_SIZE)                # freed in the guest, still backed
    assert pm.backed == 4 * MB and m.used_pages == 2 * MB
    drv = CmmDriver(m, hv, clock=clock, partition=part, min_mem_mb=0)
    part.set_loan_target(MB * PAGE_SIZE)
    clock.advance(1)                               # the balloon loans the newest free frames
    assert drv.loaned_pages.read() == MB
    assert pm.backed == 3 * MB and pm.reclaimed == MB and pm.barren_loans == 0
    part.set_loan_target(7 * MB * PAGE_SIZE)       # beyond the freed frames: fresh ones
    clock.advance(1)
    assert pm.reclaimed == 2 * MB and pm.barren_loans == 4 * MB
    assert pool.policy._barren(pm)
    assert (pm.state[list(drv.balloon_pfns())] == UNBACKED).all()
    drv.unload()
    pool.check()


def test_policy_asks_loans_below_high_and_releases_them_above():
    clock, hv, part, pool, m, pm = make(pool_pages=4 * MB)
    p = m.spawn()
    a = p.mmap(4 * MB * PAGE_SIZE)
    p.write(a, pages(4 * MB - 40, 7))              # 40 free: below high (61), above hard (20)
    pool.policy.round()
    assert part.loan_target == 0                   # all of it in use just now: nothing idle
    clock.advance(31)                              # idle_window_s 30 later, all of it idle
    pool.policy.round()
    assert pm.idle_backed == 4 * MB - 40 and pm.active_f == 0
    assert part.loan_target == (61 - 40) * PAGE_SIZE
    assert pool.policy.max_loan_target == 21 and pool.device.used == 0
    part.loaned.update(range(0, 100 * PAGE_SIZE, PAGE_SIZE))   # as if 100 were loaned
    pm.release_all()                               # and the pool is empty again
    pool.policy.round()                            # far above 2 x high: all given back
    assert part.loan_target == 0 and pool.policy.released == 100
    part.loaned.clear()


def test_shares_per_page_taxes_idle_memory():
    clock, hv, part, pool, m, pm = make(pool_pages=8 * MB)
    pol = pool.policy
    assert pol.shares_per_page(pm, 1000, f=1.0) == pytest.approx(129 / 1000)
    assert pol.shares_per_page(pm, 1000, f=0.0) == pytest.approx(129 / 4000)   # tax 75%: k = 4
    assert pol.shares_per_page(pm, 0) == float("inf")


def test_pool_shrink_pages_out_or_keeps_what_it_cannot_give():
    clock, hv, part, pool, m, pm = make(pool_pages=4 * MB, device_pages=MB)
    p = m.spawn()
    a = p.mmap(3 * MB * PAGE_SIZE)
    p.write(a, pages(3 * MB, 8))
    assert pool.resize(2 * MB) == 2 * MB and pm.paged == MB and pool.shrink_short == 0
    assert pool.resize(MB) == 2 * MB and pool.shrink_short == MB     # the device is full
    assert pool.resize(8 * MB) == 8 * MB
    pool.check()
