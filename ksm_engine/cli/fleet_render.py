"""Text of `ksm-engine fleet` and `ksm-engine fingerprint` (their --json is
the result dict itself)."""
from .. import PAGE_SIZE as PAGE
from ..units import format_size
from . import render
from .render import print_json  # noqa: F401  (the commands print JSON through here)

COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "general_profit")


def _pages(n):
    return f"{n} ({format_size(n * PAGE)})"


def _runs_rows(runs):
    rows = [[k, *(r[k] for r in runs)] for k in COUNTERS]
    rows.append(["saving", *(f"{format_size(r['saving_bytes'])} ({r['saving_percent']:.2f}%)"
                             for r in runs)])
    rows.append(["memory after KSM", *(format_size(r["memory_after_pages"] * PAGE) for r in runs)])
    return rows


def _runs_table(runs):
    return render.table(_runs_rows(runs), headers=["", "use_zero_pages=0", "use_zero_pages=1"],
                        align="lrr")


def _per_host_table(rep, z):
    rows = []
    for h in rep["hosts"]:
        r = h["runs"][z]
        rows.append([h["host"], len(h["sources"]), format_size(h["pages"] * PAGE),
                     r["pages_sharing"], r["ksm_zero_pages"],
                     f"{format_size(r['saving_bytes'])} ({r['saving_percent']:.2f}%)",
                     format_size(r["memory_after_pages"] * PAGE)])
    t = rep["total"]["runs"][z]
    rows.append(["total", sum(len(h["sources"]) for h in rep["hosts"]),
                 format_size(sum(h["pages"] for h in rep["hosts"]) * PAGE),
                 t["pages_sharing"], t["ksm_zero_pages"],
                 f"{format_size(t['saving_bytes'])} ({t['saving_percent']:.2f}%)",
                 format_size(t["memory_after_pages"] * PAGE)])
    return render.table(rows, headers=["host", "sources", "memory", "pages_sharing",
                                       "ksm_zero_pages", "saving", "after KSM"],
                        align="lrrrrrr")


def _histogram(h):
    rows = [[b["copies"], b["contents"], b["pages"], format_size(b["pages"] * PAGE),
             b["kept_pages"], format_size(b["kept_pages"] * PAGE)] for b in h["buckets"]]
    z = h["zero"]
    rows.append(["zero", "-", z["pages"], format_size(z["pages"] * PAGE),
                 z["kept_pages"]["use_zero_pages=0"],
                 format_size(z["kept_pages"]["use_zero_pages=0"] * PAGE)])
    t = h["total"]
    rows.append(["Total", t["contents"], t["pages"], format_size(t["pages"] * PAGE),
                 t["kept_pages"], format_size(t["kept_pages"] * PAGE)])
    return "\n".join([
        "Simulated KSM histogram (copies of each distinct content, all on one host):",
        render.table(rows, headers=["copies", "contents", "pages", "size", "kept pages",
                                    "kept size"], align="lrrrrr"),
        f"dedup = {h['dedup']:.2f} (non-zero contents: {h['dedup_nonzero']:.2f}); "
        "zero pages kept with use_zero_pages=0, none with use_zero_pages=1"])


def _placement(p):
    z = p["use_zero_pages"]
    out = [f"Placement on {p['hosts']} hosts of {format_size(p['host_ram_bytes'])} "
           f"(use_zero_pages={z}, seed {p['seed']}):"]
    rows = []
    for name, plan in p["plans"].items():
        worst = max(h["memory_after_pages"] for h in plan["hosts"])
        rows.append([name, plan["hosts_used"], format_size(plan["saving_bytes"]),
                     format_size(worst * PAGE),
                     "yes" if plan["fits"] else f"no (over by {format_size(plan['overflow_bytes'])})"])
    out.append(render.table(rows, headers=["plan", "hosts", "saving", "fullest host", "fits"],
                            align="lrrrl"))
    out.append("")
    out.append("searched plan:")
    for h in p["plans"]["search"]["hosts"]:
        out.append(f"  {h['host']}: {', '.join(h['sources'])} -> "
                   f"{format_size(h['memory_after_pages'] * PAGE)} after KSM")
    return "\n".join(out)


def infeasible_message(p):
    return (f"no placement on {p['hosts']} hosts of {format_size(p['host_ram_bytes'])} fits: "
            f"the best plan found needs {format_size(p['short_by_bytes'])} more "
            f"({p['short_by_pages']} pages) in total, and no plan can need less than "
            f"{format_size(p['short_at_least_bytes'])}")


def render_fleet(r):
    c = r["cluster"]
    where = ("embedded local cluster" if c["scheduler"] == "local" else c["scheduler"])
    out = [f"ksm-engine fleet: {len(r['sources'])} source(s), {_pages(r['pages'])} pages, "
           f"{r['contents']} distinct non-zero contents, {r['zero_pages']} zero pages; "
           f"{where}, {c['workers']} worker(s)", ""]
    out.append(render.table(
        [[s["name"], s["kind"], s["host"], s["pages"], format_size(s["bytes"]), s["zero_pages"],
          s["contents"]] for s in r["sources"]],
        headers=["source", "kind", "host", "pages", "size", "zero pages", "contents"],
        align="lllrrrr"))
    out += ["", "1. All on one host:", _runs_table(r["all_on_one_host"]["runs"]), ""]
    t = r["placed_today"]
    out += [f"2. As placed today (from the {'--placement CSV' if t['placement_from'] == 'csv' else 'files'}"
            "), use_zero_pages=0:", _per_host_table(t, 0), ""]
    s = r["sharing"]
    out.append("3. Sharing between sources (distinct non-zero contents both hold; "
               "the whole matrix in --json):")
    if s["top_pairs"]:
        out.append(render.table([[p["a"], p["b"], p["contents"], format_size(p["bytes"])]
                                 for p in s["top_pairs"]],
                                headers=["source", "source", "contents", "size"], align="llrr"))
    else:
        out.append("  no content is held by two sources")
    out += ["", "4. " + _histogram(r["histogram"])]
    if "placement" in r:
        out += ["", "5. " + _placement(r["placement"])]
    if "plot" in r:
        out += ["", f"plot written to {r['plot']}"]
    return "\n".join(out)


def render_fingerprint(r):
    out = [f"ksm-engine fingerprint: {len(r['files'])} file(s) in {r['output']} (host {r['host']})",
           ""]
    out.append(render.table(
        [[f["source"], f["kind"], f["pages"], format_size(f["pages"] * PAGE), f["zero_pages"],
          f["contents"], f"{f['seconds']:.2f} s", f["file"]] for f in r["files"]],
        headers=["source", "kind", "pages", "size", "zero pages", "contents", "time", "file"],
        align="llrrrrrl"))
    if r["skipped"]:
        out += ["", f"skipped {len(r['skipped'])} source(s):"]
        out += [f"  {s['source']}: {s['reason']}" for s in r["skipped"]]
    return "\n".join(out)
