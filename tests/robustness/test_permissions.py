"""Permissions: what needs privileges in Linux needs them here.

A caller's credential is modelled explicitly (Credential: uid and
capabilities) and the kernel's rule for each file is written out once
(linux_write): a sysfs or module-parameter file is owned by root; a file
with no store method refuses any writer (EACCES, whatever its
capabilities); a 0644 file lets root write and refuses other users
(EACCES, short of CAP_DAC_OVERRIDE); then the store function may check a
capability itself, as cmm.c's store_oom_pages() checks CAP_SYS_ADMIN
(EPERM) before it even parses the text.  The engine's CMM files take the
writer's CAP_SYS_ADMIN as ``admin`` and model a root writer (its sysfs
module says so); every root credential, with and without CAP_SYS_ADMIN, is
checked against the rule for every file and value.  (The engine's KSM sysfs
files take no credential at all: reported, not modelled here.)

Reading another process's memory for an estimate goes through the
operating system's own checks: `ksm-engine estimate --pid` is run as a
process without capabilities (setpriv) against a process of another user
and against a fully privileged one (denied: exit 2, the process named, no
traceback), and against one of its own kind (allowed), for real.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from cmm import CmmDriver, Hypervisor, SimClock
from cmm.cint import to_s32
from ksm_engine.kstrtox import kstrtoul, kstrtouint, simple_strtoul
from cmm.params import PARAMS
from ksm_engine.apps.cmm_scenario import parse_scenario, run_scenario
from ksm_engine import Machine
from tests.cli.children import target_env

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@dataclass(frozen=True)
class Credential:
    """Who writes: a uid and the capabilities in its effective set."""
    uid: int
    caps: frozenset

    @property
    def admin(self):
        return "CAP_SYS_ADMIN" in self.caps


ALL_CAPS = frozenset({"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE"})
ROOT_CRED = Credential(0, ALL_CAPS)
ROOT_NO_SYS_ADMIN = Credential(0, ALL_CAPS - {"CAP_SYS_ADMIN"})
ROOT_NO_CAPS = Credential(0, frozenset())
ROOT_CREDS = [ROOT_CRED, ROOT_NO_SYS_ADMIN, ROOT_NO_CAPS]

VALUES = ["0", "0\n", "00", "", "abc", "1", "4096", "0x10", "-1", "18446744073709551616"]


def linux_write(cred, mode, has_store, needs_sys_admin, store):
    """The errno a write(2) of the kernel gets, or 0: open-time checks on a
    root-owned file, then the store function's own capability check, then
    its parsing (``store()`` -> errno or 0)."""
    if not has_store or not mode & 0o222:
        return errno.EACCES
    if cred.uid != 0 and not mode & 0o002 and "CAP_DAC_OVERRIDE" not in cred.caps:
        return errno.EACCES
    if needs_sys_admin and not cred.admin:
        return errno.EPERM
    return store()


def _oom_store(value):
    return 0 if simple_strtoul(value, 10) == 0 else errno.EBADMSG


def _ulong_store(value):
    try:
        kstrtoul(value, 0)
    except OSError as e:
        return e.errno
    return 0


# name -> (mode, has a store method, store checks CAP_SYS_ADMIN, store)
CMM_SYSFS = {
    "loaned_kb": (0o444, False, False, None),
    "loaned_target_kb": (0o444, False, False, None),
    "oom_freed_kb": (0o644, True, True, _oom_store),
    "simulate_loan_target_kb": (0o644, True, False, _ulong_store),
}


def make_driver(simulate=False):
    m = Machine(ram="4MiB")
    drv = CmmDriver(m, None if simulate else Hypervisor(), delay=1, oom_kb=64, min_mem_mb=0,
                    simulate=simulate, clock=SimClock())
    return m, drv


def _state(drv):
    return (drv.oom_freed_pages, drv.simulate_loan_target_kb, drv.loaned_pages.read(),
            {n: drv.params[n] for n in drv.params})


@pytest.mark.parametrize("cred", ROOT_CREDS, ids=["root", "root-without-CAP_SYS_ADMIN", "root-without-caps"])
@pytest.mark.parametrize("simulate", [False, True])
def test_cmm_sysfs_writes_follow_the_kernels_permission_rules(cred, simulate):
    """Every file of /sys/devices/system/cmm/cmm0, every value: the
    engine's answer is the kernel's, and a refused write changes nothing."""
    m, drv = make_driver(simulate)
    assert set(drv.sysfs) == set(CMM_SYSFS) - (set() if simulate else {"simulate_loan_target_kb"})
    for name in drv.sysfs:
        mode, has_store, needs_admin, store = CMM_SYSFS[name]
        assert drv.sysfs.mode(name) == mode
        for value in VALUES:
            drv.oom_freed_pages = 16                    # something to reset
            before = _state(drv)
            want = linux_write(cred, mode, has_store, needs_admin, lambda: store(value))
            try:
                drv.sysfs.write(name, value, admin=cred.admin)
            except OSError as e:
                assert e.errno == want, (name, value, cred, e)
                assert _state(drv) == before
                continue
            assert want == 0, (name, value, cred)
            if name == "oom_freed_kb":
                assert drv.oom_freed_pages == 0
    drv.unload()


def _param_store(spec, value):
    """param_set_uint/ulong (kstrto*, base 0) or cmm_set_disable()."""
    if spec.name == "disable":
        return 0 if to_s32(simple_strtoul(value, 10)) in (0, 1) else errno.EINVAL
    try:
        (kstrtouint if spec.ptype == "uint" else kstrtoul)(value, 0)
    except OSError as e:
        return e.errno
    return 0


@pytest.mark.parametrize("cred", ROOT_CREDS, ids=["root", "root-without-CAP_SYS_ADMIN", "root-without-caps"])
def test_module_parameters_need_no_capability_only_the_write_bit(cred):
    """/sys/module/cmm/parameters: root-owned files and no capability check
    in any param_set, so every root writer gets the same answers, the
    parser's; simulate (0444) refuses everyone."""
    m, drv = make_driver()
    for name, spec in PARAMS.items():
        assert drv.params.mode(name) == spec.mode
        for value in ("1", "0", "abc", "4294967296", "0x10"):
            before = _state(drv)
            want = linux_write(cred, spec.mode, True, False, lambda: _param_store(spec, value))
            try:
                drv.params.write(name, value, admin=cred.admin)
            except OSError as e:
                assert e.errno == want, (name, value, cred, e)
                assert _state(drv) == before
            else:
                assert want == 0, (name, value, cred)
    drv.unload()


