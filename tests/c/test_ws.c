/* Unit tests of the WebSocket codec, by Autobahn|Testsuite category: 1
 * framing, 2 ping/pong, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8,
 * 7 close, 9 limits, 12/13 permessage-deflate; plus SHA-1/base64, the
 * handshake key, negotiation and the writer. Every reader input is read whole
 * (placed against a PROT_NONE page), one byte at a time, and split in two at
 * every position (a sample for big inputs); all ways must give the same
 * events. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "guard.h"
#include "tap.h"
#include "ws.h"

#define S(lit) (lit), sizeof(lit) - 1
#define MIB (1024u * 1024u)

/* ---- building client frames -------------------------------------------- */

/* A growing byte string for test inputs. */
typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void b_put(bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            exit(2);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void b_byte(bytes *b, unsigned c)
{
    unsigned char x = (unsigned char)c;
    b_put(b, &x, 1);
}

static void b_free(bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static unsigned mask_seed = 0x9e3779b9u;

/* Length forms: minimal, or forced 16-bit / 64-bit (allowed from clients). */
enum { LEN_MIN, LEN_16, LEN_64 };

/* Appends a frame: first byte b0 (FIN, RSV, opcode), masked with a varying
 * key unless `unmasked`, payload length written in form `lf`. */
static void frame_x(bytes *b, unsigned b0, const void *payload, size_t n, int lf, int unmasked)
{
    unsigned mbit = unmasked ? 0 : 0x80;
    b_byte(b, b0);
    if (lf == LEN_MIN && n < 126) {
        b_byte(b, mbit | (unsigned)n);
    } else if (lf != LEN_64 && n <= 0xffff) {
        b_byte(b, mbit | 126);
        b_byte(b, (unsigned)(n >> 8));
        b_byte(b, (unsigned)n & 0xff);
    } else {
        b_byte(b, mbit | 127);
        for (int i = 7; i >= 0; i--)
            b_byte(b, (unsigned)(((uint64_t)n >> (8 * i)) & 0xff));
    }
    unsigned char key[4];
    mask_seed = mask_seed * 1103515245u + 12345u;
    for (int i = 0; i < 4; i++)
        key[i] = (unsigned char)(mask_seed >> (8 * i));
    if (!unmasked)
        b_put(b, key, 4);
    size_t at = b->n;
    b_put(b, payload, n);
    if (!unmasked)
        for (size_t i = 0; i < n; i++)
            b->p[at + i] ^= key[i & 3];
}

static void frame(bytes *b, unsigned b0, const void *payload, size_t n)
{
    frame_x(b, b0, payload, n, LEN_MIN, 0);
}

#define FIN 0x80u
#define RSV1 0x40u
#define RSV2 0x20u
#define RSV3 0x10u

/* Masks every frame of a server byte stream (the writer's output), as a
 * client would send it. */
static void mask_stream(bytes *dst, const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned b0 = p[i], l7 = p[i + 1] & 0x7f;
        size_t hl = 2;
        uint64_t len = l7;
        if (l7 == 126) {
            len = ((uint64_t)p[i + 2] << 8) | p[i + 3];
            hl = 4;
        } else if (l7 == 127) {
            len = 0;
            for (int k = 0; k < 8; k++)
                len = (len << 8) | p[i + 2 + k];
            hl = 10;
        }
        frame_x(dst, b0, p + i + hl, (size_t)len, LEN_MIN, 0);
        i += hl + (size_t)len;
    }
}

/* ---- client-side compression (zlib, as a client would do it) ------------ */

typedef struct zc {
    z_stream z;
    int reset_each;
} zc;

static void zc_init(zc *c, int wbits, int reset_each)
{
    memset(c, 0, sizeof(*c));
    if (deflateInit2(&c->z, 6, Z_DEFLATED, -wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        exit(2);
    c->reset_each = reset_each;
}

/* Compresses one message: sync flush, trailing 00 00 ff ff removed (or a
 * final block when `final`). */
static void zc_msg(zc *c, bytes *out, const void *data, size_t n, int final)
{
    size_t cap = deflateBound(&c->z, n) + 64;
    unsigned char *tmp = malloc(cap);
    c->z.next_in = (unsigned char *)data;
    c->z.avail_in = (uInt)n;
    c->z.next_out = tmp;
    c->z.avail_out = (uInt)cap;
    int rc = deflate(&c->z, final ? Z_FINISH : Z_SYNC_FLUSH);
    if ((final && rc != Z_STREAM_END) || (!final && rc != Z_OK))
        exit(3);
    size_t got = cap - c->z.avail_out;
    if (!final)
        got -= 4;
    b_put(out, tmp, got);
    free(tmp);
    if (c->reset_each || final)
        deflateReset(&c->z);
}

static void zc_free(zc *c)
{
    deflateEnd(&c->z);
}

/* ---- reading in every split --------------------------------------------- */

typedef struct rev {
    int type, code;
    const char *error;
    unsigned char *data;
    size_t len;
} rev;

typedef struct events {
    rev *e;
    size_t n, cap;
    int bad; /* an API rule was broken (consumed, slice placement) */
} events;

static void ev_clear(events *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->e[i].data);
    free(v->e);
    memset(v, 0, sizeof(*v));
}

static void ev_add(events *v, const cg_ws_event *ev, const char *lo, const char *hi)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->e = realloc(v->e, v->cap * sizeof(rev));
        if (!v->e)
            exit(2);
    }
    rev *x = &v->e[v->n++];
    x->type = ev->type;
    x->code = ev->code;
    x->error = ev->error;
    x->len = ev->data.len;
    x->data = malloc(x->len ? x->len : 1);
    if (x->len)
        memcpy(x->data, ev->data.base, x->len);
    /* Slices point into the reader's memory, never into the caller's input. */
    if (x->len && ev->data.base < hi && ev->data.base + x->len > lo)
        v->bad = 1;
}

static int ev_same(const events *a, const events *b)
{
    if (a->n != b->n || a->bad || b->bad)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const rev *x = &a->e[i], *y = &b->e[i];
        if (x->type != y->type || x->code != y->code || x->error != y->error || x->len != y->len ||
            memcmp(x->data, y->data, x->len) != 0)
            return 0;
    }
    return 1;
}

/* Feeds one piece to r, recording events. Returns 0 once an ERROR is seen. */
static int feed(cg_ws_reader *r, const char *p, size_t n, events *v)
{
    size_t off = 0;
    for (;;) {
        cg_ws_event ev;
        size_t c = 12345;
        int t = cg_ws_read(r, p + off, n - off, &c, &ev);
        if (t != ev.type || c > n - off)
            v->bad = 1;
        if (t == CG_WS_EV_NONE) {
            if (c != n - off)
                v->bad = 1;
            return 1;
        }
        if (c == 0 && t != CG_WS_EV_ERROR)
            v->bad = 1;
        ev_add(v, &ev, p, p + n);
        off += c;
        if (t == CG_WS_EV_ERROR)
            return 0;
        if (off == n)
            return 1;
    }
}

typedef struct ropts {
    size_t max_size;
    const cg_ws_deflate_params *dp;
} ropts;

/* Reads `in` cut at the given ascending positions (each piece in its own
 * exact-size buffer; guarded when `guarded`). */
static void read_cuts(const ropts *o, const unsigned char *in, size_t n, const size_t *cuts,
                      size_t ncuts, int guarded, events *v)
{
    cg_ws_reader *r = cg_ws_reader_new(o->max_size, o->dp);
    if (!r)
        exit(2);
    size_t prev = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        size_t len = end - prev;
        int go;
        if (guarded) {
            guard g;
            char *p = guard_put(&g, in + prev, len);
            go = feed(r, p, len, v);
            guard_free(&g);
        } else {
            char *p = malloc(len ? len : 1);
            memcpy(p, in + prev, len);
            go = feed(r, p, len, v);
            free(p);
        }
        if (!go)
            break;
        prev = end;
    }
    cg_ws_reader_free(r);
}

static events whole;

/* Reads `in` whole (result in `whole`), in small pieces and in two pieces at
 * every position, or, when a read is costly (input plus output beyond the
 * budget), at a spread sample of positions plus those inside the first
 * header; returns 1 when all agree. */
