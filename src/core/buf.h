/* Growable byte buffer with a read cursor.
 *
 * Layout: data[0 .. pos) consumed, data[pos .. len) unread, data[len .. cap) free.
 * The buffer owns `data` (malloc); cg_buf_free releases it. Pointers into the
 * buffer are invalidated by any call that may grow or compact it. */
#ifndef CG_BUF_H
#define CG_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct cg_buf {
    char *data;
    size_t pos;
    size_t len;
    size_t cap;
} cg_buf;

/** Initialises an empty buffer (no allocation). */
void cg_buf_init(cg_buf *b);
/** Releases the memory; the buffer is empty and reusable afterwards. */
void cg_buf_free(cg_buf *b);
/** Number of unread bytes. */
static inline size_t cg_buf_unread(const cg_buf *b)
{
    return b->len - b->pos;
}
/** Ensures at least `n` free bytes after `len`, compacting consumed bytes first.
 * Returns 0, or -1 when memory is exhausted (buffer unchanged). */
int cg_buf_reserve(cg_buf *b, size_t n);
/** Appends `n` bytes. Returns 0 or -1 (out of memory). */
static inline int cg_buf_append(cg_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->cap - b->len < n && cg_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}
/** Marks `n` unread bytes consumed; resets both cursors when everything is read.
 * An `n` beyond the unread bytes consumes them all (the connection resets its
 * input when it rejects a request, then consumes the head it parsed). */
void cg_buf_consume(cg_buf *b, size_t n);
/** Drops all content, keeps the memory. */
static inline void cg_buf_reset(cg_buf *b)
{
    b->pos = b->len = 0;
}
/** Releases memory above `keep` bytes of capacity when the buffer is empty
 * (idle connections must stay small). */
void cg_buf_shrink(cg_buf *b, size_t keep);

#endif
