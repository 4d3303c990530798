/*
 * page_compare.c - memcmp_pages with the lcp bound (page_compare.h says
 * how the tree walks use it): compares two pages from the first byte the
 * walk does not know equal, 64 bytes a step (SSE2 where there is one), and
 * says where they first differ.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#endif

#include "page_compare.h"

int page_cmp_lcp(ke_machine *m, uint32_t a, uint32_t b, uint32_t from,
                 uint32_t *lcp)
{
    const uint8_t *pa = frame_mem(m, a), *pb = frame_mem(m, b);
    uint32_t off = from & ~63u;
    m->st.memcmps++;
#if defined(__x86_64__) || defined(__i386__)
    for (; off < PAGE_SIZE; off += 64) {
        __m128i e0 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off)),
                                    _mm_loadu_si128((const __m128i *)(pb + off)));
        __m128i e1 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off + 16)),
                                    _mm_loadu_si128((const __m128i *)(pb + off + 16)));
        __m128i e2 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off + 32)),
                                    _mm_loadu_si128((const __m128i *)(pb + off + 32)));
        __m128i e3 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(pa + off + 48)),
                                    _mm_loadu_si128((const __m128i *)(pb + off + 48)));
        uint64_t eq = (uint64_t)(uint32_t)_mm_movemask_epi8(e0) |
                      ((uint64_t)(uint32_t)_mm_movemask_epi8(e1) << 16) |
                      ((uint64_t)(uint32_t)_mm_movemask_epi8(e2) << 32) |
                      ((uint64_t)(uint32_t)_mm_movemask_epi8(e3) << 48);
        if (eq != ~0ull) {
            uint32_t i = off + (uint32_t)__builtin_ctzll(~eq);
            *lcp = i;
            return pa[i] < pb[i] ? -1 : 1;
        }
    }
#else
    for (; off < PAGE_SIZE; off++) {
        if (pa[off] != pb[off]) {
            *lcp = off;
            return pa[off] < pb[off] ? -1 : 1;
        }
    }
#endif
    *lcp = PAGE_SIZE;
    return 0;
}
