/* HTTP/2 over a connection (see protocols.h): an nghttp2 session
 * (core/h2.c) per connection, an ASGI cycle per stream.
 *
 * Input: the whole read goes through the session at once; request heads it
 * completes become cycles, whose apps start after the read is processed (so
 * that the body bytes of the same read are already there, and a stream the
 * client resets within the read never starts its app). Output: streams queue
 * body bytes in the session; frames are produced when processing stops (the
 * end of a read, of an app step, of a response) into the connection's held
 * output, so the responses of many streams leave in one write.
 * Backpressure: a request body's window reopens only as its app reads it; a
 * response waits (write_blocked/poll_drain) while its stream has more than
 * CG_H2_STREAM_HIGH bytes queued or the transport is paused, and no frames
 * are produced while the transport is paused (reading pauses then too). */
#include "protocols.h"

#include "cg_build.h"

#if CG_HAVE_NGHTTP2

#include <string.h>

#include "asgi.h"
#include "clock.h"
#include "h2.h"
#include "meter.h"

/* A stream's queued output above which its app waits. */
#define CG_H2_STREAM_HIGH (64 * 1024)
/* Seconds input is read and dropped after a connection error's GOAWAY. */
#define CG_H2_LINGER 2.0
/* Frames produced per write at most (more follow once it is written); a
 * round may pass it by one DATA frame and the frames made after it. */
#define CG_H2_WRITE_MAX (256 * 1024)
#define CG_H2_ROUND_SLACK (2 * (16384 + 9))

typedef struct h2_conn h2_conn;

/* One stream's request, from its head until the stream closes. */
typedef struct h2_req {
    cg_stream stream;
    h2_conn *hc;
    int32_t id;
    cg_cycle *cycle;  /* strong, until its response completes or the stream closes */
    cg_ws *ws;        /* strong: the WebSocket session of an extended CONNECT, or NULL */
    cg_buf in;        /* WebSocket: received bytes the session has not read yet */
    PyObject *scope;  /* strong: the scope of an app not started yet */
    cg_waiters drain; /* apps waiting for the stream's queued output to shrink */
    size_t fed;       /* body bytes given to the cycle */
    size_t taken;     /* of those, reported consumed to the session */
    double body_seen; /* while a body is expected: when it last made progress, else 0 */
    unsigned head_sent : 1;
    struct h2_req *prev, *next;
    struct h2_req *start_next; /* in hc->starting while its app waits to start */
} h2_req;

struct h2_conn {
    cg_conn *conn; /* borrowed: this state lives as long as the connection */
    cg_h2 *session;
    h2_req *reqs;            /* every open stream */
    h2_req *starting;        /* streams whose app starts when the read is processed */
    PyObject *lingering;     /* list of cycles whose stream closed while their app runs */
    unsigned processing : 1; /* the session is reading: no frames are produced */
    unsigned produce : 1;    /* frames wait to be produced */
    unsigned goaway : 1;     /* graceful shutdown began: new streams are refused */
    unsigned goaway_sent : 1;
};

static const cg_stream_ops h2_stream_ops;

static inline h2_conn *conn_h2(const cg_conn *c)
{
    return (h2_conn *)c->proto_state;
}

static inline h2_req *stream_req(cg_stream *s)
{
    return (h2_req *)((char *)s - offsetof(h2_req, stream));
}

/* ---- output ------------------------------------------------------------------ */

/* Closes the connection once its session is over: after a connection error
 * the peer may still be sending, so the close lingers (the GOAWAY saying
 * why must not be lost to a reset); after a graceful GOAWAY it does not. */
static void h2_end_connection(cg_conn *c, h2_conn *hc)
{
    if (hc->session && cg_h2_failed(hc->session))
        cg_conn_close_lingering(c, CG_H2_LINGER);
    else
        cg_conn_close(c);
}

/* Produces the frames ready into the connection's held output, unless the
 * session is reading (the end of the read does it) or the transport is
 * paused (its resume does it); closes the connection when the session is
 * over. Streams may close meanwhile (their cycles are released). */
