"""open_sources(): the estimate's sources as a command names them.

Apart from sources.py because it knows every kind of source (core.py and
pid.py build on sources.py), so that all of them are imported with it, at
the top: a command that drops privileges after importing (tests do, to read
as nobody) needs nothing more from the disk.
"""
from .core import CoreSource
from .pid import PidSource, parse_pid, zero_pfn
from .sources import ImageSource


def open_sources(specs):
    """Sources from [(kind, text)] with kind "pid", "core" or "image".
    Raises EstimateError for the first unusable one (the opened ones are
    closed)."""
    out = []
    pfn = None
    try:
        for kind, text in specs:
            if kind == "pid":
                pid = parse_pid(text)
                if pfn is None:
                    pfn = zero_pfn() or 0
                out.append(PidSource(pid, pfn or None))
            elif kind == "core":
                out.append(CoreSource(text))
            elif kind == "image":
                out.append(ImageSource(text))
            else:
                raise ValueError(f"unknown source kind {kind!r}")
        return out
    except BaseException:
        for s in out:
            s.close()
        raise
