/*
 * contents.c - page fingerprints and the count table of distinct contents.
 *
 * The estimate (ksm_engine.apps.estimate) and the fleet fingerprints never
 * hold the pages they look at: each page becomes a 128-bit fingerprint, and
 * a table keeps one entry per distinct non-zero content.  KSM's settled
 * state for memory that does not change follows from those counts
 * (ksm_engine/ksm/settled.py).
 *
 * The fingerprint (KE_FP_VERSION names it; fp_page says how): eight
 * 64-bit accumulators over the page's words with a fixed random key, in the
 * manner of XXH3's long-input loop (32x32->64-bit multiplies of keyed words,
 * the raw word added beside, a scramble per KiB), folded into 128 bits
 * through two 64x64->128-bit multiply folds with different keys.  Written
 * so that the compiler vectorises it (several GB/s on one core).  It is not
 * a cryptographic hash: memory crafted to collide can collide.  For memory
 * not crafted against it, the odds that any two of n distinct pages share a
 * fingerprint are taken as the birthday bound for a 128-bit value,
 * n^2 / 2^129: under 2^-73 for 2^28 pages (1 TiB), docs/estimate.md.  The
 * zero test (every word 0) ORs the same words in the same loop.
 *
 * The count table: open addressing with linear probing, keyed by the
 * fingerprint, indexed by its low word (already avalanched).  An entry
 * (struct fp_entry, 32 bytes) holds the fingerprint, how many pages hold
 * the content, the scan-order index of its last page and the source that
 * page came from.  An empty slot has count 0.  The table doubles when 3/4
 * full, so it costs 43 to 85 bytes per distinct content (64 on average at
 * a random fill), never more than max_bytes (-ENOMEM beyond).  All-zero
 * pages are not entered: they are counted apart (zero_pages) with the
 * index of the last one.
 *
 * Invariants (checked by ke_counts_check_table in debug builds and by the
 * tests through the export): pages == zero_pages + sum of counts;
 * distinct == entries with count > 0; distinct * 4 <= capacity * 3.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ksm_engine.h"

#define FP_P1 0x9E3779B185EBCA87ull
#define FP_P2 0xC2B2AE3D27D4EB4Full
#define FP_P3 0x165667B19E3779F9ull
#define FP_P4 0x85EBCA77C2B2AE63ull
#define FP_P5 0x27D4EB2F165667C5ull
#define WORDS_PER_PAGE (KE_PAGE_SIZE / 8)
#define MIN_CAPACITY (KE_COUNTS_MIN_BYTES / sizeof(struct fp_entry))

struct fp_entry {
    uint64_t hi, lo;       /* the content's fingerprint */
    uint64_t last_index;   /* scan-order index of the last page holding it */
    uint32_t count;        /* pages holding it; 0: the slot is empty */
    uint32_t last_source;  /* the source of that last page */
};

_Static_assert(sizeof(struct fp_entry) == 32, "an entry is 32 bytes (docs)");

struct ke_counts {
    struct fp_entry *slots;    /* capacity entries, a power of two */
    uint64_t capacity;         /* slots */
    uint64_t distinct;         /* slots in use */
    uint64_t max_bytes;        /* the bound on the table's size */
    uint64_t pages;            /* pages entered, zero pages included */
    uint64_t zero_pages;       /* of them, all-zero pages */
    uint64_t last_zero_index;  /* scan-order index of the last zero page */
};

static inline uint64_t fp_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t fp_read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts, as the engine's arena */
    return v;
}

/* The key: 32 fixed random words (drawn once from a seeded generator). */
static const uint64_t fp_key[32] = {
    0xbcdac31a53215d9cull, 0xc96e4846683b82a1ull, 0x188931bf372076f9ull, 0x14c7b0da3eee8d33ull,
    0x8a9b88080de6e672ull, 0xf096b515b2ab3874ull, 0xbb1641ea67814107ull, 0xd7e19750bdda502eull,
    0x2ad872fc10728e24ull, 0x7d3656283f511dfdull, 0x2342eba7562ae984ull, 0xb9dc25a3c24218e7ull,
    0x5837378b5142a203ull, 0x738b8344228ba890ull, 0xbd7d4dfecc2d1015ull, 0xa93a53c16d57be1aull,
    0x14d3c8660608d749ull, 0x46d1eeabfc4489e0ull, 0xd1ba0432870998b7ull, 0x02ba5eeb63f31b49ull,
    0x81ea90aa3c96b1a8ull, 0x7335f275d210f628ull, 0xd936c6285ff6975eull, 0x90926059ef3c994eull,
    0xc6eadc987ae74532ull, 0x01d016e98b6e3981ull, 0x20b48fa03f306cf1ull, 0xace7f9d52da9502dull,
    0x6db5a2de7084e217ull, 0x82b164850fb2cbb1ull, 0x6dfd4f982b367af2ull, 0xa63e9372e2b6abfcull,
};

