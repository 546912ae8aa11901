/* The server, its connections and their request cycles: shared internals of
 * server.c (lifecycle), conn.c (the protocol on the loop), asgi_http.c
 * (scope, receive, send) and asgi_ws.c (WebSocket sessions). */
#ifndef CASGI_SERVER_H
#define CASGI_SERVER_H

#include "context.h"

#include "buf.h"
#include "http1.h"
#include "proxy.h"

typedef struct cg_conn cg_conn;
typedef struct cg_cycle cg_cycle;
typedef struct cg_ws cg_ws;

enum cg_phase {
    CG_PHASE_HEAD,     /* waiting for (more of) a request head */
    CG_PHASE_BODY,     /* a cycle is active and its body is still arriving */
    CG_PHASE_RESPONSE, /* a cycle is active, its body is complete */
    CG_PHASE_WS,       /* upgraded to a WebSocket: bytes go to c->ws */
    CG_PHASE_CLOSED,   /* closing or closed: nothing more is read */
};

enum cg_body_mode { CG_BODY_NONE, CG_BODY_LENGTH, CG_BODY_CHUNKED };

struct cg_conn {
    PyObject_HEAD cg_server *server; /* strong */
    PyObject *transport;             /* NULL before connection_made and after connection_lost */
    cg_conn *prev, *next;            /* in server->conns while open */
    cg_buf in;                       /* bytes read, not yet parsed */
    cg_buf out;                      /* output held for one write (see cg_conn_settle) */
    PyObject *held_one;              /* or, while it is one piece, that piece (bytes) */
    cg_http1_parser parser;
    cg_http1_chunked chunked;
    int phase;            /* enum cg_phase */
    int body_mode;        /* enum cg_body_mode of the active cycle */
    long long body_left;  /* CG_BODY_LENGTH: bytes still to arrive */
    cg_cycle *cycle;      /* strong: the active cycle, or NULL */
    cg_ws *ws;            /* strong: the WebSocket session after an upgrade, or NULL */
    PyObject *client;     /* scope["client"]: (host, port) or None */
    PyObject *sockname;   /* scope["server"]: (host, port) or None */
    char client_text[72]; /* "host:port" for the access log */
    size_t client_len;
    double deadline;            /* monotonic time after which the ticker closes it (408 for a
                                 * head or body that is late); 0 = none */
    int deadline_is_head;       /* the deadline is the request-head timeout (answer 408) */
    int idle_ticks;             /* ticks spent idle; buffers are released after one */
    size_t read_size;           /* bytes offered to the next read: grows while reads fill it */
    cg_waiters drain_waiters;   /* woken by resume_writing/connection_lost */
    unsigned trusted_proxy : 1; /* the peer may set X-Forwarded-For/-Proto */
    unsigned served : 1;        /* at least one request started on it */
    unsigned read_paused : 1;
    unsigned write_paused : 1;
    unsigned in_list : 1;
    unsigned processing : 1;   /* conn_process is running (calls into it return at once) */
    unsigned reprocess : 1;    /* conn_process was asked to run again while running */
    unsigned flush_queued : 1; /* in server->flush_list */
    cg_conn *flush_next;
};

enum cg_resp_state {
    CG_RESP_NONE,      /* nothing sent yet */
    CG_RESP_HELD,      /* http.response.start received, head held for the body */
    CG_RESP_STREAMING, /* head on the wire, more body to come */
    CG_RESP_COMPLETE,  /* response done */
};

struct cg_cycle {
    PyObject_HEAD cg_server *server; /* strong */
    cg_conn *conn;                   /* strong while the cycle owns the connection, then NULL */
    PyObject *task;                  /* the Task running the app, until it finishes */
    PyObject *method;                /* str, for the access log */
    PyObject *raw_path;              /* bytes, without root_path, for the access log */
    PyObject *query;                 /* bytes */
    PyObject *client_text;           /* str "host:port" of a forwarded client for the log,
                                      * or NULL: the connection's client_text */
    cg_buf body;                     /* request body received and not yet given to the app */
    cg_waiters recv_waiters;         /* woken when body arrives or on disconnect */
    int minor_version;
    int status;
    long long resp_length; /* the response's content-length (the app's or computed), -1 when none */
    long long resp_sent;   /* body bytes the app has sent */
    cg_buf head;           /* response head being held */
    int resp;              /* enum cg_resp_state */
    unsigned keep_alive : 1;
    unsigned is_head : 1;
    unsigned is_connect : 1; /* a 2xx answer would be a tunnel: refused */
    unsigned expect_continue : 1;
    unsigned body_done : 1;    /* the whole request body has arrived */
    unsigned body_final : 1;   /* more_body=False was given to the app */
    unsigned disconnected : 1; /* the client went away */
    unsigned chunked_out : 1;  /* response uses chunked framing */
    unsigned no_body : 1;      /* HEAD, 204, 304: no body bytes on the wire */
    unsigned in_step : 1;      /* the app's own task is running right now */
    unsigned stepped : 1;      /* the app's task has run at least one step */
    unsigned task_done : 1;
    unsigned event_stream : 1; /* the response is text/event-stream (server-sent events) */
    unsigned told_leaving : 1; /* receive() said http.disconnect because the server stops */
};

/* conn.c */
/** A new connection protocol object for srv. */
PyObject *cg_conn_new(cg_server *srv);
int cg_conn_types_init(PyObject *module, cg_state *st);
/** Writes `data` to the transport. Returns 0 or -1 with an exception. */
int cg_conn_write(cg_conn *c, const char *data, size_t len);
/** Writes a bytes-like object (without copying it unless output is held).
 * Returns 0 or -1. */
