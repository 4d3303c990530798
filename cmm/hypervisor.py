"""A stub of the PowerVM hypervisor side of CMO (Cooperative Memory
Overcommitment), as seen by a pSeries guest through two hcalls.

Data structures
---------------
Hypervisor      the shared memory pool (what PowerVM calls the Active Memory
                Sharing pool) and the firmware features a guest sees.  It
                holds the partitions drawing on the pool.
Partition       one LPAR's memory performance parameters and the stub's own
                record of which of the partition's CMO pages are loaned.  The
                guest driver talks to its Partition only through hcalls:

  H_GET_MPP     hcall_get_mpp() -> (rc, retbuf[9]), packed exactly as the
                real call returns it; h_get_mpp() unpacks it like
                arch/powerpc/platforms/pseries/lpar.c into MppData.
  H_PAGE_INIT   hcall_page_init(flags, addr) with H_PAGE_SET_LOANED or
                H_PAGE_SET_ACTIVE (optionally | H_COALESCE_CAND) on one CMO
                page of ``cmo_page_size`` bytes at guest-physical ``addr``.

The loan request
----------------
``loan_target`` is what the hypervisor wants the partition to have loaned in
total (bytes).  H_GET_MPP reports ``loan_request = loan_target - loaned``
where ``loaned`` is the stub's own count of loaned CMO pages: positive asks
the guest for more, negative gives memory back, and it falls toward 0 as the
driver loans.  ``backing_mem`` is the partition's logical memory minus what
it has loaned (what the pool actually backs).

Fault injection
---------------
fail_page_hcalls(after, count, rc): the next ``after`` H_PAGE_INIT calls run
normally, the ``count`` after those fail with ``rc`` and change nothing.
fail_get_mpp(count, rc): the next ``count`` H_GET_MPP calls fail.

A failed H_PAGE_SET_ACTIVE is ignored by cmm.c (cmm_free_pages and
cmm_migratepage discard plpar_page_set_active()'s result), so after one the
stub still holds a page the guest has taken back: ``stale_bytes`` counts
such CMO pages (loaned here, last touched by a failed set-active), the one
way the stub's record and the driver's loaned count can legitimately part.
"""
import threading
from dataclasses import dataclass, field

from ksm_engine import PAGE_SIZE

from .numbers import whole_number

# hcall opcodes (arch/powerpc/include/asm/hvcall.h)
H_PAGE_INIT = 0x2C
H_SET_MPP = 0x2D0
H_GET_MPP = 0x2D4

# hcall return codes
H_SUCCESS = 0
H_BUSY = 1
H_HARDWARE = -1
H_FUNCTION = -2
H_PRIVILEGE = -3
H_PARAMETER = -4

# H_PAGE_INIT flags (IBM bit numbering: bit 0 is the most significant)
H_PAGE_STATE_CHANGE = 1 << (63 - 28)
H_PAGE_UNUSED = (1 << (63 - 29)) | (1 << (63 - 30))
H_PAGE_SET_UNUSED = H_PAGE_STATE_CHANGE | H_PAGE_UNUSED
H_PAGE_SET_LOANED = H_PAGE_SET_UNUSED | (1 << (63 - 31))
H_PAGE_SET_ACTIVE = H_PAGE_STATE_CHANGE
H_COALESCE_CAND = 1 << (63 - 42)

# Partition.calls: hcalls made, and those that failed
HCALL_COUNTERS = ("page_init", "set_loaned", "set_active", "get_mpp",
                  "failed_page_init", "failed_set_active", "failed_get_mpp")

_STATE_FLAGS = (H_PAGE_SET_LOANED, H_PAGE_SET_ACTIVE, H_PAGE_SET_UNUSED)

U64 = (1 << 64) - 1


def _s64(v):
    v &= U64
    return v - (1 << 64) if v >> 63 else v


