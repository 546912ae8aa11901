/* HTTP/2 server connection on nghttp2 (see h2.h). */
#include "h2.h"

#include <string.h>

#include "hdrtab.h"

int cg_h2_preface_prefix(const char *buf, size_t len)
{
    size_t n = len < CG_H2_PREFACE_LEN ? len : CG_H2_PREFACE_LEN;
    return memcmp(buf, CG_H2_PREFACE, n) == 0;
}

void cg_h2_config_default(cg_h2_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_concurrent_streams = 100;
    cfg->max_header_list_size = 65536;
    cfg->initial_window_size = 262144;
    cfg->connection_window_size = 1048576;
    cfg->enable_connect_protocol = 1;
    cfg->glitch_burst = 1000;
    cfg->glitch_rate = 330;
}

#if CG_HAVE_NGHTTP2

#include <nghttp2/nghttp2.h>

/* The fixed header of every frame (RFC 9113 section 4.1). */
#define CG_H2_FRAME_HEADER 9
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

/* A received field: offsets into the stream's arena (it may move). */
typedef struct h2_field {
    size_t name, name_len, value, value_len;
    int token;
} h2_field;

enum { PS_METHOD, PS_PATH, PS_SCHEME, PS_AUTHORITY, PS_PROTOCOL, PS_COUNT };

/* Queued body bytes: either a copy, stored after the piece (owner NULL), or
 * the caller's own memory, borrowed until it is framed (see cg_h2_write). */
typedef struct h2_piece {
    struct h2_piece *next;
    void *owner;
    const char *data; /* the bytes not framed yet */
    size_t len;
    size_t room; /* a copy: free bytes after data + len */
} h2_piece;

/* A copy piece has room for at least this much (small writes share one). */
#define CG_H2_PIECE_MIN 1024

typedef struct h2_stream {
    int32_t id;
    void *user;   /* the layer above's, from on_request until on_close */
    cg_buf arena; /* received names and values, until the head is complete */
    h2_field *fields;
    size_t nfields, cap;
    size_t list_size;          /* RFC 9113 section 6.5.2 accounting */
    h2_field pseudo[PS_COUNT]; /* value offsets; name_len 1 when present */
    int refuse_status;         /* 431 or 414 once the head is over a limit, else 0 */
    h2_piece *out, *out_tail;  /* body bytes queued, not yet framed, in order */
    size_t queued;             /* their total */
    cg_fields trailers;
    size_t received, consumed; /* request body bytes delivered / taken by the app */
    unsigned head_done : 1;    /* the request head was delivered (later fields: trailers) */
    unsigned out_end : 1;      /* the body is complete */
    unsigned want_trailers : 1;
    unsigned have_trailers : 1;
    unsigned deferred : 1;  /* the data source is waiting for bytes */
    unsigned responded : 1; /* a final response head was submitted */
    unsigned complete : 1;  /* the response's last frame was submitted */
    struct h2_stream *prev, *next;
} h2_stream;

