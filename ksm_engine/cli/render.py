"""Rendering shared by the commands: tables, JSON, progress.

Commands compute plain dicts and lists; everything here only formats them.
Progress goes to stderr, only when stderr is a terminal and --json is off.
"""
import json
import sys


def print_json(obj, file=None):
    json.dump(obj, file or sys.stdout, indent=2, sort_keys=False)
    (file or sys.stdout).write("\n")


def table(rows, headers=None, align=None):
    """Text table: rows of cells (str() applied), right-aligned numbers."""
    rows = [[_cell(c) for c in r] for r in rows]
    if headers:
        rows = [list(headers)] + rows
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        cells = []
        for i, c in enumerate(r):
            right = align[i] == "r" if align else _numeric(c)
            cells.append(c.rjust(widths[i]) if right else c.ljust(widths[i]))
        out.append("  ".join(cells).rstrip())
        if headers and n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def key_values(pairs):
    """Two-column "name  value" table."""
    return table([[k, v] for k, v in pairs], align="lr")


def _cell(c):
    if isinstance(c, float):
        return f"{c:.3f}"
    return str(c)


def _numeric(s):
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


class Progress:
    """A one-line progress indicator on stderr (silent when not a tty)."""

    def __init__(self, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._width = 0

    def update(self, text):
        if not self.enabled:
            return
        pad = max(self._width - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def done(self):
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def report(args, compute, render_text):
    """What every report command's run() does: compute(args, progress) with
    a progress line (none under --json), then print the result as JSON or
    as render_text(result).  Returns the result."""
    prog = Progress(enabled=not args.json)
    try:
        result = compute(args, progress=prog.update)
    finally:
        prog.done()
    if args.json:
        print_json(result)
    else:
        print(render_text(result))
    return result


# --- the ksmd model (calibrate, and the estimate's time and CPU) ---

def ksmd_model_line(model, note=None):
    """The table line saying which ksmd model a prediction used."""
    if model == "calibrated":
        return "ksmd model: calibrated (ksm-engine calibrate)"
    return f"ksmd model: default{f' ({note})' if note else ''}"


def cost_model_dict(model):
    """A ksmd_model.CostModel as JSON-ready figures."""
    out = {"model": model.source, "hz": model.hz,
           "costs_us": {k: round(v * 1e6, 4) for k, v in model.costs.items()},
           "per_batch_us": round(model.per_batch * 1e6, 2),
           "per_full_scan_us": round(model.per_full_scan * 1e6, 2),
           "wake_latency_us": round(model.wake_latency * 1e6, 2),
           "jitter_us": round(model.jitter * 1e6, 2), "stretch": model.stretch,
           "slice_us": round(model.slice * 1e6, 2)}
    if model.note:
        out["note"] = model.note
    return out


def calibration_text(result):
    """calibrate's report as text."""
    lines = [ksmd_model_line(result["model"], result.get("note")),
             f"file: {result['path']}", f"CONFIG_HZ: {result['hz']}", "",
             table([[k, v] for k, v in result["costs_us"].items()],
                   headers=["CPU per page / tree level", "us"]), "",
             key_values([("per batch (us)", result["per_batch_us"]),
                         ("per full scan (us)", result["per_full_scan_us"]),
                         ("wake-up latency (us)", result["wake_latency_us"]),
                         ("jitter (us)", result["jitter_us"]),
                         ("scheduler slice (us)", result["slice_us"]),
                         ("wall per CPU second past the slice", result["stretch"])])]
    paces = result.get("measurements", {}).get("paces")
    if paces:
        lines += ["", table([[p["pages_to_scan"], p["sleep_millisecs"], p["pages"],
                              round(p["batch_seconds"] * 1e3, 2), p["settle_seconds"],
                              p["ksmd_cpu_seconds"]] for p in paces],
                            headers=["pages_to_scan", "sleep_millisecs", "pages", "batch ms",
                                     "settle s", "ksmd CPU s"])]
    return "\n".join(lines)
