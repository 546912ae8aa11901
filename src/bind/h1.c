/* HTTP/1.1 over a connection (see h1.h).
 *
 * Heads are parsed in place in the connection's input; one request is
 * active at a time, so responses leave in request order and pipelined
 * requests wait in the input (reading pauses when too much waits). Body
 * bytes go to the active cycle; reading pauses while the app is behind.
 * Timeouts are the connection's deadline, acted on from the server's ticker.
 * The active request's cg_stream turns the ASGI cycle's neutral sends into
 * HTTP/1 framing (core/http1.c serializes the head). */
#include "protocols.h"

#include <stddef.h>
#include <string.h>

#include "asgi.h"
#include "clock.h"
#include "h2.h"
#include "meter.h"

/* The most unread bytes kept before reading pauses (pipelined data waiting,
 * or body the app has not taken). */
#define CG_MAX_PENDING 65536
/* Bodies up to this size are copied next to the head (one write); larger ones
 * are written as their own object, without a copy. */
#define CG_COPY_BODY_MAX (64 * 1024)

enum h1_phase {
    H1_HEAD,     /* waiting for (more of) a request head */
    H1_BODY,     /* a cycle is active and its body is still arriving */
    H1_RESPONSE, /* a cycle is active, its body is complete */
    H1_WS,       /* upgraded to a WebSocket: bytes go to the session */
};

enum h1_body_mode { H1_BODY_NONE, H1_BODY_LENGTH, H1_BODY_CHUNKED };

typedef struct cg_h1 {
    cg_stream stream; /* the active request's (one at a time) */
    cg_conn *conn;    /* borrowed: this state lives as long as the connection */
    cg_http1_parser parser;
    cg_http1_chunked chunked;
    int phase;             /* enum h1_phase; the connection's `closed` overrides it */
    int body_mode;         /* enum h1_body_mode of the active request */
    long long body_left;   /* H1_BODY_LENGTH: bytes still to arrive */
    cg_cycle *cycle;       /* strong: the active cycle, or NULL */
    cg_ws *ws;             /* strong: the WebSocket session after an upgrade, or NULL */
    int minor_version;     /* of the active request */
    const char *file_tail; /* what follows a file sent by send_file (a chunk's end) */
    size_t file_tail_len;
    unsigned keep_alive : 1;       /* the connection may carry the next request */
    unsigned chunked_out : 1;      /* the response uses chunked framing */
    unsigned no_body : 1;          /* HEAD, 204, 304: no body bytes on the wire */
    unsigned deadline_is_head : 1; /* the deadline is the request-head timeout (answer 408) */
    unsigned served : 1;           /* at least one request started on it */
    unsigned processing : 1;       /* h1_process is running (calls into it return at once) */
    unsigned reprocess : 1;        /* h1_process was asked to run again while running */
} cg_h1;

static const cg_stream_ops h1_stream_ops;

static inline cg_h1 *conn_h1(const cg_conn *c)
{
    return (cg_h1 *)c->proto_state;
}

static inline cg_h1 *stream_h1(cg_stream *s)
{
    return (cg_h1 *)((char *)s - offsetof(cg_h1, stream));
}

static void h1_process(cg_h1 *h);

/* ---- reading and deadlines ----------------------------------------------- */

/* --timeout-request-body-idle: while a body is arriving, the deadline is that
 * long after the latest read; none while the client is not expected to send
 * (reading paused because the app is behind, or an `Expect: 100-continue`
 * the app has not answered by calling receive()). */
static void h1_arm_body_deadline(cg_h1 *h)
{
    cg_conn *c = h->conn;
    double t = c->server->cfg->timeout_request_body_idle;
    int client_waits = c->read_paused || (h->cycle && cg_cycle_waits_continue(h->cycle));
    if (h->phase == H1_BODY && !c->closed)
        c->deadline = t > 0 && !client_waits ? cg_monotonic_now() + t : 0;
}

static void h1_set_reading(cg_h1 *h, int on)
{
    cg_conn *c = h->conn;
    if (!c->transport || (on ? !c->read_paused : c->read_paused))
        return;
    cg_conn_set_reading(c, on);
    h1_arm_body_deadline(h);
}

