"""The fingerprint file: one Parquet file per source.

Schema (docs/fleet.md says the same):

  columns      fp_hi   uint64   the page's 128-bit content fingerprint,
               fp_lo   uint64   high and low halves
               count   uint64   how many pages of the source hold it (>= 1)
  rows         one per distinct NON-zero content, in no particular order;
               zero-filled pages are not rows, only the zero_pages figure
  metadata     key "ksm_engine.fingerprint" of the Parquet key-value
               metadata, a JSON object:
                 format_version       FORMAT_VERSION (this layout)
                 fingerprint_version  the hash (ksm_engine.contents)
                 source, kind, spec   the source's name, kind (pid, core,
                                      image) and what the user gave
                 host                 the host it was taken on
                 pages, zero_pages    its pages, of which zero-filled
                 contents             rows (distinct non-zero contents)
                 page_size            4096
                 time                 when it was taken (ISO 8601, UTC)
  invariant    sum(count) + zero_pages == pages, contents == rows

A file is written to NAME.tmp and renamed, so a reader never sees half of
one; pages carry CRC checksums (written and verified), so a flipped byte
is an error, not a wrong count.  A reader refuses a format_version newer
than its own: the layout may have changed under it.
"""
import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ... import PAGE_SIZE

FORMAT_VERSION = 1
METADATA_KEY = b"ksm_engine.fingerprint"
COLUMNS = ("fp_hi", "fp_lo", "count")
SUFFIX = ".parquet"
ROW_GROUP_ROWS = 1 << 20          # rows per Parquet row group (24 MiB)
# metadata fields every file must have, with their type
REQUIRED = {"format_version": int, "fingerprint_version": str, "source": str, "kind": str,
            "host": str, "pages": int, "zero_pages": int, "contents": int,
            "page_size": int, "time": str}


class FingerprintFileError(ValueError):
    """A fingerprint file that cannot be used; the message names it."""


@dataclass(frozen=True)
class FingerprintFile:
    """An opened, checked fingerprint file: its path, metadata (the JSON
    object above) and the row count of each of its row groups."""
    path: str
    meta: dict
    row_groups: tuple

    @property
    def identity(self):
        """(host, kind, source): what makes two files the same source."""
        return (self.meta["host"], self.meta["kind"], self.meta["source"])


def default_host():
    return socket.gethostname()


def file_name(host, kind, name):
    """A file name for a source: HOST-KIND-NAME.parquet, characters other
    than letters, digits, '.', '_' and '-' replaced by '_'."""
    raw = f"{host}-{kind}-{os.path.basename(name.rstrip('/')) or name}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:200] + SUFFIX


