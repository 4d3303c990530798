/*
 * internal.h - the structures the C core's files share.  Not seen by Python.
 *
 * Frames.  frames[pfn] is 8 bytes: `count` holds the frame's map count in
 * its low 27 bits and its state in the top bits (FR_*); `aux` is the next
 * free frame while the frame is free and the stable node while it is a KSM
 * page.  Frame memory is arena + pfn * PAGE_SIZE.
 *
 * Page tables.  An mm's table has three levels over the 32-bit virtual page
 * number (vpn): 11 bits pick a middle table, 12 bits a leaf, 9 bits a pte.
 * A leaf holds 512 ptes.
 *
 * rmap_items live in chunks of 512, one chunk per page table leaf that KSM
 * has looked into: item i of a chunk tracks pte i of its leaf.  An item's
 * index is (chunk << 9) | i, so the item of a pte is found in O(1) from the
 * leaf (leaf->rchunk), and the pte of an item, its mm and its vpn from the
 * chunk table (m->items.chunks), without either record storing them.  Chunks
 * are allocated with the leaf's first item and freed with its last; chunk
 * 0 is never used, so index 0 means "none".  Walking a leaf walks an mm's
 * rmap_items in address order for free.  A chunk is 12 KiB however few of
 * its items are used: dense mergeable memory (the usual case: KSM tracks
 * the present pages of whole areas) costs 24 bytes a page, memory with one
 * present page in 2 MiB costs 12 KiB a page.  RC_CAPACITY chunks at most
 * (a scan that needs more fails with ENOMEM).
 *
 * Stable nodes live in a pool: one large reserved mapping (pages are
 * touched only as the pool grows), indexed from 1, so an index never moves
 * and 0 means "none".  Freed entries form a free list.  The item chunks
 * are reserved the same way.
 *
 * Handles.  rmap_items and stable nodes are named by their indices, each
 * kind in a struct of its own (rmap_id, snode_id), so that one kind passed
 * where the other is expected (say, the two arguments of
 * stable_tree_append swapped) does not compile.  A one-field struct is
 * passed and returned in a register like the bare integer: they cost
 * nothing.  Frames (pfn) and mms (id) stay plain numbers.
 */
#ifndef KSM_ENGINE_INTERNAL_H
#define KSM_ENGINE_INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "ksm_engine.h"

/*
 * What is declared from here on is internal to the core's shared object:
 * hidden from the dynamic symbol table, so calls between the files go
 * straight to the function, not through the PLT.  (The ABI, ksm_engine.h,
 * is above this line and stays visible.)
 */
#pragma GCC visibility push(hidden)

#define PAGE_SIZE KE_PAGE_SIZE
#define PAGE_SHIFT KE_PAGE_SHIFT

/* --- handles (see top) --- */
typedef struct { uint32_t idx; } rmap_id;  /* an rmap_item: (chunk << RC_SHIFT) | pte */
typedef struct { uint32_t idx; } snode_id; /* a stable node: its index in m->nodes */
#define NO_RMAP ((rmap_id){0})
#define NO_SNODE ((snode_id){0})
static inline bool same_rmap(rmap_id a, rmap_id b) { return a.idx == b.idx; }
static inline bool same_snode(snode_id a, snode_id b) { return a.idx == b.idx; }

/*
 * Lists threaded through records by handles, as the kernel's hlist: each
 * record has `next` and `prev` handles (prev 0: the first), the list a
 * head handle (0: empty); at(m, h) finds record h.  They hold the
 * rmap_items on a stable node and the dups of a chain.
 */
#define HLIST_ADD_HEAD(m, at, head, h)                                        \
    do {                                                                      \
        __typeof__(h) h_ = (h);                                               \
        at(m, h_)->next = *(head);                                            \
        at(m, h_)->prev = (__typeof__(h)){0};                                 \
        if ((head)->idx)                                                      \
            at(m, *(head))->prev = h_;                                        \
        *(head) = h_;                                                         \
    } while (0)

