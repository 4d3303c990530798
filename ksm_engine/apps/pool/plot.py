"""Pictures of a pool run: pool use, loans and hypervisor paging over time,
per partition (ksm_engine.apps.plot's conventions: matplotlib optional,
Agg backend, checked before the run by the CLI).

plot_pool(runs, path): ``runs`` is {label: run_pool result}; one column per
run (one for a plain run, three for --compare), three rows sharing the time
axis: the pool (its size, backed pages, free pages, pages on the paging
device), the
pages each partition has loaned (CMM balloon), the pages of each partition
the hypervisor has paged out.
"""
from ..plot import figure

ROWS = (("pool", "pool pages (4 KiB)"), ("loaned_pages", "loaned pages (CMM)"),
        ("paged_pages", "hypervisor-paged pages"))


def plot_pool(runs, path, title=None):
    """Draws ``runs`` into ``path`` (format from the extension); returns path."""
    cols = len(runs)
    with figure(path, nrows=len(ROWS), ncols=cols, figsize=(5.5 * cols, 9), dpi=100,
                sharex=True, squeeze=False) as (fig, axes):
        for c, (label, r) in enumerate(runs.items()):
            steps = r["steps"]
            t = [s["t"] for s in steps]
            ax = axes[0][c]
            for key, name in (("pool_pages", "pool size"), ("backed_pages", "backed"),
                              ("free_pages", "free"), ("device_used", "on the paging device")):
                ax.plot(t, [s["pool"][key] for s in steps], label=name)
            ax.set_title(label)
            names = [p["name"] for p in steps[0]["partitions"]] if steps else []
            for row, (key, ylabel) in enumerate(ROWS[1:], start=1):
                ax = axes[row][c]
                for i, n in enumerate(names):
                    ax.plot(t, [s["partitions"][i][key] for s in steps], label=n, linewidth=1.2)
            for row, (_, ylabel) in enumerate(ROWS):
                axes[row][c].set_ylabel(ylabel)
                axes[row][c].grid(True, alpha=0.3)
                axes[row][c].legend(loc="best", fontsize="x-small")
            axes[-1][c].set_xlabel("simulated seconds")
        fig.suptitle(title or "ksm-engine pool")
    return path
