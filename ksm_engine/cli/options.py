"""Argument helpers shared by commands: --set KNOB=VALUE, sizes, the
checks and image loading of the commands that run KSM until it settles
(scan, compare-kernel), and the estimate's sources (estimate and
fingerprint take the same)."""
import argparse

from ..images import ImageError
from ..settle import load_images
from ..units import parse_size
from .errors import CliError, os_error

# Knobs a settling command writes itself: it runs ksmd unthrottled.
UNTHROTTLED_KNOBS = ("run", "pages_to_scan", "sleep_millisecs")

MAX_WATCH_SECONDS = 86400


class SourceAction(argparse.Action):
    """Appends (kind, value) to args.sources, keeping the command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, "sources", None) or []
        items.append((self.dest, values))
        namespace.sources = items


def add_source_arguments(p):
    """--pid, --core, --image (repeatable, mixed, in order, into
    args.sources as (kind, text)), --watch SECONDS and --core-zero-pages."""
    p.set_defaults(sources=[])
    p.add_argument("--pid", dest="pid", action=SourceAction, metavar="PID",
                   help="a live process's private anonymous memory (repeatable)")
    p.add_argument("--core", dest="core", action=SourceAction, metavar="FILE",
                   help="an ELF core file (repeatable)")
    p.add_argument("--image", dest="image", action=SourceAction, metavar="FILE",
                   help="a raw memory image (repeatable)")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="read each --pid twice, SECONDS apart: pages that changed are volatile "
                        "(ksmd never merges them) and only the stable ones are counted")
    p.add_argument("--core-zero-pages", action="store_true",
                   help="count the all-zero pages of core files (left out by default: "
                        "they may be memory never touched)")


def check_watch(seconds):
    """CliError unless --watch is absent or within [0, MAX_WATCH_SECONDS]."""
    if seconds is not None and not 0 <= seconds <= MAX_WATCH_SECONDS:
        raise CliError(f"--watch must be between 0 and {MAX_WATCH_SECONDS} seconds, got {seconds}")


def knob_assignments(items):
    """["max_page_sharing=8", ...] -> {"max_page_sharing": "8"} (ordered)."""
    knobs = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--set wants KNOB=VALUE, got {item!r}")
        knobs[name.strip()] = value
    return knobs


def size_arg(text):
    """argparse type for sizes with units (256MiB, 1G)."""
    try:
        n = parse_size(text)
    except (TypeError, ValueError) as e:
        raise CliError(str(e)) from None
    return n


def settle_arguments(args, runs):
    """The --set knobs of a settling command, after refusing the knobs it
    writes itself and a --max-full-scans below 1.  ``runs`` names what runs
    ksmd in the message ("the scan command")."""
    knobs = knob_assignments(args.set)
    for name in knobs:
        if name in UNTHROTTLED_KNOBS:
            raise CliError(f"--set {name}: {runs} runs ksmd unthrottled and sets {name} itself")
    if args.max_full_scans < 1:
        raise CliError("--max-full-scans must be at least 1")
    return knobs


def load_image_args(paths, knobs, compat=None):
    """settle.load_images with its errors as CliError: a bad image or a knob
    refused is bad input (exit 2)."""
    try:
        return load_images(paths, knobs=knobs, compat=compat)
    except ImageError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise os_error(e) from None
