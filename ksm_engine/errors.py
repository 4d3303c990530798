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


# Linux has two names for three errnos; the kernel's code (and so every
# message here) says EAGAIN, EDEADLK and EOPNOTSUPP, while Python's
# errno.errorcode picks the other one for the last two.
_KERNEL_NAMES = {errno.EAGAIN: "EAGAIN", errno.EDEADLK: "EDEADLK",
                 errno.EOPNOTSUPP: "EOPNOTSUPP"}


def errno_name(code):
    """The kernel's name of errno ``code`` ("EINVAL"), or its number as text."""
    return _KERNEL_NAMES.get(code) or errno.errorcode.get(code, str(code))
