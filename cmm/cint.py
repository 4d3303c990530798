"""C integer arithmetic.

cmm.c mixes ``unsigned int`` module parameters, ``unsigned long`` counters
and ``signed long`` intermediate results, and relies on C's rules: unsigned
arithmetic wraps modulo 2**N, conversion to a signed type reinterprets the
bits, and integer division truncates toward zero (div_s64).  Python integers
are unbounded and ``//`` floors, so every place the driver does arithmetic
that C would do differently goes through a helper here.

The kernel's string-to-number parsers that cmm.c's interfaces use
(simple_strtoul for store_oom_pages and cmm_set_disable, kstrtouint/kstrtoul
for the module parameters and simulate_loan_target_kb, kstrtobool for
simulate) are ksm_engine.kstrtox's, shared with the KSM sysfs files.

The model is a 64-bit kernel (LP64): int is 32 bits, long 64 bits.  The
page is the engine's (ksm_engine.PAGE_SIZE); KB2PAGES and PAGES2KB are
cmm.c's macros over it.
"""
from ksm_engine._native import PAGE_SIZE
from ksm_engine.kstrtox import UINT_MAX, ULONG_MAX

PAGE_SHIFT = PAGE_SIZE.bit_length() - 1     # log2(PAGE_SIZE)


def to_u32(v):
    """(unsigned int)v: keep the low 32 bits."""
    return v & UINT_MAX


def to_s32(v):
    """(int)v: the low 32 bits read as two's complement."""
    v &= UINT_MAX
    return v - (1 << 32) if v >> 31 else v


def to_u64(v):
    """(unsigned long)v: keep the low 64 bits."""
    return v & ULONG_MAX


def to_s64(v):
    """(long)v: the low 64 bits read as two's complement."""
    v &= ULONG_MAX
    return v - (1 << 64) if v >> 63 else v


def KB2PAGES(kb):
    """KB2PAGES(): KiB -> pages, rounding down (a right shift)."""
    return kb >> (PAGE_SHIFT - 10)


def PAGES2KB(p):
    """PAGES2KB(): pages -> KiB (unsigned long)."""
    return to_u64(p << (PAGE_SHIFT - 10))


def div_s64(dividend, divisor):
    """div_s64(): signed 64-bit division truncating toward zero, as C does.

    Python's ``//`` rounds toward minus infinity (-5 // 4 == -2); C gives -1.
    """
    if divisor == 0:
        raise ZeroDivisionError("div_s64 by zero")
    q = abs(dividend) // abs(divisor)
    return to_s64(q if (dividend < 0) == (divisor < 0) else -q)
