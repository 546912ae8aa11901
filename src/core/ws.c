/* WebSocket codec: handshake helpers (SHA-1, base64), permessage-deflate
 * negotiation, the frame reader (a byte-split-independent state machine that
 * assembles messages) and the frame writer. See ws.h for the contracts. */
#include "ws.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ascii.h"

/* ---- SHA-1 (RFC 3174) --------------------------------------------------- */

static inline uint32_t cg_rol32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static inline uint32_t cg_load_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* One 64-byte block into the five-word state. */
static void cg_sha1_block(uint32_t h[5], const unsigned char *blk)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = cg_load_be32(blk + 4 * i);
    for (int i = 16; i < 80; i++)
        w[i] = cg_rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999u;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        uint32_t t = cg_rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = cg_rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* Incremental SHA-1: whole blocks are hashed as they fill. */
typedef struct cg_sha1_ctx {
    uint32_t h[5];
    unsigned char buf[64];
    size_t n;       /* bytes in buf */
    uint64_t total; /* bytes fed */
} cg_sha1_ctx;

static void cg_sha1_init(cg_sha1_ctx *c)
{
    static const uint32_t iv[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    memcpy(c->h, iv, sizeof(iv));
    c->n = 0;
    c->total = 0;
}

static void cg_sha1_update(cg_sha1_ctx *c, const unsigned char *p, size_t len)
{
    c->total += len;
    if (c->n) {
        size_t k = 64 - c->n < len ? 64 - c->n : len;
        memcpy(c->buf + c->n, p, k);
        c->n += k;
        p += k;
        len -= k;
        if (c->n < 64)
            return;
        cg_sha1_block(c->h, c->buf);
        c->n = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        cg_sha1_block(c->h, p);
    if (len)
        memcpy(c->buf, p, len);
    c->n = len;
}

/* Padding: 0x80, zeros, then the bit length (big-endian) in the last 8 bytes. */
static void cg_sha1_final(cg_sha1_ctx *c, unsigned char out[20])
{
    uint64_t bits = c->total * 8;
    c->buf[c->n++] = 0x80;
    if (c->n > 56) {
        memset(c->buf + c->n, 0, 64 - c->n);
        cg_sha1_block(c->h, c->buf);
        c->n = 0;
    }
    memset(c->buf + c->n, 0, 56 - c->n);
    for (int i = 0; i < 8; i++)
        c->buf[63 - i] = (unsigned char)(bits >> (8 * i));
    cg_sha1_block(c->h, c->buf);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

void cg_sha1(const void *data, size_t len, unsigned char out[20])
{
    cg_sha1_ctx c;
    cg_sha1_init(&c);
    cg_sha1_update(&c, data, len);
    cg_sha1_final(&c, out);
}

/* ---- base64 and the handshake key --------------------------------------- */

static const char cg_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 alphabet character, or -1. */
static int cg_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard base64 with padding; out gets 4 * ceil(n / 3) characters. */
static size_t cg_b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = cg_b64[v >> 18];
        out[o++] = cg_b64[(v >> 12) & 63];
        out[o++] = cg_b64[(v >> 6) & 63];
        out[o++] = cg_b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = cg_b64[v >> 18];
        out[o++] = cg_b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? cg_b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

int cg_ws_valid_key(const char *key, size_t len)
{
    /* 16 bytes encode to 22 characters plus "==". Like common decoders, the
     * unused low bits of the last character are not required to be zero. */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (cg_b64_value((unsigned char)key[i]) < 0)
            return 0;
    return 1;
}

size_t cg_ws_accept(const char *key, size_t len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[20];
    cg_sha1_ctx c;
    cg_sha1_init(&c);
    cg_sha1_update(&c, (const unsigned char *)key, len);
    cg_sha1_update(&c, (const unsigned char *)guid, sizeof(guid) - 1);
    cg_sha1_final(&c, digest);
    size_t n = cg_b64_encode(digest, 20, out);
    out[n] = '\0';
    return n;
}

/* ---- permessage-deflate negotiation (RFC 7692 section 7) ---------------- */

/* tchar of RFC 7230. */
static int cg_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

typedef struct cg_ws_scan {
    const char *p, *end;
} cg_ws_scan;

static void cg_scan_ows(cg_ws_scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
        s->p++;
}

/* A token; returns its length (0: none). */
static size_t cg_scan_token(cg_ws_scan *s, const char **tok)
{
    *tok = s->p;
    while (s->p < s->end && cg_is_tchar((unsigned char)*s->p))
        s->p++;
    return (size_t)(s->p - *tok);
}

/* A parameter value: token or quoted-string, unescaped into val (at most
 * cap - 1 bytes). Returns its length, or -1 on a syntax error or a value too
 * long for any valid parameter. */
static int cg_scan_value(cg_ws_scan *s, char *val, size_t cap)
{
    size_t n = 0;
    if (s->p < s->end && *s->p == '"') {
        s->p++;
        for (;;) {
            if (s->p >= s->end)
                return -1;
            char c = *s->p++;
            if (c == '"')
                break;
            if (c == '\\') {
                if (s->p >= s->end)
                    return -1;
                c = *s->p++;
            }
            if (n + 1 >= cap)
                return -1;
            val[n++] = c;
        }
        /* After unescaping, the value must still be a token (RFC 6455 9.1). */
        for (size_t i = 0; i < n; i++)
            if (!cg_is_tchar((unsigned char)val[i]))
                return -1;
        if (n == 0)
            return -1;
        return (int)n;
    }
    const char *tok;
    size_t tl = cg_scan_token(s, &tok);
    if (tl == 0 || tl + 1 > cap)
        return -1;
    memcpy(val, tok, tl);
    return (int)tl;
}

/* A window-bits value: decimal 8..15 without leading zeros; else -1. */
static int cg_window_bits(const char *v, int n)
{
    if (n == 1 && v[0] >= '8' && v[0] <= '9')
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + v[1] - '0';
    return -1;
}

/* One offer's parameters as parsed. */
typedef struct cg_ws_offer {
    int bad;
    int snct, cnct;     /* seen flags */
    int smwb, cmwb;     /* seen flags */
    int smwb_v, cmwb_v; /* values; cmwb_v 0 when offered without a value */
} cg_ws_offer;

/* Applies one parameter to the offer; marks it bad when unknown, duplicate or
 * badly valued. */
static void cg_offer_param(cg_ws_offer *o, const char *name, size_t nl, const char *val, int vl)
{
    if (cg_ascii_ieq(name, nl, "server_no_context_takeover")) {
        if (o->snct || vl >= 0)
            o->bad = 1;
        o->snct = 1;
    } else if (cg_ascii_ieq(name, nl, "client_no_context_takeover")) {
        if (o->cnct || vl >= 0)
            o->bad = 1;
        o->cnct = 1;
    } else if (cg_ascii_ieq(name, nl, "server_max_window_bits")) {
        int b = vl >= 0 ? cg_window_bits(val, vl) : -1;
        if (o->smwb || b < 0)
            o->bad = 1;
        o->smwb = 1;
        o->smwb_v = b;
    } else if (cg_ascii_ieq(name, nl, "client_max_window_bits")) {
        int b = vl >= 0 ? cg_window_bits(val, vl) : 0;
        if (o->cmwb || b < 0)
            o->bad = 1;
        o->cmwb = 1;
        o->cmwb_v = b;
    } else {
        o->bad = 1;
    }
}

/* Skips to just past the next top-level comma (outside quoted strings). */
static void cg_scan_skip_element(cg_ws_scan *s)
{
    int quoted = 0;
    while (s->p < s->end) {
        char c = *s->p++;
        if (quoted) {
            if (c == '\\' && s->p < s->end)
                s->p++;
            else if (c == '"')
                quoted = 0;
        } else if (c == '"') {
            quoted = 1;
        } else if (c == ',') {
            return;
        }
    }
}

int cg_ws_negotiate_deflate(const char *offer, size_t len, cg_ws_deflate_params *p, char *out,
                            size_t outlen)
{
    cg_ws_scan s = {offer, offer + len};
    memset(p, 0, sizeof(*p));
    p->server_max_window_bits = 15;
    p->client_max_window_bits = 15;
    if (outlen)
        out[0] = '\0';

    while (s.p < s.end) {
        cg_scan_ows(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p >= s.end)
            break;
        const char *name;
        size_t nl = cg_scan_token(&s, &name);
        cg_ws_offer o = {0};
        o.bad = nl == 0 || !cg_ascii_ieq(name, nl, "permessage-deflate");
        int syntax_ok = nl > 0;
        while (syntax_ok) {
            cg_scan_ows(&s);
            if (s.p >= s.end || *s.p == ',')
                break;
            if (*s.p != ';') {
                syntax_ok = 0;
                break;
            }
            s.p++;
            cg_scan_ows(&s);
            const char *pn;
            size_t pl = cg_scan_token(&s, &pn);
            if (pl == 0) {
                syntax_ok = 0;
                break;
            }
            cg_scan_ows(&s);
            char val[16] = "";
            int vl = -1;
            if (s.p < s.end && *s.p == '=') {
                s.p++;
                cg_scan_ows(&s);
                vl = cg_scan_value(&s, val, sizeof(val));
                if (vl < 0) {
                    syntax_ok = 0;
                    break;
                }
            }
            cg_offer_param(&o, pn, pl, val, vl);
        }
        if (!syntax_ok) {
            cg_scan_skip_element(&s);
            continue;
        }
        if (s.p < s.end)
            s.p++; /* the comma */
        if (o.bad)
            continue;

        /* Accept this offer as asked: the server honours every limit the
         * client requests. */
        p->enabled = 1;
        p->server_no_context_takeover = o.snct;
        p->client_no_context_takeover = o.cnct;
        p->server_max_window_bits = o.smwb ? o.smwb_v : 15;
        p->client_max_window_bits = o.cmwb && o.cmwb_v ? o.cmwb_v : 15;
        char sm[32] = "", cm[32] = "";
        if (o.smwb)
            snprintf(sm, sizeof(sm), "; server_max_window_bits=%d", p->server_max_window_bits);
        if (o.cmwb)
            snprintf(cm, sizeof(cm), "; client_max_window_bits=%d", p->client_max_window_bits);
        int n = snprintf(out, outlen, "permessage-deflate%s%s%s%s",
                         o.snct ? "; server_no_context_takeover" : "",
                         o.cnct ? "; client_no_context_takeover" : "", sm, cm);
        if (n < 0 || (size_t)n >= outlen) {
            memset(p, 0, sizeof(*p));
            p->server_max_window_bits = 15;
            p->client_max_window_bits = 15;
            if (outlen)
                out[0] = '\0';
            return -1;
        }
        return n;
    }
    return 0;
}

/* ---- UTF-8 validation --------------------------------------------------- */

/* Byte classes: 0 ASCII, 1 80-8F, 2 90-9F, 3 A0-BF, 4 C0-C1/F5-FF (never
 * valid), 5 C2-DF, 6 E0, 7 E1-EC/EE-EF, 8 ED, 9 F0, 10 F1-F3, 11 F4. */
static const unsigned char cg_utf8_class[256] = {
    /* 00-7F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 80-8F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 90-9F */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* A0-BF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* C0-DF */
    4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    /* E0-EF */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7,
    /* F0-FF */
    9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};

/* States: 0 boundary, 1 rejected (sticky), 2 one continuation left, 3 two
 * left, 4 after E0 (A0-BF next), 5 after ED (80-9F next: no surrogates), 6
 * after F0 (90-BF next: no overlongs), 7 three left, 8 after F4 (80-8F next:
 * nothing above U+10FFFF). */
static const unsigned char cg_utf8_next[9][12] = {
    /*         0  1  2  3  4  5  6  7  8  9 10 11 */
    /* 0 */ {0, 1, 1, 1, 1, 2, 4, 3, 5, 6, 7, 8},
    /* 1 */ {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 2 */ {1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 3 */ {1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 4 */ {1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 5 */ {1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 6 */ {1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 7 */ {1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    /* 8 */ {1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
};

#define CG_UTF8_REJECT 1u

int cg_utf8_feed(cg_utf8 *u, const unsigned char *p, size_t len)
{
    uint32_t st = u->state;
    size_t i = 0;
    if (st == CG_UTF8_REJECT)
        return 0;
    while (i < len) {
        /* ASCII runs at a character boundary are skipped 16 bytes at a time. */
        if (st == 0) {
            while (i + 16 <= len) {
                uint64_t a, b;
                memcpy(&a, p + i, 8);
                memcpy(&b, p + i + 8, 8);
                if ((a | b) & 0x8080808080808080ull)
                    break;
                i += 16;
            }
            while (i < len && p[i] < 0x80)
                i++;
            if (i == len)
                break;
        }
        st = cg_utf8_next[st][cg_utf8_class[p[i]]];
        if (st == CG_UTF8_REJECT) {
            u->state = st;
            return 0;
        }
        i++;
    }
    u->state = st;
    return 1;
}

/* ---- reader ------------------------------------------------------------- */

enum { CG_RD_HEAD, CG_RD_PAYLOAD, CG_RD_FAILED };

#define CG_WS_ZCHUNK 8192      /* compressed bytes unmasked per inflate call */
#define CG_WS_KEEP (32 * 1024) /* message buffer kept between messages */
#define CG_WS_MIN_GROW 4096

struct cg_ws_reader {
    size_t max_size;
    int deflate;    /* permessage-deflate negotiated: RSV1 allowed */
    int reset_each; /* client_no_context_takeover: fresh inflate context per message */
    int state;      /* CG_RD_* */
    unsigned hlen;  /* header bytes collected */
    unsigned hneed; /* header bytes needed (2 until the length form is known) */
    unsigned char hdr[14];
    /* current frame */
    int fin, opcode;
    uint64_t remaining;
    unsigned char mask[4];
    unsigned moff; /* payload bytes of this frame consumed, mod 4 */
    /* current message */
    int msg_op;    /* TEXT or BINARY while a message is open, else 0 */
    int msg_z;     /* the open message is compressed */
    uint64_t zin;  /* compressed bytes declared so far for the open message */
    int delivered; /* msg holds a returned message: cleared on the next call */
    cg_utf8 utf8;
    unsigned char *msg; /* owned; msg_len <= max_size except transiently by one byte */
    size_t msg_len, msg_cap;
    unsigned char ctl[125];
    size_t ctl_len;
    /* decompression, set up on the first compressed frame */
    int z_ready;
    int z_end; /* the stream ended (BFINAL) inside this message: rest ignored */
    z_stream z;
    unsigned char *zbuf; /* CG_WS_ZCHUNK bytes, owned */
};

cg_ws_reader *cg_ws_reader_new(size_t max_size, const cg_ws_deflate_params *deflate)
{
    cg_ws_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->max_size = max_size;
    r->deflate = deflate && deflate->enabled;
    r->reset_each = r->deflate && deflate->client_no_context_takeover;
    r->state = CG_RD_HEAD;
    r->hneed = 2;
    return r;
}

void cg_ws_reader_free(cg_ws_reader *r)
{
    if (!r)
        return;
    if (r->z_ready)
        inflateEnd(&r->z);
    free(r->zbuf);
    free(r->msg);
    free(r);
}

/* XOR-copies n payload bytes with the mask starting at mask offset off, eight
 * bytes at a time. dst and src may not overlap. */
static void cg_unmask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                           const unsigned char mask[4], unsigned off)
{
    unsigned char m[8];
    for (int i = 0; i < 8; i++)
        m[i] = mask[(off + (unsigned)i) & 3];
    uint64_t mw;
    memcpy(&mw, m, 8);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w[4];
        memcpy(w, src + i, 32);
        w[0] ^= mw;
        w[1] ^= mw;
        w[2] ^= mw;
        w[3] ^= mw;
        memcpy(dst + i, w, 32);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= mw;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ m[i & 7];
}

/* Ensures room for `need` more message bytes (need <= max_size + 1 - msg_len),
 * growing geometrically but never past max_size + 1. 0 or -1. */
static int cg_msg_reserve(cg_ws_reader *r, size_t need)
{
    if (r->msg_cap - r->msg_len >= need)
        return 0;
    size_t limit = r->max_size < SIZE_MAX ? r->max_size + 1 : SIZE_MAX;
    size_t want = r->msg_len + need;
    size_t cap = r->msg_cap < CG_WS_MIN_GROW ? CG_WS_MIN_GROW : r->msg_cap;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    if (cap > limit)
        cap = limit < want ? want : limit;
    unsigned char *m = realloc(r->msg, cap);
    if (!m)
        return -1;
    r->msg = m;
    r->msg_cap = cap;
    return 0;
}

/* Marks the reader failed and fills an ERROR event. Returns the event type. */
static int cg_fail(cg_ws_reader *r, cg_ws_event *ev, int code, const char *why)
{
    r->state = CG_RD_FAILED;
    ev->type = CG_WS_EV_ERROR;
    ev->code = code;
    ev->error = why;
    ev->data.base = NULL;
    ev->data.len = 0;
    return CG_WS_EV_ERROR;
}

/* Validates `n` new message bytes at msg + at when the message is text. */
static int cg_msg_check_utf8(cg_ws_reader *r, size_t at, size_t n)
{
    if (r->msg_op != CG_WS_OP_TEXT || n == 0)
        return 1;
    return cg_utf8_feed(&r->utf8, r->msg + at, n);
}

/* Sets up raw inflate (15-bit window: decodes any client window size). */
static int cg_inflate_init(cg_ws_reader *r)
{
    if (r->z_ready)
        return 0;
    r->zbuf = malloc(CG_WS_ZCHUNK);
    if (!r->zbuf)
        return -1;
    memset(&r->z, 0, sizeof(r->z));
    if (inflateInit2(&r->z, -15) != Z_OK) {
        free(r->zbuf);
        r->zbuf = NULL;
        return -1;
    }
    r->z_ready = 1;
    return 0;
}

/* After a final deflate block (BFINAL) the next message starts a new
 * stream; with context takeover the window carries over as a dictionary. */
static int cg_inflate_restart(cg_ws_reader *r)
{
    unsigned char *dict = NULL;
    uInt dl = 0;
    int rc = -1;
    if (!r->reset_each) {
        dict = malloc(32768);
        if (!dict)
            goto fail_alloc;
        if (inflateGetDictionary(&r->z, dict, &dl) != Z_OK)
            goto fail_zlib;
    }
    if (inflateReset(&r->z) != Z_OK)
        goto fail_zlib;
    if (dl && inflateSetDictionary(&r->z, dict, dl) != Z_OK)
        goto fail_zlib;
    rc = 0;
fail_zlib:
    free(dict);
fail_alloc:
    return rc;
}

/* Inflates n compressed bytes into the message, validating text as it is
 * produced and stopping past max_size. 0, or the ERROR event type. */
static int cg_inflate_into(cg_ws_reader *r, const unsigned char *in, size_t n, cg_ws_event *ev)
{
    size_t limit = r->max_size < SIZE_MAX ? r->max_size + 1 : SIZE_MAX;
    if (r->z_end)
        return 0;
    r->z.next_in = (unsigned char *)in;
    r->z.avail_in = (uInt)n;
    for (;;) {
        size_t room = limit - r->msg_len;
        if (r->msg_cap == r->msg_len) {
            size_t grow = r->msg_cap < CG_WS_MIN_GROW ? CG_WS_MIN_GROW : r->msg_cap;
            if (grow > room)
                grow = room;
            if (cg_msg_reserve(r, grow) < 0)
                return cg_fail(r, ev, CG_WS_CLOSE_INTERNAL_ERROR, "out of memory");
        }
        size_t space = r->msg_cap - r->msg_len;
        if (space > room)
            space = room;
        if (space > UINT_MAX)
            space = UINT_MAX;
        r->z.next_out = r->msg + r->msg_len;
        r->z.avail_out = (uInt)space;
        int zrc = inflate(&r->z, Z_SYNC_FLUSH);
        size_t got = space - r->z.avail_out;
        size_t at = r->msg_len;
        r->msg_len += got;
        if (!cg_msg_check_utf8(r, at, got))
            return cg_fail(r, ev, CG_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
        if (r->msg_len > r->max_size)
            return cg_fail(r, ev, CG_WS_CLOSE_TOO_BIG, "message too big");
        if (zrc == Z_STREAM_END) {
            /* As zlib-based peers do, bytes after the final block (at least
             * the appended 00 00 ff ff) are not part of the message. */
            r->z_end = 1;
            return 0;
        }
        if (zrc == Z_BUF_ERROR && r->z.avail_in == 0)
            return 0;
        if (zrc != Z_OK)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "invalid compressed data");
        if (r->z.avail_in == 0 && r->z.avail_out != 0)
            return 0;
    }
}

/* Checks the first two header bytes against the rules that need only them,
 * and sets hneed. 0, or the ERROR event type. */
static int cg_head_first(cg_ws_reader *r, cg_ws_event *ev)
{
    unsigned b0 = r->hdr[0], b1 = r->hdr[1];
    int fin = (b0 >> 7) & 1, rsv1 = (b0 >> 6) & 1, op = b0 & 0x0f;
    unsigned len7 = b1 & 0x7f;
    if (b0 & 0x30)
        return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "reserved bit set");
    if (op != CG_WS_OP_CONT && op != CG_WS_OP_TEXT && op != CG_WS_OP_BINARY &&
        op != CG_WS_OP_CLOSE && op != CG_WS_OP_PING && op != CG_WS_OP_PONG)
        return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "reserved opcode");
    if (op >= 8) {
        if (rsv1)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "reserved bit set");
        if (!fin)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "fragmented control frame");
        if (len7 > 125)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "control frame too long");
    } else if (op == CG_WS_OP_CONT) {
        if (!r->msg_op)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "continuation without a message");
        if (rsv1)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "reserved bit set");
    } else {
        if (r->msg_op)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR,
                           "new message inside a fragmented one");
        if (rsv1 && !r->deflate)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "reserved bit set");
    }
    if (!(b1 & 0x80))
        return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "unmasked frame");
    r->hneed = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    return 0;
}

