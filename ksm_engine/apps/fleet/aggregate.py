"""The Dask job: every fingerprint file as pieces of one Dask dataframe,
shuffled by fingerprint, then each partition's fingerprints reduced to
signatures (ksm_engine.apps.fleet.signatures) and the partitions' tables
merged in a tree.

  files --read_piece--> rows (fp_hi, fp_lo, count, src)   one task per
        ~PARTITION_ROWS rows of a file (whole row groups)
      --shuffle on fp_lo--> all rows of a fingerprint in one partition
      --from_rows--> a signature table per partition
      --combine (tree, FAN_IN at a time)--> one SigTable to the client

Only signature tables travel to the client, never the fingerprints: the
client's memory grows with the distinct signatures, not the contents.  The
workers read the files themselves, so every worker must see the paths
given (one shared directory, or the same copy on each host).

Where it runs (connect()):
  an address (--scheduler, else DASK_SCHEDULER_ADDRESS, else dask's
  config key scheduler-address): that dask.distributed cluster; a
  scheduler that does not answer within the timeout, or has no worker
  within it, is FleetRuntimeError;
  none: an embedded LocalCluster on 127.0.0.1 (its HTTP server on a
  free loopback port), stopped at the end.
Tasks of a worker that dies are run again elsewhere by Dask
(distributed.scheduler.allowed-failures), so the result does not change.
"""
import contextlib
import logging
import math
import os

from . import signatures
from .fpfile import FingerprintFileError, read_piece

PARTITION_ROWS = 2_000_000     # rows per read task and per shuffled partition
FAN_IN = 8                     # tables merged per combine task
CONNECT_TIMEOUT = 10.0         # seconds


class FleetRuntimeError(RuntimeError):
    """The cluster cannot be reached or the job failed (exit 1)."""


def scheduler_address(given=None):
    """The address to use: given, else DASK_SCHEDULER_ADDRESS / dask's
    config scheduler-address, else None (an embedded local cluster)."""
    if given:
        return given
    import dask
    return os.environ.get("DASK_SCHEDULER_ADDRESS") or dask.config.get("scheduler-address", None)


async def _identity(address, timeout):
    from distributed.comm import connect as comm_connect

    comm = await comm_connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def probe(address, timeout=CONNECT_TIMEOUT):
    """Asks the scheduler at address who it is, all within timeout seconds;
    FleetRuntimeError if it refuses, stays silent or is not a scheduler.
    (distributed's Client waits for ever on a peer that accepts the
    connection and never answers: this bounds it.)"""
    import asyncio

    try:
        who = asyncio.run(asyncio.wait_for(_identity(address, timeout), timeout))
    except (OSError, TimeoutError, asyncio.TimeoutError, ValueError, TypeError) as e:
        why = f"{type(e).__name__}: {e}" if str(e) else "no answer"
        raise FleetRuntimeError(f"cannot reach the Dask scheduler at {address} within "
                                f"{timeout:g} s ({why})") from None
    if not isinstance(who, dict) or who.get("type") != "Scheduler":
        raise FleetRuntimeError(f"{address} answers, but is not a Dask scheduler")


@contextlib.contextmanager
def connect(address=None, *, workers=2, processes=True, threads_per_worker=1,
            memory_limit="auto", timeout=CONNECT_TIMEOUT):
    """Yields (client, where): a dask.distributed Client of the cluster at
    address, or of an embedded LocalCluster of `workers` workers
    (processes or threads) when address is None; where describes it for
    the report."""
    import dask
    from distributed import Client, LocalCluster

    cluster = None
    # the report says what failed; Dask's own log lines (a task's error, a
    # retried connection) would only repeat it on stderr
    quiet = [logging.getLogger(n) for n in ("distributed", "tornado")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
            if address:
                probe(address, timeout)
                try:
                    client = Client(address, timeout=timeout, set_as_default=False)
                except (OSError, TimeoutError, ValueError) as e:
                    raise FleetRuntimeError(
                        f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
                        f"({type(e).__name__}: {e})") from None
                where = {"scheduler": address}
            else:
                # threads: in-process comms (no socket); processes: loopback only
                net = {"host": "127.0.0.1"} if processes else {}
                # the scheduler's HTTP server runs even without a dashboard
                # (bokeh): on loopback and a free port, never a fixed 8787
                cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                                       processes=processes, dashboard_address="127.0.0.1:0",
                                       memory_limit=memory_limit, silence_logs=logging.ERROR,
                                       **net)
                client = Client(cluster, set_as_default=False)
                where = {"scheduler": "local", "processes": processes}
        with client:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except (OSError, TimeoutError) as e:
                raise FleetRuntimeError(f"the Dask scheduler at {address} has no worker "
                                        f"after {timeout:g} s ({e})") from None
            where["workers"] = len(client.scheduler_info(n_workers=-1)["workers"])
            yield client, where
    finally:
        if cluster is not None:
            cluster.close()
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def pieces(files, partition_rows=PARTITION_ROWS):
    """Read tasks: (path, row group indexes, source index), whole row
    groups of one file adding up to about partition_rows rows."""
    out = []
    for src, f in enumerate(files):
        group, rows = [], 0
        for i, n in enumerate(f.row_groups):
            if group and rows + n > partition_rows:
                out.append((f.path, tuple(group), src))
                group, rows = [], 0
            if n:
                group.append(i)
                rows += n
        if group:
            out.append((f.path, tuple(group), src))
    return out


def _read(piece):
    path, groups, src = piece
    return read_piece(path, groups, src)


def _partition_table(df, nsources):
    return signatures.from_rows(df["fp_hi"].to_numpy(), df["fp_lo"].to_numpy(),
                                df["count"].to_numpy(), df["src"].to_numpy(), nsources)


def aggregate(client, files, *, partition_rows=PARTITION_ROWS):
    """The fleet's SigTable over the opened FingerprintFiles (source i is
    files[i]), computed on the client's cluster.  Checks each file's rows
    against its metadata: FingerprintFileError naming the file."""
    import dask
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    nsources = len(files)
    if nsources > signatures.MAX_SOURCES:
        raise ValueError(f"at most {signatures.MAX_SOURCES} sources, got {nsources}")
    work = pieces(files, partition_rows)
    if not work:
        table = signatures.empty(nsources)
    else:
        meta = pd.DataFrame({"fp_hi": np.zeros(0, np.uint64), "fp_lo": np.zeros(0, np.uint64),
                             "count": np.zeros(0, np.uint64), "src": np.zeros(0, np.int32)})
        rows = sum(sum(f.row_groups) for f in files)
        ddf = dd.from_map(_read, work, meta=meta, enforce_metadata=False)
        ddf = ddf.shuffle(on="fp_lo", npartitions=max(1, math.ceil(rows / partition_rows)))
        tables = [dask.delayed(_partition_table)(p, nsources) for p in ddf.to_delayed()]
        while len(tables) > 1:
            tables = [dask.delayed(signatures.combine)(*tables[i:i + FAN_IN])
                      for i in range(0, len(tables), FAN_IN)]
        table = client.compute(tables[0]).result()
    for i, f in enumerate(files):
        m = f.meta
        if table.src_contents[i] != m["contents"] or \
                table.src_pages[i] + m["zero_pages"] != m["pages"]:
            raise FingerprintFileError(
                f"{f.path}: its rows ({table.src_contents[i]} contents, "
                f"{table.src_pages[i]} pages) do not match its metadata "
                f"({m['contents']} contents, {m['pages'] - m['zero_pages']} non-zero pages)")
    return table