/* The final mix: SplitMix64's finaliser (every input bit reaches every
 * output bit). */
static inline uint64_t fp_avalanche(uint64_t h)
{
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

/* The 128-bit product of a and b, its halves added (the final mix). */
static inline uint64_t fp_mul_fold(uint64_t a, uint64_t b)
{
    __uint128_t p = (__uint128_t)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
}

/*
 * One page's fingerprint; returns 1 if the page is all zero.
 *
 * Eight 64-bit accumulators take the page in stripes of eight words: word
 * i of a stripe, xored with a key word (sliding by one per stripe), has
 * its 32-bit halves multiplied into accumulator i, and the word itself is
 * added to accumulator i^1 (so a word whose keyed half is zero still
 * counts).  After every block of 16 stripes (1 KiB) each accumulator is
 * scrambled (xorshift, key, multiply).  The eight are then folded twice,
 * with two different key sets, through 64x64->128-bit products into the
 * two halves of the fingerprint.  The loops are plain C over fixed bounds
 * that the compiler vectorises (32x32->64 multiplies: pmuludq).
 */
__attribute__((optimize("O3")))
static int fp_page(const unsigned char *page, uint64_t *hi, uint64_t *lo)
{
    uint64_t acc[8] = {FP_P3, FP_P1, FP_P2, FP_P4, FP_P5, FP_P3 ^ FP_P1,
                       FP_P2 ^ FP_P4, FP_P5 ^ FP_P1};
    uint64_t any[8] = {0};

    for (int block = 0; block < KE_PAGE_SIZE / 1024; block++) {
        for (int s = 0; s < 16; s++) {
            const unsigned char *p = page + block * 1024 + s * 64;
            for (int i = 0; i < 8; i++) {
                uint64_t w = fp_read64(p + 8 * i);
                uint64_t k = w ^ fp_key[s + i];
                any[i] |= w;
                acc[i ^ 1] += w;
                acc[i] += (k & 0xFFFFFFFFull) * (k >> 32);
            }
        }
        for (int i = 0; i < 8; i++) {
            uint64_t a = acc[i];
            a ^= a >> 47;
            a ^= fp_key[24 + i];
            acc[i] = a * 0x9E3779B1ull;
        }
    }
    uint64_t h1 = KE_PAGE_SIZE * FP_P1, h2 = ~(uint64_t)KE_PAGE_SIZE * FP_P2;
    for (int i = 0; i < 8; i += 2) {
        h1 += fp_mul_fold(acc[i] ^ fp_key[i], acc[i + 1] ^ fp_key[i + 1]);
        h2 += fp_mul_fold(acc[i] ^ fp_key[16 + i], acc[i + 1] ^ fp_key[17 + i]);
    }
    *hi = fp_avalanche(h1);
    *lo = fp_avalanche(h2 ^ (h1 >> 31));
    uint64_t nz = 0;
    for (int i = 0; i < 8; i++)
        nz |= any[i];
    return nz == 0;
}

int ke_fingerprint_pages(const void *buf, uint64_t npages, uint64_t *hi,
                         uint64_t *lo, uint8_t *zero)
{
    if (npages && (!buf || !hi || !lo || !zero))
        return -EINVAL;
    if (npages > UINT64_MAX / KE_PAGE_SIZE)
        return -EINVAL;
    const unsigned char *p = buf;
    for (uint64_t i = 0; i < npages; i++)
        zero[i] = (uint8_t)fp_page(p + i * KE_PAGE_SIZE, &hi[i], &lo[i]);
    return 0;
}

int ke_counts_new(uint64_t max_bytes, ke_counts **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (max_bytes < KE_COUNTS_MIN_BYTES)
        return -EINVAL;
    ke_counts *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->slots = calloc(MIN_CAPACITY, sizeof(struct fp_entry));
    if (!c->slots) {
        free(c);
        return -ENOMEM;
    }
    c->capacity = MIN_CAPACITY;
    c->max_bytes = max_bytes;
    *out = c;
    return 0;
}

void ke_counts_free(ke_counts *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c);
}

/* The slot holding (hi, lo), or the empty slot where it would go. */
static struct fp_entry *counts_slot(struct fp_entry *slots, uint64_t capacity,
                                    uint64_t hi, uint64_t lo)
{
    uint64_t mask = capacity - 1, i = lo & mask;
    for (;;) {
        struct fp_entry *e = &slots[i];
        if (!e->count || (e->lo == lo && e->hi == hi))
            return e;
        i = (i + 1) & mask;
    }
}