@dataclass
class MppData:
    """struct hvcall_mpp_data: what h_get_mpp() hands the guest (bytes)."""
    entitled_mem: int = 0            # I/O entitled memory
    mapped_mem: int = 0              # I/O entitlement currently mapped (-1: n/a)
    group_num: int = 0               # memory group number (16 bits)
    pool_num: int = 0                # shared memory pool number (16 bits)
    mem_weight: int = 0              # variable memory capacity weight, 0-255
    unallocated_mem_weight: int = 0  # weight the pool has not allotted, 0-255
    unallocated_entitlement: int = 0  # pool I/O entitlement not allotted (48 bits)
    pool_size: int = 0               # physical memory in the pool (-1: n/a)
    loan_request: int = 0            # signed: more (+) or less (-) to loan
    backing_mem: int = 0             # physical memory backing the partition now


def h_get_mpp(partition):
    """h_get_mpp(): make the hcall and unpack retbuf as lpar.c does.
    Returns (rc, MppData); the data is meaningless unless rc == H_SUCCESS."""
    rc, r = partition.hcall_get_mpp()
    d = MppData(
        entitled_mem=_s64(r[0]),
        mapped_mem=_s64(r[1]),
        group_num=(r[2] >> 2 * 8) & 0xFFFF,
        pool_num=r[2] & 0xFFFF,
        mem_weight=(r[3] >> 7 * 8) & 0xFF,
        unallocated_mem_weight=(r[3] >> 6 * 8) & 0xFF,
        unallocated_entitlement=r[3] & 0xFFFFFFFFFFFF,
        pool_size=_s64(r[4]),
        loan_request=_s64(r[5]),
        backing_mem=r[6],
    )
    return rc, d


