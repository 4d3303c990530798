"""`ksm-engine estimate`: what KSM would save on real memory, and how fast.

The logic is ksm_engine.apps.estimate (the sources, the content counts,
the settled counters, the engine run on request, the time model); this
module turns arguments into sources, faults into CliError (exit 2 for bad
input, 1 for runtime failures) and the result into a table or JSON.  The sources keep the order they were given in
(--pid, --core and --image may be mixed), one process each.
"""

from ..apps.estimate import EstimateError, estimate, open_sources
from ..apps.ksmd_calibration import CalibrationError, load_model
from ..machine import PAGE_SIZE
from ..units import format_size
from . import render
from .errors import EXIT_FAILURE, EXIT_USAGE, CliError, os_error
from .options import add_source_arguments, check_watch, knob_assignments

HELP = "predict KSM's saving on a live process, a core file or a memory image"
DESCRIPTION = """\
Predict what KSM would merge in real memory, without touching the kernel's
KSM, and how long ksmd would take to settle.

sources (repeatable, mixed, in order; one process each, in scan order):
  --pid PID     the private anonymous areas of a live process (/proc/PID/maps),
                the pages present there (/proc/PID/pagemap; the shared zero
                page left out when pfns are readable, i.e. as root), read from
                /proc/PID/mem.  Needs ptrace read access (owner or root), not
                PR_SET_MEMORY_MERGE.
  --core FILE   an ELF core file: its PT_LOAD segments with contents, less
                file mappings (NT_FILE) and less the holes of a sparse core.
                Kernel cores, gdb's gcore and QEMU's dump-guest-memory /
                `virsh dump --memory-only` cores.  Its all-zero pages may be
                memory never touched (gcore writes those as zeros): they are
                reported on a line of their own and left out, unless
                --core-zero-pages.
  --image FILE  raw memory, a multiple of 4096 bytes.

how it answers: every source is read once, in 8 MiB pieces, each page
fingerprinted (128 bits) and counted per distinct content; KSM's settled
counters for use_zero_pages=0 and 1 follow from those counts and the knobs
(max_page_sharing: n copies of a content give floor(n/M) KSM pages, one
more if n mod M >= 2, one page unshared if n mod M = 1).  The pages are
never held: memory grows with the distinct contents only.  --engine also
runs the engine's KSM over the loaded sources until it settles: its
counters answer, its full scans feed the time model, and the report says
whether the two agree.

reports, for each use_zero_pages value: pages_shared, pages_sharing,
pages_unshared, pages_volatile, ksm_zero_pages, stable_node_chains,
stable_node_dups, general_profit, the saving (pages_sharing +
ksm_zero_pages pages, in bytes and as a percent of the pages ksmd would
track), each source's ksm_stat figures, and a time prediction.

time model (docs/ksmd_model.md), for --pages-to-scan P and --sleep-millisecs S
(or --set advisor_mode=scan-time): what ksmd does in each full scan of this
memory (checksums, tree inserts and merges, smart_scan's skips), the full
scan and the page at which the counters last change, the batches of P
pages, each the sleep in jiffies rounded to the timer tick plus its work,
and ksmd's CPU per page by kind: from the calibration `ksm-engine calibrate`
saved (--calibration FILE picks another), else the default model; the
report says which."""
EPILOG = """\
examples:
  ksm-engine estimate --pid 4242 --pid 4243
  ksm-engine estimate --pid 4242 --watch 10
  ksm-engine estimate --core core.4242 --image guest.img --json
  ksm-engine estimate --image a.img --set max_page_sharing=16 --engine

exit codes: 0 done, 1 not settled within --max-full-scans (--engine) or a
runtime failure (a process that exits while read), 2 bad arguments or an
unusable source"""


