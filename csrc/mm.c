/*
 * mm.c - synthetic processes: page tables, bulk read and write, fork,
 * unmap, copy-on-write, and breaking KSM sharing.
 *
 * A pte maps nothing (reads zero, costs no frame), a frame (pfn + 1), or
 * the shared zero page KSM put there (PTE_ZERO: reads zero, costs no frame,
 * counted in ksm_zero_pages).  A frame mapped once and not KSM is written
 * in place; a frame mapped more than once (after fork) or a KSM frame is
 * copied first: copy-on-write.  Writes are all-or-nothing: the frames a
 * write needs are counted before any byte moves, and if the free list is
 * short the call returns -ENOMEM with *frames_short set and nothing changed,
 * so the Python layer can run the OOM notifiers and retry.
 *
 * KSM sees every change of a pte that carries an rmap_item through the
 * hooks in ksm.c: a write marks the item's checksum stale, a COW break
 * takes the item off its stable node at once (so pages_shared and
 * pages_sharing never count a mapping that is gone), an unmap frees it.
 */
#include <stdlib.h>

#include "internal.h"

#define POPULATE_MIN_PAGES 64 /* writes taking this many frames fault them in first */

struct mm_struct *mm_get(const ke_machine *m, uint32_t mm)
{
    if (!m || mm == 0 || mm >= m->mm_top || !m->mms[mm].top)
        return NULL;
    return &m->mms[mm];
}

struct pt_leaf *pt_leaf_lookup(const struct mm_struct *mm, uint32_t vpn)
{
    struct pt_mid *mid = mm->top[vpn >> (PT_LEAF_BITS + PT_MID_BITS)];
    if (!mid)
        return NULL;
    return mid->leaf[(vpn >> PT_LEAF_BITS) & (PT_MID_SIZE - 1)];
}

/*
 * The leaf covering vpn, allocated (empty) if missing; NULL on ENOMEM, with
 * nothing allocated (a middle table made for this leaf goes again: no leaf
 * would ever free it).
 */
struct pt_leaf *pt_leaf_alloc(struct mm_struct *mm, uint32_t vpn)
{
    struct pt_mid **midp = &mm->top[vpn >> (PT_LEAF_BITS + PT_MID_BITS)];
    struct pt_leaf **leafp;
    if (!*midp) {
        *midp = calloc(1, sizeof(struct pt_mid));
        if (!*midp)
            return NULL;
    }
    leafp = &(*midp)->leaf[(vpn >> PT_LEAF_BITS) & (PT_MID_SIZE - 1)];
    if (!*leafp) {
        *leafp = calloc(1, sizeof(struct pt_leaf));
        if (!*leafp) {
            if (!(*midp)->nr_leaves) {
                free(*midp);
                *midp = NULL;
            }
            return NULL;
        }
        (*midp)->nr_leaves++;
    }
    return *leafp;
}

/* Frees the leaf covering vpn if nothing in it is used any more. */
static void pt_leaf_maybe_free(struct mm_struct *mm, uint32_t vpn)
{
    struct pt_mid **midp = &mm->top[vpn >> (PT_LEAF_BITS + PT_MID_BITS)];
    struct pt_leaf **leafp;
    if (!*midp)
        return;
    leafp = &(*midp)->leaf[(vpn >> PT_LEAF_BITS) & (PT_MID_SIZE - 1)];
    if (!*leafp || (*leafp)->nr_used)
        return;
    assert(!(*leafp)->rchunk); /* its rmap_items count in nr_used */
    free(*leafp);
    *leafp = NULL;
    if (--(*midp)->nr_leaves == 0) {
        free(*midp);
        *midp = NULL;
    }
}

int ke_mm_new(ke_machine *m, uint32_t *mm_out)
{
    uint32_t id;
    struct mm_struct *mm;
    if (!m || !mm_out)
        return -EINVAL;
    id = m->mm_free_head;
    if (id) {
        m->mm_free_head = m->mms[id].next_free;
    } else {
        if (m->mm_top >= KE_MAX_MMS)
            return -EAGAIN;
        id = m->mm_top++;
    }
    mm = &m->mms[id];
    memset(mm, 0, sizeof(*mm));
    mm->top = calloc(PT_TOP_SIZE, sizeof(struct pt_mid *));
    if (!mm->top) {
        mm->next_free = m->mm_free_head;
        m->mm_free_head = id;
        return -ENOMEM;
    }
    *mm_out = id;
    return 0;
}

