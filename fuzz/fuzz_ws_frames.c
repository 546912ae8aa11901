/* libFuzzer target for the WebSocket frame reader. Input byte 0 picks the
 * reader options (max_size, permessage-deflate, client_no_context_takeover),
 * byte 1 a split point; the rest is the client byte stream. Checks, aborting
 * on any violation: reading whole, in two pieces and in small pieces (each
 * piece in its own exact-size heap buffer, freed right after use) gives the
 * same events; consumed counts are within the piece; every slice lies in the
 * reader's memory (never in the input) and is fully readable; events obey
 * the contract (sizes, UTF-8 of text and close reasons, codes). The input is
 * also run through the UTF-8 validator, whole and split, against a plain
 * reference decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

typedef struct fev {
    int type, code;
    const char *error;
    size_t len;
    uint64_t hash;
} fev;

typedef struct fevs {
    fev *e;
    size_t n, cap;
} fevs;

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static size_t max_size;

static void record(fevs *v, const cg_ws_event *ev, const char *lo, const char *hi)
{
    const unsigned char *d = (const unsigned char *)ev->data.base;
    size_t n = ev->data.len;
    check(!n || d != NULL);
    check(!n || d + n <= (const unsigned char *)lo || d >= (const unsigned char *)hi);
    switch (ev->type) {
    case CG_WS_EV_TEXT: {
        cg_utf8 u = {0};
        check(cg_utf8_feed(&u, d, n) && cg_utf8_complete(&u));
    }
        /* fall through */
    case CG_WS_EV_BINARY:
        check(n <= max_size);
        break;
    case CG_WS_EV_PING:
    case CG_WS_EV_PONG:
        check(n <= 125);
        break;
    case CG_WS_EV_CLOSE: {
        check(n <= 123);
        int c = ev->code;
        check(c == 1005 || (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
              (c >= 3000 && c <= 4999));
        check(c != 1005 || n == 0);
        cg_utf8 u = {0};
        check(cg_utf8_feed(&u, d, n) && cg_utf8_complete(&u));
        break;
    }
    case CG_WS_EV_ERROR:
        check(ev->code == 1002 || ev->code == 1007 || ev->code == 1009);
        check(ev->error != NULL);
        break;
    default:
        check(0);
    }
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->e = realloc(v->e, v->cap * sizeof(fev));
        check(v->e != NULL);
    }
    fev *x = &v->e[v->n++];
    x->type = ev->type;
    x->code = ev->code;
    x->error = ev->error;
    x->len = n;
    x->hash = fnv(d, n); /* reads every byte: ASan checks the slice */
}

/* Feeds in[0..n) cut into pieces of the sizes `step` gives; stops at ERROR. */
static void run(const cg_ws_deflate_params *dp, const uint8_t *in, size_t n,
                size_t (*step)(size_t at, size_t arg), size_t arg, fevs *v)
{
    cg_ws_reader *r = cg_ws_reader_new(max_size, dp);
    check(r != NULL);
    size_t at = 0;
    int failed = 0;
    while (at < n && !failed) {
        size_t k = step(at, arg);
        if (k > n - at)
            k = n - at;
        char *p = malloc(k ? k : 1);
        memcpy(p, in + at, k);
        size_t off = 0;
        for (;;) {
            cg_ws_event ev;
            size_t c = (size_t)-1;
            int t = cg_ws_read(r, p + off, k - off, &c, &ev);
            check(t == ev.type && c <= k - off);
            if (t == CG_WS_EV_NONE) {
                check(c == k - off);
                break;
            }
            check(c > 0 || t == CG_WS_EV_ERROR);
            record(v, &ev, p, p + k);
            off += c;
            if (t == CG_WS_EV_ERROR) {
                failed = 1;
                break;
            }
            if (off == k)
                break;
        }
        free(p);
        at += k;
    }
    cg_ws_reader_free(r);
}

static size_t step_whole(size_t at, size_t arg)
{
    (void)at;
    (void)arg;
    return (size_t)-1;
}

static size_t step_cut(size_t at, size_t cut)
{
    return at < cut ? cut - at : (size_t)-1;
}

/* Pieces of 1..13 bytes, varying. */
static size_t step_small(size_t at, size_t seed)
{
    return 1 + ((at * 2654435761u + seed) >> 7) % 13;
}

static size_t step_one(size_t at, size_t arg)
{
    (void)at;
    (void)arg;
    return 1;
}

static void same(const fevs *a, const fevs *b)
{
    check(a->n == b->n);
    for (size_t i = 0; i < a->n; i++)
        check(a->e[i].type == b->e[i].type && a->e[i].code == b->e[i].code &&
              a->e[i].error == b->e[i].error && a->e[i].len == b->e[i].len &&
              a->e[i].hash == b->e[i].hash);
}

/* Reference: 1 when p[0..n) is valid UTF-8 (RFC 3629), decoding code points. */
static int ref_utf8(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c = p[i], cp, min;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC0 && c < 0xE0)
            k = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xE0 && c < 0xF0)
            k = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xF0 && c < 0xF8)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void check_utf8(const uint8_t *in, size_t n, size_t cut)
{
    int want = ref_utf8(in, n);
    cg_utf8 u = {0};
    check((cg_utf8_feed(&u, in, n) && cg_utf8_complete(&u)) == want);
    cg_utf8 v = {0};
    int ok = cg_utf8_feed(&v, in, cut);
    ok = ok && cg_utf8_feed(&v, in + cut, n - cut);
    check((ok && cg_utf8_complete(&v)) == want);
    /* A prefix the validator rejects is never part of a valid string. */
    if (want)
        check(ok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t sizes[8] = {0, 1, 125, 126, 1000, 65535, 65536, 1 << 20};
    if (size < 2)
        return 0;
    uint8_t opt = data[0], sel = data[1];
    const uint8_t *in = data + 2;
    size_t n = size - 2;
    max_size = sizes[(opt >> 2) & 7];
    cg_ws_deflate_params dp = {opt & 1, (opt >> 5) & 1, (opt >> 1) & 1, 15, 15};
    size_t cut = (size_t)sel * n / 255;

    check_utf8(in, n, cut);
    fevs whole = {0}, other = {0};
    run(&dp, in, n, step_whole, 0, &whole);
    run(&dp, in, n, step_cut, cut, &other);
    same(&whole, &other);
    other.n = 0;
    run(&dp, in, n, step_small, sel, &other);
    same(&whole, &other);
    if (n <= 4096) {
        other.n = 0;
        run(&dp, in, n, step_one, 0, &other);
        same(&whole, &other);
    }
    free(whole.e);
    free(other.e);
    return 0;
}
