"""`ksm-engine estimate`: what KSM would save on real memory, and how fast.

The engine side is ksm_engine.apps.estimate (sources, loading, the two KSM runs,
the time model); this module turns arguments into sources and the result
into a table or JSON.  The sources keep the order they were given in
(--pid, --core and --image may be mixed), one process each.
"""
import argparse

from ..apps.estimate import EstimateError, estimate, open_sources
from ..machine import PAGE_SIZE
from ..units import format_size
from . import render
from .errors import EXIT_FAILURE, CliError, os_error
from .options import knob_assignments

HELP = "predict KSM's saving on a live process, a core file or a memory image"
DESCRIPTION = """\
Predict what KSM would merge in real memory, without touching the kernel's
KSM: every source becomes one process of the engine, and KSM runs over them
until it settles (the rule of `ksm-engine scan`), once with use_zero_pages=0
and once with use_zero_pages=1.

sources (repeatable, mixed, in order; one process each):
  --pid PID     the private anonymous areas of a live process (/proc/PID/maps),
                the pages present there (/proc/PID/pagemap; the shared zero
                page left out when pfns are readable, i.e. as root), read from
                /proc/PID/mem.  Needs ptrace read access (owner or root).
  --core FILE   an ELF core file: its PT_LOAD segments with contents, less
                file mappings (NT_FILE) and less the holes of a sparse core.
  --image FILE  raw memory, a multiple of 4096 bytes.
Inputs stream into the engine in 64 MiB pieces; nothing is held twice.

reports, for each use_zero_pages value: pages_shared, pages_sharing,
pages_unshared, pages_volatile, ksm_zero_pages, general_profit, the saving
(pages_sharing + ksm_zero_pages pages, in bytes and as a percent of the
pages loaded), and zero-filled pages (ksm_zero_pages of the second run).

time model, for --pages-to-scan P and --sleep-millisecs S:
  N  full scans needed: the first full scan after which the counters
     hold their settled values (the engine's own run)
  batches  sum over those N scans of floor(pages that scan scanned / P) + 1
           (smart_scan's skipped pages are not scanned; as in ksm_do_scan, a
           batch ends at the end of a full scan, and a scan whose last page
           fills a batch takes one more, empty, batch to reach its end)
  time to settle = batches x S + CPU
  CPU = pages scanned in those N scans x the engine's measured cost per
        page (scan time / pages scanned in this run)"""
EPILOG = """\
examples:
  ksm-engine estimate --pid 4242
  ksm-engine estimate --pid 4242 --pid 4243 --pages-to-scan 1000 --sleep-millisecs 10
  ksm-engine estimate --core core.4242 --image guest.img --json
  ksm-engine estimate --image a.img --set max_page_sharing=16

exit codes: 0 settled, 1 not settled within --max-full-scans or a runtime
failure, 2 bad arguments or an unusable source"""


