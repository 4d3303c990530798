"""The fleet's reports, from the opened files and their signature table.

  fleet_report()    all of it as one dict (the --json shape, docs/fleet.md):
    sources           each file's source, host, pages, zero pages, contents
    all_on_one_host   every source on one host: {"runs": [use_zero_pages 0, 1]}
                      in the estimate's shape (counts.run_report)
    placed_today      per host (the --placement CSV, else each file's host)
                      the same runs, and their total
    sharing           the matrix of distinct non-zero contents each pair of
                      sources both hold (diagonal: the source's own), and the
                      top pairs
    histogram         the reference-count histogram (histogram.py)
    placement         with --hosts/--host-ram: the searched plan beside today's
                      and a random one (placement.py)
"""
import csv
import io
import os

import numpy as np

from ... import PAGE_SIZE
from . import placement as plc
from .counts import group_counters
from .histogram import histogram

TOP_PAIRS = 10
MATRIX_CHUNK = 1 << 16       # signature rows per dense block of the sharing matrix
RUN_TOTALS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
              "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "rmap_items",
              "general_profit", "saving_pages", "saving_bytes", "memory_after_pages")


class PlacementError(ValueError):
    """A --placement CSV that does not name each source exactly once."""


def _source_row(f):
    m = f.meta
    return {"name": m["source"], "kind": m["kind"], "host": m["host"], "file": f.path,
            "pages": m["pages"], "bytes": m["pages"] * PAGE_SIZE,
            "zero_pages": m["zero_pages"], "contents": m["contents"], "time": m["time"]}


def sharing_matrix(table, nsources):
    """int64 [a][b]: distinct non-zero contents held by both a and b."""
    out = np.zeros((nsources, nsources), np.float64)       # exact below 2^53
    rows = table.row_of_pair
    n = len(table.mult)
    for r0 in range(0, n, MATRIX_CHUNK):
        r1 = min(n, r0 + MATRIX_CHUNK)
        lo, hi = np.searchsorted(rows, [r0, r1])
        p = np.zeros((r1 - r0, nsources), np.float64)
        p[rows[lo:hi] - r0, table.src[lo:hi]] = 1.0
        out += p.T @ (p * table.mult[r0:r1, None])
    return out.astype(np.int64)


def top_pairs(matrix, names, k=TOP_PAIRS):
    a, b = np.triu_indices(len(names), 1)
    v = matrix[a, b]
    order = np.lexsort((b, a, -v))[:k]
    return [{"a": names[a[i]], "b": names[b[i]], "contents": int(v[i]),
             "bytes": int(v[i]) * PAGE_SIZE} for i in order if v[i] > 0]


def read_placement(text, files):
    """Host of each source from CSV lines "source,host" (a header line
    "source,host", blank lines and #-comments are skipped).  A source is
    named by its name, its file's path or the file's base name."""
    names = {}
    for i, f in enumerate(files):
        for key in {f.meta["source"], f.path, os.path.basename(f.path)}:
            names.setdefault(key, set()).add(i)
    hosts = [None] * len(files)
    for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2:
            raise PlacementError(f"line {n}: want source,host, got {','.join(row)!r}")
        src, host = row[0].strip(), row[1].strip()
        if n == 1 and (src, host) == ("source", "host"):
            continue
        hit = names.get(src)
        if not hit:
            raise PlacementError(f"line {n}: no source {src!r} among the fingerprint files")
        if len(hit) > 1:
            raise PlacementError(f"line {n}: {src!r} names several sources; name the file instead")
        i = next(iter(hit))
        if hosts[i] is not None:
            raise PlacementError(f"line {n}: {src!r} placed twice")
        if not host:
            raise PlacementError(f"line {n}: no host for {src!r}")
        hosts[i] = host
    missing = [files[i].meta["source"] for i, h in enumerate(hosts) if h is None]
    if missing:
        raise PlacementError(f"no host for {', '.join(missing)}")
    return hosts


def _total(per_host):
    runs = []
    for z in (0, 1):
        t = {"use_zero_pages": z}
        for k in RUN_TOTALS:
            t[k] = sum(h["runs"][z][k] for h in per_host)
        pages = sum(h["pages"] for h in per_host)
        t["saving_percent"] = round(100.0 * t["saving_pages"] / pages, 3) if pages else 0.0
        runs.append(t)
    return {"runs": runs}


def hosts_report(table, hosts, names, pages, zeros, knobs):
    """Per host (in first-seen order): its sources and group counters; the total."""
    order = list(dict.fromkeys(hosts))
    per_host = []
    for h in order:
        members = np.array([x == h for x in hosts])
        r = {"host": h, "sources": [n for n, x in zip(names, hosts) if x == h]}
        r.update(group_counters(table, members, pages, zeros, knobs))
        per_host.append(r)
    return {"hosts": per_host, "total": _total(per_host)}


