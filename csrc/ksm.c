/*
 * ksm.c - Kernel Samepage Merging's per-page machinery, as mm/ksm.c of
 * Linux 6.x does it (and, with cfg.compat_2009, as the 2009 patch did).
 *
 * Data structures (see internal.h for the fields):
 *
 * rmap_item: one per virtual page KSM has looked at, found in the rmap
 *   chunk of the page's page-table leaf.  It is in at most one tree:
 *   - RI_UNSTABLE: put in the unstable tree during pass `seqnr`.  The tree
 *     is emptied at the start of every pass by dropping its root (nodes are
 *     not unlinked one by one), so an item flagged unstable is really in the
 *     tree only if its seqnr is the current pass's; pages_unshared counts the
 *     flag, as the kernel does.
 *   - RI_STABLE: hangs on a stable node's list of rmap_items.
 *
 * stable node: one per KSM page (frame flagged FR_KSM, frame.aux = node).
 *   The stable tree holds plain nodes and chain heads, ordered by the
 *   content of their pages.  When a content has max_page_sharing mappings
 *   on every KSM page holding it, another KSM page for it is made and the
 *   node turns into a chain: a chain head in the tree whose dups are the
 *   KSM pages of that content (stable_node_chains, stable_node_dups).
 *
 * Counters follow the kernel exactly: stable_tree_append() bumps
 * pages_shared for a node's first rmap_item and pages_sharing for every
 * other; remove_rmap_item_from_tree() undoes it.  One difference, on
 * purpose: the kernel takes an rmap_item off its stable node lazily (when
 * ksmd next passes it, or prunes a stale node), we do it the moment its pte
 * stops mapping the KSM page (COW, unmap, exit), through the hooks mm.c
 * calls, so pages_shared + pages_sharing always equals the mappings of KSM
 * pages that KSM knows of.  Once ksmd has passed, the two agree.
 *
 * The engine is single threaded per machine and synchronous, so the
 * kernel's races (a page changing between checksum and merge, stale nodes
 * found under lock) cannot happen; what can fail is getting a frame (break
 * COW when the arena is full) and, by fault injection, stable_tree_insert.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#endif

#include "internal.h"

const uint8_t zero_page[PAGE_SIZE] __attribute__((aligned(64)));

/* --- the two trees --- */

#define RB_FN(name) unstable_rb_##name
#define RB_L(i) (item_at(m, i)->link[0])
#define RB_R(i) (item_at(m, i)->link[1])
#define RB_P(i) (item_at(m, i)->link[2])
#define RB_RED(i) (item_at(m, i)->flags & RI_RED)
#define RB_SET_RED(i) (item_at(m, i)->flags |= RI_RED)
#define RB_SET_BLACK(i) (item_at(m, i)->flags &= (uint8_t)~RI_RED)
#define RB_COPY_COLOR(d, s)                                                   \
    (item_at(m, d)->flags = (uint8_t)((item_at(m, d)->flags & ~RI_RED) |      \
                                      (item_at(m, s)->flags & RI_RED)))
#include "rbtree_impl.h"
#undef RB_FN
#undef RB_L
#undef RB_R
#undef RB_P
#undef RB_RED
#undef RB_SET_RED
#undef RB_SET_BLACK
#undef RB_COPY_COLOR

#define RB_FN(name) stable_rb_##name
#define RB_L(i) (node_at(m, i)->rb[0])
#define RB_R(i) (node_at(m, i)->rb[1])
#define RB_P(i) (node_at(m, i)->rb[2])
#define RB_RED(i) (node_at(m, i)->red)
#define RB_SET_RED(i) (node_at(m, i)->red = 1)
#define RB_SET_BLACK(i) (node_at(m, i)->red = 0)
#define RB_COPY_COLOR(d, s) (node_at(m, d)->red = node_at(m, s)->red)
#include "rbtree_impl.h"
#undef RB_FN
#undef RB_L
#undef RB_R
#undef RB_P
#undef RB_RED
#undef RB_SET_RED
#undef RB_SET_BLACK
#undef RB_COPY_COLOR

#define CMP_PREFIX(a, b) ((a) < (b) ? -1 : 1)

/*
 * Longest common prefixes on the way down a tree.  In a consistent binary
 * search tree every node below the last node the walk went right from (lo)
 * and the last it went left from (hi) lies between them in memcmp order,
 * so it shares with the searched page at least min(lcp(page, lo),
 * lcp(page, hi)) leading bytes: the comparison can start there.  Pages
 * that differ only near their end (the kernel compares them whole at every
 * level) then cost one full comparison per search, not one per level.  The
 * stable tree is always consistent (KSM pages never change); the unstable
 * tree is until a page in it is written, which turns the shortcut off for
 * the rest of the pass (m->unstable_dirty).
 */
static inline uint32_t lcp_of_prefixes(uint64_t a, uint64_t b, uint32_t bytes)
{
    return (uint32_t)(__builtin_clzll(a ^ b) >> 3) - (8 - bytes);
}

/* memcmp's sign for two pages whose first `from` bytes are equal; *lcp
 * gets the offset of their first difference (PAGE_SIZE if none). */