@dataclass(eq=False)
class Partition:
    """One LPAR in the pool.

    Fields (bytes unless said otherwise):
      hv              the Hypervisor (pool) it belongs to
      lpar_id         partition number
      logical_mem     memory the guest sees (its RAM)
      entitled_mem    I/O entitled memory
      mapped_mem      I/O entitlement mapped now (-1 = not reported)
      group_num       memory group number
      mem_weight      variable memory capacity weight (0-255)
      loan_target     what the hypervisor wants loaned in total
      loaned          set of loaned CMO page addresses (the stub's record)
      coalesce_cand   CMO pages the guest marked H_COALESCE_CAND
      stale           loaned CMO pages whose last H_PAGE_INIT was a failed
                      H_PAGE_SET_ACTIVE (the guest took them back anyway)
      calls           per-hcall counters: page_init, set_loaned, set_active,
                      get_mpp, failed_page_init, failed_set_active,
                      failed_get_mpp
      _page_fault     [after, count, rc] of pending H_PAGE_INIT failures
      _mpp_fault      [count, rc] of pending H_GET_MPP failures
      memory          the pool's record of where the partition's pages are
                      (cmm.paging.PartitionMemory), None outside a pool:
                      told of every page loaned
    """

    hv: object = field(repr=False)
    lpar_id: int
    logical_mem: int
    entitled_mem: int
    mapped_mem: int
    group_num: int
    mem_weight: int
    loan_target: int = 0
    loaned: set = field(default_factory=set, repr=False)
    coalesce_cand: set = field(default_factory=set, repr=False)
    stale: set = field(default_factory=set, repr=False)
    calls: dict = field(default_factory=lambda: dict.fromkeys(HCALL_COUNTERS, 0), repr=False)
    _page_fault: list = field(default=None, repr=False)
    _mpp_fault: list = field(default=None, repr=False)
    memory: object = field(default=None, repr=False)

    # -- what the hypervisor side sets and reads ------------------------
    def set_loan_target(self, nbytes):
        """What the hypervisor wants loaned in total, in bytes (>= 0)."""
        nbytes = whole_number(nbytes, "loan target")
        if nbytes < 0:
            raise ValueError("loan target must be >= 0")
        self.loan_target = nbytes

    @property
    def cmo_page_size(self):
        return self.hv.cmo_page_size

    @property
    def loaned_bytes(self):
        """Bytes of this partition the stub holds as loaned."""
        return len(self.loaned) * self.hv.cmo_page_size

    @property
    def loaned_kb(self):
        return self.loaned_bytes // 1024

    @property
    def stale_bytes(self):
        return len(self.stale) * self.hv.cmo_page_size

    @property
    def loan_request(self):
        """Signed bytes: loan_target minus what is loaned now."""
        return self.loan_target - self.loaned_bytes

    @property
    def backing_mem(self):
        return max(0, self.logical_mem - self.loaned_bytes)

    def fail_page_hcalls(self, after=0, count=1, rc=H_HARDWARE):
        """Let ``after`` H_PAGE_INIT calls succeed, then fail ``count``."""
        after, count = whole_number(after, "after"), whole_number(count, "count")
        if after < 0 or count < 0:
            raise ValueError("after and count must be >= 0")
        with self.hv.lock:
            self._page_fault = [after, count, rc] if count else None

    def fail_get_mpp(self, count=1, rc=H_HARDWARE):
        """Fail the next ``count`` H_GET_MPP calls with ``rc``."""
        count = whole_number(count, "count")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self.hv.lock:
            self._mpp_fault = [count, rc] if count else None

    # -- the hcalls -------------------------------------------------------
    def _retbuf(self):
        hv = self.hv
        r = [0] * 9
        r[0] = self.entitled_mem & U64
        r[1] = self.mapped_mem & U64
        r[2] = ((self.group_num & 0xFFFF) << 2 * 8) | (hv.pool_num & 0xFFFF)
        r[3] = (((self.mem_weight & 0xFF) << 7 * 8)
                | ((hv.unallocated_mem_weight & 0xFF) << 6 * 8)
                | (hv.unallocated_entitlement & 0xFFFFFFFFFFFF))
        r[4] = hv.pool_size & U64
        r[5] = self.loan_request & U64
        r[6] = self.backing_mem & U64
        return r

    def hcall_get_mpp(self):
        """H_GET_MPP: (rc, retbuf[9]).  Without CMO: H_FUNCTION."""
        with self.hv.lock:
            self.calls["get_mpp"] += 1
            if not self.hv.cmo:
                return H_FUNCTION, [0] * 9
            if self._mpp_fault:
                self._mpp_fault[0] -= 1
                rc = self._mpp_fault[1]
                if self._mpp_fault[0] <= 0:
                    self._mpp_fault = None
                self.calls["failed_get_mpp"] += 1
                return rc, [0] * 9
            return H_SUCCESS, self._retbuf()

    def mpp(self):
        """The MppData the guest would see, without making an hcall (no
        fault injection, no counting): for rendering."""
        with self.hv.lock:
            r = self._retbuf()
        return h_get_mpp(_Fixed(r))[1]

    def hcall_page_init(self, flags, addr):
        """H_PAGE_INIT on the CMO page at guest-physical ``addr``.

        Returns H_SUCCESS, H_PARAMETER (unknown flags, address not CMO-page
        aligned or outside the partition), H_FUNCTION (no CMO) or the rc of
        an injected failure.  A failed call changes nothing."""
        hv = self.hv
        with hv.lock:
            self.calls["page_init"] += 1
            if not hv.cmo:
                return H_FUNCTION
            state = flags & ~H_COALESCE_CAND
            if state not in _STATE_FLAGS:
                return H_PARAMETER
            if addr < 0 or addr >= self.logical_mem or addr % hv.cmo_page_size:
                return H_PARAMETER
            if state == H_PAGE_SET_LOANED:
                self.calls["set_loaned"] += 1
            elif state == H_PAGE_SET_ACTIVE:
                self.calls["set_active"] += 1
            f = self._page_fault
            if f:
                if f[0] > 0:
                    f[0] -= 1
                else:
                    f[1] -= 1
                    if f[1] <= 0:
                        self._page_fault = None
                    self.calls["failed_page_init"] += 1
                    if state == H_PAGE_SET_ACTIVE:
                        self.calls["failed_set_active"] += 1
                        if addr in self.loaned:
                            self.stale.add(addr)
                    return f[2]
            self.stale.discard(addr)
            if state == H_PAGE_SET_LOANED:
                self.loaned.add(addr)
                if self.memory is not None:
                    self.memory.loaned_page(addr)
            else:
                self.loaned.discard(addr)
            if flags & H_COALESCE_CAND:
                self.coalesce_cand.add(addr)
            else:
                self.coalesce_cand.discard(addr)
            return H_SUCCESS


class _Fixed:
    """A fake partition returning a fixed retbuf (for Partition.mpp())."""

    def __init__(self, r):
        self._r = r

    def hcall_get_mpp(self):
        return H_SUCCESS, self._r


