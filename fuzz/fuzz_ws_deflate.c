/* libFuzzer target for the permessage-deflate paths. Input byte 0 picks the
 * mode and parameters, byte 1 split and fragment choices; the rest is data.
 * Mode A: the data, cut into up to three messages, is sent as compressed
 * (RSV1) payloads in one or more fragments to a reader with a small
 * max_size; reading whole and in small pieces must agree and obey the
 * limits. Mode B: the data, cut into messages, goes through the writer with
 * either context mode and window bits 8..15, is masked as a client would,
 * and must come back from the reader byte for byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

static cg_buf stream; /* the client byte stream being built */

/* Appends a masked client frame. */
static void put_frame(unsigned b0, const unsigned char *p, size_t n, unsigned key)
{
    unsigned char h[14];
    size_t hl = cg_ws_frame_header(h, 0, 0, 0, n);
    h[0] = (unsigned char)b0;
    h[1] |= 0x80;
    for (int i = 0; i < 4; i++)
        h[hl + (size_t)i] = (unsigned char)(key >> (8 * i));
    check(cg_buf_append(&stream, h, hl + 4) == 0);
    check(cg_buf_reserve(&stream, n + 1) == 0);
    unsigned char *d = (unsigned char *)stream.data + stream.len;
    for (size_t i = 0; i < n; i++)
        d[i] = p[i] ^ h[hl + (i & 3)];
    stream.len += n;
}

/* Masks every frame of a server stream (writer output). */
static void mask_all(const unsigned char *p, size_t n, unsigned key)
{
    size_t i = 0;
    while (i < n) {
        check(n - i >= 2);
        unsigned l7 = p[i + 1] & 0x7f;
        size_t hl = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
        uint64_t len = l7;
        check(n - i >= hl);
        if (l7 == 126)
            len = ((uint64_t)p[i + 2] << 8) | p[i + 3];
        else if (l7 == 127)
            for (int k = 0; k < 8; k++)
                len = (len << 8) | p[i + 2 + k];
        check(len <= n - i - hl);
        put_frame(p[i], p + i + hl, (size_t)len, key++);
        i += hl + (size_t)len;
    }
}

typedef struct ev_rec {
    int type, code;
    const char *error;
    size_t len;
    unsigned char *data;
} ev_rec;

typedef struct evs {
    ev_rec e[16];
    size_t n;
} evs;

static void evs_free(evs *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->e[i].data);
    v->n = 0;
}

/* Reads the stream in pieces of `piece` bytes (0: whole), recording events. */
static void read_all(size_t max, const cg_ws_deflate_params *dp, size_t piece, evs *v)
{
    cg_ws_reader *r = cg_ws_reader_new(max, dp);
    check(r != NULL);
    const char *in = stream.data;
    size_t n = stream.len, at = 0;
    int done = 0;
    while (at < n && !done) {
        size_t k = piece && piece < n - at ? piece : n - at;
        char *p = malloc(k);
        memcpy(p, in + at, k);
        size_t off = 0;
        while (off < k) {
            cg_ws_event ev;
            size_t c;
            int t = cg_ws_read(r, p + off, k - off, &c, &ev);
            check(c <= k - off);
            off += c;
            if (t == CG_WS_EV_NONE)
                break;
            check(v->n < 16);
            ev_rec *x = &v->e[v->n++];
            x->type = t;
            x->code = ev.code;
            x->error = ev.error;
            x->len = ev.data.len;
            x->data = malloc(x->len + 1);
            if (x->len)
                memcpy(x->data, ev.data.base, x->len);
            if (t == CG_WS_EV_TEXT || t == CG_WS_EV_BINARY)
                check(x->len <= max);
            if (t == CG_WS_EV_ERROR) {
                check(ev.code == 1002 || ev.code == 1007 || ev.code == 1009);
                done = 1;
                break;
            }
        }
        free(p);
        at += k;
    }
    cg_ws_reader_free(r);
}