#define HLIST_DEL(m, at, head, h)                                             \
    do {                                                                      \
        __typeof__(at(m, h)) e_ = at(m, h);                                   \
        if (e_->prev.idx)                                                     \
            at(m, e_->prev)->next = e_->next;                                 \
        else                                                                  \
            *(head) = e_->next;                                               \
        if (e_->next.idx)                                                     \
            at(m, e_->next)->prev = e_->prev;                                 \
    } while (0)

/* --- frames --- */
#define FR_MAPCOUNT_MASK 0x07ffffffu
#define FR_USED (1u << 27)    /* mapped by processes (anonymous or KSM) */
#define FR_KSM (1u << 28)     /* a KSM page: never written in place */
#define FR_BALLOON (1u << 29) /* owned by the balloon driver */
#define FR_PENDING (1u << 30) /* free, queued for release to the OS */
#define FR_ZEROED (1u << 31)  /* free, and its memory is known to be zero */
#define PFN_NONE 0xffffffffu
#define RELEASE_BATCH 512 /* runs per process_madvise call (<= UIO_MAXIOV) */
#define POPULATE_RUNS 64  /* runs one write may fault in ahead (frames_populate) */

struct frame {
    uint32_t count; /* map count | FR_* state bits */
    uint32_t aux;   /* free: next free pfn; KSM: its stable node's index
                       (frame_node), 0 if it has none */
};

/* --- page tables --- */
#define PT_LEAF_BITS 9
#define PT_MID_BITS 12
#define PT_TOP_BITS 11
#define PT_LEAF_SIZE (1u << PT_LEAF_BITS)
#define PT_MID_SIZE (1u << PT_MID_BITS)
#define PT_TOP_SIZE (1u << PT_TOP_BITS)

/* pte values: 0 none, PTE_ZERO the KSM zero page, else pfn + 1 */
#define PTE_NONE 0u
#define PTE_ZERO 0xffffffffu

struct pt_leaf {
    uint32_t pte[PT_LEAF_SIZE];  /* what each virtual page maps */
    uint32_t rchunk;             /* its rmap_item chunk, 0 none (see top) */
    uint32_t nr_used;            /* entries with a pte or an rmap_item */
};

struct pt_mid {
    struct pt_leaf *leaf[PT_MID_SIZE]; /* NULL: no leaf (nothing mapped there) */
    uint32_t nr_leaves;                /* leaves allocated: freed with the last */
};
#define PT_MID_SHIFT (PT_LEAF_BITS + PT_MID_BITS) /* vpn >> this: the middle table */
#define VPN_END ((uint64_t)KE_MAX_VPN + 1)         /* one past the highest vpn: 2^32 */
#define TASK_END (VPN_END << PAGE_SHIFT)           /* one past the highest address */

struct mm_struct {
    struct pt_mid **top;        /* PT_TOP_SIZE middle tables, NULL: slot free */
    uint32_t next_free;         /* free slot list, 0 none (slot 0 unused) */
    uint64_t rss_pages;         /* ptes mapping a frame */
    uint64_t ksm_rmap_items;    /* rmap_items of this mm */
    uint64_t ksm_merging_pages; /* of them, on stable nodes */
    uint64_t ksm_zero_pages;    /* ptes at PTE_ZERO */
};

/* Does a pte map a frame (of its own or shared), and which? */
static inline bool pte_present(uint32_t pte)
{
    return pte != PTE_NONE && pte != PTE_ZERO;
}
static inline uint32_t pte_pfn(uint32_t pte)
{
    return pte_present(pte) ? pte - 1 : PFN_NONE;
}

/*
 * Walking the leaves of an mm's page table over the vpns [from, to):
 *
 *     struct leaf_walk w;
 *     FOR_EACH_LEAF(mm, &w, from, to)
 *         for (uint32_t i = w.first; i < w.stop; i++)
 *             ... w.leaf->pte[i], the pte of vpn w.base | i ...
 *
 * visits every allocated leaf overlapping the range, in address order,
 * with [first, stop) the slots of the leaf inside the range.  A missing
 * leaf costs one lookup, a missing middle table (2^21 pages) one too.  The
 * walk keeps no pointer into the table between leaves, so the body may
 * free the leaf it was given (pt_leaf_maybe_free) or allocate others, and
 * may break, continue or return.
 */