struct cg_h2 {
    nghttp2_session *session;
    cg_h2_config cfg;
    cg_http1_limits lim;
    const cg_h2_events *ev;
    void *ctx;
    h2_stream *streams; /* every stream with a head begun and not closed */
    size_t nstreams;
    cg_buf nv_arena; /* scratch for the name/value array of a head */
    nghttp2_nv *nva;
    size_t nva_cap;
    char status_digits[4];  /* the :status value of the head being built */
    cg_buf *send_out;       /* during cg_h2_send: its output (see send_data) */
    size_t send_limit;      /* and the length at which it stops taking DATA frames */
    double tokens;          /* glitch bucket */
    double refilled;        /* monotonic seconds of the last refill */
    const char *error;      /* why the connection ended, for logs */
    uint32_t fail_code;     /* the GOAWAY code of a failure met inside a callback */
    int32_t goaway_last;    /* the stream cg_h2_goaway named (INT32_MAX before) */
    int32_t max_client_id;  /* the highest stream the client opened */
    int32_t max_refused_id; /* the highest stream this side reset or refused */
    void *paged;            /* nghttp2's frame buffer (CG_H2_FRAMEBUF bytes), in pages of its own */
    unsigned creating : 1;  /* nghttp2_session_server_new3 runs */
    unsigned fatal : 1;
    unsigned freeing : 1;
    unsigned draining : 1; /* streams are refused because the server stops: no glitch */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A failure met inside nghttp2's callbacks: records why and returns
 * NGHTTP2_ERR_CALLBACK_FAILURE for the callback to return, so nghttp2 stops
 * reading at once; cg_h2_recv then ends the connection with GOAWAY `code`.
 * Terminating the session from inside its callbacks instead lets nghttp2
 * read on (it resets its input state after some of them) and trips its own
 * assertions on a later frame. */
static int fail_in_callback(cg_h2 *h, uint32_t code, const char *why)
{
    if (!h->fatal) {
        h->fatal = 1;
        h->error = why;
        h->fail_code = code;
    }
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* Counts one glitch (during nghttp2_session_mem_recv). Returns 0, or, when
 * the bucket is empty, what fail_in_callback returns (ENHANCE_YOUR_CALM). */
static int glitch(cg_h2 *h, const char *what)
{
    double t = now_seconds();
    h->tokens += (t - h->refilled) * (double)h->cfg.glitch_rate;
    if (h->tokens > (double)h->cfg.glitch_burst)
        h->tokens = (double)h->cfg.glitch_burst;
    h->refilled = t;
    if (h->tokens >= 1.0) {
        h->tokens -= 1.0;
        return 0;
    }
    return fail_in_callback(h, NGHTTP2_ENHANCE_YOUR_CALM, what);
}

static h2_stream *stream_of(const cg_h2 *h, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(h->session, id) : NULL;
}

/* Takes the first piece off a stream's queue and gives its bytes back. */
static void out_pop(cg_h2 *h, h2_stream *s)
{
    h2_piece *p = s->out;
    s->out = p->next;
    if (!s->out)
        s->out_tail = NULL;
    if (p->owner)
        h->ev->release(h->ctx, p->owner);
    free(p);
}

/* Drops every byte queued on a stream (it closed, or the session ends). */
static void out_drop(cg_h2 *h, h2_stream *s)
{
    while (s->out)
        out_pop(h, s);
    s->queued = 0;
}

/* Queues `len` bytes on a stream: borrowed when `owner` is given and they
 * are worth it, else copied (into the last copy piece while it has room). */
static int out_push(cg_h2 *h, h2_stream *s, const char *data, size_t len, void *owner)
{
    h2_piece *t = s->out_tail, *p;
    if (owner && len >= CG_H2_BORROW_MIN) {
        p = malloc(sizeof(*p));
        if (!p)
            return -1;
        h->ev->retain(h->ctx, owner);
        *p = (h2_piece){NULL, owner, data, len, 0};
    } else if (t && !t->owner && t->room >= len) {
        memcpy((char *)t->data + t->len, data, len);
        t->len += len;
        t->room -= len;
        s->queued += len;
        return 0;
    } else {
        size_t room = len > CG_H2_PIECE_MIN ? len : CG_H2_PIECE_MIN;
        p = malloc(sizeof(*p) + room);
        if (!p)
            return -1;
        *p = (h2_piece){NULL, NULL, (const char *)(p + 1), len, room - len};
        memcpy(p + 1, data, len);
    }
    if (t)
        t->next = p;
    else
        s->out = p;
    s->out_tail = p;
    s->queued += len;
    return 0;
}

static void stream_free(cg_h2 *h, h2_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->nstreams--;
    cg_buf_free(&s->arena);
    free(s->fields);
    out_drop(h, s);
    cg_fields_free(&s->trailers);
    free(s);
}

/* ---- receiving ----------------------------------------------------------- */

/* RFC 9113 5.1.1: a HEADERS frame opening a stream below one the client
 * already opened is a connection error. nghttp2 ignores it when it no longer
 * remembers the stream; here it is refused, unless the stream may be one
 * this side reset (whose frames must be ignored for a while, 5.1). */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *ud)
{
    cg_h2 *h = ud;
    if (hd->type != NGHTTP2_HEADERS || hd->stream_id <= 0 || !(hd->stream_id & 1))
        return 0;
    if (hd->stream_id > h->max_client_id) {
        h->max_client_id = hd->stream_id;
        return 0;
    }
    if (!nghttp2_session_find_stream(session, hd->stream_id) && hd->stream_id > h->max_refused_id)
        return fail_in_callback(h, NGHTTP2_PROTOCOL_ERROR,
                                "a stream id lower than one already used");
    return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    cg_h2 *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->id = frame->hd.stream_id;
    cg_fields_init(&s->trailers);
    if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
        free(s);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    h->nstreams++;
    return 0;
}

static int arena_add(h2_stream *s, const uint8_t *p, size_t n, size_t *off)
{
    *off = s->arena.len;
    return cg_buf_append(&s->arena, p, n);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    cg_h2 *h = ud;
    h2_stream *s = stream_of(h, frame->hd.stream_id);
    (void)session;
    (void)flags;
    if (!s || s->head_done || s->refuse_status)
        return 0; /* trailers of a request are read and dropped */
    s->list_size += namelen + valuelen + 32;
    if (s->list_size > h->cfg.max_header_list_size) {
        s->refuse_status = 431;
        return 0;
    }
    if (namelen && name[0] == ':') {
        static const char *const names[PS_COUNT] = {":method", ":path", ":scheme", ":authority",
                                                    ":protocol"};
        for (int i = 0; i < PS_COUNT; i++) {
            if (strlen(names[i]) == namelen && !memcmp(names[i], name, namelen)) {
                if (i == PS_PATH && valuelen > h->lim.request_line) {
                    s->refuse_status = 414;
                    return 0;
                }
                s->pseudo[i].name_len = 1;
                s->pseudo[i].value_len = valuelen;
                if (arena_add(s, value, valuelen, &s->pseudo[i].value) < 0)
                    return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        }
        return 0; /* nghttp2 refused unknown and duplicate pseudo-headers already */
    }
    if (s->nfields >= h->lim.fields || namelen + 2 + valuelen > h->lim.field_size) {
        s->refuse_status = 431;
        return 0;
    }
    if (s->nfields == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        h2_field *f = realloc(s->fields, cap * sizeof(*f));
        if (!f)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        s->fields = f;
        s->cap = cap;
    }
    h2_field *f = &s->fields[s->nfields];
    f->name_len = namelen;
    f->value_len = valuelen;
    f->token = cg_hdr_lookup((const char *)name, namelen);
    if (arena_add(s, name, namelen, &f->name) < 0 || arena_add(s, value, valuelen, &f->value) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->nfields++;
    return 0;
}

static cg_slice arena_slice(const h2_stream *s, size_t off, size_t len)
{
    cg_slice sl = {s->arena.data ? s->arena.data + off : "", len};
    return sl;
}

static int ieq(cg_slice a, const char *b)
{
    size_t n = strlen(b);
    if (a.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = a.base[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != b[i])
            return 0;
    }
    return 1;
}

/* Joins every cookie field's value with "; " into the arena (RFC 9113
 * section 8.2.3): returns the first cookie field's index with its value
 * replaced, or -1 when there are fewer than two. -2: out of memory. */
static long join_cookies(h2_stream *s)
{
    long first = -1;
    size_t count = 0;
    for (size_t i = 0; i < s->nfields; i++)
        if (s->fields[i].token == CG_HDR_COOKIE && count++ == 0)
            first = (long)i;
    if (count < 2)
        return -1;
    /* The values are copied from the arena into itself: room for the whole
     * join first, so that it does not move while they are. */
    size_t total = 0;
    for (size_t i = 0; i < s->nfields; i++)
        if (s->fields[i].token == CG_HDR_COOKIE)
            total += (total ? 2 : 0) + s->fields[i].value_len;
    if (cg_buf_reserve(&s->arena, total) < 0)
        return -2;
    size_t off = s->arena.len, len = 0;
    for (size_t i = 0; i < s->nfields; i++) {
        const h2_field *f = &s->fields[i];
        if (f->token != CG_HDR_COOKIE)
            continue;
        if ((len && cg_buf_append(&s->arena, "; ", 2) < 0) ||
            cg_buf_append(&s->arena, s->arena.data + f->value, f->value_len) < 0)
            return -2;
        len += (len ? 2 : 0) + f->value_len;
    }
    s->fields[first].value = off;
    s->fields[first].value_len = len;
    return first;
}

/* Builds the neutral request head of s and hands it up. Returns 0 or an
 * nghttp2 error. */
static int deliver_request(cg_h2 *h, h2_stream *s, int end_stream)
{
    cg_h2_request r;
    cg_http1_request *q = &r.head;
    cg_http1_header *hdrs;
    long cookie = join_cookies(s);
    size_t n = 0;

    if (cookie == -2)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    hdrs = malloc((s->nfields + 1) * sizeof(*hdrs));
    if (!hdrs)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    memset(&r, 0, sizeof(r));
    q->method = arena_slice(s, s->pseudo[PS_METHOD].value, s->pseudo[PS_METHOD].value_len);
    q->target = arena_slice(s, s->pseudo[PS_PATH].value, s->pseudo[PS_PATH].value_len);
    q->authority = arena_slice(s, s->pseudo[PS_AUTHORITY].value, s->pseudo[PS_AUTHORITY].value_len);
    r.protocol = arena_slice(s, s->pseudo[PS_PROTOCOL].value, s->pseudo[PS_PROTOCOL].value_len);
    q->version = CG_HTTP_2;
    q->content_length = -1;
    q->keep_alive = 1;
    if (s->pseudo[PS_AUTHORITY].name_len) {
        /* :authority is the request's host: the first host field, the only one. */
        hdrs[n].name = cg_hdr_names[CG_HDR_HOST];
        hdrs[n].value = q->authority;
        hdrs[n].token = CG_HDR_HOST;
        n++;
    }
    for (size_t i = 0; i < s->nfields; i++) {
        const h2_field *f = &s->fields[i];
        if ((f->token == CG_HDR_HOST && s->pseudo[PS_AUTHORITY].name_len) ||
            (f->token == CG_HDR_COOKIE && cookie >= 0 && (long)i != cookie))
            continue;
        cg_http1_header *o = &hdrs[n++];
        o->name = arena_slice(s, f->name, f->name_len);
        o->value = arena_slice(s, f->value, f->value_len);
        o->token = f->token;
        if (f->token == CG_HDR_CONTENT_LENGTH) {
            long long v = 0;
            for (size_t k = 0; k < o->value.len && v < (1LL << 53); k++)
                v = v * 10 + (o->value.base[k] - '0'); /* digits: nghttp2 checked */
            q->content_length = v;
        } else if (f->token == CG_HDR_EXPECT && ieq(o->value, "100-continue")) {
            q->expect_continue = 1;
        } else if (f->token == CG_HDR_TE && ieq(o->value, "trailers")) {
            r.te_trailers = 1;
        }
    }
    q->headers = hdrs;
    q->num_headers = n;
    if (ieq(q->method, "connect") && !s->pseudo[PS_PROTOCOL].name_len) {
        q->target_form = CG_TARGET_AUTHORITY; /* a tunnel: refused by the cycle */
        q->target = q->authority;
        q->path = q->authority;
    } else {
        size_t k = 0;
        while (k < q->target.len && q->target.base[k] != '?')
            k++;
        q->target_form =
            q->target.len == 1 && q->target.base[0] == '*' ? CG_TARGET_ASTERISK : CG_TARGET_ORIGIN;
        q->path.base = q->target.base;
        q->path.len = k;
        if (k < q->target.len) {
            q->query.base = q->target.base + k + 1;
            q->query.len = q->target.len - k - 1;
        } else {
            q->query.base = "";
        }
    }
    r.end_stream = end_stream != 0;
    s->head_done = 1;
    void *user = h->ev->on_request(h->ctx, s->id, &r);
    free(hdrs);
    /* The head's bytes are copied by now: the arena can go. */
    cg_buf_free(&s->arena);
    free(s->fields);
    s->fields = NULL;
    s->nfields = s->cap = 0;
    if (!user) {
        cg_h2_reset(h, s->id, NGHTTP2_REFUSED_STREAM);
        return h->draining ? 0 : glitch(h, "too many refused streams");
    }
    s->user = user;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    cg_h2 *h = ud;
    h2_stream *s = stream_of(h, frame->hd.stream_id);
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    (void)session;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!s)
            return 0;
        if (!s->head_done && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (s->id > h->goaway_last) {
                /* Above the stream our GOAWAY names (nghttp2 takes new
                 * streams until it is sent): never started, closed as
                 * refused when it goes out. Nothing will be sent on it. */
                s->head_done = 1;
                s->complete = 1;
                return 0;
            }
            if (s->refuse_status) {
                /* Over a limit: answered here, the app never sees it. */
                s->head_done = 1;
                cg_h2_submit_head(h, s->id, s->refuse_status, NULL, NULL, 0, CG_H2_END_STREAM);
                if (h->ev->on_refused)
                    h->ev->on_refused(h->ctx, s->refuse_status);
                return 0;
            }
            return deliver_request(h, s, end);
        }
        if (end && s->user) /* trailers end the body */
            h->ev->on_body_end(h->ctx, s->user);
        return 0;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !end)
            return glitch(h, "too many empty DATA frames");
        if (end && s && s->user)
            h->ev->on_body_end(h->ctx, s->user);
        return 0;
    case NGHTTP2_RST_STREAM:
        /* A client abandoning a request it started (the rapid reset pattern). */
        if (s && s->head_done && !s->complete)
            return glitch(h, "too many streams reset by the client");
        return 0;
    default:
        return 0;
    }
}

