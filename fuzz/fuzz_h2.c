/* libFuzzer target for the HTTP/2 server connection (h2.c).
 *
 * Input: byte 0 picks the session's shape (bit 0: the preface and an empty
 * SETTINGS frame come first without being in the input; bit 1: 1 MiB
 * connection window; bit 2: extended CONNECT; bits 3-4: how much cg_h2_send
 * produces per call, and when both are set, the connection ends part way
 * through; bits 5-7: glitch burst). Byte 1 picks the sizes of the pieces the
 * rest is fed in (0: at once). Byte 2 seeds what the app does with each
 * stream (bit 6: the connection ends with cg_h2_terminate, else
 * cg_h2_goaway; bit 7: frames are produced only after every 16th piece, a
 * slow reader). The rest is what a client sends.
 *
 * The session's settings are small (8 streams, 1024-byte stream windows,
 * 2 KiB header lists, 16 fields) so its limits are reached. The app answers
 * as an app would, chosen per stream: at once (with or without a body),
 * later with a body in pieces and trailers (some empty), after the request
 * body ends (echoing its size, after a 100), by resetting it, or by refusing
 * it; it consumes request bodies at once (sometimes claiming more than
 * came), later, or not at all, writes more or resets from on_drained, and
 * pokes streams that have closed. Between pieces the app makes progress and
 * frames are produced (and dropped).
 *
 * Checked, aborting when broken: events per stream in order (one on_request,
 * no body after its end or when the head ended the stream, no more body than
 * content-length, at most one on_body_end, exactly one on_close, nothing
 * after it: ASan reports a use after free, and a stream never closed leaks);
 * on_drained agrees with cg_h2_queued; open streams stay under the limit;
 * no stream starts after cg_h2_goaway and nothing arrives after
 * cg_h2_terminate; cg_h2_send never fails; cg_h2_recv fails for good once
 * it failed; cg_h2_free closes every stream; every owner of borrowed body
 * bytes is released once. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2.h"

#define MAX_STREAMS 8
#define BODY_BUDGET 20000 /* response bytes per stream at most */

static void check(int cond)
{
    if (!cond)
        abort();
}

enum {
    A_NOW_EMPTY,   /* 204 from on_request */
    A_NOW_BODY,    /* 200 and a body from on_request */
    A_LATER,       /* head, body in pieces, trailers when the client takes them */
    A_ECHO,        /* 100 at once, then a body the request's size once it ended */
    A_RESET,       /* reset on the next step */
    A_REFUSE,      /* on_request returns NULL */
    A_DRAIN_WRITE, /* like A_LATER, and writes more from on_drained */
    A_DRAIN_RESET, /* a head and a body, reset from on_drained */
    A_COUNT
};

typedef struct fs {
    int32_t id;
    int action;
    int end_stream, te, trailers, state; /* state: 0 nothing sent, 1 head sent, 2 done */
    long long cl;
    size_t received, consumed, written;
    int body_end, closed, consume_mode;
    struct fs *prev, *next;
} fs;

typedef struct app {
    cg_h2 *h;
    fs *list;
    size_t live;
    uint32_t rnd;
    int32_t max_id, goaway_max; /* highest stream delivered; and when cg_h2_goaway was called */
    int goaway, goaway_extra, terminated;
    int32_t last_closed;
    uint32_t max_streams;
    long borrowed; /* owners retained and not released yet */
} app;

static uint32_t next_rnd(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return *r;
}

static const char filler[4096] = {'x'};

/* Up to n more body bytes; the body ends at the budget, when `end`, or by chance. */
static void write_some(app *a, fs *s, size_t n, int end)
{
    if (n > sizeof(filler))
        n = sizeof(filler);
    if (s->written + n > BODY_BUDGET)
        n = BODY_BUDGET - s->written;
    end |= s->written + n == BODY_BUDGET || (next_rnd(&a->rnd) & 3) == 0;
    /* Some writes lend the filler (borrowed when large enough). */
    void *owner = (next_rnd(&a->rnd) & 1) ? a : NULL;
    check(cg_h2_write(a->h, s->id, filler, n, owner, end) == 0);
    s->written += n;
    if (end) {
        if (s->trailers) {
            cg_fields tr;
            cg_fields_init(&tr);
            if (next_rnd(&a->rnd) & 8) /* else none: an empty trailer block */
                check(cg_fields_add(&tr, "x-sum", 5, "42", 2) == 0);
            check(cg_h2_trailers(a->h, s->id, &tr) == 0);
            check(cg_h2_trailers(a->h, s->id, &tr) == -1);
            cg_fields_free(&tr);
        }
        check(cg_h2_write(a->h, s->id, "x", 1, NULL, 0) == -1);
        s->state = 2;
    }
}

static void head(app *a, fs *s, int status, unsigned flags)
{
    static const char lines[] = "server: fuzz\r\nconnection: close\r\n";
    cg_fields f;
    cg_fields_init(&f);
    check(cg_fields_add(&f, "Content-Type", 12, "text/plain", 10) == 0);
    check(cg_h2_submit_head(a->h, s->id, status, &f, lines, sizeof(lines) - 1, flags) == 0);
    cg_fields_free(&f);
    s->state = status < 200 ? 0 : (flags & CG_H2_END_STREAM) ? 2 : 1;
}

