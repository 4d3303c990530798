"""Everything at once, for real: ksmd's thread and the CMM driver's thread
run while several Python threads write, read, fork, exit, madvise and
prctl their own processes, and a "chaos" thread turns KSM knobs (run=2
included), moves the hypervisor's target, compacts the balloon and calls
the OOM chain.

Each worker owns its processes and a ModelProcess per process, and after
every operation re-reads all of its memory: a merge, an unmerge, a balloon
move or an OOM in another thread must never show.  Writes are drawn from a
small alphabet of pages shared by all workers, so ksmd merges across
threads all the time; the machine is small, so the balloon and the writers
run it out of frames (ENOMEM after the OOM notifiers: the model stays as it
was).

No timing is asserted.  Threads stop after a number of operations and once
ksmd and the cmm thread have both made progress; every join has a limit,
and a thread still alive after it fails the test as a deadlock.  Once all
is stopped, invariants.check_system() checks the whole machine.
"""
import errno
import random
import threading
import traceback

from cmm import CmmDriver, Hypervisor, RealClock, SimClock
from ksm_engine import (MADV_MERGEABLE, MADV_UNMERGEABLE, PR_SET_MEMORY_MERGE, Machine,
                        SegmentationFault)

from .invariants import HcallWatch, check_reads, check_system
from .model import PAGE_SIZE, ModelProcess, pattern_page, unique_page
from .profiles import LONG

JOIN_LIMIT = 120            # seconds a thread may take to finish once asked
OPS = 1500 if LONG else 250  # operations per worker
WORKERS = 4


class Worker(threading.Thread):
    """One user thread: its own processes and their models (``procs``)."""

    def __init__(self, m, index, errors):
        super().__init__(name=f"worker{index}", daemon=True)
        self.m = m
        self.rng = random.Random(index)
        self.index = index
        self.errors = errors
        self.procs = []      # [(Process, ModelProcess)]
        self.ops = 0
        self.enomem = 0

    def run(self):
        try:
            for _ in range(OPS):
                self.step()
                self.ops += 1
                for p, mp in self.procs:
                    check_reads(p, mp)
        except BaseException:
            self.errors.append(f"{self.name}:\n{traceback.format_exc()}")

    def pick(self):
        return self.procs[self.rng.randrange(len(self.procs))]

    def store(self, p, mp, addr, data):
        try:
            p.write(addr, data)
        except SegmentationFault:
            assert not mp.covered(addr, len(data))
            return
        except OSError as e:
            assert e.errno == errno.ENOMEM, e
            self.enomem += 1
            return
        mp.write(addr, data)

    def step(self):
        rng = self.rng
        if not self.procs or (len(self.procs) < 4 and rng.random() < 0.1):
            p, mp = self.m.spawn(name=f"w{self.index}"), ModelProcess()
            npages = rng.randint(4, 48)
            a = p.mmap(npages * PAGE_SIZE)
            mp.mmap(a, npages)
            if rng.random() < 0.5:
                p.prctl(PR_SET_MEMORY_MERGE, 1)
                mp.merge_any = True
                mp.set_mergeable(a, npages, True)
            else:
                p.madvise(a, npages * PAGE_SIZE, MADV_MERGEABLE)
                mp.set_mergeable(a, npages, True)
            self.procs.append((p, mp))
            return
        p, mp = self.pick()
        pages = sorted(mp.mapped)
        op = rng.random()
        if not pages:
            p.exit()
            self.procs.remove((p, mp))
        elif op < 0.45:                                   # duplicate pages
            at = rng.choice(pages)
            data = b"".join(pattern_page(rng.choice([0, 1, 1, 2, 4, 5, 7]))
                            for _ in range(rng.randint(1, 6)))
            self.store(p, mp, at, data)
        elif op < 0.55:                                   # a few unique bytes
            at = rng.choice(pages) + rng.randrange(PAGE_SIZE)
            self.store(p, mp, at, rng.randbytes(rng.randint(1, 64)))
        elif op < 0.62:                                   # many unique pages
            at = rng.choice(pages)
            n = rng.randint(1, 40)
            self.store(p, mp, at, b"".join(unique_page((self.index << 32) + self.ops * 64 + k)
                                            for k in range(n)))
        elif op < 0.63:                                   # more than the machine has
            n = self.m.nr_frames + 1
            a = p.mmap(n * PAGE_SIZE)
            try:
                p.write(a, b"\x5a" * (n * PAGE_SIZE))
            except OSError as e:
                assert e.errno == errno.ENOMEM
                self.enomem += 1
            else:
                raise AssertionError("a write of more pages than frames succeeded")
            assert p.read(a + n * PAGE_SIZE - 1, 1) == b"\0"
            p.munmap(a, n * PAGE_SIZE)
        elif op < 0.70 and len(self.procs) < 5:
            self.procs.append((p.fork(), mp.fork()))
        elif op < 0.76:
            p.exit()
            self.procs.remove((p, mp))
        elif op < 0.86:
            self.madvise(p, mp, rng.choice(pages), rng.randint(1, 8),
                         rng.choice([MADV_MERGEABLE, MADV_UNMERGEABLE]))
        elif op < 0.92:
            on = rng.random() < 0.5
            try:
                p.prctl(PR_SET_MEMORY_MERGE, int(on))
            except OSError as e:
                assert e.errno == errno.ENOMEM and not on
                self.enomem += 1
                for q in mp.mapped:         # ksm_disable_merge_any() rolled back
                    mp.mapped[q] = True
                return
            if on or mp.merge_any:
                mp.merge_any = on
                for q in mp.mapped:
                    mp.mapped[q] = on
        elif op < 0.97:
            at = rng.choice(pages)
            n = rng.randint(1, 4)
            p.munmap(at, n * PAGE_SIZE)
            mp.munmap(at, n)
        else:
            n = rng.randint(1, 16)
            a = p.mmap(n * PAGE_SIZE)
            mp.mmap(a, n)

    def madvise(self, p, mp, addr, npages, advice):
        try:
            p.madvise(addr, npages * PAGE_SIZE, advice)
        except OSError as e:
            assert e.errno == errno.ENOMEM
            if advice == MADV_UNMERGEABLE:   # partly done: adopt the flags
                for k in range(npages):
                    q = addr + k * PAGE_SIZE
                    if q in mp.mapped:
                        assert p.area_at(q).mergeable in (False, mp.mapped[q])
                        mp.mapped[q] = p.area_at(q).mergeable
                return
        mp.set_mergeable(addr, npages, advice == MADV_MERGEABLE)


