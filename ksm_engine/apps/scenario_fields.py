"""Validating scenario files: the field checks and the file reading that
the scenario runners (cmm_scenario.py, pool/) share.

Every check raises ScenarioError with a message that names where the bad
value is: "step 3: advance_s must be a number, not \"x\"" or, for a field
outside the steps, "scenario: partitions[2].logical_mb must be >= 1, not 0".
The CLI turns a ScenarioError into exit code 2 with that message.

read_scenario_json() reads a scenario file with the limits every runner
wants: only a regular file (a FIFO or a device would block or never end),
at most MAX_SCENARIO_BYTES, decoded as UTF-8 JSON.
"""
import json
import math
import os
import stat

from ..validate import is_int

MAX_SCENARIO_BYTES = 16 << 20    # the largest scenario file read


class ScenarioError(ValueError):
    """An invalid scenario; ``step`` is the index of the bad step or None."""

    def __init__(self, message, step=None):
        super().__init__(message)
        self.message = message
        self.step = step


# -- field checks -----------------------------------------------------------
def where(step, key=None):
    w = f"step {step}" if step is not None else "scenario"
    return f"{w}: {key}" if key else w


def is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def int_field(v, what, step=None, lo=0, hi=None):
    if not is_int(v):
        raise ScenarioError(f"{where(step, what)} must be an integer, not {json.dumps(v)}", step)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"{lo}..{hi}"
        raise ScenarioError(f"{where(step, what)} must be {rng}, not {v}", step)
    return v


def num_field(v, what, step=None):
    if not is_num(v):
        raise ScenarioError(f"{where(step, what)} must be a number, not {json.dumps(v)}", step)
    if v < 0:
        raise ScenarioError(f"{where(step, what)} must be >= 0, not {v}", step)
    return v


def bool_field(v, what, step=None):
    if not isinstance(v, bool):
        raise ScenarioError(f"{where(step, what)} must be true or false, not {json.dumps(v)}", step)
    return v


def true_field(v, what, step):
    if v is not True:
        raise ScenarioError(f"{where(step, what)} must be true, not {json.dumps(v)}", step)
    return True


def obj_field(v, what, step, required, optional=()):
    if not isinstance(v, dict):
        raise ScenarioError(f"{where(step, what)} must be an object, not {json.dumps(v)}", step)
    for k in required:
        if k not in v:
            raise ScenarioError(f"{where(step, what)} is missing field '{k}'", step)
    for k in v:
        if k not in required and k not in optional:
            raise ScenarioError(f"{where(step, what)} has unknown field '{k}'", step)
    return v


def str_or_int_field(v, what, step):
    if isinstance(v, str):
        return v
    if is_int(v):
        return str(v)
    raise ScenarioError(f"{where(step, what)} must be a string or an integer, not {json.dumps(v)}", step)


def read_scenario_json(path):
    """The decoded JSON of a scenario file; ScenarioError on any problem
    (see the module doc)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            raise ScenarioError(f"{path}: not a regular file")
        if st.st_size > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{path}: {st.st_size} bytes, larger than a scenario may be "
                                f"({MAX_SCENARIO_BYTES})")
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_SCENARIO_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: cannot read: {e}") from None
    return decode_scenario_json(text, path)


def decode_scenario_json(text, name="scenario"):
    """The decoded JSON of scenario text; ScenarioError if it is not JSON."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(f"{name}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ScenarioError(f"{name}: nested too deeply to be a scenario") from None
    except ValueError as e:  # e.g. an integer with too many digits
        raise ScenarioError(f"{name}: not a usable JSON value: {e}") from None
    return obj