static int page_cmp_lcp(ke_machine *m, uint32_t a, uint32_t b, uint32_t from,
                        uint32_t *lcp)
{
    const uint8_t *pa = frame_mem(m, a), *pb = frame_mem(m, b);
    uint32_t off = from & ~63u;
    m->st.memcmps++;
#if defined(__x86_64__) || defined(__i386__)
    for (; off < PAGE_SIZE; off += 64) {
        __m128i e0 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off)),
                                    _mm_loadu_si128((const __m128i *)(pb + off)));
        __m128i e1 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off + 16)),
                                    _mm_loadu_si128((const __m128i *)(pb + off + 16)));
        __m128i e2 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off + 32)),
                                    _mm_loadu_si128((const __m128i *)(pb + off + 32)));
        __m128i e3 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off + 48)),
                                    _mm_loadu_si128((const __m128i *)(pb + off + 48)));
        uint64_t eq = (uint64_t)(uint32_t)_mm_movemask_epi8(e0) |
                      ((uint64_t)(uint32_t)_mm_movemask_epi8(e1) << 16) |
                      ((uint64_t)(uint32_t)_mm_movemask_epi8(e2) << 32) |
                      ((uint64_t)(uint32_t)_mm_movemask_epi8(e3) << 48);
        if (eq != ~0ull) {
            uint32_t i = off + (uint32_t)__builtin_ctzll(~eq);
            *lcp = i;
            return pa[i] < pb[i] ? -1 : 1;
        }
    }
#else
    for (; off < PAGE_SIZE; off++) {
        if (pa[off] != pb[off]) {
            *lcp = off;
            return pa[off] < pb[off] ? -1 : 1;
        }
    }
#endif
    *lcp = PAGE_SIZE;
    return 0;
}

#define LCP_MIN(a, b) ((a) < (b) ? (a) : (b))

/* --- rmap_items --- */

static uint32_t rmap_item_alloc(ke_machine *m, uint32_t mm,
                                struct pt_leaf *leaf, uint32_t vpn)
{
    uint32_t idx = item_store_alloc(m, mm, leaf, vpn);
    if (!idx)
        return 0;
    m->st.rmap_items++;
    m->mms[mm].ksm_rmap_items++;
    return idx;
}

static void rmap_item_free(ke_machine *m, uint32_t idx)
{
    struct rmap_item *it = item_at(m, idx);
    assert(!(it->flags & (RI_STABLE | RI_UNSTABLE)));
    (void)it;
    m->st.rmap_items--;
    m->mms[item_mm(m, idx)].ksm_rmap_items--;
    item_store_free(m, idx);
}

static inline bool is_page_sharing_candidate_n(const ke_machine *m,
                                               const struct stable_node *n,
                                               uint32_t offset)
{
    return n->rmap_hlist_len && n->rmap_hlist_len + offset < m->cfg.max_page_sharing;
}

static inline bool is_page_sharing_candidate(const ke_machine *m,
                                             const struct stable_node *n)
{
    return m->cfg.compat_2009 || is_page_sharing_candidate_n(m, n, 0);
}

static void stable_node_erase(ke_machine *m, uint32_t node);

/*
 * A chain counts its dups that can take one more mapping, so that a walk
 * that would find none (every dup full: the common case once merged) is
 * skipped; stable_node_dup() then picks the head dup, as the walk would.
 * Call around every change of a node's rmap_hlist_len.
 */
static inline void dup_candidate_update(ke_machine *m, struct stable_node *sn,
                                        bool was_candidate)
{
    if (sn->kind == SN_DUP) {
        bool now = is_page_sharing_candidate_n(m, sn, 0);
        node_at(m, sn->chain)->nr_candidates += (uint32_t)now - (uint32_t)was_candidate;
    }
}

/*
 * Takes an rmap_item out of the tree it is in (stable node list or the
 * unstable tree), fixing the counters.  Leaves it allocated.
 */
static void remove_rmap_item_from_tree(ke_machine *m, uint32_t idx)
{
    struct rmap_item *it = item_at(m, idx);
    if (it->flags & RI_STABLE) {
        uint32_t node = it->link[0], next = it->link[1], prev = it->link[2];
        struct stable_node *sn = node_at(m, node);
        if (prev)
            item_at(m, prev)->link[1] = next;
        else
            sn->hlist = next;
        if (next)
            item_at(m, next)->link[2] = prev;
        if (sn->hlist)
            m->st.pages_sharing--;
        else
            m->st.pages_shared--;
        m->mms[item_mm(m, idx)].ksm_merging_pages--;
        assert(sn->rmap_hlist_len > 0);
        {
            bool was = is_page_sharing_candidate_n(m, sn, 0);
            sn->rmap_hlist_len--;
            dup_candidate_update(m, sn, was);
        }
        it->flags &= (uint8_t)~RI_STABLE;
        it->link[0] = it->link[1] = it->link[2] = 0;
        /*
         * 2009: the stable tree's nodes were the rmap_items themselves, so
         * a KSM page whose last rmap_item left dropped out of the tree.
         */
        if (m->cfg.compat_2009 && !sn->hlist) {
            m->frames[sn->kpfn].aux = 0;
            stable_node_erase(m, node);
        }
    } else if (it->flags & RI_UNSTABLE) {
        uint8_t age = (uint8_t)(m->seqnr - it->seqnr);
        assert(age <= 1);
        if (!age)
            unstable_rb_erase(m, &m->unstable_root, idx);
        m->st.pages_unshared--;
        it->flags &= (uint8_t)~(RI_UNSTABLE | RI_RED);
        it->link[0] = it->link[1] = it->link[2] = 0;
    }
}