class Chaos(threading.Thread):
    """Knobs, hypervisor targets, compaction, OOM calls, until told to stop."""

    KNOBS = [("max_page_sharing", "2"), ("max_page_sharing", "256"), ("use_zero_pages", "1"),
             ("use_zero_pages", "0"), ("smart_scan", "0"), ("smart_scan", "1"),
             ("pages_to_scan", "50"), ("pages_to_scan", "400"), ("run", "2"), ("run", "1"),
             ("run", "1"), ("merge_across_nodes", "0"), ("merge_across_nodes", "1")]

    def __init__(self, m, drv, errors):
        super().__init__(name="chaos", daemon=True)
        self.m = m
        self.drv = drv
        self.errors = errors
        self.stop = threading.Event()
        self.rng = random.Random(99)
        self.max_sharing = 0
        self.actions = 0

    def run(self):
        rng = self.rng
        try:
            while not self.stop.is_set():
                what = rng.random()
                if what < 0.4:
                    name, value = rng.choice(self.KNOBS)
                    try:
                        self.m.ksm.sysfs[name] = value
                    except OSError as e:
                        assert e.errno in (errno.EBUSY, errno.ENOMEM), (name, value, e)
                elif what < 0.65:
                    self.drv.partition.set_loan_target(rng.choice([0, 256, 512, 1024, 2048]) << 10)
                elif what < 0.7:
                    self.drv.partition.fail_page_hcalls(rng.randint(0, 200), rng.randint(1, 3))
                elif what < 0.8:
                    res = self.drv.compact()
                    assert set(res.failed) <= {errno.ENOMEM, errno.EBUSY}
                elif what < 0.85:
                    self.m.out_of_memory()
                elif what < 0.9:
                    self.drv.sysfs.write("oom_freed_kb", "0", admin=True)
                else:
                    self.m.ksm.scan(rng.randint(1, 500))   # beside ksmd's own batches
                self.max_sharing = max(self.max_sharing, self.m.ksm.stats["pages_sharing"])
                self.actions += 1
                self.stop.wait(0.002)
        except BaseException:
            self.errors.append(f"chaos:\n{traceback.format_exc()}")


