"""Helpers of the end-to-end CLI tests: every command runs as a user runs
it, ``python -m ksm_engine ...`` in a subprocess, and the tests look at its
exit code, stdout and stderr."""
import os
import pty
import subprocess
import sys

import pytest

from ksm_engine import PAGE_SIZE as PAGE  # noqa: F401  (the tests' page size)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra or {})
    return env


def run_cli(*args, timeout=300, env=None, prelude=None, **kw):
    """Runs `python -m ksm_engine ARGS...`; returns the CompletedProcess
    (text mode).  prelude: Python source run first in the same interpreter
    (to hide a module or point the kernel peer elsewhere), in which case the
    command goes through ksm_engine.cli.main.main()."""
    args = [str(a) for a in args]
    if prelude:
        code = (prelude + "\nimport sys\nfrom ksm_engine.cli.main import main\n"
                "sys.exit(main(sys.argv[1:]))\n")
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "-m", "ksm_engine", *args]
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    streams.update(kw)
    return subprocess.run(cmd, text=True, cwd=ROOT, env=_env(env), timeout=timeout, **streams)


def run_cli_on_a_terminal(*args):
    """run_cli with stderr on a pseudo-terminal: returns (CompletedProcess,
    what the terminal showed), for the progress line tests."""
    master, slave = pty.openpty()
    try:
        r = run_cli(*args, stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return r, b"".join(chunks).decode()


def assert_usage_error(r, *needles):
    """Exit 2, a one-line `ksm-engine: error:` message with every needle,
    nothing on stdout, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("ksm-engine: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture
def write_file(tmp_path):
    """write_file(name, data) -> path of a new file in tmp_path."""
    def write(name, data):
        p = tmp_path / name
        p.write_bytes(data)
        return p
    return write
