"""The CLI's one error type: it carries the exit code the process ends with.

Exit codes (every command): 0 success, 1 a runtime failure, 2 bad usage or
bad input.  Commands raise CliError; main() turns it into a message on stderr
and the exit code, so no traceback ever reaches the user.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report to the user as `ksm-engine: error: MESSAGE`."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
