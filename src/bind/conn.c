/* The transport (see conn.h): an asyncio.BufferedProtocol implemented in C.
 *
 * The loop reads straight into `in` (get_buffer/buffer_updated); the
 * protocol consumes from it. Output is batched (see cg_conn_settle). The
 * deadline is the protocol's: the server's ticker hands it to on_tick.
 *
 * With TLS (--ssl-certfile) the loop reads ciphertext into the session's
 * input instead, core/tls.c decrypts it into `in`, and the one write point
 * (transport_write, tls_send) encrypts. The handshake runs before the
 * protocol is attached, bounded by --timeout-handshake.
 *
 * With --proxy-protocol the connection's first bytes are the PROXY header,
 * read into `in` (core/proxyproto.c parses it) before anything else: the TLS
 * session is made and the protocol attached once it is complete, and what
 * followed it goes on to them. It must arrive within
 * --timeout-request-header, from a peer --forwarded-allow-ips trusts. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/sendfile.h>
#endif

#include "clock.h"
#include "proxyproto.h"

#include "meter.h"

/* Reads start at CG_READ_MIN bytes and double while they fill the buffer,
 * up to CG_READ_CHUNK: a request head needs little, an upload gets large
 * reads, and idle connections never touch (and keep resident) 64 KiB each. */
#define CG_READ_MIN 4096
#define CG_READ_CHUNK 65536
/* The most output held back to be written together (see cg_conn_settle). */
#define CG_HOLD_MAX 65536
#define CG_FLUSH_SOLO_MAX 2 /* see queue_flush */
#define CG_FLUSH_PROBE 64

static PyObject *conn_get_extra(cg_conn *c, PyObject *name);
static void conn_wake_drain(cg_conn *c);
static void file_end(cg_conn *c);

/* Takes the server's spare read buffer when c holds none. */
static void conn_take_spare(cg_conn *c)
{
    if (!c->in.data && c->server->spare_in.data) {
        c->in = c->server->spare_in;
        cg_buf_init(&c->server->spare_in);
    }
}

/* Where the socket's bytes go: `in`, or the TLS session's ciphertext input. */
static cg_buf *conn_read_buffer(cg_conn *c)
{
    return c->tls ? cg_tls_input(c->tls) : &c->in;
}

void cg_conn_set_reading(cg_conn *c, int on)
{
    cg_state *st = c->server->st;
    if (!c->transport || (on ? !c->read_paused : c->read_paused))
        return;
    PyObject *r =
        PyObject_CallMethodNoArgs(c->transport, on ? st->s_resume_reading : st->s_pause_reading);
    if (!r) {
        PyErr_Clear(); /* a closing transport refuses; nothing to do */
        return;
    }
    Py_DECREF(r);
    c->read_paused = !on;
}

/* Counts bytes written (metrics): a bytes object usually, an app's other
 * buffer object (a bytearray, a memoryview of bytes) by its length. */
static void meter_written(cg_conn *c, PyObject *bytes)
{
    if (!c->server->metrics)
        return;
    Py_ssize_t n = PyBytes_Check(bytes) ? PyBytes_GET_SIZE(bytes) : PyObject_Length(bytes);
    if (n < 0)
        PyErr_Clear();
    else
        cg_meter_bytes_out(c->server, (size_t)n);
}

static int transport_write_raw(cg_conn *c, PyObject *bytes)
{
    PyObject *r = PyObject_CallMethodOneArg(c->transport, c->server->st->s_write, bytes);
    if (!r)
        return -1;
    Py_DECREF(r);
    meter_written(c, bytes);
    return 0;
}

/* The server's scratch buffer for ciphertext: writes are handled one at a
 * time, so one serves every connection; it keeps at most 256 KiB between
 * writes. */
static cg_buf *tls_scratch(cg_server *srv)
{
    cg_buf *b = &srv->tls_scratch;
    cg_buf_reset(b);
    return b;
}

static int tls_write_scratch(cg_conn *c, cg_buf *cipher)
{
    int rc = 0;
    if (cipher->len && c->transport) {
        PyObject *b = PyBytes_FromStringAndSize(cipher->data, (Py_ssize_t)cipher->len);
        rc = b ? transport_write_raw(c, b) : -1;
        Py_XDECREF(b);
    }
    cg_buf_reset(cipher);
    cg_buf_shrink(cipher, 256 * 1024);
    return rc;
}

/* Encrypts plaintext and writes the records (one write). 0 or -1. When the
 * engine knows their size beforehand (the AEAD ciphers: every TLS 1.3
 * connection), the records are made in the bytes object that is written;
 * else, or when the engine wrote something more (a KeyUpdate), they are made
 * in the scratch buffer and copied into one. */
static int tls_send(cg_conn *c, const char *p, size_t n)
{
    cg_buf *cipher = tls_scratch(c->server);
    if (n == 0 || !c->transport)
        return 0;
    size_t size = cg_tls_write_size(c->tls, n);
    PyObject *b = size ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size) : NULL;
    if (size && !b)
        return -1;
    int rc = b ? cg_tls_write_into(c->tls, p, n, PyBytes_AS_STRING(b), size, cipher)
               : cg_tls_write(c->tls, p, n, cipher);
    if (rc < 0) {
        Py_XDECREF(b);
        cg_buf_reset(cipher);
        PyErr_SetString(PyExc_ConnectionError, "TLS: cannot encrypt on this connection");
        return -1;
    }
    if (rc == 1) {
        rc = transport_write_raw(c, b);
        Py_DECREF(b);
        return rc;
    }
    Py_XDECREF(b);
    return tls_write_scratch(c, cipher);
}

static int transport_write(cg_conn *c, PyObject *bytes)
{
    if (c->tls) {
        /* Encrypted from the object's own memory: no copy of a large body. */
        Py_buffer view;
        if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0)
            return -1;
        int rc = tls_send(c, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        return rc;
    }
    return transport_write_raw(c, bytes);
}

/* ---- output batching ------------------------------------------------------
 * A complete response that fits (a head and its whole body, up to
 * CG_HOLD_MAX held per connection) is held instead of being written: pipelined responses to one
 * read then leave in one write, and the app steps of one loop pass run back to back instead of each
 * one after a write system call that evicts the caches the next one needs. Any other write appends
 * to held bytes and writes them all, so order is kept. cg_conn_settle runs when processing stops
 * (the end of conn_process, of every app step, of a response): it keeps holding while a batch is
 * still gathering (the protocol says so: it is processing input, or it just started a cycle whose
 * app has not run yet: that app's first step settles again, at the latest when its task is
 * cancelled), else queues the connection for the server's one flush, which the loop runs after the
 * callbacks already ready. Closing writes held bytes first. */

/* Held output is one bytes object while it is one piece (a response in a
 * loop pass: written as is, no copy), else `out` holds all of it. */
static size_t held_len(const cg_conn *c)
{
    return c->held_one ? (size_t)PyBytes_GET_SIZE(c->held_one) : cg_buf_unread(&c->out);
}

/* Moves a held piece into `out`, with room for `more` bytes after it. */
static int held_to_buffer(cg_conn *c, size_t more)
{
    size_t n = held_len(c);
    if (cg_buf_reserve(&c->out, more + (c->held_one ? n : 0)) < 0)
        return -1;
    if (c->held_one) {
        cg_buf_append(&c->out, PyBytes_AS_STRING(c->held_one), n);
        Py_CLEAR(c->held_one);
    }
    return 0;
}

