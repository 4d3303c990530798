"""pytest configuration of the benchmark suite (pytest-benchmark).

The benchmark files are named bench_*.py so that the normal test run
(testpaths = ["tests"], --benchmark-skip in addopts) never collects them;
this hook collects them when pytest is pointed at benchmarks/.  Run every
benchmark with (docs/benchmarks.md):

    python -m pytest benchmarks -o addopts="" --benchmark-only \
        --benchmark-json=benchmarks/results/run.json

(`-o addopts=""` drops the project's --benchmark-skip, which pytest-benchmark
refuses to combine with --benchmark-only.)

Groups: checksum, memcmp, tree, scan, settle, cow, estimate (and balloon,
memory access from their owners' files).  Each benchmark records what it
measured per unit (pages, bytes) in extra_info, so the JSON carries rates.
"""
import pytest


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)


def pytest_configure(config):
    config.addinivalue_line("markers", "benchmark: a pytest-benchmark benchmark")