class _SourceAction(argparse.Action):
    """Appends (kind, value) to args.sources, keeping the command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, "sources", None) or []
        items.append((self.dest, values))
        namespace.sources = items


def add_arguments(p):
    p.set_defaults(sources=[])
    p.add_argument("--pid", dest="pid", action=_SourceAction, metavar="PID",
                   help="a live process's private anonymous memory (repeatable)")
    p.add_argument("--core", dest="core", action=_SourceAction, metavar="FILE",
                   help="an ELF core file (repeatable)")
    p.add_argument("--image", dest="image", action=_SourceAction, metavar="FILE",
                   help="a raw memory image (repeatable)")
    p.add_argument("--pages-to-scan", type=int, default=100, metavar="P",
                   help="ksmd's pages_to_scan for the time prediction (default 100)")
    p.add_argument("--sleep-millisecs", type=int, default=20, metavar="S",
                   help="ksmd's sleep_millisecs for the time prediction (default 20)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="write a /sys/kernel/mm/ksm knob first (repeatable), e.g. max_page_sharing=16")
    p.add_argument("--max-full-scans", type=int, default=200, metavar="N",
                   help="give up after N full scans (default 200)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def compute(args, progress=None):
    if not args.sources:
        raise CliError("estimate: give at least one source: --pid PID, --core FILE or --image FILE")
    if args.pages_to_scan < 1:
        raise CliError(f"--pages-to-scan must be at least 1, got {args.pages_to_scan}")
    if args.sleep_millisecs < 0:
        raise CliError(f"--sleep-millisecs must not be negative, got {args.sleep_millisecs}")
    if args.max_full_scans < 1:
        raise CliError("--max-full-scans must be at least 1")
    knobs = knob_assignments(args.set)
    try:
        sources = open_sources(args.sources)
    except EstimateError as e:
        raise CliError(str(e)) from None
    try:
        return estimate(sources, knobs=knobs, pages_to_scan=args.pages_to_scan,
                        sleep_millisecs=args.sleep_millisecs,
                        max_full_scans=args.max_full_scans, progress=progress)
    except MemoryError as e:
        raise CliError(f"estimate: {e}") from None
    except OSError as e:    # a knob refused (exit 2), a process gone (exit 1)
        raise os_error(e, "estimate") from None
    finally:
        for s in sources:
            s.close()


def run(args):
    result = render.report(args, compute, render_text)
    return 0 if all(r["settled"] for r in result["runs"]) else EXIT_FAILURE


# The notes column of a source, by kind: what is always said, then the
# counts said when not zero (field, what it counts).
_SOURCE_NOTES = {
    "pid": ("{areas} areas", (("zero_page_mappings", "zero-page mappings left out"),
                              ("swapped_pages", "swapped out, left out"),
                              ("lost_pages", "unmapped while read"))),
    "core": ("{segments} segments", (("file_backed_pages", "file-backed pages left out"),
                                     ("hole_pages", "never-touched pages (holes) left out"))),
}


def _source_notes(s):
    if s["kind"] not in _SOURCE_NOTES:
        return ""
    always, counts = _SOURCE_NOTES[s["kind"]]
    return ", ".join([always.format(**s)] + [f"{s[k]} {what}" for k, what in counts if s.get(k)])


def render_text(r):
    """Sources, the two runs side by side, the prediction."""
    out = [f"ksm-engine estimate: {len(r['sources'])} source(s), {r['pages']} pages "
           f"({format_size(r['bytes'])})", ""]
    out.append(render.table(
        [[s["name"], s["kind"], s["pages"], format_size(s["bytes"]), _source_notes(s)]
         for s in r["sources"]],
        headers=["source", "kind", "pages", "size", "notes"], align="llrrl"))
    out.append("")
    runs = r["runs"]
    heads = ["", *(f"use_zero_pages={x['use_zero_pages']}" for x in runs)]
    rows = [[k, *(x[k] for x in runs)] for k in
            ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
             "ksm_zero_pages", "stable_node_chains", "stable_node_dups", "general_profit")]
    rows.append(["saving", *(f"{format_size(x['saving_bytes'])} ({x['saving_percent']:.2f}%)"
                             for x in runs)])
    rows.append(["full scans (engine)", *(x["full_scans"] if x["settled"]
                                           else f"{x['full_scans']} (not settled)" for x in runs)])
    preds = [x["prediction"] for x in runs]
    p0 = preds[0]
    rows.append(["full scans needed", *(p["full_scans_needed"] for p in preds)])
    rows.append(["predicted time to settle", *(f"{p['settle_seconds']:.1f} s" for p in preds)])
    rows.append(["predicted ksmd CPU", *(f"{p['cpu_seconds']:.3f} s ({p['cpu_percent']:.2f}%)"
                                         for p in preds)])
    out.append(render.table(rows, headers=heads, align="l" + "r" * len(runs)))
    out.append("")
    out.append(f"zero-filled pages: {r['zero_pages']} ({format_size(r['zero_pages'] * PAGE_SIZE)})")
    out.append(f"time model: pages_to_scan={p0['pages_to_scan']}, sleep_millisecs="
               f"{p0['sleep_millisecs']}, {p0['batches']} batches, engine cost "
               f"{p0['ns_per_page']:.0f} ns per scanned page (see --help)")
    return "\n".join(out)