char *cg_conn_hold(cg_conn *c, size_t n)
{
    if (!c->transport || c->closed || held_len(c) + n > CG_HOLD_MAX)
        return NULL;
    if (held_len(c) == 0) {
        c->held_one = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (!c->held_one) {
            PyErr_Clear(); /* the caller writes it unheld */
            return NULL;
        }
        return PyBytes_AS_STRING(c->held_one);
    }
    if (held_to_buffer(c, n) < 0)
        return NULL;
    char *p = c->out.data + c->out.len;
    c->out.len += n;
    return p;
}

/* Drops held output unwritten (the transport is gone). */
static void conn_drop_held(cg_conn *c)
{
    Py_CLEAR(c->held_one);
    cg_buf_free(&c->out);
}

static int conn_flush(cg_conn *c)
{
    if (c->tls) {
        /* Encrypted straight from the held bytes: one write of records. */
        const char *p = c->held_one ? PyBytes_AS_STRING(c->held_one) : c->out.data + c->out.pos;
        int rc = tls_send(c, p, held_len(c));
        conn_drop_held(c);
        return rc;
    }
    PyObject *b = c->held_one;
    c->held_one = NULL;
    if (!b) {
        size_t n = cg_buf_unread(&c->out);
        if (n == 0)
            return 0;
        b = PyBytes_FromStringAndSize(c->out.data + c->out.pos, (Py_ssize_t)n);
        cg_buf_free(&c->out);
        if (!b)
            return -1;
    }
    int rc = c->transport ? transport_write(c, b) : 0;
    Py_DECREF(b);
    return rc;
}

/* Held output waits for the end of the loop's current pass of ready
 * callbacks: the steps of all apps that are ready run back to back, then
 * their responses are written back to back. The wait costs a loop pass and
 * a handle, which pays only when other responses join the batch; so after
 * CG_FLUSH_SOLO_MAX flushes in a row that carried one connection each, held
 * output is written at once, and every CG_FLUSH_PROBE-th time it waits again
 * to notice that load has come back. Returns 0 when c is queued. */
static int queue_flush(cg_conn *c, int always)
{
    cg_server *srv = c->server;
    if (c->flush_queued)
        return 0;
    if (!srv->flush_list) { /* the first in this pass schedules the flush */
        if (!always && srv->flush_solo >= CG_FLUSH_SOLO_MAX && ++srv->flush_probe < CG_FLUSH_PROBE)
            return -1;
        srv->flush_probe = 0;
        PyObject *h = PyObject_CallMethodOneArg(srv->loop, srv->st->s_call_soon, srv->flush_cb);
        if (!h) {
            PyErr_Clear();
            return -1;
        }
        Py_DECREF(h);
    }
    c->flush_queued = 1;
    c->flush_next = srv->flush_list;
    srv->flush_list = (cg_conn *)Py_NewRef(c);
    return 0;
}

void cg_conn_produce_soon(cg_conn *c)
{
    if (c->closed || !c->transport)
        return;
    c->produce_soon = 1;
    if (queue_flush(c, 1) < 0)
        c->produce_soon = 0; /* no loop to call back: nothing will be written anyway */
}

void cg_conn_settle(cg_conn *c)
{
    if (held_len(c) == 0 || c->proto->holds_output(c))
        return;
    if (!c->closed && queue_flush(c, 0) == 0)
        return;
    if (conn_flush(c) < 0)
        PyErr_Clear(); /* a transport that refuses is closing; connection_lost follows */
}

void cg_server_flush_held(cg_server *srv)
{
    cg_conn *c = srv->flush_list;
    srv->flush_list = NULL;
    if (c && !c->flush_next)
        srv->flush_solo += srv->flush_solo < CG_FLUSH_SOLO_MAX;
    else if (c)
        srv->flush_solo = 0;
    while (c) {
        cg_conn *next = c->flush_next;
        c->flush_next = NULL;
        c->flush_queued = 0;
        if (c->produce_soon && c->proto->produce && !c->proto->holds_output(c)) {
            c->produce_soon = 0;
            c->proto->produce(c);
        }
        if (!c->proto->holds_output(c) && conn_flush(c) < 0)
            PyErr_Clear();
        Py_DECREF(c);
        c = next;
    }
}

int cg_conn_write_obj(cg_conn *c, PyObject *bytes)
{
    if (!c->transport)
        return 0;
    if (held_len(c) == 0)
        return transport_write(c, bytes);
    /* Behind held output: join it, one write for both. */
    Py_buffer view;
    if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0)
        return -1;
    int rc = held_to_buffer(c, (size_t)view.len);
    if (rc == 0)
        rc = cg_buf_append(&c->out, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rc < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return conn_flush(c);
}

/* ---- output handed over without a copy ------------------------------------
 * A large block made in a cg_buf (the frames of an HTTP/2 round) goes to
 * the transport as it is: an Output object takes the buffer's memory and
 * lends it through the buffer protocol; a memoryview of it is written (both
 * asyncio and uvloop take one), and the memory is freed with the object,
 * once the transport is done with it. Smaller blocks are cheaper to copy
 * into a bytes object than to wrap. */
#define CG_ADOPT_MIN (32 * 1024)

typedef struct cg_output {
    PyObject_HEAD char *base; /* the malloc'd block */
    char *data;               /* the bytes lent, inside it */
    Py_ssize_t len;
} cg_output;

static int output_getbuffer(cg_output *o, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)o, o->data, o->len, 1, flags);
}

static void output_dealloc(cg_output *o)
{
    PyTypeObject *tp = Py_TYPE(o);
    free(o->base);
    tp->tp_free((PyObject *)o);
    Py_DECREF(tp);
}

static PyType_Slot output_slots[] = {
    {Py_bf_getbuffer, output_getbuffer},
    {Py_tp_dealloc, output_dealloc},
    {0, NULL},
};

static PyType_Spec output_spec = {
    .name = "casgi._casgi.Output",
    .basicsize = sizeof(cg_output),
#if PY_VERSION_HEX >= 0x030A0000
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
#else
    .flags = Py_TPFLAGS_DEFAULT,
#endif
    .slots = output_slots,
};

/* A memoryview of b's unread bytes, owning b's memory (b is left empty). */
static PyObject *output_adopt(cg_state *st, cg_buf *b)
{
    cg_output *o = PyObject_New(cg_output, st->OutputType);
    if (!o)
        return NULL;
    /* The block may stay with the transport a while (a slow reader): it
     * keeps only what it holds, not the room reserved for a whole round. */
    char *fit = b->len < b->cap ? realloc(b->data, b->len) : NULL;
    if (fit) {
        b->data = fit;
        b->cap = b->len;
    }
    o->base = b->data;
    o->data = b->data + b->pos;
    o->len = (Py_ssize_t)cg_buf_unread(b);
    b->data = NULL;
    b->pos = b->len = b->cap = 0;
    PyObject *view = PyMemoryView_FromObject((PyObject *)o);
    Py_DECREF(o);
    return view;
}