static void h2_produce(h2_conn *hc)
{
    cg_conn *c = hc->conn;
    hc->produce = 1;
    if (hc->processing || !hc->session)
        return;
    Py_INCREF(c);
    while (hc->produce && !c->closed && !c->write_paused && c->transport) {
        cg_buf *out = &c->server->h2_scratch;
        cg_buf_reset(out);
        hc->produce = 0;
        /* Room for a whole round at once: a large one leaves with this
         * memory (cg_conn_write_buf), and growing it would copy it. */
        (void)cg_buf_reserve(out, CG_H2_WRITE_MAX + CG_H2_ROUND_SLACK); /* else cg_h2_send fails */
        int rc = cg_h2_send(hc->session, out, CG_H2_WRITE_MAX);
        size_t produced = out->len;
        if (produced) {
            char *p = cg_conn_hold(c, produced);
            if (p)
                memcpy(p, out->data, produced);
            else if (cg_conn_write_buf(c, out) < 0)
                PyErr_Clear(); /* a closing transport: connection_lost follows */
        }
        cg_buf_reset(out);
        if (rc < 0) {
            cg_log(&c->server->st->log, CG_DEBUG, "%s - HTTP/2 session failed: %s", c->client_text,
                   cg_h2_error(hc->session));
            cg_conn_close(c);
            break;
        }
        /* More when this round was cut at its bound (never a round that
         * made nothing: a stream waiting for window is no progress). */
        if (produced && cg_h2_want_write(hc->session))
            hc->produce = 1;
    }
    if (hc->session && !c->closed && cg_h2_done(hc->session))
        h2_end_connection(c, hc);
    Py_DECREF(c);
}

/* Produces now and lets the held output go (see cg_conn_settle): where
 * nothing above can be re-entered (the end of a read or of an app step). */
static void h2_flush(h2_conn *hc)
{
    h2_produce(hc);
    if (!hc->processing)
        cg_conn_settle(hc->conn);
}

/* Output arose inside a stream operation, where producing at once could
 * close streams and release their cycles under a cycle's own call: produced
 * at the server's flush in this loop pass. */
static void h2_produce_soon(h2_conn *hc)
{
    hc->produce = 1;
    if (!hc->processing && hc->session)
        cg_conn_produce_soon(hc->conn);
}

/* Output arose on stream r. An HTTP cycle's app step ends with settle (or
 * its response with finish), which produces it; a WebSocket session's step
 * has no such end: its output is produced soon. */
static void h2_output(h2_req *r)
{
    if (r->ws)
        h2_produce_soon(r->hc);
    else
        r->hc->produce = 1;
}

/* ---- the stream interface (cg_stream_ops) ---------------------------------- */

static int h2_send(cg_stream *s, const cg_resp_head *head, const char *data, size_t len,
                   PyObject *obj, int more)
{
    h2_req *r = stream_req(s);
    h2_conn *hc = r->hc;
    cg_server *srv = hc->conn->server;
    int ended = 0; /* the head ended the stream */
    (void)obj;
    if (!hc->session)
        return 0;
    if (head) {
        cg_buf tmp;
        const char *lines;
        size_t lines_len;
        char cl[48];
        int end = head->no_body || (!more && len == 0 && !head->trailers);
        cg_buf_init(&tmp);
        if (cg_server_head_defaults(srv, head->defaults, &tmp, &lines, &lines_len) < 0) {
            cg_buf_free(&tmp);
            PyErr_NoMemory();
            return -1;
        }
        if (head->length < 0 && !more && !head->no_body) {
            /* The whole body is here: its length goes in the head. */
            size_t n = cg_format_uint(cl + 16, len, 10);
            memcpy(cl, "content-length: ", 16);
            memcpy(cl + 16 + n, "\r\n", 2);
            if ((lines != tmp.data && cg_buf_append(&tmp, lines, lines_len) < 0) ||
                cg_buf_append(&tmp, cl, 16 + n + 2) < 0) {
                cg_buf_free(&tmp);
                PyErr_NoMemory();
                return -1;
            }
            lines = tmp.data;
            lines_len = tmp.len;
        }
        unsigned flags = end ? CG_H2_END_STREAM : head->trailers ? CG_H2_TRAILERS : 0;
        int rc = cg_h2_submit_head(hc->session, r->id, head->status, head->fields, lines, lines_len,
                                   flags);
        cg_buf_free(&tmp);
        if (rc < 0)
            return 0; /* the stream is gone: the cycle hears of it */
        r->head_sent = 1;
        ended = end;
    }
    /* A write to a stream that is gone fails: its cycle hears of it. */
    if (r->head_sent && !ended && (len || !more)) {
        /* An immutable body is sent from the app's own object. */
        void *owner = obj && PyBytes_CheckExact(obj) ? obj : NULL;
        cg_h2_write(hc->session, r->id, data, len, owner, !more);
    }
    h2_output(r);
    return 0;
}