def write_fingerprints(path, fp_hi, fp_lo, count, *, source, kind, spec, host, pages,
                       zero_pages, fingerprint_version, when=None):
    """Writes one source's fingerprint file at path (atomically).  fp_hi,
    fp_lo, count: equal-length arrays, one row per distinct non-zero
    content.  Raises ValueError if the figures break the invariant."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fp_hi = np.ascontiguousarray(fp_hi, dtype=np.uint64)
    fp_lo = np.ascontiguousarray(fp_lo, dtype=np.uint64)
    count = np.ascontiguousarray(count, dtype=np.uint64)
    if not (len(fp_hi) == len(fp_lo) == len(count)):
        raise ValueError("fp_hi, fp_lo and count must have the same length")
    total = int(count.sum(dtype=np.uint64))
    if len(count) and int(count.min()) < 1:
        raise ValueError("every count must be at least 1")
    if total + zero_pages != pages:
        raise ValueError(f"counts ({total}) + zero pages ({zero_pages}) != pages ({pages})")
    meta = {"format_version": FORMAT_VERSION, "fingerprint_version": str(fingerprint_version),
            "source": str(source), "kind": str(kind), "spec": str(spec), "host": str(host),
            "pages": int(pages), "zero_pages": int(zero_pages), "contents": len(count),
            "page_size": PAGE_SIZE,
            "time": (when or datetime.now(timezone.utc)).isoformat(timespec="seconds")}
    schema = pa.schema([(c, pa.uint64()) for c in COLUMNS],
                       metadata={METADATA_KEY: json.dumps(meta).encode()})
    tmp = f"{path}.tmp"
    try:
        with pq.ParquetWriter(tmp, schema, write_page_checksum=True,
                              compression={"fp_hi": "none", "fp_lo": "none", "count": "zstd"}) as w:
            for lo in range(0, max(len(count), 1), ROW_GROUP_ROWS):
                hi = lo + ROW_GROUP_ROWS
                w.write_table(pa.Table.from_arrays(
                    [pa.array(fp_hi[lo:hi]), pa.array(fp_lo[lo:hi]), pa.array(count[lo:hi])],
                    schema=schema))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return meta


def open_fingerprint_file(path):
    """Reads and checks a file's footer and metadata (not its rows).
    Raises FingerprintFileError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.fspath(path)
    try:
        pf = pq.ParquetFile(path)
        md = pf.metadata
        raw = (md.metadata or {}).get(METADATA_KEY)
        schema = pf.schema_arrow
    except OSError as e:
        raise FingerprintFileError(f"{path}: {e.strerror or e}") from None
    except (pa.ArrowException, ValueError) as e:
        raise FingerprintFileError(f"{path}: not a readable Parquet file ({e})") from None
    if raw is None:
        raise FingerprintFileError(f"{path}: a Parquet file, but not a ksm-engine fingerprint "
                                   f"file (no {METADATA_KEY.decode()} metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise FingerprintFileError(f"{path}: its fingerprint metadata is not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format_version"), int):
        raise FingerprintFileError(f"{path}: its fingerprint metadata has no format_version")
    if meta["format_version"] > FORMAT_VERSION:
        raise FingerprintFileError(
            f"{path}: written by a newer ksm-engine (fingerprint file format "
            f"{meta['format_version']}; this one reads up to {FORMAT_VERSION}): upgrade ksm-engine")
    for key, typ in REQUIRED.items():
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            raise FingerprintFileError(f"{path}: metadata {key!r} missing or not a {typ.__name__}")
    if [(f.name, str(f.type)) for f in schema] != [(c, "uint64") for c in COLUMNS]:
        raise FingerprintFileError(f"{path}: columns are not fp_hi, fp_lo, count (uint64)")
    if meta["page_size"] != PAGE_SIZE:
        raise FingerprintFileError(f"{path}: page size {meta['page_size']}, not {PAGE_SIZE}")
    pages, zero, contents = meta["pages"], meta["zero_pages"], meta["contents"]
    if not (0 <= zero <= pages and 0 <= contents <= pages - zero):
        raise FingerprintFileError(f"{path}: inconsistent figures: pages {pages}, zero pages "
                                   f"{zero}, contents {contents}")
    if md.num_rows != contents:
        raise FingerprintFileError(f"{path}: {md.num_rows} rows, but its metadata says {contents}")
    groups = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    return FingerprintFile(path, meta, groups)


def expand_paths(paths):
    """Files named, and the *.parquet files of directories named (sorted,
    not recursive), in order; a path met twice (after realpath) is kept
    once.  Raises FingerprintFileError for a path that does not exist or
    a directory without fingerprint files."""
    out, seen = [], set()
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            names = sorted(n for n in os.listdir(p) if n.endswith(SUFFIX))
            if not names:
                raise FingerprintFileError(f"{p}: a directory without *{SUFFIX} files")
            found = [os.path.join(p, n) for n in names]
        elif os.path.exists(p):
            found = [p]
        else:
            raise FingerprintFileError(f"{p}: no such file or directory")
        for f in found:
            real = os.path.realpath(f)
            if real not in seen:
                seen.add(real)
                out.append(f)
    return out


def read_piece(path, row_groups, src):
    """Rows of some row groups of a file as a pandas DataFrame with columns
    fp_hi, fp_lo, count (uint64) and src (int32, the source's index).
    Runs on the Dask workers.  Raises FingerprintFileError naming the file
    when its pages do not decode or fail their checksums."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        t = pf.read_row_groups(list(row_groups), columns=list(COLUMNS))
        if any(t.column(c).null_count for c in COLUMNS):
            raise FingerprintFileError(f"{path}: corrupt (null values)")
        cols = {c: t.column(c).to_numpy() for c in COLUMNS}
    except OSError as e:
        raise FingerprintFileError(f"{path}: {e.strerror or e}") from None
    except (pa.ArrowException, ValueError) as e:
        raise FingerprintFileError(f"{path}: corrupt ({e})") from None
    if len(cols["count"]) and int(cols["count"].min()) < 1:
        raise FingerprintFileError(f"{path}: corrupt (a count of 0)")
    cols["src"] = np.full(len(cols["count"]), src, dtype=np.int32)
    return pd.DataFrame(cols)
