"""Argument helpers shared by commands: --set KNOB=VALUE, sizes, the
estimate's sources (estimate and fingerprint take the same)."""
import argparse

from ..units import parse_size
from .errors import CliError

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
