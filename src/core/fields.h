/* A list of header fields packed in one cg_buf, names and values copied in.
 *
 * Protocol-neutral: the ASGI layer collects validated response headers here,
 * HTTP/1 serializes them, HTTP/2 builds its name/value array from them.
 * Nothing here checks what a name or value holds; empty ones are kept.
 *
 * Layout of `buf`, per field in order: a fixed header of two size_t (name
 * length, value length), then the name bytes, then the value bytes. There is
 * no padding, so headers are read and written with memcpy (no alignment is
 * assumed). buf.pos stays 0; buf.len is the packed size. */
#ifndef CG_FIELDS_H
#define CG_FIELDS_H

#include <stddef.h>
#include <string.h>

#include "buf.h"

typedef struct cg_fields {
    cg_buf buf; /* packed: per field a header (name length, value length) then name bytes, value
                   bytes; owned, released by cg_fields_free */
    size_t n;   /* number of fields */
} cg_fields;

/* One field as read back: both pointers point into the list's buffer and stay
 * valid until the next add, reset or free. */
typedef struct cg_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} cg_field;

/* Bytes of the header before each field's name. */
#define CG_FIELD_HDR (2 * sizeof(size_t))

/** Initialises an empty list (no allocation). */
static inline void cg_fields_init(cg_fields *f)
{
    cg_buf_init(&f->buf);
    f->n = 0;
}

/** Releases the memory; the list is empty and reusable afterwards. */
void cg_fields_free(cg_fields *f);

/** Empties the list, keeps the memory. */
static inline void cg_fields_reset(cg_fields *f)
{
    cg_buf_reset(&f->buf);
    f->n = 0;
}

/** Appends a copy of the field (name, value). A pointer may be NULL when its
 * length is 0. Returns 0, or -1 when memory is exhausted (list unchanged). */
static inline int cg_fields_add(cg_fields *f, const char *name, size_t name_len, const char *value,
                                size_t value_len)
{
    size_t need = CG_FIELD_HDR + name_len;
    if (need < name_len || need + value_len < need)
        return -1;
    need += value_len;
    if (f->buf.cap - f->buf.len < need && cg_buf_reserve(&f->buf, need) < 0)
        return -1;
    char *p = f->buf.data + f->buf.len;
    size_t hdr[2] = {name_len, value_len};
    memcpy(p, hdr, CG_FIELD_HDR);
    p += CG_FIELD_HDR;
    if (name_len)
        memcpy(p, name, name_len);
    if (value_len)
        memcpy(p + name_len, value, value_len);
    f->buf.len += need;
    f->n++;
    return 0;
}

/** Iteration: `*pos` starts at 0; returns 1 and fills *out while fields
 * remain, else 0. Pointers stay valid until the next add/reset/free. */
static inline int cg_fields_next(const cg_fields *f, size_t *pos, cg_field *out)
{
    if (*pos >= f->buf.len)
        return 0;
    const char *p = f->buf.data + *pos;
    size_t hdr[2];
    memcpy(hdr, p, CG_FIELD_HDR);
    out->name = p + CG_FIELD_HDR;
    out->name_len = hdr[0];
    out->value = out->name + hdr[0];
    out->value_len = hdr[1];
    *pos += CG_FIELD_HDR + hdr[0] + hdr[1];
    return 1;
}

/** Sum of name_len + value_len over all fields. */
static inline size_t cg_fields_bytes(const cg_fields *f)
{
    return f->buf.len - f->n * CG_FIELD_HDR;
}

#endif
