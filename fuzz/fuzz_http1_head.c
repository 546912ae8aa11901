/* libFuzzer target for the request-head parser. The first input byte picks a
 * split point and the limits; the rest is the head. Checks, aborting on any
 * violation: parsing whole and in two pieces (in separate, moved buffers)
 * agree; every slice lies inside the input; a prefix never succeeds with more
 * bytes than it has, and a prefix of an accepted head is incomplete. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define MAXF 128

typedef struct res {
    long ret;
    const char *error;
    const char *base;
    cg_http1_request req;
    cg_http1_header h[MAXF];
} res;

static void check(int cond)
{
    if (!cond)
        abort();
}

static int inside(cg_slice s, const char *lo, const char *hi)
{
    return s.base >= lo && s.base <= hi && s.len <= (size_t)(hi - s.base);
}

static void check_slices(const res *r, size_t len)
{
    if (r->ret < 0)
        return;
    check((size_t)r->ret <= len);
    const char *lo = r->base, *hi = r->base + r->ret;
    const cg_http1_request *q = &r->req;
    check(inside(q->method, lo, hi) && inside(q->target, lo, hi) && inside(q->query, lo, hi));
    check(inside(q->path, lo, hi) ||
          (q->target_form == CG_TARGET_ABSOLUTE && q->path.len == 1 && q->path.base[0] == '/'));
    check(q->num_headers <= MAXF);
    for (size_t i = 0; i < q->num_headers; i++)
        check(inside(q->headers[i].name, lo, hi) && inside(q->headers[i].value, lo, hi));
}

static size_t off(cg_slice s, const res *r)
{
    return (size_t)(s.base - r->base);
}

static int same_slice(cg_slice a, const res *ra, cg_slice b, const res *rb)
{
    if (a.len != b.len)
        return 0;
    int ain = a.base >= ra->base && a.base < ra->base + ra->ret + 1;
    int bin = b.base >= rb->base && b.base < rb->base + rb->ret + 1;
    if (ain != bin)
        return 0;
    return ain ? off(a, ra) == off(b, rb) : a.base == b.base;
}

static void check_same(const res *a, const res *b)
{
    check(a->ret == b->ret && a->error == b->error);
    if (a->ret < 0)
        return;
    const cg_http1_request *x = &a->req, *y = &b->req;
    check(same_slice(x->method, a, y->method, b) && same_slice(x->target, a, y->target, b) &&
          same_slice(x->path, a, y->path, b) && same_slice(x->query, a, y->query, b));
    check(x->target_form == y->target_form && x->version == y->version &&
          x->num_headers == y->num_headers && x->content_length == y->content_length &&
          x->chunked == y->chunked && x->keep_alive == y->keep_alive &&
          x->expect_continue == y->expect_continue && x->upgrade == y->upgrade);
    for (size_t i = 0; i < x->num_headers; i++)
        check(same_slice(x->headers[i].name, a, y->headers[i].name, b) &&
              same_slice(x->headers[i].value, a, y->headers[i].value, b) &&
              x->headers[i].token == y->headers[i].token);
}

static void parse(res *r, cg_http1_parser *p, const char *buf, size_t len,
                  const cg_http1_limits *lim)
{
    r->req.headers = r->h;
    r->ret = cg_http1_parse_head(p, buf, len, lim, &r->req);
    r->error = p->error;
    r->base = buf;
    check(r->ret >= -1 || r->ret == CG_HTTP1_BAD_REQUEST || r->ret == CG_HTTP1_URI_TOO_LONG ||
          r->ret == CG_HTTP1_FIELDS_TOO_LARGE || r->ret == CG_HTTP1_VERSION_NOT_SUPPORTED);
    check((r->ret < -1) == (r->error != NULL));
    check_slices(r, len);
}

/* Exact-size heap copy, so ASan sees any over-read. */
static char *copy(const uint8_t *d, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (n)
        memcpy(b, d, n);
    return b;
}

static res whole, split, prefix;

static void run(const uint8_t *in, size_t n, size_t cut, const cg_http1_limits *lim)
{
    cg_http1_parser p;
    char *all = copy(in, n);
    cg_http1_parser_init(&p);
    parse(&whole, &p, all, n, lim);

    /* Two pieces; the second call sees a different buffer with the same bytes. */
    char *first = copy(in, cut);
    cg_http1_parser_init(&p);
    parse(&split, &p, first, cut, lim);
    check(split.ret < 0 || (size_t)split.ret <= cut);
    if (split.ret == CG_HTTP1_INCOMPLETE) {
        char *again = copy(in, n);
        parse(&split, &p, again, n, lim);
        check_same(&whole, &split);
        free(again);
    } else {
        check_same(&whole, &split);
    }

    /* A fresh parse of the prefix agrees with the whole: an accepted head is
     * incomplete before its last byte and the same from it on. */
    cg_http1_parser_init(&p);
    parse(&prefix, &p, first, cut, lim);
    if (whole.ret >= 0) {
        if (cut < (size_t)whole.ret)
            check(prefix.ret == CG_HTTP1_INCOMPLETE);
        else
            check_same(&whole, &prefix);
    }
    free(first);
    free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    size_t cut = (size_t)sel * n / 255;
    static const cg_http1_limits small = {64, 48, 6};
    static const cg_http1_limits deflim = {8190, 8190, 100};
    run(in, n, cut, &deflim);
    run(in, n, cut, &small);
    return 0;
}