/* Complete header: length checks, opening a message. 0 or ERROR type. */
static int cg_head_done(cg_ws_reader *r, cg_ws_event *ev)
{
    unsigned b0 = r->hdr[0], len7 = r->hdr[1] & 0x7f;
    uint64_t plen = len7;
    const unsigned char *h = r->hdr + 2;
    if (len7 == 126) {
        plen = ((uint64_t)h[0] << 8) | h[1];
        h += 2;
    } else if (len7 == 127) {
        plen = 0;
        for (int i = 0; i < 8; i++)
            plen = (plen << 8) | h[i];
        h += 8;
        if (plen >> 63)
            return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "64-bit length with the top bit set");
    }
    memcpy(r->mask, h, 4);
    r->fin = (b0 >> 7) & 1;
    r->opcode = b0 & 0x0f;
    r->remaining = plen;
    r->moff = 0;
    if (r->opcode >= 8) {
        r->ctl_len = 0;
    } else {
        if (r->opcode != CG_WS_OP_CONT) {
            r->msg_op = r->opcode;
            r->msg_z = (b0 >> 6) & 1;
            r->zin = 0;
            r->utf8.state = 0;
            if (r->msg_z && cg_inflate_init(r) < 0)
                return cg_fail(r, ev, CG_WS_CLOSE_INTERNAL_ERROR, "out of memory");
        } /* Uncompressed sizes are known up front; compressed ones are checked
           * on the output as it is produced. The compressed input is bounded
           * too (deflate never needs more than 1/8 over the plain size), so a
           * message cannot go on forever while producing nothing. */
        if (!r->msg_z && plen > (uint64_t)(r->max_size - r->msg_len))
            return cg_fail(r, ev, CG_WS_CLOSE_TOO_BIG, "message too big");
        if (r->msg_z) {
            uint64_t m = r->max_size;
            uint64_t zmax = m > UINT64_MAX / 4 ? UINT64_MAX : m + m / 8 + 1024;
            if (plen > zmax - r->zin)
                return cg_fail(r, ev, CG_WS_CLOSE_TOO_BIG, "message too big");
            r->zin += plen;
        }
    }
    r->state = CG_RD_PAYLOAD;
    return 0;
}

