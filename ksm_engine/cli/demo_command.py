"""`ksm-engine demo`: KSM merging VM-like guests, then the CMM balloon
loaning the memory KSM freed back to the hypervisor.

The engine side is ksm_engine.apps.demo (the workload, the simulated clock, the
run); this module turns arguments into a DemoConfig and the DemoResult into
tables, JSON (--json) or a picture (--plot, ksm_engine.apps.plot).  Progress
goes to stderr, on a terminal only.
"""
import dataclasses
import os

from ..apps import plot as _plot
from ..apps.demo import DemoConfig, run_demo
from ..ksm.sysfs import KnobError
from ..machine import PAGE_SIZE
from ..units import format_size
from . import render
from .errors import EXIT_FAILURE, EXIT_USAGE, CliError, os_error
from .options import knob_assignments, size_arg

HELP = "KSM merging VM-like guests, and the CMM balloon loaning back what it freed"
DESCRIPTION = """\
Run the built-in workload: GUESTS guest processes of GUEST_SIZE each, booting
one per full scan, every guest holding a common OS image (45%: the same pages
in all guests), zero-filled pages (20%), a few volatile pages it rewrites
between every two full scans (1%), and unique pages (the rest).  ksmd runs
as in the kernel (ksm_do_scan(pages_to_scan), then sleep_millisecs) on a
simulated clock until KSM has settled; meanwhile the hypervisor stub asks
for the memory KSM has freed and the pSeries CMM balloon (cmm.c) loans it
back.

Prints the KSM counters, each guest's /proc/PID/ksm_stat, the memory KSM
freed and the balloon's figures.  Simulated time counts ksmd's sleeps only,
so the figures are the same on every machine; the same --seed gives the
same run.  --plot draws pages_shared, pages_sharing, pages_unshared,
pages_volatile and the balloon's loaned pages over full scans (needs
matplotlib: pip install 'ksm-engine[plot]')."""
EPILOG = """\
examples:
  ksm-engine demo
  ksm-engine demo --guests 8 --guest-size 64MiB --plot demo.png
  ksm-engine demo --set use_zero_pages=1 --set pages_to_scan=1000 --json

exit codes: 0 settled, 1 not settled within --max-full-scans or a runtime
failure, 2 bad arguments"""

DEFAULTS = DemoConfig()


def size_option(option):
    """argparse type: a size with units, errors naming the option."""
    def parse(text):
        try:
            return size_arg(text)
        except CliError as e:
            raise CliError(f"{option}: {e.message}") from None
    return parse


