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
