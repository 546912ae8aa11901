/* Unit tests of the HTTP/2 server connection (h2.c). nghttp2's own client
 * session talks to a cg_h2 in memory; what a client session cannot send (a
 * wrong preface, empty DATA frames, invalid WINDOW_UPDATEs) is built by hand,
 * header blocks with nghttp2's HPACK encoder. The app side records every
 * event; the client side records every frame it gets. Client bytes reach the
 * server whole, and in some tests one byte at a time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "guard.h"
#include "h2.h"
#include "hdrtab.h"
#include "tap.h"

#define MAXREQ 64
#define SL(s) (int)(s).len, (s).base

static const cg_http1_limits deflim = {8190, 8190, 100};

/* ---- the server: a cg_h2 and an app recording its events ---------------- */

typedef struct srv srv;

typedef struct sreq {
    srv *sv;
    int32_t id;
    char head[4096]; /* the request head as text (fmt_head) */
    cg_buf body;
    cg_buf cookie; /* the cookie field's value, whole */
    int pieces, body_end, closed, drained;
    uint32_t close_code;
    size_t last_queued;
    size_t unsent; /* on_close's: queued body bytes never framed */
} sreq;

struct srv {
    cg_h2 *h;
    cg_buf out;  /* frames produced, not delivered yet */
    cg_buf wire; /* every byte produced */
    sreq reqs[MAXREQ];
    int nreqs;
    int requests;     /* on_request calls */
    int refuse;       /* on_request returns NULL */
    int auto_consume; /* body bytes are consumed as they come */
    int late;         /* events after on_close, or not matching the state */
    int bad_token;    /* a header whose token is not its name's */
    int failed;       /* cg_h2_recv returned -1 */
    int send_failed;
    int refused, refused_status; /* on_refused calls, the latest status */
    int retained, released;      /* owners of borrowed bytes: retain/release calls */
    int bad_release;             /* a release of an owner not retained */
    void (*on_req)(srv *, sreq *);
};

/* An owner of borrowed bytes, as the layer above would pass a bytes object. */
typedef struct owner {
    int refs;
} owner;

/* The request head as one line of its parts, then a line per field. */
static void fmt_head(char *o, size_t cap, const cg_h2_request *r)
{
    const cg_http1_request *q = &r->head;
    int n = snprintf(o, cap,
                     "%.*s %.*s path=%.*s query=%.*s authority=%.*s form=%d v=%d cl=%lld "
                     "expect=%d te=%d end=%d proto=%.*s\n",
                     SL(q->method), SL(q->target), SL(q->path), SL(q->query), SL(q->authority),
                     q->target_form, q->version, q->content_length, q->expect_continue,
                     r->te_trailers, r->end_stream, SL(r->protocol));
    for (size_t i = 0; i < q->num_headers && n > 0 && (size_t)n < cap; i++)
        n += snprintf(o + n, cap - (size_t)n, "%.*s: %.*s\n", SL(q->headers[i].name),
                      SL(q->headers[i].value));
}

static sreq *req_of(srv *sv, int32_t id)
{
    for (int i = 0; i < sv->nreqs; i++)
        if (sv->reqs[i].id == id)
            return &sv->reqs[i];
    return NULL;
}

static void *ev_request(void *ctx, int32_t id, const cg_h2_request *r)
{
    srv *sv = ctx;
    sv->requests++;
    if (sv->refuse || sv->nreqs == MAXREQ)
        return NULL;
    sreq *q = &sv->reqs[sv->nreqs++];
    memset(q, 0, sizeof(*q));
    q->sv = sv;
    q->id = id;
    cg_buf_init(&q->body);
    cg_buf_init(&q->cookie);
    fmt_head(q->head, sizeof(q->head), r);
    for (size_t i = 0; i < r->head.num_headers; i++) {
        const cg_http1_header *f = &r->head.headers[i];
        if (f->token != cg_hdr_lookup(f->name.base, f->name.len))
            sv->bad_token++;
        if (f->token == CG_HDR_COOKIE)
            cg_buf_append(&q->cookie, f->value.base, f->value.len);
    }
    if (sv->on_req)
        sv->on_req(sv, q);
    return q;
}

static void ev_body(void *ctx, void *stream, const char *data, size_t len)
{
    srv *sv = ctx;
    sreq *q = stream;
    if (q->closed || q->body_end)
        sv->late++;
    cg_buf_append(&q->body, data, len);
    q->pieces++;
    if (sv->auto_consume)
        cg_h2_consume(sv->h, q->id, len);
}

static void ev_body_end(void *ctx, void *stream)
{
    srv *sv = ctx;
    sreq *q = stream;
    if (q->closed)
        sv->late++;
    q->body_end++;
}

static void ev_drained(void *ctx, void *stream, size_t queued)
{
    srv *sv = ctx;
    sreq *q = stream;
    if (q->closed || queued != cg_h2_queued(sv->h, q->id))
        sv->late++;
    q->drained++;
    q->last_queued = queued;
}

static void ev_close(void *ctx, void *stream, uint32_t code, size_t unsent)
{
    srv *sv = ctx;
    sreq *q = stream;
    if (q->closed)
        sv->late++;
    q->closed++;
    q->close_code = code;
    q->unsent = unsent;
}

static void ev_refused(void *ctx, int status)
{
    srv *sv = ctx;
    sv->refused++;
    sv->refused_status = status;
}

static void ev_retain(void *ctx, void *o)
{
    srv *sv = ctx;
    sv->retained++;
    ((owner *)o)->refs++;
}

static void ev_release(void *ctx, void *o)
{
    srv *sv = ctx;
    sv->released++;
    if (((owner *)o)->refs-- <= 0)
        sv->bad_release++;
}

static const cg_h2_events events = {ev_request, ev_body,    ev_body_end, ev_drained,
                                    ev_close,   ev_refused, ev_retain,   ev_release};

static void srv_init(srv *sv, const cg_h2_config *cfg, const cg_http1_limits *lim)
{
    cg_h2_config def;
    if (!cfg) {
        cg_h2_config_default(&def);
        cfg = &def;
    }
    memset(sv, 0, sizeof(*sv));
    sv->h = cg_h2_new(cfg, lim ? lim : &deflim, &events, sv);
    if (!sv->h) {
        printf("Bail out! cg_h2_new failed\n");
        exit(1);
    }
    cg_buf_init(&sv->out);
    cg_buf_init(&sv->wire);
}

static void srv_free(srv *sv)
{
    cg_h2_free(sv->h);
    sv->h = NULL;
    cg_buf_free(&sv->out);
    cg_buf_free(&sv->wire);
    for (int i = 0; i < sv->nreqs; i++) {
        cg_buf_free(&sv->reqs[i].body);
        cg_buf_free(&sv->reqs[i].cookie);
    }
}

/* Received bytes in pieces of `split` (0: at once); nothing more is read
 * once cg_h2_recv failed (the connection is ending). */
static void srv_feed(srv *sv, const char *p, size_t n, size_t split)
{
    for (size_t off = 0; off < n && !sv->failed;) {
        size_t k = split && split < n - off ? split : n - off;
        if (cg_h2_recv(sv->h, p + off, k) < 0)
            sv->failed = 1;
        off += k;
    }
}

/* Frames the server has ready (about `max` bytes at most); returns how many bytes. */
static size_t srv_produce(srv *sv, size_t max)
{
    size_t before = sv->out.len;
    if (cg_h2_send(sv->h, &sv->out, max) < 0)
        sv->send_failed++;
    cg_buf_append(&sv->wire, sv->out.data + before, sv->out.len - before);
    return sv->out.len - before;
}

/* ---- frames on the wire -------------------------------------------------- */

typedef struct rframe {
    uint32_t len;
    uint8_t type, flags;
    int32_t sid;
    const uint8_t *p;
} rframe;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The frame at *pos of a buffer of whole frames; 0 at its end. */
static int next_frame(const cg_buf *w, size_t *pos, rframe *f)
{
    const uint8_t *p = (const uint8_t *)w->data + *pos;
    if (*pos + 9 > w->len)
        return 0;
    f->len = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
    f->type = p[3];
    f->flags = p[4];
    f->sid = (int32_t)(be32(p + 5) & 0x7fffffff);
    f->p = p + 9;
    if (*pos + 9 + f->len > w->len)
        return 0;
    *pos += 9 + f->len;
    return 1;
}

/* Frames of `type` on stream `sid` (-1: any) in the server's output. */
static int count_frames(const srv *sv, int type, int32_t sid)
{
    size_t pos = 0;
    rframe f;
    int n = 0;
    while (next_frame(&sv->wire, &pos, &f))
        if (f.type == type && (sid < 0 || f.sid == sid))
            n++;
    return n;
}

/* The server's last GOAWAY: 1 and its fields, or 0. */
static int server_goaway(const srv *sv, int32_t *last, uint32_t *code)
{
    size_t pos = 0;
    rframe f;
    int found = 0;
    while (next_frame(&sv->wire, &pos, &f))
        if (f.type == NGHTTP2_GOAWAY && f.len >= 8) {
            *last = (int32_t)(be32(f.p) & 0x7fffffff);
            *code = be32(f.p + 4);
            found = 1;
        }
    return found;
}

static void put_frame(cg_buf *b, uint8_t type, uint8_t flags, int32_t sid, const void *payload,
                      size_t len)
{
    uint8_t h[9] = {
        (uint8_t)(len >> 16), (uint8_t)(len >> 8),  (uint8_t)len,        type,        flags,
        (uint8_t)(sid >> 24), (uint8_t)(sid >> 16), (uint8_t)(sid >> 8), (uint8_t)sid};
    cg_buf_append(b, h, 9);
    cg_buf_append(b, payload, len);
}

