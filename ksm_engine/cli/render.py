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
