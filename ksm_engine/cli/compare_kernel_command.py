"""`ksm-engine compare-kernel IMAGE...`: the same images through the real
kernel's KSM and through the engine, side by side.

The kernel run is ksm_engine.apps.kernel_peer.run_kernel (exclusive lock, every
knob saved and restored, run=2 written last; one child process per image);
the engine run is settle.load_images + settle.settle.  Both stop on the same
convergence rule.  The images and knobs are checked on the engine first, so
bad input is reported (exit 2) before the kernel is touched; a kernel
without a usable KSM is a runtime failure (exit 1).
"""
from ..apps import kernel_peer
from ..settle import DEFAULT_MAX_FULL_SCANS, settle
from . import render
from .errors import EXIT_FAILURE, CliError, os_error
from .options import load_image_args, settle_arguments

HELP = "run images through the real kernel KSM and the engine, side by side"
DESCRIPTION = """\
Run the same memory images through the real kernel's KSM (/sys/kernel/mm/ksm;
needs root) and through the engine, each until its counters settle (held
still over two full scans, at least three full scans), and print both sets
of counters side by side with the time each took and their ratio.

The kernel run takes an exclusive lock, saves every KSM knob, runs one child
process per image (a private anonymous copy, MADV_MERGEABLE), runs ksmd
unthrottled, and afterwards restores every knob and writes run=2 (the
machine's KSM is shared with everything else on it).

Compared (they must be equal, see docs/fidelity.md): pages_shared,
pages_sharing, stable_node_chains, stable_node_dups, ksm_zero_pages and
rmap_items.  Shown too: pages_unshared, pages_volatile (they swing between
full scans under smart_scan), general_profit (the kernel's counts every KSM
user of the machine) and full_scans."""
EPILOG = """\
examples:
  sudo ksm-engine compare-kernel guest0.img guest1.img
  sudo ksm-engine compare-kernel --set use_zero_pages=1 --set max_page_sharing=16 a.img b.img --json

exit codes: 0 the compared counters match, 1 they differ, a run did not
settle, or the kernel's KSM is not available (not Linux, no CONFIG_KSM, not
root), 2 bad arguments or images"""

# Counters that must match after both settled (as tests/kernel/test_differential.py).
COMPARED = ("pages_shared", "pages_sharing", "stable_node_chains", "stable_node_dups",
            "ksm_zero_pages", "rmap_items")
# Shown too, not compared (as in tests/kernel/test_differential.py):
# pages_unshared and pages_volatile swing between full scans under
# smart_scan; the kernel's general_profit counts every KSM user of the
# machine, not only the images' children.
SHOWN = ("pages_unshared", "pages_volatile", "general_profit", "full_scans")

def add_arguments(p):
    p.add_argument("images", nargs="+", metavar="IMAGE", help="raw memory image (size a multiple of 4096)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="write a KSM knob on both sides before scanning (repeatable)")
    p.add_argument("--max-full-scans", type=int, default=DEFAULT_MAX_FULL_SCANS, metavar="N",
                   help=f"give up after N full scans (default {DEFAULT_MAX_FULL_SCANS})")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def compute(args, progress=None):
    knobs = settle_arguments(args, "the comparison")
    machine, _ = load_image_args(args.images, knobs)
    ok, why = kernel_peer.availability()
    if not ok:
        raise CliError(f"the kernel's KSM is not available: {why}", EXIT_FAILURE)
    say = progress or (lambda text: None)
    try:
        kernel = kernel_peer.run_kernel(args.images, knobs, max_full_scans=args.max_full_scans,
                                        progress=lambda n, c: say(
                                            f"kernel: full scan {n}: pages_sharing {c['pages_sharing']}"))
    except kernel_peer.KernelKsmUnavailable as e:
        raise os_error(e, "the kernel's KSM is not available") from None
    except OSError as e:
        raise os_error(e, "the kernel's KSM failed") from None
    engine = settle(machine, max_full_scans=args.max_full_scans,
                    progress=lambda n, c: say(f"engine: full scan {n}: pages_sharing {c['pages_sharing']}"))
    rows = []
    for name in COMPARED + SHOWN:
        k, e = kernel.counters.get(name), engine.counters.get(name)
        rows.append({"counter": name, "kernel": k, "engine": e,
                     "compared": name in COMPARED, "match": k == e})
    ratio = engine.seconds / kernel.seconds if kernel.seconds else None
    return {
        "images": list(args.images),
        "knobs": knobs,
        "counters": rows,
        "match": all(r["match"] for r in rows if r["compared"]),
        "kernel": {"settled": kernel.settled, "seconds": round(kernel.seconds, 6),
                   "full_scans": len(kernel.history), "per_process": kernel.per_process},
        "engine": {"settled": engine.settled, "seconds": round(engine.seconds, 6),
                   "full_scans": engine.full_scans,
                   "per_process": [{k: (str(v) if k in ("ksm_merge_any", "ksm_mergeable") else v)
                                    for k, v in p.items()} for p in engine.per_process]},
        "time_ratio": round(ratio, 6) if ratio is not None else None,
    }


def run(args):
    result = render.report(args, compute, render_text)
    good = result["match"] and result["kernel"]["settled"] and result["engine"]["settled"]
    return 0 if good else EXIT_FAILURE


def render_text(r):
    out = [f"ksm-engine compare-kernel: {len(r['images'])} image(s)"
           + (", " + " ".join(f"{k}={v}" for k, v in r["knobs"].items()) if r["knobs"] else ""), ""]
    rows = [[c["counter"], c["kernel"], c["engine"],
             ("same" if c["match"] else "DIFFERENT") if c["compared"] else "(not compared)"]
            for c in r["counters"]]
    k, e = r["kernel"], r["engine"]
    rows.append(["full scans to settle", k["full_scans"], e["full_scans"], ""])
    rows.append(["seconds", f"{k['seconds']:.4f}", f"{e['seconds']:.4f}", ""])
    out.append(render.table(rows, headers=["counter", "kernel", "engine", ""], align="lrrl"))
    out.append("")
    ratio = r["time_ratio"]
    if ratio:
        faster = "faster" if ratio < 1 else "slower"
        out.append(f"time ratio engine/kernel: {ratio:.3f} (the engine is "
                   f"{max(ratio, 1 / ratio):.1f}x {faster})")
    for name, side in (("kernel", k), ("engine", e)):
        if not side["settled"]:
            out.append(f"the {name} did NOT settle within the full scan limit")
    out.append("counters match" if r["match"] else "counters DIFFER")
    return "\n".join(out)