static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int error,
                            void *ud)
{
    (void)session;
    (void)frame;
    (void)error;
    return glitch(ud, "too many invalid frames");
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    cg_h2 *h = ud;
    h2_stream *s = stream_of(h, id);
    (void)flags;
    if (s && s->user) {
        s->received += len;
        h->ev->on_body(h->ctx, s->user, (const char *)data, len);
    } else {
        nghttp2_session_consume(session, id, len); /* nobody reads it */
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *ud)
{
    cg_h2 *h = ud;
    h2_stream *s = stream_of(h, id);
    if (!s)
        return 0;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    if (s->received > s->consumed) /* body the app never took: the connection's window */
        nghttp2_session_consume_connection(session, s->received - s->consumed);
    void *user = s->user;
    size_t unsent = s->queued;
    s->user = NULL;
    stream_free(h, s);
    if (user && !h->freeing)
        h->ev->on_close(h->ctx, user, error_code, unsent);
    return 0;
}

/* ---- sending ------------------------------------------------------------- */

/* Names HTTP/2 forbids in a message (RFC 9113 section 8.2.2); `name` is
 * lowercase. */
static int connection_specific(const char *name, size_t len)
{
    switch (len) {
    case 7:
        return !memcmp(name, "upgrade", 7);
    case 10:
        return !memcmp(name, "connection", 10) || !memcmp(name, "keep-alive", 10);
    case 16:
        return !memcmp(name, "proxy-connection", 16);
    case 17:
        return !memcmp(name, "transfer-encoding", 17);
    default:
        return 0;
    }
}

/* Appends one pair to h->nva, dropping connection-specific fields. Names
 * and values are pointed to where they are (nghttp2 copies them when the
 * head is submitted); a name with an uppercase letter is lowercased into
 * the arena, whose room nv_build reserved, so it never moves. */
static int nv_add(cg_h2 *h, size_t *count, const char *name, size_t nlen, const char *value,
                  size_t vlen)
{
    size_t i = 0;
    while (i < nlen && !(name[i] >= 'A' && name[i] <= 'Z'))
        i++;
    if (i < nlen) {
        char *low = h->nv_arena.data + h->nv_arena.len;
        cg_ascii_lower(low, name, nlen);
        h->nv_arena.len += nlen;
        name = low;
    }
    if (connection_specific(name, nlen))
        return 0;
    if (*count == h->nva_cap) {
        size_t cap = h->nva_cap ? 2 * h->nva_cap : 16;
        nghttp2_nv *nva = realloc(h->nva, cap * sizeof(*nva));
        if (!nva)
            return -1;
        h->nva = nva;
        h->nva_cap = cap;
    }
    nghttp2_nv *nv = &h->nva[(*count)++];
    nv->name = (uint8_t *)(uintptr_t)name;
    nv->namelen = nlen;
    nv->value = (uint8_t *)(uintptr_t)value;
    nv->valuelen = vlen;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
    return 0;
}

/* h->nva[0..*count) for a head: ":status" unless status is 0 (trailers),
 * then `fields`, then the "name: value\r\n" `lines`; connection-specific
 * fields dropped. Points into `fields`, `lines` and h: valid until the next
 * call, while those are. 0 or -1 (memory). */
static int nv_build(cg_h2 *h, int status, const cg_fields *fields, const char *lines,
                    size_t lines_len, size_t *count)
{
    *count = 0;
    cg_buf_reset(&h->nv_arena);
    /* Room for every name lowercased: the arena never moves while built. */
    if (cg_buf_reserve(&h->nv_arena, (fields ? fields->buf.len : 0) + lines_len + 1) < 0)
        return -1;
    if (status) {
        h->status_digits[0] = (char)('0' + status / 100 % 10);
        h->status_digits[1] = (char)('0' + status / 10 % 10);
        h->status_digits[2] = (char)('0' + status % 10);
        if (nv_add(h, count, ":status", 7, h->status_digits, 3) < 0)
            return -1;
    }
    if (fields) {
        size_t pos = 0;
        cg_field f;
        while (cg_fields_next(fields, &pos, &f))
            if (nv_add(h, count, f.name, f.name_len, f.value, f.value_len) < 0)
                return -1;
    }
    const char *p = lines, *end = lines ? lines + lines_len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)((eol ? eol : end) - p));
        if (!eol || !colon)
            break;
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (nv_add(h, count, p, (size_t)(colon - p), v, (size_t)(ve - v)) < 0)
            return -1;
        p = eol + 1;
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    cg_h2 *h = ud;
    h2_stream *s = source->ptr;
    size_t avail = s->queued;
    size_t n = avail < length ? avail : length;
    (void)session;
    (void)id;
    (void)buf;
    /* The bytes are copied once, by send_data, straight into the output. */
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == avail && s->out_end && (!s->want_trailers || s->have_trailers)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        s->complete = 1;
        if (s->want_trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            size_t nv = 0;
            if (s->trailers.n && nv_build(h, 0, &s->trailers, NULL, 0, &nv) == 0)
                nghttp2_submit_trailer(h->session, s->id, h->nva, nv);
            else
                nghttp2_submit_trailer(h->session, s->id, NULL, 0);
        }
    } else if (n == 0) {
        s->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* A DATA frame read_body sized: its header and `length` body bytes go from
 * the stream's queue to the output cg_h2_send is filling (no padding is
 * ever asked for); pieces sent are given back. */