struct leaf_walk {
    uint64_t next;        /* first vpn not walked yet */
    uint64_t end;         /* end of the range (exclusive, <= VPN_END) */
    struct pt_leaf *leaf; /* the leaf being visited */
    uint32_t base;        /* its first vpn (pte 0) */
    uint32_t first, stop; /* its slots inside the range: [first, stop) */
};

/* Moves w to the next allocated leaf; false when the range is done. */
static inline bool leaf_walk_next(const struct mm_struct *mm, struct leaf_walk *w)
{
    while (w->next < w->end) {
        uint64_t v = w->next, leaf_end = (v | (PT_LEAF_SIZE - 1)) + 1;
        const struct pt_mid *mid = mm->top[v >> PT_MID_SHIFT];
        if (!mid) {
            w->next = ((v >> PT_MID_SHIFT) + 1) << PT_MID_SHIFT;
            continue;
        }
        w->next = leaf_end < w->end ? leaf_end : w->end;
        w->leaf = mid->leaf[(v >> PT_LEAF_BITS) & (PT_MID_SIZE - 1)];
        if (!w->leaf)
            continue;
        w->base = (uint32_t)(v & ~(uint64_t)(PT_LEAF_SIZE - 1));
        w->first = (uint32_t)(v - w->base);
        w->stop = (uint32_t)(w->next - w->base);
        return true;
    }
    return false;
}

#define FOR_EACH_LEAF(mm, w, from, to)                                        \
    for ((w)->next = (from), (w)->end = (to); leaf_walk_next((mm), (w));)

/* --- rmap_items (24 bytes; their mm and vpn come from the chunk) --- */
#define RI_UNSTABLE 0x01 /* counted in pages_unshared; in the tree iff seqnr is current */
#define RI_STABLE 0x02   /* hangs on the stable node `node` */
#define RI_CLEAN 0x04    /* oldchecksum is the checksum of the page as it is now */
#define RI_RED 0x08      /* colour in the unstable tree */
#define RI_INUSE 0x10    /* allocated: the pte of this slot has an rmap_item */
#define RI_ZERO 0x20     /* with RI_CLEAN: the page was all zero when hashed (so is now) */

struct rmap_item {
    uint32_t oldchecksum; /* checksum seen the last time the page was scanned */
    uint32_t prefix;      /* unstable: first 4 bytes of the page, big endian */
    union {
        rmap_id rb[3];        /* unstable: left, right, parent in the tree */
        struct {
            snode_id node;    /* stable: the stable node it hangs on */
            rmap_id next;     /* stable: the next rmap_item on the node */
            rmap_id prev;     /* stable: the previous one, NO_RMAP: first */
        };
    };
    uint8_t flags;        /* RI_*; 0 while the slot has no rmap_item */
    uint8_t seqnr;        /* low 8 bits of the pass that put it in the unstable tree */
    uint8_t age;          /* smart_scan: passes seen, saturating at 255 */
    uint8_t remaining_skips; /* smart_scan: passes still to skip */
};
_Static_assert(sizeof(struct rmap_item) == 24, "rmap_item is 24 bytes");

#define RC_SHIFT PT_LEAF_BITS         /* items per chunk: one per pte of a leaf */
#define RC_ITEMS (1u << RC_SHIFT)
#define RC_CAPACITY (1u << 21)        /* chunks reserved: 2^30 items, 2^21 leaves */

/* One chunk of rmap_items: whose leaf they track (see top). */
struct rmap_chunk {
    struct pt_leaf *leaf; /* the leaf, NULL while the chunk is free */
    uint32_t vpn_base;    /* the leaf's first vpn; free: the next free chunk */
    uint16_t mm;          /* the leaf's mm (ids fit 16 bits: KE_MAX_MMS) */
    uint16_t nr_items;    /* items allocated in it, 1..RC_ITEMS while used */
};

