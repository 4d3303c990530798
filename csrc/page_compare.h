/*
 * page_compare.h - how the tree walks compare pages (ksm.c's walks, and
 * readahead.c's walks ahead of them): the kernel's memcmp of two pages,
 * done in fewer memory reads with two shortcuts that give the same order.
 *
 * Content prefixes.  The records of both trees keep the first bytes of
 * their page (rmap_item.prefix: 4, stable_node.prefix: 8) as a big-endian
 * integer.  A walk compares them before touching the pages: when they
 * differ, their order is memcmp's order, and the walk avoids two cache
 * misses (the page table lookup and the page itself).  Only equal
 * prefixes fall back to comparing the pages (page_cmp_lcp, in
 * page_compare.c).
 *
 * Longest common prefixes (lcp): see struct lcp_walk.
 */
#ifndef KSM_ENGINE_PAGE_COMPARE_H
#define KSM_ENGINE_PAGE_COMPARE_H

#include "internal.h"

#pragma GCC visibility push(hidden) /* (internal: see internal.h) */

/* The prefix of a page (see top): its first 8 bytes, or 4, big endian. */
static inline uint64_t page_prefix64(const uint8_t *page)
{
    uint64_t v;
    memcpy(&v, page, 8);
    return __builtin_bswap64(v);
}

static inline uint32_t page_prefix32(const uint8_t *page)
{
    uint32_t v;
    memcpy(&v, page, 4);
    return __builtin_bswap32(v);
}

/* memcmp's sign for two pages whose prefixes a and b differ */
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
struct lcp_walk {
    uint32_t lo, hi; /* lcp with the last node gone right from, left from */
};

static inline uint32_t lcp_from(const struct lcp_walk *w)
{
    return w->lo < w->hi ? w->lo : w->hi;
}

/*
 * A walk that compared its page with a node (ret: memcmp's sign, not 0;
 * lcp: their common prefix) goes down: returns the child to take (0 left,
 * 1 right) and keeps the bound.
 */
static inline int lcp_descend(struct lcp_walk *w, int ret, uint32_t lcp)
{
    assert(ret);
    if (ret < 0) {
        w->hi = lcp;
        return 0;
    }
    w->lo = lcp;
    return 1;
}

/* The lcp of two different prefixes of `bytes` bytes (8 or 4). */
static inline uint32_t lcp_of_prefixes(uint64_t a, uint64_t b, uint32_t bytes)
{
    return (uint32_t)(__builtin_clzll(a ^ b) >> 3) - (8 - bytes);
}

/*
 * mm/ksm.c memcmp_pages(): memcmp's sign for frames a and b, whose first
 * `from` bytes the walk knows equal; *lcp gets the offset of their first
 * difference (PAGE_SIZE if none).  Counted in memcmps.  (page_compare.c:
 * out of line, as one copy of the loop serves every walk faster than a
 * copy inlined in each.)
 */
int page_cmp_lcp(ke_machine *m, uint32_t a, uint32_t b, uint32_t from,
                 uint32_t *lcp);

#pragma GCC visibility pop

#endif /* KSM_ENGINE_PAGE_COMPARE_H */
