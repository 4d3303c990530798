"""The generic balloon (include/linux/balloon_compaction.h and
mm/balloon_compaction.c) that cmm.c keeps its loaned pages in.

Data structures
---------------
BalloonDevInfo (struct balloon_dev_info)
  pages           the balloon page list: page frame numbers of the Machine,
                  in list order.  balloon_page_insert() adds at the head and
                  dequeue takes from the head, so the page inflated last is
                  the first deflated (an OrderedDict whose *end* is the head).
  isolated_pages  pages taken off the list by compaction (isolate) and not
                  yet migrated or put back.  While some are isolated,
                  balloon_page_dequeue() can come back empty-handed although
                  the balloon is not empty.
  pages_lock      protects pages/isolated_pages.  Never held while calling
                  into the Machine or the hypervisor, so the Machine's lock
                  (held when its OOM notifiers run) can't deadlock with it.
  migratepage     the driver's callback (cmm_migratepage)
  inode           the anon inode of the driver's pseudo filesystem (002);
                  None until cmm_balloon_compaction_init() sets it
  bug_on_empty    True: dequeue from a balloon with no page at all raises
                  BalloonBug, as the kernel's BUG() does.  False (default):
                  it logs a warning, counts it in ``empty_dequeues`` and
                  returns None.  cmm.c's OOM notifier asks for oom_kb worth
                  of pages whatever the balloon holds, so with the kernel's
                  generic balloon an OOM on a guest with fewer loaned pages
                  than that would BUG(); the default lets it free what there
                  is instead, which is what cmm.c means to do.
  empty_dequeues  dequeues that found the balloon empty (see bug_on_empty)
  vmstat          the balloon's vm event counters and page count:
                    nr_balloon_pages   pages the balloon owns now (on the list
                                       or isolated)
                    balloon_inflate    pages ever enqueued
                    balloon_deflate    pages ever dequeued
                    balloon_migrate    pages migrated successfully

Compaction
----------
balloon_compact() is what the compaction core does to a balloon: isolate
pages in batches of COMPACT_CLUSTER_MAX, get a free frame for each, call
balloon_page_migrate() (the driver's migratepage), and on failure free the
new frame and put the old page back; on success the old frame is freed.
"""
import errno
import logging
import threading
from collections import OrderedDict

log = logging.getLogger("cmm")

COMPACT_CLUSTER_MAX = 32      # pages isolated per batch (SWAP_CLUSTER_MAX)
MIGRATEPAGE_SUCCESS = 0

# enum migrate_mode
MIGRATE_ASYNC = 0
MIGRATE_SYNC_LIGHT = 1
MIGRATE_SYNC = 2
MIGRATE_SYNC_NO_COPY = 3


class BalloonBug(RuntimeError):
    """BUG(): the balloon lost track of its pages."""


class BalloonDevInfo:
    """struct balloon_dev_info, see the module comment."""

    def __init__(self, bug_on_empty=False):
        self.bug_on_empty = bug_on_empty
        self.empty_dequeues = 0
        self.pages = OrderedDict()
        self.isolated_pages = 0
        self._isolated = set()        # which pfns are isolated (PageIsolated)
        self.pages_lock = threading.Lock()
        self.migratepage = None
        self.inode = None
        self.vmstat = dict(nr_balloon_pages=0, balloon_inflate=0,
                           balloon_deflate=0, balloon_migrate=0)

    def __len__(self):
        """Pages on the list (not counting isolated ones)."""
        return len(self.pages)

    def owned(self):
        """Every pfn the balloon owns: on the list or isolated."""
        with self.pages_lock:
            return set(self.pages) | set(self._isolated)


def balloon_devinfo_init(b):
    """balloon_devinfo_init(): an empty balloon."""
    with b.pages_lock:
        b.pages.clear()
        b._isolated.clear()
        b.isolated_pages = 0
        b.migratepage = None
        b.inode = None


def balloon_page_alloc(machine):
    """balloon_page_alloc(): a free frame of the Machine for the balloon, or
    None when none is free.  Like __GFP_NORETRY it does not run the OOM
    notifiers (Machine.balloon_page_alloc never does)."""
    try:
        return machine.balloon_page_alloc()
    except OSError as e:
        if e.errno == errno.ENOMEM:
            return None
        raise


def balloon_page_insert(b, pfn):
    """balloon_page_insert(): put ``pfn`` at the head of the list.  Caller
    holds pages_lock."""
    b.pages[pfn] = None
    b.vmstat["nr_balloon_pages"] += 1


