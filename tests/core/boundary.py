"""The harness of the C boundary tests (test_core_boundary_*.py): the raw
constants, ``isolated`` (a case run in a forked child, so that a crash is
a failure of the test, not the end of the run) and the checks that the
machine of the ``world`` fixture (tests/core/conftest.py) is intact."""
import errno
import faulthandler
import os
import pickle
import resource
import signal

from ksm_engine import PAGE_SIZE
from ksm_engine._native import ffi, lib

NULL = ffi.NULL
U32_MAX = 0xFFFFFFFF
U64_MAX = (1 << 64) - 1
TOP = (lib.KE_MAX_VPN + 1) * PAGE_SIZE       # 2**44: the end of an mm's address space
EINVAL, ESRCH, EFAULT, ENOMEM = -errno.EINVAL, -errno.ESRCH, -errno.EFAULT, -errno.ENOMEM


def isolated(fn):
    """Runs fn() in a forked child and returns its (picklable) result;
    a crash or an exception in the child fails the test here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        # a crash is expected to be possible: no core file, no traceback
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        faulthandler.disable()
        code = 0
        try:
            payload = ("ok", fn())
        except BaseException as e:  # noqa: BLE001 - report anything
            payload = ("error", repr(e))
            code = 1
        try:
            with os.fdopen(w, "wb") as f:
                pickle.dump(payload, f)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(f"the core crashed: {signal.Signals(os.WTERMSIG(status)).name}")
    if not data:   # died without a word (a sanitizer's report and exit)
        raise AssertionError(f"the core crashed: exit status {os.waitstatus_to_exitcode(status)}")
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise AssertionError(f"in the child: {value}")
    return value



def counts(m):
    c = ffi.new("struct ke_mem_counts *")
    assert lib.ke_machine_counts(m.ke_machine, c) == 0
    return (c.nr_frames, c.free_frames, c.used_frames, c.balloon_frames, c.ksm_frames)


def intact(m, p, a):
    """The machine and the mm are as the fixture made them."""
    assert counts(m) == (256, 254, 2, 0, 0)
    assert p.read(a, 2 * PAGE_SIZE) == b"\x11" * PAGE_SIZE + b"\x22" * PAGE_SIZE
    m.check()
    return True

