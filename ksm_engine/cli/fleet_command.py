"""`ksm-engine fleet`: the sharing across many hosts' fingerprint files,
on Dask, and where to place the sources.

The engine side is ksm_engine.apps.fleet (files, the Dask job, the count
model per host, the reports, the placement search); this module checks
the arguments and files, runs the job and hands the result to
fleet_render (text) or prints it as JSON.
"""
import os

from ..apps import plot as plot_mod
from ..apps.fleet import FleetUnavailable, require
from . import fleet_render
from .errors import EXIT_FAILURE, CliError
from .options import knob_assignments, size_arg

NAME = "fleet"
HELP = "what KSM would save across hosts, from fingerprint files, on Dask"
DESCRIPTION = """\
Read fingerprint files (from `ksm-engine fingerprint`; a directory means
its *.parquet files) as one Dask dataframe, shuffle it by fingerprint and
count, for every distinct page content, which sources hold it and how many
times.  Then report:
  1. all on one host: the settled KSM counters (use_zero_pages 0 and 1), as
     `ksm-engine estimate` gives them;
  2. as placed today (--placement CSV of source,host lines, else each file's
     own host): the same per host, and the total;
  3. sharing between sources: distinct non-zero contents each pair holds
     (the top pairs; the matrix in --json and as a heatmap with --plot);
  4. the reference-count histogram, as `zdb -S` prints its DDT histogram;
  5. with --hosts N --host-ram SIZE: a placement that fits each host's RAM
     after KSM and saves the most, beside today's and a random one.

Where it runs: --scheduler ADDRESS or DASK_SCHEDULER_ADDRESS, a running
dask.distributed cluster (every worker must read the files at the paths
given); neither: an embedded local cluster on 127.0.0.1.

The same source (host, kind and name) in two files is refused; the same
file named twice (or through a directory) is read once."""
EPILOG = """\
examples:
  ksm-engine fleet fps/
  ksm-engine fleet fps/ --scheduler tcp://10.0.0.1:8786 --json
  ksm-engine fleet fps/ --placement today.csv --hosts 4 --host-ram 64GiB --plot sharing.png

exit codes: 0 done, 1 a cluster that cannot be reached, a failed job or a
placement that cannot fit (it says by how much), 2 bad arguments or an
unusable file (named)"""