int cg_conn_write_buf(cg_conn *c, cg_buf *b)
{
    size_t n = cg_buf_unread(b);
    if (c->tls || n < CG_ADOPT_MIN) /* TLS encrypts from b: no copy either */
        return n ? cg_conn_write(c, b->data + b->pos, n) : 0;
    if (!c->transport)
        return 0;
    if (held_len(c) && conn_flush(c) < 0) /* what was held goes first */
        return -1;
    PyObject *view = output_adopt(c->server->st, b);
    if (!view)
        return -1;
    int rc = transport_write_raw(c, view);
    Py_DECREF(view);
    return rc;
}

int cg_conn_write(cg_conn *c, const char *data, size_t len)
{
    if (c->tls && held_len(c) == 0)
        return tls_send(c, data, len);
    PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (!b)
        return -1;
    int rc = cg_conn_write_obj(c, b);
    Py_DECREF(b);
    return rc;
}

void cg_conn_close(cg_conn *c)
{
    file_end(c);
    c->closed = 1;
    c->deadline = 0;
    if (!c->transport)
        return;
    if (conn_flush(c) < 0)
        PyErr_Clear();
    if (c->tls && cg_tls_handshake_done(c->tls)) {
        /* close_notify: the peer can tell our end from a truncation. */
        cg_buf *cipher = tls_scratch(c->server);
        if (cg_tls_close_notify(c->tls, cipher) < 0 || tls_write_scratch(c, cipher) < 0)
            PyErr_Clear();
    }
    PyObject *r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_close);
    if (!r)
        PyErr_WriteUnraisable(c->transport);
    Py_XDECREF(r);
}

void cg_conn_close_lingering(cg_conn *c, double seconds)
{
    file_end(c);
    if (c->closed || !c->transport) {
        cg_conn_close(c);
        return;
    }
    c->closed = 1;
    if (conn_flush(c) < 0)
        PyErr_Clear();
    if (c->tls && cg_tls_handshake_done(c->tls)) {
        cg_buf *cipher = tls_scratch(c->server);
        if (cg_tls_close_notify(c->tls, cipher) < 0 || tls_write_scratch(c, cipher) < 0)
            PyErr_Clear();
    }
    PyObject *r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_write_eof);
    if (!r) {
        PyErr_Clear(); /* no half-close here: an ordinary close */
        r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_close);
        if (!r)
            PyErr_WriteUnraisable(c->transport);
        Py_XDECREF(r);
        return;
    }
    Py_DECREF(r);
    c->lingering = 1;
    c->deadline = cg_monotonic_now() + seconds;
    if (c->read_paused)
        cg_conn_set_reading(c, 1); /* what comes is read and dropped */
}

void cg_conn_abort(cg_conn *c)
{
    file_end(c);
    c->closed = 1;
    c->deadline = 0;
    if (!c->transport)
        return;
    if (conn_flush(c) < 0) /* held output goes to the transport first */
        PyErr_Clear();
    /* SO_LINGER 0: close() sends RST, never FIN. What the transport or the
     * kernel still holds is dropped with it: the unfinished response's tail,
     * and, behind a slow reader, earlier responses not yet sent. */
    PyObject *sock = conn_get_extra(c, c->server->st->s_socket);
    int fd = sock && sock != Py_None ? PyObject_AsFileDescriptor(sock) : -1;
    Py_XDECREF(sock);
    if (fd < 0) {
        PyErr_Clear();
    } else {
        struct linger lg = {1, 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    PyObject *r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_abort);
    if (!r)
        PyErr_WriteUnraisable(c->transport);
    Py_XDECREF(r);
}

void cg_conn_drop(cg_conn *c)
{
    file_end(c);
    c->closed = 1;
    c->deadline = 0;
    conn_drop_held(c);
    if (c->transport) {
        PyObject *r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_abort);
        Py_XDECREF(r);
        PyErr_Clear();
    }
}

void cg_conn_trace(cg_conn *c, const char *what)
{
    /* The level was cached when logging was set up: other levels pay one
     * compare per connection event. */
    if (c->server->st->log.error_level <= CG_TRACE)
        cg_log(&c->server->st->log, CG_TRACE, "%s%s%s", c->client_text, c->client_len ? " - " : "",
               what);
}

/* 1 while the connection's opening runs (the PROXY header, the TLS
 * handshake): no protocol is attached yet. */
static int conn_handshaking(const cg_conn *c)
{
    return c->pp_pending || (c->tls && !c->proto_state);
}

void cg_conn_tick(cg_conn *c, double now)
{
    if (c->lingering) {
        if (now >= c->deadline && c->transport) {
            PyObject *r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_close);
            if (!r)
                PyErr_WriteUnraisable(c->transport);
            Py_XDECREF(r);
        }
        return;
    }
    if (!conn_handshaking(c)) {
        c->proto->on_tick(c, now);
    } else if (c->deadline > 0 && now >= c->deadline && !c->closed) {
        cg_log(&c->server->st->log, CG_DEBUG, "%s - %s not completed in time", c->client_text,
               c->pp_pending ? "PROXY protocol header" : "TLS handshake");
        if (!c->pp_pending)
            cg_meter_tls(c->server, 0);
        cg_conn_close(c);
    }
}

void cg_conn_shutdown(cg_conn *c, double soon)
{
    if (!conn_handshaking(c))
        c->proto->on_shutdown(c, soon);
    else if (c->deadline == 0 || c->deadline > soon)
        c->deadline = soon; /* its request is still served if it comes soon */
}

void cg_conn_switch(cg_conn *c, const cg_proto_ops *proto)
{
    Py_INCREF(c);
    c->proto->free(c);
    c->proto = proto;
    c->deadline = 0;
    if (proto->on_connect(c) < 0) {
        cg_log_exception(&c->server->st->log, "Exception while starting a connection's protocol");
        cg_conn_abort(c);
    } else if (cg_buf_unread(&c->in) && !c->closed) {
        proto->on_data(c);
    }
    Py_DECREF(c);
}

int cg_conn_idle_tick(cg_conn *c)
{
    if (cg_buf_unread(&c->in) != 0)
        return 0;
    /* Once per idle period: a read resets idle_ticks, and nothing is taken
     * back while the connection stays idle. */
    if (++c->idle_ticks == 2) {
        cg_conn_return_buffer(c);
        c->read_size = 0; /* the next burst starts small again */
        if (c->tls)
            cg_tls_shrink(c->tls); /* OpenSSL's record buffers, until the next read */
    }
    return c->idle_ticks;
}

/* Over --limit-concurrency connections: the keep-alive connection idle the
 * longest (its keep-alive deadline is the earliest) makes room. */
static void close_oldest_idle(cg_server *srv)
{
    cg_conn *oldest = NULL;
    for (cg_conn *c = srv->conns; c; c = c->next)
        if (c->proto->is_idle(c) && (!oldest || c->deadline < oldest->deadline))
            oldest = c;
    if (oldest)
        cg_conn_close(oldest);
}

/* ---- protocol methods --------------------------------------------------- */

/* scope["client"]/["server"]: (host, port) from a socket address, else None.
 * `*last` is the previous result of the same kind (owned by the server):
 * equal values share one object (every connection has the same server
 * address, and clients mostly few hosts), which idle connections feel. */
