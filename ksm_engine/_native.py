"""The compiled core (``ksm_engine._core``) and the one place where its
negative-errno results become Python exceptions."""
import errno
import os

from ._core import ffi, lib  # noqa: F401  (re-exported)

from .errors import SegmentationFault

# The page size of the arena, from the one header (csrc/ksm_engine.h): every
# other module takes it from here (ksm_engine.PAGE_SIZE).
PAGE_SIZE = lib.KE_PAGE_SIZE


def check(rc, what=""):
    """Raises the OSError for a core result ``rc`` (0 or -errno); returns rc.

    -EFAULT becomes SegmentationFault; every other errno an OSError with its
    standard message, prefixed by ``what`` when given.
    """
    if rc >= 0:
        return rc
    code = -rc
    message = os.strerror(code)
    if what:
        message = f"{what}: {message}"
    if code == errno.EFAULT:
        raise SegmentationFault(message)
    raise OSError(code, message)


def batches(call, record_type, cursor_type, batch=4096):
    """Yields every record of a paged read-only core listing.

    ``call(start, out, batch, n, next)`` is a ``ke_*`` listing (e.g.
    ke_mm_rmap_items with its machine and mm bound) that fills ``out`` (an
    array of ``batch`` records of ``record_type``) from cursor ``start``,
    sets ``n[0]`` to the records filled and ``next[0]`` (a ``cursor_type``)
    to where the next call starts, 0 at the end; its result goes through
    check.  A yielded record is a view into ``out``: the caller copies
    what it needs before asking for the next one.
    """
    out = ffi.new(f"{record_type}[]", batch)
    n = ffi.new("uint32_t *")
    nxt = ffi.new(f"{cursor_type} *")
    start = 0
    while True:
        check(call(start, out, batch, n, nxt))
        for i in range(n[0]):
            yield out[i]
        if not nxt[0]:
            return
        start = nxt[0]
