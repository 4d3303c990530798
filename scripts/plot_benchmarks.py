#!/usr/bin/env python3
"""Plots for docs/benchmarks.md, drawn only from the committed raw results
in benchmarks/results/ (nothing is measured here).

  vs_kernel.json  -> docs/img/settle_vs_kernel.png: settling time of the
                     kernel and the engine per workload, one panel per
                     size (log scale), and docs/img/settle_ratio.png: the
                     ratio kernel / engine per workload and size, with the
                     5x target line
  scale.json      -> docs/img/scale.png: ns per page (settle, load+settle)
                     at the small and large sizes per workload
  run.json        -> docs/img/checksum.png: GB/s of the checksum group
                     (pytest-benchmark's JSON; skipped if absent)

    python scripts/plot_benchmarks.py [--results benchmarks/results] [--out docs/img]
Needs matplotlib (the project's "plot" extra).
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _size_label(n):
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def _save(plt, fig, out, name):
    """Lays out, writes out/name and closes the figure; returns the path."""
    fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _label_workloads(ax, names, ylabel, title, legend_size, **ticks):
    """The x axis of one bar per workload, the y label, title and legend."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, **ticks)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)


def plot_vs_kernel(plt, data, out):
    rows = data["rows"]
    sizes = sorted({r["size"] for r in rows})
    names = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 4.2), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes):
        by = {r["workload"]: r for r in rows if r["size"] == size}
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [by[n]["kernel_seconds"] for n in names], 0.4, label="kernel KSM")
        ax.bar([x + 0.2 for x in xs], [by[n]["engine_seconds"] for n in names], 0.4, label="ksm-engine")
        ax.set_yscale("log")
        ax.set_title(_size_label(size))
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    axes[0][0].set_ylabel("seconds to settle (median)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Settling time, same images, same convergence rule")
    p1 = _save(plt, fig, out, "settle_vs_kernel.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(sizes)
    for k, size in enumerate(sizes):
        by = {r["workload"]: r for r in rows if r["size"] == size}
        ax.bar([x + (k - (len(sizes) - 1) / 2) * width for x in range(len(names))],
               [by[n]["ratio"] for n in names], width, label=_size_label(size))
    ax.axhline(5, color="k", linestyle="--", linewidth=1, label="target 5x")
    ax.axhline(data["summary"]["median_ratio"], color="r", linestyle=":", linewidth=1,
               label=f"median {data['summary']['median_ratio']:.2f}x")
    _label_workloads(ax, names, "kernel seconds / engine seconds",
                     "How many times faster the engine settles than the kernel", 8,
                     rotation=30, ha="right", fontsize=8)
    return [p1, _save(plt, fig, out, "settle_ratio.png")]


def plot_scale(plt, data, out):
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["workload"] for r in rows]
    xs = range(len(names))
    series = [("per_page_small", "settle", f"settle, {rows[0]['small']} pages"),
              ("per_page_large", "settle", f"settle, {rows[0]['large']} pages"),
              ("per_page_small", "both", f"load+settle, {rows[0]['small']} pages"),
              ("per_page_large", "both", f"load+settle, {rows[0]['large']} pages")]
    w = 0.2
    for k, (size_key, what, label) in enumerate(series):
        ax.bar([x + (k - 1.5) * w for x in xs], [r[size_key][what] * 1e9 for r in rows], w, label=label)
    _label_workloads(ax, names, "ns per page (median)", "Time per page at 256 Ki and 2 Mi pages", 7,
                     fontsize=8)
    return [_save(plt, fig, out, "scale.png")]


def plot_checksum(plt, data, out):
    bench = [b for b in data["benchmarks"] if b["group"] == "checksum"]
    if not bench:
        return []
    bench.sort(key=lambda b: b["stats"]["median"])
    names = [b["name"].replace("test_", "") for b in bench]
    gbs = [b["extra_info"]["bytes"] / b["stats"]["median"] / 1e9 for b in bench]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names, gbs)
    ax.set_xlabel("GB/s (median), 64 MiB of random pages")
    ax.set_title("Page checksum: the engine's C against the xxhash package")
    return [_save(plt, fig, out, "checksum.png")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "img"))
    args = ap.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is needed: pip install -e '.[plot]'", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    made = []
    for name, fn in (("vs_kernel.json", plot_vs_kernel), ("scale.json", plot_scale),
                     ("run.json", plot_checksum)):
        data = _load(os.path.join(args.results, name))
        if data is None:
            print(f"{name}: not found, skipped")
            continue
        made += fn(plt, data, args.out)
    for p in made:
        print(f"wrote {os.path.relpath(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
