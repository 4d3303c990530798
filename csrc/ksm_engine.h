/*
 * ksm_engine.h - the one public header of the ksm-engine C core.
 *
 * The core owns everything that is touched once per page:
 *
 *   - the arena: one mmap'd region of nr_frames page frames (PAGE_SIZE
 *     bytes each) and, beside it, one small record per frame (its map
 *     count and state: free, anonymous, KSM, balloon);
 *   - the page tables of every synthetic process (an "mm"): a three level
 *     radix tree from virtual page number to frame, with a parallel slot
 *     per pte that names the pte's rmap_item, if KSM tracks it;
 *   - bulk read, write, fill, fork, unmap and copy-on-write over them;
 *   - KSM's per page machinery: rmap_items, stable nodes (with chains and
 *     dups), the stable and unstable red-black trees ordered by page
 *     content, the page checksum, and cmp_and_merge_page.
 *
 * Python owns structure and policy at process and area granularity: the
 * areas (VMAs) of each process, the mm_slot list, the scan cursor between
 * mms, the knobs, ksmd's thread.  It calls ke_ksm_scan_mm() with one mm and
 * the mergeable ranges of that mm; the core walks the pages.
 *
 * Conventions of every function here:
 *   - return 0 on success or a negative errno (-EINVAL, -ENOMEM, ...);
 *   - "mm" arguments are ids from ke_mm_new(); a stale or unknown id gives
 *     -ESRCH; addresses are bytes, lengths bytes; callers (the Python layer)
 *     check area bounds, the core checks every index it dereferences;
 *   - no function keeps a pointer the caller passed in after it returns;
 *   - the core is not thread safe: the Python layer serialises every call
 *     on a machine with the machine's lock (cffi releases the GIL around
 *     the call, so other Python threads keep running meanwhile).
 *
 * The region between CDEF BEGIN and CDEF END is read by the cffi build
 * script (ksm_engine/_build_core.py) as the declarations Python sees, so it
 * holds only plain declarations and integer #defines.
 */
#ifndef KSM_ENGINE_H
#define KSM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* CDEF BEGIN */
#define KE_PAGE_SIZE 4096
#define KE_PAGE_SHIFT 12
/* Highest virtual page number an mm may use: addresses < 2^44. */
#define KE_MAX_VPN 4294967295
/* Most mms (processes) one machine may have at once, + 1 (ids are 16 bits). */
#define KE_MAX_MMS 65536

/* ke_mm_pte() flags: what a virtual page maps. */
#define KE_PTE_NONE 0      /* nothing: reads as zeros, no frame */
#define KE_PTE_PRESENT 1   /* an ordinary anonymous frame */
#define KE_PTE_KSM 2       /* a KSM frame (write protected, shared) */
#define KE_PTE_ZERO 4      /* the shared zero page, put there by KSM */

/* Fault injection points, for tests of the error paths (ke_fault_inject). */
#define KE_FAULT_STABLE_INSERT 0   /* stable_tree_insert fails: break COW on both */
#define KE_FAULT_FRAME_ALLOC 1     /* frame allocation fails as if the arena were full */
#define KE_FAULT_NR 2

typedef struct ke_machine ke_machine;

/* Frame accounting: free + used + balloon == nr_frames, always. */
struct ke_mem_counts {
    uint64_t nr_frames;      /* frames in the arena */
    uint64_t free_frames;    /* on the free list */
    uint64_t used_frames;    /* mapped by processes (anonymous or KSM) */
    uint64_t balloon_frames; /* held by the balloon driver */
    uint64_t ksm_frames;     /* of used_frames, how many are KSM pages */
    uint64_t released_frames;/* frames returned to the OS since creation */
};

/* One process's view (its /proc/PID/ksm_stat and RSS). */
struct ke_mm_stat {
    uint64_t rss_pages;          /* ptes mapping a frame (KSM zero pages excluded) */
    uint64_t ksm_rmap_items;     /* rmap_items of this mm */
    uint64_t ksm_merging_pages;  /* its rmap_items hanging on stable nodes */
    uint64_t ksm_zero_pages;     /* its ptes KSM pointed at the zero page */
};

/* The KSM knobs the per-page path reads (Python validates them). */
struct ke_ksm_config {
    uint32_t max_page_sharing;   /* >= 2: most mappings one KSM page holds */
    uint32_t use_zero_pages;     /* merge zero-filled pages with the zero page */
    uint32_t smart_scan;         /* skip pages that stayed unmerged for long */
    uint32_t compat_2009;        /* behave as the 2009 KSM (Linux 2.6.32) */
    uint64_t max_kernel_pages;   /* 2009 only: most KSM pages, 0 = unlimited */
    uint64_t prune_millisecs;    /* stable_node_chains_prune_millisecs */
};

