"""`ksm-engine calibrate` and its file (ksm_engine.apps.ksmd_calibration):
the round trip, refusals (corrupt, another kernel, another CONFIG_HZ,
another version) falling back to the default model with a note, the
atomic write on a full disk (a tiny tmpfs, and injected ENOSPC), and the
command's exit codes.  The measuring itself runs against the kernel in
tests/kernel/test_ksmd_model.py."""
import errno
import json
import os
import subprocess

import pytest

from ksm_engine.apps import ksmd_calibration as cal
from ksm_engine.apps.ksmd_model import COSTS, CostModel

from .conftest import run_cli


def _model(hz=None):
    return CostModel(costs={k: (i + 1) * 1e-7 for i, k in enumerate(COSTS)}, per_batch=5e-5,
                     per_full_scan=1e-4, wake_latency=2e-4, jitter=5e-4, stretch=1.0, slice=1.4e-3,
                     hz=hz or cal.kernel_hz() or 250, source="calibrated")


def test_round_trip(tmp_path):
    path = tmp_path / "c.json"
    assert cal.save(_model(), path, {"paces": []}) == str(path)
    m = cal.load_model(path)
    assert m.source == "calibrated" and m.note == ""
    assert m.costs == _model().costs and m.per_batch == 5e-5
    obj = json.loads(path.read_text())
    assert obj["kernel"]["release"] == os.uname().release
    assert obj["version"] == cal.FORMAT_VERSION
    assert os.listdir(tmp_path) == ["c.json"]


def _edited(tmp_path, change):
    path = tmp_path / "c.json"
    cal.save(_model(), path)
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("change,why", [
    (lambda o: o["kernel"].update(release="2.6.32-old"), "made on kernel '2.6.32-old'"),
    (lambda o: o.update(version=99), "format version 99"),
    (lambda o: o["costs"].pop("checksum"), "costs must give exactly"),
    (lambda o: o["costs"].update(checksum=-1), "checksum is not a non-negative number"),
    (lambda o: o["costs"].update(checksum="fast"), "checksum is not a non-negative number"),
    (lambda o: o.update(hz=0), "hz is not a CONFIG_HZ"),
    (lambda o: o.update(format="something else"), "not a ksm-engine ksmd calibration"),
])
def test_refused_files_fall_back_to_the_default(tmp_path, change, why):
    m = cal.load_model(_edited(tmp_path, change))
    assert m.source == "default"
    assert "refused" in m.note and why in m.note


def test_another_config_hz_is_refused(tmp_path):
    if cal.kernel_hz() is None:
        pytest.skip("this kernel's CONFIG_HZ cannot be read (no /boot/config-*, no /proc/config.gz)")
    other = 1000 if cal.kernel_hz() != 1000 else 250
    m = cal.load_model(_edited(tmp_path, lambda o: o["kernel"].update(hz=other)))
    assert m.source == "default" and f"CONFIG_HZ={other}" in m.note


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe garbage", b"[1, 2]", b"null"])
def test_corrupt_files_fall_back(tmp_path, data):
    path = tmp_path / "c.json"
    path.write_bytes(data)
    m = cal.load_model(path)
    assert m.source == "default" and str(path) in m.note and "refused" in m.note


def test_missing_file(tmp_path):
    m = cal.load_model(tmp_path / "none.json")
    assert m.source == "default" and "not calibrated" in m.note
    with pytest.raises(cal.CalibrationError, match="no such calibration file"):
        cal.load_model(tmp_path / "none.json", explicit=True)


def test_default_path_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv(cal.ENV_PATH, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cal.default_path() == str(tmp_path / "ksm-engine" / "ksmd-calibration.json")
    monkeypatch.setenv(cal.ENV_PATH, "/x/y.json")
    assert cal.default_path() == "/x/y.json"


@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 KiB tmpfs (root only)."""
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tiny tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


BIG = {"padding": ["x" * 100] * 200}      # a file larger than the tiny tmpfs


def test_disk_full_on_a_tiny_tmpfs(tiny_fs):
    old = tiny_fs / "c.json"
    old.write_text("old calibration\n")
    with pytest.raises(cal.CalibrationError) as e:
        cal.save(_model(), old, BIG)
    assert e.value.errno == errno.ENOSPC and "No space left" in str(e.value.strerror)
    assert os.listdir(tiny_fs) == ["c.json"] and old.read_text() == "old calibration\n"


def test_disk_full_injected(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(cal.CalibrationError, match="No space left"):
        cal.save(_model(), tmp_path / "c.json")
    assert os.listdir(tmp_path) == []


# --- the command ------------------------------------------------------------

# Stands in for the measuring (tested against the kernel in tests/kernel), so
# that the command's own paths run anywhere: the file, the exit codes.
FAKE_MEASURING = """
from ksm_engine.apps import kernel_peer, ksmd_calibrate
from ksm_engine.apps.ksmd_model import COSTS, CostModel
kernel_peer.availability = lambda: (True, "")
def calibrate(progress=None, quick=False):
    m = CostModel(costs={k: 1e-6 for k in COSTS}, per_batch=5e-5, per_full_scan=1e-4,
                  wake_latency=2e-4, jitter=5e-4, stretch=1.0, slice=1.4e-3, hz=250, source="calibrated")
    return m, {"padding": ["x" * 100] * 200}
ksmd_calibrate.calibrate = calibrate
"""


def test_command_disk_full(tiny_fs):
    r = run_cli("calibrate", "--calibration", tiny_fs / "c.json", prelude=FAKE_MEASURING)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "No space left on device" in r.stderr
    assert "Traceback" not in r.stderr and os.listdir(tiny_fs) == []


def test_command_saves_and_shows(tmp_path):
    path = tmp_path / "sub" / "c.json"
    r = run_cli("calibrate", "--calibration", path, "--json", prelude=FAKE_MEASURING)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["path"] == str(path) and out["model"] == "calibrated"
    r = run_cli("calibrate", "--show", "--calibration", path)
    assert r.returncode == 0 and "ksmd model: calibrated" in r.stdout
    assert r.stdout.count("\n") > 10


def test_command_a_directory_is_a_usage_error(tmp_path):
    r = run_cli("calibrate", "--calibration", tmp_path, prelude=FAKE_MEASURING)
    assert r.returncode == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr


def test_command_without_the_kernels_ksm():
    prelude = "from ksm_engine.apps import kernel_peer\n" \
              "kernel_peer.availability = lambda: (False, '/sys/kernel/mm/ksm/run is not writable (need root)')\n"
    r = run_cli("calibrate", prelude=prelude)
    assert r.returncode == 2
    assert r.stderr.strip() == ("ksm-engine: error: calibrate needs the kernel's KSM: "
                                "/sys/kernel/mm/ksm/run is not writable (need root)")


def test_show_refused_file_notes_the_default(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{corrupt")
    r = run_cli("calibrate", "--show", "--json", "--calibration", path)
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["model"] == "default" and "refused" in out["note"]
    r = run_cli("calibrate", "--show", "--calibration", tmp_path / "missing.json")
    assert r.returncode == 2 and "no such calibration file" in r.stderr
