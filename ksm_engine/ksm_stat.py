"""/proc/PID/ksm_stat: what Process.ksm_stat returns and how it prints.

The kernel's proc_pid_ksm_stat() prints four counters as "name value" and
two flags as "name: yes|no".  Here the counters are ints and the flags
YesNo strings, so a caller can compare with what /proc prints ("yes") and
test the flag's truth (``if st["ksm_mergeable"]``).

``profit`` is the kernel's ksm_process_profit() and, over the whole
machine, general_profit: the memory KSM saves less what its rmap_items
cost (the kernel counts sizeof(struct ksm_rmap_item), 64 bytes on 64-bit).
"""
from ._native import PAGE_SIZE

# sizeof(struct ksm_rmap_item) in the kernel (64-bit), as the profits count it.
KERNEL_RMAP_ITEM_SIZE = 64


def profit(merging_pages, zero_pages, rmap_items):
    """ksm_process_profit() / general_profit: bytes saved less rmap_item cost."""
    return (merging_pages + zero_pages) * PAGE_SIZE - rmap_items * KERNEL_RMAP_ITEM_SIZE


class YesNo(str):
    """A /proc flag: the string "yes" or "no", whose truth value is the flag.

    It is a str in every other respect: it equals and hashes as "yes" or
    "no" (so it works as a dict key or set member like the string it
    prints as).  It does not equal True or False: a str equal to both
    "yes" and True could not hash consistently with both.  Compare its
    truth with ``bool(flag)``.
    """

    __slots__ = ()

    def __new__(cls, flag):
        return super().__new__(cls, "yes" if flag else "no")

    def __bool__(self):
        return str.__eq__(self, "yes")


def ksm_stat(stat, merge_any, mergeable):
    """The ksm_stat dict from the core's ``struct ke_mm_stat`` and the two flags."""
    return {
        "ksm_rmap_items": stat.ksm_rmap_items,
        "ksm_zero_pages": stat.ksm_zero_pages,
        "ksm_merging_pages": stat.ksm_merging_pages,
        "ksm_process_profit": profit(stat.ksm_merging_pages, stat.ksm_zero_pages, stat.ksm_rmap_items),
        "ksm_merge_any": YesNo(merge_any),
        "ksm_mergeable": YesNo(mergeable),
    }


def ksm_stat_text(st):
    """A ksm_stat dict exactly as the kernel prints the file."""
    return "".join(f"{k}: {v}\n" if isinstance(v, YesNo) else f"{k} {v}\n" for k, v in st.items())
