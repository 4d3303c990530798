"""Memory images: files whose bytes become one process's mergeable memory.

An image must be a regular file whose size is a positive multiple of
PAGE_SIZE.  open_image() maps it read-only (mmap), so a large image is not
held twice in memory: the process's write copies straight from the page
cache into the arena.
"""
import mmap
import os

from .machine import PAGE_SIZE


class ImageError(ValueError):
    """An image file that cannot be used (the message says why)."""


def check_image(path, what="image", whole_pages=True):
    """Returns the size of a usable file, or raises ImageError: a non-empty
    regular file, a positive multiple of PAGE_SIZE when whole_pages.  what
    names the kind of file in the messages ("image", "core")."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    if os.path.isdir(path):
        raise ImageError(f"{path}: is a directory, not {_article(what)} file")
    if not os.path.isfile(path):
        raise ImageError(f"{path}: not a regular file")
    if st.st_size == 0:
        need = f"at least one {PAGE_SIZE}-byte page" if whole_pages else "some content"
        raise ImageError(f"{path}: empty file ({_article(what)} file needs {need})")
    if whole_pages and st.st_size % PAGE_SIZE:
        raise ImageError(f"{path}: size {st.st_size} is not a multiple of the page size {PAGE_SIZE}")
    return st.st_size


def _article(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def open_image(path):
    """A read-only buffer over the image's bytes (an mmap); close it when done."""
    size = check_image(path)
    try:
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
