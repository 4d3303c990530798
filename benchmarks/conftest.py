"""pytest configuration of the benchmark suite (pytest-benchmark).

The benchmark files are named bench_*.py so that the normal test run
(testpaths = ["tests"], --benchmark-skip in addopts) never collects them;
this hook collects them when pytest is pointed at benchmarks/.  Run every
benchmark with (docs/benchmarks.md):

    python -m pytest benchmarks -o addopts="" --benchmark-only \
        --benchmark-json=benchmarks/results/run.json

(`-o addopts=""` drops the project's --benchmark-skip, which pytest-benchmark
refuses to combine with --benchmark-only.)

Groups: checksum, memcmp, tree, scan, settle, cow, estimate, fleet (and balloon,
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


def pytest_terminal_summary(terminalreporter, config):
    """After pytest-benchmark's tables, one line per benchmark of a group
    that has a baseline (a benchmark whose name contains "baseline"): its
    mean time as a ratio to the fastest baseline of the group, and its
    throughput when it recorded extra_info["bytes"]:

        access  test_read      3.72x test_baseline_copy_into   1258 MB/s
    """
    session = getattr(config, "_benchmarksession", None)
    groups = {}
    for b in getattr(session, "benchmarks", []):
        if b:
            groups.setdefault(b.group, []).append(b)
    lines = []
    for group, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        bases = [b for b in members if "baseline" in b.name]
        if not bases:
            continue
        base = min(bases, key=lambda b: b.stats.mean)
        for b in sorted(members, key=lambda b: b.stats.mean):
            line = f"{group}  {b.name:<40} {b.stats.mean / base.stats.mean:6.2f}x {base.name}"
            nbytes = b.extra_info.get("bytes")
            if nbytes:
                line += f"  {nbytes / b.stats.mean / 1e6:8.0f} MB/s"
            lines.append(line)
    if lines:
        terminalreporter.write_sep("-", "ratios to each group's baseline (mean times)")
        for line in lines:
            terminalreporter.write_line(line)
