"""The real kernel's KSM as a peer: the same images, run the kernel way.

Method:
  1. Take an exclusive lock (LOCK_PATH) so that two runs on this machine
     never share the kernel's KSM, save every knob, write run=2.
  2. Write the requested knobs, then pages_to_scan large enough for one
     batch to cover a whole full scan, and a short sleep_millisecs: ksmd then
     does exactly one full scan per batch and pauses after it, so the
     counters read during the pause are those at the end of a full scan.
  3. Start one child process per image, in order; each copies its image into
     a private anonymous mapping, madvises it MERGEABLE and says "ready".
  4. Write run=1; after each full scan (full_scans rising) record the
     convergence counters; stop on the same rule as the engine
     (settle.settled).  Read /proc/PID/ksm_stat of every child.
  5. run=2, end the children, restore every knob, write run=2 last.

seconds: wall time from run=1 to the end of the settling full scan, less
the pauses ksmd slept between scans.
"""
import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

from .._native import PAGE_SIZE
from ..kstrtox import UINT_MAX
from ..settle import CONVERGENCE_COUNTERS, DEFAULT_MAX_FULL_SCANS, SettleResult, record_full_scan

KSM_DIR = "/sys/kernel/mm/ksm"
LOCK_PATH = "/tmp/ksm-engine-kernel-ksm.lock"
PAUSE_MS = 10

# Child: map the image privately, madvise MERGEABLE, report, wait.
_CHILD = r"""
import mmap, os, sys
path = sys.argv[1]
size = os.path.getsize(path)
buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
with open(path, "rb") as f:
    pos = 0
    while pos < size:
        chunk = f.read(1 << 22)
        if not chunk:
            break
        buf[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
buf.madvise(mmap.MADV_MERGEABLE)
sys.stdout.write("ready\n")
sys.stdout.flush()
for line in sys.stdin:          # "w OFFSET HEX": write bytes, answer "ok"
    op, off, data = line.split()
    data = bytes.fromhex(data)
    buf[int(off):int(off) + len(data)] = data
    sys.stdout.write("ok\n")
    sys.stdout.flush()
"""


class KernelKsmUnavailable(OSError):
    pass


def availability():
    """(True, "") if this process may drive the kernel's KSM, else (False, why)."""
    if not os.path.isdir(KSM_DIR):
        return False, f"{KSM_DIR} does not exist (kernel without CONFIG_KSM?)"
    if not os.access(os.path.join(KSM_DIR, "run"), os.W_OK):
        return False, f"{KSM_DIR}/run is not writable (need root)"
    return True, ""


def read_knob(name):
    with open(os.path.join(KSM_DIR, name)) as f:
        return f.read().strip()


