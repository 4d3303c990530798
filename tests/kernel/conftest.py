"""Tests against the real kernel's KSM.  Skipped only where
/sys/kernel/mm/ksm is missing or not writable (not root)."""
import pytest

from ksm_engine.apps import kernel_peer

_OK, _WHY = kernel_peer.availability()


def pytest_collection_modifyitems(config, items):
    if _OK:
        return
    skip = pytest.mark.skip(reason=f"real kernel KSM not usable here: {_WHY}")
    for item in items:
        if "tests/kernel/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