/* The rmap_item store: chunks of items and the table describing them. */
struct item_store {
    struct rmap_item *base;    /* chunk c's items at base + c * RC_ITEMS */
    struct rmap_chunk *chunks; /* RC_CAPACITY records */
    uint32_t top;                 /* chunks ever handed out + 1 */
    uint32_t free_head;           /* first free chunk, 0 none */
    uint32_t chunks_in_use;       /* chunks allocated now */
    uint64_t in_use;              /* items allocated now */
};

/* --- stable nodes --- */
#define SN_PLAIN 1 /* a KSM page in the tree, with its rmap_items */
#define SN_CHAIN 2 /* a chain head in the tree: its dups have the same content */
#define SN_DUP 3   /* a KSM page under a chain */

/*
 * A stable node is 36 bytes: the fields one kind of node does not use hold
 * another kind's (a dup is not in the tree, so its tree links hold its
 * chain links; a chain has no frame and no rmap_items of its own).
 */
struct __attribute__((packed, aligned(4))) stable_node {
    union {
        snode_id rb[3];    /* plain/chain: left, right, parent in the stable
                              tree; free: rb[0] is the next free node */
        struct {           /* dup */
            snode_id next, prev; /* siblings under the chain */
            snode_id chain;      /* its chain */
        };
    };
    uint8_t red;           /* plain/chain: colour in the stable tree */
    uint8_t kind;          /* SN_*, 0 while free */
    uint8_t zero;          /* the content is known to be all zero */
    uint8_t pad;           /* (unused) */
    union {
        uint32_t kpfn;             /* plain/dup: the KSM frame */
        uint32_t chain_prune_time; /* chain: last prune of stale dups (ms, wraps) */
    };
    union {
        rmap_id hlist;     /* plain/dup: its first rmap_item */
        snode_id dups;     /* chain: its first dup */
    };
    union {
        uint32_t rmap_hlist_len;   /* plain/dup: rmap_items on it */
        uint32_t nr_candidates;    /* chain: dups that can take one more mapping */
    };
    uint64_t prefix;       /* first 8 bytes of the content, big endian */
};
_Static_assert(sizeof(struct stable_node) == 36, "stable node is 36 bytes");

/* A pool of fixed-size records in one reserved mapping (see top). */
struct pool {
    uint8_t *base;      /* reserved region; entry i at base + i * size */
    uint32_t size;      /* bytes per entry */
    uint32_t capacity;  /* entries reserved (entry 0 is never used) */
    uint32_t top;       /* entries ever handed out + 1 */
    uint32_t free_head; /* first free entry, 0 none */
    uint32_t in_use;    /* entries allocated now */
};

struct fault_point {
    uint64_t after; /* successes still to allow before failing */
    uint64_t count; /* failures still to inject */
};

struct ke_machine {
    uint8_t *arena;           /* nr_frames * PAGE_SIZE bytes */
    uint64_t arena_bytes;     /* its size */
    struct frame *frames;     /* nr_frames records */
    uint32_t nr_frames;       /* frames in the arena */
    uint32_t free_head;       /* first free frame, PFN_NONE: none free */
    uint32_t fresh;           /* frames >= fresh never used: free, zero, not listed */
    uint64_t free_frames, used_frames, balloon_frames; /* frames in each state */
    uint64_t ksm_frames;      /* of used_frames, the KSM pages */
    uint64_t released_frames; /* frames handed back to the OS so far */
    uint32_t *pending;        /* freed frames not yet released to the OS */
    uint32_t nr_pending;      /* frames in pending */
    struct iovec release_iov[RELEASE_BATCH]; /* runs batched for release */
    uint32_t release_nr;      /* runs in release_iov */
    int release_pidfd;        /* pidfd of ourselves for process_madvise; -1 none, -2 untried */
    int release_pid;          /* the process release_pidfd names */
    struct frame_run {
        uint32_t first, n;    /* frames [first, first + n) */
    } populated[POPULATE_RUNS]; /* runs frames_populate() faulted in this call */
    uint32_t nr_populated;    /* runs in populated */