/* Global KSM counters, kept exactly as mm/ksm.c keeps its own. */
struct ke_ksm_stats {
    uint64_t pages_shared;       /* stable nodes with >= 1 rmap_item */
    uint64_t pages_sharing;      /* sum over them of (rmap_items - 1) */
    uint64_t pages_unshared;     /* rmap_items flagged as in the unstable tree */
    uint64_t rmap_items;         /* every rmap_item alive */
    uint64_t pages_scanned;      /* cmp_and_merge_page calls */
    uint64_t pages_skipped;      /* smart_scan skips */
    uint64_t ksm_zero_pages;     /* ptes pointing at the zero page via KSM */
    uint64_t stable_node_chains; /* chain heads in the stable tree */
    uint64_t stable_node_dups;   /* dups hanging under chains */
    uint64_t ksm_pages;          /* KSM frames (2009's kernel_pages_allocated) */
    uint64_t checksums;          /* pages actually hashed (perf counter) */
    uint64_t checksums_avoided;  /* hashes skipped: page unwritten since last */
    uint64_t memcmps;            /* full page comparisons (perf counter) */
    uint64_t prewalk_steps;      /* tree nodes read ahead of the scan (perf counter) */
};

/* One range of virtual addresses [start, end), page aligned. */
struct ke_range {
    uint64_t start;
    uint64_t end;
};

/* What one ke_ksm_scan_mm call did. */
struct ke_scan_out {
    uint32_t scanned;   /* pages given to cmp_and_merge_page (counts against budget) */
    uint32_t mm_done;   /* 1: reached the end of the ranges; cursor is meaningless */
    uint64_t cursor;    /* next virtual address to look at when mm_done == 0 */
};

/* One rmap_item as seen from outside (ke_mm_rmap_items). */
struct ke_rmap_info {
    uint64_t address;        /* virtual address of the page it tracks */
    uint32_t oldchecksum;    /* checksum when last scanned */
    uint32_t stable_node;    /* stable node it hangs on, 0 if none */
    uint8_t state;           /* 0 volatile (in no tree), 1 unstable, 2 stable */
    uint8_t age;             /* smart_scan age */
    uint8_t remaining_skips; /* smart_scan skips left */
    uint8_t checksum_valid;  /* page unwritten since it was hashed */
    uint32_t seqnr;          /* pass of its unstable tree insertion (low 8 bits) */
};

/* One stable node as seen from outside (ke_ksm_stable_nodes). */
struct ke_stable_info {
    uint32_t node;           /* its index */
    uint32_t kind;           /* 1 plain, 2 chain head, 3 dup under a chain */
    uint32_t kpfn;           /* its KSM frame (plain, dup) */
    uint32_t rmap_hlist_len; /* rmap_items on it (plain, dup); dups (chain) */
    uint32_t chain;          /* the chain of a dup, else 0 */
};

/* --- the machine and its frames (arena.c) --- */
int ke_machine_new(uint64_t nr_frames, ke_machine **out);
void ke_machine_free(ke_machine *m);
int ke_machine_counts(const ke_machine *m, struct ke_mem_counts *out);
int ke_balloon_frame_alloc(ke_machine *m, uint32_t *pfn_out);
int ke_balloon_frame_free(ke_machine *m, uint32_t pfn);
int ke_release_flush(ke_machine *m);
int ke_fault_inject(ke_machine *m, int point, uint64_t after, uint64_t count);

/* --- processes: page tables, bulk access, copy-on-write (mm.c) --- */
int ke_mm_new(ke_machine *m, uint32_t *mm_out);
int ke_mm_destroy(ke_machine *m, uint32_t mm);
int ke_mm_fork(ke_machine *m, uint32_t parent, uint32_t child);
int ke_mm_write(ke_machine *m, uint32_t mm, uint64_t addr, const void *buf,
                uint64_t len, uint64_t *frames_short);
int ke_mm_fill(ke_machine *m, uint32_t mm, uint64_t addr, int byte,
               uint64_t len, uint64_t *frames_short);
int ke_mm_read(ke_machine *m, uint32_t mm, uint64_t addr, void *buf,
               uint64_t len);
int ke_mm_unmap(ke_machine *m, uint32_t mm, uint64_t addr, uint64_t len);
int ke_mm_unmerge(ke_machine *m, uint32_t mm, uint64_t addr, uint64_t len,
                  uint64_t *frames_short);
int ke_mm_drop_rmap_items(ke_machine *m, uint32_t mm, uint64_t addr,
                          uint64_t len);
