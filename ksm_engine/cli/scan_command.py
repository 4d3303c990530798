"""`ksm-engine scan IMAGE...`: runs KSM over memory images until it settles.

Each image file becomes one process, in argument order, with one MERGEABLE
area holding its bytes.  ksmd then runs unthrottled until the counters
pages_shared, pages_sharing, pages_unshared, ksm_zero_pages,
stable_node_chains and stable_node_dups have held still over two
consecutive full scans and at least 3 full scans have run (settle.py, the
same rule the comparison with the kernel uses).  Prints every counter under
the kernel's name and `seconds` (scan time only, loading excluded).
"""
import os

from ..settle import settle
from . import render
from .errors import EXIT_FAILURE
from .options import load_image_args, settle_arguments

HELP = "run KSM over memory images until it settles and print its counters"
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()
EPILOG = """examples:
  ksm-engine scan guest0.img guest1.img
  ksm-engine scan --set use_zero_pages=1 --set max_page_sharing=16 a.img b.img --json
  ksm-engine scan --compat 2009 a.img"""

def add_arguments(p):
    p.add_argument("images", nargs="+", metavar="IMAGE", help="raw memory image (size a multiple of 4096)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="write a /sys/kernel/mm/ksm knob before scanning (repeatable)")
    p.add_argument("--compat", choices=["2009"], help="behave as the 2009 KSM patch")
    p.add_argument("--max-full-scans", type=int, default=200, metavar="N",
                   help="give up after N full scans (default 200)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def compute(args, progress=None):
    """The counters of the settled KSM (a dict); progress(text) after each
    full scan."""
    knobs = settle_arguments(args, "the scan command")
    machine, _ = load_image_args(args.images, knobs, compat=args.compat)
    say = progress or (lambda text: None)
    result = settle(machine, max_full_scans=args.max_full_scans, progress=lambda n, st: say(
        f"full scan {n}: pages_shared {st['pages_shared']} pages_sharing {st.get('pages_sharing', '-')}"))
    out = dict(result.counters)
    out["seconds"] = round(result.seconds, 6)
    out["settled"] = result.settled
    out["images"] = [os.fspath(p) for p in args.images]
    return out


def run(args):
    result = render.report(args, compute, render_text)
    return 0 if result["settled"] else EXIT_FAILURE


def render_text(result):
    out = [render.key_values([(k, v) for k, v in result.items() if k not in ("images", "settled")])]
    if not result["settled"]:
        out.append(f"(not settled after {result['full_scans']} full scans)")
    return "\n".join(out)