static void *on_request(void *ctx, int32_t id, const cg_h2_request *r)
{
    app *a = ctx;
    const cg_http1_request *q = &r->head;
    check(id > 0 && (id & 1) && id > a->max_id && !a->terminated);
    if (a->goaway && id > a->goaway_max) {
        /* The GOAWAY names the stream whose head was coming in; none after it. */
        check(!a->goaway_extra);
        a->goaway_extra = 1;
        a->goaway_max = id;
    }
    a->max_id = id;
    check(q->version == CG_HTTP_2 && q->method.len > 0 && q->num_headers <= 16 + 1);
    check(q->path.len <= q->target.len || q->target_form == CG_TARGET_AUTHORITY);
    if (q->target_form == CG_TARGET_AUTHORITY)
        check(q->method.len == 7 && memcmp(q->method.base, "CONNECT", 7) == 0 &&
              r->protocol.len == 0);
    for (size_t i = 0; i < q->num_headers; i++)
        check(q->headers[i].name.len > 0);
    if (cg_h2_open_streams(a->h) > a->max_streams)
        abort();
    int action = (int)((next_rnd(&a->rnd) >> 8) % A_COUNT);
    if (action == A_REFUSE)
        return NULL;
    fs *s = calloc(1, sizeof(*s));
    check(s != NULL);
    s->id = id;
    s->action = action;
    s->end_stream = r->end_stream;
    s->te = r->te_trailers;
    s->cl = q->content_length;
    s->consume_mode = (int)(next_rnd(&a->rnd) % 3);
    s->trailers = action == A_LATER && (s->te || (a->rnd & 16));
    s->next = a->list;
    if (a->list)
        a->list->prev = s;
    a->list = s;
    a->live++;
    switch (action) {
    case A_NOW_EMPTY:
        head(a, s, 204, CG_H2_END_STREAM);
        break;
    case A_NOW_BODY:
        head(a, s, 200, 0);
        write_some(a, s, next_rnd(&a->rnd) % 3000, 0);
        break;
    case A_ECHO:
        head(a, s, 100, 0);
        break;
    }
    return s;
}

static void on_body(void *ctx, void *stream, const char *data, size_t len)
{
    app *a = ctx;
    fs *s = stream;
    (void)data;
    check(!s->closed && !s->body_end && !s->end_stream && !a->terminated);
    s->received += len;
    check(s->cl < 0 || s->received <= (size_t)s->cl);
    if (s->consume_mode == 0) {
        /* Sometimes more than arrived: the session takes what did. */
        cg_h2_consume(a->h, s->id, len + (next_rnd(&a->rnd) & 1) * 100);
        s->consumed += len;
    }
}

static void on_body_end(void *ctx, void *stream)
{
    fs *s = stream;
    (void)ctx;
    check(!s->closed && !s->body_end && !s->end_stream);
    check(s->cl < 0 || s->received == (size_t)s->cl);
    s->body_end = 1;
}

static void on_drained(void *ctx, void *stream, size_t queued)
{
    app *a = ctx;
    fs *s = stream;
    check(!s->closed && queued == cg_h2_queued(a->h, s->id) && queued <= s->written);
    if (s->action == A_DRAIN_WRITE && s->state == 1)
        write_some(a, s, next_rnd(&a->rnd) % 2000, 0);
    else if (s->action == A_DRAIN_RESET && s->state == 1 && (next_rnd(&a->rnd) & 1)) {
        cg_h2_reset(a->h, s->id, CG_H2_CANCEL);
        s->state = 2;
    }
}

static void on_close(void *ctx, void *stream, uint32_t code, size_t unsent)
{
    app *a = ctx;
    fs *s = stream;
    (void)code;
    (void)unsent;
    check(!s->closed && a->live > 0);
    s->closed = 1;
    if (s->prev)
        s->prev->next = s->next;
    else
        a->list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    a->live--;
    a->last_closed = s->id;
    free(s);
}

static void on_retain(void *ctx, void *owner)
{
    app *a = ctx;
    check(owner == a);
    a->borrowed++;
}

static void on_release(void *ctx, void *owner)
{
    app *a = ctx;
    check(owner == a && a->borrowed > 0);
    a->borrowed--;
}

static const cg_h2_events events = {on_request, on_body, on_body_end, on_drained,
                                    on_close,   NULL,    on_retain,   on_release};