/* `pairs`: name, value, ..., NULL. */
static size_t make_nva(nghttp2_nv *nva, size_t cap, const char *const *pairs)
{
    size_t n = 0;
    for (; pairs[2 * n] && n < cap; n++) {
        nva[n].name = (uint8_t *)pairs[2 * n];
        nva[n].namelen = strlen(pairs[2 * n]);
        nva[n].value = (uint8_t *)pairs[2 * n + 1];
        nva[n].valuelen = strlen(pairs[2 * n + 1]);
        nva[n].flags = NGHTTP2_NV_FLAG_NONE;
    }
    return n;
}

/* A HEADERS frame (END_HEADERS) with the pairs HPACK-encoded. */
static void put_headers(cg_buf *b, nghttp2_hd_deflater *d, int32_t sid, int end_stream,
                        const char *const *pairs)
{
    nghttp2_nv nva[32];
    uint8_t block[4096];
    size_t n = make_nva(nva, 32, pairs);
    ssize_t k = nghttp2_hd_deflate_hd(d, block, sizeof(block), nva, n);
    if (k < 0) {
        printf("Bail out! HPACK: %s\n", nghttp2_strerror((int)k));
        exit(1);
    }
    put_frame(b, NGHTTP2_HEADERS,
              NGHTTP2_FLAG_END_HEADERS | (end_stream ? NGHTTP2_FLAG_END_STREAM : 0), sid, block,
              (size_t)k);
}

static const char *const get_root[] = {":method", "GET",        ":scheme", "https", ":path",
                                       "/",       ":authority", "x.test",  NULL};
static const char *const post_root[] = {":method", "POST",       ":scheme", "https", ":path",
                                        "/",       ":authority", "x.test",  NULL};

/* ---- the client: nghttp2's client session, recording what comes -------- */

typedef struct cstream {
    int32_t id;
    cg_buf heads; /* per header block "--\n", then "name: value\n" lines */
    cg_buf data;
    int end_stream, closed, data_frames;
    uint32_t close_code;
} cstream;

typedef struct cli {
    nghttp2_session *s;
    cstream st[MAXREQ];
    int nst;
    nghttp2_settings_entry iv[16];
    size_t niv;
    int settings; /* SETTINGS frames (not ACKs) received */
    int goaways;
    uint32_t goaway_code;
    int32_t goaway_last;
    int window_updates[2]; /* on the connection, on streams */
    int rst;
    int failed; /* mem_recv failed: the server sent something wrong */
} cli;

static cstream *cst(cli *c, int32_t id)
{
    for (int i = 0; i < c->nst; i++)
        if (c->st[i].id == id)
            return &c->st[i];
    if (c->nst == MAXREQ || id <= 0)
        return NULL;
    cstream *x = &c->st[c->nst++];
    memset(x, 0, sizeof(*x));
    x->id = id;
    cg_buf_init(&x->heads);
    cg_buf_init(&x->data);
    return x;
}

static int c_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    cstream *x = cst(ud, f->hd.stream_id);
    (void)s;
    if (x)
        cg_buf_append(&x->heads, "--\n", 3);
    return 0;
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                    const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    cstream *x = cst(ud, f->hd.stream_id);
    (void)s;
    (void)flags;
    if (x) {
        cg_buf_append(&x->heads, name, nlen);
        cg_buf_append(&x->heads, ": ", 2);
        cg_buf_append(&x->heads, value, vlen);
        cg_buf_append(&x->heads, "\n", 1);
    }
    return 0;
}

static int c_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    cli *c = ud;
    cstream *x;
    (void)s;
    switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            c->settings++;
            c->niv = f->settings.niv < 16 ? f->settings.niv : 16;
            memcpy(c->iv, f->settings.iv, c->niv * sizeof(c->iv[0]));
        }
        break;
    case NGHTTP2_GOAWAY:
        c->goaways++;
        c->goaway_code = f->goaway.error_code;
        c->goaway_last = f->goaway.last_stream_id;
        break;
    case NGHTTP2_WINDOW_UPDATE:
        c->window_updates[f->hd.stream_id != 0]++;
        break;
    case NGHTTP2_RST_STREAM:
        c->rst++;
        break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        x = cst(c, f->hd.stream_id);
        if (x && f->hd.type == NGHTTP2_DATA)
            x->data_frames++;
        if (x && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            x->end_stream++;
        break;
    }
    return 0;
}

static int c_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                  void *ud)
{
    cstream *x = cst(ud, id);
    (void)s;
    (void)flags;
    if (x)
        cg_buf_append(&x->data, data, len);
    return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    cstream *x = cst(ud, id);
    (void)s;
    if (x) {
        x->closed++;
        x->close_code = code;
    }
    return 0;
}

/* `stingy`: the client never reopens its receive windows; `block`: the
 * largest header block it sends (0: nghttp2's 64 KiB). */
static void cli_init2(cli *c, int stingy, size_t block)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    memset(c, 0, sizeof(*c));
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, stingy);
    if (block)
        nghttp2_option_set_max_send_header_block_length(opt, block);
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, c_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, c_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, c_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, c_close);
    if (nghttp2_session_client_new2(&c->s, cbs, c, opt) != 0) {
        printf("Bail out! nghttp2_session_client_new failed\n");
        exit(1);
    }
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0);
}

static void cli_init(cli *c)
{
    cli_init2(c, 0, 0);
}

static void cli_free(cli *c)
{
    nghttp2_session_del(c->s);
    for (int i = 0; i < c->nst; i++) {
        cg_buf_free(&c->st[i].heads);
        cg_buf_free(&c->st[i].data);
    }
}

/* A request body the client sends as its window allows. */
typedef struct body_src {
    const char *p;
    size_t len, off;
} body_src;

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    body_src *b = src->ptr;
    size_t n = b->len - b->off < length ? b->len - b->off : length;
    (void)s;
    (void)id;
    (void)ud;
    memcpy(buf, b->p + b->off, n);
    b->off += n;
    if (b->off == b->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int32_t cli_request(cli *c, const char *const *pairs, body_src *body)
{
    nghttp2_nv nva[64];
    size_t n = make_nva(nva, 64, pairs);
    nghttp2_data_provider prd;
    prd.source.ptr = body;
    prd.read_callback = body_read;
    return nghttp2_submit_request(c->s, NULL, nva, n, body ? &prd : NULL, NULL);
}

/* Client output to the server (pieces of `split`); 1 when bytes moved. */
static int cli_to_srv(cli *c, srv *sv, size_t split)
{
    int moved = 0;
    for (;;) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->s, &p);
        if (n <= 0)
            break;
        srv_feed(sv, (const char *)p, (size_t)n, split);
        moved = 1;
    }
    return moved;
}

/* Server output produced so far to the client; 1 when bytes moved. */
static int srv_to_cli(cli *c, srv *sv)
{
    if (sv->out.len == 0)
        return 0;
    if (nghttp2_session_mem_recv(c->s, (const uint8_t *)sv->out.data, sv->out.len) < 0)
        c->failed = 1;
    cg_buf_reset(&sv->out);
    return 1;
}

/* Bytes both ways until nothing moves. */
static void pump_split(cli *c, srv *sv, size_t split)
{
    for (int round = 0; round < 10000; round++) {
        int moved = cli_to_srv(c, sv, split);
        srv_produce(sv, SIZE_MAX);
        moved |= srv_to_cli(c, sv);
        if (!moved)
            break;
    }
}

static void pump(cli *c, srv *sv)
{
    pump_split(c, sv, 0);
}

static int heads_are(cstream *x, const char *want)
{
    if (x && x->heads.len == strlen(want) && memcmp(x->heads.data, want, x->heads.len) == 0)
        return 1;
    printf("# heads: %.*s\n# want:  %s\n", x ? (int)x->heads.len : 4, x ? x->heads.data : "none",
           want);
    return 0;
}

static int head_is(const sreq *q, const char *want)
{
    if (q && strcmp(q->head, want) == 0)
        return 1;
    printf("# head: %s\n# want: %s\n", q ? q->head : "none", want);
    return 0;
}

static int bytes_are(const cg_buf *b, const char *p, size_t n)
{
    return b->len == n && (n == 0 || memcmp(b->data, p, n) == 0);
}

static void fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((seed + i) * 2654435761u >> 13);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_preface_prefix(void)
{
    guard g;
    char buf[64];
    int all = 1, wrong = 1;
    for (size_t n = 0; n <= CG_H2_PREFACE_LEN; n++) {
        const char *p = guard_put(&g, CG_H2_PREFACE, n);
        all &= cg_h2_preface_prefix(p, n) == 1;
        guard_free(&g);
        for (size_t k = 0; k < n; k++) {
            memcpy(buf, CG_H2_PREFACE, n);
            buf[k] ^= 0x20;
            p = guard_put(&g, buf, n);
            wrong &= cg_h2_preface_prefix(p, n) == 0;
            guard_free(&g);
        }
    }
    ok(all, "preface: every prefix of the preface (0..24 bytes) may be it");
    ok(wrong, "preface: any prefix with a byte changed cannot be");
    memcpy(buf, CG_H2_PREFACE "\x00\x00\x00\x04", CG_H2_PREFACE_LEN + 4);
    const char *p = guard_put(&g, buf, CG_H2_PREFACE_LEN + 4);
    ok(cg_h2_preface_prefix(p, CG_H2_PREFACE_LEN + 4) == 1, "preface: followed by a frame");
    guard_free(&g);
    p = guard_put(&g, "GET / HTTP/1.1\r\n", 16);
    ok(cg_h2_preface_prefix(p, 16) == 0 && cg_h2_preface_prefix(p, 1) == 0,
       "preface: an HTTP/1.1 request line is not");
    guard_free(&g);
    p = guard_put(&g, "PRI * HTTP/1.1\r\n", 16);
    ok(cg_h2_preface_prefix(p, 9) == 1 && cg_h2_preface_prefix(p, 16) == 0,
       "preface: PRI * HTTP/1.1 differs only from byte 9 on");
    guard_free(&g);
}