/* Hangs an rmap_item on a stable node (mm/ksm.c stable_tree_append). */
static void stable_tree_append(ke_machine *m, uint32_t idx, uint32_t node)
{
    struct rmap_item *it = item_at(m, idx);
    struct stable_node *sn = node_at(m, node);
    assert(!(it->flags & (RI_STABLE | RI_UNSTABLE)));
    assert(sn->kind == SN_PLAIN || sn->kind == SN_DUP);
    {
        bool was = is_page_sharing_candidate_n(m, sn, 0);
        sn->rmap_hlist_len++;
        dup_candidate_update(m, sn, was);
    }
    it->link[0] = node;
    it->link[1] = sn->hlist;
    it->link[2] = 0;
    if (sn->hlist)
        item_at(m, sn->hlist)->link[2] = idx;
    sn->hlist = idx;
    it->flags |= RI_STABLE;
    if (it->link[1])
        m->st.pages_sharing++;
    else
        m->st.pages_shared++;
    m->mms[item_mm(m, idx)].ksm_merging_pages++;
}

/* --- hooks mm.c calls --- */

/* The item's page was written (page: its memory now). */
void ksm_item_write_hook(ke_machine *m, uint32_t idx, const uint8_t *page)
{
    struct rmap_item *it = item_at(m, idx);
    it->flags &= (uint8_t)~(RI_CLEAN | RI_ZERO);
    it->prefix = page_prefix32(page); /* keeps unstable tree walks exact */
    if ((it->flags & RI_UNSTABLE) && it->seqnr == (uint8_t)m->seqnr)
        m->unstable_dirty = true; /* the tree may now be out of order */
}

void ksm_item_leave_stable(ke_machine *m, uint32_t idx)
{
    if (item_at(m, idx)->flags & RI_STABLE)
        remove_rmap_item_from_tree(m, idx);
}

void ksm_item_unmap(ke_machine *m, uint32_t idx)
{
    remove_rmap_item_from_tree(m, idx);
    rmap_item_free(m, idx);
}

/* --- stable nodes and chains --- */

static uint32_t stable_node_alloc(ke_machine *m, uint8_t kind)
{
    uint32_t node = pool_alloc(&m->nodes);
    if (node)
        node_at(m, node)->kind = kind;
    return node;
}

/* Unlinks a dup from its chain (mm/ksm.c __stable_node_dup_del). */
static void stable_node_dup_del(ke_machine *m, uint32_t dup)
{
    struct stable_node *d = node_at(m, dup);
    struct stable_node *chain = node_at(m, d->chain);
    chain->nr_candidates -= is_page_sharing_candidate_n(m, d, 0);
    if (d->prev)
        node_at(m, d->prev)->next = d->next;
    else
        chain->hlist = d->next;
    if (d->next)
        node_at(m, d->next)->prev = d->prev;
    d->next = d->prev = d->chain = 0;
    m->st.stable_node_dups--;
}

static void stable_node_chain_add_dup(ke_machine *m, uint32_t dup,
                                      uint32_t chain)
{
    struct stable_node *d = node_at(m, dup), *c = node_at(m, chain);
    d->kind = SN_DUP;
    d->chain = chain;
    c->nr_candidates += is_page_sharing_candidate_n(m, d, 0);
    d->prev = 0;
    d->next = c->hlist;
    if (c->hlist)
        node_at(m, c->hlist)->prev = dup;
    c->hlist = dup;
    m->st.stable_node_dups++;
}

static void free_stable_node_chain(ke_machine *m, uint32_t chain)
{
    assert(!node_at(m, chain)->hlist);
    stable_rb_erase(m, &m->stable_root, chain);
    pool_free(&m->nodes, chain);
    m->st.stable_node_chains--;
}

/*
 * Removes a stable node (no rmap_items left) from the tree or its chain
 * and frees it; an emptied chain goes too.
 */
static void stable_node_erase(ke_machine *m, uint32_t node)
{
    struct stable_node *sn = node_at(m, node);
    assert(sn->rmap_hlist_len == 0 && !sn->hlist);
    if (sn->kind == SN_DUP) {
        uint32_t chain = sn->chain;
        stable_node_dup_del(m, node);
        if (!node_at(m, chain)->hlist)
            free_stable_node_chain(m, chain);
    } else {
        assert(sn->kind == SN_PLAIN);
        stable_rb_erase(m, &m->stable_root, node);
    }
    pool_free(&m->nodes, node);
}

/* A KSM frame is being freed: its stable node goes (arena.c calls this). */
void ksm_stable_node_free_frame(ke_machine *m, uint32_t node)
{
    if (node)
        stable_node_erase(m, node);
}

/*
 * mm/ksm.c stable_node_dup(): picks the dup of a chain to merge into: the
 * first that can take one more mapping, or, when the chain is due for
 * pruning (every prune_millisecs), the one with the most mappings that can
 * still take one.  A chain left with one dup collapses into a plain node in
 * the chain's place (*nodep is updated).  Returns the dup, 0 if none.
 */
