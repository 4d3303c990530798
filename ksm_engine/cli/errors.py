"""The CLI's one error type, which carries the exit code the process ends
with, and the one path from an OSError to it.

Exit codes (every command): 0 success, 1 a runtime failure, 2 bad usage or
bad input.  Commands raise CliError; main() turns it into a message on stderr
and the exit code, so no traceback ever reaches the user.  An OSError (the
kernel's errno, from the engine or the host) becomes a CliError through
os_error(), used by every command and by main() for what no command caught.
"""
from ..errors import errno_name
from ..ksm.sysfs import KnobError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report to the user as `ksm-engine: error: MESSAGE`."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def os_error(e, context=None, exit_code=EXIT_FAILURE):
    """The CliError for an OSError ``e``, one line.

    A KnobError is bad input (exit 2): `--set: ` and its message, which names
    the knob, the value and the errno.  Any other OSError is a runtime
    failure (``exit_code``, 1 unless the caller knows the input is at
    fault): `CONTEXT: FILE: strerror (ENAME)`, each part present when known.
    """
    if isinstance(e, KnobError):
        return CliError(f"--set: {e.strerror}", EXIT_USAGE)
    why = e.strerror or str(e)
    if e.errno is not None:
        why = f"{why} ({errno_name(e.errno)})"
    parts = [p for p in (context, e.filename and str(e.filename), why) if p]
    return CliError(": ".join(parts), exit_code)