static int h2_send_informational(cg_stream *s, int status, const cg_fields *fields)
{
    h2_req *r = stream_req(s);
    if (r->hc->session && cg_h2_submit_head(r->hc->session, r->id, status, fields, NULL, 0, 0) == 0)
        h2_output(r);
    return 0;
}

static int h2_send_trailers(cg_stream *s, const cg_fields *fields)
{
    h2_req *r = stream_req(s);
    if (r->hc->session && cg_h2_trailers(r->hc->session, r->id, fields) == 0)
        h2_output(r);
    return 0;
}

static void h2_fail(cg_stream *s, int status)
{
    h2_req *r = stream_req(s);
    h2_conn *hc = r->hc;
    if (!hc->session)
        return;
    h2_output(r);
    if (r->head_sent) {
        cg_h2_reset(hc->session, r->id, CG_H2_INTERNAL_ERROR);
        return;
    }
    static const char ctype[] = "text/plain; charset=utf-8";
    const char *reason = cg_http1_reason(status);
    cg_fields fields;
    cg_buf tmp;
    const char *lines;
    size_t lines_len;
    cg_fields_init(&fields);
    cg_buf_init(&tmp);
    if (cg_fields_add(&fields, "content-type", 12, ctype, sizeof(ctype) - 1) == 0 &&
        cg_server_head_defaults(hc->conn->server, CG_HEAD_SERVER | CG_HEAD_DATE | CG_HEAD_EXTRA,
                                &tmp, &lines, &lines_len) == 0 &&
        cg_h2_submit_head(hc->session, r->id, status, &fields, lines, lines_len, 0) == 0) {
        r->head_sent = 1;
        cg_h2_write(hc->session, r->id, reason, strlen(reason), NULL, 1);
    } else {
        cg_h2_reset(hc->session, r->id, CG_H2_INTERNAL_ERROR);
    }
    cg_fields_free(&fields);
    cg_buf_free(&tmp);
}

static void h2_abort(cg_stream *s)
{
    h2_req *r = stream_req(s);
    if (r->hc->session) {
        cg_h2_reset(r->hc->session, r->id, CG_H2_INTERNAL_ERROR);
        h2_output(r);
    }
}

static void h2_close(cg_stream *s)
{
    h2_req *r = stream_req(s);
    h2_conn *hc = r->hc;
    if (!hc->session)
        return;
    /* After a head, the stream ends where its body stopped (if it has not
     * ended); before one, the request is cancelled (HTTP/1.1 would close
     * the connection). */
    if (r->head_sent)
        cg_h2_write(hc->session, r->id, NULL, 0, NULL, 1);
    else
        cg_h2_reset(hc->session, r->id, CG_H2_CANCEL);
    h2_output(r);
}

static int h2_write_blocked(cg_stream *s)
{
    h2_req *r = stream_req(s);
    return r->hc->conn->write_paused ||
           (r->hc->session && cg_h2_queued(r->hc->session, r->id) >= CG_H2_STREAM_HIGH);
}

static PyObject *h2_poll_drain(cg_stream *s, PyObject **fut)
{
    h2_req *r = stream_req(s);
    cg_conn *c = r->hc->conn;
    if (r->hc->session && cg_h2_queued(r->hc->session, r->id) >= CG_H2_STREAM_HIGH && !c->closed) {
        *fut = cg_waiters_add(c->server->st, &r->drain);
        return NULL;
    }
    return cg_conn_poll_drain(c, fut);
}

