"""Fleet scale: page fingerprints of many sources, the sharing across them
on Dask, and where to place them.

The pieces (each a module here):

  fpfile      the fingerprint file: one Parquet file per source, one row
              per distinct non-zero page content (fp_hi, fp_lo, count),
              and the source's metadata (name, kind, host, pages, zero
              pages, time, fingerprint version) in the file's key-value
              metadata.  Writing, reading, checking, naming.
  aggregate   the Dask job: every file as a piece of one Dask dataframe,
              shuffled by fingerprint, then each fingerprint's holders
              reduced to a *signature* (which sources hold it and how many
              copies each) and the signatures counted.  Only the signature
              table comes back to the client, never the fingerprints.
  counts      per-host ContentSummary from the signature table, and the
              settled counters of the count model (ksm_engine.ksm.settled)
              for any set of sources placed together.
  reports     the five reports: all on one host, as placed today, sharing
              between sources, the reference-count histogram, placement.
  placement   the search for an assignment of sources to hosts that fits
              and saves the most (greedy, local search, seeded restarts),
              and the brute force it is tested against.

Dask, distributed and pyarrow are an optional extra
(``pip install 'ksm-engine[fleet]'``); require() says so when missing.
"""

INSTALL_HINT = "pip install 'ksm-engine[fleet]'"


class FleetUnavailable(ImportError):
    """dask, distributed or pyarrow cannot be imported; the message says how
    to install them."""


NEEDED = ("dask", "distributed", "pyarrow", "pandas")


def require(what):
    """Raises FleetUnavailable unless dask, distributed, pyarrow and pandas
    (dask's dataframes) are installed; looks them up without importing
    them (dask.dataframe takes seconds to import).  what: the command,
    for the message."""
    import importlib.util

    for name in NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError) as e:
            found, why = False, str(e)
        else:
            why = f"No module named {name!r}"
        if not found:
            raise FleetUnavailable(
                f"{what} needs dask, distributed and pyarrow, which are not installed ({why}); "
                f"install them with: {INSTALL_HINT}")