    struct mm_struct *mms;    /* KE_MAX_MMS slots, reserved */
    uint32_t mm_top;          /* slots ever used */
    uint32_t mm_free_head;    /* first free mm slot, 0 none */

    struct item_store items;  /* rmap_items, in chunks (see top) */
    struct pool nodes;        /* struct stable_node */
    snode_id stable_root;     /* stable tree root node, NO_SNODE: empty */
    rmap_id unstable_root;    /* unstable tree root item, NO_RMAP: empty */
    bool unstable_dirty;      /* a page in the unstable tree was written this pass */
    uint32_t seqnr;           /* current pass number (low 8 bits used) */
    uint32_t zero_checksum;   /* checksum of a zero-filled page */
    uint64_t now_ms;          /* clock of the current scan call */
    struct ke_ksm_config cfg; /* the knobs (ke_ksm_configure) */
    struct ke_ksm_stats st;   /* the counters (ke_ksm_get_stats) */

    struct fault_point faults[KE_FAULT_NR]; /* injected failures, per point */
    struct prehash *prehash;  /* readahead.c: checksums computed ahead */
};

/* arena.c */
bool fault_fires(ke_machine *m, int point);
uint32_t frame_alloc(ke_machine *m, bool need_zero);
void frames_populate(ke_machine *m, uint64_t need);
void frames_populate_end(ke_machine *m);
void frame_put(ke_machine *m, uint32_t pfn);
static inline uint8_t *frame_mem(const ke_machine *m, uint32_t pfn)
{
    return m->arena + (uint64_t)pfn * PAGE_SIZE;
}
static inline uint32_t frame_mapcount(const ke_machine *m, uint32_t pfn)
{
    return m->frames[pfn].count & FR_MAPCOUNT_MASK;
}
/* A KSM frame's stable node (NO_SNODE: none; the frame must be KSM). */
static inline snode_id frame_node(const ke_machine *m, uint32_t pfn)
{
    return (snode_id){m->frames[pfn].aux};
}
static inline void frame_set_node(ke_machine *m, uint32_t pfn, snode_id node)
{
    m->frames[pfn].aux = node.idx;
}
int pool_init(struct pool *p, uint32_t size, uint32_t capacity,
              uint64_t nr_frames);
void pool_destroy(struct pool *p);
uint32_t pool_alloc(struct pool *p);
void pool_free(struct pool *p, uint32_t idx);
rmap_id item_store_alloc(ke_machine *m, struct mm_struct *mm,
                         struct pt_leaf *leaf, uint32_t vpn);
void item_store_free(ke_machine *m, rmap_id item);
static inline void *pool_at(const struct pool *p, uint32_t idx)
{
    return p->base + (uint64_t)idx * p->size;
}

/* mm.c */
struct mm_struct *mm_get(const ke_machine *m, uint32_t mm);
struct pt_leaf *pt_leaf_lookup(const struct mm_struct *mm, uint32_t vpn);
struct pt_leaf *pt_leaf_alloc(struct mm_struct *mm, uint32_t vpn);
int break_cow_pte(ke_machine *m, struct mm_struct *mm, struct pt_leaf *leaf,
                  uint32_t i);
void leaf_item_drop(ke_machine *m, struct pt_leaf *leaf, uint32_t i);

/* ksm.c: the hooks mm.c calls when a pte changes under an rmap_item */
void ksm_item_write_hook(ke_machine *m, rmap_id item, const uint8_t *page);
void ksm_item_unmap(ke_machine *m, rmap_id item);
void ksm_item_leave_stable(ke_machine *m, rmap_id item);
void ksm_stable_node_free_frame(ke_machine *m, snode_id node);

/* --- finding records from handles, and what an rmap_item tracks --- */
static inline struct rmap_item *item_at(const ke_machine *m, rmap_id item)
{
    return m->items.base + item.idx;
}
static inline struct rmap_chunk *item_chunk(const ke_machine *m, rmap_id item)
{
    return &m->items.chunks[item.idx >> RC_SHIFT];
}
static inline struct mm_struct *item_mm(const ke_machine *m, rmap_id item)
{
    return &m->mms[item_chunk(m, item)->mm];
}
static inline uint32_t item_vpn(const ke_machine *m, rmap_id item)
{
    return item_chunk(m, item)->vpn_base | (item.idx & (RC_ITEMS - 1));
}
/* The leaf an rmap_item's pte is in (it lives while the item does), and
 * the pte's slot in it. */
