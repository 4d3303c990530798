"""`ksm-engine calibrate`: measure the kernel's ksmd and save the costs the
ksmd model (ksm_engine.apps.ksmd_model) predicts time and CPU with.

The measuring is ksm_engine.apps.ksmd_calibrate (through the kernel peer:
the machine-wide lock, every knob saved and restored, run=2 at the end); the
file is ksm_engine.apps.ksmd_calibration (atomic write, refused when corrupt
or from another kernel).  --show prints the model an estimate would use now,
without measuring (no root needed).
"""
import errno

from ..apps import kernel_peer
from ..apps.ksmd_calibrate import calibrate
from ..apps.ksmd_calibration import CalibrationError, default_path, load_model, save
from . import render
from .errors import EXIT_FAILURE, EXIT_USAGE, CliError

HELP = "measure the kernel's ksmd (CPU per page, batch length) for the time and CPU predictions"
DESCRIPTION = """\
Measure this machine's ksmd (root, and a writable /sys/kernel/mm/ksm) and save
what the predictions of ksmd's time to settle and CPU need:

  CPU per scanned page by what the page costs: first checksum, unstable
  insert, unstable merge, stable hit, zero-page merge, an already merged page,
  a smart_scan skip, and per level of the stable and unstable trees walked;
  CPU per batch and per full scan;
  a batch's real length: the sleep in jiffies (CONFIG_HZ), rounded up to the
  next tick by the timer wheel, the wake-up latency and its jitter.

The built-in mix: raw images whose full scans separate those kinds (unique
pages, pairs, groups of 64 copies, zero pages), one batch per full scan, and
real Python interpreters (PR_SET_MEMORY_MERGE) run at pages_to_scan=100 and
1000 with sleep_millisecs=20 until settled.  About 30 s (--quick: about 10 s,
less precise).  Other load on the machine lengthens ksmd's batches (ksmd runs
at nice 5): calibrate on the machine as it will be used.

The result goes to --calibration FILE, else $KSM_ENGINE_CALIBRATION, else
~/.config/ksm-engine/ksmd-calibration.json (XDG_CONFIG_HOME), written
atomically.  It is valid for this kernel release and CONFIG_HZ only; a file
that is corrupt or from another kernel is refused and the default model is
used, with a note.  See docs/ksmd_model.md."""
EPILOG = """\
examples:
  sudo ksm-engine calibrate
  sudo ksm-engine calibrate --calibration /etc/ksm-engine/ksmd.json --json
  ksm-engine calibrate --show

exit codes: 0 saved (or shown), 1 a measurement or the write failed (a full
disk), 2 not root, no usable /sys/kernel/mm/ksm, or a bad --calibration path"""


def add_arguments(p):
    p.add_argument("--calibration", metavar="FILE", default=None,
                   help=f"the calibration file (default {default_path()})")
    p.add_argument("--show", action="store_true",
                   help="print the model predictions use now, measure nothing")
    p.add_argument("--quick", action="store_true",
                   help="a smaller mix: about 10 s, less precise (tests)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args):
    path = args.calibration or default_path()
    if args.show:
        try:
            model = load_model(path, explicit=bool(args.calibration))
        except CalibrationError as e:
            raise CliError(str(e.strerror), EXIT_USAGE) from None
        result = {"path": path, **render.cost_model_dict(model)}
        render.print_json(result) if args.json else print(render.calibration_text(result))
        return 0
    ok, why = kernel_peer.availability()
    if not ok:
        raise CliError(f"calibrate needs the kernel's KSM: {why}", EXIT_USAGE)
    progress = render.Progress(enabled=not args.json)
    try:
        model, measurements = calibrate(progress=progress.update, quick=args.quick)
    except (OSError, RuntimeError) as e:
        raise CliError(f"measuring ksmd failed: {getattr(e, 'strerror', None) or e}",
                       EXIT_FAILURE) from None
    finally:
        progress.done()
    try:
        saved = save(model, path, measurements)
    except CalibrationError as e:
        code = EXIT_USAGE if e.errno in (errno.EISDIR, errno.ENOTDIR) else EXIT_FAILURE
        raise CliError(e.strerror, code) from None
    result = {"path": saved, **render.cost_model_dict(model), "measurements": measurements}
    render.print_json(result) if args.json else print(render.calibration_text(result))
    return 0
