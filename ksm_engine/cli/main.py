"""Entry point of the `ksm-engine` command.

One module per subcommand (``*_command.py`` beside this file).  Each exposes
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; the
table ``COMMANDS`` below is the only place that lists them.  Commands compute
their result with the engine, then hand it to their renderer (text or --json);
errors are raised as CliError and turned into an exit code here.
"""
import argparse
import importlib
import sys

from .errors import CliError, EXIT_FAILURE, EXIT_USAGE, os_error

# subcommand name -> module (relative to this package)
COMMANDS = {
    "demo": ".demo_command",
    "scan": ".scan_command",
    "cmm": ".cmm_command",
    "estimate": ".estimate_command",
    "compare-kernel": ".compare_kernel_command",
    "calibrate": ".calibrate_command",
    "pool": ".pool_command",
    "fingerprint": ".fingerprint_command",
    "fleet": ".fleet_command",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors through CliError (exit code 2)."""

    def error(self, message):
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def build_parser():
    from .. import __version__

    parser = _Parser(
        prog="ksm-engine",
        description="Kernel Samepage Merging and the CMM balloon over synthetic memory.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ksm-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in COMMANDS.items():
        # A command that cannot be imported is a broken install: its
        # ImportError goes out as it is, never a command silently missing.
        mod = importlib.import_module(modname, __package__)
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=getattr(mod, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args._run(args) or 0
    except CliError as e:
        print(f"ksm-engine: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ksm-engine: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("ksm-engine: error: out of memory", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as e:  # a runtime failure outside any command's own checks
        err = os_error(e)
        print(f"ksm-engine: error: {err.message}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
