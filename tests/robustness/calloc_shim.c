/*
 * calloc_shim.c - makes chosen calloc() calls fail, for the page-table
 * ENOMEM tests of test_faults.py (the core allocates page tables with
 * calloc; nothing else in it can be made to fail from outside).
 *
 * Preloaded into a test's subprocess (LD_PRELOAD), it forwards every
 * calloc to the real one, except that while armed with
 * calloc_shim_arm(k) the k-th call (from 0) asking for at least
 * CALLOC_SHIM_MIN bytes returns NULL, and so do the count - 1 such calls
 * after it.  calloc_shim_fired() says how many failed.  Smaller requests
 * (the interpreter's own) pass.
 */
#include <stddef.h>

/* glibc's own calloc (a dlsym lookup here could recurse into calloc) */
extern void *__libc_calloc(size_t n, size_t size);

#define CALLOC_SHIM_MIN 2048 /* a page table leaf is 2 056 bytes */

static long countdown = -1; /* calls still to pass before failing; -1 off */
static long failures;       /* calls to fail once countdown reaches 0 */
static int fired;           /* calls failed since armed */

void calloc_shim_arm(long k, long count)
{
    countdown = k;
    failures = count;
    fired = 0;
}

int calloc_shim_fired(void)
{
    return fired;
}

void *calloc(size_t n, size_t size)
{
    if (countdown >= 0 && n * size >= CALLOC_SHIM_MIN) {
        if (countdown > 0) {
            countdown--;
        } else if (failures > 0) {
            failures--;
            fired++;
            return NULL;
        }
    }
    return __libc_calloc(n, size);
}
