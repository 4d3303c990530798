"""Stable node chains and dups (max_page_sharing).

A KSM page takes at most max_page_sharing (M) mappings.  Scanning N equal
pages, in pass 2: the first goes to the unstable tree, the second merges
with it (a KSM page of 2), the next M-2 join it from the stable tree; the
page after that finds every copy full, goes to the unstable tree, and the
one after pairs with it: a second KSM page of that content, and the stable
node becomes a chain (a chain head in the tree, each KSM page a dup under
it).  So for N = 10:

  M = 2: 5 KSM pages of 2          chains 1, dups 5, shared 5, sharing 5
  M = 3: 3 of 3, 1 page left over  chains 1, dups 3, shared 3, sharing 6
  M = 4: 4 + 4 + 2                 chains 1, dups 3, shared 3, sharing 7

A chain whose dups go away until one is left collapses to a plain node the
next time a tree walk passes through it (stable_node_dup); with none left
the chain goes.  Which dup a merge picks (stable_node_dup): the first dup
with room, except once every stable_node_chains_prune_millisecs when the
walk prunes: then the one with the most mappings that still has room.

max_page_sharing: kstrtoint, < 2 is EINVAL, a change while any page is
shared (or any KSM page is still mapped) is EBUSY; writing the value it
already has always succeeds.
"""
import errno

import pytest

from ksm_engine import MADV_UNMERGEABLE, PAGE_SIZE

from .conftest import (PTE_KSM, flags_of, frames_of, ksm_counts, map_pages, page, set_knobs,
                       unique_page)


def chain_counts(m):
    return ksm_counts(m, "pages_shared", "pages_sharing", "pages_unshared",
                      "stable_node_chains", "stable_node_dups")


def merged(m, n, max_sharing, byte=0x42):
    set_knobs(m, max_page_sharing=max_sharing, smart_scan=0)
    p = m.spawn()
    a = map_pages(p, [page(byte)] * n)
    m.ksm.full_scan(2)
    return p, a


@pytest.mark.parametrize("n,m_,expected", [
    (10, 2, dict(pages_shared=5, pages_sharing=5, pages_unshared=0, stable_node_chains=1, stable_node_dups=5)),
    (10, 3, dict(pages_shared=3, pages_sharing=6, pages_unshared=1, stable_node_chains=1, stable_node_dups=3)),
    (10, 4, dict(pages_shared=3, pages_sharing=7, pages_unshared=0, stable_node_chains=1, stable_node_dups=3)),
    (4, 4, dict(pages_shared=1, pages_sharing=3, pages_unshared=0, stable_node_chains=0, stable_node_dups=0)),
    (5, 4, dict(pages_shared=1, pages_sharing=3, pages_unshared=1, stable_node_chains=0, stable_node_dups=0)),
    (6, 4, dict(pages_shared=2, pages_sharing=4, pages_unshared=0, stable_node_chains=1, stable_node_dups=2)),
    (7, 2, dict(pages_shared=3, pages_sharing=3, pages_unshared=1, stable_node_chains=1, stable_node_dups=3)),
])
def test_chain_counts(machine, n, m_, expected):
    p, a = merged(machine, n, m_)
    assert chain_counts(machine) == expected
    # more passes change nothing: every mapping already sits on a dup
    machine.ksm.full_scan(2)
    assert chain_counts(machine) == expected
    # each KSM page holds at most max_page_sharing mappings
    frames = [f for f, fl in zip(frames_of(p, a, n), flags_of(p, a, n)) if fl == PTE_KSM]
    assert max(frames.count(f) for f in set(frames)) <= m_
    assert len(set(frames)) == expected["pages_shared"]


def test_chain_introspection(machine):
    merged(machine, 10, 3)
    nodes = machine.ksm.stable_nodes()
    chains = [n for n in nodes if n["kind"] == "chain"]
    dups = [n for n in nodes if n["kind"] == "dup"]
    assert len(chains) == 1 and len(dups) == 3
    assert chains[0]["rmap_hlist_len"] == 3                       # a chain's length: its dups
    assert sorted(d["rmap_hlist_len"] for d in dups) == [3, 3, 3]
    assert all(d["chain"] == chains[0]["node"] for d in dups)


