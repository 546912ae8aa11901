/* The transport: an asyncio.BufferedProtocol implemented in C (conn.c). It
 * owns the socket's read buffer, batches output and keeps the connection's
 * deadline; it knows no HTTP. What the bytes mean is its protocol's business
 * (h1.c now), reached only through the cg_proto_ops table. */
#ifndef CASGI_CONN_H
#define CASGI_CONN_H

#include "context.h"

typedef struct cg_conn cg_conn;
typedef struct cg_sendfile cg_sendfile;

/* A protocol served on a connection. conn.c calls these and nothing else of
 * a protocol. */
typedef struct cg_proto_ops {
    /** connection_made: sets up the protocol's state (c->proto_state).
     * 0, or -1 with an exception. */
    int (*on_connect)(cg_conn *c);
    /** New bytes are in c->in. */
    void (*on_data)(cg_conn *c);
    /** Writing may resume (the drain waiters are already woken). */
    void (*on_writable)(cg_conn *c);
    /** The transport is gone: whatever runs on it learns so. */
    void (*on_lost)(cg_conn *c);
    /** The server's ticker: deadlines (c->deadline is the protocol's to set
     * and to act on), pings, idle housekeeping. */
    void (*on_tick)(cg_conn *c, double now);
    /** Graceful shutdown began: idle connections close, running ones are
     * told; a request not yet started has until `soon` to arrive. */
    void (*on_shutdown)(cg_conn *c, double soon);
    /** 1 while held output should keep waiting: a batch of responses is
     * still gathering (see cg_conn_settle). */
    int (*holds_output)(cg_conn *c);
    /** 1 when the connection is idle between requests (it may be closed to
     * make room under --limit-concurrency). */
    int (*is_idle)(const cg_conn *c);
    /** The protocol state's references, for the garbage collector. */
    int (*traverse)(cg_conn *c, visitproc visit, void *arg);
    /** Drops the protocol state's references. */
    void (*clear)(cg_conn *c);
    /** Frees the protocol state (the connection is being deallocated). */
    void (*free)(cg_conn *c);
    /** Moves the protocol's pending output into the held output (after
     * cg_conn_produce_soon; NULL for a protocol that never asks). */
    void (*produce)(cg_conn *c);
} cg_proto_ops;

struct cg_conn {
    PyObject_HEAD cg_server *server; /* strong */
    PyObject *transport;             /* NULL before connection_made and after connection_lost */
    cg_conn *prev, *next;            /* in server->conns while open */
    const cg_proto_ops *proto;
    void *proto_state;    /* the protocol's, from on_connect until free */
    cg_tls *tls;          /* TLS session, or NULL (cleartext) */
    PyObject *tls_info;   /* after the handshake: the ASGI "tls" extension dict */
    cg_buf in;            /* bytes read, not yet consumed by the protocol */
    cg_buf out;           /* output held for one write (see cg_conn_settle) */
    PyObject *held_one;   /* or, while it is one piece, that piece (bytes) */
    PyObject *client;     /* scope["client"]: (host, port) or None; a PROXY header's source */
    PyObject *sockname;   /* scope["server"]: (host, port) or None; a PROXY header's destination */
    char client_text[72]; /* "host:port" for the access log */
    size_t client_len;
    double deadline;            /* monotonic time at which the protocol's on_tick acts; 0 = none */
    int idle_ticks;             /* ticks spent idle; buffers are released after one */
    size_t read_size;           /* bytes offered to the next read: grows while reads fill it */
    cg_waiters drain_waiters;   /* woken by resume_writing/connection_lost */
    cg_sendfile *sf;            /* a file being written straight to the socket, or NULL */
    long long sf_sent;          /* the last such file's bytes written */
    int sf_error;               /* and how it ended: 0 all written, an errno, -1 file too short */
    unsigned trusted_proxy : 1; /* the peer (a PROXY header's source) may set X-Forwarded-* */
    unsigned pp_pending : 1;    /* --proxy-protocol: the header has not arrived yet; no TLS
                                 * session and no protocol until it has */
    unsigned closed : 1;        /* closing or closed: nothing more is read or held */
    unsigned read_paused : 1;
    unsigned write_paused : 1;
    unsigned in_list : 1;
    unsigned flush_queued : 1; /* in server->flush_list */
    unsigned produce_soon : 1; /* the flush asks the protocol to produce its output first */
    unsigned lingering : 1;    /* closed for writing, input dropped until EOF or the deadline */
    cg_conn *flush_next;
};