static uint32_t setting(const cli *c, int id, int *present)
{
    *present = 0;
    for (size_t i = 0; i < c->niv; i++)
        if (c->iv[i].settings_id == id) {
            *present = 1;
            return c->iv[i].value;
        }
    return 0;
}

static void test_settings(void)
{
    for (int connect = 0; connect <= 1; connect++) {
        cg_h2_config cfg;
        cli c;
        srv sv;
        int has;
        cg_h2_config_default(&cfg);
        cfg.max_concurrent_streams = 7;
        cfg.initial_window_size = 1000;
        cfg.max_header_list_size = 5000;
        cfg.connection_window_size = 1 << 20;
        cfg.enable_connect_protocol = (unsigned)connect;
        srv_init(&sv, &cfg, NULL);
        cli_init(&c);
        ok(cg_h2_want_write(sv.h), "settings: queued before any byte arrives");
        pump(&c, &sv);
        ok(c.settings == 1 && !c.failed && !sv.failed, "settings (connect %d): one SETTINGS frame",
           connect);
        ok(setting(&c, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, &has) == 7 && has,
           "settings (connect %d): max concurrent streams 7", connect);
        ok(setting(&c, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, &has) == 1000 && has,
           "settings (connect %d): initial window 1000", connect);
        ok(setting(&c, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, &has) == 5000 && has,
           "settings (connect %d): max header list size 5000", connect);
        uint32_t v = setting(&c, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, &has);
        ok(connect ? has && v == 1 : !has, "settings: ENABLE_CONNECT_PROTOCOL %s",
           connect ? "1" : "absent");
        ok(c.niv == (size_t)(3 + connect), "settings (connect %d): nothing else (%zu entries)",
           connect, c.niv);
        ok(nghttp2_session_get_remote_window_size(c.s) == 1 << 20 && c.window_updates[0] == 1,
           "settings (connect %d): the connection window opened to 1 MiB", connect);
        ok(count_frames(&sv, NGHTTP2_SETTINGS, 0) == 2, "settings (connect %d): the client's ACKed",
           connect);
        ok(!cg_h2_want_write(sv.h) && !cg_h2_done(sv.h) && cg_h2_open_streams(sv.h) == 0,
           "settings (connect %d): idle afterwards, not done", connect);
        cli_free(&c);
        srv_free(&sv);
    }
    /* The default connection window (65,535) needs no WINDOW_UPDATE. */
    cg_h2_config cfg;
    cli c;
    srv sv;
    cg_h2_config_default(&cfg);
    cfg.connection_window_size = 65535;
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    pump(&c, &sv);
    ok(c.window_updates[0] == 0 && nghttp2_session_get_remote_window_size(c.s) == 65535,
       "settings: a 65,535-byte connection window sends no WINDOW_UPDATE");
    cli_free(&c);
    srv_free(&sv);
}

static void respond_hello(srv *sv, sreq *q)
{
    cg_fields f;
    static const char lines[] = "server: casgi\r\ndate: Thu, 03 Dec 2026 13:50:31 GMT\r\n"
                                "Connection: keep-alive\r\nX-Line: \t padded \t\r\n";
    cg_fields_init(&f);
    cg_fields_add(&f, "Content-Type", 12, "text/plain", 10);
    cg_fields_add(&f, "Connection", 10, "close", 5);
    cg_fields_add(&f, "X-A", 3, "1", 1);
    cg_fields_add(&f, "Transfer-Encoding", 17, "chunked", 7);
    cg_fields_add(&f, "keep-alive", 10, "timeout=5", 9);
    cg_fields_add(&f, "Proxy-Connection", 16, "x", 1);
    cg_fields_add(&f, "UPGRADE", 7, "h2c", 3);
    cg_fields_add(&f, "x-empty", 7, "", 0);
    if (cg_h2_submit_head(sv->h, q->id, 200, &f, lines, sizeof(lines) - 1, 0) < 0 ||
        cg_h2_write(sv->h, q->id, "hello ", 6, NULL, 0) < 0 ||
        cg_h2_write(sv->h, q->id, "world", 5, NULL, 1) < 0)
        sv->late++;
    cg_fields_free(&f);
}

/* A GET through the whole path, its bytes delivered in pieces of `split`. */
static void test_get(size_t split)
{
    cli c;
    srv sv;
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    sv.on_req = respond_hello;
    static const char *const req[] = {
        ":method",      "GET",           ":scheme", "https",      ":path",
        "/a/b?x=1&y=2", ":authority",    "ex.com",  "user-agent", "t/1",
        "host",         "other.example", "cookie",  "a=1",        "accept",
        "*/*",          "cookie",        "b=2",     "te",         "trailers",
        "expect",       "100-continue",  "cookie",  "c=3",        NULL};
    int32_t id = cli_request(&c, req, NULL);
    pump_split(&c, &sv, split);
    ok(sv.requests == 1 && sv.nreqs == 1 && !sv.failed && !c.failed,
       "get/%zu: one on_request, no failure", split);
    ok(head_is(&sv.reqs[0], "GET /a/b?x=1&y=2 path=/a/b query=x=1&y=2 authority=ex.com form=0 v=2 "
                            "cl=-1 expect=1 te=1 end=1 proto=\n"
                            "host: ex.com\n"
                            "user-agent: t/1\n"
                            "cookie: a=1; b=2; c=3\n"
                            "accept: */*\n"
                            "te: trailers\n"
                            "expect: 100-continue\n"),
       "get/%zu: the request head (host from :authority first, host field dropped, cookies "
       "joined at the first's place)",
       split);
    ok(sv.reqs[0].id == id && sv.bad_token == 0, "get/%zu: stream id %d, header tokens", split, id);
    cstream *x = cst(&c, id);
    ok(heads_are(x, "--\n:status: 200\ncontent-type: text/plain\nx-a: 1\nx-empty: \n"
                    "server: casgi\ndate: Thu, 03 Dec 2026 13:50:31 GMT\nx-line: padded\n"),
       "get/%zu: the response head (names lowercased, connection-specific fields dropped, "
       "lines parsed)",
       split);
    ok(x && bytes_are(&x->data, "hello world", 11) && x->end_stream == 1,
       "get/%zu: the body byte-exact, then END_STREAM", split);
    ok(x && x->closed == 1 && x->close_code == 0, "get/%zu: the client's stream closed cleanly",
       split);
    ok(sv.reqs[0].closed == 1 && sv.reqs[0].close_code == 0 && sv.reqs[0].pieces == 0 &&
           sv.reqs[0].body_end == 0 && sv.late == 0,
       "get/%zu: on_close(0), no body events", split);
    ok(cg_h2_open_streams(sv.h) == 0 && !cg_h2_want_write(sv.h) && sv.send_failed == 0,
       "get/%zu: nothing open, nothing to send", split);
    ok(cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, CG_H2_END_STREAM) == -1 &&
           cg_h2_write(sv.h, id, "x", 1, NULL, 1) == -1 && cg_h2_queued(sv.h, id) == 0,
       "get/%zu: a closed stream takes nothing", split);
    cli_free(&c);
    srv_free(&sv);
}

static void respond_204(srv *sv, sreq *q)
{
    if (cg_h2_submit_head(sv->h, q->id, 204, NULL, NULL, 0, CG_H2_END_STREAM) < 0)
        sv->late++;
}

static void test_forms(void)
{
    cg_h2_config cfg;
    cli c;
    srv sv;
    cg_h2_config_default(&cfg);
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    sv.on_req = respond_204;
    static const char *const connect[] = {":method", "CONNECT", ":authority", "ex.com:443", NULL};
    static const char *const ws[] = {":method",
                                     "CONNECT",
                                     ":protocol",
                                     "websocket",
                                     ":scheme",
                                     "https",
                                     ":path",
                                     "/chat?room=1",
                                     ":authority",
                                     "ex.com",
                                     "sec-websocket-version",
                                     "13",
                                     NULL};
    static const char *const star[] = {":method", "OPTIONS",    ":scheme", "https", ":path",
                                       "*",       ":authority", "ex.com",  NULL};
    static const char *const nohost[] = {":method", "GET",  ":scheme",   "http", ":path",
                                         "/q?",     "host", "h.example", NULL};
    static const char *const cl[] = {":method",    "GET",    ":scheme",        "http", ":path", "/",
                                     ":authority", "ex.com", "content-length", "0",    NULL};
    int32_t ids[5];
    ids[0] = cli_request(&c, connect, NULL);
    ids[1] = cli_request(&c, ws, NULL);
    ids[2] = cli_request(&c, star, NULL);
    ids[3] = cli_request(&c, nohost, NULL);
    ids[4] = cli_request(&c, cl, NULL);
    pump(&c, &sv);
    ok(sv.nreqs == 5, "forms: five requests");
    ok(head_is(req_of(&sv, ids[0]),
               "CONNECT ex.com:443 path=ex.com:443 query= authority=ex.com:443 "
               "form=2 v=2 cl=-1 expect=0 te=0 end=1 proto=\n"
               "host: ex.com:443\n"),
       "forms: CONNECT without :protocol is authority-form, its target the authority");
    ok(head_is(req_of(&sv, ids[1]), "CONNECT /chat?room=1 path=/chat query=room=1 authority=ex.com "
                                    "form=0 v=2 cl=-1 expect=0 te=0 end=1 proto=websocket\n"
                                    "host: ex.com\n"
                                    "sec-websocket-version: 13\n"),
       "forms: extended CONNECT keeps its path and names its protocol");
    ok(head_is(req_of(&sv, ids[2]), "OPTIONS * path=* query= authority=ex.com form=3 v=2 cl=-1 "
                                    "expect=0 te=0 end=1 proto=\n"
                                    "host: ex.com\n"),
       "forms: OPTIONS * is asterisk-form");
    ok(head_is(req_of(&sv, ids[3]), "GET /q? path=/q query= authority= form=0 v=2 cl=-1 expect=0 "
                                    "te=0 end=1 proto=\n"
                                    "host: h.example\n"),
       "forms: without :authority the host field stays, the authority is empty");
    ok(head_is(req_of(&sv, ids[4]), "GET / path=/ query= authority=ex.com form=0 v=2 cl=0 expect=0 "
                                    "te=0 end=1 proto=\n"
                                    "host: ex.com\n"
                                    "content-length: 0\n"),
       "forms: content-length 0 parsed");
    int answered = 1;
    for (int i = 0; i < 5; i++)
        answered &= heads_are(cst(&c, ids[i]), "--\n:status: 204\n");
    ok(answered, "forms: each answered 204");
    cli_free(&c);
    srv_free(&sv);

    /* Without ENABLE_CONNECT_PROTOCOL, :protocol is a malformed request. */
    cfg.enable_connect_protocol = 0;
    cfg.glitch_burst = 10;
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    sv.on_req = respond_204;
    int32_t id = cli_request(&c, ws, NULL);
    pump(&c, &sv);
    cstream *x = cst(&c, id);
    ok(sv.requests == 0 && x && x->closed && x->close_code == NGHTTP2_PROTOCOL_ERROR,
       "forms: extended CONNECT while disabled is reset (PROTOCOL_ERROR), never delivered");
    ok(!sv.failed && cg_h2_open_streams(sv.h) == 0, "forms: the connection goes on");
    cli_free(&c);
    srv_free(&sv);
}

