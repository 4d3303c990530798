"""Machine.access_hook: one before() and one after() around every process
read and write (a byte range), none per page; ptes as flat arrays."""
import numpy as np
import pytest

from ksm_engine import PAGE_SIZE, Machine
from ksm_engine.ptes import PTE_KSM, PTE_PRESENT, pte_arrays


class Recorder:
    def __init__(self, refuse=False):
        self.calls = []
        self.refuse = refuse

    def before(self, proc, addr, length, write):
        self.calls.append(("before", proc.pid, addr, length, write))
        if self.refuse:
            raise OSError(12, "no room")

    def after(self, proc, addr, length, write):
        self.calls.append(("after", proc.pid, addr, length, write))


def test_every_access_is_one_range_call(machine):
    p = machine.spawn()
    a = p.mmap(64 * PAGE_SIZE)
    rec = Recorder()
    machine.access_hook = rec
    p.write(a, b"x" * (64 * PAGE_SIZE))
    p.fill(a + 5, 0, 3 * PAGE_SIZE)
    p.read(a + 1, 10)
    buf = bytearray(2 * PAGE_SIZE)
    p.readinto(a + PAGE_SIZE, buf)
    assert rec.calls == [
        ("before", p.pid, a, 64 * PAGE_SIZE, True), ("after", p.pid, a, 64 * PAGE_SIZE, True),
        ("before", p.pid, a + 5, 3 * PAGE_SIZE, True), ("after", p.pid, a + 5, 3 * PAGE_SIZE, True),
        ("before", p.pid, a + 1, 10, False), ("after", p.pid, a + 1, 10, False),
        ("before", p.pid, a + PAGE_SIZE, 2 * PAGE_SIZE, False),
        ("after", p.pid, a + PAGE_SIZE, 2 * PAGE_SIZE, False)]
    machine.access_hook = None
    p.write(a, b"y")
    assert len(rec.calls) == 8


def test_a_refused_access_changes_nothing(machine):
    p = machine.spawn()
    a = p.mmap(4 * PAGE_SIZE)
    p.write(a, b"a" * PAGE_SIZE)
    used = machine.used_pages
    machine.access_hook = Recorder(refuse=True)
    with pytest.raises(OSError):
        p.write(a, b"b" * (4 * PAGE_SIZE))
    machine.access_hook = None
    assert p.read(a, PAGE_SIZE) == b"a" * PAGE_SIZE and machine.used_pages == used


def test_pte_arrays_match_ptes(machine):
    machine.ksm.sysfs["smart_scan"] = "0"
    p = machine.spawn()
    a = p.mmap(8 * PAGE_SIZE)
    p.write(a, b"\x07" * (4 * PAGE_SIZE))           # 4 equal pages, 4 untouched
    p.madvise(a, 8 * PAGE_SIZE, 12)
    machine.ksm.full_scan(2)
    pfns, flags = pte_arrays(p, a, 8)
    lp, lf = p.ptes(a, 8)
    f = np.frombuffer(flags, np.uint8)
    assert list(f) == lf and list(f[:4]) == [PTE_PRESENT | PTE_KSM] * 4 and not f[4:].any()
    assert list(np.frombuffer(pfns, np.uint32)[:4]) == lp[:4]
    assert pte_arrays(p, a, 0) == (b"", b"")
    with pytest.raises(OSError):
        pte_arrays(p, a + 1, 1)


def test_pte_arrays_of_an_exited_process():
    from ksm_engine.errors import ProcessExited

    m = Machine(ram="1MiB")
    p = m.spawn()
    p.exit()
    with pytest.raises(ProcessExited):
        pte_arrays(p, 0x10000000, 1)
