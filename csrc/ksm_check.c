/*
 * ksm_check.c - ke_ksm_check(): recomputes every counter and cross link
 * of the core from scratch and compares.  Tests call it after every step of
 * their stateful runs; it is O(mapped pages) and not for hot paths.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define FAIL(...)                                                             \
    do {                                                                      \
        if (msg && msglen)                                                    \
            snprintf(msg, msglen, __VA_ARGS__);                               \
        err = -EUCLEAN;                                                       \
        goto out;                                                             \
    } while (0)

static bool page_is_zero(const ke_machine *m, uint32_t pfn)
{
    const uint8_t *p = frame_mem(m, pfn);
    for (uint32_t i = 0; i < PAGE_SIZE; i++)
        if (p[i])
            return false;
    return true;
}

int ke_ksm_check(const ke_machine *m, char *msg, size_t msglen)
{
    uint32_t *maps = NULL, *node_items = NULL;
    uint64_t nfree = 0, nused = 0, nballoon = 0, nksm = 0, listed = 0;
    uint64_t items = 0, chunks = 0, unshared = 0, zero = 0, shared = 0, sharing = 0;
    uint64_t chains = 0, dups = 0;
    uint32_t pfn, id, n;
    int err = 0;

    if (!m)
        return -EINVAL;
    if (msg && msglen)
        msg[0] = 0;
    maps = calloc(m->nr_frames, sizeof(uint32_t));
    node_items = calloc(m->nodes.top, sizeof(uint32_t));
    if (!maps || !node_items) {
        free(maps);
        free(node_items);
        return -ENOMEM;
    }
    for (pfn = m->free_head; pfn != PFN_NONE; pfn = m->frames[pfn].aux) {
        if (pfn >= m->fresh || ++listed > m->nr_frames)
            FAIL("free list corrupt at %u", pfn);
    }
    if (m->fresh > m->nr_frames || (!listed && m->fresh < m->nr_frames))
        FAIL("fresh %u of %u frames, %lu listed", m->fresh, m->nr_frames,
             (unsigned long)listed);
    listed += m->nr_frames - m->fresh; /* never used: free, not listed */
    for (id = 1; id < m->mm_top; id++) {
        const struct mm_struct *mm = &m->mms[id];
        uint64_t rss = 0, mz = 0, mi = 0, merging = 0;
        struct leaf_walk w;
        if (!mm->top)
            continue;
        FOR_EACH_LEAF(mm, &w, 0, VPN_END) {
            const struct pt_leaf *leaf = w.leaf;
            uint32_t used = 0, litems = 0;
            for (uint32_t i = 0; i < PT_LEAF_SIZE; i++) {
                uint32_t pte = leaf->pte[i], vpn = w.base | i;
                rmap_id item = leaf_item(m, leaf, i);
                uint32_t idx = item.idx;
                used += pte || idx;
                if (pte == PTE_ZERO) {
                    mz++;
                } else if (pte) {
                    if (pte - 1 >= m->nr_frames)
                        FAIL("mm %u vpn %u: bad pte", id, vpn);
                    maps[pte - 1]++;
                    rss++;
                }
                if (idx) {
                    const struct rmap_item *it = item_at(m, item);
                    if (!(it->flags & RI_INUSE))
                        FAIL("mm %u vpn %u: bad rmap_item", id, vpn);
                    if (item_chunk(m, item)->leaf != leaf ||
                        item_mm(m, item) != mm || item_vpn(m, item) != vpn)
                        FAIL("mm %u vpn %u: item %u names mm %u vpn %u", id, vpn,
                             idx, item_chunk(m, item)->mm, item_vpn(m, item));
                    mi++;
                    litems++;
                    if ((it->flags & (RI_CLEAN | RI_ZERO)) == (RI_CLEAN | RI_ZERO) &&
                        (!pte || (pte != PTE_ZERO && !page_is_zero(m, pte - 1))))
                        FAIL("item %u: known all zero, its page is not", idx);
                    if (it->flags & RI_UNSTABLE)
                        unshared++;
                    if (it->flags & RI_STABLE) {
                        uint32_t node = it->node.idx;
                        if (!node || node >= m->nodes.top)
                            FAIL("item %u: bad stable node", idx);
                        if (!pte_present(pte) || node_at(m, it->node)->kpfn != pte - 1)
                            FAIL("item %u: pte does not map its KSM page",
                                 idx);
                        node_items[node]++;
                        merging++;
                    }
                }
            }
            if (leaf->rchunk) {
                const struct rmap_chunk *c = &m->items.chunks[leaf->rchunk];
                chunks++;
                if (leaf->rchunk >= m->items.top || c->leaf != leaf ||
                    c->mm != id || !litems || c->nr_items != litems)
                    FAIL("mm %u leaf at vpn %u: chunk %u holds %u items, counted %u",
                         id, w.base, leaf->rchunk, c->nr_items, litems);
            }
            if (used != leaf->nr_used)
                FAIL("mm %u leaf at vpn %u: nr_used %u, counted %u", id, w.base,
                     leaf->nr_used, used);
        }
        if (rss != mm->rss_pages || mz != mm->ksm_zero_pages ||
            mi != mm->ksm_rmap_items || merging != mm->ksm_merging_pages)
            FAIL("mm %u: counters rss %lu/%lu zero %lu/%lu items %lu/%lu "
                 "merging %lu/%lu", id, (unsigned long)rss,
                 (unsigned long)mm->rss_pages, (unsigned long)mz,
                 (unsigned long)mm->ksm_zero_pages, (unsigned long)mi,
                 (unsigned long)mm->ksm_rmap_items, (unsigned long)merging,
                 (unsigned long)mm->ksm_merging_pages);
        items += mi;
        zero += mz;
    }
    for (pfn = 0; pfn < m->nr_frames; pfn++) {
        uint32_t c = m->frames[pfn].count;
        if (pfn >= m->fresh && (c || m->frames[pfn].aux || maps[pfn]))
            FAIL("never used frame %u is in use", pfn);
        if (c & FR_BALLOON) {
            nballoon++;
            if (maps[pfn])
                FAIL("balloon frame %u is mapped", pfn);
        } else if (c & FR_USED) {
            nused++;
            if ((c & FR_MAPCOUNT_MASK) != maps[pfn])
                FAIL("frame %u: mapcount %u, mapped %u times", pfn,
                     c & FR_MAPCOUNT_MASK, maps[pfn]);
            if (c & FR_KSM) {
                snode_id node = frame_node(m, pfn);
                nksm++;
                if (node.idx && (node.idx >= m->nodes.top ||
                                 node_at(m, node)->kpfn != pfn))
                    FAIL("KSM frame %u: stable node %u does not name it",
                         pfn, node.idx);
            }
        } else {
            nfree++;
            if (maps[pfn])
                FAIL("free frame %u is mapped", pfn);
        }
    }
    if (nfree != m->free_frames || listed != nfree || nused != m->used_frames ||
        nballoon != m->balloon_frames || nksm != m->ksm_frames ||
        nfree + nused + nballoon != m->nr_frames)
        FAIL("frames: free %lu/%lu (listed %lu) used %lu/%lu balloon %lu/%lu "
             "ksm %lu/%lu", (unsigned long)nfree, (unsigned long)m->free_frames,
             (unsigned long)listed, (unsigned long)nused,
             (unsigned long)m->used_frames, (unsigned long)nballoon,
             (unsigned long)m->balloon_frames, (unsigned long)nksm,
             (unsigned long)m->ksm_frames);
    for (n = 1; n < m->nodes.top; n++) {
        const struct stable_node *sn = node_at(m, (snode_id){n});
        if (!sn->kind)
            continue;
        if (sn->kind == SN_CHAIN) {
            uint32_t cand = 0;
            chains++;
            if (!sn->dups.idx)
                FAIL("chain %u has no dups", n);
            for (snode_id d = sn->dups; d.idx; d = node_at(m, d)->next) {
                const struct stable_node *dn = node_at(m, d);
                if (dn->kind != SN_DUP || dn->chain.idx != n)
                    FAIL("chain %u: dup %u does not name it", n, d.idx);
                cand += dn->rmap_hlist_len && dn->rmap_hlist_len < m->cfg.max_page_sharing;
            }
            if (cand != sn->nr_candidates)
                FAIL("chain %u: nr_candidates %u, counted %u", n, sn->nr_candidates, cand);
            continue;
        }
        if (sn->kind == SN_DUP)
            dups++;
        if (sn->zero && !page_is_zero(m, sn->kpfn))
            FAIL("stable node %u: known all zero, frame %u is not", n, sn->kpfn);
        if (!(m->frames[sn->kpfn].count & FR_KSM) ||
            frame_node(m, sn->kpfn).idx != n)
            FAIL("stable node %u: frame %u is not its KSM page", n, sn->kpfn);
        if (node_items[n] != sn->rmap_hlist_len)
            FAIL("stable node %u: rmap_hlist_len %u, items %u", n,
                 sn->rmap_hlist_len, node_items[n]);
        if (sn->rmap_hlist_len) {
            shared++;
            sharing += sn->rmap_hlist_len - 1;
        }
    }
    if (items != m->st.rmap_items || items != m->items.in_use ||
        chunks != m->items.chunks_in_use ||
        unshared != m->st.pages_unshared || zero != m->st.ksm_zero_pages ||
        shared != m->st.pages_shared || sharing != m->st.pages_sharing ||
        chains != m->st.stable_node_chains || dups != m->st.stable_node_dups)
        FAIL("ksm counters: items %lu/%lu/%u chunks %lu/%u unshared %lu/%lu zero %lu/%lu "
             "shared %lu/%lu sharing %lu/%lu chains %lu/%lu dups %lu/%lu",
             (unsigned long)items, (unsigned long)m->st.rmap_items,
             (unsigned)m->items.in_use, (unsigned long)chunks,
             m->items.chunks_in_use, (unsigned long)unshared,
             (unsigned long)m->st.pages_unshared, (unsigned long)zero,
             (unsigned long)m->st.ksm_zero_pages, (unsigned long)shared,
             (unsigned long)m->st.pages_shared, (unsigned long)sharing,
             (unsigned long)m->st.pages_sharing, (unsigned long)chains,
             (unsigned long)m->st.stable_node_chains, (unsigned long)dups,
             (unsigned long)m->st.stable_node_dups);
out:
    free(maps);
    free(node_items);
    return err;
}