def test_scenario_sysfs_write_carries_the_credential():
    """The scenario format's sysfs_write has ``admin`` (default false): the
    OOM reset is refused without it (EPERM) and done with it."""
    scn = parse_scenario({"ram_mb": 16, "params": {"min_mem_mb": 0, "oom_kb": 64},
                          "steps": [{"hv_target_kb": 4096}, {"advance_s": 1}, {"oom": True},
                                    {"sysfs_write": {"name": "oom_freed_kb", "value": "0"}},
                                    {"sysfs_write": {"name": "oom_freed_kb", "value": "0",
                                                     "admin": False}},
                                    {"sysfs_write": {"name": "oom_freed_kb", "value": "0",
                                                     "admin": True}}]})
    steps = run_scenario(scn).steps
    assert [s["result"] for s in steps[3:]] == ["EPERM", "EPERM", "ok"]
    assert [s["oom_freed_kb"] for s in steps[2:]] == [64, 64, 64, 0]


def test_the_kernels_ksm_knobs_are_root_only_here_too():
    """The rule the engine's KSM sysfs would have to follow: on this very
    machine /sys/kernel/mm/ksm's knobs are root-owned 0644 files an
    unprivileged user cannot open for writing (checked with access(2),
    nothing is written)."""
    if not os.path.isdir("/sys/kernel/mm/ksm"):
        pytest.skip("no /sys/kernel/mm/ksm on this kernel")
    st = os.stat("/sys/kernel/mm/ksm/pages_to_scan")
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o644
    if os.geteuid() != 0:
        assert not os.access("/sys/kernel/mm/ksm/pages_to_scan", os.W_OK)
        return
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is needed to act as another user")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "test", "-w", "/sys/kernel/mm/ksm/pages_to_scan"])
    assert r.returncode == 1


# --- reading another process's memory ------------------------------------------

