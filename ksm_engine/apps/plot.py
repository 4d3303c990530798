"""Pictures of a KSM run: the demo's history over full scans.

matplotlib is an optional extra (``pip install 'ksm-engine[plot]'``); it
is imported only here and only when a picture is asked for, with the Agg
backend (no display needed).  The CLI calls check_available() and
check_output_path() before any work starts, so a missing matplotlib or an
unwritable destination is reported at once, not after the run.

A history is a list of dicts, one per full scan (``full_scan`` 0 is the
state before the first scan), as ksm_engine.apps.demo records it:
pages_shared, pages_sharing, pages_unshared, pages_volatile and
balloon_loaned_pages are drawn against full_scan.
"""
import contextlib
import os

import numpy as np

INSTALL_HINT = "pip install 'ksm-engine[plot]'"
# (history field, legend label, line style, line width) in drawing order;
# the balloon first and wide, since it follows pages_sharing closely.
SERIES = (
    ("balloon_loaned_pages", "balloon loaned pages (CMM)", "-", 6),
    ("pages_shared", "pages_shared", "-", 1.5),
    ("pages_sharing", "pages_sharing", "-", 1.5),
    ("pages_unshared", "pages_unshared", "--", 1.5),
    ("pages_volatile", "pages_volatile", ":", 1.5),
)


class PlotUnavailable(ImportError):
    """matplotlib cannot be imported; the message says how to install it."""


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or PlotUnavailable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(
            f"--plot needs matplotlib, which is not installed ({e}); "
            f"install it with: {INSTALL_HINT}") from None
    return plt


@contextlib.contextmanager
def figure(path, **subplots):
    """plt.subplots(**subplots) as (fig, axes); leaving the block without an
    error lays the figure out and saves it to path (the format follows the
    extension); the figure is closed either way."""
    plt = _pyplot()
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def check_available():
    """Raises PlotUnavailable unless matplotlib can be imported."""
    _pyplot()


def check_output_path(path):
    """ValueError unless a picture can be written at path: its directory
    exists and is writable, and matplotlib knows its extension."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory")
    if not os.path.isdir(directory):
        raise ValueError(f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise ValueError(f"{path}: directory {directory} is not writable")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    plt = _pyplot()
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if ext not in formats:
        raise ValueError(f"{path}: unknown picture format {ext!r} "
                         f"(use one of: {', '.join(sorted(formats))})")


def plot_history(history, path, title=None):
    """Draws the history's series against full scans into path (the format
    follows the extension).  Returns path."""
    with figure(path, figsize=(9, 5), dpi=110) as (fig, ax):
        x = [h["full_scan"] for h in history]
        for key, label, style, width in SERIES:
            ax.plot(x, [h[key] for h in history], style, linewidth=width,
                    alpha=0.35 if width > 2 else 1.0, marker="o", markersize=3, label=label)
        ax.set_xlabel("full scans")
        ax.set_ylabel("pages (4 KiB)")
        ax.set_title(title or "KSM counters and the CMM balloon over full scans")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    return path


def plot_sharing_matrix(names, matrix, path, title=None):
    """A heatmap of the fleet's sharing matrix (distinct contents each
    pair of sources both hold; the diagonal, a source's own, is left
    blank so that the pairs set the colour scale).  Returns path."""
    m = np.array(matrix, dtype=float)
    np.fill_diagonal(m, np.nan)
    n = len(names)
    side = min(4 + 0.35 * n, 30)
    with figure(path, figsize=(side + 2, side), dpi=110) as (fig, ax):
        im = ax.imshow(m, cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize="small")
        ax.set_yticklabels(names, fontsize="small")
        fig.colorbar(im, ax=ax, label="distinct non-zero contents held by both")
        ax.set_title(title or "Sharing between sources (pages of content both hold)")
    return path