def test_chains_per_content(machine):
    set_knobs(machine, max_page_sharing=2, smart_scan=0)
    p, q = machine.spawn(), machine.spawn()
    map_pages(p, [page(1)] * 4 + [page(2)] * 2 + [unique_page(0)])
    map_pages(q, [page(2)] * 3 + [page(3)] * 2)
    machine.ksm.full_scan(2)
    # content 1: 2 KSM pages (chain); content 2: 5 pages -> 2 KSM pages of 2
    # and one left over (chain); content 3: one KSM page (plain)
    assert chain_counts(machine) == dict(pages_shared=5, pages_sharing=5, pages_unshared=2,
                                         stable_node_chains=2, stable_node_dups=4)


def test_chain_collapses_when_dups_go(machine):
    p, a = merged(machine, 4, 2)
    assert chain_counts(machine) == dict(pages_shared=2, pages_sharing=2, pages_unshared=0,
                                         stable_node_chains=1, stable_node_dups=2)
    # both mappings of the second KSM page (pages 3 and 4) change
    p.write(a + 2 * PAGE_SIZE, page(0x10))
    p.write(a + 3 * PAGE_SIZE, page(0x11))
    st = chain_counts(machine)
    assert (st["pages_shared"], st["pages_sharing"]) == (1, 1)
    # the freed KSM page's dup left at once (the kernel finds it stale on
    # its next walk); the chain, with one dup left, waits for a walk
    assert (st["stable_node_chains"], st["stable_node_dups"]) == (1, 1)
    # a walk through the chain collapses it (pass 1: the written pages are
    # volatile; pass 2: they search the stable tree)
    machine.ksm.full_scan(2)
    assert chain_counts(machine) == dict(pages_shared=1, pages_sharing=1, pages_unshared=2,
                                         stable_node_chains=0, stable_node_dups=0)
    kinds = [n["kind"] for n in machine.ksm.stable_nodes()]
    assert kinds == ["plain"]
    machine.check()


def test_chain_collapse_on_merge_into_it(machine):
    # 6 pages at M=4: dups of 4 and 2.  Unmapping the 4 leaves one dup;
    # a new copy of the content then merges into it through the chain,
    # which collapses on the way.
    p, a = merged(machine, 6, 4)
    assert chain_counts(machine)["stable_node_chains"] == 1
    first = frames_of(p, a, 6)
    p.munmap(a, 4 * PAGE_SIZE)
    q = machine.spawn()
    b = map_pages(q, [page(0x42)])
    machine.ksm.full_scan(2)
    assert chain_counts(machine) == dict(pages_shared=1, pages_sharing=2, pages_unshared=0,
                                         stable_node_chains=0, stable_node_dups=0)
    assert frames_of(q, b, 1) == [first[5]]