static int send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *ud)
{
    cg_h2 *h = ud;
    h2_stream *s = source->ptr;
    (void)session;
    (void)frame;
    if (!h->send_out || length > s->queued)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (h->send_out->len >= h->send_limit)
        return NGHTTP2_ERR_WOULDBLOCK; /* this round is full: the next call sends it */
    if (cg_buf_reserve(h->send_out, CG_H2_FRAME_HEADER + length) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    cg_buf_append(h->send_out, framehd, CG_H2_FRAME_HEADER);
    s->queued -= length;
    while (length) {
        h2_piece *p = s->out;
        size_t n = p->len < length ? p->len : length;
        cg_buf_append(h->send_out, p->data, n);
        p->data += n;
        p->len -= n;
        length -= n;
        if (p->len == 0)
            out_pop(h, s);
    }
    if (s->user && h->ev->on_drained)
        h->ev->on_drained(h->ctx, s->user, s->queued);
    return 0;
}

int cg_h2_submit_head(cg_h2 *h, int32_t id, int status, const cg_fields *fields, const char *lines,
                      size_t lines_len, unsigned flags)
{
    h2_stream *s = stream_of(h, id);
    size_t n;
    if (!s || s->responded || nv_build(h, status, fields, lines, lines_len, &n) < 0)
        return -1;
    if (status < 200)
        return nghttp2_submit_headers(h->session, NGHTTP2_FLAG_NONE, id, NULL, h->nva, n, NULL) < 0
                   ? -1
                   : 0;
    s->responded = 1;
    if (flags & CG_H2_END_STREAM) {
        s->complete = 1;
        return nghttp2_submit_response(h->session, id, h->nva, n, NULL) < 0 ? -1 : 0;
    }
    nghttp2_data_provider prd;
    prd.source.ptr = s;
    prd.read_callback = read_body;
    s->want_trailers = (flags & CG_H2_TRAILERS) != 0;
    return nghttp2_submit_response(h->session, id, h->nva, n, &prd) < 0 ? -1 : 0;
}

/* The data source waited for bytes that are there now. */
static void resume(cg_h2 *h, h2_stream *s)
{
    if (s->deferred) {
        s->deferred = 0;
        nghttp2_session_resume_data(h->session, s->id);
    }
}

int cg_h2_write(cg_h2 *h, int32_t id, const char *data, size_t len, void *owner, int end)
{
    h2_stream *s = stream_of(h, id);
    if (!s || !s->responded || s->out_end)
        return -1;
    if (len && out_push(h, s, data, len, owner) < 0)
        return -1;
    if (end)
        s->out_end = 1;
    if (len || end)
        resume(h, s);
    return 0;
}

int cg_h2_trailers(cg_h2 *h, int32_t id, const cg_fields *fields)
{
    h2_stream *s = stream_of(h, id);
    if (!s || !s->want_trailers || s->have_trailers)
        return -1;
    cg_field f;
    size_t pos = 0;
    while (fields && cg_fields_next(fields, &pos, &f))
        if (cg_fields_add(&s->trailers, f.name, f.name_len, f.value, f.value_len) < 0)
            return -1;
    s->have_trailers = 1;
    resume(h, s);
    return 0;
}

size_t cg_h2_queued(const cg_h2 *h, int32_t id)
{
    h2_stream *s = stream_of(h, id);
    return s ? s->queued : 0;
}

void cg_h2_reset(cg_h2 *h, int32_t id, uint32_t error_code)
{
    h2_stream *s = stream_of(h, id);
    if (s)
        s->complete = 1; /* not a client's abandoned stream */
    if (id > h->max_refused_id)
        h->max_refused_id = id;
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, id, error_code);
}

