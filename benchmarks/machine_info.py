"""What machine a measurement ran on, and small helpers every benchmark
script shares (medians, RSS readings, results files).

machine_info() -> dict: nproc, CPU model (/proc/cpuinfo), kernel release,
total memory, Python version, the git commit measured (and whether the
work tree had local changes), and the time of the measurement.  Every raw
results JSON in benchmarks/results/ carries it under "machine".
"""
import datetime
import os
import platform
import statistics
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    """The facts docs/benchmarks.md's methodology section names."""
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "csrc", "ksm_engine")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "mem_total_gib": round(_mem_total_kib() / (1 << 20), 1),
        "python": platform.python_version(),
        "commit": _git("rev-parse", "HEAD"),
        "core_locally_modified": bool(dirty),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def median(values):
    return statistics.median(values) if values else float("nan")


def rss_bytes():
    """Resident memory of this process (Rss of /proc/self/smaps_rollup)."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1]) * 1024
    raise OSError("no Rss in /proc/self/smaps_rollup")


def results_path(name):
    os.makedirs(RESULTS, exist_ok=True)
    return os.path.join(RESULTS, name)


def append_result(name, record):
    """Appends record to the JSON list in benchmarks/results/NAME (made if
    missing); returns the path."""
    import json

    path = results_path(name)
    runs = []
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f)
    runs.append(record)
    with open(path, "w") as f:
        json.dump(runs, f, indent=1)
        f.write("\n")
    return path
