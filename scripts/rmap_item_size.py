#!/usr/bin/env python3
"""What one rmap_item costs in C (as the engine keeps it) and as a Python
object (as the design card kept it): the figures docs/architecture.md quotes.

The card put KSM's per-page bookkeeping (the rmap_items) in Python.  The
engine keeps it in C, in chunks of 512 records a page-table leaf
(csrc/internal.h).  This script measures both sides on this interpreter:

  C       sizeof(struct rmap_item), the struct of csrc/internal.h
          declared to cffi as it stands in the header (ffi.sizeof, the
          compiler's layout rules), plus its share of the chunk table
          (sizeof(struct rmap_chunk) / 512 items).  The item's mm and
          virtual address are not stored: they follow from the chunk.
  Python  sys.getsizeof of an instance of a __slots__ class with the same
          fields (oldchecksum, prefix, the three tree/list links, flags,
          seqnr, age, remaining_skips) plus the two the C record derives
          (mm, address), before anything is put in them; then with typical
          values: a 32-bit checksum and prefix and a user-space address
          are int objects of their own (ints outside -5..256 are not
          shared), the links and the mm are references to existing
          objects (no extra cost), the small fields are cached small ints.
          It leaves out what finding an item would cost on top (a dict
          from address to item: its entry and hash table slot).
  kernel  sizeof(struct ksm_rmap_item) on 64-bit Linux, 64 bytes (the
          figure the kernel's general_profit counts).

    python scripts/rmap_item_size.py            # a table
    python scripts/rmap_item_size.py --json     # the same figures as JSON
"""
import argparse
import json
import os
import re
import sys

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERNAL_H = os.path.join(ROOT, "csrc", "internal.h")

# sizeof(struct ksm_rmap_item) on 64-bit Linux (mm/ksm.c; ksm_engine/ksm_stat.py)
KERNEL_RMAP_ITEM = 64


def c_struct(text, name):
    """The declaration ``struct name { ... };`` from the header text, with
    pointers made ``void *`` (cffi needs no other type to lay it out)."""
    m = re.search(rf"struct {re.escape(name)} \{{.*?\n\}};", text, re.DOTALL)
    if not m:
        raise SystemExit(f"struct {name} not found in {INTERNAL_H}")
    decl = re.sub(r"/\*.*?\*/", "", m.group(0), flags=re.DOTALL)
    return re.sub(r"struct \w+ \*", "void *", decl)


def c_sizes():
    """(sizeof rmap_item, sizeof rmap chunk record, items per chunk) from csrc/internal.h."""
    with open(INTERNAL_H) as f:
        text = f.read()
    ffi = FFI()
    # the typed handles the item holds (one-field structs: `typedef struct
    # { uint32_t idx; } rmap_id;`)
    for handle in re.findall(r"^typedef struct \{[^}]*\} \w+_id;", text, re.MULTILINE):
        ffi.cdef(handle)
    ffi.cdef(c_struct(text, "rmap_item"))
    ffi.cdef(c_struct(text, "rmap_chunk"))
    shift = re.search(r"#define RC_SHIFT (\w+)", text).group(1)
    bits = int(shift) if shift.isdigit() else int(re.search(rf"#define {shift} (\d+)", text).group(1))
    return ffi.sizeof("struct rmap_item"), ffi.sizeof("struct rmap_chunk"), 1 << bits


class RmapItem:
    """The rmap_item as a slotted Python object: the C record's fields and
    the two it derives from its chunk."""

    __slots__ = ("oldchecksum", "prefix", "left", "right", "parent", "flags", "seqnr", "age",
                 "remaining_skips", "mm", "address")


class RmapItemRecordOnly:
    """The same with only the C record's nine fields (mm and address kept
    elsewhere), for comparison."""

    __slots__ = ("oldchecksum", "prefix", "left", "right", "parent", "flags", "seqnr", "age",
                 "remaining_skips")


def _own_int(v):
    """An int object of its own (not one of CPython's shared small ints)."""
    return isinstance(v, int) and not -5 <= v <= 256


def python_sizes():
    """(empty instance, empty instance of the nine-field class, instance +
    the int objects a typical item holds, the typical item's ints alone)."""
    empty = sys.getsizeof(RmapItem())
    record_only = sys.getsizeof(RmapItemRecordOnly())
    mm, neighbour = object(), RmapItem()
    item = RmapItem()
    values = {"oldchecksum": 0x9E3779B9, "prefix": 0x7F454C46, "left": neighbour, "right": None,
              "parent": neighbour, "flags": 0x11, "seqnr": 7, "age": 1, "remaining_skips": 0, "mm": mm,
              "address": 0x7F3A5C2D1000}
    for k, v in values.items():
        setattr(item, k, v)
    ints = sum(sys.getsizeof(v) for v in values.values() if _own_int(v))
    return empty, record_only, sys.getsizeof(item) + ints, ints


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    item, chunk, per_chunk = c_sizes()
    empty, record_only, typical, ints = python_sizes()
    out = {
        "python": sys.version.split()[0],
        "c_rmap_item_bytes": item,
        "c_chunk_record_bytes_per_item": round(chunk / per_chunk, 3),
        "python_slotted_item_bytes_empty": empty,
        "python_slotted_record_fields_only_bytes_empty": record_only,
        "python_int_objects_bytes": ints,
        "python_slotted_item_bytes_typical": typical,
        "kernel_rmap_item_bytes": KERNEL_RMAP_ITEM,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"rmap_item, one per tracked page (Python {out['python']}):")
    print(f"  C (csrc/internal.h)        {item:4d} bytes + {chunk} bytes of chunk record per {per_chunk} "
          f"items ({out['c_chunk_record_bytes_per_item']} a item)")
    print(f"  Python __slots__, empty    {empty:4d} bytes (object header, GC header, "
          f"{len(RmapItem.__slots__)} slots)")
    print(f"  Python, the C record's {len(RmapItemRecordOnly.__slots__)} fields only, empty "
          f"{record_only:4d} bytes")
    print(f"  Python, typical values     {typical:4d} bytes ({ints} of them the int objects of the "
          f"checksum, prefix and address)")
    print(f"  the kernel (64-bit)        {KERNEL_RMAP_ITEM:4d} bytes")
    print(f"  Python / C                 {typical / item:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