def add_arguments(p):
    add_source_arguments(p)
    p.add_argument("--pages-to-scan", type=int, default=100, metavar="P",
                   help="ksmd's pages_to_scan for the time prediction (default 100)")
    p.add_argument("--sleep-millisecs", type=int, default=20, metavar="S",
                   help="ksmd's sleep_millisecs for the time prediction (default 20)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="write a /sys/kernel/mm/ksm knob first (repeatable), e.g. max_page_sharing=16")
    p.add_argument("--max-full-scans", type=int, default=200, metavar="N",
                   help="give up after N full scans (default 200)")
    p.add_argument("--engine", action="store_true",
                   help="also run the engine's KSM over the sources (needs their memory): "
                        "its counters and full scans answer")
    p.add_argument("--calibration", metavar="FILE", default=None,
                   help="the ksmd calibration to time the prediction with (default: the "
                        "one `ksm-engine calibrate` saved, else the default model)")
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
    check_watch(args.watch)
    if args.watch is not None and args.engine:
        raise CliError("--watch and --engine do not go together: the engine path reads "
                       "each source as it is")
    knobs = knob_assignments(args.set)
    try:
        calibration = load_model(args.calibration, explicit=args.calibration is not None)
    except CalibrationError as e:
        raise CliError(f"--calibration: {e.strerror}") from None
    try:
        sources = open_sources(args.sources)
    except EstimateError as e:
        raise CliError(str(e)) from None
    try:
        return estimate(sources, knobs=knobs, pages_to_scan=args.pages_to_scan,
                        sleep_millisecs=args.sleep_millisecs,
                        max_full_scans=args.max_full_scans, progress=progress,
                        engine=args.engine, watch=args.watch,
                        core_zero_pages=args.core_zero_pages, calibration=calibration)
    except EstimateError as e:
        raise CliError(str(e)) from None
    except MemoryError as e:
        raise CliError(f"estimate: {e}") from None
    except PermissionError as e:    # EPERM/EACCES on /proc/PID/mem: the input is at fault
        raise os_error(e, "estimate: permission denied while reading", EXIT_USAGE) from None
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
                              ("lost_pages", "unmapped while read"),
                              ("volatile_pages", "volatile"))),
    "core": ("{segments} segments", (("file_backed_pages", "file-backed pages left out"),
                                     ("hole_pages", "never-touched pages (holes) left out"),
                                     ("zero_pages_left_out", "all-zero pages left out"))),
}
# What is said without a count (field, words).
_SOURCE_FLAGS = {"core": (("guest_memory", "guest memory (QEMU)"),)}


def _source_notes(s):
    if s["kind"] not in _SOURCE_NOTES:
        return ""
    always, counts = _SOURCE_NOTES[s["kind"]]
    flags = [what for k, what in _SOURCE_FLAGS.get(s["kind"], ()) if s.get(k)]
    return ", ".join([always.format(**s)] + flags
                     + [f"{s[k]} {what}" for k, what in counts if s.get(k)])


ROWS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "ksm_zero_pages",
        "stable_node_chains", "stable_node_dups", "general_profit")


def render_text(r):
    """Sources, the two runs side by side, the prediction, the notes."""
    out = [f"ksm-engine estimate: {len(r['sources'])} source(s), {r['pages']} pages "
           f"({format_size(r['bytes'])})", ""]
    out.append(render.table(
        [[s["name"], s["kind"], s["pages"], format_size(s["bytes"]), _source_notes(s)]
         for s in r["sources"]],
        headers=["source", "kind", "pages", "size", "notes"], align="llrrl"))
    out.append("")
    runs = r["runs"]
    heads = ["", *(f"use_zero_pages={x['use_zero_pages']}" for x in runs)]
    rows = [[k, *(x[k] for x in runs)] for k in ROWS]
    rows.append(["saving", *(f"{format_size(x['saving_bytes'])} ({x['saving_percent']:.2f}%)"
                             for x in runs)])
    if r["answered_by"] == "engine":
        rows.append(["full scans (engine)", *(x["full_scans"] if x["settled"]
                                               else f"{x['full_scans']} (not settled)"
                                               for x in runs)])
    preds = [x["prediction"] for x in runs]
    p0 = preds[0]
    rows.append(["full scans needed", *(p["full_scans"] for p in preds)])
    rows.append(["predicted time to settle", *(f"{p['settle_seconds']:.1f} s" for p in preds)])
    rows.append(["predicted ksmd CPU", *(f"{p['ksmd_cpu_seconds']:.3f} s "
                                         f"({p['cpu_percent']:.2f}%)" for p in preds)])
    out.append(render.table(rows, headers=heads, align="l" + "r" * len(runs)))
    out.append("")
    out.append(f"zero-filled pages: {r['zero_pages']} ({format_size(r['zero_pages'] * PAGE_SIZE)})")
    if r["zero_pages_left_out"]:
        n = r["zero_pages_left_out"]
        out.append(f"all-zero core pages left out (maybe never touched; --core-zero-pages "
                   f"counts them): {n} ({format_size(n * PAGE_SIZE)})")
    if r["volatile_pages"]:
        n = r["volatile_pages"]
        out.append(f"volatile pages (changed while watched; never merged): {n} "
                   f"({format_size(n * PAGE_SIZE)})")
    c = r["contents"]
    if r["answered_by"] == "engine":
        agree = "agree" if r["engine_agrees"] else "DISAGREE (memory changed between the reads?)"
        answered = f"the engine's KSM run (the content counts {agree})"
    else:
        answered = "content counts (the pages were not loaded; --engine runs KSM)"
    out.append(f"answered by: {answered}; {c['distinct']} distinct non-zero contents, "
               f"count table {format_size(c['table_bytes'])}")
    pace = ("advisor_mode=scan-time" if p0["advisor_mode"] == "scan-time"
            else f"pages_to_scan={p0['pages_to_scan']}")
    out.append(f"time model: {pace}, sleep_millisecs={p0['sleep_millisecs']}, "
               f"{p0['batches']} batches of {p0['batch_seconds'] * 1e3:.1f} ms, "
               f"CONFIG_HZ={p0['hz']}")
    out.append(render.ksmd_model_line(p0["model"], p0.get("note")))
    return "\n".join(out)