static inline struct pt_leaf *item_leaf(const ke_machine *m, rmap_id item,
                                        uint32_t *i)
{
    *i = item.idx & (RC_ITEMS - 1);
    return item_chunk(m, item)->leaf;
}
static inline uint32_t *item_pte(const ke_machine *m, rmap_id item)
{
    uint32_t i;
    return &item_leaf(m, item, &i)->pte[i];
}
/* The rmap_item of pte i of a leaf, NO_RMAP if none. */
static inline rmap_id leaf_item(const ke_machine *m, const struct pt_leaf *leaf,
                                uint32_t i)
{
    rmap_id item = {(leaf->rchunk << RC_SHIFT) | i};
    if (!leaf->rchunk || !item_at(m, item)->flags)
        return NO_RMAP;
    return item;
}
static inline struct stable_node *node_at(const ke_machine *m, snode_id node)
{
    return (struct stable_node *)pool_at(&m->nodes, node.idx);
}

/* checksum.c */
uint32_t page_checksum(const void *page, int compat_2009);

/* --- what ksm.c and readahead.c both read --- */

extern const uint8_t zero_page[PAGE_SIZE]; /* ksm.c: all zero */

/* The frame the pte of an rmap_item maps, PFN_NONE if none. */
static inline uint32_t item_pfn(const ke_machine *m, rmap_id item)
{
    return pte_pfn(*item_pte(m, item));
}

/*
 * Is the item's page known to be all zero?  A page whose checksum is the
 * zero page's is compared with the zero page when it is hashed (while it
 * is in the cache; see cmp_and_merge_page), and the answer holds until
 * the page is written (which clears RI_CLEAN and RI_ZERO): later compares
 * of two such pages need not read them.
 */
static inline bool item_zero(const struct rmap_item *it)
{
    return (it->flags & (RI_CLEAN | RI_ZERO)) == (RI_CLEAN | RI_ZERO);
}


/*
 * The page's checksum (the 2009 one with compat_2009) in the low 32 bits,
 * and in bit 32 whether the page is all zero (6.x only; see item_zero):
 * what cmp_and_merge_page learns by hashing a page.
 */
static inline int64_t page_hash(const ke_machine *m, const uint8_t *page,
                                int compat_2009)
{
    uint32_t sum = page_checksum(page, compat_2009);
    bool zero = !compat_2009 && sum == m->zero_checksum &&
                !memcmp(page, zero_page, PAGE_SIZE);
    return (int64_t)sum | ((int64_t)zero << 32);
}

/*
 * Will the scan hash this pte's page (its rmap_item: item, if any)?  It
 * is present, not a KSM page in the stable tree (6.x: those are not
 * hashed), and never hashed or written since.
 */
static inline bool needs_checksum(const ke_machine *m, uint32_t pte,
                                  rmap_id item)
{
    if (!pte_present(pte))
        return false;
    if ((m->frames[pte - 1].count & FR_KSM) && frame_node(m, pte - 1).idx &&
        !m->cfg.compat_2009)
        return false;
    return !item.idx || !(item_at(m, item)->flags & RI_CLEAN);
}

/* readahead.c: ahead of the scan loop; no result can change (see there) */
void prehash_free(ke_machine *m);
void prehash_reset(ke_machine *m);
bool prehash_fill(ke_machine *m, const struct mm_struct *mm,
                  const struct ke_range *ranges, uint32_t nranges, uint32_t r,
                  uint32_t v, uint32_t want);
int64_t prehash_take(ke_machine *m, uint32_t vpn);
uint32_t prewalk(ke_machine *m, const struct pt_leaf *leaf, uint32_t from,
                 uint32_t to);

#pragma GCC visibility pop

#endif /* KSM_ENGINE_INTERNAL_H */
