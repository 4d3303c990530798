"""`ksm-engine scan IMAGE...`: runs KSM over memory images until it settles.

Each image file becomes one process, in argument order, with one MERGEABLE
area holding its bytes.  ksmd then runs unthrottled until the counters
pages_shared, pages_sharing, pages_unshared, ksm_zero_pages,
stable_node_chains and stable_node_dups have held still over two
consecutive full scans and at least 3 full scans have run (settle.py, the
same rule the comparison with the kernel uses).  Prints every counter under
the kernel's name and `seconds` (scan time only, loading excluded).
"""
import errno
import os

from ..images import ImageError
from ..settle import load_images, settle
from . import render
from .errors import CliError, EXIT_FAILURE
from .options import knob_assignments

NAME = "scan"
HELP = "run KSM over memory images until it settles and print its counters"
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()
EPILOG = """examples:
  ksm-engine scan guest0.img guest1.img
  ksm-engine scan --set use_zero_pages=1 --set max_page_sharing=16 a.img b.img --json
  ksm-engine scan --compat 2009 a.img"""

# Knobs the command sets itself for an unthrottled run.
_RESERVED = {"run", "pages_to_scan", "sleep_millisecs"}


def add_arguments(p):
    p.add_argument("images", nargs="+", metavar="IMAGE", help="raw memory image (size a multiple of 4096)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="write a /sys/kernel/mm/ksm knob before scanning (repeatable)")
    p.add_argument("--compat", choices=["2009"], help="behave as the 2009 KSM patch")
    p.add_argument("--max-full-scans", type=int, default=200, metavar="N",
                   help="give up after N full scans (default 200)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def compute(args, progress=None):
    knobs = knob_assignments(args.set)
    for name in knobs:
        if name in _RESERVED:
            raise CliError(f"--set {name}: the scan command runs ksmd unthrottled and sets {name} itself")
    if args.max_full_scans < 1:
        raise CliError("--max-full-scans must be at least 1")
    try:
        machine, _ = load_images(args.images, knobs=knobs, compat=args.compat)
    except ImageError as e:
        raise CliError(str(e)) from None
    except FileNotFoundError as e:
        raise CliError(f"--set: unknown knob: {e.strerror}") from None
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.EACCES):
            raise CliError(f"--set: {e.strerror} ({errno.errorcode.get(e.errno, e.errno)})") from None
        raise CliError(f"{e.strerror}", EXIT_FAILURE) from None
    result = settle(machine, max_full_scans=args.max_full_scans, progress=progress)
    out = dict(result.counters)
    out["seconds"] = round(result.seconds, 6)
    out["settled"] = result.settled
    out["images"] = [os.fspath(p) for p in args.images]
    return out


def run(args):
    prog = render.Progress(enabled=not args.json)
    result = compute(args, progress=lambda n, st: prog.update(
        f"full scan {n}: pages_shared {st['pages_shared']} pages_sharing {st.get('pages_sharing', '-')}"))
    prog.done()
    if args.json:
        render.print_json(result)
    else:
        rows = [(k, v) for k, v in result.items() if k not in ("images", "settled")]
        print(render.key_values(rows))
        if not result["settled"]:
            print(f"(not settled after {result['full_scans']} full scans)")
    return 0 if result["settled"] else EXIT_FAILURE
