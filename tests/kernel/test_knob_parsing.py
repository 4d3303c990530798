"""Knob writes: the engine's sysfs answers every value as the kernel's
files do (accepted and read back the same, or the same errno)."""
import errno

import pytest

from ksm_engine import Machine
from ksm_engine.apps import kernel_peer
from ksm_engine.kstrtox import kstrtobool, kstrtouint
from tests.core.test_kstrtox import (KSTRTOBOOL, KSTRTOBOOL_REJECTS, KSTRTOULL_BASE10,
                                     KSTRTOULL_BASE10_REJECTS)

CASES = {
    "pages_to_scan": ["100", "+100", "-1", " 100", "100 ", "100\n", "100\n\n", "0x10",
                      "4294967296", "4294967295", "abc", "1e3", "0", "\n", "99999999999999999999999"],
    "sleep_millisecs": ["0", "20", "-20", "20ms", "4294967296"],
    "max_page_sharing": ["1", "2", "-5", "+3", "99999999999", "abc", "2147483647", "2147483648", "256"],
    "smart_scan": ["yes", "no", "on", "off", "t", "f", "2", "x", "oN", "0", "1", "Of", "o",
                   "e", "d", "E", "D", "enable", "disable", "nonsense", "true", "false", "oX", "\n"],
    "use_zero_pages": ["y", "nope", "Of", "0", "1", "-1", "T", "F", "e", "D"],
    "merge_across_nodes": ["2", "-1", "99999999999999999999", "1", "x"],
    "stable_node_chains_prune_millisecs": ["-1", "0", "2000", "abc"],
    "advisor_target_scan_time": ["0", "1", "200", "-5"],
    "advisor_max_cpu": ["70", "-1", "x"],
    "advisor_min_pages_to_scan": ["500", "abc"],
    "advisor_max_pages_to_scan": ["30000", "-3"],
    "advisor_mode": ["none", "scan-time", "none\n", "bogus", " none", "none ", "scan-time\n"],
    "run": ["3", "-1", "0", "1x", "0"],
}


def _kernel_write(name, value):
    try:
        kernel_peer.write_knob(name, value)
        return ("ok", kernel_peer.read_knob(name))
    except OSError as e:
        return (errno.errorcode[e.errno], None)


def _engine_write(m, name, value):
    try:
        m.ksm.sysfs[name] = value
        return ("ok", m.ksm.sysfs[name].strip())
    except OSError as e:
        return (errno.errorcode[e.errno], None)


@pytest.mark.kernel
@pytest.mark.parametrize("name", sorted(CASES))
def test_knob_writes_match_kernel(name):
    m = Machine(ram="16MiB")
    with kernel_peer.kernel_ksm():
        kernel_peer.write_knob("run", "0")
        for value in CASES[name]:
            want = _kernel_write(name, value)
            got = _engine_write(m, name, value)
            assert got == want, f"{name} <- {value!r}: engine {got}, kernel {want}"
        # A value after a rejected write is the last accepted one, in both.
        assert m.ksm.sysfs[name].strip() == kernel_peer.read_knob(name)


@pytest.mark.kernel
def test_readonly_counters_match_kernel():
    m = Machine(ram="16MiB")
    for name in ("pages_shared", "pages_sharing", "full_scans", "general_profit"):
        with pytest.raises(PermissionError) as e:
            m.ksm.sysfs[name] = "1"
        assert e.value.errno == errno.EACCES
        with pytest.raises(PermissionError):
            kernel_peer.write_knob(name, "1")


@pytest.mark.kernel
@pytest.mark.parametrize("name,parse,accepted,rejected", [
    ("smart_scan", kstrtobool, KSTRTOBOOL, KSTRTOBOOL_REJECTS),
    ("sleep_millisecs", lambda s: kstrtouint(s, 10), KSTRTOULL_BASE10, KSTRTOULL_BASE10_REJECTS),
])
def test_kstrtox_tables_are_the_kernels(name, parse, accepted, rejected):
    """The fixed tables of tests/core/test_kstrtox.py written to the knob
    whose store function parses with that function (kstrtobool;
    kstrtouint, base 10): the kernel takes each accepted text and reads
    back the parser's value, and refuses each rejected one with EINVAL
    (both stores turn every parse error into EINVAL).  The empty text is
    left out: a write of no bytes never reaches the store function."""
    with kernel_peer.kernel_ksm():
        kernel_peer.write_knob("run", "0")
        for text, value in accepted:
            kernel_peer.write_knob(name, text)
            assert kernel_peer.read_knob(name) == str(int(value)), text
            assert parse(text) == value
        for text in rejected:
            if text == "":
                continue
            assert _kernel_write(name, text)[0] == "EINVAL", text
            with pytest.raises(OSError):
                parse(text)