void cg_h2_consume(cg_h2 *h, int32_t id, size_t n)
{
    h2_stream *s = stream_of(h, id);
    if (!s || n == 0)
        return;
    if (n > s->received - s->consumed)
        n = s->received - s->consumed;
    s->consumed += n;
    if (n)
        nghttp2_session_consume(h->session, id, n);
}

void cg_h2_drain(cg_h2 *h)
{
    h->draining = 1;
}

void cg_h2_goaway(cg_h2 *h)
{
    int32_t last = nghttp2_session_get_last_proc_stream_id(h->session);
    if (last < h->goaway_last)
        h->goaway_last = last;
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
}

void cg_h2_terminate(cg_h2 *h, uint32_t error_code)
{
    nghttp2_session_terminate_session(h->session, error_code);
}

size_t cg_h2_open_streams(const cg_h2 *h)
{
    return h->nstreams;
}

int cg_h2_failed(const cg_h2 *h)
{
    return h->fatal;
}

const char *cg_h2_error(const cg_h2 *h)
{
    return h->error ? h->error : "protocol error";
}

/* ---- nghttp2's memory -----------------------------------------------------
 * nghttp2 makes a 16 KiB buffer for outbound frames with each session, of
 * which an idle connection has used a few dozen bytes (its SETTINGS, a head;
 * bodies never pass through it). From malloc it would cost its full size in
 * resident memory wherever the heap reuses freed pages; in pages of its own
 * only the pages written count, and cg_h2_shrink gives even those back. */
