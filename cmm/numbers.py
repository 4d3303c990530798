"""Checking the numbers callers hand the hypervisor stub.

The stub takes counts and byte sizes from Python callers and scenario
files.  whole_number() accepts an int or a finite float (the core's
ksm_engine.validate.finite_number) and truncates it toward zero.
"""
from ksm_engine.validate import finite_number


def whole_number(value, what):
    """int(value) for a finite number (floats truncated toward zero)."""
    return int(finite_number(value, what))
