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
 *
 * Beside this file: page_compare.h (how the walks compare pages),
 * readahead.c (prehash and prewalk, the work done ahead of the scan loop:
 * read only, so no result can change), rbtree_impl.h (the two trees'
 * balancing), mm.c (the hooks' callers).
 */
#include "internal.h"
#include "page_compare.h"

/* The page KSM zero pages read as (use_zero_pages), for comparisons. */
const uint8_t zero_page[PAGE_SIZE] __attribute__((aligned(64)));

/* --- the two trees --- */

/* The unstable tree: rmap_items by their pages' content, red: RI_RED. */
#define RB_FN(name) unstable_rb_##name
#define RB_T rmap_id
#define RB_LINK(x, k) (item_at(m, x)->rb[k])
#define RB_RED(x) (item_at(m, x)->flags & RI_RED)
#define RB_SET_COLOR(x, red)                                                  \
    (item_at(m, x)->flags = (uint8_t)((item_at(m, x)->flags & ~RI_RED) |      \
                                      ((red) ? RI_RED : 0)))
#include "rbtree_impl.h"

/* The stable tree: plain stable nodes and chain heads by content. */
#define RB_FN(name) stable_rb_##name
#define RB_T snode_id
#define RB_LINK(x, k) (node_at(m, x)->rb[k])
#define RB_RED(x) (node_at(m, x)->red)
#define RB_SET_COLOR(x, c) (node_at(m, x)->red = (uint8_t)(c))
#include "rbtree_impl.h"

/* --- rmap_items --- */

/*
 * mm/ksm.c alloc_rmap_item(): makes the rmap_item of pte vpn of leaf (in
 * mm), counted; NO_RMAP when the store is full.
 */
static rmap_id rmap_item_alloc(ke_machine *m, struct mm_struct *mm,
                               struct pt_leaf *leaf, uint32_t vpn)
{
    rmap_id item = item_store_alloc(m, mm, leaf, vpn);
    if (!item.idx)
        return NO_RMAP;
    m->st.rmap_items++;
    mm->ksm_rmap_items++;
    return item;
}

/* mm/ksm.c free_rmap_item(): the item must be in no tree. */
static void rmap_item_free(ke_machine *m, rmap_id item)
{
    assert(!(item_at(m, item)->flags & (RI_STABLE | RI_UNSTABLE)));
    m->st.rmap_items--;
    item_mm(m, item)->ksm_rmap_items--;
    item_store_free(m, item);
}

/*
 * mm/ksm.c __is_page_sharing_candidate(): does stable node n hold a page
 * that can take offset + 1 more mappings?  (The 2009 KSM had no limit.)
 */
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

static void stable_node_erase(ke_machine *m, snode_id node);

/*
 * Changes a node's rmap_hlist_len by delta (+1 or -1).  A chain counts its
 * dups that can take one more mapping (nr_candidates), so that a walk that
 * would find none (every dup full: the common case once merged) is
 * skipped; stable_node_dup() then picks the head dup, as the walk would.
 */
static inline void rmap_hlist_len_add(ke_machine *m, struct stable_node *sn,
                                      int delta)
{
    bool was = is_page_sharing_candidate_n(m, sn, 0);
    assert(delta > 0 || sn->rmap_hlist_len > 0);
    sn->rmap_hlist_len += (uint32_t)delta;
    if (sn->kind == SN_DUP)
        node_at(m, sn->chain)->nr_candidates +=
            (uint32_t)is_page_sharing_candidate_n(m, sn, 0) - (uint32_t)was;
}

/*
 * mm/ksm.c remove_rmap_item_from_tree(): takes an rmap_item out of the
 * tree it is in (a stable node's list, or the unstable tree), fixing the
 * counters.  Leaves it allocated.
 */
static void remove_rmap_item_from_tree(ke_machine *m, rmap_id item)
{
    struct rmap_item *it = item_at(m, item);
    if (it->flags & RI_STABLE) {
        snode_id node = it->node;
        struct stable_node *sn = node_at(m, node);
        HLIST_DEL(m, item_at, &sn->hlist, item);
        if (sn->hlist.idx)
            m->st.pages_sharing--;
        else
            m->st.pages_shared--;
        item_mm(m, item)->ksm_merging_pages--;
        rmap_hlist_len_add(m, sn, -1);
        it->flags &= (uint8_t)~RI_STABLE;
        memset(it->rb, 0, sizeof(it->rb));
        /*
         * 2009: the stable tree's nodes were the rmap_items themselves, so
         * a KSM page whose last rmap_item left dropped out of the tree.
         */
        if (m->cfg.compat_2009 && !sn->hlist.idx) {
            frame_set_node(m, sn->kpfn, NO_SNODE);
            stable_node_erase(m, node);
        }
    } else if (it->flags & RI_UNSTABLE) {
        uint8_t age = (uint8_t)(m->seqnr - it->seqnr);
        assert(age <= 1);
        if (!age)
            unstable_rb_erase(m, &m->unstable_root, item);
        m->st.pages_unshared--;
        it->flags &= (uint8_t)~(RI_UNSTABLE | RI_RED);
        memset(it->rb, 0, sizeof(it->rb));
    }
}

/* Hangs an rmap_item on a stable node (mm/ksm.c stable_tree_append). */
static void stable_tree_append(ke_machine *m, rmap_id item, snode_id node)
{
    struct rmap_item *it = item_at(m, item);
    struct stable_node *sn = node_at(m, node);
    assert(!(it->flags & (RI_STABLE | RI_UNSTABLE)));
    assert(sn->kind == SN_PLAIN || sn->kind == SN_DUP);
    rmap_hlist_len_add(m, sn, +1);
    it->node = node;
    HLIST_ADD_HEAD(m, item_at, &sn->hlist, item);
    it->flags |= RI_STABLE;
    if (it->next.idx)
        m->st.pages_sharing++;
    else
        m->st.pages_shared++;
    item_mm(m, item)->ksm_merging_pages++;
}

/* --- hooks mm.c calls --- */

/* The item's page was written (page: its memory now). */
void ksm_item_write_hook(ke_machine *m, rmap_id item, const uint8_t *page)
{
    struct rmap_item *it = item_at(m, item);
    it->flags &= (uint8_t)~(RI_CLEAN | RI_ZERO);
    it->prefix = page_prefix32(page); /* keeps unstable tree walks exact */
    if ((it->flags & RI_UNSTABLE) && it->seqnr == (uint8_t)m->seqnr)
        m->unstable_dirty = true; /* the tree may now be out of order */
}

/* The item's pte is about to stop mapping its page (COW, unmerge). */
void ksm_item_leave_stable(ke_machine *m, rmap_id item)
{
    if (item_at(m, item)->flags & RI_STABLE)
        remove_rmap_item_from_tree(m, item);
}

/* The item's address is gone (unmap, exit, or its pte found empty). */
void ksm_item_unmap(ke_machine *m, rmap_id item)
{
    remove_rmap_item_from_tree(m, item);
    rmap_item_free(m, item);
}

/* --- stable nodes and chains --- */

/* mm/ksm.c alloc_stable_node(): a zeroed node; NO_SNODE if the pool is full. */
static snode_id stable_node_alloc(ke_machine *m, uint8_t kind)
{
    snode_id node = {pool_alloc(&m->nodes)};
    if (node.idx)
        node_at(m, node)->kind = kind;
    return node;
}

/* Unlinks a dup from its chain (mm/ksm.c __stable_node_dup_del). */
static void stable_node_dup_del(ke_machine *m, snode_id dup)
{
    struct stable_node *d = node_at(m, dup);
    struct stable_node *chain = node_at(m, d->chain);
    chain->nr_candidates -= is_page_sharing_candidate_n(m, d, 0);
    HLIST_DEL(m, node_at, &chain->dups, dup);
    d->next = d->prev = d->chain = NO_SNODE;
    m->st.stable_node_dups--;
}

/* Makes node dup a dup of chain (mm/ksm.c stable_node_chain_add_dup). */
static void stable_node_chain_add_dup(ke_machine *m, snode_id dup,
                                      snode_id chain)
{
    struct stable_node *d = node_at(m, dup), *c = node_at(m, chain);
    d->kind = SN_DUP;
    d->chain = chain;
    c->nr_candidates += is_page_sharing_candidate_n(m, d, 0);
    HLIST_ADD_HEAD(m, node_at, &c->dups, dup);
    m->st.stable_node_dups++;
}

/* mm/ksm.c free_stable_node_chain(): a chain left without dups goes. */
static void free_stable_node_chain(ke_machine *m, snode_id chain)
{
    assert(!node_at(m, chain)->dups.idx);
    stable_rb_erase(m, &m->stable_root, chain);
    pool_free(&m->nodes, chain.idx);
    m->st.stable_node_chains--;
}

/*
 * Removes a stable node (no rmap_items left) from the tree or its chain
 * and frees it; an emptied chain goes too.
 */
static void stable_node_erase(ke_machine *m, snode_id node)
{
    struct stable_node *sn = node_at(m, node);
    assert(sn->rmap_hlist_len == 0 && !sn->hlist.idx);
    if (sn->kind == SN_DUP) {
        snode_id chain = sn->chain;
        stable_node_dup_del(m, node);
        if (!node_at(m, chain)->dups.idx)
            free_stable_node_chain(m, chain);
    } else {
        assert(sn->kind == SN_PLAIN);
        stable_rb_erase(m, &m->stable_root, node);
    }
    pool_free(&m->nodes, node.idx);
}

/* A KSM frame is being freed: its stable node goes (arena.c calls this). */
void ksm_stable_node_free_frame(ke_machine *m, snode_id node)
{
    if (node.idx)
        stable_node_erase(m, node);
}

/*
 * mm/ksm.c stable_node_dup(): picks the dup of a chain to merge into: the
 * first that can take one more mapping, or, when the chain is due for
 * pruning (every prune_millisecs), the one with the most mappings that can
 * still take one.  A chain left with one dup collapses into a plain node in
 * the chain's place (*nodep is updated).  Returns the dup, NO_SNODE if none.
 */
static snode_id stable_node_dup(ke_machine *m, snode_id *nodep, bool prune)
{
    snode_id chain = *nodep, dup, found = NO_SNODE;
    uint32_t found_len = 0;
    struct stable_node *c = node_at(m, chain), *f;

    if (!prune || (uint32_t)m->now_ms - c->chain_prune_time < m->cfg.prune_millisecs)
        prune = false;
    else
        c->chain_prune_time = (uint32_t)m->now_ms;

    if (!prune && !c->nr_candidates)
        found = c->dups; /* the walk below would end there, having found no candidate */
    else for (dup = c->dups; dup.idx; dup = node_at(m, dup)->next) {
        struct stable_node *d = node_at(m, dup);
        if (!found.idx || (is_page_sharing_candidate_n(m, d, 0) &&
                           (!is_page_sharing_candidate_n(m, node_at(m, found), 0) ||
                            d->rmap_hlist_len > found_len))) {
            found = dup;
            found_len = d->rmap_hlist_len;
            if (!prune && is_page_sharing_candidate_n(m, d, 0))
                break;
        }
    }
    if (!found.idx)
        return NO_SNODE;
    f = node_at(m, found);
    if (same_snode(c->dups, found) && !f->next.idx) {
        /* just one dup: drop the chain */
        stable_node_dup_del(m, found);
        f->kind = SN_PLAIN;
        stable_rb_replace(m, &m->stable_root, chain, found);
        pool_free(&m->nodes, chain.idx);
        m->st.stable_node_chains--;
        *nodep = found;
    } else if (!same_snode(c->dups, found) && is_page_sharing_candidate_n(m, f, 1)) {
        /* move it to the head so the next search finds it first */
        HLIST_DEL(m, node_at, &c->dups, found);
        HLIST_ADD_HEAD(m, node_at, &c->dups, found);
    }
    return found;
}

/*
 * mm/ksm.c __stable_node_chain(): for a plain node, itself; for a chain,
 * the dup stable_node_dup() picks.  Returns the frame to compare with
 * (PFN_NONE if the chain had no dup) and sets *dupp.
 */
static uint32_t stable_node_chain(ke_machine *m, snode_id *dupp,
                                  snode_id *nodep, bool prune)
{
    struct stable_node *sn = node_at(m, *nodep);
    if (sn->kind != SN_CHAIN) {
        *dupp = *nodep;
        return sn->kpfn;
    }
    *dupp = stable_node_dup(m, nodep, prune);
    if (!dupp->idx) {
        /* a chain's dup list may hold full dups only: any is the content */
        snode_id any = node_at(m, *nodep)->dups;
        return any.idx ? node_at(m, any)->kpfn : PFN_NONE;
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
                           bool page_zero, snode_id *curp, snode_id *dupp,
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
 * mm/ksm.c stable_tree_search(): searches the stable tree for a KSM page
 * with the content of frame pfn that can take one more mapping.  Returns
 * its frame and sets *nodep to its stable node, or returns PFN_NONE.  A
 * page that is itself KSM (shared by fork) finds itself.  page_zero: the
 * page is known to be all zero.  Chains are pruned on the way, as the
 * kernel's walk does.
 */
static uint32_t stable_tree_search(ke_machine *m, uint32_t pfn, bool page_zero,
                                   snode_id *nodep)
{
    snode_id cur = m->stable_root, dup;
    struct lcp_walk b = {0, 0};
    uint32_t lcp;
    uint64_t prefix;
    int ret;

    if (m->frames[pfn].count & FR_KSM && frame_node(m, pfn).idx) {
        *nodep = frame_node(m, pfn);
        return pfn;
    }
    if (!cur.idx)
        return PFN_NONE; /* (and the page's memory is not touched) */
    prefix = page_prefix64(frame_mem(m, pfn));
    while (cur.idx) {
        ret = stable_walk_cmp(m, pfn, prefix, page_zero, &cur, &dup, true,
                              lcp_from(&b), &lcp);
        if (!ret) {
            if (!dup.idx || !is_page_sharing_candidate(m, node_at(m, dup)))
                return PFN_NONE; /* every copy full: go via unstable tree */
            *nodep = dup;
            return node_at(m, dup)->kpfn;
        }
        cur = node_at(m, cur)->rb[lcp_descend(&b, ret, lcp)];
    }
    return PFN_NONE;
}

/*
 * mm/ksm.c stable_tree_insert(): puts the KSM page kpfn into the stable
 * tree: a new plain node, or a new dup under the chain of its content
 * (making the chain if needed).  Returns the new node, NO_SNODE on failure
 * (allocation, or injected fault).  page_zero: the page is known to be all
 * zero (the nodes of its content say so).
 */
static snode_id stable_tree_insert(ke_machine *m, uint32_t kpfn, bool page_zero)
{
    snode_id cur = m->stable_root, parent = NO_SNODE, dup, node;
    uint64_t prefix = page_prefix64(frame_mem(m, kpfn));
    struct lcp_walk b = {0, 0};
    uint32_t lcp;
    int ret = 0;

    while (cur.idx) {
        ret = stable_walk_cmp(m, kpfn, prefix, page_zero, &cur, &dup, false,
                              lcp_from(&b), &lcp);
        parent = cur;
        if (!ret)
            break; /* its content is there: a chain takes both */
        cur = node_at(m, cur)->rb[lcp_descend(&b, ret, lcp)];
    }
    if (fault_fires(m, KE_FAULT_STABLE_INSERT))
        return NO_SNODE;
    node = stable_node_alloc(m, SN_PLAIN);
    if (!node.idx)
        return NO_SNODE;
    node_at(m, node)->kpfn = kpfn;
    node_at(m, node)->prefix = prefix;
    node_at(m, node)->zero = page_zero;
    if (!cur.idx) {
        stable_rb_link(m, &m->stable_root, node, parent, ret > 0);
        stable_rb_insert_color(m, &m->stable_root, node);
    } else {
        snode_id chain = cur;
        if (node_at(m, cur)->kind != SN_CHAIN) {
            chain = stable_node_alloc(m, SN_CHAIN);
            if (!chain.idx) {
                pool_free(&m->nodes, node.idx);
                return NO_SNODE;
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
    frame_set_node(m, kpfn, node);
    return node;
}

/*
 * mm/ksm.c unstable_tree_search_insert(): searches the unstable tree for a
 * page with pfn's content; if there is one, returns its rmap_item (and its
 * frame in *tree_pfnp), else inserts item and returns NO_RMAP.  As in the
 * kernel, no insertion happens when the walk meets this very frame (a page
 * shared by fork) or an item with no page.
 */
static rmap_id unstable_tree_search_insert(ke_machine *m, rmap_id item,
                                           uint32_t pfn, uint32_t *tree_pfnp)
{
    struct rmap_item *it = item_at(m, item);
    bool page_zero = item_zero(it);
    rmap_id cur = m->unstable_root, parent = NO_RMAP;
    uint32_t prefix = page_prefix32(frame_mem(m, pfn)), tree_pfn, lcp;
    struct lcp_walk b = {0, 0};
    int ret = 0;

    while (cur.idx) {
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
                return NO_RMAP;
            if (page_zero && item_zero(t)) {
                /* both known all zero: equal, without reading either page */
                assert(!memcmp(frame_mem(m, pfn), frame_mem(m, tree_pfn), PAGE_SIZE));
                ret = 0;
            } else {
                ret = page_cmp_lcp(m, pfn, tree_pfn,
                                   m->unstable_dirty ? 0 : lcp_from(&b), &lcp);
            }
            if (!ret) {
                *tree_pfnp = tree_pfn;
                return cur;
            }
        }
        parent = cur;
        cur = t->rb[lcp_descend(&b, ret, lcp)];
    }
    it->flags |= RI_UNSTABLE;
    it->seqnr = (uint8_t)m->seqnr;
    it->prefix = prefix;
    unstable_rb_link(m, &m->unstable_root, item, parent, ret > 0);
    unstable_rb_insert_color(m, &m->unstable_root, item);
    m->st.pages_unshared++;
    return NO_RMAP;
}

/* --- merging --- */

/* A used frame becomes a KSM page (its stable node is set later). */
static void frame_make_ksm(ke_machine *m, uint32_t pfn)
{
    assert(!(m->frames[pfn].count & FR_KSM));
    m->frames[pfn].count |= FR_KSM;
    frame_set_node(m, pfn, NO_SNODE);
    m->ksm_frames++;
}

/* Points the item's pte at kpfn instead of its present frame (replace_page). */
static void replace_page(ke_machine *m, rmap_id item, uint32_t kpfn)
{
    uint32_t *pte = item_pte(m, item), old = *pte - 1;
    assert(pte_present(*pte));
    m->frames[kpfn].count++;
    *pte = kpfn + 1;
    frame_put(m, old);
}

/*
 * mm/ksm.c try_to_merge_one_page(): merges the item's page pfn into the
 * KSM page kpfn, whose contents the caller found identical.  Cannot fail
 * here: the kernel's can, when the page changed or was pinned between the
 * tree walk and the merge (it compares the pages again: pages_identical),
 * but nothing runs between the two here, so the walk's memcmp stands.
 */
static void try_to_merge_one_page(ke_machine *m, rmap_id item, uint32_t pfn,
                                  uint32_t kpfn)
{
    assert(!memcmp(frame_mem(m, pfn), frame_mem(m, kpfn), PAGE_SIZE));
    if (pfn != kpfn) /* (equal: a KSM page shared by fork) */
        replace_page(m, item, kpfn);
}

/* Breaks sharing of an item's KSM page; never fails (see the top). */
static void break_cow(ke_machine *m, rmap_id item)
{
    uint32_t i, pfn;
    struct pt_leaf *leaf = item_leaf(m, item, &i);
    if (!pte_present(leaf->pte[i]))
        return;
    pfn = leaf->pte[i] - 1;
    if (!(m->frames[pfn].count & FR_KSM))
        return;
    if (break_cow_pte(m, item_mm(m, item), leaf, i) == 0)
        return;
    /*
     * No frame to copy into: the page stays shared as an ordinary
     * copy-on-write page, which is just as safe for the processes.
     */
    if (!frame_node(m, pfn).idx) {
        m->frames[pfn].count &= ~FR_KSM;
        m->ksm_frames--;
    }
}

/*
 * mm/ksm.c try_to_merge_with_zero_page(): a page whose checksum is the
 * zero page's, and which is all zero, is replaced by the zero page.
 */
static int try_to_merge_with_zero_page(ke_machine *m, rmap_id item,
                                       uint32_t pfn)
{
    struct rmap_item *it = item_at(m, item);
    struct mm_struct *mm = item_mm(m, item);

    if (!m->cfg.use_zero_pages || it->oldchecksum != m->zero_checksum)
        return -EFAULT;
    if (!item_zero(it)) {
        m->st.memcmps++;
        if (memcmp(frame_mem(m, pfn), zero_page, PAGE_SIZE))
            return -EFAULT;
    }
    assert(!memcmp(frame_mem(m, pfn), zero_page, PAGE_SIZE));
    *item_pte(m, item) = PTE_ZERO;
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
static uint32_t try_to_merge_two_pages(ke_machine *m, rmap_id item,
                                       uint32_t pfn, rmap_id tree_item,
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
        replace_page(m, item, kpfn);
        replace_page(m, tree_item, kpfn);
        frame_put(m, kpfn);
        return kpfn;
    }
    frame_make_ksm(m, pfn);
    try_to_merge_one_page(m, tree_item, tree_pfn, pfn);
    return pfn;
}

/*
 * The last step of cmp_and_merge_page (both versions): look for the page's
 * twin in the unstable tree (inserting the page if there is none); with a
 * twin, make one KSM page of the two, put it in the stable tree and hang
 * both rmap_items on it, tree item first; if the stable tree will not take
 * it, break COW on both again.
 */
static void merge_via_unstable_tree(ke_machine *m, rmap_id item, uint32_t pfn)
{
    uint32_t tree_pfn = PFN_NONE, kpfn;
    rmap_id tree_item = unstable_tree_search_insert(m, item, pfn, &tree_pfn);
    snode_id knode;
    if (!tree_item.idx)
        return;
    kpfn = try_to_merge_two_pages(m, item, pfn, tree_item, tree_pfn);
    if (kpfn == PFN_NONE)
        return;
    remove_rmap_item_from_tree(m, tree_item);
    knode = stable_tree_insert(m, kpfn, item_zero(item_at(m, item)));
    if (knode.idx) {
        stable_tree_append(m, tree_item, knode);
        stable_tree_append(m, item, knode);
    } else {
        break_cow(m, tree_item);
        break_cow(m, item);
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
static void cmp_and_merge_page(ke_machine *m, rmap_id item, uint32_t pfn,
                               int64_t precomputed)
{
    struct rmap_item *it = item_at(m, item);
    snode_id node = NO_SNODE, knode;
    uint32_t kpfn;

    if (m->frames[pfn].count & FR_KSM)
        node = frame_node(m, pfn);
    if (node.idx) {
        if ((it->flags & RI_STABLE) && same_snode(it->node, node))
            return;
        /* (a KSM fork may go over max_page_sharing: append anyway) */
    } else {
        remove_rmap_item_from_tree(m, item);
        if (!checksum_unchanged(m, it, pfn, precomputed))
            return;
        if (!try_to_merge_with_zero_page(m, item, pfn))
            return;
    }

    kpfn = stable_tree_search(m, pfn, item_zero(it), &knode);
    remove_rmap_item_from_tree(m, item);
    if (kpfn != PFN_NONE) {
        try_to_merge_one_page(m, item, pfn, kpfn);
        stable_tree_append(m, item, knode);
        return;
    }

    merge_via_unstable_tree(m, item, pfn);
}

/*
 * The 2009 cmp_and_merge_page (Linux 2.6.32): the stable tree is searched
 * before the checksum test, a KSM page that fell out of the stable tree is
 * broken, the checksum is jhash2, and there are no zero pages or chains.
 * As the seed's ksm_do_scan(), a KSM page whose rmap_item is in the stable
 * tree is left alone, even when it is the page's last mapping.
 */
static void cmp_and_merge_page_2009(ke_machine *m, rmap_id item, uint32_t pfn,
                                    int64_t precomputed)
{
    struct rmap_item *it = item_at(m, item);
    snode_id knode;
    uint32_t kpfn;

    if ((m->frames[pfn].count & FR_KSM) && (it->flags & RI_STABLE))
        return;
    remove_rmap_item_from_tree(m, item);
    kpfn = stable_tree_search(m, pfn, false, &knode);
    if (kpfn != PFN_NONE) {
        try_to_merge_one_page(m, item, pfn, kpfn);
        stable_tree_append(m, item, knode);
        return;
    }
    if (m->frames[pfn].count & FR_KSM) {
        break_cow(m, item);
        pfn = item_pfn(m, item);
    }
    if (checksum_unchanged(m, it, pfn, precomputed))
        merge_via_unstable_tree(m, item, pfn);
}

/* mm/ksm.c skip_age(): the passes smart_scan skips a page of this age. */
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
static bool should_skip_rmap_item(ke_machine *m, rmap_id item, uint32_t pfn)
{
    struct rmap_item *it = item_at(m, item);
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
    remove_rmap_item_from_tree(m, item);
    return true;
}

/* --- entry points --- */

int ke_ksm_configure(ke_machine *m, const struct ke_ksm_config *cfg)
{
    if (!m || !cfg || cfg->max_page_sharing < 2)
        return -EINVAL;
    m->cfg = *cfg;
    /* candidacy depends on max_page_sharing: recount every chain's */
    for (snode_id n = {1}; n.idx < m->nodes.top; n.idx++)
        if (node_at(m, n)->kind == SN_CHAIN)
            node_at(m, n)->nr_candidates = 0;
    for (snode_id n = {1}; n.idx < m->nodes.top; n.idx++)
        if (node_at(m, n)->kind == SN_DUP)
            node_at(m, node_at(m, n)->chain)->nr_candidates +=
                is_page_sharing_candidate_n(m, node_at(m, n), 0);
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
    m->unstable_root = NO_RMAP; /* dropped, not freed: see the top */
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
    int err = 0;

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
                uint32_t vpn = w.base | i, pte;
                rmap_id item;
                if (i == prewalked)
                    prewalked = prewalk(m, w.leaf, i, w.stop);
                pte = w.leaf->pte[i];
                if (!pte_present(pte)) {
                    leaf_item_drop(m, w.leaf, i); /* an address that vanished */
                    continue;
                }
                item = leaf_item(m, w.leaf, i);
                if (!item.idx) {
                    item = rmap_item_alloc(m, mm, w.leaf, vpn);
                    if (!item.idx) {
                        err = -ENOMEM;
                        goto out;
                    }
                }
                if (should_skip_rmap_item(m, item, pte - 1))
                    continue;
                sum = -1;
                if (needs_checksum(m, pte, item)) {
                    sum = prehash_take(m, vpn);
                    if (sum < 0 && prehash_fill(m, mm, ranges, nranges, r, vpn,
                                                budget - scanned))
                        sum = prehash_take(m, vpn);
                }
                if (m->cfg.compat_2009)
                    cmp_and_merge_page_2009(m, item, pte - 1, sum);
                else
                    cmp_and_merge_page(m, item, pte - 1, sum);
                m->st.pages_scanned++;
                if (++scanned == budget) {
                    out->cursor = ((uint64_t)vpn + 1) << PAGE_SHIFT;
                    goto out;
                }
            }
        }
    }
    out->mm_done = 1;
out:
    out->scanned = scanned;
    ke_release_flush(m);
    return err;
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
    m->unstable_root = NO_RMAP;
    if (m->st.rmap_items)
        return -EBUSY;
    assert(m->st.pages_shared == 0 && m->st.pages_sharing == 0);
    return 0;
}
