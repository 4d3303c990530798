"""`ksm-engine cmm SCENARIO.json [--json]`: run a CMM balloon scenario.

The scenario is loaded and run by ksm_engine.apps.cmm_scenario (the driver on a simulated
clock); this module only turns arguments into a run and the run into text or
JSON.  Bad input (missing file, not JSON, unknown step, wrong types, missing
fields) is a CliError with exit code 2 naming the step; a driver that fails
to load (e.g. EOPNOTSUPP without CMO) exits 1.
"""
import json
import sys

from ..apps.cmm_scenario import ScenarioError, load_scenario, run_scenario
from .errors import EXIT_USAGE, CliError, os_error

HELP = "run a CMM (pSeries balloon) scenario on a simulated clock"
DESCRIPTION = """\
Run a scenario against the pSeries CMM balloon driver (cmm.c) and a stub
hypervisor, on a simulated clock, and print the state after every step:
loaned_kb, loaned_target_kb, oom_freed_kb (the driver's sysfs files),
totalram_kb (the machine's managed memory), hv_loaned_kb (what the
hypervisor holds as loaned) and the step's result ("ok" or an errno name).

The driver is loaded at t=0 and its thread first wakes at t=delay.  Steps:
hv_target_kb, advance_s, oom, hotplug, fail_hcalls, fail_hget_mpp,
sysfs_write, param, simulate_loan_target_kb, allocate_mb, exit_processes,
compact, reboot.  See docs/cmm.md for the format."""
EPILOG = """\
example:
  $ cat loan.json
  {"ram_mb": 512, "params": {"min_mem_mb": 64},
   "steps": [{"hv_target_kb": 102400}, {"advance_s": 2}, {"oom": true}]}
  $ ksm-engine cmm loan.json
  $ ksm-engine cmm loan.json --json

exit codes: 0 ran, 1 the driver failed to load, 2 invalid scenario"""

COLUMNS = [
    ("#", "index", ">"), ("t", "t", ">"), ("step", "op", "<"),
    ("loaned_kb", "loaned_kb", ">"), ("target_kb", "loaned_target_kb", ">"),
    ("oom_freed_kb", "oom_freed_kb", ">"), ("totalram_kb", "totalram_kb", ">"),
    ("hv_loaned_kb", "hv_loaned_kb", ">"), ("result", "result", "<"),
]

JSON_FIELDS = ("t", "loaned_kb", "loaned_target_kb", "oom_freed_kb",
               "totalram_kb", "hv_loaned_kb", "result")


def add_arguments(parser):
    parser.add_argument("scenario", metavar="SCENARIO.json",
                        help="the scenario file (JSON)")
    parser.add_argument("--json", action="store_true",
                        help='print {"steps": [...]} instead of a table')


def run(args):
    try:
        scn = load_scenario(args.scenario)
    except ScenarioError as e:
        raise CliError(e.message, EXIT_USAGE) from None
    try:
        result = run_scenario(scn)
    except OSError as e:
        raise os_error(e, "cmm: driver failed to load") from None
    steps = result.steps
    if args.json:
        render_json(steps, sys.stdout)
    else:
        render_text(steps, sys.stdout)
    return 0


def render_json(steps, out):
    """{"steps": [...]}: the contract fields, plus index and op."""
    doc = {"steps": [dict({"index": s["index"], "op": s["op"]},
                          **{k: s[k] for k in JSON_FIELDS}) for s in steps]}
    json.dump(doc, out, indent=1)
    out.write("\n")


def _cell(v):
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _row(s):
    cells = []
    for _, key, _ in COLUMNS:
        if key == "op" and s.get("arg"):
            cells.append(f"{s['op']} {s['arg']}")
        else:
            cells.append(_cell(s[key]))
    return cells


def render_text(steps, out):
    """A table, one row per step."""
    rows = [_row(s) for s in steps]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, (h, _, _) in enumerate(COLUMNS)]

    def line(cells):
        parts = []
        for (h, _, align), w, c in zip(COLUMNS, widths, cells):
            parts.append(c.rjust(w) if align == ">" else c.ljust(w))
        return "  ".join(parts).rstrip()

    out.write(line([h for h, _, _ in COLUMNS]) + "\n")
    for r in rows:
        out.write(line(r) + "\n")
    if not rows:
        out.write("(no steps)\n")