static uint32_t stable_node_dup(ke_machine *m, uint32_t *nodep, bool prune)
{
    uint32_t chain = *nodep, dup, found = 0, found_len = 0;
    struct stable_node *c = node_at(m, chain), *f;

    if (!prune || (uint32_t)m->now_ms - c->chain_prune_time < m->cfg.prune_millisecs)
        prune = false;
    else
        c->chain_prune_time = (uint32_t)m->now_ms;

    if (!prune && !c->nr_candidates)
        found = c->hlist; /* the walk below would end there, having found no candidate */
    else for (dup = c->hlist; dup; dup = node_at(m, dup)->next) {
        struct stable_node *d = node_at(m, dup);
        if (!found || (is_page_sharing_candidate_n(m, d, 0) &&
                       (!is_page_sharing_candidate_n(m, node_at(m, found), 0) ||
                        d->rmap_hlist_len > found_len))) {
            found = dup;
            found_len = d->rmap_hlist_len;
            if (!prune && is_page_sharing_candidate_n(m, d, 0))
                break;
        }
    }
    if (!found)
        return 0;
    f = node_at(m, found);
    if (c->hlist == found && !f->next) {
        /* just one dup: drop the chain */
        stable_node_dup_del(m, found);
        f->kind = SN_PLAIN;
        stable_rb_replace(m, &m->stable_root, chain, found);
        pool_free(&m->nodes, chain);
        m->st.stable_node_chains--;
        *nodep = found;
    } else if (c->hlist != found && is_page_sharing_candidate_n(m, f, 1)) {
        /* move it to the head so the next search finds it first */
        if (f->prev)
            node_at(m, f->prev)->next = f->next;
        if (f->next)
            node_at(m, f->next)->prev = f->prev;
        f->prev = 0;
        f->next = c->hlist;
        node_at(m, c->hlist)->prev = found;
        c->hlist = found;
    }
    return found;
}

/*
 * mm/ksm.c __stable_node_chain(): for a plain node, itself; for a chain,
 * the dup stable_node_dup() picks.  Returns the frame to compare with
 * (PFN_NONE if the chain had no dup) and sets *dupp.
 */
static uint32_t stable_node_chain(ke_machine *m, uint32_t *dupp,
                                  uint32_t *nodep, bool prune)
{
    struct stable_node *sn = node_at(m, *nodep);
    if (sn->kind != SN_CHAIN) {
        *dupp = *nodep;
        return sn->kpfn;
    }
    *dupp = stable_node_dup(m, nodep, prune);
    if (!*dupp) {
        /* a chain's dup list may hold full dups only: any is the content */
        uint32_t any = node_at(m, *nodep)->hlist;
        return any ? node_at(m, any)->kpfn : PFN_NONE;
    }
    return node_at(m, *dupp)->kpfn;
}

/*
 * One step of a stable tree walk: takes node *curp's page (for a chain, the
 * dup stable_node_chain() picks, which may collapse the chain into *curp),
 * and compares the page pfn, whose first bytes are `prefix` and whose first
 * lcp_from bytes the walk knows equal, with it.  Returns memcmp's sign and
 * the offset of the first difference in *lcp.
 */
static int stable_walk_cmp(ke_machine *m, uint32_t pfn, uint64_t prefix,
                           bool page_zero, uint32_t *curp, uint32_t *dupp,
                           bool prune, uint32_t lcp_from, uint32_t *lcp)
{
    uint32_t tree_pfn = stable_node_chain(m, dupp, curp, prune);
    uint64_t tree_prefix;
    assert(tree_pfn != PFN_NONE);
    tree_prefix = node_at(m, *curp)->prefix;
    if (tree_prefix != prefix) {
        *lcp = lcp_of_prefixes(prefix, tree_prefix, 8);
        return CMP_PREFIX(prefix, tree_prefix);
    }
    if (page_zero && node_at(m, *curp)->zero) {
        /* both known all zero: equal, without reading either page */
        assert(!memcmp(frame_mem(m, pfn), frame_mem(m, tree_pfn), PAGE_SIZE));
        *lcp = PAGE_SIZE;
        return 0;
    }
    return page_cmp_lcp(m, pfn, tree_pfn, lcp_from, lcp);
}

/*
 * Searches the stable tree for a KSM page with the content of frame pfn
 * that can take one more mapping.  Returns its frame and sets *nodep to
 * its stable node, or returns PFN_NONE.  A page that is itself KSM (shared
 * by fork) finds itself.  page_zero: the page is known to be all zero.
 */
static uint32_t stable_tree_search(ke_machine *m, uint32_t pfn, bool page_zero,
                                   uint32_t *nodep)
{
    uint32_t cur, dup, lcp, lcp_lo = 0, lcp_hi = 0;
    uint64_t prefix;
    int ret;

    if (m->frames[pfn].count & FR_KSM && m->frames[pfn].aux) {
        *nodep = m->frames[pfn].aux;
        return pfn;
    }
    if (!m->stable_root)
        return PFN_NONE; /* (and the page's memory is not touched) */
    prefix = page_prefix64(frame_mem(m, pfn));
    cur = m->stable_root;
    while (cur) {
        /* chains are pruned on the way, as the kernel's walk does */
        ret = stable_walk_cmp(m, pfn, prefix, page_zero, &cur, &dup, true,
                              LCP_MIN(lcp_lo, lcp_hi), &lcp);
        if (ret < 0) {
            cur = node_at(m, cur)->rb[0];
            lcp_hi = lcp;
        } else if (ret > 0) {
            cur = node_at(m, cur)->rb[1];
            lcp_lo = lcp;
        } else {
            if (!dup || !is_page_sharing_candidate(m, node_at(m, dup)))
                return PFN_NONE; /* every copy full: go via unstable tree */
            *nodep = dup;
            return node_at(m, dup)->kpfn;
        }
    }
    return PFN_NONE;
}