/* Resumes reading if it was paused for backpressure and no longer must be. */
static void h1_maybe_resume(cg_h1 *h)
{
    cg_conn *c = h->conn;
    if (!c->read_paused || c->closed)
        return;
    if (h->cycle && cg_cycle_body_pending(h->cycle) >= CG_MAX_PENDING)
        return;
    if (h->phase == H1_RESPONSE && cg_buf_unread(&c->in) >= CG_MAX_PENDING)
        return;
    if (h->ws && (cg_ws_queue_full(h->ws) || c->write_paused))
        return;
    h1_set_reading(h, 1);
}

/* ---- writing --------------------------------------------------------------- */

/* Writes a whole response of our own (an error answer): head and `body`. */
static int h1_write_response(cg_h1 *h, const cg_http1_response *r, const char *body,
                             size_t body_len)
{
    size_t head_len = cg_http1_head_size(r);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(head_len + body_len));
    if (!out)
        return -1;
    char *p = PyBytes_AS_STRING(out);
    p += cg_http1_write_head(p, r);
    memcpy(p, body, body_len);
    int rc = cg_conn_write_obj(h->conn, out);
    Py_DECREF(out);
    return rc;
}

/* Answers a request the server refuses with `status` (its reason as a text
 * body), connection: close, and closes. A 426 refuses a WebSocket upgrade
 * and names the version spoken. */
static void h1_reject(cg_h1 *h, int status)
{
    cg_conn *c = h->conn;
    const char *reason = cg_http1_reason(status);
    static const char ctype[] = "text/plain; charset=utf-8";
    int upgrade = status == 426;
    cg_fields fields;
    cg_buf tmp;
    cg_http1_response r = {status,          &fields,        NULL,         0,
                           CG_FRAME_LENGTH, strlen(reason), CG_CONN_CLOSE};

    cg_fields_init(&fields);
    cg_buf_init(&tmp);
    if ((upgrade && cg_fields_add(&fields, "sec-websocket-version", 21, "13", 2) < 0) ||
        cg_fields_add(&fields, "content-type", 12, ctype, sizeof(ctype) - 1) < 0 ||
        (!upgrade &&
         cg_server_head_defaults(c->server, CG_HEAD_SERVER | CG_HEAD_DATE | CG_HEAD_EXTRA, &tmp,
                                 &r.defaults, &r.defaults_len) < 0) ||
        h1_write_response(h, &r, reason, strlen(reason)) < 0)
        PyErr_Clear(); /* closing is all that is left */
    cg_fields_free(&fields);
    cg_buf_free(&tmp);
    cg_buf_reset(&c->in);
    cg_conn_close(c);
}

/* h1_reject for a request the server refuses itself (a malformed or too
 * large head, a timeout, a refused upgrade, a broken body): counted by
 * status in the metrics. */
static void h1_refuse(cg_h1 *h, int status)
{
    cg_meter_reject(h->conn->server, status);
    h1_reject(h, status);
}

/* The framing of a response from its head (and, when the whole body is
 * `len` bytes in this first send, that length). */
static void h1_frame(cg_h1 *h, const cg_resp_head *head, size_t len, int more, cg_http1_response *r)
{
    h->no_body = head->no_body;
    h->chunked_out = 0;
    if (head->close || h->conn->server->should_exit)
        h->keep_alive = 0;
    r->status = head->status;
    r->fields = head->fields;
    r->length = 0;
    if (head->upgrade || head->no_body || head->length >= 0) {
        r->framing = CG_FRAME_NONE; /* HEAD keeps the app's content-length */
    } else if (!more && !(head->chunked && h->minor_version == 1)) {
        r->framing = CG_FRAME_LENGTH;
        r->length = len;
    } else if (h->minor_version == 1) {
        r->framing = CG_FRAME_CHUNKED;
        h->chunked_out = 1;
    } else {
        r->framing = CG_FRAME_CLOSE; /* HTTP/1.0: the body ends when the connection does */
        h->keep_alive = 0;
    }
    if (head->upgrade)
        r->connection = CG_CONN_NONE;
    else if (!h->keep_alive)
        r->connection = CG_CONN_CLOSE;
    else
        r->connection = h->minor_version == 0 ? CG_CONN_KEEP_ALIVE : CG_CONN_NONE;
}

/* What goes on the wire around `len` body bytes of one send: the head (when
 * there is one), a chunk's size line, and what follows the bytes (a chunk's
 * end, the last chunk). `tmp` holds the server's head lines until the head
 * is written. */