def add_arguments(p):
    p.add_argument("paths", nargs="+", metavar="PATH", help="fingerprint files or directories")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a dask.distributed scheduler, e.g. tcp://host:8786 "
                        "(default: DASK_SCHEDULER_ADDRESS, else an embedded local cluster)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="workers of the embedded local cluster (default 2)")
    p.add_argument("--threads", action="store_true",
                   help="embedded cluster: thread workers in this process, not processes")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up on a scheduler that does not answer (default 10)")
    p.add_argument("--partition-rows", type=int, default=None, metavar="N",
                   help="fingerprints per Dask task (default 2000000): fewer for workers "
                        "with little memory")
    p.add_argument("--placement", metavar="CSV", help="today's placement: lines of source,host")
    p.add_argument("--hosts", type=int, metavar="N", help="hosts to place the sources on")
    p.add_argument("--host-ram", type=size_arg, metavar="SIZE", help="RAM of each host (e.g. 64GiB)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the placement search and of the random plan (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="max_page_sharing=N, or use_zero_pages=0/1 (the run placement optimises)")
    p.add_argument("--plot", metavar="PNG", help="draw the sharing matrix as a heatmap")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _check_args(args):
    if (args.hosts is None) != (args.host_ram is None):
        raise CliError("--hosts and --host-ram go together")
    if args.hosts is not None and args.hosts < 1:
        raise CliError(f"--hosts must be at least 1, got {args.hosts}")
    if args.host_ram is not None and args.host_ram < 1:
        raise CliError("--host-ram must be positive")
    if args.workers < 1:
        raise CliError(f"--workers must be at least 1, got {args.workers}")
    if args.partition_rows is not None and args.partition_rows < 1:
        raise CliError(f"--partition-rows must be at least 1, got {args.partition_rows}")
    if not args.timeout > 0:
        raise CliError(f"--timeout must be positive, got {args.timeout}")
    if args.plot:
        try:
            plot_mod.check_output_path(args.plot)
        except plot_mod.PlotUnavailable as e:
            raise CliError(str(e)) from None
        except ValueError as e:
            raise CliError(f"--plot: {e}") from None


def open_files(paths):
    """The checked FingerprintFiles of the paths: exit 2 naming the file
    for an unusable one, for the same source twice, for mixed fingerprint
    versions."""
    from ..apps.fleet.fpfile import FingerprintFileError, expand_paths, open_fingerprint_file

    try:
        files = [open_fingerprint_file(p) for p in expand_paths(paths)]
    except FingerprintFileError as e:
        raise CliError(str(e)) from None
    seen = {}
    for f in files:
        other = seen.setdefault(f.identity, f)
        if other is not f:
            host, kind, name = f.identity
            raise CliError(f"the same source twice: {other.path} and {f.path} are both "
                           f"{kind} {name} on {host}; give one of them")
    versions = {f.meta["fingerprint_version"] for f in files}
    if len(versions) > 1:
        first = files[0]
        odd = next(f for f in files if f.meta["fingerprint_version"] != first.meta["fingerprint_version"])
        raise CliError(f"{odd.path}: fingerprint version {odd.meta['fingerprint_version']}, but "
                       f"{first.path} has {first.meta['fingerprint_version']}: "
                       "fingerprints of different versions cannot be compared")
    return files


def compute(args):
    from ..apps.fleet import aggregate, reports
    from ..apps.fleet.counts import KnobRefused, parse_knobs
    from ..apps.fleet.fpfile import FingerprintFileError
    from ..apps.fleet.signatures import SignatureCollision

    _check_args(args)
    try:
        knobs = parse_knobs(knob_assignments(args.set))
    except KnobRefused as e:
        raise CliError(f"--set: {e}") from None
    files = open_files(args.paths)
    today = None
    if args.placement:
        try:
            with open(args.placement, encoding="utf-8") as fh:
                today = reports.read_placement(fh.read(), files)
        except OSError as e:
            raise CliError(f"--placement {args.placement}: {e.strerror or e}") from None
        except (UnicodeDecodeError, reports.PlacementError) as e:
            raise CliError(f"--placement {args.placement}: {e}") from None
    from distributed.scheduler import KilledWorker   # after the checks: seconds to import

    address = aggregate.scheduler_address(args.scheduler)
    try:
        with aggregate.connect(address, workers=args.workers, processes=not args.threads,
                               timeout=args.timeout) as (client, where):
            table = aggregate.aggregate(client, files, partition_rows=args.partition_rows
                                        or aggregate.PARTITION_ROWS)
    except FingerprintFileError as e:
        raise CliError(str(e)) from None
    except aggregate.FleetRuntimeError as e:
        raise CliError(str(e), EXIT_FAILURE) from None
    except SignatureCollision as e:
        raise CliError(f"fleet: {e}", EXIT_FAILURE) from None
    except (OSError, TimeoutError, RuntimeError, KilledWorker) as e:   # the cluster failed the job
        raise CliError(f"fleet: the Dask job failed: {type(e).__name__}: {e}",
                       EXIT_FAILURE) from None
    result = reports.fleet_report(files, table, knobs, placement_hosts=today,
                                  hosts=args.hosts, host_ram=args.host_ram, seed=args.seed)
    result["cluster"] = where
    return result


def run(args):
    try:
        require("fleet")
    except FleetUnavailable as e:
        raise CliError(str(e)) from None
    result = compute(args)
    if args.plot:
        s = result["sharing"]
        plot_mod.plot_sharing_matrix(s["sources"], s["matrix"], args.plot)
        result["plot"] = os.fspath(args.plot)
    if args.json:
        fleet_render.print_json(result)
    else:
        print(fleet_render.render_fleet(result))
    p = result.get("placement")
    if p and not p["feasible"]:
        raise CliError(fleet_render.infeasible_message(p), EXIT_FAILURE)
    return 0
