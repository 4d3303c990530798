/*
 * arena.c - the machine: its frames, their free list, giving freed frames
 * back to the operating system, the balloon's frames, the stable node
 * pool and the rmap_item chunks.
 *
 * A frame is in exactly one state: free (on the free list, or not yet
 * used at all: pfn >= fresh), used (mapped by one or more ptes; maybe a KSM
 * page) or balloon (held by the balloon driver).  free_frames + used_frames
 * + balloon_frames == nr_frames.  Frames from `fresh` on have never been
 * touched, records included; they join the free list one by one, in
 * address order, when it runs empty, so the list always holds a frame
 * while any is free and the order is that of a list built up front.
 *
 * Freed frames go to the head of the free list at once and into `pending`;
 * when `pending` fills up, or at the end of each public call that frees
 * frames, ke_release_flush() madvises MADV_DONTNEED over those still free,
 * coalescing neighbours (and batching the runs into one process_madvise
 * call where the kernel allows it), so that the Python process's resident
 * memory follows the machine's own accounting without a syscall and a TLB
 * flush per frame.  A released frame reads zero (FR_ZEROED) until reused.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>


#include "internal.h"

#define PENDING_MAX 8192

static void *reserve(uint64_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/*
 * Records walked at random (rmap_items and stable nodes in tree walks, the
 * frame records) are asked to be backed by huge pages where the kernel
 * offers them (transparent_hugepage "madvise" mode): one TLB entry then
 * covers 2 MiB of them instead of 4 KiB.  Advice only: ignored elsewhere.
 * Only for machines of 256 MiB and more (a small machine's records fit the
 * TLB anyway, and there a 2 MiB page would be most of their memory).
 * KSM_ENGINE_NO_HUGEPAGES=1 in the environment leaves it out (to measure).
 */
#define HUGE_MIN_FRAMES (1u << 16) /* 256 MiB: smaller machines fit the TLB */