#define CG_H2_FRAMEBUF (9 + 1 + 16384) /* its size in nghttp2 1.52 and since */

static void *mem_malloc(size_t size, void *ud)
{
    cg_h2 *h = ud;
    /* Known by its size while the session is made: any other block falls
     * back to malloc, whatever a later nghttp2 allocates there. */
    if (h->creating && !h->paged && size == CG_H2_FRAMEBUF) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            h->paged = p;
            return p;
        }
    }
    return malloc(size);
}

static void mem_free(void *ptr, void *ud)
{
    cg_h2 *h = ud;
    if (ptr && ptr == h->paged) {
        munmap(ptr, CG_H2_FRAMEBUF);
        h->paged = NULL;
        return;
    }
    free(ptr);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    return calloc(n, size);
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    cg_h2 *h = ud;
    if (!ptr) /* how nghttp2 allocates its buffers, the frame buffer included */
        return mem_malloc(size, ud);
    if (ptr == h->paged) { /* nghttp2 does not grow it; handled all the same */
        void *q = malloc(size);
        if (!q)
            return NULL;
        memcpy(q, ptr, size < CG_H2_FRAMEBUF ? size : CG_H2_FRAMEBUF);
        mem_free(ptr, h);
        return q;
    }
    return realloc(ptr, size);
}