/* A WebSocket session reads what waits in r->in (as far as its queue takes
 * it); the window reopens by what it read. */
static void h2_feed_ws(h2_req *r)
{
    size_t before = cg_buf_unread(&r->in);
    if (!before || !r->ws)
        return;
    cg_ws_feed(r->ws, &r->in);
    size_t read = before - cg_buf_unread(&r->in);
    if (read && r->hc->session) {
        cg_h2_consume(r->hc->session, r->id, read);
        h2_output(r); /* the WINDOW_UPDATE */
    }
    if (!cg_buf_unread(&r->in))
        cg_buf_free(&r->in);
}

/* The app took body bytes (or, on a WebSocket, made room for frames): the
 * stream's window reopens by as many. */
static void h2_consumed(cg_stream *s)
{
    h2_req *r = stream_req(s);
    if (r->ws) {
        h2_feed_ws(r);
        return;
    }
    if (!r->cycle || !r->hc->session)
        return;
    size_t taken = r->fed - cg_cycle_body_pending(r->cycle);
    if (taken > r->taken) {
        cg_h2_consume(r->hc->session, r->id, taken - r->taken);
        r->taken = taken;
        h2_output(r); /* the WINDOW_UPDATE */
    }
}

static void h2_pause(cg_stream *s)
{
    (void)s; /* flow control holds the stream's input back */
}

static void h2_settle(cg_stream *s)
{
    h2_req *r = stream_req(s);
    h2_flush(r->hc);
}

/* Ends a stream's hold on its cycle. `closed`: the stream closed before
 * the response completed (a reset); a cycle whose app still runs is then
 * kept in `lingering`, counting against the connection's streams until it
 * ends, so resets cannot pile up running apps. */
static void h2_release_cycle(h2_req *r, int closed)
{
    h2_conn *hc = r->hc;
    cg_cycle *cy = r->cycle;
    if (!cy)
        return;
    r->cycle = NULL;
    cg_cycle_detach(cy);
    if (closed && cg_cycle_task_running(cy)) {
        if (!hc->lingering)
            hc->lingering = PyList_New(0);
        if (!hc->lingering || PyList_Append(hc->lingering, (PyObject *)cy) < 0)
            PyErr_Clear();
    }
    Py_DECREF(cy);
}

static void h2_finish(cg_stream *s, int reusable)
{
    h2_req *r = stream_req(s);
    h2_conn *hc = r->hc;
    (void)reusable; /* other streams go on whatever this one did */
    h2_release_cycle(r, 0);
    /* Its cycle is released: producing may close the stream (r is freed)
     * and release other streams' cycles, none of which is in a call. */
    h2_flush(hc);
}

static const cg_stream_ops h2_stream_ops = {
    .send = h2_send,
    .send_informational = h2_send_informational,
    .send_trailers = h2_send_trailers,
    .fail = h2_fail,
    .abort = h2_abort,
    .finish = h2_finish,
    .close = h2_close,
    .write_blocked = h2_write_blocked,
    .poll_drain = h2_poll_drain,
    .consumed = h2_consumed,
    .pause = h2_pause,
    .settle = h2_settle,
};

/* ---- session events (cg_h2_events) ---------------------------------------- */

/* Apps of streams whose stream closed and that still run. */
static size_t lingering_running(h2_conn *hc)
{
    PyObject *l = hc->lingering;
    Py_ssize_t kept = 0, n = l ? PyList_GET_SIZE(l) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *cy = PyList_GET_ITEM(l, i);
        if (cg_cycle_task_running((cg_cycle *)cy))
            PyList_SET_ITEM(l, kept++, cy);
        else
            Py_DECREF(cy);
    }
    if (l && kept < n) {
        /* The tail's references moved or were dropped: shrink without them. */
        for (Py_ssize_t i = kept; i < n; i++)
            PyList_SET_ITEM(l, i, Py_NewRef(Py_None));
        if (PyList_SetSlice(l, kept, n, NULL) < 0)
            PyErr_Clear();
    }
    return (size_t)kept;
}