typedef struct h1_pieces {
    cg_http1_response r;
    size_t head_len, ch_len, tail_len;
    char chunk_head[CG_HTTP1_CHUNK_PREFIX_MAX];
    const char *tail;
} h1_pieces;

/* Frames a send (see h1_send); *len becomes 0 when no body goes on the
 * wire. 0, or -1 with an exception. */
static int h1_pieces_make(cg_h1 *h, const cg_resp_head *head, size_t *len, int more, cg_buf *tmp,
                          h1_pieces *p)
{
    p->head_len = p->ch_len = p->tail_len = 0;
    p->tail = "";
    if (head) {
        h1_frame(h, head, *len, more, &p->r);
        if (cg_server_head_defaults(h->conn->server, head->defaults, tmp, &p->r.defaults,
                                    &p->r.defaults_len) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        p->head_len = cg_http1_head_size(&p->r);
    }
    if (h->no_body)
        *len = 0;
    if (h->chunked_out && *len > 0)
        p->ch_len = cg_http1_chunk_prefix(p->chunk_head, *len);
    if (h->chunked_out) {
        if (*len > 0 && !more) {
            p->tail = "\r\n0\r\n\r\n";
            p->tail_len = 7;
        } else if (*len > 0) {
            p->tail = "\r\n";
            p->tail_len = 2;
        } else if (!more) {
            p->tail = "0\r\n\r\n";
            p->tail_len = 5;
        }
    }
    return 0;
}

/* Writes the head and chunk size line of p at out; returns the end. */
static char *h1_pieces_write_pre(const h1_pieces *p, char *out)
{
    if (p->head_len)
        out += cg_http1_write_head(out, &p->r);
    memcpy(out, p->chunk_head, p->ch_len);
    return out + p->ch_len;
}

static int h1_send(cg_stream *s, const cg_resp_head *head, const char *data, size_t len,
                   PyObject *obj, int more)
{
    cg_h1 *h = stream_h1(s);
    cg_conn *c = h->conn;
    h1_pieces pc;
    cg_buf tmp;
    int rc = 0;

    if (c->closed)
        return 0;
    cg_buf_init(&tmp);
    if (h1_pieces_make(h, head, &len, more, &tmp, &pc) < 0) {
        rc = -1;
        goto done;
    }
    size_t total = pc.head_len + pc.ch_len + len + pc.tail_len;
    if (total == 0)
        goto done;
    if (len <= CG_COPY_BODY_MAX || !obj) {
        /* The last piece of a response may be held to leave together with
         * the next pipelined response (cg_conn_hold), else one new bytes. */
        PyObject *out = NULL;
        char *p = more ? NULL : cg_conn_hold(c, total);
        if (!p) {
            out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
            if (!out) {
                rc = -1;
                goto done;
            }
            p = PyBytes_AS_STRING(out);
        }
        p = h1_pieces_write_pre(&pc, p);
        if (len)
            memcpy(p, data, len);
        p += len;
        memcpy(p, pc.tail, pc.tail_len);
        if (out) {
            rc = cg_conn_write_obj(c, out);
            Py_DECREF(out);
        }
    } else {
        /* A large body: written as its own object, no copy of it. */
        if (pc.head_len + pc.ch_len) {
            PyObject *pre = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(pc.head_len + pc.ch_len));
            if (!pre) {
                rc = -1;
                goto done;
            }
            h1_pieces_write_pre(&pc, PyBytes_AS_STRING(pre));
            rc = cg_conn_write_obj(c, pre);
            Py_DECREF(pre);
        }
        if (rc == 0)
            rc = cg_conn_write_obj(c, obj);
        if (rc == 0 && pc.tail_len)
            rc = cg_conn_write(c, pc.tail, pc.tail_len);
    }
done:
    cg_buf_free(&tmp);
    return rc;
}

/* A file body goes by sendfile(2) from this size on (cleartext only); a
 * smaller one is read into the response's own write, which costs less than
 * handing the socket over and back (measured: docs/ARCHITECTURE.md). */
#define CG_SENDFILE_MIN (256 * 1024)

