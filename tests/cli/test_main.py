"""Conventions every command shares: --version, --help with an example,
usage errors as exit 2 without a traceback.  The entry point itself
(`python -m ksm_engine`: --version, no command) runs in a subprocess; the
argument parsing through main(argv) in this process."""
import pytest

from ksm_engine import __version__

from .conftest import assert_usage_error, run_cli, run_main

COMMANDS = ["demo", "scan", "cmm", "estimate", "compare-kernel"]


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"ksm-engine {__version__}"


def test_top_level_help_lists_every_command():
    r = run_main("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example(name):
    r = run_main(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ksm-engine " + name)
    assert "example" in r.stdout
    assert f"ksm-engine {name}" in r.stdout.split("example", 1)[1]


def test_no_command_is_a_usage_error():
    r = run_cli()
    assert r.returncode == 2
    assert "usage:" in r.stderr and "Traceback" not in r.stderr


def test_unknown_command():
    assert_usage_error(run_main("frobnicate"), "invalid choice")


@pytest.mark.parametrize("args", [["demo"], ["estimate"], ["compare-kernel", "a.img"]])
def test_unknown_option(args):
    assert_usage_error(run_main(*args, "--bogus"), "unrecognized arguments: --bogus")


def test_compare_kernel_needs_an_image():
    assert_usage_error(run_main("compare-kernel"), "required: IMAGE")


def test_a_command_that_cannot_be_imported_fails_loudly(monkeypatch):
    from ksm_engine.cli import main as cli_main
    monkeypatch.setitem(cli_main.COMMANDS, "broken", ".no_such_command")
    with pytest.raises(ImportError):
        cli_main.main(["--help"])
