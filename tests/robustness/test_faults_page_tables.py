"""Faults: calloc failing under the page tables (fork, write), through
calloc_shim.c in a subprocess.  Whatever fails, nothing written is lost, no
frame is lost track of, and the system keeps working afterwards.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# --- calloc fails under the page tables (a subprocess with calloc_shim.c) -------

PT_SCRIPT = textwrap.dedent("""
    import ctypes, errno, json, sys
    shim = ctypes.CDLL(sys.argv[1])
    from ksm_engine import Machine, PAGE_SIZE
    libc = ctypes.CDLL("libc.so.6")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc.mallinfo2.restype = MallInfo2

    def heap():
        mi = libc.mallinfo2()
        return mi.uordblks + mi.hblkhd

    m = Machine(ram="4MiB")
    p = m.spawn(name="parent")
    pages = {}
    # pages spread over several leaves and middle tables (a leaf maps 2 MiB,
    # a middle table 8 GiB), so a fork allocates many page tables
    for i in range(24):
        a = (1 + i // 6) * (1 << 33) + (i % 6) * (1 << 21)
        p.mmap(PAGE_SIZE, addr=a)
        p.write(a, i.to_bytes(2, "little") * (PAGE_SIZE // 2))
        pages[a] = i.to_bytes(2, "little") * (PAGE_SIZE // 2)
    before = m.meminfo()
    out = {"fork_failures": 0, "write_failures": 0, "forked_at": None}
    heap0 = heap()
    for k in range(400):
        shim.calloc_shim_arm(k, 1)
        try:
            c = p.fork()
        except OSError as e:
            assert e.errno == errno.ENOMEM, e
            assert shim.calloc_shim_fired() == 1
            out["fork_failures"] += 1
            assert len(m.processes) == 1 and m.meminfo() == before
            m.check()
            assert all(p.read(a, PAGE_SIZE) == d for a, d in pages.items())
            continue
        finally:
            shim.calloc_shim_arm(-1, 0)
        out["forked_at"] = k
        assert all(c.read(a, PAGE_SIZE) == d for a, d in pages.items())
        c.exit()
        break
    out["heap_growth"] = heap() - heap0
    # a write that needs new page tables: ENOMEM twice (the retry after the
    # OOM notifiers fails too) leaves nothing behind
    for k in range(3):
        a = 7 << 33
        p.mmap(4 * PAGE_SIZE, addr=a + (1 << 21) - 2 * PAGE_SIZE)
        shim.calloc_shim_arm(k, 2)
        try:
            p.write(a + (1 << 21) - 2 * PAGE_SIZE, b"w" * (4 * PAGE_SIZE))
        except OSError as e:
            assert e.errno == errno.ENOMEM
            out["write_failures"] += 1
            assert m.meminfo() == before
        finally:
            shim.calloc_shim_arm(-1, 0)
        m.check()
        p.munmap(a + (1 << 21) - 2 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert all(p.read(a, PAGE_SIZE) == d for a, d in pages.items())
    c = p.fork()
    assert all(c.read(a, PAGE_SIZE) == d for a, d in pages.items())
    m.check()
    print(json.dumps(out))
""")


def _sanitized():
    return "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif(_sanitized(), reason="calloc cannot be interposed under ASan "
                    "(libasan must come first in LD_PRELOAD and owns calloc)")
def test_page_table_allocation_failing_at_every_point_of_a_fork(tmp_path):
    """fork needs no frames but page tables: make the k-th page-table
    calloc fail for every k until the fork succeeds.  Each failed fork
    leaves no child, no frame, no leaked page table, and every page of the
    parent intact; so does a write whose page tables cannot be allocated."""
    shim = tmp_path / "calloc_shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
                    str(shim), os.path.join(HERE, "calloc_shim.c")], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", PT_SCRIPT, str(shim)], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # the child needs a top table, 4 middle tables and 24 leaves: 29 callocs
    assert out["fork_failures"] == out["forked_at"] >= 29
    assert out["write_failures"] == 3
    assert out["heap_growth"] < 64 * 1024, out
