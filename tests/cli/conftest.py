"""Helpers of the CLI tests.  A command runs either as a user runs it,
``python -m ksm_engine ...`` in a subprocess (run_cli: exit codes, entry
points, what a whole run prints), or as ``main(argv)`` in this process
(run_main: argument parsing and bad input, where starting an interpreter
would be most of the test's time).  Both give a CompletedProcess: exit
code, stdout and stderr."""
import contextlib
import io
import os
import pty
import subprocess
import sys

import pytest

from ksm_engine.cli.main import main

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


def run_main(*args):
    """``ksm-engine ARGS...`` as main(argv) in this process, stdout and
    stderr captured; returns a CompletedProcess like run_cli's."""
    args = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:         # --help and --version end argparse this way
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


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


# --set values every command that takes --set refuses alike (ksm.sysfs
# apply_knobs, cli.errors.os_error), and what its message says.
BAD_KNOB_SETS = [
    (["--set", "bogus=1"], "--set: unknown knob 'bogus' (knobs: pages_to_scan, "),
    (["--set", "max_page_sharing=1"], "--set: max_page_sharing='1': max_page_sharing must be >= 2 (EINVAL)"),
]


# Image files every command that reads images refuses (exit 2): how to make
# each in a directory, and what the message says besides the file's name.
BAD_IMAGES = {
    "missing": (lambda d: d / "missing.img", "no such file"),
    "empty": (lambda d: _write(d / "empty.img", b""), "empty file"),
    "odd size": (lambda d: _write(d / "odd.img", b"\1" * (PAGE + 1)),
                 f"size {PAGE + 1} is not a multiple of the page size {PAGE}"),
    "directory": (lambda d: d, "is a directory"),
}


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.fixture(params=sorted(BAD_IMAGES))
def bad_image(request, tmp_path):
    """(path, words): one of BAD_IMAGES, made in tmp_path, and what the
    error message must say about it."""
    make, words = BAD_IMAGES[request.param]
    return make(tmp_path), words


@pytest.fixture
def write_file(tmp_path):
    """write_file(name, data) -> path of a new file in tmp_path."""
    return lambda name, data: _write(tmp_path / name, data)
