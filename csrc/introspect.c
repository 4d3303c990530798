/*
 * introspect.c - read-only views of KSM's per-page records, for tests,
 * research and debugging: an mm's rmap_items in address order, and the
 * stable nodes.  Both page through their records: a call fills up to `max`
 * entries and returns where the next call starts (0 when done).
 */
#include "internal.h"

int ke_mm_rmap_items(const ke_machine *m, uint32_t id, uint64_t start,
                     struct ke_rmap_info *out, uint32_t max, uint32_t *n_out,
                     uint64_t *next)
{
    const struct mm_struct *mm = mm_get(m, id);
    struct leaf_walk w;
    uint32_t n = 0;

    if (!mm)
        return -ESRCH;
    if (!n_out || !next || (max && !out))
        return -EINVAL;
    *next = 0;
    FOR_EACH_LEAF(mm, &w, start >> PAGE_SHIFT, VPN_END) {
        for (uint32_t i = w.first; i < w.stop; i++) {
            const struct rmap_item *it;
            struct ke_rmap_info *o;
            rmap_id item = leaf_item(m, w.leaf, i);
            if (!item.idx)
                continue;
            if (n == max) {
                *next = (uint64_t)(w.base | i) << PAGE_SHIFT;
                *n_out = n;
                return 0;
            }
            it = item_at(m, item);
            o = &out[n++];
            o->address = (uint64_t)item_vpn(m, item) << PAGE_SHIFT;
            o->oldchecksum = it->oldchecksum;
            o->stable_node = (it->flags & RI_STABLE) ? it->node.idx : 0;
            o->state = (it->flags & RI_STABLE) ? 2 : (it->flags & RI_UNSTABLE) ? 1 : 0;
            o->age = it->age;
            o->remaining_skips = it->remaining_skips;
            o->checksum_valid = (it->flags & RI_CLEAN) != 0;
            o->seqnr = it->seqnr;
        }
    }
    *n_out = n;
    return 0;
}

int ke_ksm_stable_nodes(const ke_machine *m, uint32_t start,
                        struct ke_stable_info *out, uint32_t max,
                        uint32_t *n_out, uint32_t *next)
{
    uint32_t n = 0;
    snode_id i;
    if (!m || !n_out || !next || (max && !out))
        return -EINVAL;
    *next = 0;
    for (i.idx = start ? start : 1; i.idx < m->nodes.top; i.idx++) {
        const struct stable_node *sn = node_at(m, i);
        struct ke_stable_info *o;
        if (!sn->kind)
            continue;
        if (n == max) {
            *next = i.idx;
            break;
        }
        o = &out[n++];
        o->node = i.idx;
        o->kind = sn->kind;
        o->kpfn = sn->kind == SN_CHAIN ? PFN_NONE : sn->kpfn;
        o->chain = sn->kind == SN_DUP ? sn->chain.idx : 0;
        if (sn->kind == SN_CHAIN) {
            uint32_t count = 0;
            for (snode_id d = sn->dups; d.idx; d = node_at(m, d)->next)
                count++;
            o->rmap_hlist_len = count;
        } else {
            o->rmap_hlist_len = sn->rmap_hlist_len;
        }
    }
    *n_out = n;
    return 0;
}