static int h1_send_file(cg_stream *s, const cg_resp_head *head, int fd, long long offset,
                        long long count, int more)
{
    cg_h1 *h = stream_h1(s);
    cg_conn *c = h->conn;
    h1_pieces pc;
    cg_buf tmp;
    size_t len = (size_t)count;
    int rc;

    if (c->closed || cg_conn_is_tls(c) || count < CG_SENDFILE_MIN || (head && head->no_body) ||
        (!head && h->no_body))
        return 0;
    cg_buf_init(&tmp);
    if (h1_pieces_make(h, head, &len, more, &tmp, &pc) < 0) {
        cg_buf_free(&tmp);
        return -1;
    }
    PyObject *pre = NULL;
    if (pc.head_len + pc.ch_len) {
        pre = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(pc.head_len + pc.ch_len));
        if (!pre) {
            cg_buf_free(&tmp);
            return -1;
        }
        h1_pieces_write_pre(&pc, PyBytes_AS_STRING(pre));
    }
    cg_buf_free(&tmp);
    rc = cg_conn_send_file(c, pre, fd, offset, count);
    Py_XDECREF(pre);
    if (rc != 0)
        return rc < 0 ? -1
                      : 0; /* no socket to do it on: the caller sends the bytes (framed alike) */
    h->file_tail = pc.tail;
    h->file_tail_len = pc.tail_len;
    return 1;
}

static PyObject *h1_poll_file(cg_stream *s, PyObject **fut, long long *sent)
{
    cg_h1 *h = stream_h1(s);
    cg_conn *c = h->conn;
    PyObject *r = cg_conn_poll_file(c, fut);
    *sent = c->sf_sent;
    if (r && h->file_tail_len) {
        size_t n = h->file_tail_len;
        h->file_tail_len = 0;
        if (!c->closed && cg_conn_write(c, h->file_tail, n) < 0) {
            Py_DECREF(r);
            return NULL;
        }
    }
    return r;
}

static int h1_send_informational(cg_stream *s, int status, const cg_fields *fields)
{
    cg_h1 *h = stream_h1(s);
    cg_http1_response r = {status, fields, NULL, 0, CG_FRAME_NONE, 0, CG_CONN_NONE};
    if (h->minor_version == 0 || h->conn->closed)
        return 0; /* HTTP/1.0 has no interim responses */
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cg_http1_head_size(&r));
    if (!out)
        return -1;
    cg_http1_write_head(PyBytes_AS_STRING(out), &r);
    int rc = cg_conn_write_obj(h->conn, out);
    Py_DECREF(out);
    if (rc < 0)
        return -1;
    h1_arm_body_deadline(h); /* the client may send now */
    return 0;
}

static int h1_send_trailers(cg_stream *s, const cg_fields *fields)
{
    (void)s;
    (void)fields;
    return 0; /* never offered on HTTP/1.1: the body already ended */
}

static void h1_fail(cg_stream *s, int status)
{
    h1_reject(stream_h1(s), status);
}

static void h1_abort(cg_stream *s)
{
    cg_conn_abort(stream_h1(s)->conn);
}

static void h1_close(cg_stream *s)
{
    cg_conn_close(stream_h1(s)->conn);
}

static int h1_write_blocked(cg_stream *s)
{
    return stream_h1(s)->conn->write_paused;
}

static PyObject *h1_poll_drain(cg_stream *s, PyObject **fut)
{
    return cg_conn_poll_drain(stream_h1(s)->conn, fut);
}

static void h1_pause(cg_stream *s)
{
    h1_set_reading(stream_h1(s), 0);
}

static void h1_settle(cg_stream *s)
{
    cg_conn_settle(stream_h1(s)->conn);
}

static void h1_consumed(cg_stream *s)
{
    cg_h1 *h = stream_h1(s);
    cg_conn *c = h->conn;
    Py_INCREF(c);
    h1_maybe_resume(h);
    if (h->ws && h->phase == H1_WS && !c->closed && cg_buf_unread(&c->in))
        cg_ws_feed(h->ws, &c->in); /* frames that waited for room */
    Py_DECREF(c);
}

/* ---- request lifecycle --------------------------------------------------- */

/* Ends the active cycle's hold on the connection. */
static void h1_detach_cycle(cg_h1 *h)
{
    cg_cycle *cy = h->cycle;
    if (!cy)
        return;
    h->cycle = NULL;
    cg_cycle_detach(cy);
    Py_DECREF(cy);
}