static void test_post(size_t split)
{
    cli c;
    srv sv;
    static char body[40000];
    char cl[16];
    fill(body, sizeof(body), 7);
    snprintf(cl, sizeof(cl), "%zu", sizeof(body));
    const char *const req[] = {":method",        "POST",    ":scheme",    "https",
                               ":path",          "/upload", ":authority", "x.test",
                               "content-length", cl,        NULL};
    body_src src = {body, sizeof(body), 0};
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    sv.auto_consume = 1;
    int32_t id = cli_request(&c, req, &src);
    pump_split(&c, &sv, split);
    sreq *q = req_of(&sv, id);
    ok(head_is(q, "POST /upload path=/upload query= authority=x.test form=0 v=2 cl=40000 expect=0 "
                  "te=0 end=0 proto=\n"
                  "host: x.test\n"
                  "content-length: 40000\n"),
       "post/%zu: the head, content-length parsed, end_stream 0", split);
    ok(q && bytes_are(&q->body, body, sizeof(body)) && q->pieces >= 3 && q->body_end == 1,
       "post/%zu: the body in %d on_body pieces, byte-exact, then on_body_end", split,
       q ? q->pieces : 0);
    ok(q && !q->closed && cg_h2_open_streams(sv.h) == 1,
       "post/%zu: the stream stays open until answered", split);
    respond_204(&sv, q);
    pump_split(&c, &sv, split);
    ok(q && q->closed == 1 && q->close_code == 0 && sv.late == 0,
       "post/%zu: answered, closed cleanly", split);
    ok(heads_are(cst(&c, id), "--\n:status: 204\n"), "post/%zu: the client got 204", split);
    cli_free(&c);
    srv_free(&sv);
}

static void test_interim_and_trailers(void)
{
    cli c;
    srv sv;
    cg_fields tr;
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    int32_t id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    ok(cg_h2_trailers(sv.h, id, NULL) == -1, "trailers: refused before a head asked for them");
    ok(cg_h2_write(sv.h, id, "x", 1, NULL, 0) == -1, "write: refused before the head");
    static const char link[] = "link: </style.css>; rel=preload\r\n";
    ok(cg_h2_submit_head(sv.h, id, 100, NULL, NULL, 0, 0) == 0 &&
           cg_h2_submit_head(sv.h, id, 103, NULL, link, sizeof(link) - 1, 0) == 0,
       "interim: 100 and 103 accepted");
    ok(cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, CG_H2_TRAILERS) == 0,
       "final head with CG_H2_TRAILERS");
    ok(cg_h2_submit_head(sv.h, id, 103, NULL, NULL, 0, 0) == -1 &&
           cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, 0) == -1,
       "no head after the final one");
    ok(cg_h2_write(sv.h, id, "abc", 3, NULL, 1) == 0 &&
           cg_h2_write(sv.h, id, "d", 1, NULL, 0) == -1,
       "write: the body ends, nothing after");
    pump(&c, &sv);
    cstream *x = cst(&c, id);
    ok(heads_are(x, "--\n:status: 100\n--\n:status: 103\nlink: </style.css>; rel=preload\n"
                    "--\n:status: 200\n"),
       "interim heads arrive before the final one");
    ok(x && bytes_are(&x->data, "abc", 3) && x->end_stream == 0 && !x->closed,
       "trailers: the body arrives, the stream stays open while they are missing");
    ok(cg_h2_open_streams(sv.h) == 1 && !cg_h2_want_write(sv.h),
       "trailers: nothing to send meanwhile");
    cg_fields_init(&tr);
    cg_fields_add(&tr, "X-Checksum", 10, "900150983cd2", 12);
    cg_fields_add(&tr, "connection", 10, "close", 5);
    cg_fields_add(&tr, "x-more", 6, "2", 1);
    ok(cg_h2_trailers(sv.h, id, &tr) == 0 && cg_h2_trailers(sv.h, id, &tr) == -1,
       "trailers: accepted once");
    cg_fields_free(&tr);
    pump(&c, &sv);
    ok(heads_are(x, "--\n:status: 100\n--\n:status: 103\nlink: </style.css>; rel=preload\n"
                    "--\n:status: 200\n--\nx-checksum: 900150983cd2\nx-more: 2\n"),
       "trailers: lowercased, connection-specific ones dropped");
    ok(x && x->end_stream == 1 && x->closed == 1 && x->close_code == 0 && !c.failed,
       "trailers: END_STREAM on them, the stream closes cleanly");
    ok(sv.reqs[0].closed == 1 && sv.reqs[0].close_code == 0, "trailers: on_close(0)");

    /* Empty trailers, and trailers given before the body ends. */
    id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    ok(cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, CG_H2_TRAILERS) == 0 &&
           cg_h2_trailers(sv.h, id, NULL) == 0 && cg_h2_write(sv.h, id, "xyz", 3, NULL, 1) == 0,
       "trailers: empty ones before the body's end");
    pump(&c, &sv);
    x = cst(&c, id);
    ok(heads_are(x, "--\n:status: 200\n--\n") && x && bytes_are(&x->data, "xyz", 3) &&
           x->end_stream == 1 && x->closed == 1 && x->close_code == 0 && !c.failed,
       "trailers: an empty trailer block ends the stream");

    /* A body without trailers that ends with an empty write. */
    id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    ok(cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, 0) == 0 &&
           cg_h2_write(sv.h, id, "12", 2, NULL, 0) == 0,
       "body: a first piece");
    pump(&c, &sv);
    x = cst(&c, id);
    ok(x && bytes_are(&x->data, "12", 2) && x->end_stream == 0, "body: sent, the stream open");
    ok(cg_h2_write(sv.h, id, NULL, 0, NULL, 1) == 0, "body: an empty write ends it");
    pump(&c, &sv);
    ok(x && x->end_stream == 1 && x->closed == 1 && bytes_are(&x->data, "12", 2),
       "body: END_STREAM on an empty DATA frame");
    ok(sv.late == 0 && sv.send_failed == 0, "trailers: no stray events");
    cli_free(&c);
    srv_free(&sv);
}

static void test_flow_control(void)
{
    cg_h2_config cfg;
    cli c;
    srv sv;
    static char body[3000];
    fill(body, sizeof(body), 3);
    body_src src = {body, sizeof(body), 0};
    cg_h2_config_default(&cfg);
    cfg.initial_window_size = 1000;
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    pump(&c, &sv); /* the client learns the window */
    int32_t id = cli_request(&c, post_root, &src);
    pump(&c, &sv);
    sreq *q = req_of(&sv, id);
    ok(q && q->body.len == 1000 && !q->body_end,
       "flow: a 1000-byte window lets 1000 bytes in (%zu)", q ? q->body.len : 0);
    pump(&c, &sv);
    ok(q && q->body.len == 1000, "flow: and no more while nothing is consumed");
    int wu = count_frames(&sv, NGHTTP2_WINDOW_UPDATE, id);
    cg_h2_consume(sv.h, id, 400);
    pump(&c, &sv);
    ok(count_frames(&sv, NGHTTP2_WINDOW_UPDATE, id) == wu && q->body.len == 1000,
       "flow: 400 bytes consumed: under half the window, no WINDOW_UPDATE yet");
    cg_h2_consume(sv.h, id, 600);
    pump(&c, &sv);
    ok(count_frames(&sv, NGHTTP2_WINDOW_UPDATE, id) == wu + 1 && q->body.len == 2000,
       "flow: 1000 consumed: a WINDOW_UPDATE, 1000 more bytes (%zu)", q->body.len);
    cg_h2_consume(sv.h, id, 5000); /* more than was received: the rest only */
    pump(&c, &sv);
    ok(bytes_are(&q->body, body, sizeof(body)) && q->body_end == 1,
       "flow: consuming the rest lets the whole body in, byte-exact");
    ok(!c.failed && !sv.failed && sv.late == 0, "flow: no error");
    cg_h2_consume(sv.h, id, 1000);
    respond_204(&sv, q);
    pump(&c, &sv);
    ok(q->closed == 1 && q->close_code == 0, "flow: answered and closed");
    cli_free(&c);
    srv_free(&sv);

    /* A stream closed with body bytes its app never took gives them back
     * to the connection's window. */
    static char big[60000];
    fill(big, sizeof(big), 5);
    cg_h2_config_default(&cfg);
    cfg.connection_window_size = 65535;
    cfg.initial_window_size = 65535;
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    pump(&c, &sv);
    int32_t ids[3];
    body_src bs[3];
    for (int i = 0; i < 3; i++) {
        bs[i] = (body_src){big, sizeof(big), 0};
        ids[i] = cli_request(&c, post_root, &bs[i]);
        pump(&c, &sv);
        q = req_of(&sv, ids[i]);
        ok(q && bytes_are(&q->body, big, sizeof(big)) && q->body_end == 1,
           "flow: request %d of 60000 bytes arrives whole over a 65535-byte connection window",
           i + 1);
        if (q)
            respond_204(&sv, q);
        pump(&c, &sv);
        ok(q && q->closed == 1 && cg_h2_open_streams(sv.h) == 0,
           "flow: request %d answered unread, its window returned", i + 1);
    }
    cli_free(&c);
    srv_free(&sv);
}