/* Doubles the table (-ENOMEM past max_bytes or when calloc fails; the
 * table is then unchanged). */
static int counts_grow(ke_counts *c)
{
    uint64_t cap = c->capacity * 2;
    if (cap > c->max_bytes / sizeof(struct fp_entry))
        return -ENOMEM;
    struct fp_entry *slots = calloc(cap, sizeof(struct fp_entry));
    if (!slots)
        return -ENOMEM;
    for (uint64_t i = 0; i < c->capacity; i++) {
        struct fp_entry *e = &c->slots[i];
        if (e->count)
            *counts_slot(slots, cap, e->hi, e->lo) = *e;
    }
    free(c->slots);
    c->slots = slots;
    c->capacity = cap;
    return 0;
}

/* Enters n pages of one content (n >= 1) as the next pages in scan order. */
static int counts_enter(ke_counts *c, uint64_t hi, uint64_t lo, int zero,
                        uint64_t n, uint32_t source)
{
    if (c->pages > UINT64_MAX - n)
        return -EOVERFLOW;
    uint64_t last = c->pages + n - 1;
    if (zero) {
        c->zero_pages += n;
        c->last_zero_index = last;
        c->pages += n;
        return 0;
    }
    if ((c->distinct + 1) * 4 > c->capacity * 3) {
        int rc = counts_grow(c);
        if (rc)
            return rc;
    }
    struct fp_entry *e = counts_slot(c->slots, c->capacity, hi, lo);
    if (!e->count) {
        e->hi = hi;
        e->lo = lo;
        c->distinct++;
    } else if (n > (uint64_t)UINT32_MAX - e->count) {
        return -EOVERFLOW;
    }
    e->count += (uint32_t)n;
    e->last_index = last;
    e->last_source = source;
    c->pages += n;
    return 0;
}

int ke_counts_add(ke_counts *c, const void *buf, uint64_t npages,
                  uint32_t source, uint64_t *zero_out)
{
    if (!c || (npages && !buf))
        return -EINVAL;
    if (npages > UINT64_MAX / KE_PAGE_SIZE)
        return -EINVAL;
    const unsigned char *p = buf;
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < npages; i++) {
        uint64_t hi, lo;
        int z = fp_page(p + i * KE_PAGE_SIZE, &hi, &lo);
        int rc = counts_enter(c, hi, lo, z, 1, source);
        if (rc) {
            if (zero_out)
                *zero_out = zeros;
            return rc;
        }
        zeros += (uint64_t)z;
    }
    if (zero_out)
        *zero_out = zeros;
    return 0;
}

int ke_counts_add_fps(ke_counts *c, const uint64_t *hi, const uint64_t *lo,
                      const uint8_t *zero, const uint64_t *count, uint64_t n,
                      uint32_t source, uint64_t *zero_out)
{
    if (!c || (n && (!hi || !lo)))
        return -EINVAL;
    uint64_t zeros = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t k = count ? count[i] : 1;
        int z = zero ? zero[i] != 0 : 0;
        if (!k)
            continue;
        int rc = counts_enter(c, hi[i], lo[i], z, k, source);
        if (rc) {
            if (zero_out)
                *zero_out = zeros;
            return rc;
        }
        zeros += z ? k : 0;
    }
    if (zero_out)
        *zero_out = zeros;
    return 0;
}

int ke_counts_info(const ke_counts *c, struct ke_counts_info *out)
{
    if (!c || !out)
        return -EINVAL;
    out->pages = c->pages;
    out->zero_pages = c->zero_pages;
    out->distinct = c->distinct;
    out->capacity = c->capacity;
    out->table_bytes = c->capacity * sizeof(struct fp_entry);
    out->entry_bytes = sizeof(struct fp_entry);
    out->last_zero_index = c->zero_pages ? c->last_zero_index : UINT64_MAX;
    return 0;
}

int ke_counts_export(const ke_counts *c, uint64_t *hi, uint64_t *lo,
                     uint64_t *count, uint64_t *last_index,
                     uint32_t *last_source, uint64_t max, uint64_t *n_out)
{
    if (!c || !n_out)
        return -EINVAL;
    if (max < c->distinct)
        return -ENOSPC;
    if (c->distinct && (!hi || !lo || !count || !last_index || !last_source))
        return -EINVAL;
    uint64_t n = 0;
    for (uint64_t i = 0; i < c->capacity; i++) {
        const struct fp_entry *e = &c->slots[i];
        if (!e->count)
            continue;
        assert(n < c->distinct);
        hi[n] = e->hi;
        lo[n] = e->lo;
        count[n] = e->count;
        last_index[n] = e->last_index;
        last_source[n] = e->last_source;
        n++;
    }
    assert(n == c->distinct);
    *n_out = n;
    return 0;
}
