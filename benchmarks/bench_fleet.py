"""Fleet benchmarks (group "fleet"): the pieces of `ksm-engine fleet`.

  fleet_signatures   signatures.from_rows on one shuffled partition of
                     PARTITION_ROWS rows (2 million: the default task), 30%
                     of its fingerprints held by 2-5 sources: the sort and
                     the reduction every partition pays
  fleet_aggregate    aggregate.aggregate over FLEET_ROWS fingerprints in 10
                     files on an embedded LocalCluster of 2 worker
                     processes (started once, outside the timing): read,
                     shuffle by fingerprint, signatures, tree merge

extra_info: fingerprints; M fingerprints/s = fingerprints / time / 1e6.
The 10^8 target is measured by scripts/bench_fleet_scale.py (docs/benchmarks.md).
"""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from ksm_engine.apps.fleet import aggregate, signatures  # noqa: E402
from ksm_engine.apps.fleet.fpfile import open_fingerprint_file  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))
from bench_fleet_scale import generate  # noqa: E402

GROUP = "fleet"
PARTITION_ROWS = aggregate.PARTITION_ROWS
FLEET_ROWS = 2_000_000


def test_fleet_signatures(benchmark):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, int(PARTITION_ROWS * 0.8), PARTITION_ROWS).astype(np.uint64)
    with np.errstate(over="ignore"):
        hi = ids * np.uint64(0x9E3779B97F4A7C15)
        lo = (ids ^ np.uint64(0x5555)) * np.uint64(0xBF58476D1CE4E5B9)
    src = rng.integers(0, 20, PARTITION_ROWS).astype(np.int32)
    count = rng.integers(1, 3, PARTITION_ROWS).astype(np.uint64)
    benchmark.group = GROUP
    benchmark.extra_info["fingerprints"] = PARTITION_ROWS
    t = benchmark.pedantic(signatures.from_rows, args=(hi, lo, count, src, 20), rounds=3,
                           iterations=1)
    assert int(t.src_pages.sum()) == int(count.sum())


def test_fleet_aggregate(benchmark, tmp_path_factory):
    paths = generate(str(tmp_path_factory.mktemp("fleet")), FLEET_ROWS, 10)
    files = [open_fingerprint_file(p) for p in paths]
    benchmark.group = GROUP
    benchmark.extra_info["fingerprints"] = FLEET_ROWS
    with aggregate.connect(None, workers=2, processes=True) as (client, _):
        t = benchmark.pedantic(aggregate.aggregate, args=(client, files), rounds=3, iterations=1)
    assert int(t.src_contents.sum()) == sum(f.meta["contents"] for f in files)
