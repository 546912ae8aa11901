/* ASGI request cycles (asgi_http.c) and WebSocket sessions (asgi_ws.c): the
 * scope, receive() and send() of one request, over any protocol. A protocol
 * (h1.c) starts them and feeds them; they answer only through the request's
 * cg_stream (stream.h). */
#ifndef CASGI_ASGI_H
#define CASGI_ASGI_H

#include "context.h"
#include "stream.h"

typedef struct cg_cycle cg_cycle;
typedef struct cg_ws cg_ws;

enum cg_resp_state {
    CG_RESP_NONE,      /* nothing sent yet */
    CG_RESP_HELD,      /* http.response.start received, head held for the body */
    CG_RESP_STREAMING, /* head on the wire, more body to come */
    CG_RESP_COMPLETE,  /* response done */
};

/* Fields are written by the ASGI files only; a protocol reads them through
 * the inline functions below. */
struct cg_cycle {
    PyObject_HEAD cg_server *server; /* strong */
    cg_stream *stream;               /* while the cycle owns its stream (a reference to
                                      * stream->owner is held), then NULL */
    PyObject *task;                  /* the Task running the app, until it finishes */
    PyObject *method;                /* str, for the access log */
    PyObject *raw_path;              /* bytes, without root_path, for the access log */
    PyObject *query;                 /* bytes */
    PyObject *client_text;           /* str "host:port" of a forwarded client for the log,
                                      * or NULL: the stream's client_text */
    cg_buf body;                     /* request body received and not yet given to the app */
    cg_waiters recv_waiters;         /* woken when body arrives or on disconnect */
    cg_fields fields;                /* the response's headers, held with the head */
    cg_resp_head head;               /* the response head, held until the first body */
    int version;                     /* enum cg_http_version */
    int status;
    long long resp_length; /* the app's content-length, -1 when none */
    long long resp_sent;   /* body bytes the app has sent */
    long long resp_unsent; /* of those, bytes the protocol dropped unsent (a reset stream) */
    cg_alog_vals *alog;    /* what an --access-log-format / --access-log-json line reads of
                            * this request (its start, header values), or NULL (owned) */
    int resp;              /* enum cg_resp_state */
    unsigned is_head : 1;
    unsigned is_connect : 1; /* a 2xx answer would be a tunnel: refused */
    unsigned expect_continue : 1;
    unsigned body_done : 1;    /* the whole request body has arrived */
    unsigned body_final : 1;   /* more_body=False was given to the app */
    unsigned disconnected : 1; /* the client went away */
    unsigned in_step : 1;      /* the app's own task is running right now */
    unsigned stepped : 1;      /* the app's task has run at least one step */
    unsigned task_done : 1;
    unsigned event_stream : 1;   /* the response is text/event-stream (server-sent events) */
    unsigned told_leaving : 1;   /* receive() said http.disconnect because the server stops */
    unsigned trailers_ok : 1;    /* http.response.trailers offered (the client accepts them) */
    unsigned early_hints_ok : 1; /* http.response.early_hint offered */
    unsigned trailers_due : 1;   /* the body is complete, its trailers are not sent yet */
    unsigned websocket : 1;      /* a WebSocket session's handshake (metrics label) */
    uint64_t t0;                 /* metrics: when the head was complete (ns), 0 = not timed */

    unsigned pathsend_ok : 1; /* http.response.pathsend offered */
    unsigned zerocopy_ok : 1; /* http.response.zerocopysend offered */
    unsigned file_more : 1;   /* more body follows the file being sent */
    unsigned file_tried : 1;  /* the stream was asked to send the file itself */
    unsigned file_stream : 1; /* and does (send_file) */
    int file_fd;              /* the file a pathsend or zerocopysend is sending, or -1 */
    long long file_off;       /* its next byte to send */
    long long file_left;      /* bytes still to send */
    long long file_seek;      /* zerocopysend without offset: where its position ends, else -1 */

    unsigned accounted : 1; /* counted (metrics) and its access line written */
    unsigned qmark : 1;     /* the target had a '?' (for the access line's request line) */
};

/** Body bytes received and not yet taken by the app. */
static inline size_t cg_cycle_body_pending(const cg_cycle *cy)
{
    return cg_buf_unread(&cy->body);
}
/** 1 while the client waits for a 100 Continue the app has not asked for. */
static inline int cg_cycle_waits_continue(const cg_cycle *cy)
{
    return cy->expect_continue;
}
/** 1 while the app's task exists but has not run a step (its first response
 * may still join the batch being gathered). */
static inline int cg_cycle_before_first_step(const cg_cycle *cy)
{
    return cy->task && !cy->stepped && !cy->task_done;
}
/** 1 when part of a response was sent (or is held) and it is not complete. */
static inline int cg_cycle_response_unfinished(const cg_cycle *cy)
{
    return cy->resp == CG_RESP_HELD || cy->resp == CG_RESP_STREAMING;
}
/** 1 while the app's task runs (it may outlive its stream). */
static inline int cg_cycle_task_running(const cg_cycle *cy)
{
    return cy->task && !cy->task_done;
}
/** 1 when nothing of a response was sent. */
static inline int cg_cycle_response_none(const cg_cycle *cy)
{
    return cy->resp == CG_RESP_NONE;
}

