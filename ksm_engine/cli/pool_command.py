"""`ksm-engine pool SCENARIO.json [--compare] [--plot PNG] [--json]`: many
partitions, each a machine with KSM and the CMM balloon, sharing one
overcommitted pool under a hypervisor that loans and pages.

The scenario is validated and run by ksm_engine.apps.pool; this module only
turns arguments into runs and runs into text, JSON or a picture.  An
invalid scenario exits 2 naming the field (as `ksm-engine cmm`); a knob a
partition's KSM refuses exits 2 too; a check that finds something lost
exits 1.
"""
import os
import sys

from ..apps.pool import PoolCheckError, compare, load_pool_scenario, run_pool
from ..apps.pool.plot import plot_pool
from ..apps.scenario_fields import ScenarioError
from ..ksm.sysfs import KnobError
from . import render
from .demo_command import check_plot
from .errors import EXIT_FAILURE, EXIT_USAGE, CliError

NAME = "pool"
HELP = "run partitions with KSM and the CMM balloon on an overcommitted pool"
DESCRIPTION = """\
Run a shared memory pool scenario (docs/pool.md): partitions, each a machine
with its own processes, KSM (ksmd on the shared simulated clock) and CMM
balloon driver, drawing on one pool that a hypervisor overcommits.  When the
pool runs short the hypervisor asks partitions to loan pages (H_GET_MPP's
loan request) and, when that is not enough, pages their memory out to a
paging device, paged back in when touched, at a cost in simulated time.

Printed after every step: the pool (backed, free, on the device, page-ins)
and per partition loaned pages, pages_shared, pages_sharing, free pages,
hypervisor-paged pages, page-ins, OOM notifier calls, failed allocations
and work done; then a summary.  --compare runs the scenario with KSM+CMM,
CMM only and neither, side by side.  Every step is checked (nothing lost)."""
EPILOG = """\
examples:
  ksm-engine pool examples/pool-8x256.json --compare
  ksm-engine pool examples/pool-8x256.json --json > run.json
  ksm-engine pool examples/pool-8x256.json --compare --plot pool.png

exit codes: 0 ran, 1 a check failed or a plot could not be written,
2 invalid scenario or arguments"""

STEP_COLUMNS = ("name", "phase", "loaned_pages", "pages_shared", "pages_sharing", "free_pages",
                "paged_pages", "page_ins", "oom_calls", "failed_allocs", "work")
SUMMARY_ROWS = ("overcommit", "pool_pages", "pool_page_ins", "pool_page_outs", "max_paged_pages",
                "time_weighted_pool_use", "guest_oom_calls", "failed_allocs", "stalls",
                "total_work", "max_loan_target_pages", "loans_released_pages", "checks",
                "simulated_seconds", "seconds")


def add_arguments(p):
    p.add_argument("scenario", metavar="SCENARIO.json", help="the scenario file (JSON)")
    p.add_argument("--compare", action="store_true",
                   help="run KSM+CMM, CMM only and neither, side by side")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw pool use, loans and paging over time (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    try:
        scn = load_pool_scenario(args.scenario)
    except ScenarioError as e:
        raise CliError(e.message, EXIT_USAGE) from None
    if args.plot:
        check_plot(args.plot)
    prog = render.Progress(enabled=not args.json)
    try:
        if args.compare:
            runs = compare(scn, progress=lambda m, t: prog.update(f"{m}: t={t:g}s"))
        else:
            runs = {"scenario": run_pool(scn, progress=lambda t: prog.update(f"t={t:g}s"))}
    except KnobError as e:
        raise CliError(f"pool: {e}", EXIT_USAGE) from None
    except PoolCheckError as e:
        raise CliError(f"pool: check failed: {e}", EXIT_FAILURE) from None
    finally:
        prog.done()
    if args.plot:
        try:
            plot_pool(runs, args.plot, title=f"ksm-engine pool: {os.path.basename(args.scenario)}")
        except OSError as e:
            raise CliError(f"--plot: cannot write {args.plot}: {e.strerror or e}", EXIT_FAILURE) from None
    doc = runs if args.compare else runs["scenario"]
    if args.json:
        out = {"scenario": {"description": scn.description, "seed": scn.seed,
                            "overcommit": round(scn.overcommit, 3)}}
        out.update({"runs": doc} if args.compare else doc)
        if args.plot:
            out["plot"] = os.fspath(args.plot)
        render.print_json(out)
    else:
        sys.stdout.write(render_compare(runs) if args.compare else render_run(doc))
        if args.plot:
            print(f"\nplot written to {args.plot}")
    return 0


def render_steps(r):
    """Per step: the pool line, then one row per partition."""
    out = []
    for s in r["steps"]:
        p = s["pool"]
        out.append(f"t={s['t']:g}s  pool: backed {p['backed_pages']}  free {p['free_pages']}  "
                   f"on device {p['device_used']}  page-ins {p['page_ins']}  "
                   f"page-outs {p['page_outs']}")
        rows = [[q[c] if q[c] is not None else "-" for c in STEP_COLUMNS] for q in s["partitions"]]
        out.append(render.table(rows, headers=STEP_COLUMNS))
        out.append("")
    return "\n".join(out)


def render_events(r):
    if not r["events"]:
        return ""
    def arg(a):
        return ",".join(f"{k}={v}" for k, v in a.items()) if isinstance(a, dict) else str(a)
    rows = [[f"{e['t']:g}", e["op"], arg(e["arg"]), e["result"]] for e in r["events"]]
    return "events\n" + render.table(rows, headers=("t", "event", "argument", "result")) + "\n\n"


def render_run(r):
    s = r["summary"]
    work = render.table([[n, w] for n, w in s["work"].items()], headers=("partition", "work"))
    return (render_steps(r) + render_events(r) + "summary\n"
            + render.key_values([(k, s[k]) for k in SUMMARY_ROWS]) + "\n\n" + work + "\n")


def render_compare(runs):
    """The three summaries side by side, then the work of each partition."""
    modes = list(runs)
    rows = [[k] + [runs[m]["summary"][k] for m in modes] for k in SUMMARY_ROWS]
    names = list(runs[modes[0]]["summary"]["work"])
    work = [[n] + [runs[m]["summary"]["work"][n] for m in modes] for n in names]
    return ("summary (side by side)\n" + render.table(rows, headers=["", *modes]) + "\n\n"
            + "work per partition\n" + render.table(work, headers=["partition", *modes]) + "\n")
