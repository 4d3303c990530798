"""Fingerprinting sources: one fingerprint file per source (fpfile).

Each source (the estimate's: a live process, a core file, a memory image)
is read page by page in scan order through its one reusable buffer into a
ContentCounts (ksm_engine.contents: the 128-bit fingerprints and the count
table in C), then the table of distinct non-zero contents and the counts
go to the file.  Memory: the source's read buffer and the count table
(tens of bytes per distinct content); never the pages.

all_pids() is every process but this one, as --pid specs; those that
cannot be read (permission, no private anonymous memory, exited) are
skipped with the reason, not errors.
"""
import os
import time

from ...contents import FINGERPRINT_VERSION, ContentCounts
from ..estimate.sources import EstimateError, open_sources
from .fpfile import file_name, write_fingerprints

CHUNK_BYTES = 8 << 20


def fingerprint_source(src, path, host, chunk_bytes=CHUNK_BYTES):
    """Reads src and writes its fingerprint file at path; returns a dict of
    what was written (the file's metadata, the path, seconds)."""
    t0 = time.perf_counter()
    with ContentCounts() as cc:
        for buf in src.read_pages(chunk_bytes=chunk_bytes):
            cc.add(buf)
        fp_hi, fp_lo, count = cc.table()
        pages, zero = cc.pages, cc.zero_pages
    meta = write_fingerprints(path, fp_hi, fp_lo, count, source=src.name, kind=src.kind,
                              spec=src.spec, host=host, pages=pages, zero_pages=zero,
                              fingerprint_version=FINGERPRINT_VERSION)
    return dict(meta, file=os.fspath(path), seconds=round(time.perf_counter() - t0, 3))


def all_pids():
    """("pid", text) of every process but this one, in pid order."""
    me = os.getpid()
    pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != me)
    return [("pid", str(p)) for p in pids]


def _unique_path(out_dir, host, src, used):
    name = file_name(host, src.kind, src.name)
    stem, n = name[:-len(".parquet")], 2
    while name in used:
        name = f"{stem}-{n}.parquet"
        n += 1
    used.add(name)
    return os.path.join(out_dir, name)


def fingerprint_all(specs, out_dir, host, *, skip_unreadable=False, chunk_bytes=CHUNK_BYTES,
                    progress=None):
    """Fingerprints each (kind, text) spec into out_dir.  Returns
    (written, skipped): dicts per file, and per source skipped its spec and
    the reason.  Without skip_unreadable, an unusable source raises
    (EstimateError: bad input; OSError: runtime) before anything is
    written; with it (--all-pids), such a source is skipped."""
    say = progress or (lambda text: None)
    seen, todo = set(), []
    for kind, text in specs:                   # the same source twice: once
        key = (kind, os.path.realpath(text) if kind != "pid" else text.strip())
        if key not in seen:
            seen.add(key)
            todo.append((kind, text))
    skipped, opened = [], []
    try:
        if skip_unreadable:
            for spec in todo:
                try:
                    src = open_sources([spec])[0]
                except (EstimateError, OSError) as e:
                    skipped.append({"source": f"{spec[0]} {spec[1]}", "reason": str(e)})
                    continue
                if src.pages == 0:
                    src.close()
                    skipped.append({"source": src.name, "reason": "no private anonymous memory"})
                    continue
                opened.append(src)
        else:
            opened = open_sources(todo)
        os.makedirs(out_dir, exist_ok=True)
        written, used = [], set()
        for src in opened:
            say(f"fingerprinting {src.name} ({src.pages} pages)")
            path = _unique_path(out_dir, host, src, used)
            try:
                written.append(fingerprint_source(src, path, host, chunk_bytes))
            except (ProcessLookupError, EstimateError, OSError) as e:
                if not (skip_unreadable and src.kind == "pid"):
                    raise
                skipped.append({"source": src.name, "reason": str(e)})
        return written, skipped
    finally:
        for s in opened:
            s.close()