/* asgi_http.c */
/** The client for a log line about cy: the forwarded client when a trusted
 * proxy named one, else the peer ("" once the stream is gone).
 * NUL-terminated; valid while the cycle and its stream are. */
const char *cg_cycle_client_text(cg_cycle *cy, size_t *len);
/** A cycle for the request head `req` on stream `s` (no task yet). */
cg_cycle *cg_cycle_new(cg_server *srv, cg_stream *s, const cg_http1_request *req);
/** The ASGI scope for the request of cy (type http, or websocket). */
PyObject *cg_scope_new(cg_cycle *cy, const cg_http1_request *req, int websocket);
/** Adds scope["extensions"][name] = a copy of the dict `value`, or an empty
 * dict when it is NULL (creating "extensions" when the scope has none).
 * 0 or -1. */
int cg_scope_add_extension(PyObject *scope, cg_state *st, PyObject *name, PyObject *value);
/* Response extensions a protocol can carry (cg_cycle_offer_extensions). */
enum {
    CG_EXT_TRAILERS = 1,     /* http.response.trailers */
    CG_EXT_EARLY_HINT = 2,   /* http.response.early_hint (103) */
    CG_EXT_PATHSEND = 4,     /* http.response.pathsend: a file by its path */
    CG_EXT_ZEROCOPYSEND = 8, /* http.response.zerocopysend: a range of an open file */
};
/** Offers the extensions `which` (CG_EXT_*) to the app: in scope["extensions"]
 * and accepted by send(). 0, or -1 with an exception. */
int cg_cycle_offer_extensions(cg_cycle *cy, PyObject *scope, unsigned which);
/** Handles http.response.start (start = 1) or http.response.body on cy. 0 or -1. */
int cg_cycle_http_send(cg_cycle *cy, int start, PyObject *message);
int cg_asgi_http_types_init(PyObject *module, cg_state *st);
/** Counts the request, then builds its scope: *scope is NULL when the
 * request was answered without the app (over --limit-concurrency).
 * Returns 0 or -1. */
int cg_cycle_begin(cg_cycle *cy, const cg_http1_request *req, PyObject **scope);
/** Runs the app of cy with `scope`. The app may run its first step, even to
 * its end, before this returns. Returns 0 or -1. */
int cg_cycle_run(cg_cycle *cy, PyObject *scope);
/** New body bytes for the app (copied). Returns 0 or -1. */
int cg_cycle_feed(cg_cycle *cy, const char *data, size_t len);
/** The request body is complete. */
void cg_cycle_body_done(cg_cycle *cy);
/** The client disconnected. */
void cg_cycle_disconnect(cg_cycle *cy);
/** `n` body bytes the app sent never left (the stream closed with them
 * queued): the access line counts only what was sent. Before
 * cg_cycle_disconnect. */
void cg_cycle_output_dropped(cg_cycle *cy, size_t n);
/** The stream is released (the response completed, or the connection went
 * away): cy no longer writes to it. */
void cg_cycle_detach(cg_cycle *cy);
/** Metrics: the cycle's request was answered with `status` (its protocol
 * label, and its duration unless a WebSocket handshake). */
void cg_cycle_meter(cg_cycle *cy, int status);
/** Graceful shutdown began: a server-sent events response (content-type
 * text/event-stream) that is streaming, whose request body the app has read,
 * is told by receive() that the client is going away (http.disconnect): such
 * a stream never ends by itself, and its client reconnects. Other streams
 * may finish within the graceful timeout. */
void cg_cycle_server_leaving(cg_cycle *cy);

/* asgi_ws.c */
/** 1 when req is a WebSocket upgrade this server serves (--ws not none). */
int cg_ws_is_upgrade(cg_server *srv, const cg_http1_request *req);
/** Starts a WebSocket session on stream s for the upgrade request (HTTP/1.1)
 * or extended CONNECT (HTTP/2, RFC 8441: no key; accepted with 200): *out is
 * the session (new reference). Returns 0; a status (400, or 426: the
 * version is not 13) when the handshake is invalid and must be refused by
 * the protocol; or -1 with an exception. */
int cg_ws_start(cg_server *srv, cg_stream *s, const cg_http1_request *req, cg_ws **out);
/** Reads frames from `in` (consuming what it uses) while the session can
 * take them; pauses the stream's input when it cannot. */
void cg_ws_feed(cg_ws *ws, cg_buf *in);
/** 1 while received messages wait for the app beyond the queue bounds. */
int cg_ws_queue_full(cg_ws *ws);
/** The stream is gone. */
void cg_ws_stream_lost(cg_ws *ws);
/** Pings and closing-handshake deadlines, from the server's ticker. */
void cg_ws_tick(cg_ws *ws, double now);
/** Server shutdown: close an open WebSocket with 1012. */
void cg_ws_shutdown(cg_ws *ws);
/** The request cycle that carries the session's request data (for logs). */
cg_cycle *cg_ws_cycle(cg_ws *ws);

#endif