/*
 * Frees the rmap_item of pte i of leaf, if it has one, and with it the
 * slot's place in nr_used when no pte holds that (see struct pt_leaf).
 */
void leaf_item_drop(ke_machine *m, struct pt_leaf *leaf, uint32_t i)
{
    rmap_id item = leaf_item(m, leaf, i);
    if (!item.idx)
        return;
    ksm_item_unmap(m, item);
    if (leaf->pte[i] == PTE_NONE)
        leaf->nr_used--;
}

/* Clears pte i of leaf and everything hanging on it. */
static void pte_zap(ke_machine *m, struct mm_struct *mm, struct pt_leaf *leaf,
                    uint32_t i)
{
    uint32_t pte = leaf->pte[i];
    leaf_item_drop(m, leaf, i);
    if (!pte)
        return;
    leaf->pte[i] = PTE_NONE;
    leaf->nr_used--;
    if (pte == PTE_ZERO) {
        mm->ksm_zero_pages--;
        m->st.ksm_zero_pages--;
        return;
    }
    mm->rss_pages--;
    frame_put(m, pte - 1);
}

/*
 * The calls over bytes: -EFAULT unless [addr, addr + len) lies in the
 * address space.
 */
static int byte_range_ok(uint64_t addr, uint64_t len)
{
    return addr < TASK_END && len <= TASK_END - addr ? 0 : -EFAULT;
}

/*
 * The arguments of the calls over whole pages: the mm of id (-ESRCH) and
 * the vpns [*from, *to) of the page aligned byte range [addr, addr + len)
 * inside the address space (-EINVAL).
 */
static int mm_page_range(const ke_machine *m, uint32_t id, uint64_t addr,
                         uint64_t len, struct mm_struct **mmp, uint64_t *from,
                         uint64_t *to)
{
    *mmp = mm_get(m, id);
    if (!*mmp)
        return -ESRCH;
    if ((addr | len) & (PAGE_SIZE - 1) || byte_range_ok(addr, len))
        return -EINVAL;
    *from = addr >> PAGE_SHIFT;
    *to = (addr + len) >> PAGE_SHIFT;
    return 0;
}

/*
 * Where page vpn meets the byte range [addr, addr + len), which it must:
 * returns the offset in the page, and sets *at to the offset in the range
 * and *chunk to the bytes in common.
 */
static inline uint64_t page_span(uint64_t addr, uint64_t len, uint64_t vpn,
                                 uint64_t *at, uint64_t *chunk)
{
    uint64_t start = vpn << PAGE_SHIFT, off = 0;
    if (start < addr) {
        off = addr - start;
        start = addr;
    }
    *at = start - addr;
    *chunk = PAGE_SIZE - off;
    if (*chunk > len - *at)
        *chunk = len - *at;
    return off;
}

/*
 * Can a call that needs `need` new frames go ahead?  -ENOMEM if not (or
 * if an injected fault says so), with *frames_short (if given) set to how
 * many frames are missing, at least 1.
 */
static int frames_reserve(ke_machine *m, uint64_t need, uint64_t *frames_short)
{
    if (need <= m->free_frames && !(need && fault_fires(m, KE_FAULT_FRAME_ALLOC)))
        return 0;
    if (frames_short)
        *frames_short = need > m->free_frames ? need - m->free_frames : 1;
    return -ENOMEM;
}

/*
 * Over whole pages of mm id: clears the ptes and everything hanging on
 * them (zap), or drops the rmap_items only; frees the leaves left empty.
 */
static int mm_clear(ke_machine *m, uint32_t id, uint64_t addr, uint64_t len,
                    bool zap)
{
    struct mm_struct *mm;
    struct leaf_walk w;
    uint64_t from, to;
    int err = mm_page_range(m, id, addr, len, &mm, &from, &to);
    if (err)
        return err;
    FOR_EACH_LEAF(mm, &w, from, to) {
        for (uint32_t i = w.first; i < w.stop; i++) {
            if (zap)
                pte_zap(m, mm, w.leaf, i);
            else
                leaf_item_drop(m, w.leaf, i);
        }
        pt_leaf_maybe_free(mm, w.base);
    }
    ke_release_flush(m);
    return 0;
}

int ke_mm_unmap(ke_machine *m, uint32_t id, uint64_t addr, uint64_t len)
{
    return mm_clear(m, id, addr, len, true);
}

