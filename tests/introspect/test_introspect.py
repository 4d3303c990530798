"""Looking inside KSM: rmap_items per process and stable nodes."""
from ksm_engine import MADV_MERGEABLE, PAGE_SIZE, Machine


def _setup(max_page_sharing="256"):
    m = Machine(ram="16MiB")
    m.ksm.sysfs["max_page_sharing"] = max_page_sharing
    p = m.spawn()
    a = p.mmap(12 * PAGE_SIZE)
    p.write(a, b"\x11" * (5 * PAGE_SIZE) + bytes(range(256)) * 16 * 6 + b"\x22" * PAGE_SIZE)
    p.madvise(a, 12 * PAGE_SIZE, MADV_MERGEABLE)
    return m, p, a


def test_rmap_items_follow_the_scan():
    m, p, a = _setup()
    assert p.rmap_items() == []
    m.ksm.full_scan(1)
    items = p.rmap_items()
    assert [i["address"] for i in items] == [a + k * PAGE_SIZE for k in range(12)]
    assert all(i["state"] == "volatile" and i["checksum_valid"] for i in items)
    m.ksm.full_scan(1)
    states = [i["state"] for i in p.rmap_items()]
    assert states == ["stable"] * 11 + ["unstable"]
    nodes = {i["stable_node"] for i in p.rmap_items() if i["state"] == "stable"}
    assert len(nodes) == 2
    p.write(a + 11 * PAGE_SIZE, b"\x33")
    assert p.rmap_items()[11]["checksum_valid"] is False


def test_stable_nodes_show_chains():
    m, p, a = _setup(max_page_sharing="2")
    m.ksm.full_scan(3)
    nodes = m.ksm.stable_nodes()
    chains = [n for n in nodes if n["kind"] == "chain"]
    dups = [n for n in nodes if n["kind"] == "dup"]
    st = m.ksm.stats
    assert len(chains) == st["stable_node_chains"] > 0
    assert len(dups) == st["stable_node_dups"]
    assert sum(n["rmap_hlist_len"] for n in nodes if n["kind"] != "chain") == st["pages_shared"] + st["pages_sharing"]
    assert all(n["rmap_hlist_len"] <= 2 for n in dups)
    for c in chains:
        assert c["rmap_hlist_len"] == sum(1 for d in dups if d["chain"] == c["node"])