def add_arguments(p):
    p.add_argument("--guests", type=int, default=DEFAULTS.guests, metavar="N",
                   help=f"guest processes (default {DEFAULTS.guests})")
    p.add_argument("--guest-size", type=size_option("--guest-size"), default=DEFAULTS.guest_size, metavar="SIZE",
                   help=f"memory per guest, with units (default {DEFAULTS.guest_size >> 20}MiB)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help=f"seed of the guests' content (default {DEFAULTS.seed})")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="write a /sys/kernel/mm/ksm knob before KSM starts (repeatable), "
                        "e.g. pages_to_scan=1000, use_zero_pages=1")
    p.add_argument("--max-full-scans", type=int, default=DEFAULTS.max_full_scans, metavar="N",
                   help=f"give up after N full scans (default {DEFAULTS.max_full_scans})")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the history over full scans (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def config_from_args(args):
    """A validated DemoConfig, or CliError (exit 2)."""
    cfg = DemoConfig(guests=args.guests, guest_size=args.guest_size, seed=args.seed,
                     knobs=knob_assignments(args.set), max_full_scans=args.max_full_scans)
    try:
        cfg.validate()
    except ValueError as e:
        raise CliError(f"demo: {e}") from None
    return cfg


def check_plot(path):
    """CliError (exit 2) when --plot cannot work: no matplotlib, bad path."""
    try:
        _plot.check_output_path(path)
    except _plot.PlotUnavailable as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except ValueError as e:
        raise CliError(f"--plot: {e}") from None


def run(args):
    cfg = config_from_args(args)
    if args.plot:
        check_plot(args.plot)
    prog = render.Progress(enabled=not args.json)
    try:
        result = run_demo(cfg, progress=lambda n, e: prog.update(
            f"full scan {n} (t={e['t']:.0f}s, {e['guests']} guests): "
            f"pages_shared {e['pages_shared']} pages_sharing {e['pages_sharing']} "
            f"balloon {format_size(e['balloon_loaned_pages'] * PAGE_SIZE)}"))
    except KnobError as e:
        raise os_error(e) from None
    except MemoryError as e:
        raise CliError(f"demo: {e}; try fewer --guests or a smaller --guest-size") from None
    finally:
        prog.done()
    if args.plot:
        try:
            _plot.plot_history(result.history, args.plot, title=(
                f"ksm-engine demo: {cfg.guests} guests x {format_size(cfg.guest_size)}"))
        except OSError as e:
            raise os_error(e, f"--plot: cannot write {args.plot}") from None
    if args.json:
        doc = dataclasses.asdict(result)
        if args.plot:
            doc["plot"] = os.fspath(args.plot)
        render.print_json(doc)
    else:
        print(render_text(result, cfg))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 0 if result.settled else EXIT_FAILURE


def _pages(n):
    return f"{n} pages ({format_size(n * PAGE_SIZE)})"


def render_text(r, cfg):
    """The report as text: heading, KSM counters, per-process ksm_stat,
    memory, balloon."""
    knobs = " ".join(f"{k}={v}" for k, v in cfg.knobs.items())
    state = (f"settled after {r.full_scans} full scans" if r.settled
             else f"NOT settled after {r.full_scans} full scans")
    out = [f"ksm-engine demo: {cfg.guests} guests x {format_size(cfg.guest_size)}"
           f" (seed {cfg.seed}{', ' + knobs if knobs else ''}): KSM {state}",
           f"simulated time {r.simulated_seconds:.1f} s (ksmd's sleeps), "
           f"real time {r.seconds:.1f} s", ""]
    out.append("KSM counters (/sys/kernel/mm/ksm)")
    out.append(render.key_values([(k, v) for k, v in r.counters.items()]))
    out.append("")
    out.append("Guests (/proc/PID/ksm_stat)")
    cols = ["name", "pid", "rss_pages", "ksm_rmap_items", "ksm_merging_pages",
            "ksm_zero_pages", "ksm_process_profit", "ksm_mergeable"]
    out.append(render.table([[p[c] for c in cols] for p in r.processes], headers=cols))
    out.append("")
    mem = r.memory
    out.append("Memory")
    out.append(render.table([
        ("used without KSM", _pages(mem["used_pages_without_ksm"])),
        ("used with KSM", _pages(mem["used_pages"])),
        ("freed by KSM", f"{_pages(mem['freed_pages'])}, {mem['freed_percent']:.2f}%"),
    ], align="ll"))
    out.append("")
    b = r.balloon
    out.append("CMM balloon (loaned back to the hypervisor)")
    out.append(render.key_values([
        ("hypervisor loan target", f"{b['hv_loan_target_kb']} kB"),
        ("loaned_kb", f"{b['loaned_kb']} kB"),
        ("loaned_target_kb", f"{b['loaned_target_kb']} kB"),
        ("hypervisor holds", f"{b['hv_loaned_kb']} kB"),
        ("totalram before", f"{b['totalram_kb_before']} kB"),
        ("totalram after", f"{b['totalram_kb']} kB"),
        ("balloon_inflate", b["balloon_inflate"]),
        ("balloon_deflate", b["balloon_deflate"]),
        ("thread polls", b["polls"]),
    ]))
    return "\n".join(out)
