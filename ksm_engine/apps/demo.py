"""The built-in demo: VM-like guests, KSM merging them, the CMM balloon
handing what KSM freed back to the hypervisor.

The workload needs nothing outside the package.  A Machine holds
``guests`` processes ("guest0", ...), each one MERGEABLE area of
``guest_size`` bytes laid out as a guest kernel's memory often is:

    [ common image | zero pages | volatile | unique                ]
      IMAGE_FRACTION  ZERO_FRACTION  VOLATILE_FRACTION  the rest

  common image  the same bytes in every guest (an OS image, shared
                libraries): KSM keeps one KSM page per distinct page and
                maps every guest to it (pages_shared, pages_sharing);
  zero pages    zero-filled but touched memory: one zero KSM page, or with
                use_zero_pages=1 the zero page itself (ksm_zero_pages);
                so many mappings of one content that max_page_sharing
                makes a chain of dups (stable_node_chains/dups);
  volatile      pages the guest rewrites between every two full scans:
                their checksum never holds still, so they stay
                pages_volatile;
  unique        random per guest: they end in the unstable tree
                (pages_unshared), then smart_scan skips them.

Time is simulated (ksm_engine.clock.SimClock): ksmd is the machine's own
daemon (ksm_scan_thread(), ksm/ksmd.py) running on that clock: one
ksm_do_scan(pages_to_scan) batch, then a sleep of sleep_millisecs of
simulated time; the CMM driver's thread wakes on the same clock.  After
every batch (ksmd's hook) the hypervisor stub sets its loan target to the
memory KSM has freed so far, and the balloon loans it back (CmmDriver,
cmm.c).  The
simulated time counts ksmd's sleeps only, not its CPU time, so a run gives
the same figures on every machine.  KSM runs until it has settled by the
rule of ksm_engine.settle (the convergence counters held still over two
full scans, at least three full scans), then the clock runs until the
balloon has caught up.

run_demo() returns a DemoResult of plain data (ints, strs, lists, dicts)
for the CLI to render; nothing here prints.  Also here, and shared with
estimate.py: check_fits() (refusing machines the host has not the memory
for).  Knobs are written with the core's apply_knobs (ksm/sysfs.py), whose
KnobError names the knob refused; both are importable from here.
"""
import random
import time
from dataclasses import dataclass, field

from cmm import CmmDriver, Hypervisor

from ..ksm.sysfs import KnobError, apply_knobs  # noqa: F401  (KnobError re-exported)
from ..clock import SimClock
from ..machine import PAGE_SIZE, Machine
from ..process import MADV_MERGEABLE
from ..settle import CONVERGENCE_COUNTERS, settled
from ..validate import is_int

IMAGE_FRACTION = 0.45     # pages of the common OS image, same in every guest
ZERO_FRACTION = 0.20      # zero-filled pages
VOLATILE_FRACTION = 0.01  # pages rewritten between full scans (at least one)
MIN_GUEST_PAGES = 16      # smallest guest that has every kind of page
HEADROOM = 16 << 20       # free memory the machine has beyond its guests
CMM_DELAY = 1             # the balloon thread's poll period (cmm.c delay), s
# History fields recorded after every full scan (and once before the first).
HISTORY_FIELDS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
                  "ksm_zero_pages")