int ke_mm_destroy(ke_machine *m, uint32_t id)
{
    struct mm_struct *mm = mm_get(m, id);
    int err;
    if (!mm)
        return -ESRCH;
    err = ke_mm_unmap(m, id, 0, TASK_END);
    assert(!err);
    (void)err;
    assert(mm->rss_pages == 0 && mm->ksm_rmap_items == 0);
    assert(mm->ksm_zero_pages == 0 && mm->ksm_merging_pages == 0);
    free(mm->top);
    mm->top = NULL;
    mm->next_free = m->mm_free_head;
    m->mm_free_head = id;
    return 0;
}

int ke_mm_fork(ke_machine *m, uint32_t parent, uint32_t child)
{
    struct mm_struct *pm = mm_get(m, parent), *cm = mm_get(m, child);
    struct leaf_walk w;
    if (!pm || !cm || parent == child)
        return -ESRCH;
    if (cm->rss_pages || cm->ksm_zero_pages || cm->ksm_rmap_items)
        return -EINVAL; /* the child must be a fresh mm */
    FOR_EACH_LEAF(pm, &w, 0, VPN_END) {
        struct pt_leaf *cl = pt_leaf_alloc(cm, w.base);
        if (!cl) {
            ke_mm_unmap(m, child, 0, TASK_END);
            return -ENOMEM;
        }
        for (uint32_t i = w.first; i < w.stop; i++) {
            uint32_t pte = w.leaf->pte[i];
            if (!pte)
                continue;
            cl->pte[i] = pte;
            cl->nr_used++;
            if (pte == PTE_ZERO) {
                cm->ksm_zero_pages++;
                m->st.ksm_zero_pages++;
            } else {
                assert(frame_mapcount(m, pte - 1) < FR_MAPCOUNT_MASK);
                m->frames[pte - 1].count++;
                cm->rss_pages++;
            }
        }
        if (!cl->nr_used)
            pt_leaf_maybe_free(cm, w.base);
    }
    return 0;
}

/* Does writing pte need a new frame (nothing there, zero page, or COW)? */
static inline bool pte_needs_frame(const ke_machine *m, uint32_t pte)
{
    uint32_t c;
    if (!pte_present(pte))
        return true;
    c = m->frames[pte - 1].count;
    return (c & FR_KSM) || (c & FR_MAPCOUNT_MASK) > 1;
}

/* Does pte share a page through KSM (a KSM frame, or the zero page)? */
static inline bool pte_ksm_shared(const ke_machine *m, uint32_t pte)
{
    return pte == PTE_ZERO || (pte_present(pte) && (m->frames[pte - 1].count & FR_KSM));
}

/*
 * Gives pte i of leaf a private frame of its own holding what it reads
 * now (copy-on-write, or breaking KSM / zero page sharing).  The caller
 * made sure a frame is free.  full_overwrite: the caller will overwrite the
 * whole page, so the old contents need not be copied.
 */
static void pte_make_private(ke_machine *m, struct mm_struct *mm,
                             struct pt_leaf *leaf, uint32_t i,
                             bool full_overwrite)
{
    uint32_t pte = leaf->pte[i], pfn;
    bool from_frame = pte_present(pte);
    rmap_id item = leaf_item(m, leaf, i);

    pfn = frame_alloc(m, !full_overwrite && !from_frame);
    assert(pfn != PFN_NONE);
    m->frames[pfn].count++;
    if (from_frame && !full_overwrite)
        memcpy(frame_mem(m, pfn), frame_mem(m, pte - 1), PAGE_SIZE);
    if (item.idx)
        ksm_item_leave_stable(m, item);
    leaf->pte[i] = pfn + 1;
    mm->rss_pages++;
    if (pte == PTE_NONE) {
        if (!item.idx)
            leaf->nr_used++;
    } else if (pte == PTE_ZERO) {
        mm->ksm_zero_pages--;
        m->st.ksm_zero_pages--;
    } else {
        mm->rss_pages--;
        frame_put(m, pte - 1);
    }
}

/* Breaks sharing of one KSM (or KSM zero page) pte; -ENOMEM if no frame. */
int break_cow_pte(ke_machine *m, struct mm_struct *mm, struct pt_leaf *leaf,
                  uint32_t i)
{
    if (m->free_head == PFN_NONE || fault_fires(m, KE_FAULT_FRAME_ALLOC))
        return -ENOMEM;
    pte_make_private(m, mm, leaf, i, false);
    return 0;
}

/*
 * Counts the frames writing the vpns [from, to) needs.  Looks only: a page
 * without a leaf needs a frame like a pte that maps nothing, so a write
 * that fails for want of frames allocates no page table on the way (a fill
 * of a huge area must not build tables for all of it first).
 */