/*
 * Puts the KSM page kpfn into the stable tree: a new plain node, or a new
 * dup under the chain of its content (making the chain if needed).  Returns
 * the new node, 0 on failure (allocation, or injected fault).  page_zero:
 * the page is known to be all zero (the nodes of its content say so).
 */
static uint32_t stable_tree_insert(ke_machine *m, uint32_t kpfn, bool page_zero)
{
    uint32_t cur = m->stable_root, parent = 0, dup, node;
    uint64_t prefix = page_prefix64(frame_mem(m, kpfn));
    uint32_t lcp, lcp_lo = 0, lcp_hi = 0;
    int ret = 0;
    bool need_chain = false;

    while (cur) {
        ret = stable_walk_cmp(m, kpfn, prefix, page_zero, &cur, &dup, false,
                              LCP_MIN(lcp_lo, lcp_hi), &lcp);
        parent = cur;
        if (ret < 0) {
            cur = node_at(m, cur)->rb[0];
            lcp_hi = lcp;
        } else if (ret > 0) {
            cur = node_at(m, cur)->rb[1];
            lcp_lo = lcp;
        } else {
            need_chain = true;
            break;
        }
    }
    if (fault_fires(m, KE_FAULT_STABLE_INSERT))
        return 0;
    node = stable_node_alloc(m, SN_PLAIN);
    if (!node)
        return 0;
    node_at(m, node)->kpfn = kpfn;
    node_at(m, node)->prefix = prefix;
    node_at(m, node)->zero = page_zero;
    if (!need_chain) {
        stable_rb_link(m, &m->stable_root, node, parent, ret < 0);
        stable_rb_insert_color(m, &m->stable_root, node);
    } else {
        uint32_t chain = cur;
        if (node_at(m, cur)->kind != SN_CHAIN) {
            chain = stable_node_alloc(m, SN_CHAIN);
            if (!chain) {
                pool_free(&m->nodes, node);
                return 0;
            }
            node_at(m, chain)->chain_prune_time = (uint32_t)m->now_ms;
            node_at(m, chain)->prefix = prefix;
            node_at(m, chain)->zero = node_at(m, cur)->zero;
            stable_rb_replace(m, &m->stable_root, cur, chain);
            m->st.stable_node_chains++;
            stable_node_chain_add_dup(m, cur, chain);
        }
        /* (the walk found the contents equal: what is known of one is of all) */
        if (page_zero || node_at(m, chain)->zero)
            node_at(m, chain)->zero = node_at(m, node)->zero = 1;
        stable_node_chain_add_dup(m, node, chain);
    }
    m->frames[kpfn].aux = node;
    return node;
}

/*
 * Searches the unstable tree for a page with pfn's content; if there is
 * one, returns its rmap_item (and its frame in *tree_pfnp), else inserts
 * item and returns 0.  As in the kernel, no insertion happens when the walk
 * meets this very frame (a page shared by fork) or an item with no page.
 */
static uint32_t unstable_tree_search_insert(ke_machine *m, uint32_t idx,
                                            uint32_t pfn, uint32_t *tree_pfnp)
{
    bool page_zero = item_zero(item_at(m, idx));
    uint32_t cur = m->unstable_root, parent = 0, tree_pfn = PFN_NONE;
    uint32_t prefix = page_prefix32(frame_mem(m, pfn));
    uint32_t lcp, lcp_lo = 0, lcp_hi = 0;
    struct rmap_item *it;
    int ret = 0;

    while (cur) {
        const struct rmap_item *t = item_at(m, cur);
        /*
         * Different prefixes: different pages, so neither "no page" nor
         * "this very frame" (the kernel's early returns) can apply.
         */
        if (t->prefix != prefix) {
            ret = CMP_PREFIX(prefix, t->prefix);
            lcp = lcp_of_prefixes(prefix, t->prefix, 4);
        } else {
            tree_pfn = item_pfn(m, cur);
            if (tree_pfn == PFN_NONE || tree_pfn == pfn)
                return 0;
            if (page_zero && item_zero(t)) {
                /* both known all zero: equal, without reading either page */
                assert(!memcmp(frame_mem(m, pfn), frame_mem(m, tree_pfn), PAGE_SIZE));
                ret = 0;
                lcp = PAGE_SIZE;
            } else {
                ret = page_cmp_lcp(m, pfn, tree_pfn,
                                   m->unstable_dirty ? 0 : LCP_MIN(lcp_lo, lcp_hi), &lcp);
            }
        }
        parent = cur;
        if (ret < 0) {
            cur = item_at(m, cur)->link[0];
            lcp_hi = lcp;
        } else if (ret > 0) {
            cur = item_at(m, cur)->link[1];
            lcp_lo = lcp;
        } else {
            *tree_pfnp = tree_pfn;
            return cur;
        }
    }
    it = item_at(m, idx);
    it->flags |= RI_UNSTABLE;
    it->seqnr = (uint8_t)m->seqnr;
    it->prefix = prefix;
    unstable_rb_link(m, &m->unstable_root, idx, parent, ret < 0);
    unstable_rb_insert_color(m, &m->unstable_root, idx);
    m->st.pages_unshared++;
    return 0;
}

/* --- merging --- */

static inline struct pt_leaf *item_leaf(ke_machine *m, uint32_t idx,
                                        uint32_t *i)
{
    *i = idx & (RC_ITEMS - 1);
    return item_chunk(m, idx)->leaf;
}

