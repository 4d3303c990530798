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

#define VPN_MAX 0xffffffffull
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

/* Clears pte i of leaf (vpn) and everything hanging on it. */
static void pte_zap(ke_machine *m, struct mm_struct *mm, struct pt_leaf *leaf,
                    uint32_t i)
{
    uint32_t pte = leaf->pte[i], idx = leaf_item(m, leaf, i);
    if (idx) {
        ksm_item_unmap(m, idx);
        if (!pte)
            leaf->nr_used--;
    }
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

/* Visits every allocated leaf overlapping [vpn, vpn + n) in order. */
#define FOR_EACH_LEAF(mm, vpn, n, leaf, first, last, body)                    \
    do {                                                                      \
        uint64_t _v = (vpn), _end = (uint64_t)(vpn) + (n);                    \
        while (_v < _end) {                                                   \
            uint64_t _leaf_end = (_v | (PT_LEAF_SIZE - 1)) + 1;               \
            struct pt_leaf *leaf = pt_leaf_lookup((mm), (uint32_t)_v);        \
            uint32_t first = (uint32_t)(_v & (PT_LEAF_SIZE - 1));             \
            uint32_t last = (uint32_t)(((_leaf_end < _end ? _leaf_end : _end) \
                                        - 1) & (PT_LEAF_SIZE - 1));           \
            uint32_t _leaf_vpn = (uint32_t)_v;                                \
            (void)_leaf_vpn;                                                  \
            if (leaf) {                                                       \
                body                                                          \
            } else {                                                          \
                struct pt_mid *_mid =                                         \
                    (mm)->top[_v >> (PT_LEAF_BITS + PT_MID_BITS)];            \
                if (!_mid) /* skip the whole middle table */                  \
                    _leaf_end = ((_v >> (PT_LEAF_BITS + PT_MID_BITS)) + 1)    \
                                << (PT_LEAF_BITS + PT_MID_BITS);              \
            }                                                                 \
            _v = _leaf_end;                                                   \
        }                                                                     \
    } while (0)

static int check_range(uint64_t addr, uint64_t len, uint64_t *vpn,
                       uint64_t *npages)
{
    if ((addr | len) & (PAGE_SIZE - 1))
        return -EINVAL;
    *vpn = addr >> PAGE_SHIFT;
    *npages = len >> PAGE_SHIFT;
    if (*vpn > VPN_MAX || *npages > VPN_MAX + 1 - *vpn)
        return -EINVAL;
    return 0;
}

int ke_mm_unmap(ke_machine *m, uint32_t id, uint64_t addr, uint64_t len)
{
    struct mm_struct *mm = mm_get(m, id);
    uint64_t vpn, n;
    int err;
    if (!mm)
        return -ESRCH;
    if ((err = check_range(addr, len, &vpn, &n)))
        return err;
    FOR_EACH_LEAF(mm, vpn, n, leaf, first, last, {
        for (uint32_t i = first; i <= last; i++)
            pte_zap(m, mm, leaf, i);
        pt_leaf_maybe_free(mm, _leaf_vpn);
    });
    ke_release_flush(m);
    return 0;
}

int ke_mm_destroy(ke_machine *m, uint32_t id)
{
    struct mm_struct *mm = mm_get(m, id);
    int err;
    if (!mm)
        return -ESRCH;
    err = ke_mm_unmap(m, id, 0, (VPN_MAX + 1) << PAGE_SHIFT);
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
    if (!pm || !cm || parent == child)
        return -ESRCH;
    if (cm->rss_pages || cm->ksm_zero_pages || cm->ksm_rmap_items)
        return -EINVAL; /* the child must be a fresh mm */
    FOR_EACH_LEAF(pm, 0, VPN_MAX + 1, leaf, first, last, {
        struct pt_leaf *cl;
        (void)first;
        (void)last;
        cl = pt_leaf_alloc(cm, _leaf_vpn);
        if (!cl) {
            ke_mm_unmap(m, child, 0, (VPN_MAX + 1) << PAGE_SHIFT);
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < PT_LEAF_SIZE; i++) {
            uint32_t pte = leaf->pte[i];
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
            pt_leaf_maybe_free(cm, _leaf_vpn);
    });
    return 0;
}

/* Does writing pte need a new frame (nothing there, zero page, or COW)? */
static inline bool pte_needs_frame(const ke_machine *m, uint32_t pte)
{
    uint32_t c;
    if (pte == PTE_NONE || pte == PTE_ZERO)
        return true;
    c = m->frames[pte - 1].count;
    return (c & FR_KSM) || (c & FR_MAPCOUNT_MASK) > 1;
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
    bool from_frame = pte != PTE_NONE && pte != PTE_ZERO;
    uint32_t idx = leaf_item(m, leaf, i);

    pfn = frame_alloc(m, !full_overwrite && !from_frame);
    assert(pfn != PFN_NONE);
    m->frames[pfn].count++;
    if (from_frame && !full_overwrite)
        memcpy(frame_mem(m, pfn), frame_mem(m, pte - 1), PAGE_SIZE);
    if (idx)
        ksm_item_leave_stable(m, idx);
    leaf->pte[i] = pfn + 1;
    mm->rss_pages++;
    if (pte == PTE_NONE) {
        if (!idx)
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
 * Counts the frames writing [vpn, vpn + n) needs.  Looks only: a page
 * without a leaf needs a frame like a pte that maps nothing, so a write
 * that fails for want of frames allocates no page table on the way (a fill
 * of a huge area must not build tables for all of it first).
 */
static uint64_t count_frames_needed(const ke_machine *m,
                                    const struct mm_struct *mm, uint64_t vpn,
                                    uint64_t n)
{
    uint64_t need = 0;
    for (uint64_t v = vpn; v < vpn + n;) {
        const struct pt_leaf *leaf = pt_leaf_lookup(mm, (uint32_t)v);
        uint64_t leaf_end = (v | (PT_LEAF_SIZE - 1)) + 1;
        if (leaf_end > vpn + n)
            leaf_end = vpn + n;
        if (!leaf) {
            need += leaf_end - v;
            v = leaf_end;
            continue;
        }
        for (; v < leaf_end; v++)
            need += pte_needs_frame(m, leaf->pte[v & (PT_LEAF_SIZE - 1)]);
    }
    return need;
}

/*
 * Allocates the missing leaves of [vpn, vpn + n) (after the frame count
 * said the write can go ahead).  On -ENOMEM frees again the leaves it made,
 * which are still empty, so the failed write changed nothing.
 */
static int alloc_leaves(struct mm_struct *mm, uint64_t vpn, uint64_t n)
{
    uint64_t v, end = vpn + n;
    for (v = vpn; v < end; v = (v | (PT_LEAF_SIZE - 1)) + 1) {
        if (!pt_leaf_alloc(mm, (uint32_t)v)) {
            for (uint64_t u = vpn; u <= v; u = (u | (PT_LEAF_SIZE - 1)) + 1)
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
    uint64_t first_vpn, last_vpn, done = 0, need;
    int err;

    if (frames_short)
        *frames_short = 0;
    if (!mm)
        return -ESRCH;
    if (len == 0)
        return 0;
    if (addr >= ((VPN_MAX + 1) << PAGE_SHIFT) ||
        len > ((VPN_MAX + 1) << PAGE_SHIFT) - addr)
        return -EFAULT;
    first_vpn = addr >> PAGE_SHIFT;
    last_vpn = (addr + len - 1) >> PAGE_SHIFT;
    need = count_frames_needed(m, mm, first_vpn, last_vpn - first_vpn + 1);
    if (need > m->free_frames ||
        (need && fault_fires(m, KE_FAULT_FRAME_ALLOC))) {
        if (frames_short)
            *frames_short = need > m->free_frames ? need - m->free_frames : 1;
        return -ENOMEM;
    }
    if ((err = alloc_leaves(mm, first_vpn, last_vpn - first_vpn + 1)))
        return err;
    if (need >= POPULATE_MIN_PAGES)
        frames_populate(m, need);
    for (uint64_t vpn = first_vpn; vpn <= last_vpn; vpn++) {
        struct pt_leaf *leaf = pt_leaf_lookup(mm, (uint32_t)vpn);
        uint32_t i = (uint32_t)(vpn & (PT_LEAF_SIZE - 1));
        uint64_t off = vpn == first_vpn ? addr & (PAGE_SIZE - 1) : 0;
        uint64_t chunk = PAGE_SIZE - off;
        uint8_t *dst;
        if (chunk > len - done)
            chunk = len - done;
        assert(leaf);
        if (pte_needs_frame(m, leaf->pte[i]))
            pte_make_private(m, mm, leaf, i, chunk == PAGE_SIZE);
        dst = frame_mem(m, leaf->pte[i] - 1) + off;
        if (buf)
            memcpy(dst, buf + done, chunk);
        else
            memset(dst, byte, chunk);
        if (leaf->rchunk) {
            uint32_t idx = leaf_item(m, leaf, i);
            if (idx)
                ksm_item_write_hook(m, idx, dst - off);
        }
        done += chunk;
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
    uint64_t done = 0;
    if (!mm)
        return -ESRCH;
    if (len == 0)
        return 0;
    if (!buf)
        return -EINVAL;
    if (addr >= ((VPN_MAX + 1) << PAGE_SHIFT) ||
        len > ((VPN_MAX + 1) << PAGE_SHIFT) - addr)
        return -EFAULT;
    while (done < len) {
        uint64_t a = addr + done, off = a & (PAGE_SIZE - 1);
        uint64_t chunk = PAGE_SIZE - off;
        struct pt_leaf *leaf = pt_leaf_lookup(mm, (uint32_t)(a >> PAGE_SHIFT));
        uint32_t pte = leaf ? leaf->pte[(a >> PAGE_SHIFT) & (PT_LEAF_SIZE - 1)]
                            : PTE_NONE;
        if (chunk > len - done)
            chunk = len - done;
        if (pte == PTE_NONE || pte == PTE_ZERO)
            memset(out + done, 0, chunk);
        else
            memcpy(out + done, frame_mem(m, pte - 1) + off, chunk);
        done += chunk;
    }
    return 0;
}

int ke_mm_unmerge(ke_machine *m, uint32_t id, uint64_t addr, uint64_t len,
                  uint64_t *frames_short)
{
    struct mm_struct *mm = mm_get(m, id);
    uint64_t vpn, n, need = 0;
    int err;
    if (frames_short)
        *frames_short = 0;
    if (!mm)
        return -ESRCH;
    if ((err = check_range(addr, len, &vpn, &n)))
        return err;
    FOR_EACH_LEAF(mm, vpn, n, leaf, first, last, {
        for (uint32_t i = first; i <= last; i++) {
            uint32_t pte = leaf->pte[i];
            need += pte == PTE_ZERO ||
                    (pte && (m->frames[pte - 1].count & FR_KSM));
        }
    });
    if (need > m->free_frames ||
        (need && fault_fires(m, KE_FAULT_FRAME_ALLOC))) {
        if (frames_short)
            *frames_short = need > m->free_frames ? need - m->free_frames : 1;
        return -ENOMEM;
    }
    if (need >= POPULATE_MIN_PAGES)
        frames_populate(m, need);
    FOR_EACH_LEAF(mm, vpn, n, leaf, first, last, {
        for (uint32_t i = first; i <= last; i++) {
            uint32_t pte = leaf->pte[i];
            if (pte == PTE_ZERO || (pte && (m->frames[pte - 1].count & FR_KSM)))
                pte_make_private(m, mm, leaf, i, false);
        }
    });
    frames_populate_end(m);
    ke_release_flush(m);
    return 0;
}

int ke_mm_drop_rmap_items(ke_machine *m, uint32_t id, uint64_t addr,
                          uint64_t len)
{
    struct mm_struct *mm = mm_get(m, id);
    uint64_t vpn, n;
    int err;
    if (!mm)
        return -ESRCH;
    if ((err = check_range(addr, len, &vpn, &n)))
        return err;
    FOR_EACH_LEAF(mm, vpn, n, leaf, first, last, {
        for (uint32_t i = first; i <= last; i++) {
            uint32_t idx = leaf_item(m, leaf, i);
            if (!idx)
                continue;
            ksm_item_unmap(m, idx);
            if (!leaf->pte[i])
                leaf->nr_used--;
        }
        pt_leaf_maybe_free(mm, _leaf_vpn);
    });
    return 0;
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

static void pte_describe(const ke_machine *m, uint32_t pte, uint32_t *pfn,
                         uint32_t *flags)
{
    if (pte == PTE_NONE) {
        *pfn = PFN_NONE;
        *flags = KE_PTE_NONE;
    } else if (pte == PTE_ZERO) {
        *pfn = PFN_NONE;
        *flags = KE_PTE_ZERO;
    } else {
        *pfn = pte - 1;
        *flags = KE_PTE_PRESENT |
                 ((m->frames[pte - 1].count & FR_KSM) ? KE_PTE_KSM : 0);
    }
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
    const struct mm_struct *mm = mm_get(m, id);
    uint64_t vpn, n;
    int err;
    if (!mm)
        return -ESRCH;
    if (npages > VPN_MAX + 1)
        return -EINVAL;
    if ((err = check_range(addr, npages << PAGE_SHIFT, &vpn, &n)))
        return err;
    for (uint64_t k = 0; k < n; k++) {
        struct pt_leaf *leaf = pt_leaf_lookup(mm, (uint32_t)(vpn + k));
        uint32_t pte = leaf ? leaf->pte[(vpn + k) & (PT_LEAF_SIZE - 1)] : 0;
        uint32_t pfn, fl;
        pte_describe(m, pte, &pfn, &fl);
        if (pfns)
            pfns[k] = pfn;
        if (flags)
            flags[k] = (uint8_t)fl;
    }
    return 0;
}