/* The app's progress between two reads. */
static void step(app *a)
{
    if ((next_rnd(&a->rnd) & 7) == 0)
        cg_h2_shrink(a->h); /* the connection idles, or a tick says so */
    for (fs *s = a->list; s; s = s->next) {
        uint32_t r = next_rnd(&a->rnd);
        if (s->consume_mode == 1 && s->received > s->consumed) {
            size_t n = (s->received - s->consumed + 1) / 2;
            cg_h2_consume(a->h, s->id, n);
            s->consumed += n;
        }
        switch (s->action) {
        case A_LATER:
        case A_DRAIN_WRITE:
        case A_DRAIN_RESET:
            if (s->state == 0)
                head(a, s, 200, s->trailers ? CG_H2_TRAILERS : 0);
            else if (s->state == 1 && (s->action != A_DRAIN_RESET || (r & 1)))
                write_some(a, s, r % 5000, 0);
            break;
        case A_ECHO:
            if (s->state == 0 && (s->body_end || s->end_stream)) {
                head(a, s, 200, 0);
                write_some(a, s, s->received + 1, 1);
            }
            break;
        case A_RESET:
            if (s->state == 0) {
                cg_h2_reset(a->h, s->id, (r & 1) ? CG_H2_CANCEL : CG_H2_INTERNAL_ERROR);
                s->state = 2;
            }
            break;
        }
        check(cg_h2_queued(a->h, s->id) <= s->written);
    }
    if (a->last_closed) {
        /* A closed stream takes nothing. */
        int32_t id = a->last_closed;
        check(cg_h2_submit_head(a->h, id, 200, NULL, NULL, 0, 0) == -1);
        check(cg_h2_write(a->h, id, "x", 1, NULL, 1) == -1 && cg_h2_trailers(a->h, id, NULL) == -1);
        check(cg_h2_queued(a->h, id) == 0);
        cg_h2_consume(a->h, id, 1);
    }
}

static size_t send_max(uint8_t shape)
{
    static const size_t maxes[4] = {1, 100, 16384, (size_t)-1};
    return maxes[(shape >> 3) & 3];
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 3)
        return 0;
    uint8_t shape = d[0], split = d[1];
    app a;
    cg_h2_config cfg;
    static const cg_http1_limits lim = {256, 512, 16};
    cg_buf out;
    memset(&a, 0, sizeof(a));
    uint8_t appseed = d[2];
    unsigned pieces = 0;
    a.rnd = 0x9e3779b9u ^ ((uint32_t)appseed << 8 | appseed) ^ (uint32_t)n;
    uint32_t srnd = 0x2545f491u ^ split;
    d += 3, n -= 3;

    cg_h2_config_default(&cfg);
    cfg.max_concurrent_streams = MAX_STREAMS;
    cfg.initial_window_size = 1024;
    cfg.max_header_list_size = 2048;
    cfg.connection_window_size = (shape & 2) ? 1 << 20 : 65535;
    cfg.enable_connect_protocol = (shape >> 2) & 1;
    cfg.glitch_burst = (uint32_t)(shape >> 5) * 4;
    cfg.glitch_rate = 0; /* no clock: the same input, the same run */
    a.max_streams = cfg.max_concurrent_streams;
    a.h = cg_h2_new(&cfg, &lim, &events, &a);
    check(a.h != NULL);
    cg_buf_init(&out);

    int failed = 0;
    if (shape & 1) {
        static const char start[] = CG_H2_PREFACE "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        failed = cg_h2_recv(a.h, start, sizeof(start) - 1) < 0;
    }
    size_t max = send_max(shape);
    size_t goaway_at = (shape & 0x18) == 0x18 && n ? (size_t)(a.rnd % n) : (size_t)-1;
    for (size_t off = 0; off < n && !failed;) {
        size_t k = split ? 1 + next_rnd(&srnd) % ((size_t)split * 4) : n - off;
        if (k > n - off)
            k = n - off;
        if (cg_h2_recv(a.h, (const char *)d + off, k) < 0) {
            failed = 1;
            check(cg_h2_error(a.h)[0] != '\0');
            check(cg_h2_recv(a.h, "", 0) == -1);
        }
        off += k;
        if (!a.goaway && off >= goaway_at) {
            if (appseed & 0x40) {
                cg_h2_terminate(a.h, CG_H2_INTERNAL_ERROR);
                a.terminated = 1;
            } else {
                cg_h2_goaway(a.h);
            }
            a.goaway = 1;
            a.goaway_max = a.max_id;
        }
        check(cg_h2_open_streams(a.h) <= a.max_streams);
        step(&a);
        /* A slow reader: frames are produced only now and then. */
        if (!(appseed & 0x80) || ++pieces % 16 == 0) {
            check(cg_h2_send(a.h, &out, max) == 0);
            cg_buf_reset(&out);
        }
    }
    /* The app finishes what it can; the frames go out. */
    for (int round = 0; round < 64; round++) {
        step(&a);
        check(cg_h2_send(a.h, &out, (size_t)-1) == 0);
        if (out.len == 0 && !cg_h2_want_write(a.h))
            break;
        cg_buf_reset(&out);
    }
    if (cg_h2_done(a.h))
        check(!cg_h2_want_write(a.h));
    cg_h2_free(a.h);
    check(a.live == 0 && a.list == NULL && a.borrowed == 0);
    cg_buf_free(&out);
    return 0;
}
