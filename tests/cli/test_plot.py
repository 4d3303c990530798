"""`ksm-engine demo --plot`: the picture, and the errors when it cannot be
drawn (matplotlib missing, a bad destination)."""
import json

import pytest

from .conftest import assert_usage_error, run_cli, run_main

SMALL = ["--guests", "2", "--guest-size", "1MiB"]

# Makes `import matplotlib` fail in the command's interpreter, as on a
# machine without the plot extra.
HIDE_MATPLOTLIB = """
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return None
sys.meta_path.insert(0, _Hide())
"""


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "history.png"
    r = run_cli("demo", *SMALL, "--plot", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["plot"] == str(out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000            # a drawn figure, not an empty canvas


def test_plot_svg_has_every_series(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "history.svg"
    r = run_cli("demo", *SMALL, "--plot", out)
    assert r.returncode == 0, r.stderr
    assert f"plot written to {out}" in r.stdout
    svg = out.read_text()
    for label in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
                  "balloon loaned pages"):
        assert label in svg


def test_missing_matplotlib_is_exit_2_with_the_install_hint(tmp_path):
    out = tmp_path / "x.png"
    r = run_cli("demo", *SMALL, "--plot", out, prelude=HIDE_MATPLOTLIB)
    assert_usage_error(r, "--plot needs matplotlib", "pip install 'ksm-engine[plot]'")
    assert not out.exists()


def test_without_plot_matplotlib_is_not_needed():
    r = run_cli("demo", *SMALL, "--json", prelude=HIDE_MATPLOTLIB)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["settled"] is True


@pytest.mark.parametrize("name,needle", [
    ("nodir/x.png", "does not exist"),
    ("x.nosuchformat", "unknown picture format 'nosuchformat'"),
    (".", "is a directory"),
])
def test_bad_destination(tmp_path, name, needle):
    pytest.importorskip("matplotlib")
    assert_usage_error(run_main("demo", *SMALL, "--plot", tmp_path / name), "--plot:", needle)
