"""Checking the numbers callers hand the stub and the clock.

The hypervisor stub and the simulated clock take counts, byte sizes and
seconds from Python callers and scenario files.  finite_number() accepts an
int or a finite float and refuses the rest with the errors Python code
expects: TypeError for what is not a number (bools included), ValueError
for NaN and the infinities (which int() would turn into OverflowError).
"""
import math


def finite_number(value, what):
    """value if it is an int or a finite float, else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, not {value}")
    return value


def whole_number(value, what):
    """int(value) for a finite number (floats truncated toward zero)."""
    return int(finite_number(value, what))