static void *reserve_huge(uint64_t bytes, uint64_t nr_frames)
{
    void *p = reserve(bytes);
#ifdef MADV_HUGEPAGE
    if (p && nr_frames >= HUGE_MIN_FRAMES && getenv("KSM_ENGINE_NO_HUGEPAGES") == NULL)
        madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

int pool_init(struct pool *p, uint32_t size, uint32_t capacity,
              uint64_t nr_frames)
{
    memset(p, 0, sizeof(*p));
    p->base = reserve_huge((uint64_t)size * capacity, nr_frames);
    if (!p->base)
        return -ENOMEM;
    p->size = size;
    p->capacity = capacity;
    p->top = 1; /* entry 0 means "none" */
    return 0;
}

void pool_destroy(struct pool *p)
{
    if (p->base)
        munmap(p->base, (uint64_t)p->size * p->capacity);
    p->base = NULL;
}

/* Returns a zeroed entry's index, or 0 when the pool is exhausted. */
uint32_t pool_alloc(struct pool *p)
{
    uint32_t idx = p->free_head;
    if (idx) {
        memcpy(&p->free_head, pool_at(p, idx), sizeof(uint32_t)); /* entries may be unaligned */
    } else {
        if (p->top >= p->capacity)
            return 0;
        idx = p->top++;
    }
    memset(pool_at(p, idx), 0, p->size);
    p->in_use++;
    return idx;
}

void pool_free(struct pool *p, uint32_t idx)
{
    assert(idx && idx < p->top && p->in_use);
    memset(pool_at(p, idx), 0, p->size);
    memcpy(pool_at(p, idx), &p->free_head, sizeof(uint32_t));
    p->free_head = idx;
    p->in_use--;
}

/* --- the rmap_item store (internal.h) --- */

#define ITEM_STORE_BYTES ((uint64_t)RC_CAPACITY * RC_ITEMS * sizeof(struct rmap_item))
#define CHUNK_TABLE_BYTES ((uint64_t)RC_CAPACITY * sizeof(struct rmap_chunk))

static int item_store_init(struct item_store *s, uint64_t nr_frames)
{
    memset(s, 0, sizeof(*s));
    s->base = reserve_huge(ITEM_STORE_BYTES, nr_frames);
    s->chunks = reserve(CHUNK_TABLE_BYTES);
    if (!s->base || !s->chunks)
        return -ENOMEM;
    s->top = 1; /* chunk 0 is never used: item index 0 means "none" */
    return 0;
}

static void item_store_destroy(struct item_store *s)
{
    if (s->base)
        munmap(s->base, ITEM_STORE_BYTES);
    if (s->chunks)
        munmap(s->chunks, CHUNK_TABLE_BYTES);
    s->base = NULL;
    s->chunks = NULL;
}

/*
 * Makes the rmap_item of pte (vpn & 511) of leaf, which belongs to mm and
 * has none: a zeroed item flagged RI_INUSE.  Gives the leaf a chunk first
 * if it has none.  Returns the item's index, 0 when the store is full.
 */
rmap_id item_store_alloc(ke_machine *m, struct mm_struct *mm,
                         struct pt_leaf *leaf, uint32_t vpn)
{
    struct item_store *s = &m->items;
    struct rmap_chunk *c;
    rmap_id item;

    assert(mm >= m->mms && mm - m->mms < KE_MAX_MMS);
    if (!leaf->rchunk) {
        uint32_t id = s->free_head;
        if (id) {
            s->free_head = s->chunks[id].vpn_base;
        } else {
            if (s->top >= RC_CAPACITY)
                return NO_RMAP;
            id = s->top++;
        }
        c = &s->chunks[id];
        c->leaf = leaf;
        c->vpn_base = vpn & ~(RC_ITEMS - 1);
        c->mm = (uint16_t)(mm - m->mms);
        c->nr_items = 0;
        leaf->rchunk = id;
        s->chunks_in_use++;
    }
    c = &s->chunks[leaf->rchunk];
    assert(c->leaf == leaf && c->vpn_base == (vpn & ~(RC_ITEMS - 1)));
    item.idx = (leaf->rchunk << RC_SHIFT) | (vpn & (RC_ITEMS - 1));
    assert(!item_at(m, item)->flags);
    item_at(m, item)->flags = RI_INUSE;
    c->nr_items++;
    s->in_use++;
    return item;
}

/* Frees an rmap_item (zeroed again), and its chunk with its last item. */
void item_store_free(ke_machine *m, rmap_id item)
{
    struct item_store *s = &m->items;
    struct rmap_chunk *c = item_chunk(m, item);
    assert(item.idx >> RC_SHIFT && item.idx >> RC_SHIFT < s->top && c->leaf);
    assert(item_at(m, item)->flags & RI_INUSE && c->nr_items && s->in_use);
    memset(item_at(m, item), 0, sizeof(struct rmap_item));
    s->in_use--;
    if (--c->nr_items == 0) {
        c->leaf->rchunk = 0;
        c->leaf = NULL;
        c->vpn_base = s->free_head;
        s->free_head = item.idx >> RC_SHIFT;
        s->chunks_in_use--;
    }
}

int ke_machine_new(uint64_t nr_frames, ke_machine **out)
{
    ke_machine *m;
    int err = -ENOMEM;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (nr_frames == 0 || nr_frames >= PFN_NONE - 1)
        return -EINVAL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->release_pidfd = -2;
    m->nr_frames = (uint32_t)nr_frames;
    m->arena_bytes = nr_frames * PAGE_SIZE;
    m->arena = reserve(m->arena_bytes);
    m->frames = reserve_huge(nr_frames * sizeof(struct frame), nr_frames);
    m->pending = malloc(PENDING_MAX * sizeof(uint32_t));
    m->mms = reserve((uint64_t)KE_MAX_MMS * sizeof(struct mm_struct));
    if (!m->arena || !m->frames || !m->pending || !m->mms)
        goto fail;
    m->mm_top = 1;
    /* Items: one per tracked virtual page; nodes: at most two per frame. */
    if (item_store_init(&m->items, nr_frames))
        goto fail;
    if (pool_init(&m->nodes, sizeof(struct stable_node),
                     (uint32_t)(2 * nr_frames + 16), nr_frames))
        goto fail;
    /*
     * The free list starts as frame 0 alone; the frames after it join one
     * at a time, in address order, as the list runs empty (frame_alloc).
     * So a machine costs no memory per frame before its frames are used
     * (a 15 TiB machine would otherwise touch 30 GiB of records here).
     */
    m->frames[0].count = FR_ZEROED;
    m->frames[0].aux = PFN_NONE;
    m->fresh = 1;
    m->free_head = 0;
    m->free_frames = nr_frames;
    m->cfg.max_page_sharing = 256;
    m->cfg.smart_scan = 1;
    m->cfg.prune_millisecs = 2000;
    m->zero_checksum = page_checksum(zero_page, 0);
    *out = m;
    return 0;
fail:
    ke_machine_free(m);
    return err;
}

void ke_machine_free(ke_machine *m)
{
    uint32_t i;
    if (!m)
        return;
    if (m->mms) {
        for (i = 1; i < m->mm_top; i++)
            if (m->mms[i].top)
                ke_mm_destroy(m, i);
        munmap(m->mms, (uint64_t)KE_MAX_MMS * sizeof(struct mm_struct));
    }
    prehash_free(m);
    item_store_destroy(&m->items);
    pool_destroy(&m->nodes);
    if (m->arena)
        munmap(m->arena, m->arena_bytes);
    if (m->frames)
        munmap(m->frames, (uint64_t)m->nr_frames * sizeof(struct frame));
    free(m->pending);
    if (m->release_pidfd >= 0)
        close(m->release_pidfd);
    free(m);
}

int ke_machine_counts(const ke_machine *m, struct ke_mem_counts *out)
{
    if (!m || !out)
        return -EINVAL;
    out->nr_frames = m->nr_frames;
    out->free_frames = m->free_frames;
    out->used_frames = m->used_frames;
    out->balloon_frames = m->balloon_frames;
    out->ksm_frames = m->ksm_frames;
    out->released_frames = m->released_frames;
    return 0;
}

/*
 * Fault injection: the next `after` passes through `point` succeed, then
 * `count` fail.  Returns true when this pass must fail.
 */
bool fault_fires(ke_machine *m, int point)
{
    struct fault_point *f = &m->faults[point];
    if (!f->count)
        return false;
    if (f->after) {
        f->after--;
        return false;
    }
    f->count--;
    return true;
}

int ke_fault_inject(ke_machine *m, int point, uint64_t after, uint64_t count)
{
    if (!m || point < 0 || point >= KE_FAULT_NR)
        return -EINVAL;
    m->faults[point].after = after;
    m->faults[point].count = count;
    return 0;
}

/*
 * Takes a frame off the free list for a process (state used, map count 0:
 * the caller maps it).  need_zero: the caller will not overwrite the whole
 * page, so its memory must read zero.  Returns PFN_NONE when none is free.
 */
uint32_t frame_alloc(ke_machine *m, bool need_zero)
{
    uint32_t pfn = m->free_head;
    struct frame *f;

    if (pfn == PFN_NONE)
        return PFN_NONE;
    f = &m->frames[pfn];
    assert(!(f->count & (FR_USED | FR_BALLOON)));
    m->free_head = f->aux;
    if (m->free_head == PFN_NONE && m->fresh < m->nr_frames) {
        /* the next never used frame joins the list (see ke_machine_new) */
        uint32_t next = m->fresh++;
        m->frames[next].count = FR_ZEROED;
        m->frames[next].aux = PFN_NONE;
        m->free_head = next;
    }
    if (need_zero && !(f->count & FR_ZEROED))
        memset(frame_mem(m, pfn), 0, PAGE_SIZE);
    f->count = FR_USED;
    f->aux = 0;
    m->free_frames--;
    m->used_frames++;
    return pfn;
}

/*
 * Faults in, in few system calls, the memory of the next `need` frames
 * frame_alloc() will hand out, ahead of a write that is about to take
 * them all: the kernel then fills whole runs of pages in one call instead
 * of taking a page fault on each (half the cost per page here).  Only
 * frames whose memory the OS does not hold are asked for (released ones
 * and never used ones), in runs of at least POPULATE_MIN_RUN frames.  A
 * hint: on a kernel without MADV_POPULATE_WRITE (before 5.14) or on error
 * the write faults the pages in as before.  The guess of which frames the
 * write takes can be wrong (a write that breaks COW frees frames as it
 * goes, and those are taken first): frames_populate_end(), called once
 * the write is done, gives back what was faulted in and is still free.
 */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define POPULATE_MIN_RUN 16

static void populate_run(ke_machine *m, uint32_t first, uint32_t n)
{
    if (n < POPULATE_MIN_RUN || m->nr_populated == POPULATE_RUNS)
        return;
    m->populated[m->nr_populated].first = first;
    m->populated[m->nr_populated].n = n;
    m->nr_populated++;
    (void)madvise(frame_mem(m, first), (size_t)n * PAGE_SIZE, MADV_POPULATE_WRITE);
}

void frames_populate(ke_machine *m, uint64_t need)
{
    uint64_t listed = m->free_frames - (m->nr_frames - m->fresh);
    uint32_t pfn = m->free_head, run_first = 0, run_n = 0, run_last = 0;
    uint64_t k;

    if (need > m->free_frames)
        need = m->free_frames;
    /* the listed frames first, in list order: coalesce neighbours */
    for (k = 0; k < need && k < listed && pfn != PFN_NONE; k++) {
        const struct frame *f = &m->frames[pfn];
        bool released = (f->count & FR_ZEROED) && pfn < m->fresh;
        if (released && run_n && (pfn == run_last + 1 || pfn + 1 == run_last)) {
            run_n++;
            if (pfn < run_first)
                run_first = pfn;
        } else {
            populate_run(m, run_first, run_n);
            run_first = pfn;
            run_n = released;
        }
        run_last = pfn;
        pfn = f->aux;
    }
    populate_run(m, run_first, run_n);
    /* then the never used ones, in address order */
    if (need > k) {
        uint64_t n = need - k;
        if (n > m->nr_frames - m->fresh)
            n = m->nr_frames - m->fresh;
        populate_run(m, m->fresh, (uint32_t)n);
    }
}

static void frame_free(ke_machine *m, uint32_t pfn)
{
    struct frame *f = &m->frames[pfn];
    if (m->nr_pending == PENDING_MAX)
        ke_release_flush(m);
    f->count = FR_PENDING;
    f->aux = m->free_head;
    m->free_head = pfn;
    m->free_frames++;
    m->pending[m->nr_pending++] = pfn;
}

/*
 * Drops one mapping of a used frame; frees it when none is left.  A KSM
 * frame's stable node goes with it (ksm.c asserts it has no rmap_items).
 */
void frame_put(ke_machine *m, uint32_t pfn)
{
    struct frame *f = &m->frames[pfn];
    assert(f->count & FR_USED);
    assert(f->count & FR_MAPCOUNT_MASK);
    f->count--;
    if (f->count & FR_MAPCOUNT_MASK)
        return;
    if (f->count & FR_KSM) {
        ksm_stable_node_free_frame(m, frame_node(m, pfn));
        m->ksm_frames--;
    }
    m->used_frames--;
    frame_free(m, pfn);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Batches runs of frames for MADV_DONTNEED.  Where the kernel takes it
 * (process_madvise on oneself, Linux 6.13+), up to IOV_BATCH runs go in
 * one call with one TLB flush, instead of a madvise and a flush per run;
 * elsewhere each run is its own madvise.  release_run(m, 0, 0) sends the
 * batch.
 */
static void release_send(ke_machine *m)
{
    struct iovec *iov = m->release_iov;
    unsigned k, nr = m->release_nr;
    if (!nr)
        return;
    m->release_nr = 0;
    if (m->release_pidfd >= 0 && m->release_pid != getpid()) {
        /* a forked child: that pidfd names the parent, never use it */
        close(m->release_pidfd);
        m->release_pidfd = -2;
    }
    if (m->release_pidfd == -2) {
        m->release_pidfd = -1;
        m->release_pid = getpid();
#ifdef SYS_pidfd_open
        m->release_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
        if (m->release_pidfd < 0)
            m->release_pidfd = -1;
#endif
    }
#ifdef SYS_process_madvise
    if (m->release_pidfd >= 0) {
        uint64_t want = 0;
        long done = syscall(SYS_process_madvise, m->release_pidfd, iov,
                            (size_t)nr, MADV_DONTNEED, 0u);
        for (k = 0; k < nr; k++)
            want += iov[k].iov_len;
        if (done == (long)want)
            return;
        if (done < 0) { /* not supported here: plain madvise from now on */
            close(m->release_pidfd);
            m->release_pidfd = -1;
        }
    }
#endif
    for (k = 0; k < nr; k++)
        madvise(iov[k].iov_base, iov[k].iov_len, MADV_DONTNEED);
}

static void release_run(ke_machine *m, uint32_t start, uint32_t end)
{
    if (end == start) {
        release_send(m);
        return;
    }
    m->release_iov[m->release_nr].iov_base = frame_mem(m, start);
    m->release_iov[m->release_nr].iov_len = (size_t)(end - start) * PAGE_SIZE;
    if (++m->release_nr == RELEASE_BATCH)
        release_send(m);
}

/* Gives the pending free frames' memory back to the OS (see top). */
int ke_release_flush(ke_machine *m)
{
    uint32_t i, n = 0, start, end;
    if (!m)
        return -EINVAL;
    /* Keep the frames still free and pending; reused ones dropped out. */
    for (i = 0; i < m->nr_pending; i++) {
        uint32_t pfn = m->pending[i];
        if (m->frames[pfn].count & FR_PENDING)
            m->pending[n++] = pfn;
    }
    qsort(m->pending, n, sizeof(uint32_t), cmp_u32);
    i = 0;
    while (i < n) {
        /* one run of consecutive frames (a frame may be listed twice) */
        uint32_t j = i + 1;
        while (j < n && m->pending[j] <= m->pending[j - 1] + 1)
            j++;
        start = m->pending[i];
        end = m->pending[j - 1] + 1;
        release_run(m, start, end);
        for (uint32_t pfn = start; pfn < end; pfn++)
            m->frames[pfn].count = FR_ZEROED;
        m->released_frames += end - start;
        i = j;
    }
    release_run(m, 0, 0); /* send what is batched */
    m->nr_pending = 0;
    return 0;
}

int ke_balloon_frame_alloc(ke_machine *m, uint32_t *pfn_out)
{
    uint32_t pfn;
    if (!m || !pfn_out)
        return -EINVAL;
    if (fault_fires(m, KE_FAULT_FRAME_ALLOC))
        return -ENOMEM;
    pfn = frame_alloc(m, false);
    if (pfn == PFN_NONE)
        return -ENOMEM;
    m->frames[pfn].count = FR_BALLOON | 1;
    m->used_frames--;
    m->balloon_frames++;
    /* A loaned page's contents are gone: give its memory back now. */
    madvise(frame_mem(m, pfn), PAGE_SIZE, MADV_DONTNEED);
    *pfn_out = pfn;
    return 0;
}

int ke_balloon_frame_free(ke_machine *m, uint32_t pfn)
{
    if (!m || pfn >= m->nr_frames || !(m->frames[pfn].count & FR_BALLOON))
        return -EINVAL;
    m->balloon_frames--;
    m->used_frames++;
    m->frames[pfn].count = FR_USED | 1;
    frame_put(m, pfn);
    return 0;
}

/*
 * After a write that frames_populate() prepared: the frames it faulted
 * in that are still free go back to the OS like any freed frame, so the
 * process's resident memory follows the machine's accounting again.
 */
void frames_populate_end(ke_machine *m)
{
    for (uint32_t r = 0; r < m->nr_populated; r++) {
        uint32_t pfn = m->populated[r].first, end = pfn + m->populated[r].n;
        for (; pfn < end; pfn++) {
            struct frame *f = &m->frames[pfn];
            if (pfn >= m->fresh) {
                /* never used after all: release the rest of the run as is */
                release_run(m, pfn, end);
                break;
            }
            if (f->count & (FR_USED | FR_BALLOON | FR_PENDING))
                continue; /* taken, or freed again and queued already */
            if (m->nr_pending == PENDING_MAX)
                ke_release_flush(m);
            f->count = FR_PENDING; /* still listed; its memory is resident */
            m->pending[m->nr_pending++] = pfn;
        }
    }
    m->nr_populated = 0;
    release_run(m, 0, 0);
}
