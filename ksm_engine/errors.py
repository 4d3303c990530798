"""Exceptions of the engine.  Everything is an OSError carrying the errno the
Linux kernel would give for the same mistake, or TypeError/ValueError for
arguments of the wrong kind."""
import errno


class SegmentationFault(OSError):
    """An access outside every area of a process (errno EFAULT)."""

    def __init__(self, message="Bad address"):
        super().__init__(errno.EFAULT, message)


class ProcessExited(ProcessLookupError):
    """A call on a process that has exited (errno ESRCH)."""

    def __init__(self, process):
        super().__init__(errno.ESRCH, f"process {process.name!r} (pid {process.pid}) has exited")