static void test_drain(void)
{
    cli c;
    srv sv;
    static char body[40000];
    fill(body, sizeof(body), 11);
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    int32_t id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    sreq *q = req_of(&sv, id);
    ok(cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, 0) == 0 &&
           cg_h2_write(sv.h, id, body, sizeof(body), NULL, 1) == 0 &&
           cg_h2_queued(sv.h, id) == sizeof(body),
       "drain: 40000 bytes queued");
    size_t prev = sizeof(body);
    int monotonic = 1, frames = 0;
    while (srv_produce(&sv, 1) > 0) {
        size_t now = cg_h2_queued(sv.h, id);
        monotonic &= now <= prev && (q->drained == 0 || q->last_queued == now);
        prev = now;
        frames++;
    }
    ok(monotonic && prev == 0, "drain: queued shrinks frame by frame to 0");
    ok(q->drained >= 3 && q->last_queued == 0,
       "drain: on_drained on each DATA frame (%d), last with 0", q->drained);
    ok(frames >= 4, "drain: cg_h2_send with max 1 gives a frame at a time (%d calls)", frames);
    srv_to_cli(&c, &sv);
    pump(&c, &sv);
    cstream *x = cst(&c, id);
    ok(x && bytes_are(&x->data, body, sizeof(body)) && x->end_stream == 1,
       "drain: the client has the body byte-exact");
    ok(sv.late == 0, "drain: on_drained agrees with cg_h2_queued");

    /* More than the client's window (65,535): the rest follows its WINDOW_UPDATEs. */
    static char large[200000];
    fill(large, sizeof(large), 13);
    id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, 0);
    for (size_t off = 0; off < sizeof(large); off += 50000)
        cg_h2_write(sv.h, id, large + off, 50000, NULL, off + 50000 == sizeof(large));
    pump(&c, &sv);
    x = cst(&c, id);
    ok(x && bytes_are(&x->data, large, sizeof(large)) && x->end_stream == 1 && x->closed,
       "drain: 200000 bytes in four writes arrive byte-exact past the client's window");
    ok(cg_h2_open_streams(sv.h) == 0 && sv.late == 0, "drain: closed");
    cli_free(&c);
    srv_free(&sv);
}

/* A stream the client resets with body still queued: on_close says how
 * much never left (the access log counts only what was sent). */
static void test_reset_unsent(void)
{
    cli c;
    srv sv;
    static char body[200000];
    fill(body, sizeof(body), 17);
    srv_init(&sv, NULL, NULL);
    cli_init2(&c, 1, 0); /* never reopens its windows: 65,535 bytes get through */
    int32_t id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    sreq *q = req_of(&sv, id);
    ok(q && cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, 0) == 0 &&
           cg_h2_write(sv.h, id, body, sizeof(body), NULL, 1) == 0,
       "unsent: 200000 bytes queued");
    pump(&c, &sv);
    size_t queued = cg_h2_queued(sv.h, id);
    ok(queued == sizeof(body) - 65535, "unsent: the window let 65,535 through (%zu queued)",
       queued);
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    pump(&c, &sv);
    ok(q && q->closed == 1 && q->close_code == NGHTTP2_CANCEL && q->unsent == queued,
       "unsent: on_close(CANCEL) with the %zu bytes never sent", q ? q->unsent : 0);
    cli_free(&c);
    srv_free(&sv);
}

static void test_reset_glitches(void)
{
    cg_h2_config cfg;
    cli c;
    srv sv;
    cg_h2_config_default(&cfg);
    cfg.glitch_burst = 3;
    cfg.glitch_rate = 0;
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    pump(&c, &sv);

    /* Streams answered completely and then reset are no glitch. */
    static char body[100];
    body_src bs[5];
    int clean = 1;
    for (int i = 0; i < 5; i++) {
        bs[i] = (body_src){body, sizeof(body), 0};
        int32_t id = cli_request(&c, post_root, &bs[i]);
        cli_to_srv(&c, &sv, 0);
        sreq *q = req_of(&sv, id);
        if (q)
            respond_204(&sv, q);
        srv_produce(&sv, SIZE_MAX);
        srv_to_cli(&c, &sv);
        nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
        pump(&c, &sv);
        clean &= q && q->closed == 1 && !sv.failed;
    }
    ok(clean && c.goaways == 0, "reset: 5 resets of answered streams (burst 3) are not glitches");

    int before = sv.nreqs;
    sreq *q = NULL;
    for (int i = 0; i < 4; i++) {
        int32_t id = cli_request(&c, get_root, NULL);
        pump(&c, &sv);
        q = req_of(&sv, id);
        nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        pump(&c, &sv);
        if (i < 3) {
            ok(q && q->closed == 1 && q->close_code == NGHTTP2_CANCEL,
               "reset %d: the client's RST_STREAM closes the stream (on_close CANCEL)", i + 1);
            ok(!sv.failed && c.goaways == 0, "reset %d: within the burst of 3", i + 1);
        } else {
            ok(sv.failed && c.goaways == 1 && c.goaway_code == NGHTTP2_ENHANCE_YOUR_CALM &&
                   c.goaway_last == id,
               "reset 4: the connection ends with GOAWAY ENHANCE_YOUR_CALM naming it");
        }
    }
    ok(sv.nreqs == before + 4, "reset: four requests were delivered");
    ok(strcmp(cg_h2_error(sv.h), "too many streams reset by the client") == 0,
       "reset: cg_h2_error says why (%s)", cg_h2_error(sv.h));
    ok(cg_h2_recv(sv.h, "", 0) == -1, "reset: cg_h2_recv fails from then on");
    ok(cg_h2_done(sv.h), "reset: done once the GOAWAY is out");
    ok(sv.late == 0 && sv.send_failed == 0, "reset: no stray events");
    cli_free(&c);
    srv_free(&sv);
    ok(q && q->closed == 1 && q->close_code == NGHTTP2_CANCEL,
       "reset 4: its stream closes with the session (on_close CANCEL)");
}

static char *repeat(char ch, size_t n)
{
    char *p = malloc(n + 1);
    memset(p, ch, n);
    p[n] = '\0';
    return p;
}

