"""A run against the kernel's KSM that is killed with SIGTERM still puts
every knob back (the machine's KSM is shared by everything on it)."""
import signal
import subprocess
import sys

import pytest

from ksm_engine.apps import kernel_peer

CHILD = r"""
import time
from ksm_engine.apps import kernel_peer
with kernel_peer.kernel_ksm():
    kernel_peer.write_knob("pages_to_scan", "4321")
    kernel_peer.write_knob("sleep_millisecs", "7")
    kernel_peer.write_knob("run", "1")
    print("changed", flush=True)
    time.sleep(120)
"""


@pytest.mark.kernel
def test_sigterm_restores_the_knobs():
    with kernel_peer.exclusive():
        before = {n: kernel_peer.read_knob(n) for n in ("pages_to_scan", "sleep_millisecs")}
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "changed"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with kernel_peer.exclusive():
        after = {n: kernel_peer.read_knob(n) for n in before}
        assert kernel_peer.read_knob("run") == "2"
    assert after == before
