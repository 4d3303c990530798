"""`ksm-engine demo` end to end: its report, --json, progress, bad input.

The expected counters follow from the workload's layout (reported in the
JSON): the common image is one KSM page per image page shared by every
guest; the zero-filled pages of all guests are one content, held by
ceil(zeros / max_page_sharing) KSM pages under one chain (or, with
use_zero_pages=1, the zero page itself); volatile and unique pages never
merge.  The sizes below keep zeros % max_page_sharing away from 1 (a lone
last zero page would find no partner)."""
import json
import math

import pytest

from .conftest import (BAD_KNOB_SETS, PAGE, assert_usage_error, run_cli, run_cli_on_a_terminal,
                       run_main)

SMALL = ["--guests", "3", "--guest-size", "2MiB"]


def demo_json(*args):
    r = run_cli("demo", *args, "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""          # no progress when --json / not a tty
    return json.loads(r.stdout)


def expected(doc, use_zero_pages=False, max_page_sharing=256):
    g = doc["config"]["guests"]
    lay = doc["config"]["layout"]
    zeros = lay["zero"] * g
    if use_zero_pages:
        return {"pages_shared": lay["image"], "pages_sharing": lay["image"] * (g - 1),
                "ksm_zero_pages": zeros, "stable_node_chains": 0, "stable_node_dups": 0}
    dups = math.ceil(zeros / max_page_sharing)
    chains = 1 if dups > 1 else 0
    return {"pages_shared": lay["image"] + dups,
            "pages_sharing": lay["image"] * (g - 1) + zeros - dups,
            "ksm_zero_pages": 0, "stable_node_chains": chains,
            "stable_node_dups": dups if chains else 0}


def check_consistent(doc, freed_pages):
    """Layout, memory, balloon and history agree with each other."""
    cfg, mem, b, c = doc["config"], doc["memory"], doc["balloon"], doc["counters"]
    lay = cfg["layout"]
    assert sum(lay.values()) == cfg["pages_per_guest"] == cfg["guest_size"] // PAGE
    assert lay["volatile"] >= 1 and lay["unique"] >= 1
    pages = cfg["guests"] * cfg["pages_per_guest"]
    # Pages mapped to the zero page lose their rmap_items, as in the kernel.
    assert c["rmap_items"] == pages - c["ksm_zero_pages"]
    assert mem["used_pages_without_ksm"] == pages
    assert mem["freed_pages"] == freed_pages
    assert mem["used_pages"] == pages - freed_pages
    # The balloon loaned exactly what KSM freed, and the hypervisor holds it.
    assert b["loaned_kb"] == b["loaned_target_kb"] == b["hv_loan_target_kb"] == freed_pages * 4
    assert b["hv_loaned_kb"] == b["loaned_kb"]
    assert b["totalram_kb"] == b["totalram_kb_before"] - b["loaned_kb"]
    assert b["balloon_inflate"] == freed_pages and b["balloon_deflate"] == 0
    # Each guest's ksm_stat adds up to the global counters.
    assert [p["name"] for p in doc["processes"]] == [f"guest{i}" for i in range(cfg["guests"])]
    assert sum(p["ksm_rmap_items"] for p in doc["processes"]) == c["rmap_items"]
    assert sum(p["ksm_merging_pages"] for p in doc["processes"]) == c["pages_shared"] + c["pages_sharing"]
    assert all(p["ksm_mergeable"] == "yes" for p in doc["processes"])
    # History: one entry before the first scan, then one per full scan.
    h = doc["history"]
    assert [e["full_scan"] for e in h] == list(range(doc["full_scans"] + 1))
    assert h[0]["pages_sharing"] == 0 and h[0]["balloon_loaned_pages"] == 0
    # guest0 boots first, the next one after each full scan
    assert [e["guests"] for e in h] == [min(max(k, 1), cfg["guests"]) for k in range(len(h))]
    assert all(a["t"] < b_["t"] for a, b_ in zip(h, h[1:]))
    assert h[-1]["balloon_loaned_pages"] == freed_pages
    assert h[-1]["pages_sharing"] == c["pages_sharing"]
    assert all(e["balloon_loaned_pages"] <= e["pages_sharing"] + e["ksm_zero_pages"] for e in h)


def test_json_counters_follow_the_layout():
    doc = demo_json(*SMALL)
    assert doc["settled"] is True
    want = expected(doc)
    assert {k: doc["counters"][k] for k in want} == want
    assert doc["counters"]["pages_volatile"] >= 3 * doc["config"]["layout"]["volatile"]
    check_consistent(doc, doc["counters"]["pages_sharing"])
    assert doc["simulated_seconds"] > 0


def test_use_zero_pages_and_knobs():
    doc = demo_json(*SMALL, "--set", "use_zero_pages=1", "--set", "pages_to_scan=300")
    want = expected(doc, use_zero_pages=True)
    assert {k: doc["counters"][k] for k in want} == want
    assert doc["config"]["knobs"] == {"use_zero_pages": "1", "pages_to_scan": "300"}
    check_consistent(doc, doc["counters"]["pages_sharing"] + doc["counters"]["ksm_zero_pages"])


def test_max_page_sharing_makes_more_dups():
    doc = demo_json("--guests", "2", "--guest-size", "1MiB", "--set", "max_page_sharing=16")
    want = expected(doc, max_page_sharing=16)
    assert want["stable_node_dups"] > 2
    assert {k: doc["counters"][k] for k in want} == want


def test_same_seed_same_run_other_seed_same_counters():
    a = demo_json(*SMALL, "--seed", "7")
    b = demo_json(*SMALL, "--seed", "7")
    c = demo_json(*SMALL, "--seed", "8")
    for d in (a, b, c):
        d.pop("seconds")
    assert a == b
    assert c["config"]["seed"] == 8 and c["counters"] == a["counters"]


def test_text_report():
    r = run_cli("demo", *SMALL)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert out.startswith("ksm-engine demo: 3 guests x 2.0 MiB")
    assert "KSM settled after" in out
    for heading in ("KSM counters (/sys/kernel/mm/ksm)", "Guests (/proc/PID/ksm_stat)",
                    "Memory", "CMM balloon (loaned back to the hypervisor)"):
        assert heading in out
    doc = demo_json(*SMALL)
    lines = out.splitlines()
    counters = dict(line.split() for line in lines[lines.index("KSM counters (/sys/kernel/mm/ksm)") + 1:]
                    [:len(doc["counters"])])
    assert {k: int(v) for k, v in counters.items()} == doc["counters"]
    guest_rows = [line.split() for line in lines if line.startswith("guest")]
    assert [row[0] for row in guest_rows] == ["guest0", "guest1", "guest2"]
    assert [int(row[4]) for row in guest_rows] == [p["ksm_merging_pages"] for p in doc["processes"]]
    assert f"loaned_kb                {doc['balloon']['loaned_kb']} kB".split() in \
        [line.split() for line in lines]


def test_progress_on_a_terminal_only():
    r, tty = run_cli_on_a_terminal("demo", *SMALL)
    assert r.returncode == 0
    assert "full scan 1 (t=" in tty and "pages_sharing" in tty
    assert tty.endswith("\r")        # the line is wiped at the end


def test_not_settled_is_exit_1():
    r = run_cli("demo", *SMALL, "--max-full-scans", "2", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["settled"] is False and doc["full_scans"] == 2


@pytest.mark.parametrize("args,needle", BAD_KNOB_SETS + [
    (["--guest-size", "1000"], "not a multiple of the page size 4096"),
    (["--guest-size", "12x"], "--guest-size: not a size: '12x'"),
    (["--guest-size=-4K"], "--guest-size: not a size"),
    (["--guest-size", "16K"], "guest size must be at least"),
    (["--guests", "0"], "guests must be at least 1"),
    (["--guests", "two"], "invalid int value"),
    (["--guests", "100000", "--guest-size", "1G"], "but this host has only"),
    (["--set", "pages_to_scan=lots"], "(EINVAL)"),
    (["--set", "run=1"], "the demo writes run itself"),
    (["--set", "novalue"], "--set wants KNOB=VALUE"),
    (["--max-full-scans", "0"], "max_full_scans must be at least 1"),
])
def test_bad_input(args, needle):
    assert_usage_error(run_main("demo", *args), needle)
