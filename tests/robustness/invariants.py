"""The invariants every robustness test checks, from outside the core.

check_system(machine, procs, driver, direct) verifies, in this order:

  1. Machine.check(): the core recomputes every counter and link itself.
  2. Every live process reads exactly what its ModelProcess says, over
     every mapped run, and the page before and after each run is unmapped
     (SegmentationFault, errno EFAULT).
  3. Page tables against the model and the counters, recomputed here in
     Python from p.ptes(), p.rmap_items() and ksm.stable_nodes():
       - rmap_items and KSM zero pages sit only in VM_MERGEABLE pages (a
         KSM frame may also be mapped elsewhere: a fork child's copy of a
         page its parent's KSM merged, exactly as in Linux, whose
         write_protect_page accepts a page mapped by several processes);
       - a stable rmap_item's pte maps its stable node's KSM frame;
       - pages_shared + pages_sharing == the stable rmap_items (the
         mappings of KSM pages that carry rmap_items), pages_shared the
         stable nodes holding any, chains and dups as listed;
       - rmap_items, ksm_zero_pages, per-process ksm_stat and rss_pages
         add up; pages_volatile is never negative;
       - used_pages == the distinct frames mapped by live processes,
         ksm_pages == the distinct KSM frames among them.
  4. Frames: free + used + balloon == total; the balloon's frames (the
     driver's plus ``direct`` ones taken with Machine.balloon_page_alloc)
     are exactly balloon_pages and none is mapped.
  5. The CMM driver: loaned_pages == pages it owns, totalram == frames -
     loaned, and the hypervisor's record == the CMO pages of those frames
     exactly (hv loaned bytes == loaned_pages * PAGE_SIZE) as long as no
     H_PAGE_SET_ACTIVE has failed.  cmm.c ignores a failed set-active and
     stops at the first failing CMO page of the page, so after one the
     hypervisor keeps that CMO page and the page's later ones loaned while
     the guest reuses the frame: then the record may hold more than the
     balloon, but only CMO pages of frames that had a failed set-active
     (HcallWatch records them), and never less.

A failure names the process, address or counter that diverged.
"""
import errno

from ksm_engine import PR_GET_MEMORY_MERGE, SegmentationFault

from .model import PAGE_SIZE

FLAG_NONE, FLAG_PRESENT, FLAG_KSM, FLAG_ZERO = 0, 1, 3, 4


