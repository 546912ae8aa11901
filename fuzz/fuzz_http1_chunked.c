/* libFuzzer target for the chunked decoder: decoding the input whole, one byte
 * per call, and in two pieces at a point taken from the first byte must give
 * the same body bytes, result, rule and consumed length. Each piece is an
 * exact-size heap copy, so ASan sees any over-read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

typedef struct out {
    int ret;
    const char *error;
    size_t consumed;
    size_t body_len;
    uint8_t body[70000];
} out;

static void check(int cond)
{
    if (!cond)
        abort();
}

/* Feeds in[0..n) in pieces of at most `step` bytes, `cut` bytes first (0: no cut). */
static void decode(const uint8_t *in, size_t n, size_t cut, size_t step, const cg_http1_limits *lim,
                   out *o)
{
    cg_http1_chunked d;
    cg_http1_chunked_init(&d, lim);
    o->ret = CG_CHUNKED_MORE;
    o->error = NULL;
    o->body_len = 0;
    size_t off = 0;
    char *one = step == 1 ? malloc(1) : NULL;
    do {
        size_t sz = cut ? cut : step;
        cut = 0;
        if (sz > n - off)
            sz = n - off;
        /* One-byte pieces reuse one exact-size buffer: far less allocator churn. */
        char *b = sz == 1 && one ? one : malloc(sz ? sz : 1);
        if (sz)
            memcpy(b, in + off, sz);
        size_t pos = 0;
        int ret;
        do {
            size_t used = 0;
            cg_slice data = {0};
            ret = cg_http1_chunked_decode(&d, b + pos, sz - pos, &used, &data);
            check(used <= sz - pos);
            if (ret == CG_CHUNKED_DATA) {
                check(data.len > 0 && data.base >= b + pos &&
                      data.base + data.len == b + pos + used);
                check(o->body_len + data.len <= sizeof o->body);
                memcpy(o->body + o->body_len, data.base, data.len);
                o->body_len += data.len;
            } else if (ret == CG_CHUNKED_MORE) {
                check(used == sz - pos);
            } else {
                check(ret == CG_CHUNKED_DONE || ret == CG_CHUNKED_ERROR);
                check((ret == CG_CHUNKED_ERROR) == (d.error != NULL));
            }
            pos += used;
        } while (ret == CG_CHUNKED_DATA && pos < sz);
        if (b != one)
            free(b);
        off += sz;
        if (ret == CG_CHUNKED_DONE || ret == CG_CHUNKED_ERROR) {
            o->ret = ret;
            o->error = d.error;
            o->consumed = off - sz + pos;
            free(one);
            return;
        }
    } while (off < n);
    o->consumed = n;
    free(one);
}

static void check_same(const out *a, const out *b)
{
    check(a->ret == b->ret && a->error == b->error && a->consumed == b->consumed &&
          a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0);
}

static out whole, bytes, two;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    size_t cut = (size_t)data[0] * n / 255;
    /* Small trailer limits so the fuzzer reaches them. */
    cg_http1_limits lim = {8190, 16 + (data[0] & 0x3f), 1 + (data[0] >> 6)};
    decode(in, n, 0, n ? n : 1, &lim, &whole);
    decode(in, n, 0, 1, &lim, &bytes);
    check_same(&whole, &bytes);
    decode(in, n, cut, n ? n : 1, &lim, &two);
    check_same(&whole, &two);
    return 0;
}