/** A new connection protocol object for srv serving `proto`. */
PyObject *cg_conn_new(cg_server *srv, const cg_proto_ops *proto);
int cg_conn_types_init(PyObject *module, cg_state *st);
/** Writes `data` to the transport. Returns 0 or -1 with an exception. */
int cg_conn_write(cg_conn *c, const char *data, size_t len);
/** Writes a bytes-like object (without copying it unless output is held).
 * Returns 0 or -1. */
int cg_conn_write_obj(cg_conn *c, PyObject *bytes);
/** Writes the unread bytes of `b`. A large block on a cleartext connection
 * is handed to the transport without a copy: `b` gives up its memory (it is
 * left empty, without storage). Returns 0 or -1 with an exception. */
int cg_conn_write_buf(cg_conn *c, cg_buf *b);
/** Space for `n` bytes of a complete response at the end of the held output,
 * or NULL when it should be written now (too much held, or the connection
 * is closing) or memory is short (no exception either way). */
char *cg_conn_hold(cg_conn *c, size_t n);
/** Queues the held output for the server's flush (or writes it now, see
 * queue_flush) unless the protocol still gathers a batch: called when
 * processing of the connection stops (end of a read, of an app step, of a
 * response). */
void cg_conn_settle(cg_conn *c);
/** Has the protocol's produce() run, then the held output written, at the
 * server's flush in this loop pass: for output that arises where producing
 * it at once could re-enter the code that caused it. */
void cg_conn_produce_soon(cg_conn *c);
/** Writes the held output of every connection queued by cg_conn_settle. */
void cg_server_flush_held(cg_server *srv);
/** Closes the transport (flushing what was written). */
void cg_conn_close(cg_conn *c);
/** Closes after what is written, for a peer that may still be sending (a
 * connection error): the write side is shut after the last bytes, and
 * input is read and dropped until the peer closes or `seconds` pass, so
 * those bytes are not lost to a reset answering unread input. */
void cg_conn_close_lingering(cg_conn *c, double seconds);
/** Ends the connection with a reset (RST, not FIN): for a response that
 * cannot be completed, so that no client takes a truncated body for a
 * complete one. Output not yet sent is dropped (see conn.c). */
void cg_conn_abort(cg_conn *c);
/** A forced shutdown: the transport is aborted, held output dropped. */
void cg_conn_drop(cg_conn *c);
/** Pauses (on = 0) or resumes reading from the transport. */
void cg_conn_set_reading(cg_conn *c, int on);
/** Hands the read buffer to the server's spare slot (or frees it) when it
 * holds no unread bytes: a connection keeps a buffer only while it needs one. */
void cg_conn_return_buffer(cg_conn *c);
/** Hands the connection to another protocol (HTTP/1.1 seeing the HTTP/2
 * preface): the current one's state is freed, `proto` attached and given
 * the unread input. The caller must not touch its own state afterwards. */
void cg_conn_switch(cg_conn *c, const cg_proto_ops *proto);
/** A tick while the protocol is idle between requests: after two, a read
 * buffer still held goes back and reads start small again. Returns how
 * many ticks the connection has been idle (0: input waits, not idle); the
 * protocol gives back its own memory at one of them, once. */
int cg_conn_idle_tick(cg_conn *c);
/** Writes the bytes `pre` (or nothing: NULL) and then `count` bytes of the
 * file `fd` from `offset` straight to the socket with sendfile(2), around
 * the transport: once the held output and the transport's own buffer are
 * written out, and without blocking (the loop says when the socket takes
 * more). The transfer uses its own duplicate of fd. A failed write aborts
 * the connection. Returns 0 when started, 1 when the
 * connection has no socket for it (nothing taken), -1 with an exception. */
int cg_conn_send_file(cg_conn *c, PyObject *pre, int fd, long long offset, long long count);
/** None once the file of cg_conn_send_file is out (c->sf_sent its bytes);
 * NULL with *fut to wait on (a cg_poll_fn body); or NULL with an exception
 * when it never will be: ConnectionError (or another OSError) when a write
 * failed or the connection closed, RuntimeError when the file was shorter
 * than the count. */
PyObject *cg_conn_poll_file(cg_conn *c, PyObject **fut);
/** Polls for the end of write backpressure on c (a cg_poll_fn body). */
PyObject *cg_conn_poll_drain(cg_conn *c, PyObject **fut);
/** uvicorn's trace lines ("127.0.0.1:51234 - HTTP connection made"). */
void cg_conn_trace(cg_conn *c, const char *what);
/** The ticker's visit: the protocol's on_tick. */
void cg_conn_tick(cg_conn *c, double now);
/** 1 when the connection is encrypted (scheme https/wss). */
static inline int cg_conn_is_tls(const cg_conn *c)
{
    return c->tls != NULL;
}
/** Graceful shutdown began (the protocol's on_shutdown). */
void cg_conn_shutdown(cg_conn *c, double soon);

#endif