/* The active cycle finished its response; continue with pipelined data. */
static void h1_cycle_complete(cg_h1 *h, int keep_alive)
{
    cg_conn *c = h->conn;
    cg_server *srv = c->server;
    int body_done = h->phase != H1_BODY;

    h1_detach_cycle(h);
    if (c->closed)
        return;
    if (!keep_alive || !body_done || srv->should_exit) {
        cg_conn_close(c);
        return;
    }
    h->phase = H1_HEAD;
    cg_http1_parser_init(&h->parser);
    h->deadline_is_head = 0;
    c->deadline = cg_monotonic_now() + srv->cfg->timeout_keep_alive;
    if (cg_buf_unread(&c->in) > 0)
        h1_process(h);
    else
        cg_conn_settle(c);
    h1_maybe_resume(h);
}

static void h1_finish(cg_stream *s, int reusable)
{
    cg_h1 *h = stream_h1(s);
    cg_conn *c = (cg_conn *)Py_NewRef(h->conn);
    h1_cycle_complete(h, reusable && h->keep_alive);
    Py_DECREF(c);
}

static const cg_stream_ops h1_stream_ops = {
    .send = h1_send,
    .send_informational = h1_send_informational,
    .send_trailers = h1_send_trailers,
    .fail = h1_fail,
    .abort = h1_abort,
    .finish = h1_finish,
    .close = h1_close,
    .write_blocked = h1_write_blocked,
    .poll_drain = h1_poll_drain,
    .consumed = h1_consumed,
    .pause = h1_pause,
    .settle = h1_settle,
    .send_file = h1_send_file,
    .poll_file = h1_poll_file,
};

static void h1_body_complete(cg_h1 *h)
{
    h->phase = H1_RESPONSE;
    h->conn->deadline = 0;
    cg_cycle_body_done(h->cycle);
}

/* Ends a request whose body cannot be read to its end: the app gets
 * http.disconnect; the client gets `status` (connection: close) before the
 * response started, a reset while it is unfinished, else a close. */
static void h1_abort_body(cg_h1 *h, int status)
{
    cg_cycle *cy = h->cycle;
    if (cy)
        cg_cycle_disconnect(cy);
    if (cy && cg_cycle_response_none(cy))
        h1_refuse(h, status);
    else if (cy && cg_cycle_response_unfinished(cy))
        cg_conn_abort(h->conn); /* an unfinished response must not look finished */
    else
        cg_conn_close(h->conn);
}

/* Feeds body bytes of the active cycle from the input. Returns 0 to go on, 1
 * to stop processing for now, -1 on an error (exception set). */
static int h1_feed_body(cg_h1 *h)
{
    cg_conn *c = h->conn;
    cg_cycle *cy = h->cycle;
    size_t avail = cg_buf_unread(&c->in);
    const char *p = c->in.data + c->in.pos;

    if (avail == 0)
        return 1;
    if (h->body_mode == H1_BODY_LENGTH) {
        size_t n = avail < (unsigned long long)h->body_left ? avail : (size_t)h->body_left;
        if (cg_cycle_feed(cy, p, n) < 0)
            return -1;
        cg_buf_consume(&c->in, n);
        h->body_left -= (long long)n;
        if (h->body_left == 0)
            h1_body_complete(h);
        return 0;
    }
    for (;;) {
        size_t used = 0;
        cg_slice data = {NULL, 0};
        int rc = cg_http1_chunked_decode(&h->chunked, p, avail, &used, &data);
        if (rc == CG_CHUNKED_DATA && cg_cycle_feed(cy, data.base, data.len) < 0)
            return -1;
        cg_buf_consume(&c->in, used);
        p += used;
        avail -= used;
        if (rc == CG_CHUNKED_DONE) {
            h1_body_complete(h);
            return 0;
        }
        if (rc == CG_CHUNKED_ERROR) {
            cg_log(&c->server->st->log, CG_WARNING, "Invalid HTTP request body received: %s",
                   h->chunked.error ? h->chunked.error : "malformed chunked body");
            h1_abort_body(h, 400);
            return 1;
        }
        if (rc == CG_CHUNKED_MORE || avail == 0)
            return 1;
    }
}

/* Feeds the active cycle what the input holds of its body. Returns 0, or -1
 * when the connection was closed (a broken body). Reading pauses while the
 * app is behind (bounded memory). */