static void test_limits(void)
{
    cg_h2_config cfg;
    cg_http1_limits lim = {64, 100, 4};
    cli c;
    srv sv;
    cg_h2_config_default(&cfg);
    cfg.max_header_list_size = 1024;
    srv_init(&sv, &cfg, &lim);
    cli_init(&c);
    sv.on_req = respond_204;
    pump(&c, &sv);
    char *path64 = repeat('p', 64), *path65 = repeat('p', 65);
    path64[0] = path65[0] = '/';
    char *v95 = repeat('v', 95), *v96 = repeat('v', 96); /* "x-f: " + value: 100, 101 */
    char *big = repeat('b', 300);
    const char *const p64[] = {":method", "GET",        ":scheme", "https", ":path",
                               path64,    ":authority", "x.test",  NULL};
    const char *const p65[] = {":method", "GET",        ":scheme", "https", ":path",
                               path65,    ":authority", "x.test",  NULL};
    const char *const f4[] = {":method",    "GET",    ":scheme", "https", ":path", "/",
                              ":authority", "x.test", "a",       "1",     "b",     "2",
                              "c",          "3",      "d",       "4",     NULL};
    const char *const f5[] = {":method", "GET", ":scheme", "https", ":path", "/", ":authority",
                              "x.test",  "a",   "1",       "b",     "2",     "c", "3",
                              "d",       "4",   "e",       "5",     NULL};
    const char *const s100[] = {":method",    "GET",    ":scheme", "https", ":path", "/",
                                ":authority", "x.test", "x-f",     v95,     NULL};
    const char *const s101[] = {":method",    "GET",    ":scheme", "https", ":path", "/",
                                ":authority", "x.test", "x-f",     v96,     NULL};
    /* 3 fields of 300 bytes and the pseudo-headers: 1177 bytes counted as
     * RFC 9113 6.5.2 says (32 more per field), over 1024. */
    const char *const list[] = {":method", "GET",        ":scheme", "https", ":path",
                                "/",       ":authority", "x.test",  "x-1",   big,
                                "x-2",     big,          "x-3",     big,     NULL};
    static const struct {
        int ok;
        int status;
        const char *name;
    } cases[] = {
        {1, 204, ":path of 64 bytes (the limit)"}, {0, 414, ":path of 65 bytes"},
        {1, 204, "4 fields (the limit)"},          {0, 431, "5 fields"},
        {1, 204, "a field of 100 bytes"},          {0, 431, "a field of 101 bytes"},
    };
    const char *const *reqs[] = {p64, p65, f4, f5, s100, s101};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n = sv.requests, refused = sv.refused;
        int32_t id = cli_request(&c, reqs[i], NULL);
        pump(&c, &sv);
        char want[32];
        snprintf(want, sizeof(want), "--\n:status: %d\n", cases[i].status);
        cstream *x = cst(&c, id);
        ok(heads_are(x, want) && x->closed && x->close_code == 0 && sv.requests == n + cases[i].ok,
           "limits: %s: %d%s", cases[i].name, cases[i].status,
           cases[i].ok ? "" : ", never delivered");
        ok(cases[i].ok ? sv.refused == refused
                       : sv.refused == refused + 1 && sv.refused_status == cases[i].status,
           "limits: %s: %s", cases[i].name, cases[i].ok ? "not refused" : "on_refused tells");
    }
    cli_free(&c);
    srv_free(&sv);

    /* The header list limit (1024 bytes, RFC 9113 6.5.2 sizes); field limits wide. */
    cg_http1_limits wide = {8190, 8190, 100};
    srv_init(&sv, &cfg, &wide);
    cli_init(&c);
    sv.on_req = respond_204;
    pump(&c, &sv);
    int32_t id = cli_request(&c, list, NULL);
    pump(&c, &sv);
    ok(heads_are(cst(&c, id), "--\n:status: 431\n") && sv.requests == 0,
       "limits: a header list of 1177 bytes (limit 1024): 431, never delivered");
    /* The pseudo-headers count 172: one more field of 3 + 817 + 32 makes 1024. */
    char *v817 = repeat('v', 817), *v818 = repeat('v', 818);
    const char *const l1024[] = {":method",    "GET",    ":scheme", "https", ":path", "/",
                                 ":authority", "x.test", "x-1",     v817,    NULL};
    const char *const l1025[] = {":method",    "GET",    ":scheme", "https", ":path", "/",
                                 ":authority", "x.test", "x-1",     v818,    NULL};
    id = cli_request(&c, l1024, NULL);
    pump(&c, &sv);
    ok(heads_are(cst(&c, id), "--\n:status: 204\n") && sv.requests == 1,
       "limits: a header list of exactly 1024 bytes is delivered");
    id = cli_request(&c, l1025, NULL);
    pump(&c, &sv);
    ok(heads_are(cst(&c, id), "--\n:status: 431\n") && sv.requests == 1, "limits: 1025 bytes: 431");
    free(v817);
    free(v818);
    /* Refused heads with bodies: the bytes still give the connection's window back. */
    static char body[30000];
    body_src bs[4];
    const char *const list_post[] = {":method", "POST",       ":scheme", "https", ":path",
                                     "/",       ":authority", "x.test",  "x-1",   big,
                                     "x-2",     big,          "x-3",     big,     NULL};
    int all = 1;
    for (int i = 0; i < 4; i++) {
        bs[i] = (body_src){body, sizeof(body), 0};
        id = cli_request(&c, list_post, &bs[i]);
        pump(&c, &sv);
        cstream *x = cst(&c, id);
        all &= heads_are(x, "--\n:status: 431\n") && x->closed == 1 && bs[i].off == sizeof(body);
    }
    ok(all && sv.requests == 1 && cg_h2_open_streams(sv.h) == 0 && !sv.failed,
       "limits: four refused POSTs of 30000 bytes pass a 65535-byte connection window");
    cli_free(&c);
    srv_free(&sv);
    free(path64);
    free(path65);
    free(v95);
    free(v96);
    free(big);
}

static void test_refused(void)
{
    cg_h2_config cfg;
    cli c;
    srv sv;
    cg_h2_config_default(&cfg);
    cfg.glitch_burst = 2;
    cfg.glitch_rate = 0;
    srv_init(&sv, &cfg, NULL);
    cli_init(&c);
    sv.refuse = 1;
    for (int i = 0; i < 3; i++) {
        int32_t id = cli_request(&c, get_root, NULL);
        pump(&c, &sv);
        cstream *x = cst(&c, id);
        if (i < 2)
            ok(x && x->closed && x->close_code == NGHTTP2_REFUSED_STREAM && !sv.failed &&
                   c.goaways == 0 && cg_h2_open_streams(sv.h) == 0,
               "refused %d: on_request NULL: RST_STREAM REFUSED_STREAM", i + 1);
        else
            ok(sv.failed && c.goaways == 1 && c.goaway_code == NGHTTP2_ENHANCE_YOUR_CALM &&
                   strcmp(cg_h2_error(sv.h), "too many refused streams") == 0,
               "refused 3: over the burst of 2: GOAWAY ENHANCE_YOUR_CALM");
    }
    ok(sv.requests == 3 && sv.nreqs == 0, "refused: asked 3 times");
    cli_free(&c);
    srv_free(&sv);
}

/* A connection without a client session: the preface and SETTINGS, then
 * whatever a test appends. */