def _plan_report(plan, table, names, pages, zeros, knobs, cap, nhosts, ev):
    hosts = [f"host{h + 1}" for h in plan.assign]
    rep = hosts_report(table, hosts, names, pages, zeros, knobs)
    z = int(knobs["use_zero_pages"])
    for h in rep["hosts"]:
        h["memory_after_pages"] = h["runs"][z]["memory_after_pages"]
        h["fits"] = h["memory_after_pages"] <= cap
    exact = rep["total"]["runs"][z]["saving_pages"]
    assert exact == plan.saving, (exact, plan.saving)     # Evaluator == count model
    return {"fits": plan.fits, "overflow_pages": plan.overflow,
            "overflow_bytes": plan.overflow * PAGE_SIZE, "saving_pages": plan.saving,
            "saving_bytes": plan.saving * PAGE_SIZE, "hosts_used": len(rep["hosts"]),
            "hosts": rep["hosts"], "assignment": dict(zip(names, hosts))}


def placement_report(table, names, pages, zeros, knobs, nhosts, host_ram, today=None, seed=0):
    """The searched plan, today's (host names given, when known) and a
    random one, for nhosts hosts of host_ram bytes, optimising the
    use_zero_pages run of knobs.  "feasible" false with "short_by_bytes"
    when no plan fits."""
    cap = host_ram // PAGE_SIZE
    ev = plc.Evaluator(table, pages, zeros, knobs)
    best = plc.search(ev, nhosts, cap, seed=seed)
    plans = {"search": _plan_report(best, table, names, pages, zeros, knobs, cap, nhosts, ev)}
    if today is not None:
        ids = {h: i for i, h in enumerate(dict.fromkeys(today))}
        t = plc._plan(ev, np.array([ids[h] for h in today]), len(ids), cap)
        rep = _plan_report(t, table, names, pages, zeros, knobs, cap, len(ids), ev)
        for h, name in zip(rep["hosts"], ids):
            h["host"] = name
        rep["assignment"] = dict(zip(names, today))
        plans["today"] = rep
    rnd = plc.random_plan(ev, nhosts, cap, seed=seed)
    plans["random"] = _plan_report(rnd, table, names, pages, zeros, knobs, cap, nhosts, ev)
    # infeasible: the best plan's overflow, and the floor no plan can beat
    floor = 0 if best.fits else plc.lower_bound_shortfall(ev, nhosts, cap)
    return {"hosts": nhosts, "host_ram_bytes": host_ram, "host_ram_pages": cap,
            "use_zero_pages": int(knobs["use_zero_pages"]), "seed": seed,
            "feasible": best.fits, "short_by_pages": best.overflow,
            "short_by_bytes": best.overflow * PAGE_SIZE, "short_at_least_pages": floor,
            "short_at_least_bytes": floor * PAGE_SIZE, "plans": plans}


def fleet_report(files, table, knobs, *, placement_hosts=None, hosts=None, host_ram=None,
                 seed=0):
    """Every report as one dict (see the module doc).  placement_hosts:
    today's host of each source (None: each file's own host)."""
    names = [f.meta["source"] if sum(g.meta["source"] == f.meta["source"] for g in files) == 1
             else f"{f.meta['host']}:{f.meta['source']}" for f in files]
    pages = np.array([f.meta["pages"] for f in files], np.int64)
    zeros = np.array([f.meta["zero_pages"] for f in files], np.int64)
    everyone = np.ones(len(files), bool)
    today_from = "csv" if placement_hosts else "metadata"
    today = placement_hosts or [f.meta["host"] for f in files]
    matrix = sharing_matrix(table, len(files))
    out = {"sources": [dict(_source_row(f), name=n) for f, n in zip(files, names)],
           "pages": int(pages.sum()), "bytes": int(pages.sum()) * PAGE_SIZE,
           "zero_pages": int(zeros.sum()), "contents": int(table.mult.sum()),
           "signatures": len(table.mult), "knobs": dict(knobs),
           "all_on_one_host": group_counters(table, everyone, pages, zeros, knobs),
           "placed_today": dict(hosts_report(table, today, names, pages, zeros, knobs),
                                placement_from=today_from),
           "sharing": {"sources": names, "matrix": matrix.tolist(),
                       "top_pairs": top_pairs(matrix, names)},
           "histogram": histogram(table, int(zeros.sum()), knobs)}
    if hosts is not None:
        out["placement"] = placement_report(table, names, pages, zeros, knobs, hosts, host_ram,
                                            today=today, seed=seed)
    return out
