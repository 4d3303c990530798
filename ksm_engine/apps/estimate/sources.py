"""The estimate's input sources: what to read, and reading it.

A source is planned when it is opened (its extents: (offset, bytes) ranges
to read, in scan order, whole pages, and figures for the report), without
reading any content; read_pages() then yields the pages ksmd would see,
in scan order, through one reusable buffer of at most chunk_bytes.

  ImageSource  a raw memory image, all of it (here)
  CoreSource   an ELF core file's anonymous segments (core.py)
  PidSource    what ksmd would see of a live process (pid.py)

specs.open_sources(specs) opens them in the order given; faults raise
EstimateError (bad input: the CLI's exit 2) or OSError /
ProcessLookupError (runtime: exit 1), each with a one-line message.
"""
import errno
import os
from dataclasses import dataclass, field

from ...images import ImageError, check_image
from ...machine import PAGE_SIZE

CHUNK_BYTES = 8 << 20        # bytes read at once (one reusable buffer per source)
READAHEAD = 4                # chunks of a file asked ahead (POSIX_FADV_WILLNEED)


class EstimateError(ValueError):
    """A source that cannot be used; the message names it and says why."""


def npages(nbytes):
    """Pages covering nbytes (rounded up)."""
    return (nbytes + PAGE_SIZE - 1) // PAGE_SIZE


def checked_file(path, what, whole_pages):
    """The size of a usable file (images.check_image), or EstimateError."""
    try:
        return check_image(path, what=what, whole_pages=whole_pages)
    except ImageError as e:
        raise EstimateError(str(e)) from None


@dataclass
class Source:
    """One input: what to read (extents) and what the report says of it.

    kind     "pid", "core" or "image"
    spec     what the user gave (the pid or path, as text)
    name     a label for the report ("pid 42 (python3)", a path)
    extents  [(offset, nbytes)]: ranges to read, in scan order, whole pages
    info     figures for the report (areas, segments, skipped pages...)
    """
    kind: str
    spec: str
    name: str
    extents: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    _buf: bytearray = None

    @property
    def pages(self):
        """Pages planned (each extent rounded up to whole pages)."""
        return sum(npages(n) for _, n in self.extents)

    @property
    def loaded_pages(self):
        """Pages actually read: a live process may unmap some meanwhile."""
        return self.pages - self.info.get("lost_pages", 0)

    def _buffer(self, chunk_bytes):
        size = max(PAGE_SIZE, min(chunk_bytes // PAGE_SIZE * PAGE_SIZE,
                                  max(npages(n) for _, n in self.extents) * PAGE_SIZE))
        if self._buf is None or len(self._buf) != size:
            self._buf = bytearray(size)
        return memoryview(self._buf)

    def read_extents(self, chunk_bytes=CHUNK_BYTES):
        """Yields (index, buffer): whole pages, index the planned page
        number of the buffer's first page; each buffer is valid until the
        next is asked for.  Pages that cannot be read (a process unmapped
        them since the plan) are skipped and counted in info["lost_pages"]."""
        view = self._buffer(chunk_bytes)
        index = 0
        try:
            for offset, nbytes in self.extents:
                length = npages(nbytes) * PAGE_SIZE
                pos, end = offset, offset + length
                while pos < end:
                    k = min(len(view), end - pos)
                    got = self._read(view[:k], pos)
                    if got is None:              # this page is gone: lose it, go on
                        self.info["lost_pages"] = self.info.get("lost_pages", 0) + 1
                        pos += PAGE_SIZE
                        continue
                    whole = got // PAGE_SIZE * PAGE_SIZE
                    if whole:
                        yield index + (pos - offset) // PAGE_SIZE, view[:whole]
                    pos += whole
                    if whole < k:                # a short read: the page at pos is next
                        if self._short_read(pos, got - whole):
                            self.info["lost_pages"] = self.info.get("lost_pages", 0) + 1
                            pos += PAGE_SIZE
                index += npages(nbytes)
        finally:
            view.release()

    def read_pages(self, chunk_bytes=CHUNK_BYTES):
        """Yields buffers of whole pages, in scan order (see read_extents)."""
        for _, buf in self.read_extents(chunk_bytes):
            yield buf

    def _read(self, view, pos):
        """Reads len(view) bytes at pos into view: bytes read, or None if
        the page at pos cannot be read (lost)."""
        raise NotImplementedError

    def _short_read(self, pos, partial):
        """After a short read ending at pos (partial bytes of the next page
        read): True to count that page lost.  A file ended early."""
        raise EstimateError(f"{self.name}: the file ended at byte {pos + partial} "
                            f"(truncated or changed while read)")

    def close(self):
        self._buf = None


class FileSource(Source):
    """A source read from a file with pread, through one buffer."""
    _fd = None

    def _open(self, path):
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise EstimateError(f"{path}: {e.strerror}") from None
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (OSError, AttributeError):
            pass

    def _read(self, view, pos):
        got = os.preadv(self._fd, [view], pos)
        try:        # the next chunks are read from the disk while this one is hashed
            os.posix_fadvise(self._fd, pos + got, READAHEAD * len(view), os.POSIX_FADV_WILLNEED)
        except (OSError, AttributeError):
            pass
        return got

    def close(self):
        super().close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ImageSource(FileSource):
    """A raw memory image: every page of it."""

    def __init__(self, path):
        path = os.fspath(path)
        super().__init__("image", path, path)
        size = checked_file(path, "image", True)
        self._open(path)
        self.extents = [(0, size)]
        self.info = {"bytes": size}


def is_gone(exc):
    """True for the errors of reading a page a process no longer maps."""
    return isinstance(exc, OSError) and exc.errno in (errno.EIO, errno.EFAULT)