static int cg_close_code_ok(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* The frame's payload is complete: emits its event if it has one. Returns
 * the event type (NONE to go on). */
static int cg_frame_done(cg_ws_reader *r, cg_ws_event *ev)
{
    r->state = CG_RD_HEAD;
    r->hlen = 0;
    r->hneed = 2;
    if (r->opcode >= 8) {
        ev->data.base = (const char *)r->ctl;
        ev->data.len = r->ctl_len;
        if (r->opcode == CG_WS_OP_PING) {
            ev->type = CG_WS_EV_PING;
        } else if (r->opcode == CG_WS_OP_PONG) {
            ev->type = CG_WS_EV_PONG;
        } else {
            if (r->ctl_len == 1)
                return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "close payload of length 1");
            ev->code = CG_WS_CLOSE_NO_STATUS;
            if (r->ctl_len >= 2) {
                unsigned code = ((unsigned)r->ctl[0] << 8) | r->ctl[1];
                if (!cg_close_code_ok(code))
                    return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
                cg_utf8 u = {0};
                if (!cg_utf8_feed(&u, r->ctl + 2, r->ctl_len - 2) || !cg_utf8_complete(&u))
                    return cg_fail(r, ev, CG_WS_CLOSE_INVALID_DATA,
                                   "invalid UTF-8 in close reason");
                ev->code = (int)code;
                ev->data.base = (const char *)r->ctl + 2;
                ev->data.len = r->ctl_len - 2;
            }
            ev->type = CG_WS_EV_CLOSE;
        }
        return ev->type;
    }
    if (!r->fin)
        return CG_WS_EV_NONE;
    if (r->msg_z) {
        static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
        if (cg_inflate_into(r, tail, 4, ev))
            return CG_WS_EV_ERROR;
        if (r->z_end) {
            r->z_end = 0;
            if (cg_inflate_restart(r) < 0)
                return cg_fail(r, ev, CG_WS_CLOSE_INTERNAL_ERROR, "out of memory");
        } else if (r->reset_each && inflateReset(&r->z) != Z_OK) {
            return cg_fail(r, ev, CG_WS_CLOSE_INTERNAL_ERROR, "inflate reset failed");
        }
    }
    if (r->msg_op == CG_WS_OP_TEXT && !cg_utf8_complete(&r->utf8))
        return cg_fail(r, ev, CG_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
    ev->type = r->msg_op == CG_WS_OP_TEXT ? CG_WS_EV_TEXT : CG_WS_EV_BINARY;
    ev->data.base = r->msg ? (const char *)r->msg : ""; /* never NULL */
    ev->data.len = r->msg_len;
    r->msg_op = 0;
    r->msg_z = 0;
    r->delivered = 1;
    return ev->type;
}

/* Consumes n payload bytes of the current frame from src. 0 or ERROR type. */
static int cg_payload(cg_ws_reader *r, const unsigned char *src, size_t n, cg_ws_event *ev)
{
    if (r->opcode >= 8) {
        cg_unmask_copy(r->ctl + r->ctl_len, src, n, r->mask, r->moff);
        r->ctl_len += n;
    } else if (!r->msg_z) {
        /* The header check bounds msg_len + n by max_size. */
        if (cg_msg_reserve(r, n) < 0)
            return cg_fail(r, ev, CG_WS_CLOSE_INTERNAL_ERROR, "out of memory");
        cg_unmask_copy(r->msg + r->msg_len, src, n, r->mask, r->moff);
        size_t at = r->msg_len;
        r->msg_len += n;
        if (!cg_msg_check_utf8(r, at, n))
            return cg_fail(r, ev, CG_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
    } else {
        size_t done = 0;
        while (done < n) {
            size_t k = n - done < CG_WS_ZCHUNK ? n - done : CG_WS_ZCHUNK;
            cg_unmask_copy(r->zbuf, src + done, k, r->mask, (unsigned)((r->moff + done) & 3));
            if (cg_inflate_into(r, r->zbuf, k, ev))
                return CG_WS_EV_ERROR;
            done += k;
        }
    }
    r->moff = (unsigned)((r->moff + n) & 3);
    r->remaining -= n;
    return 0;
}

int cg_ws_read(cg_ws_reader *r, const char *buf, size_t len, size_t *consumed, cg_ws_event *ev)
{
    const unsigned char *in = (const unsigned char *)buf;
    size_t pos = 0;
    ev->type = CG_WS_EV_NONE;
    ev->code = 0;
    ev->data.base = NULL;
    ev->data.len = 0;
    ev->error = NULL;
    *consumed = 0;
    if (r->state == CG_RD_FAILED)
        return cg_fail(r, ev, CG_WS_CLOSE_PROTOCOL_ERROR, "reader used after an error");
    if (r->delivered) {
        /* The previous message's slice expires now; idle readers stay small. */
        r->delivered = 0;
        r->msg_len = 0;
        if (r->msg_cap > CG_WS_KEEP) {
            free(r->msg);
            r->msg = NULL;
            r->msg_cap = 0;
        }
    }
    while (pos < len) {
        if (r->state == CG_RD_HEAD) {
            size_t take = r->hneed - r->hlen;
            if (take > len - pos)
                take = len - pos;
            memcpy(r->hdr + r->hlen, in + pos, take);
            r->hlen += (unsigned)take;
            pos += take;
            if (r->hlen < r->hneed)
                continue;
            if (r->hneed == 2) {
                if (cg_head_first(r, ev))
                    break;
                continue;
            }
            if (cg_head_done(r, ev))
                break;
        } else {
            size_t n = len - pos;
            if ((uint64_t)n > r->remaining)
                n = (size_t)r->remaining;
            if (n && cg_payload(r, in + pos, n, ev))
                break;
            pos += n;
        }
        if (r->state == CG_RD_PAYLOAD && r->remaining == 0 && cg_frame_done(r, ev))
            break;
    }
    *consumed = pos;
    return ev->type;
}

/* ---- writer ------------------------------------------------------------- */

size_t cg_ws_frame_header(unsigned char out[10], int fin, int rsv1, int opcode, uint64_t len)
{
    out[0] = (unsigned char)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    return 10;
}

int cg_ws_close_frame(cg_buf *out, int code, const char *reason, size_t reason_len)
{
    unsigned char f[2 + 125];
    size_t n = 0;
    if (code) {
        /* Cut the reason to 123 bytes, backing off continuation bytes so the
         * cut falls on a character boundary. */
        if (reason_len > 123) {
            reason_len = 123;
            while (reason_len > 0 && ((unsigned char)reason[reason_len] & 0xC0) == 0x80)
                reason_len--;
        }
        f[2] = (unsigned char)(code >> 8);
        f[3] = (unsigned char)code;
        if (reason_len)
            memcpy(f + 4, reason, reason_len);
        n = 2 + reason_len;
    }
    f[0] = 0x80 | CG_WS_OP_CLOSE;
    f[1] = (unsigned char)n;
    return cg_buf_append(out, f, 2 + n);
}

struct cg_ws_deflater {
    int ready;      /* zlib state initialised (lazily: idle connections stay small) */
    int reset_each; /* server_no_context_takeover */
    int wbits;
    z_stream z;
};

cg_ws_deflater *cg_ws_deflater_new(const cg_ws_deflate_params *p)
{
    cg_ws_deflater *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->reset_each = p && p->server_no_context_takeover;
    /* zlib has no 256-byte raw window: 9 is used for 8. Its matches reach
     * at most 512 - 262 bytes back, so a peer with a 256-byte window decodes
     * the output. */
    int wb = p && p->enabled ? p->server_max_window_bits : 15;
    d->wbits = wb < 9 ? 9 : wb > 15 ? 15 : wb;
    return d;
}

void cg_ws_deflater_free(cg_ws_deflater *d)
{
    if (!d)
        return;
    if (d->ready)
        deflateEnd(&d->z);
    free(d);
}

/* Appends the frame for an uncompressed message. */
static int cg_write_plain(cg_buf *out, int opcode, const char *data, size_t len)
{
    unsigned char h[10];
    size_t hl = cg_ws_frame_header(h, 1, 0, opcode, len);
    if (len > SIZE_MAX - hl || cg_buf_reserve(out, hl + len) < 0)
        return -1;
    memcpy(out->data + out->len, h, hl);
    if (len)
        memcpy(out->data + out->len + hl, data, len);
    out->len += hl + len;
    return 0;
}

/* Header length for a payload of n bytes. */
static size_t cg_header_len(uint64_t n)
{
    return n < 126 ? 2 : n <= 0xffff ? 4 : 10;
}

int cg_ws_write_message(cg_buf *out, cg_ws_deflater *d, int opcode, const char *data, size_t len)
{
    /* Control frames are never compressed (RFC 7692 section 6.1). */
    if (!d || (opcode & 0x08))
        return cg_write_plain(out, opcode, data, len);
    if (len == 0) {
        /* An empty message compresses to one 0x00 byte (RFC 7692 7.2.3.6). */
        unsigned char f[3] = {(unsigned char)(0xC0 | (opcode & 0x0f)), 1, 0};
        return cg_buf_append(out, f, 3);
    }
    if (!d->ready) {
        memset(&d->z, 0, sizeof(d->z));
        if (deflateInit2(&d->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -d->wbits, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        d->ready = 1;
    }
    /* Everything written goes past out->len and is committed as it is made,
     * so that a compaction by cg_buf_reserve keeps it; `keep` (unread bytes
     * before this message) locates the message start after a compaction. */
    size_t keep = cg_buf_unread(out);
    size_t bound = deflateBound(&d->z, (uLong)len) + 16;
    size_t hguess = cg_header_len(bound);
    int rc = -1;
    if (cg_buf_reserve(out, hguess + bound) < 0)
        goto fail;
    out->len += hguess;
    d->z.next_in = (unsigned char *)data;
    size_t left = len;
    for (;;) {
        size_t in_now = left > UINT_MAX ? UINT_MAX : left;
        d->z.avail_in = (uInt)in_now;
        if (out->cap == out->len && cg_buf_reserve(out, bound < 4096 ? 4096 : bound) < 0)
            goto fail;
        size_t space = out->cap - out->len;
        if (space > UINT_MAX)
            space = UINT_MAX;
        d->z.next_out = (unsigned char *)out->data + out->len;
        d->z.avail_out = (uInt)space;
        int zrc = deflate(&d->z, left > in_now ? Z_NO_FLUSH : Z_SYNC_FLUSH);
        out->len += space - d->z.avail_out;
        left -= in_now - d->z.avail_in;
        if (zrc != Z_OK && zrc != Z_BUF_ERROR)
            goto fail;
        if (left == 0 && d->z.avail_out != 0)
            break;
    }
    size_t start = out->pos + keep;
    size_t clen = out->len - start - hguess;
    const unsigned char *end = (const unsigned char *)out->data + out->len;
    if (clen < 4 || memcmp(end - 4, "\x00\x00\xff\xff", 4) != 0)
        goto fail;
    clen -= 4;
    unsigned char h[10];
    size_t hl = cg_ws_frame_header(h, 1, 1, opcode, clen);
    if (hl > hguess) {
        /* Only if zlib exceeded its bound: make room for the longer header. */
        if (cg_buf_reserve(out, hl - hguess) < 0)
            goto fail;
        start = out->pos + keep;
    }
    if (hl != hguess)
        memmove(out->data + start + hl, out->data + start + hguess, clen);
    memcpy(out->data + start, h, hl);
    out->len = start + hl + clen;
    if (d->reset_each && deflateReset(&d->z) != Z_OK) {
        /* A fresh stream on the next message is what a reset gives. */
        deflateEnd(&d->z);
        d->ready = 0;
    }
    return 0;
fail:
    out->len = out->pos + keep;
    /* The stream is unusable after a partial message; start over so later
     * calls do not build on it (the connection is closed by the caller). */
    deflateReset(&d->z);
    return rc;
}