static int h1_feed_available_body(cg_h1 *h)
{
    cg_conn *c = h->conn;
    while (h->phase == H1_BODY && !c->closed) {
        int rc = h1_feed_body(h);
        if (rc < 0) {
            PyErr_Clear();
            cg_conn_close(c);
            return -1;
        }
        if (c->closed)
            return -1;
        if (h->phase == H1_BODY && h->cycle && cg_cycle_body_pending(h->cycle) >= CG_MAX_PENDING) {
            h1_set_reading(h, 0); /* the app is behind: bound the memory */
            return 0;
        }
        if (rc == 1)
            return 0;
    }
    return c->closed ? -1 : 0;
}

/* A request could not be started (the exception is set): 500 and close.
 * SystemExit or KeyboardInterrupt (out of an app's eager first step) instead
 * ends the loop, as it does from any task step. */
static void h1_start_failed(cg_h1 *h)
{
    cg_server *srv = h->conn->server;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        cg_server_raise_soon(srv);
        cg_conn_close(h->conn);
        return;
    }
    cg_log_exception(&srv->st->log, "Exception while starting a request");
    h1_reject(h, 500);
}

/* Makes the parsed head the active request: its cycle, its body framing.
 * Returns 0 with *scope set (NULL when answered without the app), or -1. */
static int h1_start_request(cg_h1 *h, const cg_http1_request *req, PyObject **scope)
{
    cg_server *srv = h->conn->server;
    cg_cycle *cy = cg_cycle_new(srv, &h->stream, req);
    *scope = NULL;
    if (!cy)
        return -1;
    h->served = 1;
    /* The connection owns the cycle until its response completes. */
    Py_XSETREF(h->cycle, cy);
    h->minor_version = req->version;
    h->keep_alive = req->keep_alive;
    if (req->chunked) {
        h->body_mode = H1_BODY_CHUNKED;
        cg_http1_chunked_init(&h->chunked, &srv->limits);
        h->phase = H1_BODY;
    } else if (req->content_length > 0) {
        h->body_mode = H1_BODY_LENGTH;
        h->body_left = req->content_length;
        h->phase = H1_BODY;
    } else {
        h->body_mode = H1_BODY_NONE;
        h->phase = H1_RESPONSE;
        cg_cycle_body_done(cy);
    }
    if (cg_cycle_begin(cy, req, scope) < 0)
        return -1;
    if (*scope &&
        cg_cycle_offer_extensions(cy, *scope, CG_EXT_PATHSEND | CG_EXT_ZEROCOPYSEND) < 0) {
        Py_CLEAR(*scope);
        return -1;
    }
    return 0;
}

/* An upgrade request: the connection becomes the WebSocket session's. */
static int h1_start_websocket(cg_h1 *h, const cg_http1_request *req)
{
    cg_server *srv = h->conn->server;
    cg_ws *ws = NULL;
    h->minor_version = req->version;
    h->keep_alive = 0; /* a denial response ends the connection */
    int rc = cg_ws_start(srv, &h->stream, req, &ws);
    if (rc != 0)
        return rc;
    Py_XSETREF(h->ws, ws);
    h->phase = H1_WS;
    h->conn->deadline = 0;
    return 0;
}