static int read_every_way(const ropts *o, const void *input, size_t n)
{
    const size_t budget = 2u << 20; /* bytes read and produced per way, summed */
    const unsigned char *in = input;
    events v = {0};
    int agree = 1;
    ev_clear(&whole);
    read_cuts(o, in, n, NULL, 0, 1, &whole);
    if (whole.bad)
        agree = 0;
    size_t cost = n;
    for (size_t i = 0; i < whole.n; i++)
        cost += whole.e[i].code == 1009 ? o->max_size : whole.e[i].len;

    /* One byte at a time (big inputs: 7-byte pieces, huge ones: a sample). */
    size_t step = n > 70000 ? 7919 : n > 20000 ? 7 : 1;
    size_t ncuts = n / step;
    size_t *cuts = malloc((ncuts + 1) * sizeof(size_t));
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = (i + 1) * step;
    if (ncuts && cuts[ncuts - 1] == n)
        ncuts--;
    read_cuts(o, in, n, cuts, ncuts, 0, &v);
    if (!ev_same(&v, &whole))
        agree = 0;
    ev_clear(&v);
    free(cuts);

    /* Two pieces. */
    size_t splits = cost ? budget / cost : n + 1;
    if (splits < 12)
        splits = 12;
    size_t stride = splits > n ? 1 : n / splits;
    for (size_t s = 0; s <= n; s += stride) {
        read_cuts(o, in, n, &s, 1, n <= 4096, &v);
        if (!ev_same(&v, &whole))
            agree = 0;
        ev_clear(&v);
    }
    if (stride > 1)
        for (size_t s = 1; s < 15 && s < n; s++) {
            read_cuts(o, in, n, &s, 1, 0, &v);
            if (!ev_same(&v, &whole))
                agree = 0;
            ev_clear(&v);
        }
    return agree;
}

static const ropts plain = {1 << 20, NULL};

/* Reads `in` every way; checks the events are exactly `types` (terminated by
 * -1) and the last one's code when `code` is non-zero. */
static int expect_types(const char *name, const ropts *o, const bytes *in, const int *types,
                        int code)
{
    int agree = read_every_way(o, in->p, in->n);
    ok(agree, "%s: same events in every split", name);
    size_t k = 0;
    int match = 1;
    while (types[k] >= 0) {
        if (k >= whole.n || whole.e[k].type != types[k])
            match = 0;
        k++;
    }
    if (k != whole.n)
        match = 0;
    if (match && code && whole.n && whole.e[whole.n - 1].code != code)
        match = 0;
    ok(match, "%s: events as expected", name);
    if (!match) {
        for (size_t i = 0; i < whole.n; i++)
            printf("#   event %zu: type %d code %d error %s len %zu\n", i, whole.e[i].type,
                   whole.e[i].code, whole.e[i].error ? whole.e[i].error : "-", whole.e[i].len);
    }
    return agree && match;
}

/* Expects one ERROR with `code` (and rule `why` when non-NULL). */
static void expect_error(const char *name, const ropts *o, const bytes *in, int code,
                         const char *why)
{
    int agree = read_every_way(o, in->p, in->n);
    ok(agree, "%s: same events in every split", name);
    const rev *last = whole.n ? &whole.e[whole.n - 1] : NULL;
    int good = last && last->type == CG_WS_EV_ERROR && last->code == code &&
               (!why || (last->error && strcmp(last->error, why) == 0));
    ok(good, "%s: error %d%s%s", name, code, why ? " " : "", why ? why : "");
    if (!good && last)
        printf("#   got type %d code %d error %s\n", last->type, last->code,
               last->error ? last->error : "-");
}

/* Expects exactly one message of `type` with the given payload. */
static void expect_message(const char *name, const ropts *o, const bytes *in, int type,
                           const void *data, size_t n)
{
    int agree = read_every_way(o, in->p, in->n);
    ok(agree, "%s: same events in every split", name);
    int good = whole.n == 1 && whole.e[0].type == type && whole.e[0].len == n &&
               memcmp(whole.e[0].data, data, n) == 0;
    ok(good, "%s: message delivered intact", name);
    if (!good)
        for (size_t i = 0; i < whole.n; i++)
            printf("#   event %zu: type %d code %d error %s len %zu\n", i, whole.e[i].type,
                   whole.e[i].code, whole.e[i].error ? whole.e[i].error : "-", whole.e[i].len);
}

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (unsigned char)(seed >> 24);
    }
    return p;
}

/* ---- SHA-1, base64, keys ------------------------------------------------ */

static void hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha1(void)
{
    static const struct {
        const char *in;
        size_t reps;
        const char *hex;
    } v[] = {
        {"abc", 1, "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"a", 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"},
        {"0123456701234567012345670123456701234567012345670123456701234567", 10,
         "dea356a2cddd90c7a7ecedc5ebb563934f460452"},
        {"", 1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t l = strlen(v[i].in), n = l * v[i].reps;
        char *buf = malloc(n + 1);
        for (size_t k = 0; k < v[i].reps; k++)
            memcpy(buf + k * l, v[i].in, l);
        unsigned char d[20];
        char h[41];
        cg_sha1(buf, n, d);
        hex(d, 20, h);
        ok(strcmp(h, v[i].hex) == 0, "sha1 RFC 3174 vector %zu", i);
        free(buf);
    }
    /* Lengths around the padding boundary agree with zlib-independent
     * properties: hashing is deterministic and sensitive to every byte. */
    unsigned char a[20], b[20];
    char msg[130];
    memset(msg, 'x', sizeof(msg));
    int differ = 1;
    for (size_t n = 50; n < 130; n++) {
        cg_sha1(msg, n, a);
        msg[n - 1] = 'y';
        cg_sha1(msg, n, b);
        msg[n - 1] = 'x';
        if (memcmp(a, b, 20) == 0)
            differ = 0;
    }
    ok(differ, "sha1 depends on the last byte for lengths 50..129");
}

static void test_accept(void)
{
    char out[29];
    size_t n = cg_ws_accept(S("dGhlIHNhbXBsZSBub25jZQ=="), out);
    ok(n == 28 && strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0, "accept value of RFC 6455");
    n = cg_ws_accept(S("x3JJHMbDL1EzLkh9GBhXDw=="), out);
    ok(n == 28 && strcmp(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0, "accept value, second key");

    ok(cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25jZQ==")), "key: valid");
    ok(cg_ws_valid_key(S("AAAAAAAAAAAAAAAAAAAAAA==")), "key: all zero bytes");
    ok(cg_ws_valid_key(S("+/+/+/+/+/+/+/+/+/+/+w==")), "key: + and /");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25jZQ=")), "key: 23 characters");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25jZQ===")), "key: 25 characters");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25jZQAA")), "key: no padding (18 bytes)");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25jZ===")), "key: three = (15 bytes)");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25j-Q==")), "key: URL-safe alphabet");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZSBub25 ZQ==")), "key: embedded space");
    ok(!cg_ws_valid_key(S("")), "key: empty");
    ok(!cg_ws_valid_key(S("dGhlIHNhbXBsZQ==")), "key: 10 bytes");
}

/* ---- 1 framing ---------------------------------------------------------- */

static void test_framing(void)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        unsigned char *p = pattern(n, (unsigned)n);
        for (int op = 1; op <= 2; op++) {
            if (op == 1)
                for (size_t k = 0; k < n; k++)
                    p[k] &= 0x7f; /* ASCII */
            bytes b = {0};
            frame(&b, FIN | (unsigned)op, p, n);
            char name[64];
            snprintf(name, sizeof(name), "1 %s of %zu bytes", op == 1 ? "text" : "binary", n);
            expect_message(name, &plain, &b, op == 1 ? CG_WS_EV_TEXT : CG_WS_EV_BINARY, p, n);
            b_free(&b);
        }
        free(p);
    }
    /* Clients need not use the minimal length form. */
    for (int lf = LEN_16; lf <= LEN_64; lf++) {
        bytes b = {0};
        frame_x(&b, FIN | 2, "hello", 5, lf, 0);
        expect_message(lf == LEN_16 ? "1 16-bit length for 5 bytes" : "1 64-bit length for 5 bytes",
                       &plain, &b, CG_WS_EV_BINARY, "hello", 5);
        b_free(&b);
    }
    {
        bytes b = {0};
        frame_x(&b, FIN | 1, "hi", 2, LEN_MIN, 1);
        expect_error("1 unmasked frame", &plain, &b, 1002, "unmasked frame");
        b_free(&b);
    }
    {
        /* Several messages in one read; each slice is the reader's. */
        bytes b = {0};
        frame(&b, FIN | 1, "one", 3);
        frame(&b, FIN | 2, "", 0);
        frame(&b, FIN | 1, "three", 5);
        int t[] = {CG_WS_EV_TEXT, CG_WS_EV_BINARY, CG_WS_EV_TEXT, -1};
        if (expect_types("1 three messages back to back", &plain, &b, t, 0))
            ok(whole.e[0].len == 3 && memcmp(whole.e[2].data, "three", 5) == 0 &&
                   whole.e[1].len == 0,
               "1 three messages: payloads");
        b_free(&b);
    }
    {
        /* Empty input: nothing consumed, no event. */
        cg_ws_reader *r = cg_ws_reader_new(100, NULL);
        cg_ws_event ev;
        size_t c = 9;
        ok(cg_ws_read(r, "", 0, &c, &ev) == CG_WS_EV_NONE && c == 0, "1 empty input");
        cg_ws_reader_free(r);
    }
}

