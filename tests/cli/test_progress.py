"""Progress (issue 5's conventions) for the commands that run KSM until it
settles: a line on stderr when stderr is a terminal, wiped at the end;
nothing when stderr is piped or --json is given.  (The demo's own test is
in test_demo.py.)"""
import os
import pty
import random

import pytest

from .conftest import PAGE, run_cli

rng = random.Random(5)
X = rng.randbytes(PAGE)
IMG = X * 8 + rng.randbytes(8 * PAGE)


def _on_a_terminal(*args):
    """Runs the command with stderr on a pseudo-terminal; returns
    (CompletedProcess, what the terminal showed)."""
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


@pytest.fixture
def image(write_file):
    return write_file("a.img", IMG)


@pytest.mark.parametrize("command", [["scan"], ["estimate", "--image"]])
def test_progress_on_a_terminal_only(image, command):
    r, tty = _on_a_terminal(*command, image)
    assert r.returncode == 0
    assert "full scan 1" in tty and "pages_sharing" in tty
    assert tty.endswith("\r")                      # the line is wiped at the end
    piped = run_cli(*command, image)
    assert piped.returncode == 0 and "full scan" not in piped.stderr
    r, tty = _on_a_terminal(*command, image, "--json")
    assert r.returncode == 0 and "full scan" not in tty
