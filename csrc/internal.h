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
 * A leaf holds 512 ptes and, beside them, 512 rmap slots: the index of the
 * rmap_item KSM keeps for that virtual page (0: none).  So walking a leaf
 * walks an mm's rmap_items in address order for free, and a write or unmap
 * finds the item of its page in O(1).
 *
 * rmap_items and stable nodes live in pools: one large reserved mapping
 * each (pages are touched only as the pool grows), indexed from 1, so an
 * index never moves and 0 means "none".  Freed entries form a free list.
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

#define PAGE_SIZE KE_PAGE_SIZE
#define PAGE_SHIFT KE_PAGE_SHIFT

/* --- frames --- */
#define FR_MAPCOUNT_MASK 0x07ffffffu
#define FR_USED (1u << 27)    /* mapped by processes (anonymous or KSM) */
#define FR_KSM (1u << 28)     /* a KSM page: never written in place */
#define FR_BALLOON (1u << 29) /* owned by the balloon driver */
#define FR_PENDING (1u << 30) /* free, queued for release to the OS */
#define FR_ZEROED (1u << 31)  /* free, and its memory is known to be zero */
#define PFN_NONE 0xffffffffu
#define KE_RELEASE_BATCH 512 /* runs per process_madvise call (<= UIO_MAXIOV) */

struct ke_frame {
    uint32_t count; /* map count | FR_* state bits */
    uint32_t aux;   /* free: next free pfn; KSM: stable node index */
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
    uint32_t rmap[PT_LEAF_SIZE]; /* its rmap_item index, 0 none */
    uint32_t nr_used;            /* entries with pte or rmap nonzero */
};

struct pt_mid {
    struct pt_leaf *leaf[PT_MID_SIZE];
    uint32_t nr_leaves;
};

struct ke_mm {
    struct pt_mid **top;        /* PT_TOP_SIZE middle tables, NULL: slot free */
    uint32_t next_free;         /* free slot list, 0 none (slot 0 unused) */
    uint64_t rss_pages;         /* ptes mapping a frame */
    uint64_t ksm_rmap_items;    /* rmap_items of this mm */
    uint64_t ksm_merging_pages; /* of them, on stable nodes */
    uint64_t ksm_zero_pages;    /* ptes at PTE_ZERO */
};

/* --- rmap_items (30 bytes: packed, 2-byte aligned; see KE_MAX_MMS) --- */
#define RI_UNSTABLE 0x01 /* counted in pages_unshared; in the tree iff seqnr is current */
#define RI_STABLE 0x02   /* hangs on stable node link[0] */
#define RI_CLEAN 0x04    /* oldchecksum is the checksum of the page as it is now */
#define RI_RED 0x08      /* colour in the unstable tree */
#define RI_INUSE 0x10    /* allocated (debug aid) */

struct __attribute__((packed, aligned(2))) ke_rmap_item {
    uint32_t vpn;         /* virtual page it tracks */
    uint32_t oldchecksum; /* checksum seen the last time the page was scanned */
    uint32_t prefix;      /* unstable: first 4 bytes of the page, big endian */
    /*
     * unstable: link = {left, right, parent} in the unstable tree;
     * stable:   link = {stable node, next item, previous item};
     * free:     the entry's first 4 bytes = next free item (ke_pool).
     */
    uint32_t link[3];
    uint16_t mm;          /* owning mm (ids fit 16 bits: KE_MAX_MMS) */
    uint8_t flags;        /* RI_* */
    uint8_t seqnr;        /* low 8 bits of the pass that put it in the unstable tree */
    uint8_t age;          /* smart_scan: passes seen, saturating at 255 */
    uint8_t remaining_skips; /* smart_scan: passes still to skip */
};
_Static_assert(sizeof(struct ke_rmap_item) == 30, "rmap_item is 30 bytes");

/* --- stable nodes --- */
#define SN_PLAIN 1 /* a KSM page in the tree, with its rmap_items */
#define SN_CHAIN 2 /* a chain head in the tree: its dups have the same content */
#define SN_DUP 3   /* a KSM page under a chain */

struct ke_stable_node {
    uint32_t rb[3];        /* plain/chain: left, right, parent in the stable tree;
                              free: rb[0] is the next free node */
    uint8_t red;           /* colour in the stable tree */
    uint8_t kind;          /* SN_*, 0 while free */
    uint16_t pad;
    uint32_t kpfn;         /* plain/dup: the KSM frame */
    uint32_t hlist;        /* plain/dup: first rmap_item; chain: first dup */
    uint32_t rmap_hlist_len; /* plain/dup: rmap_items on it */
    union {
        struct {           /* dup */
            uint32_t next, prev; /* siblings under the chain */
            uint32_t chain;      /* its chain */
        };
        struct {           /* chain */
            uint32_t nr_candidates;    /* dups that can take one more mapping */
            uint32_t chain_prune_time; /* last prune of stale dups (ms, wraps) */
        };
    };
    uint64_t prefix;       /* first 8 bytes of the content, big endian */
};
_Static_assert(sizeof(struct ke_stable_node) == 48, "stable node is 48 bytes");