def memory_available():
    """Bytes of RAM this host can still give (MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(nbytes, what):
    """MemoryError naming ``what`` when a machine of nbytes would not fit in
    the host's available memory (the arena is reserved lazily, so only
    touching it would fail, late and violently)."""
    avail = memory_available()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what} needs {nbytes >> 20} MiB but this host has only "
                          f"{avail >> 20} MiB available")


@dataclass
class DemoConfig:
    """What to run (see the module doc)."""
    guests: int = 4                 # guest processes
    guest_size: int = 256 << 20     # bytes of memory per guest
    seed: int = 2009                # content is random.Random(seed): runs repeat exactly
    knobs: dict = field(default_factory=dict)  # KSM knobs written before run=1
    max_full_scans: int = 50        # give up (settled=False) after this many

    def validate(self):
        """ValueError naming the field when a value cannot be used."""
        for name in ("guests", "guest_size", "seed", "max_full_scans"):
            v = getattr(self, name)
            if not is_int(v):
                raise ValueError(f"{name} must be an int, not {type(v).__name__}")
        if self.guests < 1:
            raise ValueError(f"guests must be at least 1, got {self.guests}")
        if self.guest_size % PAGE_SIZE:
            raise ValueError(f"guest size {self.guest_size} is not a multiple of the page size {PAGE_SIZE}")
        if self.guest_size < MIN_GUEST_PAGES * PAGE_SIZE:
            raise ValueError(f"guest size must be at least {MIN_GUEST_PAGES * PAGE_SIZE} bytes "
                             f"({MIN_GUEST_PAGES} pages), got {self.guest_size}")
        if self.max_full_scans < 1:
            raise ValueError("max_full_scans must be at least 1")
        if "run" in self.knobs:
            raise ValueError("the demo writes run itself")


@dataclass
class Layout:
    """Page counts of each region of one guest, in address order."""
    image: int
    zero: int
    volatile: int
    unique: int

    @classmethod
    def of(cls, pages):
        image = int(pages * IMAGE_FRACTION)
        zero = int(pages * ZERO_FRACTION)
        volatile = max(1, int(pages * VOLATILE_FRACTION))
        return cls(image, zero, volatile, pages - image - zero - volatile)


@dataclass
class DemoResult:
    """Everything the demo found, as plain data."""
    config: dict          # guests, guest_size, seed, knobs, layout (pages per region)
    settled: bool         # KSM settled before max_full_scans
    full_scans: int       # full scans run
    simulated_seconds: float  # simulated time at the end (ksmd's sleeps)
    seconds: float        # wall time of the whole run
    counters: dict        # machine.ksm.stats at the end
    processes: list       # per guest: name, pid, rss_pages and its ksm_stat
    memory: dict          # used pages before/after KSM, freed, percent
    balloon: dict         # the CMM driver's and the hypervisor's figures
    history: list = field(default_factory=list)  # one dict per full scan (0: before)


def _boot_guest(m, cfg, layout, rng, image, g):
    """Spawns guest g and writes its memory, region by region; returns
    (proc, addr of its area)."""
    p = m.spawn(name=f"guest{g}")
    a = p.mmap(cfg.guest_size)
    off = a
    p.write(off, image)
    off += layout.image * PAGE_SIZE
    p.fill(off, 0, layout.zero * PAGE_SIZE)   # touched, zero-filled
    off += layout.zero * PAGE_SIZE
    p.write(off, rng.randbytes(layout.volatile * PAGE_SIZE))
    off += layout.volatile * PAGE_SIZE
    p.write(off, rng.randbytes(layout.unique * PAGE_SIZE))
    p.madvise(a, cfg.guest_size, MADV_MERGEABLE)
    return p, a


def _rewrite_volatile(guests, layout, rng):
    """Every guest rewrites its volatile pages with fresh content."""
    off = (layout.image + layout.zero) * PAGE_SIZE
    for p, a in guests:
        p.write(a + off, rng.randbytes(layout.volatile * PAGE_SIZE))


def _balloon_figures(m, drv, part, totalram_before):
    vm = drv.vmstat()
    return {
        "loaned_kb": drv.loaned_kb,
        "loaned_target_kb": drv.loaned_target_kb,
        "loaned_pages": drv.loaned_pages.read(),
        "hv_loan_target_kb": part.loan_target // 1024,
        "hv_loaned_kb": part.loaned_kb,
        "totalram_kb_before": totalram_before * PAGE_SIZE // 1024,
        "totalram_kb": m.totalram_pages * PAGE_SIZE // 1024,
        "free_kb": m.free_pages * PAGE_SIZE // 1024,
        "balloon_inflate": vm.get("balloon_inflate", 0),
        "balloon_deflate": vm.get("balloon_deflate", 0),
        "polls": drv.stats["rounds"],
        "min_mem_mb": drv.min_mem_mb,
        "delay_s": drv.delay,
    }


def run_demo(cfg=None, progress=None):
    """Runs the demo (see the module doc) and returns a DemoResult.

    progress(full_scans, entry) is called after every full scan with that
    scan's history entry.  Raises ValueError for a bad DemoConfig, KnobError
    for a knob KSM refuses, MemoryError if the host lacks the memory."""
    cfg = cfg or DemoConfig()
    cfg.validate()
    t_start = time.perf_counter()
    pages = cfg.guest_size // PAGE_SIZE
    layout = Layout.of(pages)
    clock = SimClock()
    check_fits(cfg.guests * cfg.guest_size + HEADROOM + layout.image * PAGE_SIZE,
               f"{cfg.guests} guests of {cfg.guest_size >> 20} MiB")
    m = Machine(ram=cfg.guests * cfg.guest_size + HEADROOM, clock=lambda: clock.now_ms)
    apply_knobs(m, cfg.knobs)
    rng = random.Random(cfg.seed)
    image = rng.randbytes(layout.image * PAGE_SIZE)
    totalram_before = m.totalram_pages
    hv = Hypervisor(pool_size=max(4 << 30, 2 * m.nr_frames * PAGE_SIZE))
    drv = CmmDriver(m, hv, delay=CMM_DELAY, min_mem_mb=0, clock=clock)
    part = drv.partition
    ksm = m.ksm
    guests = []
    history = []

    def written():
        """Pages the booted guests have written: what they would use
        without KSM."""
        return len(guests) * pages

    def record(scans):
        st = ksm.stats
        entry = {"full_scan": scans, "t": clock.now(), "guests": len(guests)}
        entry.update((k, st[k]) for k in HISTORY_FIELDS)
        entry["balloon_loaned_pages"] = drv.loaned_pages.read()
        history.append(entry)
        return st

    conv = []                      # per full scan: guests and the convergence counters
    done = []                      # [True] once KSM has settled
    seen = []                      # [full_scans] after the last batch

    def after_batch(ksm, scanned):
        """ksmd's hook, after each batch: a full scan that ended is recorded
        (and may end the run); the guests rewrite their volatile pages and
        the next one boots; the hypervisor asks for what KSM freed."""
        if ksm.scanner.seqnr != seen[0]:                # a full scan ended
            seen[0] = ksm.scanner.seqnr
            st = record(seen[0])
            conv.append((len(guests),) + tuple(st[k] for k in CONVERGENCE_COUNTERS))
            if progress:
                progress(len(conv), history[-1])
            if len(guests) == cfg.guests and settled(conv):
                done.append(True)
            if done or len(conv) >= cfg.max_full_scans:
                ksm.stop()                              # ksmd's last batch
            else:
                _rewrite_volatile(guests, layout, rng)
                if len(guests) < cfg.guests:            # the next guest boots
                    guests.append(_boot_guest(m, cfg, layout, rng, image, len(guests)))
        part.set_loan_target(max(written() - m.used_pages, 0) * PAGE_SIZE)

    try:
        guests.append(_boot_guest(m, cfg, layout, rng, image, 0))
        record(0)
        seen.append(ksm.scanner.seqnr)
        ksm.ksmd_hooks.append(after_batch)
        ksm.start(clock)                                # ksmd: its first batch now
        clock.run_until(lambda: not ksm.ksmd_running)
        # Let the balloon catch up with the last target (a poll or two).
        clock.advance(2 * CMM_DELAY)
        history[-1]["balloon_loaned_pages"] = drv.loaned_pages.read()
        m.check()
        counters = ksm.stats
        used_before, used_after = written(), m.used_pages
        processes = [dict({"name": p.name, "pid": p.pid, "rss_pages": p.rss_pages},
                          **{k: (str(v) if k in ("ksm_merge_any", "ksm_mergeable") else v)
                             for k, v in p.ksm_stat.items()})
                     for p, _ in guests]
        balloon = _balloon_figures(m, drv, part, totalram_before)
    finally:
        ksm.stop()
        drv.unload()
    freed = used_before - used_after
    return DemoResult(
        config={"guests": cfg.guests, "guest_size": cfg.guest_size, "seed": cfg.seed,
                "knobs": dict(cfg.knobs), "pages_per_guest": pages,
                "layout": {"image": layout.image, "zero": layout.zero,
                           "volatile": layout.volatile, "unique": layout.unique}},
        settled=bool(done), full_scans=len(conv), simulated_seconds=clock.now(),
        seconds=time.perf_counter() - t_start, counters=counters, processes=processes,
        memory={"used_pages_without_ksm": used_before, "used_pages": used_after,
                "freed_pages": freed, "freed_bytes": freed * PAGE_SIZE,
                "freed_percent": round(100.0 * freed / used_before, 2)},
        balloon=balloon, history=history)