/* ---- 2 ping/pong --------------------------------------------------------- */

static void test_ping(void)
{
    static const size_t sizes[] = {0, 1, 10, 124, 125};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = pattern(sizes[i], 7);
        bytes b = {0};
        frame(&b, FIN | 9, p, sizes[i]);
        char name[64];
        snprintf(name, sizeof(name), "2 ping of %zu bytes", sizes[i]);
        expect_message(name, &plain, &b, CG_WS_EV_PING, p, sizes[i]);
        b_free(&b);
        frame(&b, FIN | 10, p, sizes[i]);
        snprintf(name, sizeof(name), "2 unsolicited pong of %zu bytes", sizes[i]);
        expect_message(name, &plain, &b, CG_WS_EV_PONG, p, sizes[i]);
        b_free(&b);
        free(p);
    }
    unsigned char big[126];
    memset(big, 'p', sizeof(big));
    bytes b = {0};
    frame(&b, FIN | 9, big, 126);
    expect_error("2 ping of 126 bytes", &plain, &b, 1002, "control frame too long");
    b_free(&b);
    frame_x(&b, FIN | 9, big, 5, LEN_16, 0);
    expect_error("2 ping with a 16-bit length", &plain, &b, 1002, "control frame too long");
    b_free(&b);
    /* Ten pings then a message. */
    for (int i = 0; i < 10; i++)
        frame(&b, FIN | 9, "x", 1);
    frame(&b, FIN | 1, "done", 4);
    int t[] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, -1};
    for (int i = 0; i < 10; i++)
        t[i] = CG_WS_EV_PING;
    t[10] = CG_WS_EV_TEXT;
    expect_types("2 ten pings and a message", &plain, &b, t, 0);
    b_free(&b);
}

/* ---- 3 reserved bits ------------------------------------------------------ */

static void test_rsv(void)
{
    cg_ws_deflate_params dp = {1, 0, 0, 15, 15};
    ropts z = {1 << 20, &dp};
    static const unsigned bits[] = {RSV1, RSV2, RSV3, RSV1 | RSV2, RSV2 | RSV3, RSV1 | RSV2 | RSV3};
    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
        for (int op = 1; op <= 10; op++) {
            if (op > 2 && op < 9)
                continue;
            bytes b = {0};
            frame(&b, FIN | bits[i] | (unsigned)op, "abc", 3);
            char name[80];
            snprintf(name, sizeof(name), "3 rsv %x on opcode %d without deflate", bits[i] >> 4, op);
            expect_error(name, &plain, &b, 1002, "reserved bit set");
            if (!(bits[i] == RSV1 && op <= 2)) {
                snprintf(name, sizeof(name), "3 rsv %x on opcode %d with deflate", bits[i] >> 4,
                         op);
                expect_error(name, &z, &b, 1002, "reserved bit set");
            }
            b_free(&b);
        }
    }
    /* RSV1 on a continuation frame, deflate negotiated. */
    bytes b = {0};
    zc c;
    zc_init(&c, 15, 0);
    bytes m = {0};
    zc_msg(&c, &m, "hello hello", 11, 0);
    frame(&b, RSV1 | 1, m.p, 2);
    frame(&b, FIN | RSV1, m.p + 2, m.n - 2);
    expect_error("3 rsv1 on a continuation frame", &z, &b, 1002, "reserved bit set");
    b_free(&b);
    b_free(&m);
    zc_free(&c);
    /* A valid message first, so the error comes after an event. */
    frame(&b, FIN | 1, "ok", 2);
    frame(&b, FIN | RSV2 | 1, "no", 2);
    int t[] = {CG_WS_EV_TEXT, CG_WS_EV_ERROR, -1};
    expect_types("3 rsv2 after a good message", &plain, &b, t, 1002);
    b_free(&b);
}

/* ---- 4 opcodes ------------------------------------------------------------ */

static void test_opcodes(void)
{
    static const unsigned ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        char name[64];
        bytes b = {0};
        frame(&b, FIN | ops[i], "", 0);
        snprintf(name, sizeof(name), "4 opcode %X, empty", ops[i]);
        expect_error(name, &plain, &b, 1002, "reserved opcode");
        b_free(&b);
        frame(&b, FIN | 1, "ok", 2);
        frame(&b, FIN | ops[i], "payload", 7);
        frame(&b, FIN | 9, "", 0);
        snprintf(name, sizeof(name), "4 opcode %X after a message", ops[i]);
        int t[] = {CG_WS_EV_TEXT, CG_WS_EV_ERROR, -1};
        expect_types(name, &plain, &b, t, 1002);
        b_free(&b);
        frame(&b, 1, "frag", 4);
        frame(&b, FIN | ops[i], "", 0);
        snprintf(name, sizeof(name), "4 opcode %X inside a fragmented message", ops[i]);
        expect_error(name, &plain, &b, 1002, "reserved opcode");
        b_free(&b);
    }
}

/* ---- 5 fragmentation ------------------------------------------------------ */

/* The message `p` of n bytes in `parts` fragments (some may be empty). */
static void fragments(bytes *b, unsigned op, const unsigned char *p, size_t n, size_t parts,
                      unsigned first_flags)
{
    size_t at = 0;
    for (size_t i = 0; i < parts; i++) {
        size_t end = i + 1 == parts ? n : n * (i + 1) / parts;
        unsigned b0 = (i == 0 ? op | first_flags : 0) | (i + 1 == parts ? FIN : 0);
        frame(b, b0, p + at, end - at);
        at = end;
    }
}

static void test_fragmentation(void)
{
    static const size_t parts[] = {1, 2, 3, 10, 64, 200};
    unsigned char *p = pattern(1000, 5);
    for (size_t k = 0; k < 1000; k++)
        p[k] = (unsigned char)('a' + (p[k] % 26));
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (unsigned op = 1; op <= 2; op++) {
            bytes b = {0};
            size_t n = parts[i] == 200 ? 100 : 1000; /* 200 parts of 100: many empty */
            fragments(&b, op, p, n, parts[i], 0);
            char name[80];
            snprintf(name, sizeof(name), "5 %s in %zu fragments", op == 1 ? "text" : "binary",
                     parts[i]);
            expect_message(name, &plain, &b, op == 1 ? CG_WS_EV_TEXT : CG_WS_EV_BINARY, p, n);
            b_free(&b);
        }
    }
    {
        /* Control frames between fragments come out as their own events. */
        bytes b = {0};
        frame(&b, 1, "frag", 4);
        frame(&b, FIN | 9, "ping1", 5);
        frame(&b, 0, "ment", 4);
        frame(&b, FIN | 10, "pong", 4);
        frame(&b, FIN | 9, "", 0);
        frame(&b, FIN, "ed", 2);
        int t[] = {CG_WS_EV_PING, CG_WS_EV_PONG, CG_WS_EV_PING, CG_WS_EV_TEXT, -1};
        if (expect_types("5 control frames between fragments", &plain, &b, t, 0))
            ok(whole.e[3].len == 10 && memcmp(whole.e[3].data, "fragmented", 10) == 0 &&
                   whole.e[0].len == 5 && memcmp(whole.e[0].data, "ping1", 5) == 0,
               "5 control frames between fragments: payloads");
        b_free(&b);
        frame(&b, 2, "ab", 2);
        frame(&b, FIN | 8, "\x03\xe8", 2);
        int t2[] = {CG_WS_EV_CLOSE, -1};
        expect_types("5 close between fragments", &plain, &b, t2, 1000);
        b_free(&b);
    }
    bytes b = {0};
    frame(&b, FIN, "cont", 4);
    expect_error("5 continuation without a start", &plain, &b, 1002,
                 "continuation without a message");
    b_free(&b);
    frame(&b, 0, "cont", 4);
    expect_error("5 non-final continuation without a start", &plain, &b, 1002,
                 "continuation without a message");
    b_free(&b);
    frame(&b, FIN | 1, "done", 4);
    frame(&b, FIN, "late", 4);
    int t[] = {CG_WS_EV_TEXT, CG_WS_EV_ERROR, -1};
    expect_types("5 continuation after a complete message", &plain, &b, t, 1002);
    b_free(&b);
    for (unsigned op = 1; op <= 2; op++) {
        frame(&b, 1, "start", 5);
        frame(&b, FIN | op, "new", 3);
        expect_error("5 new message inside a fragmented one", &plain, &b, 1002,
                     "new message inside a fragmented one");
        b_free(&b);
    }
    for (unsigned op = 8; op <= 10; op++) {
        frame(&b, op, "ctl", 3);
        frame(&b, FIN, "", 0);
        expect_error("5 fragmented control frame", &plain, &b, 1002, "fragmented control frame");
        b_free(&b);
    }
    free(p);
}