/* A request could not be started (exception set): 500 on its stream, or,
 * for SystemExit/KeyboardInterrupt, the loop ends as from any task step. */
static void h2_start_failed(h2_req *r)
{
    cg_server *srv = r->hc->conn->server;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        cg_server_raise_soon(srv);
        cg_conn_close(r->hc->conn);
        return;
    }
    cg_log_exception(&srv->st->log, "Exception while starting a request");
    h2_fail(&r->stream, 500);
}

static void *ev_request(void *ctx, int32_t id, const cg_h2_request *req)
{
    h2_conn *hc = ctx;
    cg_conn *c = hc->conn;
    cg_server *srv = c->server;
    if (c->closed || hc->goaway)
        return NULL;
    if (cg_h2_open_streams(hc->session) + lingering_running(hc) >
        (size_t)srv->cfg->h2_max_concurrent_streams)
        return NULL;
    h2_req *r = PyMem_Calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->hc = hc;
    r->id = id;
    cg_proto_stream_init(&r->stream, c, &h2_stream_ops);
    r->next = hc->reqs;
    if (hc->reqs)
        hc->reqs->prev = r;
    hc->reqs = r;
    c->deadline = 0;

    if (req->protocol.len) {
        /* An extended CONNECT (RFC 8441): nghttp2 let :protocol through
         * because SETTINGS_ENABLE_CONNECT_PROTOCOL was sent, which happens
         * only when WebSockets are served. */
        int rc = req->protocol.len == 9 && !memcmp(req->protocol.base, "websocket", 9)
                     ? cg_ws_start(srv, &r->stream, &req->head, &r->ws)
                     : 501;
        if (rc < 0) {
            cg_log_exception(&srv->st->log, "Exception while starting a WebSocket");
            h2_fail(&r->stream, 500);
        } else if (rc > 0) {
            h2_fail(&r->stream, rc);
        } else {
            cg_conn_trace(c, "WebSocket stream opened");
        }
        return r;
    }
    r->cycle = cg_cycle_new(srv, &r->stream, &req->head);
    if (!r->cycle) {
        h2_start_failed(r);
        return r;
    }
    if (req->end_stream)
        cg_cycle_body_done(r->cycle);
    else
        r->body_seen = srv->now;
    PyObject *scope = NULL;
    if (cg_cycle_begin(r->cycle, &req->head, &scope) < 0) {
        h2_start_failed(r);
        return r;
    }
    /* Trailers only for a client that said it accepts them (te: trailers). */
    if (scope &&
        cg_cycle_offer_extensions(r->cycle, scope,
                                  CG_EXT_EARLY_HINT | CG_EXT_PATHSEND | CG_EXT_ZEROCOPYSEND |
                                      (req->te_trailers ? CG_EXT_TRAILERS : 0)) < 0) {
        Py_DECREF(scope);
        h2_start_failed(r);
        return r;
    }
    if (scope) {
        r->scope = scope;
        r->start_next = hc->starting;
        hc->starting = r;
    }
    return r;
}

static void ev_body(void *ctx, void *stream, const char *data, size_t len)
{
    h2_req *r = stream;
    (void)ctx;
    if (r->ws) {
        if (cg_buf_append(&r->in, data, len) == 0) {
            h2_feed_ws(r);
            return;
        }
        cg_h2_reset(r->hc->session, r->id, CG_H2_INTERNAL_ERROR); /* out of memory */
        return;
    }
    if (r->cycle && cg_cycle_feed(r->cycle, data, len) == 0) {
        r->fed += len;
        r->body_seen = r->hc->conn->server->now;
        return;
    }
    PyErr_Clear();
    cg_h2_consume(r->hc->session, r->id, len); /* nobody reads it */
}

static void ev_body_end(void *ctx, void *stream)
{
    h2_req *r = stream;
    (void)ctx;
    r->body_seen = 0;
    if (r->cycle)
        cg_cycle_body_done(r->cycle);
}