TARGET = textwrap.dedent("""
    import ctypes, mmap, sys
    try:   # let a sibling read us where Yama restricts ptrace to ancestors
        ctypes.CDLL(None).prctl(0x59616d61, ctypes.c_ulong(-1), 0, 0, 0)
    except Exception:
        pass
    region = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(64):
        region[i * 4096:(i + 1) * 4096] = bytes([1 + i % 4]) * 4096
    print("ready", flush=True)
    sys.stdin.read()
""")


def _capless():
    """A command prefix that runs as uid 0 with no capabilities at all (no
    CAP_SYS_PTRACE, no CAP_DAC_*): for the kernel, an unprivileged user."""
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _nobody():
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


class Target:
    """A live Python process with 64 known pages, started with ``prefix``."""

    def __init__(self, prefix):
        self.proc = subprocess.Popen(prefix + [sys.executable, "-c", TARGET], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd="/",
                                     env=target_env())
        assert self.proc.stdout.readline() == "ready\n"
        self.pid = self.proc.pid

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def estimate(prefix, pid):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(prefix + [sys.executable, "-m", "ksm_engine", "estimate", "--pid",
                                    str(pid), "--json"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def _estimate_available():
    try:
        import ksm_engine.cli.estimate_command  # noqa: F401
    except ImportError:
        return False
    return True


needs_other_users = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="needs root and setpriv to start processes as other users")
needs_estimate = pytest.mark.skipif(not _estimate_available(),
                                    reason="ksm-engine estimate is not built")


def _denied(r, pid):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert f"--pid {pid} (python" in r.stderr and "permission denied" in r.stderr


@needs_other_users
@needs_estimate
@pytest.mark.parametrize("owner", ["another user", "a privileged process"])
def test_estimate_of_a_process_it_may_not_read_is_refused(owner):
    """Caller without capabilities; target owned by nobody (another uid), or
    by root with every capability (the kernel refuses a ptrace reader whose
    capabilities are not a superset of the target's)."""
    target = Target(_nobody() if owner == "another user" else [])
    try:
        _denied(estimate(_capless(), target.pid), target.pid)
    finally:
        target.close()


@needs_other_users
@needs_estimate
def test_estimate_of_a_process_it_may_read_works_under_the_same_limits():
    """The control: the same unprivileged caller reads a process of its own
    kind (same uid, no more capabilities), so the refusals above come from
    the permissions and nothing else."""

    target = Target(_capless())
    try:
        with open(f"/proc/{target.pid}/comm") as f:
            comm = f.read().strip()      # "python" or "python3", as the interpreter is named
        r = estimate(_capless(), target.pid)
    finally:
        target.close()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert out["sources"][0]["name"] == f"pid {target.pid} ({comm})"
    # the 64 known pages hold four contents: at least 60 of them merge
    # (the interpreter's own pages may add more)
    assert out["pages"] >= 64
    assert all(run["pages_sharing"] >= 60 for run in out["runs"])


def test_the_engines_ksm_knobs_need_root_to_write():
    """The engine's /sys/kernel/mm/ksm follows the kernel's modes: a knob
    written by an unprivileged caller is EACCES and unchanged, whatever the
    text; root writes it; anyone reads; a counter is EACCES even for root."""
    from ksm_engine import Machine
    m = Machine(ram="4MiB")
    fs = m.ksm.sysfs
    for name, value in (("pages_to_scan", "5000"), ("run", "1"), ("max_page_sharing", "16"),
                        ("use_zero_pages", "1"), ("sleep_millisecs", "garbage")):
        old = fs[name]
        with pytest.raises(PermissionError) as e:
            fs.write(name, value)
        assert e.value.errno == errno.EACCES and fs[name] == old
    fs.write("pages_to_scan", "5000", admin=True)
    assert fs["pages_to_scan"] == "5000\n"
    fs["pages_to_scan"] = "7"  # item assignment is a write by root
    assert fs["pages_to_scan"] == "7\n"
    with pytest.raises(PermissionError) as e:
        fs.write("pages_shared", "0", admin=True)
    assert e.value.errno == errno.EACCES
    with pytest.raises(TypeError):
        fs.write("pages_to_scan", "9", admin="yes")
    assert fs["pages_to_scan"] == "7\n"
