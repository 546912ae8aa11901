/* Inputs placed against an unreadable page, so a parser that reads one byte
 * past its input crashes the test instead of passing by luck. */
#ifndef CG_TEST_GUARD_H
#define CG_TEST_GUARD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct guard {
    char *map;
    size_t maplen;
} guard;

/* Copies src[0..n) so that its last byte is the last readable byte. */
static inline char *guard_put(guard *g, const void *src, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = n ? (n + pg - 1) / pg : 1;
    g->maplen = (pages + 1) * pg;
    g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED || mprotect(g->map + pages * pg, pg, PROT_NONE) != 0) {
        perror("mmap");
        exit(2);
    }
    char *p = g->map + pages * pg - n;
    if (n)
        memcpy(p, src, n);
    return p;
}

static inline void guard_free(guard *g)
{
    if (g->map)
        munmap(g->map, g->maplen);
    g->map = NULL;
}

#endif
