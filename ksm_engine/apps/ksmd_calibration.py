"""The calibration file of the ksmd model: where it lives, what it holds,
when it is refused.

Path: --calibration FILE, else $KSM_ENGINE_CALIBRATION, else
$XDG_CONFIG_HOME/ksm-engine/ksmd-calibration.json (~/.config/... when
XDG_CONFIG_HOME is unset): one per user.

Schema (JSON object, docs/ksmd_model.md):
  format         "ksm-engine ksmd calibration"
  version        FORMAT_VERSION (an integer; another version is refused)
  kernel         {"release": uname -r, "hz": CONFIG_HZ or null, "machine": uname -m}
  created        ISO 8601 UTC time of the calibration
  costs          {name: CPU seconds} for every ksmd_model.COSTS: per page of
                 each kind, per tree level walked
  per_batch, per_full_scan, wake_latency, jitter   seconds (ksmd_model.CostModel)
  stretch        wall seconds per CPU second of a batch's work past its first
                 scheduler slice (1 on an idle machine)
  slice          ksmd's scheduler slice, seconds
  hz             the CONFIG_HZ the timing was measured with (the kernel's
                 when readable, else the one the sleeps showed)
  measurements   what the fit was made from (for the record; not read back)

A file is refused, and the default model used with a note saying why, when
it is not valid JSON of this schema, has another version, or was made on
another kernel release or CONFIG_HZ than the running one.

Writing is atomic: a temporary file in the same directory, fsync, rename;
on any failure (a full disk) the temporary file is removed and nothing else
is touched.
"""
import datetime
import errno
import gzip
import json
import os
import tempfile

from ..validate import finite_number, is_int
from .ksmd_model import COSTS, CostModel, default_model

FORMAT = "ksm-engine ksmd calibration"
FORMAT_VERSION = 1
ENV_PATH = "KSM_ENGINE_CALIBRATION"
TIMING_FIELDS = ("per_batch", "per_full_scan", "wake_latency", "jitter", "stretch", "slice")


class CalibrationError(OSError):
    """A calibration file that cannot be written or was asked for and is
    missing; the message is one line."""


def default_path():
    """The per-user calibration file (see the module doc)."""
    if os.environ.get(ENV_PATH):
        return os.environ[ENV_PATH]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ksm-engine", "ksmd-calibration.json")


def _config_lines():
    """The running kernel's build config, as lines (None if unreadable)."""
    release = os.uname().release
    for path, opener in ((f"/boot/config-{release}", open), ("/proc/config.gz", gzip.open)):
        try:
            with opener(path, "rt") as f:
                return f.read().splitlines()
        except OSError:
            continue
    return None


def kernel_hz():
    """CONFIG_HZ of the running kernel from its config, None if unreadable."""
    for line in _config_lines() or ():
        if line.startswith("CONFIG_HZ="):
            try:
                return int(line.split("=", 1)[1])
            except ValueError:
                return None
    return None


def kernel_identity():
    u = os.uname()
    return {"release": u.release, "hz": kernel_hz(), "machine": u.machine}


def to_json(model, measurements=None):
    """The file's object for a calibrated CostModel."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "kernel": kernel_identity(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "costs": dict(model.costs), "hz": model.hz,
            **{f: getattr(model, f) for f in TIMING_FIELDS},
            "measurements": measurements or {}}


def _number(obj, key):
    try:
        v = finite_number(obj.get(key), key)
    except (TypeError, ValueError):
        raise ValueError(f"{key} is not a non-negative number") from None
    if v < 0:
        raise ValueError(f"{key} is not a non-negative number")
    return float(v)


def from_json(obj):
    """A CostModel from the file's object; ValueError saying what is wrong
    (schema, version, another kernel)."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError("not a ksm-engine ksmd calibration")
    if obj.get("version") != FORMAT_VERSION:
        raise ValueError(f"format version {obj.get('version')!r}, this ksm-engine reads {FORMAT_VERSION}")
    kernel, here = obj.get("kernel"), kernel_identity()
    if not isinstance(kernel, dict):
        raise ValueError("no kernel identity")
    if kernel.get("release") != here["release"]:
        raise ValueError(f"made on kernel {kernel.get('release')!r}, this is {here['release']!r}")
    if here["hz"] is not None and kernel.get("hz") not in (None, here["hz"]):
        raise ValueError(f"made with CONFIG_HZ={kernel.get('hz')}, this kernel has {here['hz']}")
    costs = obj.get("costs")
    if not isinstance(costs, dict) or set(costs) != set(COSTS):
        raise ValueError(f"costs must give exactly {', '.join(COSTS)}")
    hz = obj.get("hz")
    if not is_int(hz) or not 1 <= hz <= 10000:
        raise ValueError("hz is not a CONFIG_HZ")
    return CostModel(costs={k: _number(costs, k) for k in COSTS}, hz=hz, source="calibrated",
                     **{f: _number(obj, f) for f in TIMING_FIELDS})


def load_model(path=None, explicit=False):
    """The CostModel to predict with: the calibration at path (default
    default_path()) if usable, else the default model whose note says why.
    explicit: the user named the file, so a missing one is an error
    (CalibrationError) rather than "not calibrated yet"."""
    path = os.fspath(path) if path is not None else default_path()
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        if explicit:
            raise CalibrationError(errno.ENOENT, f"{path}: no such calibration file") from None
        return default_model(f"not calibrated: {path} does not exist, run ksm-engine calibrate")
    except OSError as e:
        if explicit:
            raise CalibrationError(e.errno, f"{path}: {e.strerror}") from None
        return default_model(f"{path}: unreadable ({e.strerror})")
    try:
        return from_json(json.loads(data.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as e:
        return default_model(f"{path} refused: {str(e).splitlines()[0]}")


def save(model, path=None, measurements=None):
    """Writes the calibration atomically (module doc).  Returns the path;
    CalibrationError (one line, errno kept) on failure, nothing left behind."""
    path = os.fspath(path) if path is not None else default_path()
    if os.path.isdir(path):
        raise CalibrationError(errno.EISDIR, f"{path}: is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    text = json.dumps(to_json(model, measurements), indent=2) + "\n"
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ksmd-calibration.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CalibrationError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path