static void h1_process_input(cg_h1 *h)
{
    cg_conn *c = h->conn;
    cg_server *srv = c->server;

    while (!c->closed) {
        if (h->phase == H1_HEAD) {
            size_t avail = cg_buf_unread(&c->in);
            cg_http1_request req;
            long rc;

            if (avail == 0)
                return;
            if (!h->deadline_is_head) {
                /* The head timeout counts from the first byte of the head. */
                h->deadline_is_head = 1;
                c->deadline = cg_monotonic_now() + srv->cfg->timeout_request_header;
            }
            memset(&req, 0, sizeof(req));
            req.headers = srv->hdrs;
            rc = cg_http1_parse_head(&h->parser, c->in.data + c->in.pos, avail, &srv->limits, &req);
            if (rc == CG_HTTP1_INCOMPLETE) {
                /* --h11-max-incomplete-event-size: h11's bound on a head
                 * still arriving. */
                if (srv->cfg->h11_max_incomplete_event_size > 0 &&
                    avail > (size_t)srv->cfg->h11_max_incomplete_event_size) {
                    cg_log(&srv->st->log, CG_WARNING,
                           "Invalid HTTP request received: request head too long");
                    h1_refuse(h, 431);
                }
                return;
            }
            if (rc < 0) {
                cg_log(&srv->st->log, CG_WARNING, "Invalid HTTP request received: %s",
                       h->parser.error ? h->parser.error : "malformed request");
                h1_refuse(h, (int)-rc);
                return;
            }
            c->deadline = 0;
            h->deadline_is_head = 0;
            if (cg_ws_is_upgrade(srv, &req)) {
                cg_conn_trace(c, "Upgrading to WebSocket");
                int ws_rc = h1_start_websocket(h, &req);
                if (ws_rc < 0) {
                    cg_log_exception(&srv->st->log, "Exception while starting a WebSocket");
                    h1_reject(h, 500);
                    return;
                }
                if (ws_rc > 0) {
                    h1_refuse(h, ws_rc); /* 426 or 400 */
                    return;
                }
                cg_buf_consume(&c->in, (size_t)rc);
                cg_conn_trace(c, "WebSocket connection made");
                continue;
            }
            PyObject *scope;
            if (h1_start_request(h, &req, &scope) < 0) {
                h1_start_failed(h);
                return;
            }
            /* The scope holds copies: the head's bytes can go. Body bytes
             * already here reach the cycle before its app starts, so an app
             * that completes in its first step finds them. */
            cg_buf_consume(&c->in, (size_t)rc);
            if (scope && h->phase == H1_BODY && h1_feed_available_body(h) < 0) {
                Py_DECREF(scope);
                return;
            }
            if (scope && !c->closed && cg_cycle_run(h->cycle, scope) < 0) {
                Py_DECREF(scope);
                h1_start_failed(h);
                return;
            }
            Py_XDECREF(scope);
            continue;
        }
        if (h->phase == H1_BODY) {
            if (h1_feed_available_body(h) < 0)
                return;
            if (h->phase == H1_BODY)
                return;
            continue;
        }
        if (h->phase == H1_WS) {
            cg_ws_feed(h->ws, &c->in);
            return;
        }
        /* H1_RESPONSE: pipelined bytes wait for the response. */
        if (cg_buf_unread(&c->in) >= CG_MAX_PENDING)
            h1_set_reading(h, 0);
        return;
    }
}

/* Processes what the input holds, then settles the output. Not re-entered: a
 * call made while it runs (an app that completes its response inside it)
 * only asks the running one to look at the input again. */
static void h1_process(cg_h1 *h)
{
    cg_conn *c = h->conn;
    if (h->processing) {
        h->reprocess = 1;
        return;
    }
    h->processing = 1;
    do {
        h->reprocess = 0;
        h1_process_input(h);
    } while (h->reprocess && !c->closed);
    h->processing = 0;
    h1_arm_body_deadline(h);
    cg_conn_settle(c);
}

/* ---- connection events (cg_proto_ops) ----------------------------------- */

static int h1_on_connect(cg_conn *c)
{
    cg_server *srv = c->server;
    cg_h1 *h = c->proto_state;
    if (!h) {
        h = PyMem_Calloc(1, sizeof(*h));
        if (!h) {
            PyErr_NoMemory();
            return -1;
        }
        c->proto_state = h;
    }
    h->conn = c;
    cg_proto_stream_init(&h->stream, c, &h1_stream_ops);
    h->phase = H1_HEAD;
    cg_http1_parser_init(&h->parser);
    c->deadline = cg_monotonic_now() + srv->cfg->timeout_keep_alive;
    if (srv->should_exit && c->deadline > cg_monotonic_now() + 1.0)
        c->deadline = cg_monotonic_now() + 1.0; /* its request is still served, if it comes soon */
    cg_conn_trace(c, "HTTP connection made");
    return 0;
}

static void h1_on_data(cg_conn *c)
{
    cg_h1 *h = conn_h1(c);
    const cg_proto_ops *h2c = c->server->h2c_proto;
    if (h2c && !h->served && h->phase == H1_HEAD && !c->closed) {
        /* RFC 9113 section 3.3: a client that knows the server speaks
         * HTTP/2 opens with its preface, which no HTTP/1 request matches. */
        size_t avail = cg_buf_unread(&c->in);
        if (cg_h2_preface_prefix(c->in.data + c->in.pos, avail)) {
            if (avail >= CG_H2_PREFACE_LEN)
                cg_conn_switch(c, h2c); /* h is freed */
            return;
        }
    }
    h1_process(h);
}

