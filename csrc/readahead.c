/*
 * readahead.c - work done ahead of ksm.c's scan loop, to go faster:
 * prehash (the checksums of the next pages, on two cores) and prewalk (the
 * tree walks of the next pages, level by level).  The kernel does neither;
 * they are ours, and they are not part of KSM's algorithm.
 *
 * Their contract: they read ahead only, so no result can change.
 *   - They change no frame, pte, rmap_item, stable node, tree or counter
 *     the algorithm reads.  They write only their own state (the prehash
 *     window, m->prehash) and one perf counter (prewalk_steps).
 *   - A checksum taken from the window is the one hashing the page in the
 *     loop would give: a page's content cannot change between the two (the
 *     machine is locked through one ke_ksm_scan_mm call, and a merge only
 *     swaps a page for one with the same content); the window is emptied
 *     at the start of every call.  cmp_and_merge_page asserts it.
 *   - prewalk only reads and prefetches; the real walks run exactly as
 *     without it.
 * So every counter but prewalk_steps is the same with and without them.
 *
 * prehash.  Most of a first full scan is hashing new pages.  When the loop
 * needs a checksum the window does not hold, prehash_fill() collects the
 * next pages of the mm that will need one (present, not a KSM page, no
 * rmap_item or one whose page was written since it was hashed: see
 * needs_checksum), up to the batch's remaining budget, and hashes them,
 * half on a helper thread.  The loop takes each page's checksum from the
 * window (prehash_take).
 *
 * prewalk.  A walk of a large tree is a chain of dependent cache misses
 * (each node says where the next one is), so it runs at memory latency,
 * one miss per level.  Before the loop takes the next PREWALK_PAGES pages
 * of a leaf, prewalk() walks both trees for all of them at once, level by
 * level, prefetching every walker's next node in the same round: the
 * misses of the pages overlap instead of following each other, and the
 * real walks find their paths in the cache.  Where a walker's prefix ties
 * with a node's, the real walk will compare the two pages: the walker
 * stops there and prefetches both.  Pages that will not reach the trees
 * this time (no rmap_item yet, written since hashed, KSM pages) and pages
 * known all zero (their compares read no page) are left out.
 */
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"
#include "page_compare.h"

/* --- prehash --- */

#define PREHASH_MAX 4096         /* pages in the window */
#define PREHASH_PARALLEL_MIN 256 /* fewer are hashed on this thread alone */
#define PREHASH_LOOK_MAX (8u * PREHASH_MAX) /* ptes one fill looks at, at most */

struct prehash {
    uint32_t n, pos;            /* window entries, next one to use */
    int compat_2009;            /* which checksum */
    uint32_t vpn[PREHASH_MAX];  /* virtual pages, ascending */
    uint32_t pfn[PREHASH_MAX];  /* their frames when collected */
    int64_t hash[PREHASH_MAX];  /* their page_hash() */
};

/* Half of a window, for one thread. */
struct prehash_job {
    const ke_machine *m;
    struct prehash *ph;
    uint32_t from, to;          /* its entries [from, to) */
};

/*
 * Hashing a page that is not in the cache waits on memory, and the CPU's
 * prefetcher stops at the page's end: the next page of the window is
 * fetched while this one is hashed.
 */
static inline void prefetch_page(const uint8_t *page, int locality)
{
    for (uint32_t off = 0; off < PAGE_SIZE; off += 64) {
        if (locality == 3)
            __builtin_prefetch(page + off, 0, 3);
        else
            __builtin_prefetch(page + off, 0, 2);
    }
}

static void *prehash_run(void *arg)
{
    struct prehash_job *job = arg;
    struct prehash *ph = job->ph;
    for (uint32_t i = job->from; i < job->to; i++) {
        if (i + 1 < job->to)
            prefetch_page(frame_mem(job->m, ph->pfn[i + 1]), 3);
        ph->hash[i] = page_hash(job->m, frame_mem(job->m, ph->pfn[i]),
                                ph->compat_2009);
    }
    return NULL;
}

void prehash_free(ke_machine *m)
{
    free(m->prehash);
    m->prehash = NULL;
}

/* Empties the window (at the start of every scan call). */
void prehash_reset(ke_machine *m)
{
    if (m->prehash)
        m->prehash->n = m->prehash->pos = 0;
}

/*
 * Fills the window with up to `want` pages needing a checksum, from vpn v
 * of range r on, and hashes them.  Returns false if there is no memory
 * for the window (the loop then hashes in place).
 */
bool prehash_fill(ke_machine *m, const struct mm_struct *mm,
                  const struct ke_range *ranges, uint32_t nranges, uint32_t r,
                  uint32_t v, uint32_t want)
{
    struct prehash *ph = m->prehash;
    struct leaf_walk w;
    uint64_t looked = 0;
    if (!ph) {
        ph = m->prehash = malloc(sizeof(*ph));
        if (!ph)
            return false;
    }
    ph->n = ph->pos = 0;
    ph->compat_2009 = (int)m->cfg.compat_2009;
    if (want > PREHASH_MAX)
        want = PREHASH_MAX;
    for (; r < nranges && ph->n < want && looked < PREHASH_LOOK_MAX; r++) {
        uint64_t from = ranges[r].start >> PAGE_SHIFT;
        FOR_EACH_LEAF(mm, &w, v > from ? v : from, ranges[r].end >> PAGE_SHIFT) {
            if (ph->n == want || looked >= PREHASH_LOOK_MAX)
                break;
            for (uint32_t i = w.first; i < w.stop && ph->n < want; i++, looked++) {
                uint32_t pte = w.leaf->pte[i];
                if (needs_checksum(m, pte, leaf_item(m, w.leaf, i))) {
                    ph->vpn[ph->n] = w.base | i;
                    ph->pfn[ph->n] = pte - 1;
                    ph->n++;
                }
            }
        }
    }
    {
        struct prehash_job lo = {m, ph, 0, ph->n / 2}, hi = {m, ph, ph->n / 2, ph->n};
        pthread_t t;
        if (ph->n >= PREHASH_PARALLEL_MIN && pthread_create(&t, NULL, prehash_run, &hi) == 0) {
            prehash_run(&lo);
            pthread_join(t, NULL);
        } else {
            lo.to = ph->n;
            prehash_run(&lo);
        }
    }
    return true;
}

