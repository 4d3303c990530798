"""Argument helpers shared by commands: --set KNOB=VALUE, sizes, and the
checks and image loading of the commands that run KSM until it settles
(scan, compare-kernel)."""
from ..images import ImageError
from ..settle import load_images
from ..units import parse_size
from .errors import CliError, os_error

# Knobs a settling command writes itself: it runs ksmd unthrottled.
UNTHROTTLED_KNOBS = ("run", "pages_to_scan", "sleep_millisecs")


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