static void h1_on_writable(cg_conn *c)
{
    cg_h1 *h = conn_h1(c);
    if (h->ws) /* a WebSocket stopped reading while its output was backed up */
        h1_consumed(&h->stream);
}

static void h1_on_lost(cg_conn *c)
{
    cg_h1 *h = conn_h1(c);
    if (!h)
        return;
    cg_conn_trace(c, h->ws ? "WebSocket connection lost" : "HTTP connection lost");
    if (h->cycle) {
        cg_cycle_disconnect(h->cycle);
        h1_detach_cycle(h);
    }
    if (h->ws) {
        cg_ws *ws = h->ws;
        h->ws = NULL;
        cg_ws_stream_lost(ws);
        Py_DECREF(ws);
    }
}

static int h1_is_idle(const cg_conn *c)
{
    const cg_h1 *h = conn_h1(c);
    return h && !h->ws && !h->cycle && h->served && h->phase == H1_HEAD && !c->closed &&
           cg_buf_unread(&c->in) == 0;
}

static void h1_on_tick(cg_conn *c, double now)
{
    cg_h1 *h = conn_h1(c);
    cg_server *srv = c->server;
    if (!h)
        return;
    if (h->ws) {
        cg_ws_tick(h->ws, now);
        return;
    }
    if (c->deadline > 0 && now >= c->deadline) {
        c->deadline = 0;
        if (c->closed) {
            return;
        } else if (h->phase == H1_BODY) {
            cg_log(&srv->st->log, CG_DEBUG, "Request body made no progress in time");
            h1_abort_body(h, 408);
        } else if (h->deadline_is_head && cg_buf_unread(&c->in) > 0 && h->phase == H1_HEAD) {
            cg_log(&srv->st->log, CG_DEBUG, "Request head not received in time");
            h1_refuse(h, 408);
        } else {
            cg_conn_close(c);
        }
        return;
    }
    if (h->phase == H1_HEAD && !h->cycle && !c->closed && cg_buf_unread(&c->in) == 0)
        cg_conn_idle_tick(c);
}

static void h1_on_shutdown(cg_conn *c, double soon)
{
    cg_h1 *h = conn_h1(c);
    if (!h)
        return;
    if (h->ws) {
        cg_ws_shutdown(h->ws); /* 1012, then the app finishes within the bound */
    } else if (h->cycle) {
        cg_cycle_server_leaving(h->cycle); /* a stream hears http.disconnect */
    } else if (h1_is_idle(c)) {
        cg_conn_close(c);
    } else if (!c->closed && (c->deadline == 0 || c->deadline > soon)) {
        /* Accepted but its request not read yet: it is served (with
         * connection: close) if it comes soon; closing it now would lose it. */
        c->deadline = soon;
    }
}

static int h1_holds_output(cg_conn *c)
{
    cg_h1 *h = conn_h1(c);
    return h && (h->processing || (h->cycle && cg_cycle_before_first_step(h->cycle) && !c->closed));
}

static int h1_traverse(cg_conn *c, visitproc visit, void *arg)
{
    cg_h1 *h = conn_h1(c);
    if (h) {
        Py_VISIT(h->cycle);
        Py_VISIT(h->ws);
    }
    return 0;
}

static void h1_clear(cg_conn *c)
{
    cg_h1 *h = conn_h1(c);
    if (h) {
        Py_CLEAR(h->cycle);
        Py_CLEAR(h->ws);
    }
}

static void h1_free(cg_conn *c)
{
    h1_clear(c);
    PyMem_Free(c->proto_state);
    c->proto_state = NULL;
}

const cg_proto_ops cg_h1_proto = {
    .on_connect = h1_on_connect,
    .on_data = h1_on_data,
    .on_writable = h1_on_writable,
    .on_lost = h1_on_lost,
    .on_tick = h1_on_tick,
    .on_shutdown = h1_on_shutdown,
    .holds_output = h1_holds_output,
    .is_idle = h1_is_idle,
    .traverse = h1_traverse,
    .clear = h1_clear,
    .free = h1_free,
};