static void ev_drained(void *ctx, void *stream, size_t queued)
{
    h2_req *r = stream;
    (void)ctx;
    if (queued < CG_H2_STREAM_HIGH)
        cg_waiters_wake(r->hc->conn->server->st, &r->drain);
}

/* During shutdown, once no stream is left: GOAWAY naming the last stream,
 * then the connection closes (when the session has nothing more to say). */
static void h2_goaway_when_done(h2_conn *hc)
{
    if (!hc->goaway || hc->goaway_sent || hc->reqs || !hc->session || hc->conn->closed)
        return;
    hc->goaway_sent = 1;
    cg_h2_goaway(hc->session);
    h2_produce_soon(hc);
}

static void ev_close(void *ctx, void *stream, uint32_t error_code, size_t unsent)
{
    h2_conn *hc = ctx;
    h2_req *r = stream;
    cg_conn *c = hc->conn;
    (void)error_code;
    for (h2_req **p = &hc->starting; *p; p = &(*p)->start_next)
        if (*p == r) {
            *p = r->start_next; /* reset before its app started: it never will */
            break;
        }
    Py_CLEAR(r->scope);
    if (r->cycle) {
        cg_cycle_output_dropped(r->cycle, unsent);
        cg_cycle_disconnect(r->cycle);
        h2_release_cycle(r, 1);
    }
    if (r->ws) {
        cg_ws *ws = r->ws;
        r->ws = NULL;
        cg_ws_stream_lost(ws);
        Py_DECREF(ws);
    }
    cg_buf_free(&r->in);
    cg_waiters_wake(c->server->st, &r->drain);
    if (r->prev)
        r->prev->next = r->next;
    else
        hc->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    PyMem_Free(r);
    if (!hc->reqs && !c->closed && hc->session)
        c->deadline = cg_monotonic_now() + c->server->cfg->timeout_keep_alive;
    h2_goaway_when_done(hc);
}

/* The session keeps a body's bytes object until its bytes are framed. */
static void ev_retain(void *ctx, void *owner)
{
    (void)ctx;
    Py_INCREF((PyObject *)owner);
}

static void ev_release(void *ctx, void *owner)
{
    (void)ctx;
    Py_DECREF((PyObject *)owner);
}

/* A head over a limit, answered by the session: counted in the metrics. */
static void ev_refused(void *ctx, int status)
{
    h2_conn *hc = ctx;
    cg_meter_reject(hc->conn->server, status);
}

static const cg_h2_events h2_events = {
    .on_request = ev_request,
    .on_body = ev_body,
    .on_body_end = ev_body_end,
    .on_drained = ev_drained,
    .on_close = ev_close,
    .on_refused = ev_refused,
    .retain = ev_retain,
    .release = ev_release,
};

/* ---- connection events (cg_proto_ops) ------------------------------------- */

/* Starts the apps of the streams whose heads the last read completed, in
 * the order they arrived. */
static void h2_start_apps(h2_conn *hc)
{
    h2_req *list = NULL;
    while (hc->starting) { /* reverse: the list was built newest first */
        h2_req *r = hc->starting;
        hc->starting = r->start_next;
        r->start_next = list;
        list = r;
    }
    while (list && !hc->conn->closed) {
        h2_req *r = list;
        list = r->start_next;
        r->start_next = NULL;
        PyObject *scope = r->scope;
        r->scope = NULL;
        if (r->cycle && cg_cycle_run(r->cycle, scope) < 0)
            h2_start_failed(r);
        Py_DECREF(scope);
    }
    while (list) { /* the connection closed: they never start */
        h2_req *r = list;
        list = r->start_next;
        r->start_next = NULL;
        Py_CLEAR(r->scope);
    }
}