static PyObject *addr_tuple(PyObject *addr, PyObject **last)
{
    if (!addr || !PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2)
        return Py_NewRef(Py_None);
    PyObject *host = PyTuple_GET_ITEM(addr, 0), *port = PyTuple_GET_ITEM(addr, 1);
    if (*last) {
        PyObject *lhost = PyTuple_GET_ITEM(*last, 0);
        int same_host =
            PyUnicode_Check(host) && PyUnicode_Check(lhost) && PyUnicode_Compare(host, lhost) == 0;
        if (same_host) {
            int same_port = PyObject_RichCompareBool(port, PyTuple_GET_ITEM(*last, 1), Py_EQ);
            if (same_port > 0)
                return Py_NewRef(*last);
            PyErr_Clear();
            host = lhost;
        }
    }
    PyObject *t = PyTuple_Pack(2, host, port);
    if (t)
        Py_XSETREF(*last, Py_NewRef(t));
    return t;
}

static PyObject *conn_get_extra(cg_conn *c, PyObject *name)
{
    PyObject *r = PyObject_CallMethodOneArg(c->transport, c->server->st->s_get_extra_info, name);
    if (!r)
        PyErr_Clear();
    return r;
}

/* Sets scope["client"] (stealing `client`: a tuple, None, or NULL after an
 * error) and the "host:port" text of log lines. */
static void conn_set_client(cg_conn *c, PyObject *client)
{
    Py_XSETREF(c->client, client);
    c->client_len = 0;
    c->client_text[0] = '\0';
    if (!client || client == Py_None)
        return;
    PyObject *s =
        PyUnicode_FromFormat("%S:%S", PyTuple_GET_ITEM(client, 0), PyTuple_GET_ITEM(client, 1));
    Py_ssize_t n;
    const char *u = s ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (u && (size_t)n < sizeof(c->client_text)) {
        memcpy(c->client_text, u, (size_t)n);
        c->client_text[n] = '\0'; /* also used as a C string */
        c->client_len = (size_t)n;
    }
    Py_XDECREF(s);
    PyErr_Clear();
}

/* The TLS session of a new connection; the protocol is attached when its
 * handshake completes. 0, or -1 with an exception. */
static int conn_start_tls(cg_conn *c)
{
    c->tls = cg_tls_new(c->server->tls);
    if (!c->tls) {
        PyErr_NoMemory();
        return -1;
    }
    double t = c->server->cfg->timeout_handshake;
    c->deadline = t > 0 ? cg_monotonic_now() + t : 0;
    return 0;
}

/* A connection refused for its PROXY header (or for sending one at all): one
 * line at info level the first time (a balancer left out of
 * --forwarded-allow-ips, or one not sending the header, shows at once),
 * debug lines after that. The connection is closed unanswered. */
static void conn_pp_refuse(cg_conn *c, const char *why)
{
    cg_server *srv = c->server;
    if (!srv->pp_refusal_logged) {
        srv->pp_refusal_logged = 1;
        cg_log(&srv->st->log, CG_INFO,
               "PROXY protocol: connection from %s refused: %s; further refusals are logged at "
               "debug level",
               c->client_len ? c->client_text : "a Unix socket", why);
    } else {
        cg_log(&srv->st->log, CG_DEBUG, "PROXY protocol: connection from %s refused: %s",
               c->client_len ? c->client_text : "a Unix socket", why);
    }
    cg_buf_reset(&c->in);
    cg_conn_close(c);
}

/* (host, port) for scope["client"] or ["server"] from an announced address,
 * shared with the previous equal one through `last`. */
static PyObject *announced_tuple(const cg_proxy_addr *a, unsigned port, PyObject **last)
{
    char host[CG_PROXY_ADDR_TEXT];
    size_t n = cg_proxy_addr_format(a, host, sizeof(host));
    PyObject *t = Py_BuildValue("(s#I)", host, (Py_ssize_t)n, port);
    if (!t)
        return NULL;
    PyObject *r = addr_tuple(t, last);
    Py_DECREF(t);
    return r;
}

/* What a complete PROXY header announces. PROXY with TCP over IPv4 or IPv6:
 * the source is the client (and what X-Forwarded-For trust is checked
 * against: it is the peer the balancer saw), the destination the server. A
 * client on a Unix socket (v2 AF_UNIX) has no address: None, trusted as
 * "unix:" says. LOCAL (the balancer's own health check) and UNKNOWN: the
 * real peer stays. 0, or -1 with an exception. */
static int conn_pp_apply(cg_conn *c, const cg_pp_result *r)
{
    cg_server *srv = c->server;
    if (r->command != CG_PP_PROXY || r->family == CG_PP_UNKNOWN)
        return 0;
    int proxy_headers = srv->cfg->proxy_headers;
    if (r->family == CG_PP_UNIX) {
        conn_set_client(c, Py_NewRef(Py_None));
        c->trusted_proxy = proxy_headers && (srv->trust.all || srv->trust.unix_peers);
        return 0;
    }
    PyObject *server = announced_tuple(&r->dst, r->dst_port, &srv->last_sockname);
    if (!server)
        return -1;
    Py_SETREF(c->sockname, server);
    conn_set_client(c, announced_tuple(&r->src, r->src_port, &srv->last_client));
    if (!c->client)
        return -1;
    c->trusted_proxy = proxy_headers && cg_proxy_trusts_addr(&srv->trust, &r->src);
    return 0;
}

/* The PROXY header in `in` (--proxy-protocol). Returns 1 when the
 * connection goes on with bytes for its TLS session or protocol, 0 when it
 * waits (for the rest of the header, or for what follows it), -1 when it is
 * over. */
static int conn_pp_input(cg_conn *c)
{
    cg_server *srv = c->server;
    cg_pp_result r;
    int n = cg_pp_parse(c->in.data + c->in.pos, cg_buf_unread(&c->in),
                        (unsigned)srv->cfg->proxy_protocol, &r);
    if (n == CG_PP_INCOMPLETE)
        return 0;
    if (n == CG_PP_INVALID) {
        conn_pp_refuse(c, r.error);
        return -1;
    }
    cg_buf_consume(&c->in, (size_t)n);
    c->pp_pending = 0;
    c->deadline = 0;
    if (conn_pp_apply(c, &r) < 0 || (srv->tls && conn_start_tls(c) < 0))
        goto fail;
    if (c->tls) {
        /* What followed the header is the ClientHello: the session's input. */
        size_t rest = cg_buf_unread(&c->in);
        if (cg_buf_append(cg_tls_input(c->tls), c->in.data + c->in.pos, rest) < 0) {
            PyErr_NoMemory();
            goto fail;
        }
        cg_buf_reset(&c->in);
        return rest ? 1 : 0;
    }
    if (c->proto->on_connect(c) < 0)
        goto fail;
    return cg_buf_unread(&c->in) ? 1 : 0;
fail:
    cg_log_exception(&srv->st->log, "Exception while starting a connection");
    cg_conn_abort(c);
    return -1;
}

