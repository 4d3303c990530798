"""The CLI fed garbage: main() in-process on random argument lists of every
command (exit 0, 1 or 2, never an exception or a traceback), memory images
and core files of random bytes through `estimate`, and a bounded list of
real subprocess runs (exit 2, `ksm-engine: error:` and no traceback),
including the scenario files and devices that once broke the loader.

docs/robustness.md lists what is tried, with counts.
"""
import contextlib
import io
import json
import math
import os
import random
import resource
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmm import Hypervisor, SimClock
from ksm_engine import PAGE_SIZE
from ksm_engine.cli.main import main as cli_main

from .garbage import VALID_SCENARIO
from .profiles import fuzz_settings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# --- the CLI in-process -------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzfiles")
    rnd = random.Random(7)
    made = {
        "missing": d / "missing.img",
        "dir": d,
        "empty": d / "empty",
        "page-1": d / "short.img",
        "page": d / "one.img",
        "pages": d / "two.img",
        "elf-junk": d / "elf-junk",
        "scenario": d / "s.json",
        "scenario-bad": d / "bad.json",
        "binary": d / "binary.json",
        "oversized": d / "oversized.json",
    }
    made["empty"].write_bytes(b"")
    made["page-1"].write_bytes(bytes(PAGE_SIZE - 1))
    made["page"].write_bytes(bytes(PAGE_SIZE))
    made["pages"].write_bytes(rnd.randbytes(PAGE_SIZE) * 2)
    made["elf-junk"].write_bytes(b"\x7fELF\x02\x01\x01" + rnd.randbytes(300))
    made["scenario"].write_text(json.dumps({"ram_mb": 16, "steps": [{"advance_s": 1}]}))
    made["scenario-bad"].write_text('{"steps": [{"advance_s": -1}]}')
    made["binary"].write_bytes(rnd.randbytes(500))
    # 8 MiB of whitespace around an invalid scenario: read, parsed, refused
    made["oversized"].write_text(" " * (8 << 20) + '{"steps": [{"nope": 1}]}')
    return {k: str(v) for k, v in made.items()}


TOKENS = ["--json", "--set", "max_page_sharing=1", "use_zero_pages=2", "pages_to_scan=5",
          "bogus=1", "=", "run=2", "--compat", "2009", "2010", "--max-full-scans", "0", "-1",
          "abc", "99999999999999999999", "--pid", "0", "abc", "4194304", "--core", "--image",
          "--pages-to-scan", "--sleep-millisecs", "1e3", "", "-", "--", "é", "--help-me",
          "--bogus", "-x"]


@fuzz_settings(120)
@given(data=st.data())
def test_cli_in_process(files, data):
    """main() on random argument lists: it returns 0, 1 or 2 and never
    raises; no traceback on stderr; an exit 2 says `ksm-engine: error:`."""
    cmd = data.draw(st.sampled_from(["scan", "estimate", "cmm", "bogus-command", None]))
    # (a real argv cannot hold a NUL: it is C strings)
    words = st.one_of(st.sampled_from(TOKENS), st.sampled_from(sorted(files)).map(files.get),
                      st.text(max_size=6).filter(lambda t: "\x00" not in t))
    argv = ([cmd] if cmd else []) + data.draw(st.lists(words, max_size=6))
    if cmd == "cmm" and files["scenario"] in argv:
        argv = [a for a in argv if a != files["scenario"]]    # (valid: runs, covered elsewhere)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(argv)
        except SystemExit as e:          # --help/--version print and exit 0
            rc = e.code
    assert rc in (0, 1, 2), (argv, rc, err.getvalue())
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
    if rc == 2:
        assert "ksm-engine: error:" in err.getvalue() or "usage:" in err.getvalue(), argv


@fuzz_settings(60)
@given(blob=st.binary(min_size=0, max_size=3 * PAGE_SIZE), kind=st.sampled_from(["--image", "--core"]),
       elf=st.booleans())
def test_estimate_of_random_files(tmp_path_factory, blob, kind, elf):
    """Random bytes (with an ELF header's first bytes or not) as a core
    file or an image: a result or exit 2, never a traceback."""
    path = tmp_path_factory.mktemp("blob") / "f"
    path.write_bytes((b"\x7fELF\x02\x01\x01\x00" if elf else b"") + blob)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["estimate", kind, str(path), "--json"])
    assert rc in (0, 2), (rc, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if rc == 0:
        assert kind == "--image" and (len(blob) + 8 * elf) % PAGE_SIZE == 0 and blob
        assert json.loads(out.getvalue())["pages"] == (len(blob) + 8 * elf) // PAGE_SIZE


# --- the CLI as a user runs it (bounded: ~0.3 s each) ---------------------------------

def run_cli(*args, timeout=120, limit_memory=False):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def limits():
        if limit_memory:                  # a runaway read stops at 2 GiB, not at the host's RAM
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "ksm_engine", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout,
                          preexec_fn=limits, stdin=subprocess.DEVNULL)