static void same(const evs *a, const evs *b)
{
    check(a->n == b->n);
    for (size_t i = 0; i < a->n; i++)
        check(a->e[i].type == b->e[i].type && a->e[i].code == b->e[i].code &&
              a->e[i].error == b->e[i].error && a->e[i].len == b->e[i].len &&
              memcmp(a->e[i].data, b->e[i].data, a->e[i].len) == 0);
}

/* Mode A: arbitrary bytes as compressed payloads. */
static void mode_a(uint8_t opt, uint8_t sel, const uint8_t *in, size_t n)
{
    cg_ws_deflate_params dp = {1, 0, (opt >> 1) & 1, 15, 15};
    size_t max = (opt & 4) ? 300 : 4096;
    size_t c1 = (size_t)(sel & 15) * n / 15, c2 = c1 + (n - c1) / 2;
    size_t cuts[4] = {0, c1, c2, n};
    unsigned frags = 1 + ((sel >> 4) & 3);
    stream.len = stream.pos = 0;
    for (int m = 0; m < 3; m++) {
        const uint8_t *p = in + cuts[m];
        size_t len = cuts[m + 1] - cuts[m];
        unsigned op = ((opt >> (3 + m)) & 1) ? 1 : 2;
        size_t at = 0;
        for (unsigned f = 0; f < frags; f++) {
            size_t end = f + 1 == frags ? len : len * (f + 1) / frags;
            unsigned b0 = (f == 0 ? 0x40 | op : 0) | (f + 1 == frags ? 0x80 : 0);
            put_frame(b0, p + at, end - at, 0x01020304u * (unsigned)(m + 1) + f);
            at = end;
        }
        if (opt & 0x40)
            put_frame(0x89, (const unsigned char *)"ping", 4, 7);
    }
    evs whole = {0}, pieces = {0};
    read_all(max, &dp, 0, &whole);
    read_all(max, &dp, 1 + (sel % 7), &pieces);
    same(&whole, &pieces);
    evs_free(&whole);
    evs_free(&pieces);
}

/* Mode B: writer -> masking -> reader round trip. */
static void mode_b(uint8_t opt, uint8_t sel, const uint8_t *in, size_t n)
{
    cg_ws_deflate_params wp = {1, (opt >> 1) & 1, 0, 8 + ((opt >> 2) & 7), 15};
    cg_ws_deflate_params rp = {1, 0, wp.server_no_context_takeover, 15, 15};
    cg_ws_deflater *d = cg_ws_deflater_new(&wp);
    check(d != NULL);
    cg_buf out;
    cg_buf_init(&out);
    size_t c1 = (size_t)(sel & 15) * n / 15, c2 = c1 + (n - c1) * ((sel >> 4) & 15) / 15;
    size_t cuts[4] = {0, c1, c2, n};
    for (int m = 0; m < 3; m++) {
        /* Plain frames in between when asked: the stream state must carry. */
        cg_ws_deflater *use = ((opt >> 5) & 1) && m == 1 ? NULL : d;
        check(cg_ws_write_message(&out, use, 2, (const char *)in + cuts[m],
                                  cuts[m + 1] - cuts[m]) == 0);
    }
    stream.len = stream.pos = 0;
    mask_all((const unsigned char *)out.data, out.len, sel * 0x01010101u);
    evs whole = {0}, pieces = {0};
    read_all(1 << 20, &rp, 0, &whole);
    check(whole.n == 3);
    for (int m = 0; m < 3; m++) {
        size_t len = cuts[m + 1] - cuts[m];
        check(whole.e[m].type == CG_WS_EV_BINARY && whole.e[m].len == len);
        check(len == 0 || memcmp(whole.e[m].data, in + cuts[m], len) == 0);
    }
    read_all(1 << 20, &rp, 1 + (sel % 5), &pieces);
    same(&whole, &pieces);
    evs_free(&whole);
    evs_free(&pieces);
    cg_buf_free(&out);
    cg_ws_deflater_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t opt = data[0], sel = data[1];
    if (opt & 0x80)
        mode_b(opt, sel, data + 2, size - 2);
    else
        mode_a(opt, sel, data + 2, size - 2);
    return 0;
}