@dataclass(eq=False)
class Hypervisor:
    """The memory pool and firmware the partitions share.

    Fields:
      cmo                     FW_FEATURE_CMO: the firmware offers CMO
      cmo_page_size           bytes per CMO page (cmo_get_page_size()); a
                              power of two from 256 to PAGE_SIZE
      pool_num                shared memory pool number
      pool_size               physical memory in the pool (bytes)
      io_entitlement          I/O entitled memory the pool can hand out
      unallocated_mem_weight  pool weight not allotted to partitions (0-255)
      cmo_primary_psp, cmo_secondary_psp   paging service partitions (lparcfg)
      partitions              lpar_id -> Partition
      lock                    serialises hcalls (one hypervisor, many CPUs)
    """

    pool_size: int = 4 << 30
    cmo: bool = True
    cmo_page_size: int = 4096
    pool_num: int = 0
    io_entitlement: int = 256 << 20
    unallocated_mem_weight: int = 0
    cmo_primary_psp: int = 1
    cmo_secondary_psp: int = -1
    partitions: dict = field(default_factory=dict, init=False, repr=False)
    lock: object = field(default_factory=threading.RLock, init=False, repr=False)

    def __post_init__(self):
        cps = whole_number(self.cmo_page_size, "cmo_page_size")
        if cps < 256 or cps > PAGE_SIZE or cps & (cps - 1):
            raise ValueError(
                f"cmo_page_size must be a power of two from 256 to {PAGE_SIZE}, not {self.cmo_page_size}")
        self.cmo = bool(self.cmo)
        self.cmo_page_size = cps

    def add_partition(self, logical_mem, lpar_id=None, entitled_mem=64 << 20,
                      mapped_mem=0, group_num=32768, mem_weight=128):
        """Create a partition of ``logical_mem`` bytes in the pool."""
        with self.lock:
            if lpar_id is None:
                lpar_id = max(self.partitions, default=0) + 1
            if lpar_id in self.partitions:
                raise ValueError(f"partition {lpar_id} exists")
            if not 0 <= mem_weight <= 255:
                raise ValueError("mem_weight is 0-255")
            p = Partition(self, lpar_id, int(logical_mem), entitled_mem,
                          mapped_mem, group_num, mem_weight)
            self.partitions[lpar_id] = p
            return p

    @property
    def unallocated_entitlement(self):
        """Pool I/O entitlement not yet given to a partition."""
        return max(0, self.io_entitlement - sum(p.entitled_mem for p in self.partitions.values()))

    @property
    def loaned_bytes(self):
        """Everything loaned to the pool by all partitions."""
        return sum(p.loaned_bytes for p in self.partitions.values())

    def lparcfg(self, partition):
        """The CMO lines of /proc/powerpc/lparcfg for ``partition`` (the
        parse_mpp_data() and pseries_cmo_data() parts), as text."""
        d = partition.mpp()
        out = [f"entitled_memory={d.entitled_mem}"]
        if d.mapped_mem != -1:
            out.append(f"mapped_entitled_memory={d.mapped_mem}")
        out += [
            f"entitled_memory_group_number={d.group_num}",
            f"entitled_memory_pool_number={d.pool_num}",
            f"entitled_memory_weight={d.mem_weight}",
            f"unallocated_entitled_memory_weight={d.unallocated_mem_weight}",
            f"unallocated_io_mapping_entitlement={d.unallocated_entitlement}",
        ]
        if d.pool_size != -1:
            out.append(f"entitled_memory_pool_size={d.pool_size} bytes")
        out += [
            f"entitled_memory_loan_request={d.loan_request}",
            f"backing_memory={d.backing_mem} bytes",
            f"cmo_enabled={int(self.cmo)}",
        ]
        if self.cmo:
            out += [
                "cmo_faults=0",
                "cmo_fault_time_usec=0",
                f"cmo_primary_psp={self.cmo_primary_psp}",
                f"cmo_secondary_psp={self.cmo_secondary_psp}",
                f"cmo_page_size={self.cmo_page_size}",
            ]
        return "\n".join(out) + "\n"
