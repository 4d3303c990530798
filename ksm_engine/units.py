"""Sizes with units: ``parse_size("256MiB") == 268435456``."""
import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(value):
    """Bytes in ``value``: an int, or a string such as "4096", "64K", "256MiB",
    "1G" (binary units; KB/MB/GB mean the same as KiB/MiB/GiB, as in the
    kernel's memparse).  Raises TypeError for other types and ValueError for
    malformed or negative sizes."""
    if isinstance(value, bool):
        raise TypeError("size must be an int or a string such as '256MiB', not bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"size must be an int or a string such as '256MiB', not {type(value).__name__}")
    m = _SIZE.match(value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {value!r} (examples: 4096, 64KiB, 256MiB, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_size(nbytes):
    """A short human form: 1536 -> '1.5 KiB'."""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{nbytes} B"