static void frame_make_ksm(ke_machine *m, uint32_t pfn)
{
    assert(!(m->frames[pfn].count & FR_KSM));
    m->frames[pfn].count |= FR_KSM;
    m->frames[pfn].aux = 0;
    m->ksm_frames++;
}

/* Points the item's pte at kpfn instead of its present frame (replace_page). */
static void replace_page(ke_machine *m, uint32_t idx, uint32_t kpfn)
{
    uint32_t i;
    struct pt_leaf *leaf = item_leaf(m, idx, &i);
    uint32_t old = leaf->pte[i] - 1;
    assert(leaf && leaf->pte[i] != PTE_NONE && leaf->pte[i] != PTE_ZERO);
    m->frames[kpfn].count++;
    leaf->pte[i] = kpfn + 1;
    frame_put(m, old);
}

/*
 * mm/ksm.c try_to_merge_one_page(): merges the item's page pfn into the
 * KSM page kpfn, whose contents the caller found identical.  Cannot fail
 * here: the kernel's can, when the page changed or was pinned between the
 * tree walk and the merge (it compares the pages again: pages_identical),
 * but nothing runs between the two here, so the walk's memcmp stands.
 */
static void try_to_merge_one_page(ke_machine *m, uint32_t idx, uint32_t pfn,
                                  uint32_t kpfn)
{
    assert(!memcmp(frame_mem(m, pfn), frame_mem(m, kpfn), PAGE_SIZE));
    if (pfn != kpfn) /* (equal: a KSM page shared by fork) */
        replace_page(m, idx, kpfn);
}

/* Breaks sharing of an item's KSM page; never fails (see the top). */
static void break_cow(ke_machine *m, uint32_t idx)
{
    uint32_t i, pfn;
    struct pt_leaf *leaf = item_leaf(m, idx, &i);
    if (!leaf || leaf->pte[i] == PTE_NONE || leaf->pte[i] == PTE_ZERO)
        return;
    pfn = leaf->pte[i] - 1;
    if (!(m->frames[pfn].count & FR_KSM))
        return;
    if (break_cow_pte(m, &m->mms[item_mm(m, idx)], leaf, i) == 0)
        return;
    /*
     * No frame to copy into: the page stays shared as an ordinary
     * copy-on-write page, which is just as safe for the processes.
     */
    if (!m->frames[pfn].aux) {
        m->frames[pfn].count &= ~FR_KSM;
        m->ksm_frames--;
    }
}

/*
 * mm/ksm.c try_to_merge_with_zero_page(): a page whose checksum is the
 * zero page's, and which is all zero, is replaced by the zero page.
 */
static int try_to_merge_with_zero_page(ke_machine *m, uint32_t idx,
                                       uint32_t pfn)
{
    struct rmap_item *it = item_at(m, idx);
    struct mm_struct *mm;
    struct pt_leaf *leaf;
    uint32_t i;

    if (!m->cfg.use_zero_pages || it->oldchecksum != m->zero_checksum)
        return -EFAULT;
    if (!item_zero(it)) {
        m->st.memcmps++;
        if (memcmp(frame_mem(m, pfn), zero_page, PAGE_SIZE))
            return -EFAULT;
    }
    assert(!memcmp(frame_mem(m, pfn), zero_page, PAGE_SIZE));
    mm = &m->mms[item_mm(m, idx)];
    leaf = item_leaf(m, idx, &i);
    leaf->pte[i] = PTE_ZERO;
    mm->rss_pages--;
    mm->ksm_zero_pages++;
    m->st.ksm_zero_pages++;
    frame_put(m, pfn);
    return 0;
}

/*
 * Merges two pages of identical content into one KSM page.  Today's kernel
 * turns the scanned page into the KSM page in place and points the tree
 * page's pte at it; the 2009 kernel copied both into a new page (bounded by
 * max_kernel_pages).  Returns the KSM frame, PFN_NONE on failure.
 */
static uint32_t try_to_merge_two_pages(ke_machine *m, uint32_t idx,
                                       uint32_t pfn, uint32_t tree_idx,
                                       uint32_t tree_pfn)
{
    if (m->cfg.compat_2009) {
        uint32_t kpfn;
        /*
         * The seed's limit is on ksm_kernel_pages_allocated, the stable
         * tree's nodes (each holds an rmap_item in 2009: pages_shared
         * here), not on every KSM frame: one left out of the tree, still
         * mapped by a fork child, does not count.
         */
        if (m->cfg.max_kernel_pages &&
            m->cfg.max_kernel_pages <= m->st.pages_shared)
            return PFN_NONE;
        if (fault_fires(m, KE_FAULT_FRAME_ALLOC))
            return PFN_NONE;
        kpfn = frame_alloc(m, false);
        if (kpfn == PFN_NONE)
            return PFN_NONE;
        memcpy(frame_mem(m, kpfn), frame_mem(m, pfn), PAGE_SIZE);
        frame_make_ksm(m, kpfn);
        m->frames[kpfn].count++; /* hold it while both ptes move over */
        replace_page(m, idx, kpfn);
        replace_page(m, tree_idx, kpfn);
        frame_put(m, kpfn);
        return kpfn;
    }
    frame_make_ksm(m, pfn);
    try_to_merge_one_page(m, tree_idx, tree_pfn, pfn);
    return pfn;
}

/*
 * The last step of cmp_and_merge_page (both versions): look for the page's
 * twin in the unstable tree (inserting the page if there is none); with a
 * twin, make one KSM page of the two, put it in the stable tree and hang
 * both rmap_items on it, tree item first; if the stable tree will not take
 * it, break COW on both again.
 */