static uint64_t count_frames_needed(const ke_machine *m,
                                    const struct mm_struct *mm, uint64_t from,
                                    uint64_t to)
{
    uint64_t need = to - from; /* less the ptes that need none: */
    struct leaf_walk w;
    FOR_EACH_LEAF(mm, &w, from, to)
        for (uint32_t i = w.first; i < w.stop; i++)
            need -= !pte_needs_frame(m, w.leaf->pte[i]);
    return need;
}

/*
 * Allocates the missing leaves of the vpns [from, to) (after the frame count
 * said the write can go ahead).  On -ENOMEM frees again the leaves it made,
 * which are still empty, so the failed write changed nothing.
 */
static int alloc_leaves(struct mm_struct *mm, uint64_t from, uint64_t to)
{
    for (uint64_t v = from; v < to; v = (v | (PT_LEAF_SIZE - 1)) + 1) {
        if (!pt_leaf_alloc(mm, (uint32_t)v)) {
            for (uint64_t u = from; u <= v; u = (u | (PT_LEAF_SIZE - 1)) + 1)
                pt_leaf_maybe_free(mm, (uint32_t)u);
            return -ENOMEM;
        }
    }
    return 0;
}

/* Shared by write (buf) and fill (byte, buf NULL). */
static int mm_store(ke_machine *m, uint32_t id, uint64_t addr,
                    const uint8_t *buf, int byte, uint64_t len,
                    uint64_t *frames_short)
{
    struct mm_struct *mm = mm_get(m, id);
    uint64_t from, to, need;
    struct leaf_walk w;
    int err;

    if (frames_short)
        *frames_short = 0;
    if (!mm)
        return -ESRCH;
    if (len == 0)
        return 0;
    if ((err = byte_range_ok(addr, len)))
        return err;
    from = addr >> PAGE_SHIFT;
    to = ((addr + len - 1) >> PAGE_SHIFT) + 1;
    need = count_frames_needed(m, mm, from, to);
    if ((err = frames_reserve(m, need, frames_short)))
        return err;
    if ((err = alloc_leaves(mm, from, to)))
        return err;
    if (need >= POPULATE_MIN_PAGES)
        frames_populate(m, need);
    FOR_EACH_LEAF(mm, &w, from, to) {
        for (uint32_t i = w.first; i < w.stop; i++) {
            uint64_t at, chunk, off = page_span(addr, len, w.base | i, &at, &chunk);
            uint8_t *page;
            rmap_id item;
            if (pte_needs_frame(m, w.leaf->pte[i]))
                pte_make_private(m, mm, w.leaf, i, chunk == PAGE_SIZE);
            page = frame_mem(m, w.leaf->pte[i] - 1);
            if (buf)
                memcpy(page + off, buf + at, chunk);
            else
                memset(page + off, byte, chunk);
            if ((item = leaf_item(m, w.leaf, i)).idx)
                ksm_item_write_hook(m, item, page);
        }
    }
    frames_populate_end(m);
    ke_release_flush(m);
    return 0;
}

int ke_mm_write(ke_machine *m, uint32_t mm, uint64_t addr, const void *buf,
                uint64_t len, uint64_t *frames_short)
{
    if (!buf && len)
        return -EINVAL;
    return mm_store(m, mm, addr, buf, 0, len, frames_short);
}

int ke_mm_fill(ke_machine *m, uint32_t mm, uint64_t addr, int byte,
               uint64_t len, uint64_t *frames_short)
{
    if (byte < 0 || byte > 255)
        return -EINVAL;
    return mm_store(m, mm, addr, NULL, byte, len, frames_short);
}

int ke_mm_read(ke_machine *m, uint32_t id, uint64_t addr, void *buf,
               uint64_t len)
{
    struct mm_struct *mm = mm_get(m, id);
    uint8_t *out = buf;
    uint64_t done = 0; /* bytes of buf filled */
    struct leaf_walk w;
    int err;
    if (!mm)
        return -ESRCH;
    if (len == 0)
        return 0;
    if (!buf)
        return -EINVAL;
    if ((err = byte_range_ok(addr, len)))
        return err;
    FOR_EACH_LEAF(mm, &w, addr >> PAGE_SHIFT, ((addr + len - 1) >> PAGE_SHIFT) + 1) {
        for (uint32_t i = w.first; i < w.stop; i++) {
            uint64_t at, chunk, off = page_span(addr, len, w.base | i, &at, &chunk);
            uint32_t pte = w.leaf->pte[i];
            memset(out + done, 0, at - done); /* pages without a leaf */
            if (pte_present(pte))
                memcpy(out + at, frame_mem(m, pte - 1) + off, chunk);
            else
                memset(out + at, 0, chunk);
            done = at + chunk;
        }
    }
    memset(out + done, 0, len - done);
    return 0;
}