static void h2_on_data(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    if (!hc || !hc->session || c->closed)
        return;
    Py_INCREF(c);
    hc->processing = 1;
    int rc = cg_h2_recv(hc->session, c->in.data + c->in.pos, cg_buf_unread(&c->in));
    cg_buf_consume(&c->in, cg_buf_unread(&c->in));
    if (rc < 0)
        cg_log(&c->server->st->log, CG_DEBUG, "%s - HTTP/2 connection error: %s", c->client_text,
               cg_h2_error(hc->session));
    /* Apps start with their batch's output held: their first responses
     * leave together. */
    h2_start_apps(hc);
    hc->processing = 0;
    h2_flush(hc);
    /* A peer that does not read what it asks for (pings, settings) stops
     * being read until it does. */
    if (!c->closed && c->write_paused && hc->session && cg_h2_want_write(hc->session))
        cg_conn_set_reading(c, 0);
    Py_DECREF(c);
}

static void h2_on_writable(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    if (!hc || !hc->session)
        return;
    h2_flush(hc);
    if (!c->closed && c->read_paused && !c->write_paused)
        cg_conn_set_reading(c, 1);
}

static int h2_on_connect(cg_conn *c)
{
    cg_server *srv = c->server;
    const cg_config *cfg = srv->cfg;
    h2_conn *hc = PyMem_Calloc(1, sizeof(*hc));
    if (!hc) {
        PyErr_NoMemory();
        return -1;
    }
    c->proto_state = hc;
    hc->conn = c;
    cg_h2_config h2cfg;
    cg_h2_config_default(&h2cfg);
    h2cfg.max_concurrent_streams = (uint32_t)cfg->h2_max_concurrent_streams;
    h2cfg.max_header_list_size = (uint32_t)cfg->h2_max_header_list_size;
    h2cfg.initial_window_size = (uint32_t)cfg->h2_initial_window_size;
    if (h2cfg.connection_window_size < h2cfg.initial_window_size)
        h2cfg.connection_window_size = h2cfg.initial_window_size;
    h2cfg.enable_connect_protocol = cfg->ws != CG_WS_NONE; /* WebSockets over HTTP/2 */
    hc->session = cg_h2_new(&h2cfg, &srv->limits, &h2_events, hc);
    if (!hc->session) {
        PyErr_NoMemory();
        return -1;
    }
    c->deadline = cg_monotonic_now() + cfg->timeout_keep_alive;
    cg_conn_trace(c, "HTTP/2 connection made");
    h2_flush(hc); /* the server's SETTINGS */
    return 0;
}

static void h2_end_session(h2_conn *hc)
{
    cg_h2 *session = hc->session;
    if (!session)
        return;
    hc->session = NULL; /* stream ops from here on do nothing */
    hc->processing = 1;
    cg_h2_free(session); /* every open stream closes: their cycles hear it */
    hc->processing = 0;
    for (h2_req *r = hc->starting; r; r = r->start_next)
        Py_CLEAR(r->scope);
    hc->starting = NULL;
}

static void h2_on_lost(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    if (!hc)
        return;
    cg_conn_trace(c, "HTTP/2 connection lost");
    h2_end_session(hc);
}

/* A request body made no progress in time: the app hears http.disconnect;
 * the client gets a 408 when nothing was answered yet, else a reset. */
static void h2_body_timeout(h2_req *r)
{
    cg_server *srv = r->hc->conn->server;
    cg_cycle *cy = r->cycle;
    cg_log(&srv->st->log, CG_DEBUG, "Request body made no progress in time");
    r->body_seen = 0;
    int answered = !cg_cycle_response_none(cy);
    cg_cycle_disconnect(cy);
    if (answered)
        h2_abort(&r->stream);
    else
        h2_fail(&r->stream, 408);
}