static void merge_via_unstable_tree(ke_machine *m, uint32_t idx, uint32_t pfn)
{
    uint32_t tree_pfn = PFN_NONE, kpfn, knode;
    uint32_t tree_idx = unstable_tree_search_insert(m, idx, pfn, &tree_pfn);
    if (!tree_idx)
        return;
    kpfn = try_to_merge_two_pages(m, idx, pfn, tree_idx, tree_pfn);
    if (kpfn == PFN_NONE)
        return;
    remove_rmap_item_from_tree(m, tree_idx);
    knode = stable_tree_insert(m, kpfn, item_zero(item_at(m, idx)));
    if (knode) {
        stable_tree_append(m, tree_idx, knode);
        stable_tree_append(m, idx, knode);
    } else {
        break_cow(m, tree_idx);
        break_cow(m, idx);
    }
}

/*
 * cmp_and_merge_page's checksum test (both versions): has the page kept
 * the checksum it had when last scanned?  If not, it is changing often
 * and will not go into the unstable tree: the new checksum is kept for
 * the next scan.  The checksum is the one of the last scan if the page
 * was not written since (RI_CLEAN), else a new one, from readahead.c's
 * window (precomputed >= 0) or hashed here.
 */
static bool checksum_unchanged(ke_machine *m, struct rmap_item *it,
                               uint32_t pfn, int64_t precomputed)
{
    int compat = (int)m->cfg.compat_2009;
    uint32_t checksum = it->oldchecksum;
    if (it->flags & RI_CLEAN) {
        m->st.checksums_avoided++;
        return true;
    }
    if (precomputed < 0)
        precomputed = page_hash(m, frame_mem(m, pfn), compat);
    assert(precomputed == page_hash(m, frame_mem(m, pfn), compat)); /* readahead.c */
    m->st.checksums++;
    it->oldchecksum = (uint32_t)precomputed;
    if (!compat && it->oldchecksum == m->zero_checksum)
        m->st.memcmps++; /* page_hash's compare with the zero page */
    it->flags = (uint8_t)((it->flags & ~RI_ZERO) | RI_CLEAN |
                          ((precomputed >> 32) ? RI_ZERO : 0));
    return it->oldchecksum == checksum;
}

/*
 * mm/ksm.c cmp_and_merge_page(): the heart of ksmd, for one present page
 * (frame pfn) of the item's mm.
 */
static void cmp_and_merge_page(ke_machine *m, uint32_t idx, uint32_t pfn,
                               int64_t precomputed)
{
    struct rmap_item *it = item_at(m, idx);
    uint32_t node = 0, kpfn, knode = 0;

    if (m->frames[pfn].count & FR_KSM)
        node = m->frames[pfn].aux;
    if (node) {
        if ((it->flags & RI_STABLE) && it->link[0] == node)
            return;
        /* (a KSM fork may go over max_page_sharing: append anyway) */
    } else {
        remove_rmap_item_from_tree(m, idx);
        if (!checksum_unchanged(m, it, pfn, precomputed))
            return;
        if (!try_to_merge_with_zero_page(m, idx, pfn))
            return;
    }

    kpfn = stable_tree_search(m, pfn, item_zero(it), &knode);
    remove_rmap_item_from_tree(m, idx);
    if (kpfn != PFN_NONE) {
        try_to_merge_one_page(m, idx, pfn, kpfn);
        stable_tree_append(m, idx, knode);
        return;
    }

    merge_via_unstable_tree(m, idx, pfn);
}

/*
 * The 2009 cmp_and_merge_page (seed 004): the stable tree is searched
 * before the checksum test, a KSM page that fell out of the stable tree is
 * broken, the checksum is jhash2, and there are no zero pages or chains.
 * As the seed's ksm_do_scan(), a KSM page whose rmap_item is in the stable
 * tree is left alone, even when it is the page's last mapping.
 */
static void cmp_and_merge_page_2009(ke_machine *m, uint32_t idx, uint32_t pfn,
                                    int64_t precomputed)
{
    struct rmap_item *it = item_at(m, idx);
    uint32_t kpfn, knode = 0;

    if ((m->frames[pfn].count & FR_KSM) && (it->flags & RI_STABLE))
        return;
    remove_rmap_item_from_tree(m, idx);
    kpfn = stable_tree_search(m, pfn, false, &knode);
    if (kpfn != PFN_NONE) {
        try_to_merge_one_page(m, idx, pfn, kpfn);
        stable_tree_append(m, idx, knode);
        return;
    }
    if (m->frames[pfn].count & FR_KSM) {
        break_cow(m, idx);
        pfn = item_pfn(m, idx);
    }
    if (checksum_unchanged(m, it, pfn, precomputed))
        merge_via_unstable_tree(m, idx, pfn);
}

static uint32_t skip_age(uint8_t age)
{
    if (age <= 3)
        return 1;
    if (age <= 5)
        return 2;
    if (age <= 8)
        return 4;
    return 8;
}

