"""Frames are given back to the OS in batches (process_madvise on oneself
where the kernel has it): a forked Python child that frees frames of an
inherited Machine must only touch its own memory, never the parent's."""
import os

from ksm_engine import PAGE_SIZE, Machine


def test_forked_child_releases_only_its_own_memory():
    m = Machine(ram="8MiB")
    p = m.spawn()
    a = p.mmap(64 * PAGE_SIZE)
    p.write(a, b"\x01" * 64 * PAGE_SIZE)
    p.munmap(a, 32 * PAGE_SIZE)          # a release: the batch path is set up
    b = p.mmap(64 * PAGE_SIZE)
    p.write(b, b"\x02" * 64 * PAGE_SIZE)
    pid = os.fork()
    if pid == 0:                          # child: free every frame of b
        try:
            p.munmap(b, 64 * PAGE_SIZE)
            os._exit(0 if m.free_pages == m.nr_frames - 32 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert p.read(b, 64 * PAGE_SIZE) == b"\x02" * 64 * PAGE_SIZE
    assert p.read(a + 32 * PAGE_SIZE, 32 * PAGE_SIZE) == b"\x01" * 32 * PAGE_SIZE
    m.check()