void cg_h2_shrink(cg_h2 *h)
{
    /* Frames are made in the buffer only while nghttp2 wants to write; the
     * next one starts afresh, so zero pages are as good as old bytes. */
    if (h->paged && !nghttp2_session_want_write(h->session))
        (void)madvise(h->paged, CG_H2_FRAMEBUF, MADV_DONTNEED);
    cg_buf_free(&h->nv_arena);
    free(h->nva);
    h->nva = NULL;
    h->nva_cap = 0;
}

/* ---- the session ----------------------------------------------------------- */

cg_h2 *cg_h2_new(const cg_h2_config *cfg, const cg_http1_limits *lim, const cg_h2_events *ev,
                 void *ctx)
{
    cg_h2 *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    if (!h)
        return NULL;
    h->cfg = *cfg;
    h->lim = *lim;
    h->ev = ev;
    h->ctx = ctx;
    h->goaway_last = INT32_MAX;
    h->tokens = (double)cfg->glitch_burst;
    h->refilled = now_seconds();
    cg_buf_init(&h->nv_arena);
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
    /* The window reopens as the app reads (cg_h2_consume), not on arrival. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
#if CG_HAVE_NGHTTP2_MAX_CONTINUATIONS
    /* A header block may span this many CONTINUATION frames (nghttp2's
     * default, 8, refuses blocks a client cut into small frames). */
    nghttp2_option_set_max_continuations(opt, 64);
#endif
    nghttp2_mem mem = {h, mem_malloc, mem_free, mem_calloc, mem_realloc};
    h->creating = 1;
    int rc = nghttp2_session_server_new3(&h->session, cbs, h, opt, &mem);
    h->creating = 0;
    if (rc != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_list_size},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    size_t niv = sizeof(iv) / sizeof(iv[0]) - (cfg->enable_connect_protocol ? 0 : 1);
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, niv) != 0)
        goto fail;
    if (cfg->connection_window_size > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)cfg->connection_window_size) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return h;