/* The window's page_hash() of vpn, -1 if it has none. */
int64_t prehash_take(ke_machine *m, uint32_t vpn)
{
    struct prehash *ph = m->prehash;
    if (!ph)
        return -1;
    while (ph->pos < ph->n && ph->vpn[ph->pos] < vpn)
        ph->pos++;
    if (ph->pos < ph->n && ph->vpn[ph->pos] == vpn)
        return ph->hash[ph->pos++];
    return -1;
}

/* --- prewalk --- */

#define PREWALK_PAGES 16     /* pages walked together */
#define PREWALK_MAX_DEPTH 96 /* a red-black tree of 2^32 nodes is shallower */

/* The two pages a walk will compare where prefixes tie (none if tpfn is). */
static inline void prefetch_pair(const ke_machine *m, uint32_t pfn, uint32_t tpfn)
{
    if (tpfn == PFN_NONE)
        return;
    prefetch_page(frame_mem(m, tpfn), 2);
    prefetch_page(frame_mem(m, pfn), 2);
}

/*
 * One step of a walker of the unstable tree, and of the stable tree, as
 * unstable_tree_search_insert and stable_tree_search step: from node c
 * toward the page pfn whose prefix is pre.  Returns the next node, or
 * none where the real walk will compare the two pages (which are
 * prefetched).
 */
static inline rmap_id unstable_prestep(const ke_machine *m, rmap_id c,
                                       uint32_t pre, uint32_t pfn)
{
    const struct rmap_item *t = item_at(m, c);
    if (t->prefix != pre)
        return t->rb[pre > t->prefix];
    prefetch_pair(m, pfn, item_pfn(m, c));
    return NO_RMAP;
}

static inline snode_id stable_prestep(const ke_machine *m, snode_id c,
                                      uint64_t pre, uint32_t pfn)
{
    const struct stable_node *sn = node_at(m, c);
    snode_id d;
    if (sn->prefix != pre)
        return sn->rb[pre > sn->prefix];
    d = sn->kind == SN_CHAIN ? sn->dups : c; /* (the dup a chain's walk takes first) */
    prefetch_pair(m, pfn, d.idx ? node_at(m, d)->kpfn : PFN_NONE);
    return NO_SNODE;
}

/* Prefetches a walker's next record; true if it has one (idx not 0). */
static inline bool prefetch_next(const void *rec, uint32_t idx)
{
    if (idx)
        __builtin_prefetch(rec);
    return idx != 0;
}

/*
 * Walks both trees ahead for the pages of leaf slots [from, to) that will
 * reach them, PREWALK_PAGES at most.  Returns the slot it stopped at: the
 * loop calls it again there.
 */
uint32_t prewalk(ke_machine *m, const struct pt_leaf *leaf, uint32_t from,
                 uint32_t to)
{
    uint32_t pfn[PREWALK_PAGES], upre[PREWALK_PAGES];
    rmap_id ucur[PREWALK_PAGES];
    snode_id scur[PREWALK_PAGES];
    uint64_t spre[PREWALK_PAGES];
    uint32_t n = 0, i, j, depth, steps = 0;

    if (to - from > PREWALK_PAGES)
        to = from + PREWALK_PAGES;
    if (!m->unstable_root.idx && !m->stable_root.idx)
        return to;
    for (i = from; i < to; i++) {
        uint32_t pte = leaf->pte[i];
        rmap_id item = leaf_item(m, leaf, i);
        if (!pte_present(pte) || !item.idx || !(item_at(m, item)->flags & RI_CLEAN) ||
            (m->frames[pte - 1].count & FR_KSM))
            continue;
        if (item_zero(item_at(m, item)))
            continue; /* known all zero: its compares read no page */
        pfn[n] = pte - 1;
        __builtin_prefetch(frame_mem(m, pfn[n]));
        n++;
    }
    for (j = 0; j < n; j++) {
        const uint8_t *page = frame_mem(m, pfn[j]);
        upre[j] = page_prefix32(page);
        spre[j] = page_prefix64(page);
        ucur[j] = m->unstable_root;
        scur[j] = m->stable_root;
    }
    for (depth = 0; depth < PREWALK_MAX_DEPTH; depth++) {
        bool active = false;
        for (j = 0; j < n; j++) {
            if (ucur[j].idx) {
                ucur[j] = unstable_prestep(m, ucur[j], upre[j], pfn[j]);
                active |= prefetch_next(item_at(m, ucur[j]), ucur[j].idx);
                steps++;
            }
            if (scur[j].idx) {
                scur[j] = stable_prestep(m, scur[j], spre[j], pfn[j]);
                active |= prefetch_next(node_at(m, scur[j]), scur[j].idx);
                steps++;
            }
        }
        if (!active)
            break;
    }
    /* (also what keeps the compiler from dropping the walk: it has no
     * other effect than the prefetches) */
    m->st.prewalk_steps += steps;
    return to;
}
