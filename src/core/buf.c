#include "buf.h"

#include <stdlib.h>
#include <string.h>

void cg_buf_init(cg_buf *b)
{
    b->data = NULL;
    b->pos = b->len = b->cap = 0;
}

void cg_buf_free(cg_buf *b)
{
    free(b->data);
    cg_buf_init(b);
}

int cg_buf_reserve(cg_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    /* Compacting is cheaper than growing when consumed bytes make the room. */
    if (b->pos > 0) {
        size_t unread = b->len - b->pos;
        memmove(b->data, b->data + b->pos, unread);
        b->pos = 0;
        b->len = unread;
        if (b->cap - b->len >= n)
            return 0;
    }
    size_t need = b->len + n;
    if (need < n)
        return -1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > ((size_t)-1) / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

void cg_buf_consume(cg_buf *b, size_t n)
{
    b->pos += n;
    if (b->pos >= b->len)
        b->pos = b->len = 0;
}

void cg_buf_shrink(cg_buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep) {
        free(b->data);
        cg_buf_init(b);
    }
}