static void h2_on_tick(cg_conn *c, double now)
{
    h2_conn *hc = conn_h2(c);
    if (!hc || c->closed)
        return;
    double idle = c->server->cfg->timeout_request_body_idle;
    for (h2_req *r = hc->reqs, *next; r; r = next) {
        next = r->next;
        if (r->ws) {
            cg_ws_tick(r->ws, now);
        } else if (r->cycle && r->body_seen > 0 && idle > 0) {
            /* --timeout-request-body-idle, counted while the app waits for
             * body bytes (while it has some unread, the window holds the
             * client back: not the client's delay). */
            if (cg_cycle_body_pending(r->cycle) > 0)
                r->body_seen = now;
            else if (now - r->body_seen >= idle)
                h2_body_timeout(r);
        }
    }
    if (hc->produce)
        h2_flush(hc); /* what the timeouts answered */
    if (!hc->reqs && c->deadline > 0 && now >= c->deadline) {
        /* Idle past the keep-alive timeout: GOAWAY, then close. */
        c->deadline = 0;
        if (hc->session) {
            cg_h2_goaway(hc->session);
            h2_flush(hc);
        }
        cg_conn_close(c);
        return;
    }
    /* The session's memory goes at the first idle tick: it costs a page
     * fault to take back, a read buffer costs more (it waits for two). */
    if (!hc->reqs && cg_conn_idle_tick(c) == 1 && hc->session) {
        cg_h2_shrink(hc->session);
        cg_conn_trace(c, "HTTP/2 connection idle: session memory given back");
    }
}

static void h2_on_shutdown(cg_conn *c, double soon)
{
    h2_conn *hc = conn_h2(c);
    (void)soon;
    if (!hc || !hc->session || c->closed)
        return; /* New streams are refused (REFUSED_STREAM: a client may retry them
                 * elsewhere); the GOAWAY goes once the streams in flight are done (see
                 * h2_goaway_when_done): clients such as python-h2 (httpx) end every
                 * stream when a GOAWAY arrives, though the RFC lets them finish. */
    hc->goaway = 1;
    cg_h2_drain(hc->session);
    for (h2_req *r = hc->reqs; r; r = r->next) {
        if (r->cycle)
            cg_cycle_server_leaving(r->cycle);
        if (r->ws)
            cg_ws_shutdown(r->ws); /* 1012 */
    }
    h2_goaway_when_done(hc);
    h2_flush(hc);
}

static int h2_holds_output(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    return hc && hc->processing;
}

static int h2_is_idle(const cg_conn *c)
{
    const h2_conn *hc = conn_h2(c);
    return hc && !hc->reqs && !hc->processing && !c->closed;
}

static int h2_traverse(cg_conn *c, visitproc visit, void *arg)
{
    h2_conn *hc = conn_h2(c);
    if (!hc)
        return 0;
    Py_VISIT(hc->lingering);
    for (h2_req *r = hc->reqs; r; r = r->next) {
        Py_VISIT(r->cycle);
        Py_VISIT(r->ws);
        Py_VISIT(r->scope);
        int rc = cg_waiters_traverse(&r->drain, visit, arg);
        if (rc)
            return rc;
    }
    return 0;
}

static void h2_clear(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    if (!hc)
        return;
    for (h2_req *r = hc->reqs; r; r = r->next) {
        Py_CLEAR(r->scope);
        h2_release_cycle(r, 0);
        Py_CLEAR(r->ws);
        cg_waiters_clear(&r->drain);
    }
    Py_CLEAR(hc->lingering);
}

static void h2_free(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    if (!hc)
        return;
    h2_end_session(hc);
    h2_clear(c);
    PyMem_Free(hc);
    c->proto_state = NULL;
}

static void h2_on_produce(cg_conn *c)
{
    h2_conn *hc = conn_h2(c);
    if (hc)
        h2_produce(hc);
}

const cg_proto_ops cg_h2_proto = {
    .produce = h2_on_produce,
    .on_connect = h2_on_connect,
    .on_data = h2_on_data,
    .on_writable = h2_on_writable,
    .on_lost = h2_on_lost,
    .on_tick = h2_on_tick,
    .on_shutdown = h2_on_shutdown,
    .holds_output = h2_holds_output,
    .is_idle = h2_is_idle,
    .traverse = h2_traverse,
    .clear = h2_clear,
    .free = h2_free,
};

#else

/* A build without nghttp2: the table exists, nothing selects it. */
static int h2_unavailable(cg_conn *c)
{
    (void)c;
    PyErr_SetString(PyExc_RuntimeError, "HTTP/2 is not available in this build");
    return -1;
}
const cg_proto_ops cg_h2_proto = {.on_connect = h2_unavailable};

#endif