def test_all_dups_gone_frees_the_chain(machine):
    p, a = merged(machine, 4, 2)
    p.madvise(a, 4 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert chain_counts(machine) == dict(pages_shared=0, pages_sharing=0, pages_unshared=0,
                                         stable_node_chains=0, stable_node_dups=0)
    assert machine.ksm.stable_nodes() == []
    assert machine.meminfo()["ksm_pages"] == 0


def test_dup_choice_follows_prune_schedule(machine_factory):
    """stable_node_dup(): without a prune due, the first dup with room (the
    list head); with one due, the dup with the most mappings."""
    def scenario(advance_clock):
        now = [0]
        m = machine_factory(clock=lambda: now[0])
        set_knobs(m, max_page_sharing=4, smart_scan=0)
        p = m.spawn()
        a = map_pages(p, [page(0x42)] * 6)
        m.ksm.full_scan(2)
        # pages 2..4 joined page 2's frame (K1, 4 mappings); pages 5,6 K2
        f = frames_of(p, a, 6)
        k1, k2 = f[1], f[5]
        assert f == [k1] * 4 + [k2] * 2
        p.munmap(a, PAGE_SIZE)                  # K1: 3 mappings, K2 (the head): 2
        q = m.spawn()
        b = map_pages(q, [page(0x42)])
        m.ksm.full_scan(1)                      # q's page: checksum recorded
        if advance_clock:
            now[0] = 10_000                     # prune due (2000 ms)
        m.ksm.full_scan(1)                      # q's page merges into a dup
        return frames_of(q, b, 1)[0], k1, k2, m

    got, k1, k2, m = scenario(advance_clock=False)
    assert got == k2
    assert chain_counts(m)["pages_sharing"] == 4  # 3+3 mappings on 2 KSM pages
    got, k1, k2, m = scenario(advance_clock=True)
    assert got == k1
    assert chain_counts(m)["pages_sharing"] == 4  # 4+2


def test_max_page_sharing_einval(machine):
    for bad in ("1", "0", "-1", "-2147483648"):
        with pytest.raises(OSError) as e:
            machine.ksm.sysfs["max_page_sharing"] = bad
        assert e.value.errno == errno.EINVAL
    assert machine.ksm.sysfs["max_page_sharing"] == "256\n"
    machine.ksm.sysfs["max_page_sharing"] = "2"
    assert machine.ksm.sysfs["max_page_sharing"] == "2\n"
    machine.ksm.sysfs["max_page_sharing"] = "2147483647"
    assert machine.ksm.sysfs["max_page_sharing"] == "2147483647\n"


def test_max_page_sharing_ebusy_while_shared(machine):
    p, a = merged(machine, 10, 4)
    with pytest.raises(OSError) as e:
        machine.ksm.sysfs["max_page_sharing"] = "8"
    assert e.value.errno == errno.EBUSY
    assert machine.ksm.sysfs["max_page_sharing"] == "4\n"
    machine.ksm.sysfs["max_page_sharing"] = "4"        # the same value: fine
    with pytest.raises(OSError) as e:                  # EINVAL comes first
        machine.ksm.sysfs["max_page_sharing"] = "1"
    assert e.value.errno == errno.EINVAL
    set_knobs(machine, run=2)
    machine.ksm.sysfs["max_page_sharing"] = "8"
    assert machine.ksm.sysfs["max_page_sharing"] == "8\n"
    set_knobs(machine, run=1)
    machine.ksm.full_scan(2)
    assert chain_counts(machine) == dict(pages_shared=2, pages_sharing=8, pages_unshared=0,
                                         stable_node_chains=1, stable_node_dups=2)


def test_max_page_sharing_ebusy_while_a_ksm_page_is_mapped(machine):
    # pages_shared is 0, but a fork child still maps the KSM page: the
    # kernel cannot remove that stable node (remove_stable_node: EBUSY)
    p, a = merged(machine, 2, 256)
    child = p.fork()
    p.madvise(a, 2 * PAGE_SIZE, MADV_UNMERGEABLE)
    assert ksm_counts(machine, "pages_shared")["pages_shared"] == 0
    assert flags_of(child, a, 2) == [PTE_KSM] * 2
    with pytest.raises(OSError) as e:
        machine.ksm.sysfs["max_page_sharing"] = "3"
    assert e.value.errno == errno.EBUSY
    child.exit()
    machine.ksm.sysfs["max_page_sharing"] = "3"
    assert machine.ksm.sysfs["max_page_sharing"] == "3\n"


def test_merge_across_nodes_ebusy_while_shared(machine):
    merged(machine, 3, 256)
    with pytest.raises(OSError) as e:
        machine.ksm.sysfs["merge_across_nodes"] = "0"
    assert e.value.errno == errno.EBUSY
    assert machine.ksm.sysfs["merge_across_nodes"] == "1\n"
    machine.ksm.sysfs["merge_across_nodes"] = "1"