static void raw_start(cg_buf *b, nghttp2_hd_deflater **d)
{
    cg_buf_init(b);
    cg_buf_append(b, CG_H2_PREFACE, CG_H2_PREFACE_LEN);
    put_frame(b, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    nghttp2_hd_deflate_new(d, 4096);
}

static void test_bad_preface(void)
{
    static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    int32_t last;
    uint32_t code;
    srv sv;
    srv_init(&sv, NULL, NULL);
    ok(cg_h2_recv(sv.h, http1, sizeof(http1) - 1) == -1, "bad preface: cg_h2_recv returns -1");
    ok(strcmp(cg_h2_error(sv.h), "invalid connection preface") == 0, "bad preface: the reason (%s)",
       cg_h2_error(sv.h));
    srv_produce(&sv, SIZE_MAX);
    ok(server_goaway(&sv, &last, &code) && code == NGHTTP2_PROTOCOL_ERROR && last == 0,
       "bad preface: GOAWAY PROTOCOL_ERROR, last stream 0");
    ok(cg_h2_done(sv.h) && !cg_h2_want_write(sv.h), "bad preface: done once it is out");
    ok(cg_h2_recv(sv.h, CG_H2_PREFACE, CG_H2_PREFACE_LEN) == -1, "bad preface: no way back");
    srv_free(&sv);

    /* One byte at a time: accepted up to the first wrong byte. */
    char wrong[CG_H2_PREFACE_LEN];
    memcpy(wrong, CG_H2_PREFACE, CG_H2_PREFACE_LEN);
    wrong[19] = 'X';
    srv_init(&sv, NULL, NULL);
    int k = 0;
    while (k < CG_H2_PREFACE_LEN && cg_h2_recv(sv.h, wrong + k, 1) == 0)
        k++;
    ok(k == 19, "bad preface: byte by byte, refused at the first wrong byte (%d)", k);
    srv_free(&sv);

    /* A preface, then something other than SETTINGS. */
    cg_buf b;
    nghttp2_hd_deflater *d;
    cg_buf_init(&b);
    nghttp2_hd_deflate_new(&d, 4096);
    cg_buf_append(&b, CG_H2_PREFACE, CG_H2_PREFACE_LEN);
    put_headers(&b, d, 1, 1, get_root);
    srv_init(&sv, NULL, NULL);
    cg_h2_recv(sv.h, b.data, b.len);
    srv_produce(&sv, SIZE_MAX);
    ok(sv.requests == 0 && server_goaway(&sv, &last, &code) && code == NGHTTP2_PROTOCOL_ERROR &&
           cg_h2_done(sv.h),
       "bad preface: HEADERS before SETTINGS: GOAWAY PROTOCOL_ERROR, done once it is out");
    srv_free(&sv);
    nghttp2_hd_deflate_del(d);
    cg_buf_free(&b);
}

static void test_goaway(void)
{
    cli c;
    srv sv;
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    int32_t a = cli_request(&c, get_root, NULL);
    int32_t b = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    ok(sv.nreqs == 2 && cg_h2_open_streams(sv.h) == 2, "goaway: two streams open");
    cg_h2_goaway(sv.h);
    srv_produce(&sv, SIZE_MAX);
    /* The client has not seen it yet: a third stream crosses it. */
    int32_t late = cli_request(&c, get_root, NULL);
    cli_to_srv(&c, &sv, 0);
    ok(sv.requests == 2, "goaway: a stream above the last one is ignored");
    srv_to_cli(&c, &sv);
    pump(&c, &sv);
    ok(c.goaways == 1 && c.goaway_code == NGHTTP2_NO_ERROR && c.goaway_last == b,
       "goaway: NO_ERROR naming the last stream (%d)", c.goaway_last);
    cstream *x = cst(&c, late);
    ok(x && x->closed && x->close_code == NGHTTP2_REFUSED_STREAM,
       "goaway: the client sees its late stream refused");
    ok(!cg_h2_done(sv.h) && cg_h2_open_streams(sv.h) == 2,
       "goaway: not done while streams are open");
    respond_204(&sv, req_of(&sv, a));
    pump(&c, &sv);
    ok(!cg_h2_done(sv.h), "goaway: not done with one left");
    respond_204(&sv, req_of(&sv, b));
    pump(&c, &sv);
    ok(heads_are(cst(&c, a), "--\n:status: 204\n") && heads_are(cst(&c, b), "--\n:status: 204\n"),
       "goaway: the open streams finish");
    ok(cg_h2_done(sv.h) && cg_h2_open_streams(sv.h) == 0, "goaway: done when the last closes");
    cli_free(&c);
    srv_free(&sv);

    /* The client's GOAWAY, then the server's. */
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    a = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    nghttp2_submit_goaway(c.s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    pump(&c, &sv);
    ok(!cg_h2_done(sv.h) && !sv.failed, "goaway: the client's: not done while a stream is open");
    respond_204(&sv, req_of(&sv, a));
    pump(&c, &sv);
    ok(cg_h2_done(sv.h), "goaway: the client's: done when it closes");
    cg_h2_goaway(sv.h);
    pump(&c, &sv);
    int32_t last = -1;
    uint32_t code = 1;
    ok(cg_h2_done(sv.h) && server_goaway(&sv, &last, &code) && code == 0 && last == a,
       "goaway: both ways: done, the server's names stream %d", last);
    cli_free(&c);
    srv_free(&sv);

    /* The GOAWAY waits (the client does not read): a stream arriving
     * meanwhile is above the one it names and must not start either. */
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    a = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    cg_h2_goaway(sv.h);
    late = cli_request(&c, get_root, NULL);
    cli_to_srv(&c, &sv, 0);
    ok(sv.requests == 1, "goaway not sent yet: a later stream is not delivered");
    pump(&c, &sv);
    x = cst(&c, late);
    ok(c.goaways == 1 && c.goaway_last == a && x && x->closed &&
           x->close_code == NGHTTP2_REFUSED_STREAM && sv.requests == 1,
       "goaway not sent yet: it names stream %d, the later one is refused", c.goaway_last);
    respond_204(&sv, req_of(&sv, a));
    pump(&c, &sv);
    ok(cg_h2_done(sv.h) && cg_h2_open_streams(sv.h) == 0 && sv.late == 0,
       "goaway not sent yet: done once the named stream is answered");
    cli_free(&c);
    srv_free(&sv);

    /* cg_h2_terminate */
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    a = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    cg_h2_terminate(sv.h, CG_H2_INTERNAL_ERROR);
    pump(&c, &sv);
    ok(c.goaways == 1 && c.goaway_code == NGHTTP2_INTERNAL_ERROR && c.goaway_last == a &&
           cg_h2_done(sv.h),
       "terminate: GOAWAY INTERNAL_ERROR naming stream %d, done", a);
    sreq *q = req_of(&sv, a);
    srv_free(&sv);
    ok(q && q->closed == 1 && q->close_code == NGHTTP2_CANCEL,
       "terminate: the open stream closes with CANCEL when the session is freed");
    cli_free(&c);
}

static void test_free(void)
{
    cli c;
    srv sv;
    cg_h2_config cfg;
    static char body[100000];
    fill(body, sizeof(body), 17);
    body_src src = {body, sizeof(body), 0};
    cg_h2_config_default(&cfg);
    cfg.initial_window_size = 1000;
    srv_init(&sv, &cfg, NULL);
    cli_init2(&c, 1, 0);
    pump(&c, &sv);
    int32_t a = cli_request(&c, get_root, NULL);
    int32_t b = cli_request(&c, post_root, &src);
    int32_t d = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    sreq *qa = req_of(&sv, a), *qb = req_of(&sv, b), *qd = req_of(&sv, d);
    cg_h2_submit_head(sv.h, a, 200, NULL, NULL, 0, 0);
    cg_h2_write(sv.h, a, body, sizeof(body), NULL, 0); /* more than the client's window */
    cg_h2_submit_head(sv.h, d, 200, NULL, NULL, 0, CG_H2_TRAILERS);
    cg_h2_write(sv.h, d, "x", 1, NULL, 1);
    pump(&c, &sv);
    ok(qa && qb && qd && cg_h2_open_streams(sv.h) == 3 && qb->body.len > 0 && !qb->body_end &&
           cg_h2_queued(sv.h, a) > 0,
       "free: three streams open (output queued, body partly read, trailers awaited)");
    cg_h2_free(sv.h);
    sv.h = NULL;
    ok(qa->closed == 1 && qb->closed == 1 && qd->closed == 1 && qa->close_code == NGHTTP2_CANCEL &&
           qb->close_code == NGHTTP2_CANCEL && qd->close_code == NGHTTP2_CANCEL && sv.late == 0,
       "free: on_close(CANCEL) once for each");
    srv_free(&sv);
    cli_free(&c);
    cg_h2_free(NULL);
    ok(1, "free: cg_h2_free(NULL) is harmless");
}

static void test_raw_glitches(void)
{
    cg_h2_config cfg;
    cg_buf b;
    nghttp2_hd_deflater *d;
    srv sv;
    int32_t last;
    uint32_t code;
    cg_h2_config_default(&cfg);
    cfg.glitch_burst = 3;
    cfg.glitch_rate = 0;

    /* Empty DATA frames without END_STREAM. */
    raw_start(&b, &d);
    put_headers(&b, d, 1, 0, post_root);
    srv_init(&sv, &cfg, NULL);
    ok(cg_h2_recv(sv.h, b.data, b.len) == 0 && sv.nreqs == 1, "empty DATA: a POST begins");
    cg_buf_reset(&b);
    int fine = 1;
    for (int i = 0; i < 3; i++) {
        put_frame(&b, NGHTTP2_DATA, 0, 1, NULL, 0);
        fine &= cg_h2_recv(sv.h, b.data, b.len) == 0;
        cg_buf_reset(&b);
    }
    ok(fine && sv.reqs[0].body_end == 0, "empty DATA: three within the burst of 3");
    put_frame(&b, NGHTTP2_DATA, 0, 1, NULL, 0);
    ok(cg_h2_recv(sv.h, b.data, b.len) == -1 &&
           strcmp(cg_h2_error(sv.h), "too many empty DATA frames") == 0,
       "empty DATA: the fourth ends the connection");
    srv_produce(&sv, SIZE_MAX);
    ok(server_goaway(&sv, &last, &code) && code == NGHTTP2_ENHANCE_YOUR_CALM && last == 1,
       "empty DATA: GOAWAY ENHANCE_YOUR_CALM, last stream 1");
    srv_free(&sv);
    ok(sv.reqs[0].closed == 1 && sv.reqs[0].close_code == NGHTTP2_CANCEL,
       "empty DATA: the stream closed by cg_h2_free");
    nghttp2_hd_deflate_del(d);
    cg_buf_free(&b);

    /* The glitch that ends the connection is followed, in the same read, by
     * a frame of a wrong size (a PING of 7 bytes): nothing after the glitch
     * is read (nghttp2 must not go on with a session ended under it). */
    cfg.glitch_burst = 0;
    raw_start(&b, &d);
    put_headers(&b, d, 1, 0, post_root);
    put_frame(&b, NGHTTP2_DATA, 0, 1, NULL, 0);
    put_frame(&b, NGHTTP2_PING, 0, 0, "1234567", 7);
    put_headers(&b, d, 3, 1, get_root);
    srv_init(&sv, &cfg, NULL);
    ok(cg_h2_recv(sv.h, b.data, b.len) == -1 && sv.requests == 1 &&
           strcmp(cg_h2_error(sv.h), "too many empty DATA frames") == 0,
       "glitch then a bad frame in one read: -1, nothing read after the glitch");
    srv_produce(&sv, SIZE_MAX);
    ok(server_goaway(&sv, &last, &code) && code == NGHTTP2_ENHANCE_YOUR_CALM &&
           count_frames(&sv, NGHTTP2_GOAWAY, 0) == 1 && cg_h2_done(sv.h),
       "glitch then a bad frame: one GOAWAY, ENHANCE_YOUR_CALM, done");
    srv_free(&sv);
    nghttp2_hd_deflate_del(d);
    cg_buf_free(&b);

    /* An empty DATA frame with END_STREAM ends a body: no glitch. */
    cfg.glitch_burst = 0;
    raw_start(&b, &d);
    put_headers(&b, d, 1, 0, post_root);
    put_frame(&b, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, NULL, 0);
    srv_init(&sv, &cfg, NULL);
    ok(cg_h2_recv(sv.h, b.data, b.len) == 0 && sv.nreqs == 1 && sv.reqs[0].body_end == 1 &&
           sv.reqs[0].pieces == 0,
       "empty DATA with END_STREAM: on_body_end, no glitch even with a burst of 0");
    srv_free(&sv);
    nghttp2_hd_deflate_del(d);
    cg_buf_free(&b);

    /* Invalid frames: a WINDOW_UPDATE overflowing a stream's window (a stream error). */
    cfg.glitch_burst = 2;
    raw_start(&b, &d);
    srv_init(&sv, &cfg, NULL);
    static const uint8_t huge[4] = {0x7f, 0xff, 0xff, 0xff};
    int rcs[3];
    for (int i = 0; i < 3; i++) {
        put_headers(&b, d, 1 + 2 * i, 0, post_root);
        put_frame(&b, NGHTTP2_WINDOW_UPDATE, 0, 1 + 2 * i, huge, 4);
        rcs[i] = cg_h2_recv(sv.h, b.data, b.len);
        cg_buf_reset(&b);
        srv_produce(&sv, SIZE_MAX);
    }
    ok(rcs[0] == 0 && rcs[1] == 0 && count_frames(&sv, NGHTTP2_RST_STREAM, 1) == 1 &&
           count_frames(&sv, NGHTTP2_RST_STREAM, 3) == 1,
       "invalid frames: the first two reset their streams");
    ok(sv.reqs[0].closed == 1 && sv.reqs[0].close_code == NGHTTP2_FLOW_CONTROL_ERROR,
       "invalid frames: on_close(FLOW_CONTROL_ERROR)");
    ok(rcs[2] == -1 && server_goaway(&sv, &last, &code) && code == NGHTTP2_ENHANCE_YOUR_CALM &&
           strcmp(cg_h2_error(sv.h), "too many invalid frames") == 0,
       "invalid frames: the third (burst 2) ends the connection");
    srv_free(&sv);
    nghttp2_hd_deflate_del(d);
    cg_buf_free(&b);

    /* A connection error nghttp2 finds (WINDOW_UPDATE of 0 on a stream):
     * the GOAWAY is queued, the session is done once it is out. */
    cg_h2_config_default(&cfg);
    raw_start(&b, &d);
    put_headers(&b, d, 1, 0, post_root);
    static const uint8_t zero[4] = {0, 0, 0, 0};
    put_frame(&b, NGHTTP2_WINDOW_UPDATE, 0, 1, zero, 4);
    put_headers(&b, d, 3, 1, get_root);
    srv_init(&sv, &cfg, NULL);
    int rc = cg_h2_recv(sv.h, b.data, b.len);
    ok(rc == 0 && !cg_h2_done(sv.h), "connection error: cg_h2_recv returns 0, not done yet");
    srv_produce(&sv, SIZE_MAX);
    ok(server_goaway(&sv, &last, &code) && code == NGHTTP2_PROTOCOL_ERROR && last == 1 &&
           sv.requests == 1 && cg_h2_done(sv.h),
       "connection error: GOAWAY PROTOCOL_ERROR, the stream after it ignored, done once sent");
    srv_free(&sv);
    ok(sv.reqs[0].closed == 1, "connection error: the open stream closed by cg_h2_free");
    nghttp2_hd_deflate_del(d);
    cg_buf_free(&b);
}

/* Cookie fields joined when the arena must grow meanwhile. */
static void test_cookie_join(void)
{
    cli c;
    srv sv;
    char *v[3];
    char want[2048];
    for (int i = 0; i < 3; i++) {
        v[i] = repeat((char)('a' + i), 150 + (size_t)i * 40);
        v[i][0] = (char)('k' + i);
        v[i][1] = '=';
    }
    const char *const req[] = {":method",    "GET",    ":scheme", "https", ":path", "/",
                               ":authority", "x.test", "cookie",  v[0],    "x-mid", "1",
                               "cookie",     v[1],     "cookie",  v[2],    NULL};
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    cli_request(&c, req, NULL);
    pump(&c, &sv);
    snprintf(want, sizeof(want),
             "GET / path=/ query= authority=x.test form=0 v=2 cl=-1 expect=0 te=0 end=1 proto=\n"
             "host: x.test\ncookie: %s; %s; %s\nx-mid: 1\n",
             v[0], v[1], v[2]);
    ok(head_is(&sv.reqs[0], want), "cookies: three long ones joined in order");
    cli_free(&c);
    srv_free(&sv);
    for (int i = 0; i < 3; i++)
        free(v[i]);

    /* Two of 60,000 bytes: the arena moves from a mapping of its own. */
    cg_h2_config cfg;
    cg_http1_limits lim = {8190, 65536, 100};
    cg_h2_config_default(&cfg);
    cfg.max_header_list_size = 1 << 20;
    char *big[2] = {repeat('x', 60000), repeat('y', 60000)};
    const char *const req2[] = {":method", "GET",        ":scheme", "https",  ":path",
                                "/",       ":authority", "x.test",  "cookie", big[0],
                                "cookie",  big[1],       NULL};
    srv_init(&sv, &cfg, &lim);
    cli_init2(&c, 0, 1 << 20);
    cli_request(&c, req2, NULL);
    pump(&c, &sv);
    char *joined = malloc(120002);
    memcpy(joined, big[0], 60000);
    memcpy(joined + 60000, "; ", 2);
    memcpy(joined + 60002, big[1], 60000);
    ok(sv.nreqs == 1 && bytes_are(&sv.reqs[0].cookie, joined, 120002),
       "cookies: two of 60000 bytes joined");
    free(joined);
    cli_free(&c);
    srv_free(&sv);
    free(big[0]);
    free(big[1]);
}

/* Writes with an owner: large ones are framed from the caller's memory
 * (retained until framed, then released once), small ones copied; the
 * order of the bytes is the order of the writes. */
static void test_borrow(void)
{
    cli c;
    srv sv;
    static char big[3][50000];
    owner own[3] = {{0}, {0}, {0}};
    for (int i = 0; i < 3; i++)
        fill(big[i], sizeof(big[i]), 20 + i);
    srv_init(&sv, NULL, NULL);
    cli_init2(&c, 1, 0); /* never reopens its windows: 65,535 bytes get through */
    int32_t id = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    cg_buf expect;
    cg_buf_init(&expect);
    int rc = cg_h2_submit_head(sv.h, id, 200, NULL, NULL, 0, 0);
    rc |= cg_h2_write(sv.h, id, "head:", 5, &own[0], 0); /* small: copied */
    cg_buf_append(&expect, "head:", 5);
    rc |= cg_h2_write(sv.h, id, big[0], sizeof(big[0]), &own[0], 0);
    cg_buf_append(&expect, big[0], sizeof(big[0]));
    rc |= cg_h2_write(sv.h, id, "mid", 3, NULL, 0);
    cg_buf_append(&expect, "mid", 3);
    rc |= cg_h2_write(sv.h, id, big[1], sizeof(big[1]), &own[1], 0);
    cg_buf_append(&expect, big[1], sizeof(big[1]));
    rc |= cg_h2_write(sv.h, id, "tail", 4, NULL, 1);
    cg_buf_append(&expect, "tail", 4);
    ok(rc == 0 && sv.retained == 2 && own[0].refs == 1 && own[1].refs == 1,
       "borrow: the two large writes are retained, the small ones copied (%d)", sv.retained);
    ok(cg_h2_queued(sv.h, id) == expect.len, "borrow: queued counts both kinds (%zu)",
       cg_h2_queued(sv.h, id));
    pump(&c, &sv);
    ok(own[0].refs == 0 && own[1].refs == 1 && sv.released == 1,
       "borrow: the first is released once framed, the second (partly framed) is kept");
    cstream *x = cst(&c, id);
    ok(x && bytes_are(&x->data, expect.data, 65535),
       "borrow: the first 65,535 bytes arrive in order");
    nghttp2_session_set_local_window_size(c.s, NGHTTP2_FLAG_NONE, id, 1 << 20);
    nghttp2_session_set_local_window_size(c.s, NGHTTP2_FLAG_NONE, 0, 1 << 20);
    pump(&c, &sv);
    x = cst(&c, id);
    ok(x && bytes_are(&x->data, expect.data, expect.len) && x->end_stream == 1,
       "borrow: the whole body arrives byte-exact after the window opens");
    ok(own[1].refs == 0 && sv.released == 2 && sv.bad_release == 0,
       "borrow: every owner released exactly once");

    /* Dropped: a reset stream and a freed session release what they held. */
    int32_t a = cli_request(&c, get_root, NULL), b = cli_request(&c, get_root, NULL);
    pump(&c, &sv);
    cg_h2_submit_head(sv.h, a, 200, NULL, NULL, 0, 0);
    cg_h2_submit_head(sv.h, b, 200, NULL, NULL, 0, 0);
    for (int i = 0; i < 2; i++) { /* more than each stream's window of 65,535 */
        cg_h2_write(sv.h, a, big[2], sizeof(big[2]), &own[2], 0);
        cg_h2_write(sv.h, b, big[2], sizeof(big[2]), &own[2], 0);
    }
    ok(own[2].refs == 4, "borrow: one owner retained per write (%d)", own[2].refs);
    pump(&c, &sv);
    ok(own[2].refs == 2, "borrow: each stream holds the write its window cut (%d)", own[2].refs);
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, a, NGHTTP2_CANCEL);
    pump(&c, &sv);
    ok(own[2].refs == 1 && req_of(&sv, a)->closed == 1,
       "borrow: the reset stream gave its write back (%d left)", own[2].refs);
    srv_free(&sv);
    ok(own[2].refs == 0 && sv.bad_release == 0, "borrow: freeing the session gives the rest back");
    cg_buf_free(&expect);
    cli_free(&c);
}

/* cg_h2_shrink between requests, and while frames are half sent (it must
 * then keep them): every response still arrives whole. */
static void test_shrink(void)
{
    cli c;
    srv sv;
    static char body[70000];
    fill(body, sizeof(body), 31);
    srv_init(&sv, NULL, NULL);
    cli_init(&c);
    int all = 1;
    for (int round = 0; round < 3; round++) {
        int32_t id = cli_request(&c, get_root, NULL);
        cli_to_srv(&c, &sv, 0);
        cg_h2_shrink(sv.h);
        all &= cg_h2_submit_head(sv.h, id, 200, NULL, "x-round: 1\r\n", 12, 0) == 0 &&
               cg_h2_write(sv.h, id, body, sizeof(body), NULL, 1) == 0;
        /* The head and one DATA frame: the next frame's header is made in
         * nghttp2's buffer and waits there (its send was refused). */
        srv_produce(&sv, 100);
        cg_h2_shrink(sv.h);
        pump(&c, &sv);
        cg_h2_shrink(sv.h);
        cstream *x = cst(&c, id);
        static const char want[] = ":status: 200\nx-round: 1\n";
        all &= x && x->heads.len >= sizeof(want) - 1 &&
               memcmp(x->heads.data + 3, want, sizeof(want) - 1) == 0 &&
               bytes_are(&x->data, body, sizeof(body)) && x->closed;
    }
    ok(all && !c.failed && sv.late == 0, "shrink: three responses whole around cg_h2_shrink");
    cli_free(&c);
    srv_free(&sv);
}

int main(void)
{
    test_preface_prefix();
    test_settings();
    test_get(0);
    test_get(1);
    test_get(5);
    test_forms();
    test_post(0);
    test_post(1);
    test_interim_and_trailers();
    test_flow_control();
    test_drain();
    test_reset_glitches();
    test_reset_unsent();
    test_borrow();
    test_shrink();
    test_limits();
    test_refused();
    test_bad_preface();
    test_goaway();
    test_free();
    test_raw_glitches();
    test_cookie_join();
    return tap_done();
}
