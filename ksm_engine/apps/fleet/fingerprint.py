"""Fingerprinting sources: one fingerprint file per source (fpfile).

Each source (the estimate's: a live process, a core file, a memory image)
is counted exactly as the estimate counts it (estimate.count.count_sources:
read page by page in scan order through one reusable buffer into a
ContentCounts, a core's all-zero pages left out unless core_zero_pages, a
watched process's changing pages left out), then its table of distinct
non-zero contents and their counts go to the file.  So `fleet` on the
files of some sources gives what `estimate` gives on the sources.  Memory:
the read buffer and the count table (tens of bytes per distinct content),
never the pages.

all_pids() is every process but this one, as --pid specs; those that
cannot be read (permission, no private anonymous memory, exited) are
skipped with the reason, not errors.
"""
import os
import time

from ...contents import FINGERPRINT_VERSION
from ..estimate.count import count_sources
from ..estimate.sources import CHUNK_BYTES, EstimateError
from ..estimate.specs import open_sources
from .fpfile import file_name, write_fingerprints


def fingerprint_source(src, path, host, *, chunk_bytes=CHUNK_BYTES, core_zero_pages=False,
                       watch=None, progress=None):
    """Reads src and writes its fingerprint file at path; returns a dict of
    what was written (the file's metadata, the path, seconds, and what
    the count left out: zero_pages_left_out, volatile_pages, lost_pages)."""
    t0 = time.perf_counter()
    with count_sources([src], chunk_bytes=chunk_bytes, core_zero_pages=core_zero_pages,
                       watch=watch, progress=progress) as cc:
        fp_hi, fp_lo, count = cc.table()
        pages, zero = cc.pages, cc.zero_pages
    meta = write_fingerprints(path, fp_hi, fp_lo, count, source=src.name, kind=src.kind,
                              spec=src.spec, host=host, pages=pages, zero_pages=zero,
                              fingerprint_version=FINGERPRINT_VERSION)
    left = {k: src.info[k] for k in ("zero_pages_left_out", "volatile_pages", "lost_pages")
            if src.info.get(k)}
    return dict(meta, file=os.fspath(path), seconds=round(time.perf_counter() - t0, 3), **left)


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


def fingerprint_all(specs, out_dir, host, *, skip_unreadable=False, progress=None, **count):
    """Fingerprints each (kind, text) spec into out_dir.  Returns
    (written, skipped): dicts per file, and per source skipped its spec and
    the reason.  count: fingerprint_source's keywords.  Without skip_unreadable, an unusable source raises
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
            path = _unique_path(out_dir, host, src, used)
            try:
                written.append(fingerprint_source(src, path, host, progress=say, **count))
            except (ProcessLookupError, EstimateError, OSError) as e:
                if not (skip_unreadable and src.kind == "pid"):
                    raise
                skipped.append({"source": src.name, "reason": str(e)})
        return written, skipped
    finally:
        for s in opened:
            s.close()