def assert_usage_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout[-300:], r.stderr[-1000:])
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("ksm-engine: error:") or r.stderr.startswith("usage:"), r.stderr
    assert len(r.stderr.splitlines()) <= 3 or r.stderr.startswith("usage:"), r.stderr


CLI_CASES = [
    (),                                                   # no command
    ("--bogus",),
    ("bogus-command",),
    ("scan",),
    ("scan", "{missing}"),
    ("scan", "{dir}"),
    ("scan", "{empty}"),
    ("scan", "{page-1}"),
    ("scan", "/dev/zero"),
    ("scan", "{fifo}"),
    ("scan", "{page}", "--max-full-scans", "-1"),
    ("scan", "{page}", "--max-full-scans", "1e3"),
    ("scan", "{page}", "--set", "max_page_sharing=99999999999999999999999"),
    ("scan", "{page}", "--set", "run=1"),
    ("scan", "{page}", "--set", "=1"),
    ("scan", "{page}", "--compat", "2010"),
    ("estimate",),
    ("estimate", "--pid", "0"),
    ("estimate", "--pid", "99999999999999999999999"),
    ("estimate", "--core", "{elf-junk}"),
    ("estimate", "--core", "{binary}"),
    ("estimate", "--image", "{page}", "--pages-to-scan", "0"),
    ("estimate", "--image", "{page}", "--sleep-millisecs", "-5"),
    ("demo", "--guests", "0"),
    ("demo", "--bogus"),
    ("compare-kernel", "{page-1}"),
    ("cmm",),
    ("cmm", "{missing}"),
    ("cmm", "{dir}"),
    ("cmm", "{empty}"),
    ("cmm", "{binary}"),
    ("cmm", "{scenario-bad}"),
    ("cmm", "{oversized}"),
    ("cmm", "{truncated}"),
]


@pytest.fixture(scope="module")
def cli_files(files, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    fifo = d / "fifo"
    os.mkfifo(fifo)
    truncated = d / "truncated.json"
    truncated.write_text(json.dumps(VALID_SCENARIO)[:57])
    return dict(files, fifo=str(fifo), truncated=str(truncated))


@pytest.mark.parametrize("args", CLI_CASES, ids=lambda a: " ".join(a) or "(none)")
def test_cli_bad_input_as_a_user_runs_it(cli_files, args):
    assert_usage_error(run_cli(*(a.format(**cli_files) for a in args)))


# Scenario files that once broke the loader (ksm_engine/apps/cmm_scenario.py): each case showed a bug.
ONCE_BAD = [
    pytest.param("nested", "[" * 100000, id="deeply-nested-json-RecursionError"),
    pytest.param("digits", '{"steps": [{"hv_target_kb": 1' + "0" * 5000 + "}]}",
                 id="5000-digit-integer-ValueError"),
    pytest.param("advance", json.dumps({"ram_mb": 16, "steps": [{"advance_s": 1e12}]}),
                 id="advance_s-1e12-runs-forever"),
]


@pytest.mark.parametrize("kind, text", ONCE_BAD)
def test_cli_scenario_edge_cases(tmp_path, kind, text):
    path = tmp_path / f"{kind}.json"
    path.write_text(text)
    try:
        r = run_cli("cmm", path, timeout=6)
    except subprocess.TimeoutExpired:
        raise AssertionError("ksm-engine cmm did not finish") from None
    assert_usage_error(r)


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="RLIMIT_AS cannot hold ASan's shadow memory")
@pytest.mark.parametrize("path", ["{fifo}", "/dev/zero", "/dev/urandom"])
def test_cli_scenario_from_a_device(cli_files, path):
    try:
        r = run_cli("cmm", path.format(**cli_files), timeout=6, limit_memory=True)
    except subprocess.TimeoutExpired:
        raise AssertionError("ksm-engine cmm did not finish") from None
    assert_usage_error(r)


@pytest.mark.parametrize("call", [
    lambda: SimClock().advance(math.inf),
    lambda: Hypervisor(cmo_page_size=math.inf),
    lambda: Hypervisor().add_partition(1 << 20).set_loan_target(math.inf),
    lambda: Hypervisor().add_partition(1 << 20).fail_get_mpp(math.inf),
    lambda: Hypervisor().add_partition(1 << 20).fail_page_hcalls(math.inf, 1),
], ids=["advance", "cmo_page_size", "set_loan_target", "fail_get_mpp", "fail_page_hcalls"])
def test_cmm_infinity(call):
    """Infinity where cmm once converted numbers with int() unchecked
    (OverflowError): now a ValueError."""
    with pytest.raises(ValueError):
        call()