static PyObject *conn_connection_made(cg_conn *c, PyObject *transport)
{
    cg_server *srv = c->server;
    PyObject *peer, *sock;

    Py_XSETREF(c->transport, Py_NewRef(transport));
    peer = conn_get_extra(c, srv->st->s_peername);
    sock = conn_get_extra(c, srv->st->s_sockname);
    conn_set_client(c, addr_tuple(peer, &srv->last_client));
    Py_XSETREF(c->sockname, addr_tuple(sock, &srv->last_sockname));
    /* The list is also the PROXY protocol's: without proxy headers it only
     * says who may send the PROXY header. */
    int trusted = cg_server_trusts_peer(srv, peer, sock);
    c->trusted_proxy = srv->cfg->proxy_headers && trusted;
    Py_XDECREF(peer);
    Py_XDECREF(sock);
    if (!c->client || !c->sockname)
        return NULL;

    /* Join the server's list (the list holds a reference). */
    Py_INCREF(c);
    c->in_list = 1;
    c->prev = NULL;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    cg_meter_conn(srv, 1);
    if (srv->cfg->limit_concurrency >= 0 && srv->nconns > (size_t)srv->cfg->limit_concurrency)
        close_oldest_idle(srv);

    if (srv->cfg->proxy_protocol) {
        /* The header comes first, before TLS: see conn_pp_input. */
        if (!trusted && c->client == Py_None && c->sockname != Py_None) {
            /* A TCP peer without an address: gone before it was accepted
             * (a balancer's health check that only connects). */
            cg_conn_close(c);
            Py_RETURN_NONE;
        }
        if (!trusted) {
            conn_pp_refuse(c, "not in --forwarded-allow-ips");
            Py_RETURN_NONE;
        }
        c->pp_pending = 1;
        double t = srv->cfg->timeout_request_header;
        c->deadline = t > 0 ? cg_monotonic_now() + t : 0;
        Py_RETURN_NONE;
    }
    if (srv->tls) {
        if (conn_start_tls(c) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (c->proto->on_connect(c) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *conn_connection_lost(cg_conn *c, PyObject *exc)
{
    cg_server *srv = c->server;
    (void)exc;

    file_end(c); /* before the protocol hears it: the file is the cycle's to close */
    c->closed = 1;
    c->deadline = 0;
    c->proto->on_lost(c);
    conn_wake_drain(c);
    Py_CLEAR(c->transport);
    cg_buf_free(&c->in);
    conn_drop_held(c);
    cg_tls_free(c->tls);
    c->tls = NULL;
    if (c->in_list) {
        c->in_list = 0;
        if (c->prev)
            c->prev->next = c->next;
        else
            srv->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->prev = c->next = NULL;
        srv->nconns--;
        cg_meter_conn(srv, -1);
        cg_server_check_drained(srv);
        Py_DECREF(c); /* the list's reference */
    }
    Py_RETURN_NONE;
}

/* The certificate a connection presented, as a str (borrowed) shared by the
 * connections that present the same one. The cached str is matched by its
 * text, not by the address of the PEM it was made from: a reload can
 * allocate the new certificate's PEM where a freed generation's was. */
static PyObject *tls_cert_str(cg_server *srv, const char *pem, size_t len)
{
    if (!pem)
        return Py_None;
    if (srv->tls_cert) {
        Py_ssize_t n;
        const char *have = PyUnicode_AsUTF8AndSize(srv->tls_cert, &n);
        if (!have)
            return NULL;
        if ((size_t)n == len && memcmp(have, pem, len) == 0)
            return srv->tls_cert;
    }
    PyObject *s = PyUnicode_DecodeASCII(pem, (Py_ssize_t)len, "replace");
    if (!s)
        return NULL;
    Py_XSETREF(srv->tls_cert, s);
    return s;
}

/* The ASGI "tls" extension of a connection whose handshake completed
 * (asgiref's tls spec): made once per connection, copied into each scope. */
static PyObject *tls_info_new(cg_conn *c)
{
    cg_server *srv = c->server;
    cg_tls *t = c->tls;
    size_t len;
    const char *pem = cg_tls_server_cert_pem(t, &len);
    PyObject *cert = tls_cert_str(srv, pem, len); /* borrowed */
    if (!cert)
        return NULL;
    PyObject *d = PyDict_New(), *chain = PyList_New(0), *v;
    cg_buf tmp;
    cg_buf_init(&tmp);
    if (!d || !chain)
        goto fail;
    for (size_t i = 0; i < cg_tls_client_cert_count(t); i++) {
        cg_buf_reset(&tmp);
        if (cg_tls_client_cert_pem(t, i, &tmp) < 0)
            goto nomem;
        v = PyUnicode_DecodeASCII(tmp.data, (Py_ssize_t)tmp.len, "replace");
        if (!v || PyList_Append(chain, v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    cg_buf_reset(&tmp);
    int named = cg_tls_client_cert_name(t, &tmp);
    if (named < 0)
        goto nomem;
    const char *cert_error = cg_tls_client_cert_error(t);
    if (PyDict_SetItemString(d, "server_cert", cert) < 0 ||
        PyDict_SetItemString(d, "client_cert_chain", chain) < 0)
        goto fail;
    v = named ? PyUnicode_DecodeUTF8(tmp.data, (Py_ssize_t)tmp.len, "replace") : Py_NewRef(Py_None);
    if (!v || PyDict_SetItemString(d, "client_cert_name", v) < 0)
        goto fail_v;
    Py_DECREF(v);
    v = cert_error ? PyUnicode_FromString(cert_error) : Py_NewRef(Py_None);
    if (!v || PyDict_SetItemString(d, "client_cert_error", v) < 0)
        goto fail_v;
    Py_DECREF(v);
    v = PyLong_FromUnsignedLong(cg_tls_version(t));
    if (!v || PyDict_SetItemString(d, "tls_version", v) < 0)
        goto fail_v;
    Py_DECREF(v);
    v = PyLong_FromUnsignedLong(cg_tls_cipher_suite(t));
    if (!v || PyDict_SetItemString(d, "cipher_suite", v) < 0)
        goto fail_v;
    Py_DECREF(v);
    Py_DECREF(chain);
    cg_buf_free(&tmp);
    return d;
fail_v:
    Py_XDECREF(v);
    goto fail;
nomem:
    PyErr_NoMemory();
fail:
    cg_buf_free(&tmp);
    Py_XDECREF(chain);
    Py_XDECREF(d);
    return NULL;
}

/* A handshake failed: one line at INFO the first time a cause is seen (so a
 * misconfigured client is noticed), debug lines after that. */
static void tls_log_failure(cg_conn *c)
{
    cg_server *srv = c->server;
    int cause = cg_tls_cause(c->tls);
    unsigned bit = 1u << (cause & 31);
    const char *detail = cg_tls_error_detail(c->tls);
    if (!(srv->tls_causes_logged & bit)) {
        srv->tls_causes_logged |= bit;
        cg_log(&srv->st->log, CG_INFO,
               "TLS handshake failed: %s (%s%s%s); further failures of this kind are logged at "
               "debug level",
               cg_tls_cause_text(cause), c->client_text, *detail ? ": " : "", detail);
    } else {
        cg_log(&srv->st->log, CG_DEBUG, "TLS handshake failed: %s (%s%s%s)",
               cg_tls_cause_text(cause), c->client_text, *detail ? ": " : "", detail);
    }
}

/* Decrypts the ciphertext that arrived into `in`, writes what the session
 * has to say (handshake, alerts, tickets), and attaches the protocol when the
 * handshake completes. Returns 1 when the protocol may read `in`, 0 when
 * there is nothing for it yet, -1 when the connection is over. */
static int conn_tls_input(cg_conn *c)
{
    cg_buf *cipher = tls_scratch(c->server);
    conn_take_spare(c);
    int rc = cg_tls_read(c->tls, &c->in, cipher);
    if (tls_write_scratch(c, cipher) < 0)
        PyErr_Clear(); /* a closing transport: connection_lost follows */
    if (rc == CG_TLS_FATAL) {
        if (!c->proto_state) {
            tls_log_failure(c);
            cg_meter_tls(c->server, 0);
        } else
            cg_log(&c->server->st->log, CG_DEBUG, "%s - TLS error: %s", c->client_text,
                   cg_tls_cause_text(cg_tls_cause(c->tls)));
        cg_buf_reset(&c->in);
        cg_conn_close(c); /* after the alert, if the session had one to send */
        return -1;
    }
    if (rc & CG_TLS_HANDSHAKE) {
        /* ALPN picks the protocol: one of the server's table, else the one
         * the connection was made for (HTTP/1.1). */
        size_t alen = 0;
        const char *alpn = cg_tls_alpn(c->tls, &alen);
        for (size_t i = 0; alpn && i < c->server->alpn_n; i++)
            if (strlen(c->server->alpn[i].name) == alen &&
                !memcmp(c->server->alpn[i].name, alpn, alen))
                c->proto = c->server->alpn[i].proto;
        c->deadline = 0;
        cg_meter_tls(c->server, 1);
        c->tls_info = tls_info_new(c);
        if (!c->tls_info || c->proto->on_connect(c) < 0) {
            cg_log_exception(&c->server->st->log, "Exception while starting a TLS connection");
            cg_conn_abort(c);
            return -1;
        }
    }
    if (rc & CG_TLS_CLOSED) {
        /* close_notify: serve what came before it, then end as at EOF. */
        if (c->proto_state && cg_buf_unread(&c->in))
            c->proto->on_data(c);
        cg_conn_close(c);
        return -1;
    }
    return c->proto_state && cg_buf_unread(&c->in) ? 1 : 0;
}

/* Bytes arrived in the read buffer (conn_read_buffer). */
static void conn_received(cg_conn *c)
{
    c->idle_ticks = 0;
    if (c->closed) {
        cg_buf_reset(conn_read_buffer(c));
        return;
    }
    Py_INCREF(c); /* processing may drop the transport's reference */
    int go = !c->pp_pending || conn_pp_input(c) > 0;
    if (go && (!c->tls || conn_tls_input(c) > 0))
        c->proto->on_data(c);
    cg_conn_return_buffer(c);
    Py_DECREF(c);
}

/* A connection holds a read buffer only while it has unread bytes (a partial
 * head, body the app has not taken, pipelined requests). Once a read is
 * processed to the end the buffer goes to the server's spare slot, and the
 * next read on any connection takes it from there: reads are handled one at
 * a time, so one buffer serves every connection that is keeping up, and an
 * idle keep-alive connection holds none. */
void cg_conn_return_buffer(cg_conn *c)
{
    cg_server *srv = c->server;
    if (!c->in.data || cg_buf_unread(&c->in) != 0)
        return;
    if (!srv->spare_in.data && c->in.cap <= 2 * CG_READ_CHUNK) {
        srv->spare_in = c->in;
        cg_buf_reset(&srv->spare_in);
        cg_buf_init(&c->in);
    } else {
        cg_buf_free(&c->in);
    }
}

static PyObject *conn_get_buffer(cg_conn *c, PyObject *sizehint)
{
    (void)sizehint;
    cg_buf *b = conn_read_buffer(c);
    if (!c->tls)
        conn_take_spare(c);
    if (c->read_size < CG_READ_MIN)
        c->read_size = CG_READ_MIN;
    if (b->cap - b->len < c->read_size / 2 && cg_buf_reserve(b, c->read_size) < 0)
        return PyErr_NoMemory();
    return Py_NewRef(c); /* see conn_getbuffer */
}

/* The connection is its own read buffer: get_buffer() returns it, and its
 * buffer interface exposes the free space at the end of `in` (len() is that
 * space's size), so a read creates no memoryview. A transport takes the view
 * right after get_buffer() and has read into it before buffer_updated(). */
static int conn_getbuffer(cg_conn *c, Py_buffer *view, int flags)
{
    cg_buf *b = conn_read_buffer(c);
    return PyBuffer_FillInfo(view, (PyObject *)c, b->data + b->len, (Py_ssize_t)(b->cap - b->len),
                             0, flags);
}

static Py_ssize_t conn_length(cg_conn *c)
{
    cg_buf *b = conn_read_buffer(c);
    return (Py_ssize_t)(b->cap - b->len);
}

/* A length must not make a connection with a full buffer false. */
static int conn_bool(cg_conn *c)
{
    (void)c;
    return 1;
}

static PyObject *conn_buffer_updated(cg_conn *c, PyObject *nbytes)
{
    Py_ssize_t n = PyLong_AsSsize_t(nbytes);
    if (n < 0) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    cg_buf *b = conn_read_buffer(c);
    if ((size_t)n > b->cap - b->len) {
        PyErr_SetString(PyExc_ValueError, "buffer_updated: more bytes than the buffer holds");
        return NULL;
    }
    /* A read that filled what was offered: offer more next time. */
    if ((size_t)n == b->cap - b->len && c->read_size < CG_READ_CHUNK)
        c->read_size *= 2;
    b->len += (size_t)n;
    cg_meter_bytes_in(c->server, (size_t)n);
    conn_received(c);
    Py_RETURN_NONE;
}

static PyObject *conn_eof_received(cg_conn *c, PyObject *unused)
{
    (void)unused;
    /* The client is gone (a half-close cannot be told apart from a close):
     * returning None lets the transport close, and connection_lost reports
     * http.disconnect to a running app. The buffer offered for the read that
     * found EOF goes back now, not when the loop gets to connection_lost: a
     * burst of closes then needs one buffer, not one each. */
    cg_conn_return_buffer(c);
    Py_RETURN_NONE;
}

static PyObject *conn_pause_writing(cg_conn *c, PyObject *unused)
{
    (void)unused;
    c->write_paused = 1;
    Py_RETURN_NONE;
}

PyObject *cg_conn_poll_drain(cg_conn *c, PyObject **fut)
{
    if (!c->write_paused || c->closed || !c->transport)
        return Py_NewRef(Py_None);
    *fut = cg_waiters_add(c->server->st, &c->drain_waiters);
    return NULL;
}

static void conn_wake_drain(cg_conn *c)
{
    cg_waiters_wake(c->server->st, &c->drain_waiters);
}

static void file_pump(cg_conn *c);

static PyObject *conn_resume_writing(cg_conn *c, PyObject *unused)
{
    (void)unused;
    c->write_paused = 0;
    Py_INCREF(c);
    if (c->sf)
        file_pump(c); /* the transport's buffer is empty: the file goes on */
    conn_wake_drain(c);
    if (c->proto_state && !c->closed)
        c->proto->on_writable(c);
    Py_DECREF(c);
    Py_RETURN_NONE;
}

/* ---- files written around the transport ------------------------------------
 * A file goes from the page cache to the socket with sendfile(2), never
 * through the process, on the socket the transport owns: the transport is
 * left alone while its buffer holds nothing (nothing else writes on the
 * connection while a response body is being sent), and takes the socket
 * back, unaware, when the file is out. Before the first byte the held
 * output is handed to the transport and the transport's buffer must empty:
 * its write buffer limits are set to 0 for that, so that resume_writing says
 * when (asyncio and uvloop alike call it once the buffer is at the low
 * mark), then put back. The socket is written through a duplicate of its
 * descriptor, which is also what the loop watches for writability
 * (add_writer refuses a descriptor a transport owns, and the transport may
 * close its own at any time after connection_lost). */

/* Bytes written per turn of the loop at most: other connections get theirs. */
#define CG_FILE_ROUND (8 * 1024 * 1024)

struct cg_sendfile {
    PyObject *pre;        /* bytes written before the file, or NULL */
    size_t pre_pos;       /* of those, written */
    int fd;               /* our duplicate of the file's descriptor */
    long long off, left;  /* its next byte, and the bytes still to write */
    int sock;             /* our duplicate of the socket's descriptor */
    PyObject *cb;         /* the bound _file_writable, while add_writer watches sock */
    unsigned drained : 1; /* the transport's buffer was seen empty: the socket is ours */
    unsigned limits : 1;  /* the transport's write buffer limits are 0 (see above) */
    cg_waiters waiters;   /* woken when the file is out or never will be */
};

/* Calls loop.<name>(sock[, cb]): 0 or -1 (exception cleared). */
static int file_loop_call(cg_conn *c, PyObject *name, PyObject *cb)
{
    PyObject *fd = PyLong_FromLong(c->sf->sock), *r = NULL;
    if (fd)
        r = cb ? PyObject_CallMethodObjArgs(c->server->loop, name, fd, cb, NULL)
               : PyObject_CallMethodObjArgs(c->server->loop, name, fd, NULL);
    Py_XDECREF(fd);
    if (!r) {
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The loop watches the socket for room (on) or stops (off). 0 or -1. */
static int file_watch(cg_conn *c, int on)
{
    cg_sendfile *sf = c->sf;
    if (on == (sf->cb != NULL))
        return 0;
    if (!on) {
        (void)file_loop_call(c, c->server->st->s_remove_writer, NULL);
        Py_CLEAR(sf->cb);
        return 0;
    }
    sf->cb = PyObject_GetAttrString((PyObject *)c, "_file_writable");
    if (!sf->cb) {
        PyErr_Clear();
        return -1;
    }
    if (file_loop_call(c, c->server->st->s_add_writer, sf->cb) < 0) {
        Py_CLEAR(sf->cb);
        return -1;
    }
    return 0;
}

/* Sets the transport's write buffer limits to 0 (on) or back to its
 * defaults. 0 or -1 (exception cleared). */
static int file_limits(cg_conn *c, int on)
{
    cg_sendfile *sf = c->sf;
    if (on == sf->limits || !c->transport)
        return 0;
    PyObject *r;
    if (on) {
        PyObject *zero = PyLong_FromLong(0);
        r = zero ? PyObject_CallMethodObjArgs(
                       c->transport, c->server->st->s_set_write_buffer_limits, zero, zero, NULL)
                 : NULL;
        Py_XDECREF(zero);
    } else {
        r = PyObject_CallMethodNoArgs(c->transport, c->server->st->s_set_write_buffer_limits);
    }
    if (!r) {
        PyErr_Clear();
        return -1;
    }
    Py_DECREF(r);
    sf->limits = (unsigned)on;
    return 0;
}

/* The file is out, or never will be: the socket is the transport's again
 * and the waiting call is woken. Safe to call with no file. */
static void file_end(cg_conn *c)
{
    cg_sendfile *sf = c->sf;
    if (!sf)
        return;
    (void)file_watch(c, 0);
    (void)file_limits(c, 0);
    c->sf = NULL;
    close(sf->sock);
    close(sf->fd);
    Py_CLEAR(sf->pre);
    cg_waiters w = sf->waiters;
    PyMem_Free(sf);
    cg_waiters_wake(c->server->st, &w);
}

/* A write failed (the peer is gone, mostly; err 0: the file is shorter
 * than its count): the response cannot complete. */
static void file_fail(cg_conn *c, int err)
{
    c->sf_error = err ? err : -1;
    cg_log(&c->server->st->log, CG_DEBUG, "%s - sending a file failed: %s", c->client_text,
           err ? strerror(err) : "the file is shorter than its response");
    file_end(c);
    cg_conn_abort(c);
}

/* Writes what the socket takes, up to CG_FILE_ROUND; then the loop calls
 * back (at once, when the round, not the socket, stopped it). */
static void file_pump(cg_conn *c)
{
    cg_sendfile *sf = c->sf;
    if (!sf)
        return;
    if (c->closed || !c->transport) {
        c->sf_error = EPIPE;
        file_end(c);
        return;
    }
    if (!sf->drained) {
        if (held_len(c) && conn_flush(c) < 0)
            PyErr_Clear(); /* a closing transport: connection_lost follows */
        PyObject *r =
            PyObject_CallMethodNoArgs(c->transport, c->server->st->s_get_write_buffer_size);
        Py_ssize_t buffered = r ? PyLong_AsSsize_t(r) : -1;
        Py_XDECREF(r);
        if (buffered < 0) {
            PyErr_Clear();
            file_fail(c, EIO);
            return;
        }
        if (buffered > 0) {
            /* resume_writing pumps again once the transport wrote it all. */
            if (file_limits(c, 1) < 0) {
                file_fail(c, EIO);
                return;
            }
            return;
        }
        sf->drained = 1;
        (void)file_limits(c, 0);
    }
#ifdef __linux__
    size_t round = 0;
    while (sf->left > 0) {
        ssize_t n;
        size_t pre_len = sf->pre ? (size_t)PyBytes_GET_SIZE(sf->pre) : 0;
        if (sf->pre_pos < pre_len) {
            /* MSG_MORE: the head leaves in the same segments as the file. */
            n = send(sf->sock, PyBytes_AS_STRING(sf->pre) + sf->pre_pos, pre_len - sf->pre_pos,
                     MSG_NOSIGNAL | MSG_MORE);
            if (n > 0)
                sf->pre_pos += (size_t)n;
        } else {
            off_t off = (off_t)sf->off;
            size_t want = sf->left > (1 << 30) ? (size_t)(1 << 30) : (size_t)sf->left;
            n = sendfile(sf->sock, sf->fd, &off, want);
            if (n == 0) {
                file_fail(c, 0);
                return;
            }
            if (n > 0) {
                sf->off += n;
                sf->left -= n;
                c->sf_sent += n;
            }
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                file_fail(c, errno);
                return;
            }
            if (file_watch(c, 1) < 0)
                file_fail(c, EIO);
            return;
        }
        cg_meter_bytes_out(c->server, (size_t)n);
        round += (size_t)n;
        if (round >= CG_FILE_ROUND && sf->left > 0) {
            if (file_watch(c, 1) < 0) /* writable: called back in the next pass */
                file_fail(c, EIO);
            return;
        }
    }
#endif
    file_end(c);
}

static PyObject *conn_file_writable(cg_conn *c, PyObject *unused)
{
    (void)unused;
    Py_INCREF(c);
    file_pump(c);
    Py_DECREF(c);
    Py_RETURN_NONE;
}

int cg_conn_send_file(cg_conn *c, PyObject *pre, int fd, long long offset, long long count)
{
#ifdef __linux__
    if (c->sf || c->closed || !c->transport || c->tls || count <= 0)
        return 1;
    PyObject *sock = conn_get_extra(c, c->server->st->s_socket);
    int sfd = sock && sock != Py_None ? PyObject_AsFileDescriptor(sock) : -1;
    Py_XDECREF(sock);
    if (sfd < 0) {
        PyErr_Clear();
        return 1;
    }
    cg_sendfile *sf = PyMem_Calloc(1, sizeof(*sf));
    if (!sf) {
        PyErr_NoMemory();
        return -1;
    }
    /* Duplicates of both: the transport may close the socket's own after
     * connection_lost, the caller its file's, while the transfer still runs. */
    sf->sock = fcntl(sfd, F_DUPFD_CLOEXEC, 0);
    sf->fd = sf->sock < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (sf->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (sf->sock >= 0)
            close(sf->sock);
        PyMem_Free(sf);
        return -1;
    }
    sf->pre = Py_XNewRef(pre);
    c->sf_sent = 0;
    c->sf_error = 0;
    sf->off = offset;
    sf->left = count;
    c->sf = sf;
    Py_INCREF(c);
    file_pump(c);
    Py_DECREF(c);
    return 0;
#else
    (void)c;
    (void)pre;
    (void)fd;
    (void)offset;
    (void)count;
    return 1;
#endif
}

PyObject *cg_conn_poll_file(cg_conn *c, PyObject **fut)
{
    if (c->sf) {
        *fut = cg_waiters_add(c->server->st, &c->sf->waiters);
        return NULL;
    }
    if (c->sf_error == 0)
        return Py_NewRef(Py_None);
    if (c->sf_error < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the file is shorter than the response says");
        return NULL;
    }
    errno = c->sf_error;
    PyErr_SetFromErrno(PyExc_OSError); /* EPIPE, ECONNRESET: a ConnectionError subclass */
    return NULL;
}

static PyObject *conn_data_received(cg_conn *c, PyObject *data)
{
    /* Used by transports that do not support buffered reads. */
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    size_t n = (size_t)view.len;
    int rc = cg_buf_append(conn_read_buffer(c), view.buf, n);
    PyBuffer_Release(&view);
    if (rc < 0)
        return PyErr_NoMemory();
    cg_meter_bytes_in(c->server, n);
    conn_received(c);
    Py_RETURN_NONE;
}

/* ---- type --------------------------------------------------------------- */

PyObject *cg_conn_new(cg_server *srv, const cg_proto_ops *proto)
{
    cg_conn *c = PyObject_GC_New(cg_conn, srv->st->ConnType);
    if (!c)
        return NULL;
    c->server = (cg_server *)Py_NewRef(srv);
    c->transport = NULL;
    c->prev = c->next = NULL;
    cg_buf_init(&c->in);
    cg_buf_init(&c->out);
    c->held_one = NULL;
    c->proto = proto;
    c->proto_state = NULL;
    c->tls = NULL;
    c->tls_info = NULL;
    c->client = NULL;
    c->sockname = NULL;
    c->client_len = 0;
    c->deadline = 0;
    c->idle_ticks = 0;
    c->read_size = CG_READ_MIN;
    c->drain_waiters = (cg_waiters){NULL, NULL};
    c->sf = NULL;
    c->read_paused = c->write_paused = c->in_list = c->trusted_proxy = c->closed = 0;
    c->pp_pending = 0;
    c->flush_queued = 0;
    c->produce_soon = 0;
    c->lingering = 0;
    c->flush_next = NULL;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

static int conn_traverse(cg_conn *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->server);
    Py_VISIT(c->transport);
    Py_VISIT(c->client);
    Py_VISIT(c->sockname);
    Py_VISIT(c->tls_info);
    if (c->sf) {
        Py_VISIT(c->sf->pre);
        Py_VISIT(c->sf->cb);
        int rc = cg_waiters_traverse(&c->sf->waiters, visit, arg);
        if (rc)
            return rc;
    }
    int rc = c->proto->traverse(c, visit, arg);
    return rc ? rc : cg_waiters_traverse(&c->drain_waiters, visit, arg);
}

static int conn_clear(cg_conn *c)
{
    if (c->sf) {
        Py_CLEAR(c->sf->pre);
        Py_CLEAR(c->sf->cb);
        cg_waiters_clear(&c->sf->waiters);
    }
    Py_CLEAR(c->transport);
    c->proto->clear(c);
    Py_CLEAR(c->tls_info);
    Py_CLEAR(c->client);
    Py_CLEAR(c->sockname);
    cg_waiters_clear(&c->drain_waiters);
    return 0;
}

static void conn_dealloc(cg_conn *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    conn_clear(c);
    if (c->sf) { /* nothing watches it any more (the loop's callback held c) */
        close(c->sf->sock);
        PyMem_Free(c->sf);
        c->sf = NULL;
    }
    c->proto->free(c);
    cg_tls_free(c->tls);
    c->tls = NULL;
    Py_CLEAR(c->server);
    cg_buf_free(&c->in);
    conn_drop_held(c);
    tp->tp_free(c);
    Py_DECREF(tp);
}

static PyMethodDef conn_methods[] = {
    {"connection_made", (PyCFunction)conn_connection_made, METH_O, NULL},
    {"connection_lost", (PyCFunction)conn_connection_lost, METH_O, NULL},
    {"get_buffer", (PyCFunction)conn_get_buffer, METH_O, NULL},
    {"buffer_updated", (PyCFunction)conn_buffer_updated, METH_O, NULL},
    {"data_received", (PyCFunction)conn_data_received, METH_O, NULL},
    {"eof_received", (PyCFunction)conn_eof_received, METH_NOARGS, NULL},
    {"pause_writing", (PyCFunction)conn_pause_writing, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)conn_resume_writing, METH_NOARGS, NULL},
    {"_file_writable", (PyCFunction)conn_file_writable, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot conn_slots[] = {
    {Py_tp_methods, conn_methods},   {Py_bf_getbuffer, conn_getbuffer},
    {Py_sq_length, conn_length},     {Py_nb_bool, conn_bool},
    {Py_tp_traverse, conn_traverse}, {Py_tp_clear, conn_clear},
    {Py_tp_dealloc, conn_dealloc},   {0, NULL},
};

static PyType_Spec conn_spec = {
    .name = "casgi._casgi.Connection",
    .basicsize = sizeof(cg_conn),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = conn_slots,
};

int cg_conn_types_init(PyObject *module, cg_state *st)
{
    /* A BufferedProtocol subclass, so both asyncio and uvloop read into our buffer. */
    PyObject *bases = PyTuple_Pack(1, st->BufferedProtocol);
    if (!bases)
        return -1;
    st->ConnType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &conn_spec, bases);
    Py_DECREF(bases);
    if (!st->ConnType)
        return -1;
    st->OutputType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &output_spec, NULL);
    return st->OutputType ? 0 : -1;
}