/* ---- 6 UTF-8 -------------------------------------------------------------- */

/* A straightforward reference: 1 when s[0..n) is valid UTF-8 (RFC 3629). */
static int ref_utf8(const unsigned char *s, size_t n, size_t *bad_at)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC0 && c < 0xE0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xE0 && c < 0xF0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xF0 && c < 0xF8) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            *bad_at = i;
            return 0;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n) {
                *bad_at = n;
                return 0;
            }
            if ((s[i + j] & 0xC0) != 0x80) {
                *bad_at = i + j;
                return 0;
            }
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *bad_at = i; /* the reference does not locate it further */
            return 0;
        }
        i += k + 1;
    }
    return 1;
}

static int dfa_utf8(const unsigned char *s, size_t n)
{
    cg_utf8 u = {0};
    return cg_utf8_feed(&u, s, n) && cg_utf8_complete(&u);
}

static void test_utf8_exhaustive(void)
{
    unsigned char s[4];
    int agree = 1;
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        size_t bad;
        if (dfa_utf8(s, 1) != ref_utf8(s, 1, &bad))
            agree = 0;
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            if (dfa_utf8(s, 2) != ref_utf8(s, 2, &bad))
                agree = 0;
        }
    }
    ok(agree, "6 all 1- and 2-byte strings agree with the reference");
    agree = 1;
    for (unsigned a = 0xE0; a < 0x100; a++)
        for (unsigned b = 0x80; b < 0xC0; b++)
            for (unsigned c = 0; c < 256; c++) {
                size_t bad;
                s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = (unsigned char)c;
                if (dfa_utf8(s, 3) != ref_utf8(s, 3, &bad))
                    agree = 0;
            }
    ok(agree, "6 all 3-byte strings with a lead >= E0 agree with the reference");
    agree = 1;
    for (unsigned a = 0xF0; a < 0x100; a++)
        for (unsigned b = 0x80; b < 0xC0; b++)
            for (unsigned c = 0x7f; c < 0xC1; c++)
                for (unsigned d = 0x7f; d < 0xC1; d += 3) {
                    size_t bad;
                    s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = (unsigned char)c;
                    s[3] = (unsigned char)d;
                    if (dfa_utf8(s, 4) != ref_utf8(s, 4, &bad))
                        agree = 0;
                }
    ok(agree, "6 4-byte strings with a lead >= F0 agree with the reference");
    /* Long random mixes, fed whole and in every 2-split. */
    agree = 1;
    for (unsigned seed = 1; seed < 400; seed++) {
        unsigned char buf[64];
        unsigned x = seed;
        for (size_t i = 0; i < sizeof(buf); i++) {
            x = x * 1103515245u + 12345u;
            unsigned r = (x >> 16) & 0xff;
            static const unsigned char pick[] = {0x41, 0xC3, 0xA9, 0xE2, 0x82, 0xAC,
                                                 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xF4};
            buf[i] = (r & 1) ? pick[(r >> 1) % sizeof(pick)] : (unsigned char)(x >> 24);
        }
        size_t n = 1 + seed % sizeof(buf), bad;
        int want = ref_utf8(buf, n, &bad);
        if (dfa_utf8(buf, n) != want)
            agree = 0;
        for (size_t cut = 0; cut <= n; cut++) {
            cg_utf8 u = {0};
            int v = cg_utf8_feed(&u, buf, cut);
            v = v && cg_utf8_feed(&u, buf + cut, n - cut);
            if ((v && cg_utf8_complete(&u)) != want)
                agree = 0;
        }
    }
    ok(agree, "6 random strings agree with the reference in every split");
}

typedef struct u8case {
    const char *s;
    size_t n;
} u8case;

#define U(lit)                                                                                     \
    {                                                                                              \
        (lit), sizeof(lit) - 1                                                                     \
    }

