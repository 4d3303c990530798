"""The one validator of integer arguments at the API boundary.

Python's bool is an int; the engine's counts, sizes and addresses are not
booleans, so True is refused where a number is asked for, everywhere.
finite_number() is its counterpart for times and sizes that may be floats
(the clocks' seconds, the hypervisor stub's byte counts).
"""
import math


def is_int(value):
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_arg(name, value, *, min=None, max=None):
    """``value`` if it is an int (not a bool) within [min, max].

    Raises TypeError naming ``name`` for anything else that is not an int,
    ValueError when it is out of range.  Either bound may be None (open).
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if min is not None and value < min:
        raise ValueError(f"{name} must be at least {min}" if min else f"{name} must not be negative")
    if max is not None and value > max:
        raise ValueError(f"{name} must be at most {max}")
    return value


def finite_number(value, what):
    """``value`` if it is an int or a finite float.  TypeError for what is
    not a number (bools included), ValueError for NaN and the infinities
    (which int() would turn into OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, not {value}")
    return value
