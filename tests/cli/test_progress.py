"""Progress (issue 5's conventions) for the commands that run KSM until it
settles: a line on stderr when stderr is a terminal, wiped at the end;
nothing when stderr is piped or --json is given.  (The demo's own test is
in test_demo.py.)"""
import random

import pytest

from .conftest import PAGE, run_cli, run_cli_on_a_terminal

rng = random.Random(5)
X = rng.randbytes(PAGE)
IMG = X * 8 + rng.randbytes(8 * PAGE)


@pytest.fixture
def image(write_file):
    return write_file("a.img", IMG)


@pytest.mark.parametrize("command,needles", [
    (["scan"], ("full scan 1", "pages_sharing")),
    (["estimate", "--image"], ("counting", "MiB")),
    (["estimate", "--engine", "--image"], ("counting", "full scan 1", "pages_sharing")),
])
def test_progress_on_a_terminal_only(image, command, needles):
    r, tty = run_cli_on_a_terminal(*command, image)
    assert r.returncode == 0
    assert all(n in tty for n in needles), tty
    assert tty.endswith("\r")                      # the line is wiped at the end
    piped = run_cli(*command, image)
    assert piped.returncode == 0 and needles[0] not in piped.stderr
    r, tty = run_cli_on_a_terminal(*command, image, "--json")
    assert r.returncode == 0 and needles[0] not in tty