int ke_mm_stat(const ke_machine *m, uint32_t mm, struct ke_mm_stat *out);
int ke_mm_pte(const ke_machine *m, uint32_t mm, uint64_t addr,
              uint32_t *pfn_out, uint32_t *flags_out);
int ke_mm_ptes(const ke_machine *m, uint32_t mm, uint64_t addr,
               uint64_t npages, uint32_t *pfns, uint8_t *flags);

/* --- KSM (ksm.c) --- */
int ke_ksm_configure(ke_machine *m, const struct ke_ksm_config *cfg);
int ke_ksm_get_stats(const ke_machine *m, struct ke_ksm_stats *out);
int ke_ksm_begin_pass(ke_machine *m, uint32_t seqnr);
int ke_ksm_scan_mm(ke_machine *m, uint32_t mm, const struct ke_range *ranges,
                   uint32_t nranges, uint64_t cursor, uint32_t budget,
                   uint64_t now_ms, struct ke_scan_out *out);
int ke_ksm_remove_all(ke_machine *m);
int ke_ksm_check(const ke_machine *m, char *msg, size_t msglen);
uint32_t ke_checksum_page(const void *page, int compat_2009);
int ke_checksum_pages(const void *buf, uint64_t n, int compat_2009,
                      uint32_t *out);

/* --- looking inside (introspect.c): for tests, research, debugging --- */
int ke_mm_rmap_items(const ke_machine *m, uint32_t mm, uint64_t start,
                     struct ke_rmap_info *out, uint32_t max, uint32_t *n_out,
                     uint64_t *next);
int ke_ksm_stable_nodes(const ke_machine *m, uint32_t start,
                        struct ke_stable_info *out, uint32_t max,
                        uint32_t *n_out, uint32_t *next);
/* The two hashes (a NULL buffer hashes as an empty one, whatever len). */
uint64_t ke_xxh64(const void *data, size_t len, uint64_t seed);
uint32_t ke_jhash2(const uint32_t *k, uint32_t length, uint32_t initval);
uint32_t ke_jhash2_2009(const uint32_t *k, uint32_t length, uint32_t initval);
/* --- page fingerprints and the count table of distinct contents
 *     (contents.c; ksm_engine/contents.py) --- */
/* Names the fingerprint function; files of fingerprints carry it. */
#define KE_FP_VERSION 3
/* The smallest count table: 1024 slots of 32 bytes. */
#define KE_COUNTS_MIN_BYTES 32768
typedef struct ke_counts ke_counts;
struct ke_counts_info {
    uint64_t pages;           /* pages entered, zero pages included */
    uint64_t zero_pages;      /* of them, all-zero pages (not in the table) */
    uint64_t distinct;        /* distinct non-zero contents (table entries) */
    uint64_t capacity;        /* table slots */
    uint64_t table_bytes;     /* bytes the table takes */
    uint64_t entry_bytes;     /* bytes per slot */
    uint64_t last_zero_index; /* scan-order index of the last zero page, or UINT64_MAX */
};
/* 128-bit fingerprints (hi, lo) and the zero test of npages whole pages. */
int ke_fingerprint_pages(const void *buf, uint64_t npages, uint64_t *hi,
                         uint64_t *lo, uint8_t *zero);
/* A table bounded by max_bytes (-ENOMEM beyond; -EINVAL under KE_COUNTS_MIN_BYTES). */
int ke_counts_new(uint64_t max_bytes, ke_counts **out);
void ke_counts_free(ke_counts *c);
/* Enters npages whole pages of buf, next in scan order, from source;
 * *zero_out: how many were all zero.  -EOVERFLOW past 2^32-1 copies. */
int ke_counts_add(ke_counts *c, const void *buf, uint64_t npages,
                  uint32_t source, uint64_t *zero_out);
/* The same from fingerprints: entry i is count[i] pages (1 if count is
 * NULL) of content (hi[i], lo[i]), all zero if zero[i] (none if NULL). */
int ke_counts_add_fps(ke_counts *c, const uint64_t *hi, const uint64_t *lo,
                      const uint8_t *zero, const uint64_t *count, uint64_t n,
                      uint32_t source, uint64_t *zero_out);
int ke_counts_info(const ke_counts *c, struct ke_counts_info *out);
/* One row per distinct non-zero content, in table order (-ENOSPC if max
 * is under the distinct count). */
int ke_counts_export(const ke_counts *c, uint64_t *hi, uint64_t *lo,
                     uint64_t *count, uint64_t *last_index,
                     uint32_t *last_source, uint64_t max, uint64_t *n_out);
/* CDEF END */

#endif /* KSM_ENGINE_H */
