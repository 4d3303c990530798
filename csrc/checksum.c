/*
 * checksum.c - the page checksum KSM uses to tell volatile pages.
 *
 * Today's kernel: xxh64 of the page with seed 0, low 32 bits kept
 * (calc_checksum in mm/ksm.c).  The 2009 kernel: jhash2 over the page as
 * PAGE_SIZE/4 words with initval 17, where jhash2 was then lookup2's
 * hash2 (ke_jhash2_2009); today's jhash2 (lookup3, ke_jhash2) is here too.
 * All written from their published descriptions; tests check them bit for
 * bit against the xxhash package and Python versions of the Jenkins hashes.
 */
#include "internal.h"

#define P64_1 0x9E3779B185EBCA87ull
#define P64_2 0xC2B2AE3D27D4EB4Full
#define P64_3 0x165667B19E3779F9ull
#define P64_4 0x85EBCA77C2B2AE63ull
#define P64_5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t read64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only, as the kernel's x86 */
    return v;
}

static inline uint32_t read32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t xxh64_round(uint64_t acc, uint64_t input)
{
    acc += input * P64_2;
    acc = rotl64(acc, 31);
    return acc * P64_1;
}

static inline uint64_t xxh64_merge(uint64_t acc, uint64_t val)
{
    acc ^= xxh64_round(0, val);
    return acc * P64_1 + P64_4;
}

uint64_t ke_xxh64(const void *data, size_t len, uint64_t seed)
{
    static const uint8_t empty[1];
    const uint8_t *p, *end;
    uint64_t h;

    if (!data) { /* a NULL buffer hashes as the empty one, never faults */
        data = empty;
        len = 0;
    }
    p = data;
    end = p + len;

    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + P64_1 + P64_2, v2 = seed + P64_2, v3 = seed,
                 v4 = seed - P64_1;
        do {
            v1 = xxh64_round(v1, read64(p));
            v2 = xxh64_round(v2, read64(p + 8));
            v3 = xxh64_round(v3, read64(p + 16));
            v4 = xxh64_round(v4, read64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh64_merge(h, v1);
        h = xxh64_merge(h, v2);
        h = xxh64_merge(h, v3);
        h = xxh64_merge(h, v4);
    } else {
        h = seed + P64_5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= xxh64_round(0, read64(p));
        h = rotl64(h, 27) * P64_1 + P64_4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)read32(p) * P64_1;
        h = rotl64(h, 23) * P64_2 + P64_3;
        p += 4;
    }
    while (p < end) {
        h ^= (*p) * P64_5;
        h = rotl64(h, 11) * P64_1;
        p++;
    }
    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    h ^= h >> 32;
    return h;
}

static inline uint32_t rol32(uint32_t w, int s)
{
    return (w << s) | (w >> (32 - s));
}

#define JHASH_MIX(a, b, c)                                                    \
    do {                                                                      \
        a -= c; a ^= rol32(c, 4); c += b;                                     \
        b -= a; b ^= rol32(a, 6); a += c;                                     \
        c -= b; c ^= rol32(b, 8); b += a;                                     \
        a -= c; a ^= rol32(c, 16); c += b;                                    \
        b -= a; b ^= rol32(a, 19); a += c;                                    \
        c -= b; c ^= rol32(b, 4); b += a;                                     \
    } while (0)

#define JHASH_FINAL(a, b, c)                                                  \
    do {                                                                      \
        c ^= b; c -= rol32(b, 14);                                            \
        a ^= c; a -= rol32(c, 11);                                            \
        b ^= a; b -= rol32(a, 25);                                            \
        c ^= b; c -= rol32(b, 16);                                            \
        a ^= c; a -= rol32(c, 4);                                             \
        b ^= a; b -= rol32(a, 14);                                            \
        c ^= b; c -= rol32(b, 24);                                            \
    } while (0)

/* Bob Jenkins' lookup3 hashword(), as linux/jhash.h's jhash2(). */
uint32_t ke_jhash2(const uint32_t *k, uint32_t length, uint32_t initval)
{
    uint32_t a, b, c;
    if (!k) /* a NULL buffer hashes as the empty one, never faults */
        length = 0;
    a = b = c = 0xdeadbeef + (length << 2) + initval;
    while (length > 3) {
        a += k[0];
        b += k[1];
        c += k[2];
        JHASH_MIX(a, b, c);
        length -= 3;
        k += 3;
    }
    switch (length) {
    case 3: c += k[2]; /* fall through */
    case 2: b += k[1]; /* fall through */
    case 1: a += k[0];
        JHASH_FINAL(a, b, c);
        break;
    case 0:
        break;
    }
    return c;
}

/*
 * The jhash2() of 2009 kernels (before 2.6.37), which the seed's
 * calc_checksum() used: Bob Jenkins' lookup2 hash2(), golden-ratio start,
 * the length in bytes added before the last mix.
 */
#define LOOKUP2_MIX(a, b, c)                                                  \
    do {                                                                      \
        a -= b; a -= c; a ^= (c >> 13);                                       \
        b -= c; b -= a; b ^= (a << 8);                                        \
        c -= a; c -= b; c ^= (b >> 13);                                       \
        a -= b; a -= c; a ^= (c >> 12);                                       \
        b -= c; b -= a; b ^= (a << 16);                                       \
        c -= a; c -= b; c ^= (b >> 5);                                        \
        a -= b; a -= c; a ^= (c >> 3);                                        \
        b -= c; b -= a; b ^= (a << 10);                                       \
        c -= a; c -= b; c ^= (b >> 15);                                       \
    } while (0)

uint32_t ke_jhash2_2009(const uint32_t *k, uint32_t length, uint32_t initval)
{
    uint32_t a = 0x9e3779b9, b = 0x9e3779b9, c = initval, len = length;
    if (!k)
        len = length = 0;
    while (len >= 3) {
        a += k[0];
        b += k[1];
        c += k[2];
        LOOKUP2_MIX(a, b, c);
        k += 3;
        len -= 3;
    }
    c += length * 4;
    switch (len) {
    case 2: b += k[1]; /* fall through */
    case 1: a += k[0]; /* fall through */
    default: break;
    }
    LOOKUP2_MIX(a, b, c);
    return c;
}

uint32_t page_checksum(const void *page, int compat_2009)
{
    if (compat_2009) {
        uint32_t words[PAGE_SIZE / 4];
        memcpy(words, page, PAGE_SIZE);
        return ke_jhash2_2009(words, PAGE_SIZE / 4, 17);
    }
    return (uint32_t)ke_xxh64(page, PAGE_SIZE, 0);
}

uint32_t ke_checksum_page(const void *page, int compat_2009)
{
    if (!page)
        return 0;
    return page_checksum(page, compat_2009);
}

/*
 * Checksums n consecutive pages of buf into out[0..n-1], as n calls of
 * ke_checksum_page would: one call for a whole buffer, so bulk users (and
 * the checksum benchmark) pay no per-page call cost.  -EINVAL when n > 0
 * and buf or out is NULL.
 */
int ke_checksum_pages(const void *buf, uint64_t n, int compat_2009, uint32_t *out)
{
    const uint8_t *p = buf;
    uint64_t i;

    if (n && (!buf || !out))
        return -EINVAL;
    for (i = 0; i < n; i++)
        out[i] = page_checksum(p + i * PAGE_SIZE, compat_2009);
    return 0;
}
