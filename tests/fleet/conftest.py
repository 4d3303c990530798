"""Fleets for the tests: sources given as arrays of content ids (0 is the
zero-filled page, each other id one distinct page content), written as
fingerprint files with the documented schema straight from numpy, and the
expected figures computed from the ids alone (np.unique), not through the
fleet's code."""
import os

import numpy as np
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from ksm_engine.apps.fleet.fpfile import write_fingerprints  # noqa: E402


def fp_of(ids):
    """A 128-bit fingerprint per content id (splitmix64 of two seeds)."""
    def mix(x):
        x = (x + np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
    ids = np.asarray(ids, np.uint64)
    with np.errstate(over="ignore"):
        return mix(ids), mix(ids ^ np.uint64(0x5555AAAA5555AAAA))


def write_source(path, ids, *, name, host, kind="image", version="ke-fp128-test"):
    """One fingerprint file of the pages `ids`; returns its path."""
    ids = np.asarray(ids, np.int64)
    u, c = np.unique(ids[ids != 0], return_counts=True)
    hi, lo = fp_of(u)
    order = np.random.default_rng(len(u)).permutation(len(u))   # files are unordered
    write_fingerprints(path, hi[order], lo[order], c[order], source=name, kind=kind, spec=name,
                       host=host, pages=len(ids), zero_pages=int((ids == 0).sum()),
                       fingerprint_version=version)
    return os.fspath(path)


def random_fleet(rng, nsources, pages=(50, 400), universe=300, zero=0.1):
    """[(name, host, ids)]: sources sharing contents from a common universe."""
    out = []
    for i in range(nsources):
        n = int(rng.integers(*pages))
        ids = rng.integers(1, universe, n)
        ids[rng.random(n) < zero] = 0
        out.append((f"src{i}", f"h{i % 3}", ids))
    return out


def write_fleet(directory, fleet):
    os.makedirs(directory, exist_ok=True)
    return [write_source(os.path.join(directory, f"{name}.parquet"), ids, name=name, host=host)
            for name, host, ids in fleet]


@pytest.fixture
def small_fleet(tmp_path):
    """A fixed fleet of 5 sources on 3 hosts, written to tmp_path/fps."""
    rng = np.random.default_rng(7)
    fleet = random_fleet(rng, 5)
    return fleet, write_fleet(tmp_path / "fps", fleet)
