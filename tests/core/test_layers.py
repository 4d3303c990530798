"""The import graph: core, then the cmm driver, then the applications.

Each check runs in a fresh interpreter, so that what one import pulls in is
seen alone (the test process has imported everything already).
"""
import json
import subprocess
import sys

import pytest

APPS = ("ksm_engine.apps", "ksm_engine.cli")


def _loaded_after(module):
    """The names in sys.modules after importing ``module`` alone."""
    prog = (f"import sys, json, {module}\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", prog], check=True,
                         capture_output=True, text=True).stdout
    return set(json.loads(out))


def _under(names, package):
    return sorted(n for n in names if n == package or n.startswith(package + "."))


@pytest.mark.parametrize("core", ["ksm_engine", "ksm_engine.machine",
                                  "ksm_engine.process", "ksm_engine.ksm"])
def test_core_imports_neither_cmm_nor_applications(core):
    loaded = _loaded_after(core)
    assert _under(loaded, "cmm") == []
    for app in APPS:
        assert _under(loaded, app) == []


def test_cmm_imports_no_application():
    loaded = _loaded_after("cmm")
    for app in APPS:
        assert _under(loaded, app) == []


def test_applications_import_both_layers():
    loaded = _loaded_after("ksm_engine.apps.demo")
    assert "cmm" in loaded and "ksm_engine.machine" in loaded