static const u8case valid_utf8[] = {
    U("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"),
    U("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), /* kosme */
    U("\x00"),
    U("\xc2\x80"),
    U("\xdf\xbf"),
    U("\xe0\xa0\x80"),
    U("\xed\x9f\xbf"),
    U("\xee\x80\x80"),
    U("\xef\xbf\xbd"),
    U("\xef\xbf\xbf"),
    U("\xf0\x90\x80\x80"),
    U("\xf4\x8f\xbf\xbf"),
    U("\xf0\x9f\x98\x80 smile \xe2\x82\xac euro"),
    U(""),
};

static const u8case invalid_utf8[] = {
    U("\x80"),
    U("\xbf"),
    U("ab\x80\x80"),
    U("\xc0\x80"),                 /* overlong NUL */
    U("\xc1\xbf"),                 /* overlong */
    U("\xe0\x80\xaf"),             /* overlong '/' */
    U("\xe0\x9f\xbf"),             /* overlong */
    U("\xf0\x80\x80\xaf"),         /* overlong */
    U("\xf0\x8f\xbf\xbf"),         /* overlong */
    U("\xed\xa0\x80"),             /* U+D800 */
    U("\xed\xbf\xbf"),             /* U+DFFF */
    U("\xed\xa0\x80\xed\xb0\x80"), /* surrogate pair */
    U("\xf4\x90\x80\x80"),         /* U+110000 */
    U("\xf7\xbf\xbf\xbf"),
    U("\xf8\x88\x80\x80\x80"),
    U("\xfc\x84\x80\x80\x80\x80"),
    U("\xfe"),
    U("\xff"),
    U("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
      "edited"),
    U("\xce"),            /* truncated at message end */
    U("\xe0\xa0"),        /* truncated */
    U("\xf0\x90\x80"),    /* truncated */
    U("abc\xf4\x8f\xbf"), /* truncated */
    U("\xc2 "),           /* lead then ASCII */
    U("\xe2\x82\x28"),
};

static void test_utf8_frames(void)
{
    char name[96];
    for (size_t i = 0; i < sizeof(valid_utf8) / sizeof(valid_utf8[0]); i++) {
        const u8case *c = &valid_utf8[i];
        bytes b = {0};
        frame(&b, FIN | 1, c->s, c->n);
        snprintf(name, sizeof(name), "6 valid text %zu", i);
        expect_message(name, &plain, &b, CG_WS_EV_TEXT, c->s, c->n);
        b_free(&b);
        /* Split into two fragments at every byte, and into 1-byte fragments. */
        int all = 1;
        for (size_t cut = 0; cut <= c->n; cut++) {
            frame(&b, 1, c->s, cut);
            frame(&b, FIN, c->s + cut, c->n - cut);
            if (!read_every_way(&plain, b.p, b.n) || whole.n != 1 ||
                whole.e[0].type != CG_WS_EV_TEXT || whole.e[0].len != c->n)
                all = 0;
            b_free(&b);
        }
        fragments(&b, 1, (const unsigned char *)c->s, c->n, c->n ? c->n : 1, 0);
        if (!read_every_way(&plain, b.p, b.n) || whole.n != 1 || whole.e[0].type != CG_WS_EV_TEXT)
            all = 0;
        b_free(&b);
        snprintf(name, sizeof(name), "6 valid text %zu fragmented at every byte", i);
        ok(all, "%s", name);
    }
    for (size_t i = 0; i < sizeof(invalid_utf8) / sizeof(invalid_utf8[0]); i++) {
        const u8case *c = &invalid_utf8[i];
        bytes b = {0};
        frame(&b, FIN | 1, c->s, c->n);
        snprintf(name, sizeof(name), "6 invalid text %zu", i);
        expect_error(name, &plain, &b, 1007, "invalid UTF-8");
        b_free(&b);
        /* The same bytes as binary are fine. */
        frame(&b, FIN | 2, c->s, c->n);
        snprintf(name, sizeof(name), "6 invalid text %zu as binary", i);
        expect_message(name, &plain, &b, CG_WS_EV_BINARY, c->s, c->n);
        b_free(&b);
        int all = 1;
        for (size_t cut = 0; cut <= c->n; cut++) {
            frame(&b, 1, c->s, cut);
            frame(&b, FIN, c->s + cut, c->n - cut);
            const rev *last;
            if (!read_every_way(&plain, b.p, b.n) || !whole.n ||
                (last = &whole.e[whole.n - 1])->type != CG_WS_EV_ERROR || last->code != 1007)
                all = 0;
            b_free(&b);
        }
        snprintf(name, sizeof(name), "6 invalid text %zu fragmented at every byte", i);
        ok(all, "%s", name);
    }
    /* Fail fast: the error comes as soon as the invalid byte has arrived,
     * before the rest of the frame (and in a fragment before the last). */
    {
        unsigned char msg[200];
        memset(msg, 'a', sizeof(msg));
        memcpy(msg + 20, "\xce\xba\xc0\xaf", 4);
        bytes b = {0};
        frame(&b, FIN | 1, msg, sizeof(msg));
        size_t hdr = b.n - sizeof(msg);
        cg_ws_reader *r = cg_ws_reader_new(1000, NULL);
        cg_ws_event ev;
        size_t c;
        /* Up to and including the C0: C0 is never valid. */
        int t = cg_ws_read(r, (const char *)b.p, hdr + 23, &c, &ev);
        ok(t == CG_WS_EV_ERROR && ev.code == 1007, "6 fail fast at the first invalid byte");
        cg_ws_reader_free(r);
        r = cg_ws_reader_new(1000, NULL);
        t = cg_ws_read(r, (const char *)b.p, hdr + 22, &c, &ev);
        ok(t == CG_WS_EV_NONE && c == hdr + 22, "6 no error before the invalid byte");
        cg_ws_reader_free(r);
        b_free(&b);
        /* ED A0: fails at A0 (surrogate), not at the end of the sequence. */
        memcpy(msg + 20, "\xed\xa0\x80", 3);
        frame(&b, 1, msg, 100);
        hdr = b.n - 100;
        r = cg_ws_reader_new(1000, NULL);
        t = cg_ws_read(r, (const char *)b.p, hdr + 22, &c, &ev);
        ok(t == CG_WS_EV_ERROR && ev.code == 1007, "6 fail fast inside a surrogate, first frame");
        cg_ws_reader_free(r);
        b_free(&b);
    }
}

/* ---- 7 close --------------------------------------------------------------- */

static void close_payload(bytes *b, unsigned code, const char *reason, size_t rn)
{
    unsigned char p[200];
    p[0] = (unsigned char)(code >> 8);
    p[1] = (unsigned char)code;
    memcpy(p + 2, reason, rn);
    frame(b, FIN | 8, p, 2 + rn);
}

static void test_close(void)
{
    bytes b = {0};
    frame(&b, FIN | 8, "", 0);
    int t[] = {CG_WS_EV_CLOSE, -1};
    if (expect_types("7 close without payload", &plain, &b, t, 1005))
        ok(whole.e[0].len == 0, "7 close without payload: no reason");
    b_free(&b);
    frame(&b, FIN | 8, "\x03", 1);
    expect_error("7 close payload of length 1", &plain, &b, 1002, "close payload of length 1");
    b_free(&b);
    close_payload(&b, 1000, S("bye \xce\xba"));
    if (expect_types("7 close 1000 with a reason", &plain, &b, t, 1000))
        ok(whole.e[0].len == 6 && memcmp(whole.e[0].data, "bye \xce\xba", 6) == 0,
           "7 close reason returned");
    b_free(&b);
    char r123[124];
    memset(r123, 'r', sizeof(r123));
    close_payload(&b, 1001, r123, 123);
    expect_types("7 close with a 123-byte reason", &plain, &b, t, 1001);
    b_free(&b);
    close_payload(&b, 1000, r123, 124);
    expect_error("7 close of 126 bytes", &plain, &b, 1002, "control frame too long");
    b_free(&b);
    static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                    1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    int all = 1;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        close_payload(&b, good[i], "", 0);
        if (!read_every_way(&plain, b.p, b.n) || whole.n != 1 ||
            whole.e[0].type != CG_WS_EV_CLOSE || whole.e[0].code != (int)good[i])
            all = 0;
        b_free(&b);
    }
    ok(all, "7 valid close codes accepted");
    static const unsigned bad[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                   1016, 1100, 2000, 2999, 5000, 6000, 65535};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char name[64];
        close_payload(&b, bad[i], "x", 1);
        snprintf(name, sizeof(name), "7 close code %u rejected", bad[i]);
        expect_error(name, &plain, &b, 1002, "invalid close code");
        b_free(&b);
    }
    close_payload(&b, 1000, S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"));
    expect_error("7 close reason with invalid UTF-8", &plain, &b, 1007,
                 "invalid UTF-8 in close reason");
    b_free(&b);
    close_payload(&b, 1000, S("\xce"));
    expect_error("7 close reason truncated UTF-8", &plain, &b, 1007,
                 "invalid UTF-8 in close reason");
    b_free(&b);
}

/* ---- 9 limits -------------------------------------------------------------- */

static void test_limits(void)
{
    ropts small = {1000, NULL};
    unsigned char *p = pattern(2000, 9);
    bytes b = {0};
    frame(&b, FIN | 2, p, 1000);
    expect_message("9 message of exactly max_size", &small, &b, CG_WS_EV_BINARY, p, 1000);
    b_free(&b);
    frame(&b, FIN | 2, p, 1001);
    expect_error("9 message of max_size + 1", &small, &b, 1009, "message too big");
    b_free(&b);
    fragments(&b, 2, p, 1000, 7, 0);
    expect_message("9 fragmented message of exactly max_size", &small, &b, CG_WS_EV_BINARY, p,
                   1000);
    b_free(&b);
    fragments(&b, 2, p, 1001, 7, 0);
    expect_error("9 fragmented message of max_size + 1", &small, &b, 1009, "message too big");
    b_free(&b);
    {
        /* The declared size alone fails: only the header is needed. */
        unsigned char h[14] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4};
        b_put(&b, h, sizeof(h));
        expect_error("9 declared 1 MiB, max 1000, header only", &small, &b, 1009,
                     "message too big");
        b_free(&b);
        unsigned char t[14] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4};
        b_put(&b, t, sizeof(t));
        expect_error("9 64-bit length with the top bit set", &small, &b, 1002,
                     "64-bit length with the top bit set");
        b_free(&b);
        t[2] = 0xFF;
        b_put(&b, t, sizeof(t));
        expect_error("9 64-bit length all ones", &small, &b, 1002,
                     "64-bit length with the top bit set");
        b_free(&b);
        unsigned char u[14] = {0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
        b_put(&b, u, sizeof(u));
        ropts huge = {SIZE_MAX, NULL};
        int tn[] = {-1};
        expect_types("9 2^63 - 1 declared, no limit: waits for data", &huge, &b, tn, 0);
        b_free(&b);
    }
    {
        /* Many small frames: 20000 one-byte fragments, then 2000 pings. */
        unsigned char *q = pattern(20000, 3);
        fragments(&b, 2, q, 20000, 20000, 0);
        ropts big = {1 << 20, NULL};
        expect_message("9 message in 20000 one-byte fragments", &big, &b, CG_WS_EV_BINARY, q,
                       20000);
        b_free(&b);
        for (int i = 0; i < 2000; i++)
            frame(&b, FIN | 9, q + i, 4);
        int agree = read_every_way(&big, b.p, b.n);
        int good = whole.n == 2000;
        for (size_t i = 0; good && i < whole.n; i++)
            good = whole.e[i].type == CG_WS_EV_PING && memcmp(whole.e[i].data, q + i, 4) == 0;
        ok(agree && good, "9 2000 pings give 2000 events");
        b_free(&b);
        free(q);
    }
    {
        /* 16 MiB limit and a 4 MiB message: sample splits. */
        size_t n = 4 * MIB;
        unsigned char *q = pattern(n, 11);
        frame(&b, FIN | 2, q, n);
        ropts big = {16 * MIB, NULL};
        expect_message("9 message of 4 MiB", &big, &b, CG_WS_EV_BINARY, q, n);
        b_free(&b);
        free(q);
    }
    {
        ropts zero = {0, NULL};
        frame(&b, FIN | 1, "", 0);
        frame(&b, FIN | 9, "p", 1);
        frame(&b, FIN | 1, "x", 1);
        int t[] = {CG_WS_EV_TEXT, CG_WS_EV_PING, CG_WS_EV_ERROR, -1};
        expect_types("9 max_size 0: empty ok, control ok, 1 byte too big", &zero, &b, t, 1009);
        b_free(&b);
    }
    free(p);
}

/* ---- 12/13 permessage-deflate ---------------------------------------------- */