def write_knob(name, value):
    """Writes one knob; OSError with the kernel's errno on refusal."""
    fd = os.open(os.path.join(KSM_DIR, name), os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def read_counters():
    """Every readable integer attribute of the kernel's KSM."""
    out = {}
    for name in sorted(os.listdir(KSM_DIR)):
        text = read_knob(name)
        try:
            out[name] = int(text)
        except ValueError:
            out[name] = text
    return out


def _writable_knobs():
    return [n for n in sorted(os.listdir(KSM_DIR))
            if os.stat(os.path.join(KSM_DIR, n)).st_mode & 0o200]


_lock_guard = threading.RLock()
_lock_state = {"depth": 0, "file": None}


@contextlib.contextmanager
def exclusive():
    """Holds the machine-wide lock on the kernel's KSM (an flock on
    LOCK_PATH, shared with every other process using this module);
    re-entrant within a process."""
    with _lock_guard:
        if _lock_state["depth"] == 0:
            f = open(LOCK_PATH, "a")
            fcntl.flock(f, fcntl.LOCK_EX)
            _lock_state["file"] = f
        _lock_state["depth"] += 1
        try:
            yield
        finally:
            _lock_state["depth"] -= 1
            if _lock_state["depth"] == 0:
                f = _lock_state["file"]
                _lock_state["file"] = None
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()


@contextlib.contextmanager
def kernel_ksm():
    """Exclusive use of the kernel's KSM: saves every knob and restores them
    on exit (run=2 written last), whatever happens inside."""
    ok, why = availability()
    if not ok:
        raise KernelKsmUnavailable(errno.ENOENT, why)
    with exclusive(), _restore_on_sigterm(), _saved_knobs():
        yield


@contextlib.contextmanager
def _restore_on_sigterm():
    """A SIGTERM while the kernel's knobs are changed becomes SystemExit, so
    that the knobs are restored on the way out (main thread only: signal
    handlers can be set nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _saved_knobs():
    saved = {}
    try:
        for name in _writable_knobs():
            if name == "run":
                continue
            saved[name] = read_knob(name)
        write_knob("run", "2")
        write_knob("advisor_mode", "none")
        yield
    finally:
        try:
            write_knob("run", "2")
        except OSError:
            pass
        # advisor_mode first: it resets pages_to_scan, which comes after.
        order = sorted(saved, key=lambda n: (n != "advisor_mode", n == "pages_to_scan"))
        for name in order:
            value = saved[name]
            if name == "advisor_mode":
                value = "scan-time" if "[scan-time]" in value else "none"
            with contextlib.suppress(OSError):
                if read_knob(name) != saved[name]:
                    write_knob(name, value)
        with contextlib.suppress(OSError):
            write_knob("run", "2")


def _start_children(paths):
    children = []
    try:
        for path in paths:
            c = subprocess.Popen([sys.executable, "-c", _CHILD, os.fspath(path)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            children.append(c)
            line = c.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"child for {path} failed to start")
        return children
    except BaseException:
        _stop_children(children)
        raise


def _stop_children(children):
    for c in children:
        with contextlib.suppress(Exception):
            c.stdin.close()
    for c in children:
        try:
            c.wait(timeout=10)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def _ksm_stat(pid):
    out = {}
    with open(f"/proc/{pid}/ksm_stat") as f:
        for line in f:
            key, _, value = line.replace(":", " ").partition(" ")
            value = value.strip()
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _child_write(child, offset, data):
    child.stdin.write(f"w {offset} {bytes(data).hex()}\n")
    child.stdin.flush()
    if child.stdout.readline().strip() != "ok":
        raise RuntimeError("child did not take the write")


def run_kernel(paths, knobs=None, *, max_full_scans=DEFAULT_MAX_FULL_SCANS, timeout=600.0,
               progress=None, phases=()):
    """Runs the images through the kernel's KSM until it settles.  Returns a
    SettleResult whose counters are the kernel's sysfs counters plus
    ``rmap_items`` (summed over the children's ksm_stat).

    phases: after settling, each phase (a list of (image index, offset,
    bytes) writes) is applied to the children while ksmd runs, and KSM is
    run until it settles again; the result is the last settle's."""
    total_pages = sum(os.path.getsize(p) for p in paths) // PAGE_SIZE
    with kernel_ksm():
        for name, value in (knobs or {}).items():
            write_knob(name, value)
        write_knob("pages_to_scan", str(min(total_pages * 4 + 1024, UINT_MAX)))
        write_knob("sleep_millisecs", str(PAUSE_MS))
        children = _start_children(paths)
        try:
            write_knob("run", "1")
            for phase in (None,) + tuple(phases):
                if phase:
                    for index, offset, data in phase:
                        _child_write(children[index], offset, data)
                history = []
                seen = int(read_knob("full_scans"))
                t_start, t_end = time.perf_counter(), time.perf_counter()
                base = seen
                deadline = t_start + timeout
                done = False
                c = read_counters()
                while len(history) < max_full_scans and time.perf_counter() < deadline:
                    scans = int(read_knob("full_scans"))
                    if scans == seen:
                        time.sleep(0.0005)
                        continue
                    t_end = time.perf_counter()
                    c = read_counters()
                    seen = scans
                    if record_full_scan(history, c, progress=progress):
                        done = True
                        break
            counters = c
            per_process = [_ksm_stat(child.pid) for child in children]
            write_knob("run", "0")
        finally:
            _stop_children(children)
    counters["rmap_items"] = sum(p.get("ksm_rmap_items", 0) for p in per_process)
    seconds = max(t_end - t_start - max(seen - base - 1, 0) * PAUSE_MS / 1000.0, 0.0)
    return SettleResult(counters=counters, seconds=seconds, full_scans=seen, settled=done,
                        history=[dict(zip(CONVERGENCE_COUNTERS, h)) for h in history],
                        per_process=per_process)