def balloon_page_delete(b, pfn):
    """balloon_page_delete(): the page leaves the balloon; an isolated page
    is only forgotten (it is on no list).  Caller holds pages_lock."""
    if pfn in b._isolated:
        b._isolated.discard(pfn)
    else:
        del b.pages[pfn]
    b.vmstat["nr_balloon_pages"] -= 1


def balloon_page_enqueue(b, pfn):
    """balloon_page_enqueue(): a newly allocated page joins the balloon."""
    with b.pages_lock:
        balloon_page_insert(b, pfn)
        b.vmstat["balloon_inflate"] += 1


def balloon_page_dequeue(b):
    """balloon_page_dequeue(): take the page at the head of the list off the
    balloon and return its pfn.  Returns None if the list is empty but some
    pages are isolated.  If the balloon has no page at all the kernel BUG()s
    (the caller's accounting is wrong): BalloonBug with bug_on_empty, else a
    warning and None."""
    with b.pages_lock:
        if b.pages:
            pfn, _ = b.pages.popitem(last=True)
            b.vmstat["nr_balloon_pages"] -= 1
            b.vmstat["balloon_deflate"] += 1
            return pfn
        if b.isolated_pages:
            return None
        b.empty_dequeues += 1
    if b.bug_on_empty:
        raise BalloonBug("balloon_page_dequeue: balloon is empty, pages lost")
    log.warning("balloon_page_dequeue: balloon is empty (the kernel would BUG() here)")
    return None


def balloon_page_isolate(b, pfn):
    """balloon_page_isolate(): take ``pfn`` off the list for migration.
    False if it is not on the list (already isolated, or not a balloon page)."""
    with b.pages_lock:
        if pfn not in b.pages:
            return False
        del b.pages[pfn]
        b._isolated.add(pfn)
        b.isolated_pages += 1
        return True


def balloon_page_putback(b, pfn):
    """balloon_page_putback(): an isolated page that was not migrated goes
    back on the list."""
    with b.pages_lock:
        if pfn not in b._isolated:
            raise BalloonBug(f"putback of pfn {pfn} that is not isolated")
        b._isolated.discard(pfn)
        b.pages[pfn] = None
        b.isolated_pages -= 1


def balloon_page_migrate(b, newpfn, pfn, mode=MIGRATE_SYNC):
    """balloon_page_migrate(): hand an isolated page to the driver's
    migratepage.  Returns MIGRATEPAGE_SUCCESS or a negative errno."""
    if mode == MIGRATE_SYNC_NO_COPY:
        return -errno.EINVAL
    if pfn not in b._isolated:
        raise BalloonBug(f"migrate of pfn {pfn} that is not isolated")
    if b.migratepage is None:
        return -errno.EAGAIN
    rc = b.migratepage(b, newpfn, pfn, mode)
    if rc == MIGRATEPAGE_SUCCESS:
        with b.pages_lock:
            b.vmstat["balloon_migrate"] += 1
    return rc


class CompactResult:
    """What one balloon_compact() run did.

    Fields:
      migrated   pages moved to a new frame
      failed     {errno: pages} that stayed where they were
      moves      [(old_pfn, new_pfn)] in order
    """

    def __init__(self):
        self.migrated = 0
        self.failed = {}
        self.moves = []

    @property
    def first_error(self):
        """The errno of the first failure, or 0."""
        return next(iter(self.failed), 0)


def balloon_compact(b, machine, mode=MIGRATE_SYNC, batch=COMPACT_CLUSTER_MAX):
    """Migrate every page on the balloon list once (what a full compaction
    of the zones does to a balloon).  Returns a CompactResult."""
    res = CompactResult()
    with b.pages_lock:
        todo = list(reversed(b.pages))           # head first
    for i in range(0, len(todo), batch):
        isolated = [pfn for pfn in todo[i:i + batch] if balloon_page_isolate(b, pfn)]
        for pfn in isolated:
            newpfn = balloon_page_alloc(machine)
            if newpfn is None:
                balloon_page_putback(b, pfn)
                res.failed[errno.ENOMEM] = res.failed.get(errno.ENOMEM, 0) + 1
                continue
            rc = balloon_page_migrate(b, newpfn, pfn, mode)
            if rc != MIGRATEPAGE_SUCCESS:
                machine.balloon_page_free(newpfn)
                balloon_page_putback(b, pfn)
                res.failed[-rc] = res.failed.get(-rc, 0) + 1
                continue
            machine.balloon_page_free(pfn)        # the old page's last reference
            res.migrated += 1
            res.moves.append((pfn, newpfn))
    return res