static unsigned char *text_corpus(size_t n)
{
    static const char *w[] = {"lorem ",   "ipsum ",
                              "dolor ",   "sit ",
                              "amet ",    "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 ",
                              "casgi ",   "socket ",
                              "message ", "\xe2\x82\xac"};
    unsigned char *p = malloc(n + 16);
    size_t at = 0, i = 0;
    while (at < n) {
        const char *s = w[(i * 7 + i / 3) % 10];
        size_t l = strlen(s);
        memcpy(p + at, s, l);
        at += l;
        i++;
    }
    /* Cut back to a character boundary at or below n. */
    size_t end = n;
    while (end > 0 && (p[end] & 0xC0) == 0x80)
        end--;
    memset(p + end, ' ', n - end);
    return p;
}

static void test_deflate(void)
{
    cg_ws_deflate_params dp = {1, 0, 0, 15, 15};
    cg_ws_deflate_params dpn = {1, 0, 1, 15, 15};
    ropts z = {1 << 20, &dp}, zn = {1 << 20, &dpn};
    char name[96];
    static const size_t sizes[] = {0, 1, 16, 125, 1000, 65536, 300000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (unsigned op = 1; op <= 2; op++) {
            size_t n = sizes[i];
            unsigned char *p = op == 1 ? text_corpus(n) : pattern(n, 4);
            zc c;
            zc_init(&c, 15, 0);
            bytes m = {0}, b = {0};
            zc_msg(&c, &m, p, n, 0);
            frame(&b, FIN | RSV1 | op, m.p, m.n);
            snprintf(name, sizeof(name), "12 compressed %s of %zu bytes",
                     op == 1 ? "text" : "binary", n);
            expect_message(name, &z, &b, op == 1 ? CG_WS_EV_TEXT : CG_WS_EV_BINARY, p, n);
            b_free(&b);
            /* Fragmented compressed: RSV1 on the first frame only. */
            fragments(&b, op, m.p, m.n, m.n > 10 ? 5 : 2, RSV1);
            snprintf(name, sizeof(name), "12 compressed %s of %zu bytes in fragments",
                     op == 1 ? "text" : "binary", n);
            expect_message(name, &z, &b, op == 1 ? CG_WS_EV_TEXT : CG_WS_EV_BINARY, p, n);
            b_free(&b);
            b_free(&m);
            zc_free(&c);
            free(p);
        }
    }
    /* Context takeover: the second message refers back to the first. */
    {
        unsigned char *p = text_corpus(5000);
        zc c;
        zc_init(&c, 15, 0);
        bytes b = {0};
        for (int k = 0; k < 4; k++) {
            bytes m = {0};
            zc_msg(&c, &m, p, 5000, 0);
            frame(&b, FIN | RSV1 | 1, m.p, m.n);
            if (k == 1)
                ok(m.n < 100, "13 second message compresses against the first (%zu bytes)", m.n);
            b_free(&m);
        }
        int t[] = {1, 1, 1, 1, -1};
        if (expect_types("13 four messages with context takeover", &z, &b, t, 0))
            ok(whole.e[3].len == 5000 && memcmp(whole.e[3].data, p, 5000) == 0,
               "13 takeover: last message intact");
        /* The reader without takeover cannot decode it. */
        read_every_way(&zn, b.p, b.n);
        ok(whole.n >= 2 && whole.e[whole.n - 1].type == CG_WS_EV_ERROR,
           "13 takeover stream fails on a no-takeover reader");
        b_free(&b);
        zc_free(&c);
        /* client_no_context_takeover: the client resets per message. */
        zc_init(&c, 15, 1);
        for (int k = 0; k < 4; k++) {
            bytes m = {0};
            zc_msg(&c, &m, p, 5000, 0);
            frame(&b, FIN | RSV1 | 1, m.p, m.n);
            b_free(&m);
        }
        if (expect_types("13 four messages without context takeover", &zn, &b, t, 0))
            ok(whole.e[3].len == 5000 && memcmp(whole.e[3].data, p, 5000) == 0,
               "13 no takeover: last message intact");
        expect_types("13 no-takeover stream on a takeover reader", &z, &b, t, 0);
        b_free(&b);
        zc_free(&c);
        /* Compressed and uncompressed messages mixed, with control frames. */
        zc_init(&c, 15, 0);
        bytes m = {0};
        unsigned char *q = text_corpus(3000);
        zc_msg(&c, &m, q, 3000, 0);
        frame(&b, RSV1 | 1, m.p, m.n / 2);
        frame(&b, FIN | 9, "ping", 4);
        frame(&b, FIN, m.p + m.n / 2, m.n - m.n / 2);
        frame(&b, FIN | 1, p, 10);
        b_free(&m);
        zc_msg(&c, &m, p + 100, 2000, 0);
        frame(&b, FIN | RSV1 | 2, m.p, m.n);
        b_free(&m);
        int t2[] = {CG_WS_EV_PING, CG_WS_EV_TEXT, CG_WS_EV_TEXT, CG_WS_EV_BINARY, -1};
        if (expect_types("13 compressed, plain and control frames mixed", &z, &b, t2, 0))
            ok(whole.e[1].len == 3000 && memcmp(whole.e[1].data, q, 3000) == 0 &&
                   whole.e[3].len == 2000 && memcmp(whole.e[3].data, p + 100, 2000) == 0,
               "13 mixed: payloads");
        b_free(&b);
        zc_free(&c);
        free(q);
        /* A final block (BFINAL) ends one message, the next goes on. */
        q = text_corpus(4000);
        zc_init(&c, 15, 0);
        zc_msg(&c, &m, q, 4000, 1);
        frame(&b, FIN | RSV1 | 1, m.p, m.n);
        b_free(&m);
        zc_msg(&c, &m, q, 4000, 0);
        frame(&b, FIN | RSV1 | 1, m.p, m.n);
        b_free(&m);
        int t3[] = {1, 1, -1};
        if (expect_types("13 message ending in a final block", &z, &b, t3, 0))
            ok(whole.e[1].len == 4000 && memcmp(whole.e[1].data, q, 4000) == 0,
               "13 final block: next message intact");
        b_free(&b);
        zc_free(&c);
        free(q);
        free(p);
    }
    /* Window bits 9..15 of the client all decode. */
    {
        unsigned char *p = text_corpus(20000);
        int all = 1;
        for (int wb = 9; wb <= 15; wb++) {
            cg_ws_deflate_params d = {1, 0, 0, 15, wb};
            ropts o = {1 << 20, &d};
            zc c;
            zc_init(&c, wb, 0);
            bytes b = {0};
            for (int k = 0; k < 2; k++) {
                bytes m = {0};
                zc_msg(&c, &m, p + k * 1000, 19000, 0);
                frame(&b, FIN | RSV1 | 2, m.p, m.n);
                b_free(&m);
            }
            if (!read_every_way(&o, b.p, b.n) || whole.n != 2 ||
                whole.e[1].type != CG_WS_EV_BINARY || memcmp(whole.e[1].data, p + 1000, 19000))
                all = 0;
            b_free(&b);
            zc_free(&c);
        }
        ok(all, "13 client window bits 9..15 decode");
        free(p);
    }
    /* Limits on the decompressed size. */
    {
        ropts s = {1000, &dp};
        unsigned char *p = text_corpus(1000), *p1 = text_corpus(1001);
        zc c;
        zc_init(&c, 15, 1);
        bytes m = {0}, b = {0};
        zc_msg(&c, &m, p, 1000, 0);
        frame(&b, FIN | RSV1 | 1, m.p, m.n);
        expect_message("12 compressed message of exactly max_size", &s, &b, CG_WS_EV_TEXT, p, 1000);
        b_free(&b);
        b_free(&m);
        zc_msg(&c, &m, p1, 1001, 0);
        frame(&b, FIN | RSV1 | 1, m.p, m.n);
        expect_error("12 compressed message of max_size + 1", &s, &b, 1009, "message too big");
        b_free(&b);
        b_free(&m);
        /* Invalid UTF-8 inside a compressed text message. */
        memcpy(p + 500, "\xed\xa0\x80", 3);
        zc_msg(&c, &m, p, 1000, 0);
        frame(&b, FIN | RSV1 | 1, m.p, m.n);
        expect_error("12 compressed text with a surrogate", &s, &b, 1007, "invalid UTF-8");
        b_free(&b);
        b_free(&m);
        zc_free(&c);
        free(p);
        free(p1);
        /* Compressed input far beyond what max_size could need. */
        unsigned char big[1000 + 125 + 1024 + 1];
        for (size_t i = 0; i < sizeof(big); i++)
            big[i] = "\x00\x00\x00\xff\xff"[i % 5]; /* empty stored blocks */
        frame(&b, RSV1 | 2, big, 1000);
        frame(&b, 0, big + 1000, sizeof(big) - 1000 - 1);
        int tz[] = {-1};
        expect_types("12 compressed input of max_size * 9/8 + 1024", &s, &b, tz, 0);
        b_free(&b);
        frame(&b, RSV1 | 2, big, 1000);
        frame(&b, 0, big + 1000, sizeof(big) - 1000);
        expect_error("12 compressed input one byte over the bound", &s, &b, 1009,
                     "message too big");
        b_free(&b);
        /* Corrupt deflate data. */
        frame(&b, FIN | RSV1 | 2, "\xff\xff\xff\xff", 4);
        expect_error("12 invalid compressed data", &z, &b, 1002, "invalid compressed data");
        b_free(&b);
        /* Empty compressed message (a single 0x00 byte) and zero bytes. */
        frame(&b, FIN | RSV1 | 1, "\x00", 1);
        frame(&b, FIN | RSV1 | 2, "", 0);
        int t[] = {CG_WS_EV_TEXT, CG_WS_EV_BINARY, -1};
        if (expect_types("12 empty compressed messages", &z, &b, t, 0))
            ok(whole.e[0].len == 0 && whole.e[1].len == 0, "12 empty compressed: no payload");
        b_free(&b);
    }
    /* The bomb: 10 MB of zeros, max_size 1 MiB. */
    {
        size_t n = 10 * 1000 * 1000;
        unsigned char *zeros = calloc(1, n);
        zc c;
        zc_init(&c, 15, 0);
        bytes m = {0}, b = {0};
        deflateParams(&c.z, 9, Z_DEFAULT_STRATEGY);
        zc_msg(&c, &m, zeros, n, 0);
        free(zeros);
        frame(&b, FIN | RSV1 | 2, m.p, m.n);
        ropts o = {MIB, &dp};
        struct timespec t0, t1;
        struct mallinfo2 before = mallinfo2();
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cg_ws_reader *r = cg_ws_reader_new(MIB, &dp);
        cg_ws_event ev;
        size_t used;
        int t = cg_ws_read(r, (const char *)b.p, b.n, &used, &ev);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        ok(t == CG_WS_EV_ERROR && ev.code == 1009, "12 bomb: %zu compressed bytes close with 1009",
           m.n);
        ok(ms < 2000, "12 bomb: detected in %.1f ms (%zu bytes consumed)", ms, used);
        /* Heap held by the reader (glibc's count; sanitizer builds replace
         * malloc and report nothing, then only the bound by design holds). */
        struct mallinfo2 after = mallinfo2();
        size_t held = after.uordblks > before.uordblks ? after.uordblks - before.uordblks : 0;
        ok(held < 2 * MIB, "12 bomb: reader holds %zu bytes of heap (max_size 1 MiB)", held);
        cg_ws_reader_free(r);
        expect_error("12 bomb in every split", &o, &b, 1009, "message too big");
        b_free(&b);
        b_free(&m);
        zc_free(&c);
    }
}

