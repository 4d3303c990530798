"""The one validator of integer arguments at the API boundary.

Python's bool is an int; the engine's counts, sizes and addresses are not
booleans, so True is refused where a number is asked for, everywhere.
"""


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
