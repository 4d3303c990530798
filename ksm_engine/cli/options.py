"""Argument helpers shared by commands: --set KNOB=VALUE, sizes."""
from ..units import parse_size
from .errors import CliError


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