/* mm/ksm.c should_skip_rmap_item(): smart_scan's ageing of unmerged pages. */
static bool should_skip_rmap_item(ke_machine *m, uint32_t idx, uint32_t pfn)
{
    struct rmap_item *it = item_at(m, idx);
    uint8_t age;
    if (!m->cfg.smart_scan || m->cfg.compat_2009)
        return false;
    if (m->frames[pfn].count & FR_KSM)
        return false;
    age = it->age;
    if (age != 255)
        it->age++;
    if (age < 3)
        return false;
    if (!it->remaining_skips) {
        it->remaining_skips = (uint8_t)skip_age(age);
        return false;
    }
    m->st.pages_skipped++;
    it->remaining_skips--;
    remove_rmap_item_from_tree(m, idx);
    return true;
}

/* --- entry points --- */

int ke_ksm_configure(ke_machine *m, const struct ke_ksm_config *cfg)
{
    if (!m || !cfg || cfg->max_page_sharing < 2)
        return -EINVAL;
    m->cfg = *cfg;
    /* candidacy depends on max_page_sharing: recount every chain's */
    for (uint32_t n = 1; n < m->nodes.top; n++) {
        struct stable_node *sn = node_at(m, n);
        if (sn->kind == SN_CHAIN)
            sn->nr_candidates = 0;
    }
    for (uint32_t n = 1; n < m->nodes.top; n++) {
        struct stable_node *sn = node_at(m, n);
        if (sn->kind == SN_DUP)
            node_at(m, sn->chain)->nr_candidates += is_page_sharing_candidate_n(m, sn, 0);
    }
    return 0;
}

int ke_ksm_get_stats(const ke_machine *m, struct ke_ksm_stats *out)
{
    if (!m || !out)
        return -EINVAL;
    *out = m->st;
    out->ksm_pages = m->ksm_frames;
    return 0;
}

int ke_ksm_begin_pass(ke_machine *m, uint32_t seqnr)
{
    if (!m)
        return -EINVAL;
    m->seqnr = seqnr;
    m->unstable_root = 0; /* dropped, not freed: see the top */
    m->unstable_dirty = false;
    return 0;
}

int ke_ksm_scan_mm(ke_machine *m, uint32_t id, const struct ke_range *ranges,
                   uint32_t nranges, uint64_t cursor, uint32_t budget,
                   uint64_t now_ms, struct ke_scan_out *out)
{
    struct mm_struct *mm = mm_get(m, id);
    uint32_t r, scanned = 0;
    struct leaf_walk w;
    int64_t sum;

    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (!mm)
        return -ESRCH;
    if (nranges && !ranges)
        return -EINVAL;
    for (r = 0; r < nranges; r++) {
        if ((ranges[r].start | ranges[r].end) & (PAGE_SIZE - 1) ||
            ranges[r].start >= ranges[r].end ||
            (ranges[r].end >> PAGE_SHIFT) > VPN_END ||
            (r && ranges[r].start < ranges[r - 1].end))
            return -EINVAL;
    }
    m->now_ms = now_ms;
    prehash_reset(m); /* nothing carries over calls */
    for (r = 0; r < nranges; r++) {
        uint64_t from = ranges[r].start >> PAGE_SHIFT;
        if (cursor >> PAGE_SHIFT > from)
            from = cursor >> PAGE_SHIFT;
        FOR_EACH_LEAF(mm, &w, from, ranges[r].end >> PAGE_SHIFT) {
            uint32_t prewalked = w.first;
            for (uint32_t i = w.first; i < w.stop; i++) {
                uint32_t vpn = w.base | i, pte, idx;
                if (i == prewalked)
                    prewalked = prewalk(m, w.leaf, i, w.stop);
                pte = w.leaf->pte[i];
                if (!pte_present(pte)) {
                    leaf_item_drop(m, w.leaf, i); /* an address that vanished */
                    continue;
                }
                idx = leaf_item(m, w.leaf, i);
                if (!idx) {
                    idx = rmap_item_alloc(m, id, w.leaf, vpn);
                    if (!idx)
                        goto out_of_items;
                }
                if (should_skip_rmap_item(m, idx, pte - 1))
                    continue;
                sum = -1;
                if (needs_checksum(m, pte, idx)) {
                    sum = prehash_take(m, vpn);
                    if (sum < 0 && prehash_fill(m, mm, ranges, nranges, r, vpn,
                                                budget - scanned))
                        sum = prehash_take(m, vpn);
                }
                if (m->cfg.compat_2009)
                    cmp_and_merge_page_2009(m, idx, pte - 1, sum);
                else
                    cmp_and_merge_page(m, idx, pte - 1, sum);
                m->st.pages_scanned++;
                if (++scanned == budget) {
                    out->scanned = scanned;
                    out->cursor = ((uint64_t)vpn + 1) << PAGE_SHIFT;
                    ke_release_flush(m);
                    return 0;
                }
            }
        }
    }
    out->scanned = scanned;
    out->mm_done = 1;
    ke_release_flush(m);
    return 0;
out_of_items:
    out->scanned = scanned;
    ke_release_flush(m);
    return -ENOMEM;
}

/*
 * run=2, after the Python layer has unmerged the mergeable areas and
 * dropped the rmap_items of every registered mm: the unstable tree goes;
 * stable nodes remain only for KSM pages still mapped elsewhere, with no
 * rmap_item on them (the kernel's remove_all_stable_nodes cannot remove
 * those either).  -EBUSY if an rmap_item is left.
 */
int ke_ksm_remove_all(ke_machine *m)
{
    if (!m)
        return -EINVAL;
    m->unstable_root = 0;
    if (m->st.rmap_items)
        return -EBUSY;
    assert(m->st.pages_shared == 0 && m->st.pages_sharing == 0);
    return 0;
}