def wait_for(cond, limit=JOIN_LIMIT):
    """Polls cond() until true; False if ``limit`` seconds pass first (a
    hang, never a slow machine: the limit is generous)."""
    done = threading.Event()
    deadline = threading.Timer(limit, done.set)
    deadline.daemon = True
    deadline.start()
    try:
        while not cond():
            if done.wait(0.005):
                return cond()
        return True
    finally:
        deadline.cancel()


def join_all(threads, limit=JOIN_LIMIT):
    for t in threads:
        t.join(limit)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"deadlock: {stuck} still running after {limit} s"


def test_ksmd_cmm_and_user_threads_together():
    m = Machine(ram="2MiB")     # 512 frames: the workers and the balloon run it out
    hv = Hypervisor(cmo_page_size=1024)
    drv = CmmDriver(m, hv, delay=0, oom_kb=16, min_mem_mb=0, clock=RealClock())
    HcallWatch(drv.partition)
    m.ksm.sysfs["pages_to_scan"] = "300"
    m.ksm.sysfs["sleep_millisecs"] = "1"
    m.ksm.start()
    errors = []
    workers = [Worker(m, i, errors) for i in range(WORKERS)]
    chaos = Chaos(m, drv, errors)
    try:
        chaos.start()
        for w in workers:
            w.start()
        join_all(workers)
    finally:
        chaos.stop.set()
        join_all([chaos])
    try:
        # ksmd and the cmm thread still run: the balloon follows the
        # hypervisor both ways (waited for, not timed: the limit only
        # catches a hang), while ksmd keeps scanning the workers' memory
        m.ksm.sysfs["run"] = "1"
        drv.partition.fail_page_hcalls(0, 0)
        drv.partition.set_loan_target(0)
        assert wait_for(lambda: drv.loaned_kb == 0), "the cmm thread never deflated"
        drv.sysfs.write("oom_freed_kb", "0", admin=True)
        # (CMO pages a failed set-active left loaned count toward the target)
        half = m.free_pages // 2 * PAGE_SIZE
        part = drv.partition
        part.set_loan_target(half)
        assert wait_for(lambda: half - PAGE_SIZE < part.loaned_bytes <= half), "no inflate"
        part.set_loan_target(0)
        assert wait_for(lambda: drv.loaned_kb == 0), "no deflate"
        if m.ksm.scanner.slots:
            scans = m.ksm.stats["full_scans"]
            assert wait_for(lambda: m.ksm.stats["full_scans"] >= scans + 2), "ksmd stopped"
    finally:
        stopper = threading.Thread(target=lambda: (m.ksm.stop(JOIN_LIMIT), drv.unload()),
                                   name="stopper", daemon=True)
        stopper.start()
        join_all([stopper])
    assert not errors, "\n".join(errors)
    assert not m.ksm.ksmd_running and drv.cmm_thread_ptr is None
    procs = [pm for w in workers for pm in w.procs]
    check_system(m, procs, drv)
    assert sum(w.ops for w in workers) == WORKERS * OPS
    assert sum(w.enomem for w in workers) > 0
    # what is left settles, duplicates across the workers' processes merged
    m.ksm.full_scan(3)
    check_system(m, procs, drv)
    assert max(chaos.max_sharing, m.ksm.stats["pages_sharing"]) > 0
    for p, _ in procs:
        p.exit()
    info = m.meminfo()
    assert info["free_pages"] == info["nr_frames"]


def test_oom_while_a_page_is_being_loaned():
    """The interleaving the big test hits by chance, made deterministic: the
    cmm thread has put a page on the balloon list and not yet lowered the
    managed page count when another thread's OOM notifier frees it."""
    m = Machine(ram="1MiB")
    drv = CmmDriver(m, Hypervisor(), delay=1, min_mem_mb=0, oom_kb=4, clock=SimClock())
    count = m.adjust_managed_page_count

    def oom_in_between(delta, pfn=None):
        if delta == -1:          # cmm_alloc_pages, right after balloon_page_enqueue
            assert m.out_of_memory() == 1
        return count(delta, pfn)

    m.adjust_managed_page_count = oom_in_between
    drv.partition.set_loan_target(4096)
    drv.clock.advance(1)
    assert drv.loaned_pages.read() == 0 and m.totalram_pages == m.nr_frames
    check_system(m, [], drv)