fail:
    if (cbs)
        nghttp2_session_callbacks_del(cbs);
    if (opt)
        nghttp2_option_del(opt);
    if (h->session)
        nghttp2_session_del(h->session);
    free(h);
    return NULL;
}

void cg_h2_free(cg_h2 *h)
{
    if (!h)
        return;
    while (h->streams) {
        h2_stream *s = h->streams;
        void *user = s->user;
        size_t unsent = s->queued;
        nghttp2_session_set_stream_user_data(h->session, s->id, NULL);
        s->user = NULL;
        stream_free(h, s);
        if (user)
            h->ev->on_close(h->ctx, user, NGHTTP2_CANCEL, unsent);
    }
    h->freeing = 1;
    nghttp2_session_del(h->session);
    cg_buf_free(&h->nv_arena);
    free(h->nva);
    free(h);
}

int cg_h2_recv(cg_h2 *h, const char *data, size_t len)
{
    if (h->fatal)
        return -1;
    ssize_t rc = nghttp2_session_mem_recv(h->session, (const uint8_t *)data, len);
    if (!h->fatal && rc >= 0)
        return 0;
    if (!h->fatal) {
        uint32_t code = NGHTTP2_INTERNAL_ERROR;
        const char *why = nghttp2_strerror((int)rc);
        if (rc == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            code = NGHTTP2_PROTOCOL_ERROR;
            why = "invalid connection preface";
        } else if (rc == NGHTTP2_ERR_FLOODED) {
            code = NGHTTP2_ENHANCE_YOUR_CALM;
            why = "flooded with frames that need an answer";
#if CG_HAVE_NGHTTP2_MAX_CONTINUATIONS
        } else if (rc == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
            code = NGHTTP2_ENHANCE_YOUR_CALM;
            why = "a header block in too many frames";
#endif
        }
        fail_in_callback(h, code, why);
    }
    nghttp2_session_terminate_session(h->session, h->fail_code);
    return -1;
}

int cg_h2_send(cg_h2 *h, cg_buf *out, size_t max)
{
    size_t start = out->len;
    int rc = 0;
    h->send_out = out; /* where send_data puts DATA frames, in order */
    h->send_limit = start + max;
    while (out->len - start < max) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(h->session, &p);
        if (n < 0) {
            h->fatal = 1;
            h->error = nghttp2_strerror((int)n);
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        if (cg_buf_append(out, p, (size_t)n) < 0) {
            rc = -1;
            break;
        }
    }
    h->send_out = NULL;
    return rc;
}

int cg_h2_want_write(const cg_h2 *h)
{
    return nghttp2_session_want_write(h->session);
}

int cg_h2_done(const cg_h2 *h)
{
    return !nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session);
}

#endif