/* A pool of fixed-size records in one reserved mapping (see top). */
struct ke_pool {
    uint8_t *base;      /* reserved region; entry i at base + i * size */
    uint32_t size;      /* bytes per entry */
    uint32_t capacity;  /* entries reserved (entry 0 is never used) */
    uint32_t top;       /* entries ever handed out + 1 */
    uint32_t free_head; /* first free entry, 0 none */
    uint32_t in_use;    /* entries allocated now */
};

struct ke_fault {
    uint64_t after; /* successes still to allow before failing */
    uint64_t count; /* failures still to inject */
};

struct ke_machine {
    uint8_t *arena;           /* nr_frames * PAGE_SIZE bytes */
    uint64_t arena_bytes;
    struct ke_frame *frames;  /* nr_frames records */
    uint32_t nr_frames;
    uint32_t free_head;       /* first free frame, PFN_NONE: none free */
    uint32_t fresh;           /* frames >= fresh never used: free, zero, not listed */
    uint64_t free_frames, used_frames, balloon_frames, ksm_frames;
    uint64_t released_frames; /* frames handed back to the OS so far */
    uint32_t *pending;        /* freed frames not yet released to the OS */
    uint32_t nr_pending;
    struct iovec release_iov[KE_RELEASE_BATCH]; /* runs batched for release */
    uint32_t release_nr;      /* runs in release_iov */
    int release_pidfd;        /* pidfd of ourselves for process_madvise; -1 none, -2 untried */
    int release_pid;          /* the process release_pidfd names */

    struct ke_mm *mms;        /* KE_MAX_MMS slots, reserved */
    uint32_t mm_top;          /* slots ever used */
    uint32_t mm_free_head;    /* first free mm slot, 0 none */

    struct ke_pool items;     /* struct ke_rmap_item */
    struct ke_pool nodes;     /* struct ke_stable_node */
    uint32_t stable_root;     /* stable tree root node, 0 empty */
    uint32_t unstable_root;   /* unstable tree root item, 0 empty */
    bool unstable_dirty;      /* a page in the unstable tree was written this pass */
    uint32_t seqnr;           /* current pass number (low 8 bits used) */
    uint32_t zero_checksum;   /* checksum of a zero-filled page */
    uint64_t now_ms;          /* clock of the current scan call */
    struct ke_ksm_config cfg;
    struct ke_ksm_stats st;

    struct ke_fault faults[KE_FAULT_NR];
    struct ke_prehash *prehash; /* ksm.c: checksums computed ahead, 2 cores */
};

/* ksm.c */
void ksm_machine_free(ke_machine *m);

/* arena.c */
bool ke_fault_fires(ke_machine *m, int point);
uint32_t ke_frame_alloc(ke_machine *m, bool need_zero);
void ke_frame_put(ke_machine *m, uint32_t pfn);
static inline uint8_t *frame_mem(const ke_machine *m, uint32_t pfn)
{
    return m->arena + (uint64_t)pfn * PAGE_SIZE;
}
static inline uint32_t frame_mapcount(const ke_machine *m, uint32_t pfn)
{
    return m->frames[pfn].count & FR_MAPCOUNT_MASK;
}
int ke_pool_init(struct ke_pool *p, uint32_t size, uint32_t capacity,
                 uint64_t nr_frames);
void ke_pool_destroy(struct ke_pool *p);
uint32_t ke_pool_alloc(struct ke_pool *p);
void ke_pool_free(struct ke_pool *p, uint32_t idx);
static inline void *pool_at(const struct ke_pool *p, uint32_t idx)
{
    return p->base + (uint64_t)idx * p->size;
}

/* mm.c */
struct ke_mm *ke_mm_get(const ke_machine *m, uint32_t mm);
struct pt_leaf *pt_leaf_lookup(const struct ke_mm *mm, uint32_t vpn);
struct pt_leaf *pt_leaf_alloc(struct ke_mm *mm, uint32_t vpn);
int ke_break_cow_pte(ke_machine *m, struct ke_mm *mm, struct pt_leaf *leaf,
                     uint32_t i);

/* ksm.c: the hooks mm.c calls when a pte changes under an rmap_item */
void ksm_item_write_hook(ke_machine *m, uint32_t item, const uint8_t *page);
void ksm_item_unmap(ke_machine *m, uint32_t item);
void ksm_item_leave_stable(ke_machine *m, uint32_t item);
void ksm_stable_node_free_frame(ke_machine *m, uint32_t node);
static inline struct ke_rmap_item *item_at(const ke_machine *m, uint32_t idx)
{
    return (struct ke_rmap_item *)pool_at(&m->items, idx);
}
static inline struct ke_stable_node *node_at(const ke_machine *m, uint32_t idx)
{
    return (struct ke_stable_node *)pool_at(&m->nodes, idx);
}

/* checksum.c */
uint32_t ke_page_checksum(const void *page, int compat_2009);

#endif /* KSM_ENGINE_INTERNAL_H */