/* ---- negotiation ------------------------------------------------------------ */

static void neg(const char *offer, const char *want, int en, int snct, int cnct, int smwb, int cmwb)
{
    cg_ws_deflate_params p;
    char out[256];
    int n = cg_ws_negotiate_deflate(offer, strlen(offer), &p, out, sizeof(out));
    int good;
    if (!want)
        good = n == 0 && !p.enabled;
    else
        good = n == (int)strlen(want) && strcmp(out, want) == 0 && p.enabled == en &&
               p.server_no_context_takeover == snct && p.client_no_context_takeover == cnct &&
               p.server_max_window_bits == smwb && p.client_max_window_bits == cmwb;
    ok(good, "negotiate [%s] -> [%s]", offer, want ? want : "(none)");
    if (!good)
        printf("#   got %d [%s] en %d snct %d cnct %d smwb %d cmwb %d\n", n, n > 0 ? out : "",
               p.enabled, p.server_no_context_takeover, p.client_no_context_takeover,
               p.server_max_window_bits, p.client_max_window_bits);
}

static void test_negotiate(void)
{
    neg("permessage-deflate", "permessage-deflate", 1, 0, 0, 15, 15);
    neg("permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=15", 1, 0, 0, 15, 15);
    neg("permessage-deflate; client_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=10", 1, 0, 0, 15, 10);
    neg("permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=8", 1, 0, 0, 8, 15);
    neg("permessage-deflate; server_max_window_bits=\"12\"",
        "permessage-deflate; server_max_window_bits=12", 1, 0, 0, 12, 15);
    neg("permessage-deflate;server_no_context_takeover;client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover", 1, 1, 1, 15,
        15);
    neg("PerMessage-Deflate ; Server_No_Context_Takeover",
        "permessage-deflate; server_no_context_takeover", 1, 1, 0, 15, 15);
    neg("permessage-deflate; server_no_context_takeover; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=15", 1, 1, 0, 15,
        15);
    neg("permessage-deflate; client_max_window_bits; server_max_window_bits=10; "
        "client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; "
        "client_max_window_bits=15",
        1, 0, 1, 10, 15);
    /* Several offers: the first acceptable wins. */
    neg("permessage-deflate; server_max_window_bits=7, permessage-deflate; "
        "client_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=9", 1, 0, 0, 15, 9);
    neg("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=15", 1, 0, 0, 15, 15);
    neg("permessage-deflate; foo=1, permessage-deflate", "permessage-deflate", 1, 0, 0, 15, 15);
    neg("permessage-deflate; server_no_context_takeover; server_no_context_takeover, "
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover", 1, 0, 1, 15, 15);
    neg("permessage-deflate; a=\"x,y\", permessage-deflate; server_max_window_bits=15",
        "permessage-deflate; server_max_window_bits=15", 1, 0, 0, 15, 15);
    neg(" , ,permessage-deflate ,", "permessage-deflate", 1, 0, 0, 15, 15);
    /* Unacceptable. */
    neg("", NULL, 0, 0, 0, 0, 0);
    neg("x-webkit-deflate-frame", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; server_max_window_bits", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; server_max_window_bits=7", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; server_max_window_bits=16", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; server_max_window_bits=08", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; server_max_window_bits=1o", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_max_window_bits=7", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_max_window_bits=", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_max_window_bits=\"\"", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_max_window_bits=\"1 0\"", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_max_window_bits=\"10", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_max_window_bits; client_max_window_bits=10", NULL, 0, 0, 0, 0,
        0);
    neg("permessage-deflate; server_no_context_takeover=1", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate; client_no_context_takeover; client_no_context_takeover", NULL, 0, 0, 0,
        0, 0);
    neg("permessage-deflate; unknown", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate;", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate x", NULL, 0, 0, 0, 0, 0);
    neg("permessage-deflate2", NULL, 0, 0, 0, 0, 0);
    /* The output buffer is too small. */
    cg_ws_deflate_params p;
    char out[10];
    ok(cg_ws_negotiate_deflate(S("permessage-deflate"), &p, out, sizeof(out)) == -1 && !p.enabled,
       "negotiate: -1 when the output is too small");
    char exact[19];
    ok(cg_ws_negotiate_deflate(S("permessage-deflate"), &p, exact, sizeof(exact)) == 18,
       "negotiate: output exactly large enough");
}

/* ---- writer ------------------------------------------------------------------ */

static void test_writer(void)
{
    unsigned char h[10];
    ok(cg_ws_frame_header(h, 1, 0, 1, 0) == 2 && h[0] == 0x81 && h[1] == 0, "header: 0 bytes");
    ok(cg_ws_frame_header(h, 1, 0, 2, 125) == 2 && h[0] == 0x82 && h[1] == 125,
       "header: 125 bytes");
    ok(cg_ws_frame_header(h, 1, 1, 1, 126) == 4 && h[0] == 0xC1 && h[1] == 126 && h[2] == 0 &&
           h[3] == 126,
       "header: 126 bytes, rsv1");
    ok(cg_ws_frame_header(h, 0, 0, 0, 65535) == 4 && h[0] == 0x00 && h[2] == 0xff && h[3] == 0xff,
       "header: 65535 bytes, continuation");
    ok(cg_ws_frame_header(h, 1, 0, 2, 65536) == 10 && h[1] == 127 &&
           memcmp(h + 2, "\0\0\0\0\0\1\0\0", 8) == 0,
       "header: 65536 bytes");
    ok(cg_ws_frame_header(h, 1, 0, 2, 0x0102030405060708ull) == 10 &&
           memcmp(h + 2, "\1\2\3\4\5\6\7\10", 8) == 0,
       "header: 64-bit length");

    cg_buf out;
    cg_buf_init(&out);
    ok(cg_ws_close_frame(&out, 0, NULL, 0) == 0 && out.len == 2 &&
           memcmp(out.data, "\x88\x00", 2) == 0,
       "close frame: no code");
    cg_buf_reset(&out);
    ok(cg_ws_close_frame(&out, 1000, S("bye")) == 0 && out.len == 7 &&
           memcmp(out.data,
                  "\x88\x05\x03\xe8"
                  "bye",
                  7) == 0,
       "close frame: 1000 bye");
    cg_buf_reset(&out);
    char reason[200];
    memset(reason, 'a', sizeof(reason));
    ok(cg_ws_close_frame(&out, 1011, reason, 200) == 0 && out.len == 127 && out.data[1] == 125,
       "close frame: reason cut to 123 bytes");
    cg_buf_reset(&out);
    /* 122 ASCII bytes then a 2-byte character straddling 123: cut before it. */
    memcpy(reason + 122, "\xc3\xa9", 2);
    ok(cg_ws_close_frame(&out, 1000, reason, 124) == 0 && out.data[1] == 124,
       "close frame: cut on a character boundary (2-byte)");
    cg_buf_reset(&out);
    memcpy(reason + 121, "\xe2\x82\xac", 3);
    ok(cg_ws_close_frame(&out, 1000, reason, 124) == 0 && out.data[1] == 123,
       "close frame: cut on a character boundary (3-byte)");
    cg_buf_reset(&out);
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 120, "\xe2\x82\xac", 3);
    ok(cg_ws_close_frame(&out, 1000, reason, 124) == 0 && out.data[1] == 125,
       "close frame: a character ending at 123 is kept");
    /* The close frames read back. */
    {
        cg_buf_reset(&out);
        cg_ws_close_frame(&out, 4000, "\xce\xba", 2);
        bytes b = {0};
        mask_stream(&b, (unsigned char *)out.data, out.len);
        int t[] = {CG_WS_EV_CLOSE, -1};
        expect_types("close frame reads back", &plain, &b, t, 4000);
        b_free(&b);
    }
    cg_buf_free(&out);

    /* Round trips: plain and compressed, both context modes, several sizes,
     * writing into a buffer that already holds unread bytes. */
    static const size_t sizes[] = {0, 1, 100, 125, 126, 5000, 65535, 65536, 200000};
    for (int mode = 0; mode < 4; mode++) {
        cg_ws_deflate_params dp = {1, mode == 2, 0, mode == 3 ? 8 : 15, 15};
        cg_ws_deflate_params rp = {1, 0, mode == 2, 15, 15};
        cg_ws_deflater *d = mode ? cg_ws_deflater_new(&dp) : NULL;
        cg_buf o;
        cg_buf_init(&o);
        cg_buf_append(&o, "JUNK", 4);
        cg_buf_consume(&o, 2); /* two unread bytes stay in front */
        int wrote = 1;
        unsigned char *msgs[2 * sizeof(sizes) / sizeof(sizes[0])];
        size_t nm = 0;
        for (int rep = 0; rep < 2; rep++)
            for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                unsigned char *p = (i & 1) ? text_corpus(sizes[i]) : pattern(sizes[i], (unsigned)i);
                msgs[nm++] = p;
                if (cg_ws_write_message(&o, d, (i & 1) ? 1 : 2, (const char *)p, sizes[i]) != 0)
                    wrote = 0;
            }
        ok(wrote && memcmp(o.data + o.pos, "NK", 2) == 0, "writer mode %d: wrote all", mode);
        bytes b = {0};
        mask_stream(&b, (unsigned char *)o.data + o.pos + 2, cg_buf_unread(&o) - 2);
        ropts ro = {1 << 20, mode ? &rp : NULL};
        int agree = read_every_way(&ro, b.p, b.n);
        int good = whole.n == nm;
        for (size_t i = 0; good && i < nm; i++) {
            size_t k = i % (sizeof(sizes) / sizeof(sizes[0]));
            good = whole.e[i].type == ((k & 1) ? CG_WS_EV_TEXT : CG_WS_EV_BINARY) &&
                   whole.e[i].len == sizes[k] && memcmp(whole.e[i].data, msgs[i], sizes[k]) == 0;
        }
        ok(agree && good, "writer mode %d: %zu messages round-trip through the reader", mode, nm);
        if (mode == 1) {
            /* With takeover the repeat of a message is much smaller. */
            cg_buf_reset(&o);
            cg_ws_write_message(&o, d, 2, (const char *)msgs[5], sizes[5]);
            cg_buf_reset(&o);
            cg_ws_write_message(&o, d, 2, (const char *)msgs[5], sizes[5]);
            ok(o.len < 100, "writer takeover: repeated 5000-byte message is %zu bytes", o.len);
        }
        for (size_t i = 0; i < nm; i++)
            free(msgs[i]);
        b_free(&b);
        cg_buf_free(&o);
        cg_ws_deflater_free(d);
    }
    /* server_max_window_bits=8: zlib compresses with 9, yet a peer inflating
     * with a 256-byte window decodes every message (matches stay within 250
     * bytes). */
    {
        cg_ws_deflate_params dp = {1, 0, 0, 8, 15};
        cg_ws_deflater *d = cg_ws_deflater_new(&dp);
        z_stream z;
        memset(&z, 0, sizeof(z));
        int good = inflateInit2(&z, -8) == Z_OK;
        unsigned char *msg = malloc(20000), *dec = malloc(40000);
        unsigned seed = 1;
        for (int m = 0; good && m < 60; m++) {
            size_t n = 1 + (seed = seed * 1103515245u + 12345u) % 20000;
            for (size_t i = 0; i < n; i++) {
                seed = seed * 1103515245u + 12345u;
                /* Literals mixed with copies from up to 300 bytes back. */
                msg[i] = (seed >> 16) % 4 == 0 || i <= 300 ? (unsigned char)(seed >> 24)
                                                           : msg[i - 1 - (seed >> 8) % 300];
            }
            cg_buf o;
            cg_buf_init(&o);
            cg_ws_write_message(&o, d, 2, (const char *)msg, n);
            unsigned l7 = (unsigned char)o.data[1];
            size_t hl = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
            cg_buf_append(&o, "\x00\x00\xff\xff", 4);
            z.next_in = (unsigned char *)o.data + hl;
            z.avail_in = (uInt)(o.len - hl);
            z.next_out = dec;
            z.avail_out = 40000;
            int rc = inflate(&z, Z_SYNC_FLUSH);
            good = rc == Z_OK && z.avail_in == 0 && 40000 - z.avail_out == n &&
                   memcmp(dec, msg, n) == 0;
            cg_buf_free(&o);
        }
        ok(good, "writer: window bits 8 output decodes with a 256-byte window");
        inflateEnd(&z);
        free(msg);
        free(dec);
        cg_ws_deflater_free(d);
    }
    /* Control frames stay uncompressed even with a deflater. */
    {
        cg_ws_deflate_params dp = {1, 0, 0, 15, 15};
        cg_ws_deflater *d = cg_ws_deflater_new(&dp);
        cg_buf o;
        cg_buf_init(&o);
        ok(cg_ws_write_message(&o, d, CG_WS_OP_PING, "hi", 2) == 0 && o.len == 4 &&
               memcmp(o.data, "\x89\x02hi", 4) == 0,
           "writer: a ping is never compressed");
        cg_buf_free(&o);
        cg_ws_deflater_free(d);
    }
    /* Minimal header on compressed output: incompressible 200 bytes need 126+. */
    {
        cg_ws_deflate_params dp = {1, 1, 0, 15, 15};
        cg_ws_deflater *d = cg_ws_deflater_new(&dp);
        cg_buf o;
        cg_buf_init(&o);
        unsigned char *p = pattern(200, 1);
        cg_ws_write_message(&o, d, 2, (const char *)p, 200);
        ok(o.len > 4 && (unsigned char)o.data[0] == 0xC2 && (unsigned char)o.data[1] == 126 &&
               ((size_t)(unsigned char)o.data[2] << 8 | (unsigned char)o.data[3]) == o.len - 4,
           "writer: compressed 200 random bytes take a 16-bit length");
        cg_buf_reset(&o);
        cg_ws_write_message(&o, d, 1, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 50);
        ok((unsigned char)o.data[0] == 0xC1 && (unsigned char)o.data[1] == o.len - 2,
           "writer: small compressed message has a 7-bit length");
        free(p);
        cg_buf_free(&o);
        cg_ws_deflater_free(d);
    }
}

int main(void)
{
    test_sha1();
    test_accept();
    test_framing();
    test_ping();
    test_rsv();
    test_opcodes();
    test_fragmentation();
    test_utf8_exhaustive();
    test_utf8_frames();
    test_close();
    test_limits();
    test_deflate();
    test_negotiate();
    test_writer();
    ev_clear(&whole);
    return tap_done();
}