def check_reads(proc, model):
    """Every mapped run of proc reads as the model says; the pages around
    each run are unmapped."""
    for start, npages in model.runs():
        got = proc.read(start, npages * PAGE_SIZE)
        want = model.read(start, npages * PAGE_SIZE)
        if got != want:
            for i in range(npages):
                sl = slice(i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
                if got[sl] != want[sl]:
                    raise AssertionError(
                        f"{proc!r}: page {start + i * PAGE_SIZE:#x} reads "
                        f"{got[sl][:16].hex()}... expected {want[sl][:16].hex()}...")
        for probe in (start - 1, start + npages * PAGE_SIZE):
            if probe < 0 or (probe - probe % PAGE_SIZE) in model.mapped:
                continue
            try:
                proc.read(probe, 1)
            except SegmentationFault as e:
                assert e.errno == errno.EFAULT
            else:
                raise AssertionError(f"{proc!r}: {probe:#x} is mapped, the model says not")


def check_process(proc, model, nodes, frames):
    """Page tables, rmap_items and ksm_stat of one live process against the
    model.  Adds its mappings to ``frames`` (pfn -> flag).  Returns
    (rmap_items, stable items, zero ptes)."""
    zero = rss = 0
    ptes = {}
    for start, npages in model.runs():
        pfns, flags = proc.ptes(start, npages)
        for i, (pfn, fl) in enumerate(zip(pfns, flags)):
            addr = start + i * PAGE_SIZE
            ptes[addr] = (pfn, fl)
            assert fl in (FLAG_NONE, FLAG_PRESENT, FLAG_KSM, FLAG_ZERO), (addr, fl)
            if fl in (FLAG_PRESENT, FLAG_KSM):
                rss += 1
                assert frames.get(pfn, fl) == fl, f"frame {pfn} mapped both KSM and not"
                frames[pfn] = fl
            if fl == FLAG_ZERO:
                assert model.mapped[addr], (
                    f"{proc!r}: {addr:#x} maps the KSM zero page but is not VM_MERGEABLE")
            if fl == FLAG_ZERO:
                zero += 1
            if fl == FLAG_NONE:
                assert addr not in model.data or model.data[addr] == bytes(PAGE_SIZE)
    items = proc.rmap_items()
    stable = 0
    for it in items:
        a = it["address"]
        assert model.mapped.get(a), f"{proc!r}: rmap_item at {a:#x} outside VM_MERGEABLE pages"
        if it["state"] == "stable":
            stable += 1
            node = nodes.get(it["stable_node"])
            assert node is not None and node["kind"] != "chain", it
            assert ptes[a] == (node["kpfn"], FLAG_KSM), (
                f"{proc!r}: stable rmap_item at {a:#x} on node {node}, pte {ptes[a]}")
    st = proc.ksm_stat
    assert st["ksm_rmap_items"] == len(items)
    assert st["ksm_merging_pages"] == stable
    assert st["ksm_zero_pages"] == zero
    assert bool(st["ksm_merge_any"]) == model.merge_any
    assert proc.prctl(PR_GET_MEMORY_MERGE) == int(model.merge_any)
    assert proc.rss_pages == rss
    return len(items), stable, zero


def check_ksm(machine, procs):
    """Steps 2 and 3 of the module comment over every live process."""
    ksm = machine.ksm
    nodes = {n["node"]: n for n in ksm.stable_nodes()}
    frames = {}
    items = stable = zero = 0
    for proc, model in procs:
        check_reads(proc, model)
        i, s, z = check_process(proc, model, nodes, frames)
        items += i
        stable += s
        zero += z
    pages = [n for n in nodes.values() if n["kind"] != "chain"]
    kpfns = [n["kpfn"] for n in pages]
    assert len(set(kpfns)) == len(kpfns), "two stable nodes name one frame"
    for pfn in kpfns:
        assert frames.get(pfn) == FLAG_KSM, f"stable node's frame {pfn} is not a mapped KSM page"
    shared = sum(1 for n in pages if n["rmap_hlist_len"])
    sharing = sum(n["rmap_hlist_len"] - 1 for n in pages if n["rmap_hlist_len"])
    assert sum(n["rmap_hlist_len"] for n in pages) == stable
    st = ksm.stats
    info = machine.meminfo()
    if ksm.compat_2009:
        assert st["kernel_pages_allocated"] == shared
        assert st["pages_shared"] == sharing
        assert st["kernel_pages_allocated"] + st["pages_shared"] == stable
    else:
        assert st["pages_shared"] == shared and st["pages_sharing"] == sharing
        assert st["pages_shared"] + st["pages_sharing"] == stable
        assert st["stable_node_chains"] == sum(1 for n in nodes.values() if n["kind"] == "chain")
        assert st["stable_node_dups"] == sum(1 for n in nodes.values() if n["kind"] == "dup")
        assert st["ksm_zero_pages"] == zero
        assert st["rmap_items"] >= st["pages_shared"] + st["pages_sharing"] + st["pages_unshared"]
    assert st["rmap_items"] == items
    assert info["used_pages"] == len(frames), "frames used but mapped by no live process"
    assert info["ksm_pages"] == sum(1 for f in frames.values() if f == FLAG_KSM)
    return frames


class HcallWatch:
    """Records the guest frames that ever had an H_PAGE_SET_ACTIVE fail on
    one of their CMO pages (``failed_active``), by wrapping the partition's
    hcall_page_init.  Installed on a driver's partition by check_system's
    callers before anything runs."""

    def __init__(self, partition):
        from cmm.hypervisor import H_COALESCE_CAND, H_PAGE_SET_ACTIVE, H_SUCCESS

        self.failed_active = set()
        inner = partition.hcall_page_init

        def hcall_page_init(flags, addr):
            rc = inner(flags, addr)
            if rc != H_SUCCESS and flags & ~H_COALESCE_CAND == H_PAGE_SET_ACTIVE:
                self.failed_active.add(addr // PAGE_SIZE)
            return rc

        partition.hcall_page_init = hcall_page_init
        partition.hcall_watch = self


def check_hypervisor(driver):
    """Step 5 of the module comment for the driver's partition."""
    part = driver.partition
    if part is None or driver.simulate:
        return
    watch = getattr(part, "hcall_watch", None)
    sz = part.cmo_page_size
    want = {pfn * PAGE_SIZE + off for pfn in driver.balloon_pfns() for off in range(0, PAGE_SIZE, sz)}
    assert want <= part.loaned, "a balloon page is not loaned at the hypervisor"
    assert not want & part.stale, "a loaned page counted stale"
    leaked = part.loaned - want
    if part.calls["failed_set_active"] == 0:
        assert not leaked and part.loaned_bytes == driver.loaned_pages.read() * PAGE_SIZE
    elif watch is not None:
        stray = {a // PAGE_SIZE for a in leaked} - watch.failed_active
        assert not stray, f"hypervisor holds CMO pages of frames {sorted(stray)} never loaned"


def check_balloon(machine, frames, driver=None, direct=()):
    """Steps 4 and 5 of the module comment."""
    info = machine.meminfo()
    assert info["free_pages"] + info["used_pages"] + info["balloon_pages"] == info["nr_frames"]
    owned = set(direct)
    loaned = 0
    if driver is not None:
        mine = driver.balloon_pfns()
        assert not mine & owned, "a frame both direct and the driver's"
        owned |= mine
        loaned = driver.loaned_pages.read()
        assert loaned == len(mine)
        assert driver.b_dev_info.vmstat["nr_balloon_pages"] == loaned
        check_hypervisor(driver)
    assert info["balloon_pages"] == len(owned)
    assert info["totalram_pages"] == info["nr_frames"] - loaned
    assert all(0 <= pfn < info["nr_frames"] for pfn in owned)
    assert not owned & set(frames), "a balloon frame is mapped by a process"


def check_system(machine, procs, driver=None, direct=()):
    """Everything in the module comment.  ``procs``: [(Process, ModelProcess)]
    of the live processes."""
    machine.check()
    frames = check_ksm(machine, procs)
    check_balloon(machine, frames, driver, direct)