int ke_mm_unmerge(ke_machine *m, uint32_t id, uint64_t addr, uint64_t len,
                  uint64_t *frames_short)
{
    struct mm_struct *mm;
    struct leaf_walk w;
    uint64_t from, to, need = 0;
    int err;
    if (frames_short)
        *frames_short = 0;
    if ((err = mm_page_range(m, id, addr, len, &mm, &from, &to)))
        return err;
    FOR_EACH_LEAF(mm, &w, from, to)
        for (uint32_t i = w.first; i < w.stop; i++)
            need += pte_ksm_shared(m, w.leaf->pte[i]);
    if ((err = frames_reserve(m, need, frames_short)))
        return err;
    if (need >= POPULATE_MIN_PAGES)
        frames_populate(m, need);
    FOR_EACH_LEAF(mm, &w, from, to)
        for (uint32_t i = w.first; i < w.stop; i++)
            if (pte_ksm_shared(m, w.leaf->pte[i]))
                pte_make_private(m, mm, w.leaf, i, false);
    frames_populate_end(m);
    ke_release_flush(m);
    return 0;
}

int ke_mm_drop_rmap_items(ke_machine *m, uint32_t id, uint64_t addr,
                          uint64_t len)
{
    return mm_clear(m, id, addr, len, false);
}

int ke_mm_stat(const ke_machine *m, uint32_t id, struct ke_mm_stat *out)
{
    const struct mm_struct *mm = mm_get(m, id);
    if (!mm)
        return -ESRCH;
    if (!out)
        return -EINVAL;
    out->rss_pages = mm->rss_pages;
    out->ksm_rmap_items = mm->ksm_rmap_items;
    out->ksm_merging_pages = mm->ksm_merging_pages;
    out->ksm_zero_pages = mm->ksm_zero_pages;
    return 0;
}

/* Describes pte as ke_mm_ptes() does, in pfns[k] and flags[k] (either may be NULL). */
static void pte_describe(const ke_machine *m, uint32_t pte, uint32_t *pfns,
                         uint8_t *flags, uint64_t k)
{
    if (pfns)
        pfns[k] = pte_pfn(pte);
    if (flags)
        flags[k] = pte == PTE_NONE ? KE_PTE_NONE
                 : pte == PTE_ZERO ? KE_PTE_ZERO
                 : KE_PTE_PRESENT | ((m->frames[pte - 1].count & FR_KSM) ? KE_PTE_KSM : 0);
}

int ke_mm_pte(const ke_machine *m, uint32_t id, uint64_t addr,
              uint32_t *pfn_out, uint32_t *flags_out)
{
    uint32_t pfn;
    uint8_t fl;
    int err = ke_mm_ptes(m, id, addr & ~(uint64_t)(PAGE_SIZE - 1), 1, &pfn,
                         &fl);
    if (err)
        return err;
    if (pfn_out)
        *pfn_out = pfn;
    if (flags_out)
        *flags_out = fl;
    return 0;
}

int ke_mm_ptes(const ke_machine *m, uint32_t id, uint64_t addr,
               uint64_t npages, uint32_t *pfns, uint8_t *flags)
{
    struct mm_struct *mm;
    struct leaf_walk w;
    uint64_t from, to, k = 0; /* pages described */
    int err;
    if (npages > VPN_END) /* (npages << PAGE_SHIFT would wrap) */
        return mm_get(m, id) ? -EINVAL : -ESRCH;
    if ((err = mm_page_range(m, id, addr, npages << PAGE_SHIFT, &mm, &from, &to)))
        return err;
    FOR_EACH_LEAF(mm, &w, from, to) {
        for (uint32_t i = w.first; i < w.stop; i++) {
            for (; k < (w.base | i) - from; k++)
                pte_describe(m, PTE_NONE, pfns, flags, k); /* no leaf there */
            pte_describe(m, w.leaf->pte[i], pfns, flags, k++);
        }
    }
    for (; k < npages; k++)
        pte_describe(m, PTE_NONE, pfns, flags, k);
    return 0;
}