int cg_conn_write_obj(cg_conn *c, PyObject *bytes);
/** Space for `n` bytes of a complete response at the end of the held output,
 * or NULL when it should be written now (too much held, or the connection
 * is closing) or memory is short (no exception either way). */
char *cg_conn_hold(cg_conn *c, size_t n);
/** Queues the held output for the server's flush (or writes it now, see
 * queue_flush) unless a batch is still being gathered: called when
 * processing of the connection stops (end of a read, of an app step, of a
 * response). */
void cg_conn_settle(cg_conn *c);
/** Writes the held output of every connection queued by cg_conn_settle. */
void cg_server_flush_held(cg_server *srv);
/** Closes the transport (flushing what was written). */
void cg_conn_close(cg_conn *c);
/** The active cycle finished its response; continue with pipelined data. */
void cg_conn_cycle_complete(cg_conn *c, int keep_alive);
/** Resumes reading if it was paused for backpressure and no longer must be. */
void cg_conn_maybe_resume(cg_conn *c);
/** Hands the read buffer to the server's spare slot (or frees it) when it
 * holds no unread bytes: a connection keeps a buffer only while it needs one. */
void cg_conn_return_buffer(cg_conn *c);
/** Ends the connection with a reset (RST, not FIN): for a response that
 * cannot be completed, so that no client takes a truncated body for a
 * complete one. Output not yet sent is dropped (see conn.c). */
void cg_conn_abort(cg_conn *c);
/** Answers a rejected request with `status`, connection: close, and closes. */
void cg_conn_reject(cg_conn *c, int status);
/** Ends a request whose body cannot be read to its end: the app gets
 * http.disconnect; the client gets `status` (connection: close) before the
 * response started, a reset while it is unfinished, else a close. */
void cg_conn_abort_body(cg_conn *c, int status);
/** 1 when c is a kept-alive connection idle between requests. */
int cg_conn_is_idle(const cg_conn *c);

/** --timeout-request-body-idle: while a body is arriving, the connection's
 * deadline is that long after the latest read; none while the client is not
 * expected to send (reading paused because the app is behind, or an
 * `Expect: 100-continue` the app has not answered by calling receive()). */
void cg_conn_arm_body_deadline(cg_conn *c);
/** Pauses (on = 0) or resumes reading from the transport. */
void cg_conn_set_reading(cg_conn *c, int on);
/** Polls for the end of write backpressure on c (a cg_poll_fn body). */
PyObject *cg_conn_poll_drain(cg_conn *c, PyObject **fut);
/** Completes the drain waiter of c when writing may resume. */
void cg_conn_wake_drain(cg_conn *c);

/* asgi_http.c */
/** The client for a log line about cycle `cy` on connection `c` (NULL when
 * gone): the forwarded client when a trusted proxy named one, else the peer.
 * NUL-terminated; valid while the cycle and the connection are. */
const char *cg_cycle_client_text(cg_cycle *cy, cg_conn *c, size_t *len);

/** A cycle for the parsed head (no task, not owned by the connection). */
cg_cycle *cg_cycle_new(cg_conn *c, const cg_http1_request *req);
/** The ASGI scope for the request of cy (type http, or websocket). */
PyObject *cg_scope_new(cg_cycle *cy, const cg_http1_request *req, int websocket);
/** Handles http.response.start (start = 1) or http.response.body on cy. 0 or -1. */
int cg_cycle_http_send(cg_cycle *cy, int start, PyObject *message);
int cg_asgi_http_types_init(PyObject *module, cg_state *st);
/** Begins a cycle for the parsed head `req` on c: it becomes c->cycle and
 * *scope its scope. Returns 0, with *scope NULL when the request was
 * answered without the app (over --limit-concurrency), or -1. */
int cg_cycle_begin(cg_conn *c, const cg_http1_request *req, PyObject **scope);
/** Runs the app of c's active cycle with `scope` (begun by cg_cycle_begin).
 * The app may run its first step, even to its end, before this returns.
 * Returns 0 or -1. */
int cg_cycle_run(cg_conn *c, PyObject *scope);
/** New body bytes for the app (copied). Returns 0 or -1. */
int cg_cycle_feed(cg_cycle *cy, const char *data, size_t len);
/** The request body is complete. */
void cg_cycle_body_done(cg_cycle *cy);
/** The client disconnected. */
void cg_cycle_disconnect(cg_cycle *cy);
/** Graceful shutdown began: a server-sent events response (content-type
 * text/event-stream) that is streaming, whose request body the app has read,
 * is told by receive() that the client is going away (http.disconnect): such
 * a stream never ends by itself, and its client reconnects. Other streams
 * may finish within the graceful timeout. */
void cg_cycle_server_leaving(cg_cycle *cy);

/* asgi_ws.c */
/** 1 when req is a WebSocket upgrade this server serves (--ws not none). */
int cg_ws_is_upgrade(cg_server *srv, const cg_http1_request *req);
/** Starts a WebSocket session on c for the upgrade request (answers 426/400
 * itself when the handshake is invalid). Returns 0 or -1. */
int cg_ws_start(cg_conn *c, const cg_http1_request *req);
/** Frames arrived (c->phase is CG_PHASE_WS). */
void cg_ws_process(cg_conn *c);
/** 1 while received messages wait for the app beyond the queue bounds. */
int cg_ws_queue_full(cg_ws *ws);
/** The connection is gone. */
void cg_ws_connection_lost(cg_conn *c);
/** Pings and closing-handshake deadlines, from the server's ticker. */
void cg_ws_tick(cg_conn *c, double now);
/** Server shutdown: close an open WebSocket with 1012. */
void cg_ws_shutdown(cg_conn *c);

#endif
