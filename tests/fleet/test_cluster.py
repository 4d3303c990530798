"""`fleet --scheduler` against a real dask.distributed cluster: `dask
scheduler` and two `dask worker` processes started here on 127.0.0.1
(free ports, bounded waits, every process killed at teardown)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ..cli.conftest import ROOT, assert_usage_error, run_cli
from .conftest import random_fleet, write_fleet

BOOT_TIMEOUT = 60          # seconds for the scheduler and workers to come up


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args, name=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "distributed.cli." + name, *args],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _worker(address, name):
    return _dask(address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                 "--no-dashboard", "--name", name, name="dask_worker")


@pytest.fixture(scope="module")
def cluster():
    """(address, client, start_worker): a scheduler and two workers."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [_dask("--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                   name="dask_scheduler")]
    client = None
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert procs[0].poll() is None, "dask scheduler exited"
                assert time.monotonic() < deadline, "dask scheduler did not start"
                time.sleep(0.2)
        procs += [_worker(address, f"w{i}") for i in range(2)]
        client = Client(address, timeout=BOOT_TIMEOUT, set_as_default=False)
        client.wait_for_workers(2, timeout=BOOT_TIMEOUT)

        def start_worker(name):
            p = _worker(address, name)
            procs.append(p)
            return p
        yield address, client, start_worker
    finally:
        if client is not None:
            client.close()
        _stop(procs)


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory):
    """Eight sources of 20 000-60 000 pages: enough tasks (with
    --partition-rows 4000) that a run lasts a few seconds."""
    d = tmp_path_factory.mktemp("cluster")
    rng = np.random.default_rng(3)
    paths = write_fleet(d / "fps", random_fleet(rng, 8, pages=(20_000, 60_000), universe=80_000))
    expected = run_cli("fleet", d / "fps", "--json", "--threads")
    assert expected.returncode == 0, expected.stderr
    return paths, json.loads(expected.stdout)


REPORTS = ("all_on_one_host", "placed_today", "sharing", "histogram")


def test_fleet_on_a_real_cluster_equals_the_embedded_one(cluster, fleet_files):
    address, client, _ = cluster
    paths, want = fleet_files
    r = run_cli("fleet", *paths, "--scheduler", address, "--json", "--partition-rows", "50000")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["cluster"] == {"scheduler": address, "workers": 2}
    assert {k: doc[k] for k in REPORTS} == {k: want[k] for k in REPORTS}
    # and through DASK_SCHEDULER_ADDRESS
    r = run_cli("fleet", *paths[:3], "--json", env={"DASK_SCHEDULER_ADDRESS": address})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cluster"]["scheduler"] == address


def test_a_worker_killed_during_a_run_does_not_change_the_result(cluster, fleet_files):
    address, client, start_worker = cluster
    paths, want = fleet_files
    victim = start_worker("victim")
    client.wait_for_workers(3, timeout=BOOT_TIMEOUT)
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.Popen([sys.executable, "-m", "ksm_engine", "fleet", *paths, "--scheduler",
                            address, "--json", "--partition-rows", "4000"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        killed_busy = False
        while run.poll() is None and time.monotonic() < deadline:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            addr = next((a for a, w in workers.items() if w.get("name") == "victim"), None)
            if addr and (client.processing(addr).get(addr) or client.has_what(addr).get(addr)):
                victim.kill()                    # SIGKILL while it holds or runs tasks
                killed_busy = True
                break
            time.sleep(0.05)
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert killed_busy, "the run ended before the victim worker had any task"
    assert victim.wait(10) == -signal.SIGKILL
    assert run.returncode == 0, err
    doc = json.loads(out)
    assert {k: doc[k] for k in REPORTS} == {k: want[k] for k in REPORTS}


def test_a_corrupt_file_read_on_a_remote_worker_is_exit_2_naming_it(cluster, fleet_files, tmp_path):
    address, _, _ = cluster
    paths, _ = fleet_files
    data = bytearray(open(paths[0], "rb").read())
    data[300] ^= 0x55
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    r = run_cli("fleet", bad, paths[1], "--scheduler", address)
    assert_usage_error(r, str(bad))


def test_a_refused_address_is_exit_1_within_the_timeout(fleet_files):
    paths, _ = fleet_files
    t0 = time.monotonic()
    r = run_cli("fleet", paths[0], "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
                "--timeout", "3", timeout=60)
    assert r.returncode == 1, r.stderr
    assert "cannot reach the Dask scheduler" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30


def test_a_silent_address_is_exit_1_within_the_timeout(fleet_files):
    paths, _ = fleet_files
    with socket.socket() as s:                 # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        t0 = time.monotonic()
        r = run_cli("fleet", paths[0], "--scheduler", f"tcp://127.0.0.1:{s.getsockname()[1]}",
                    "--timeout", "3", timeout=60)
    assert r.returncode == 1, r.stderr
    assert "cannot reach the Dask scheduler" in r.stderr
    assert time.monotonic() - t0 < 30
