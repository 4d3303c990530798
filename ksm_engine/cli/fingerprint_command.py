"""`ksm-engine fingerprint`: one fingerprint file per source, for `fleet`.

The engine side is ksm_engine.apps.fleet.fingerprint (reading sources into
the count table, writing the Parquet file); this module turns arguments
into sources and the result into a table or JSON.
"""
from ..apps.fleet import FleetUnavailable, require
from . import fleet_render, render
from .errors import EXIT_FAILURE, CliError
from .options import add_source_arguments, check_watch

NAME = "fingerprint"
HELP = "write the page fingerprints of processes, cores or images, for `fleet`"
DESCRIPTION = """\
Read each source page by page (the sources of `ksm-engine estimate`:
--pid, --core, --image; --all-pids for every process whose private
anonymous memory can be read) and write one Parquet file per source into
--output DIR: each distinct non-zero page content's 128-bit fingerprint
and how many pages hold it, with the source's name and kind, the host, its
pages and zero pages, the time and the fingerprint version (docs/fleet.md
gives the schema).  Memory stays bounded: the read buffer and the count
table, never the pages.  With --all-pids, processes that cannot be read
are listed as skipped.  The same source given twice is read once."""
EPILOG = """\
examples:
  ksm-engine fingerprint --all-pids --output /var/tmp/fps
  ksm-engine fingerprint --image guest1.img --image guest2.img --output fps --json

exit codes: 0 written, 1 a runtime failure (a process exited while read,
an unwritable output), 2 bad arguments or an unusable source"""


def add_arguments(p):
    add_source_arguments(p)
    p.add_argument("--all-pids", action="store_true",
                   help="every process whose private anonymous memory can be read")
    p.add_argument("--output", required=True, metavar="DIR", help="directory for the files")
    p.add_argument("--host", metavar="NAME", help="host name to record (default: this host's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    try:
        require("fingerprint")
    except FleetUnavailable as e:
        raise CliError(str(e)) from None
    from ..apps.estimate.sources import EstimateError
    from ..apps.fleet.fingerprint import all_pids, fingerprint_all
    from ..apps.fleet.fpfile import default_host

    specs = list(args.sources)
    if args.all_pids:
        specs += all_pids()
    if not specs:
        raise CliError("fingerprint: give at least one source: --pid PID, --core FILE, "
                       "--image FILE or --all-pids")
    check_watch(args.watch)
    host = args.host or default_host()
    if not host.strip():
        raise CliError("--host must not be empty")
    prog = render.Progress(enabled=not args.json)
    try:
        written, skipped = fingerprint_all(specs, args.output, host,
                                           skip_unreadable=args.all_pids, progress=prog.update,
                                           core_zero_pages=args.core_zero_pages, watch=args.watch)
    except EstimateError as e:
        raise CliError(str(e)) from None
    except ProcessLookupError as e:
        raise CliError(f"fingerprint: {e.strerror or e}", EXIT_FAILURE) from None
    except OSError as e:
        raise CliError(f"fingerprint: {e.filename or args.output}: {e.strerror or e}",
                       EXIT_FAILURE) from None
    finally:
        prog.done()
    result = {"host": host, "output": args.output, "files": written, "skipped": skipped}
    if args.json:
        fleet_render.print_json(result)
    else:
        print(fleet_render.render_fingerprint(result))
    return 0
