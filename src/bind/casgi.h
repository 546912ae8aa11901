/* Internal header of the casgi._casgi extension: module state and the
 * functions the binding files share. Only the public CPython C API is used. */
#ifndef CASGI_BIND_H
#define CASGI_BIND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Python 3.9 lacks these 3.10 helpers; equivalent definitions. */
#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *cg_new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
static inline PyObject *cg_xnew_ref(PyObject *o)
{
    Py_XINCREF(o);
    return o;
}
#define Py_NewRef(o) cg_new_ref((PyObject *)(o))
#define Py_XNewRef(o) cg_xnew_ref((PyObject *)(o))
static inline int PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *value)
{
    Py_INCREF(value);
    if (PyModule_AddObject(m, name, value) < 0) {
        Py_DECREF(value);
        return -1;
    }
    return 0;
}
#endif

/* 1 when an ASGI message's "type" equals `name` (an interned ASCII str):
 * identity first, then lengths, so most mismatches compare no characters.
 * An app's "http.response.start" is usually not the interned object (only
 * identifier-like constants are interned), so equal lengths compare bytes:
 * a str equal to an ASCII name is itself stored as ASCII. */
static inline int cg_type_is(PyObject *type, PyObject *name)
{
    if (type == name)
        return 1;
    if (!PyUnicode_Check(type) || PyUnicode_GET_LENGTH(type) != PyUnicode_GET_LENGTH(name))
        return 0;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(type) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    return PyUnicode_IS_ASCII(type) && memcmp(PyUnicode_DATA(type), PyUnicode_DATA(name),
                                              (size_t)PyUnicode_GET_LENGTH(name)) == 0;
}

/* Takes the exception being raised as one object (normalized, its traceback
 * attached) and clears it: a new reference, or NULL when none is set. */
static inline PyObject *cg_err_take(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v && tb)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

#include "hdrtab.h"
#include "options.h"

#include "log.h"

/* Interned strings used as dict keys and attribute names: (C name, text). */
#define CG_STRINGS(X)                                                                              \
    X(type, "type")                                                                                \
    X(asgi, "asgi")                                                                                \
    X(version, "version")                                                                          \
    X(spec_version, "spec_version")                                                                \
    X(http_version, "http_version")                                                                \
    X(server, "server")                                                                            \
    X(client, "client")                                                                            \
    X(scheme, "scheme")                                                                            \
    X(method, "method")                                                                            \
    X(root_path, "root_path")                                                                      \
    X(path, "path")                                                                                \
    X(raw_path, "raw_path")                                                                        \
    X(query_string, "query_string")                                                                \
    X(headers, "headers")                                                                          \
    X(state, "state")                                                                              \
    X(body, "body")                                                                                \
    X(more_body, "more_body")                                                                      \
    X(status, "status")                                                                            \
    X(message, "message")                                                                          \
    X(extensions, "extensions")                                                                    \
    X(tls, "tls")                                                                                  \
    X(http, "http")                                                                                \
    X(https, "https")                                                                              \
    X(lifespan, "lifespan")                                                                        \
    X(v1_0, "1.0")                                                                                 \
    X(v1_1, "1.1")                                                                                 \
    X(v2, "2")                                                                                     \
    X(v3_0, "3.0")                                                                                 \
    X(v2_3, "2.3")                                                                                 \
    X(http_request, "http.request")                                                                \
    X(http_disconnect, "http.disconnect")                                                          \
    X(http_response_start, "http.response.start")                                                  \
    X(http_response_body, "http.response.body")                                                    \
    X(http_response_trailers, "http.response.trailers")                                            \
    X(http_response_early_hint, "http.response.early_hint")                                        \
    X(http_response_pathsend, "http.response.pathsend")                                            \
    X(http_response_zerocopysend, "http.response.zerocopysend")                                    \
    X(file, "file")                                                                                \
    X(offset, "offset")                                                                            \
    X(count, "count")                                                                              \
    X(more_trailers, "more_trailers")                                                              \
    X(trailers, "trailers")                                                                        \
    X(links, "links")                                                                              \
    X(lifespan_startup, "lifespan.startup")                                                        \
    X(lifespan_shutdown, "lifespan.shutdown")                                                      \
    X(lifespan_startup_complete, "lifespan.startup.complete")                                      \
    X(lifespan_startup_failed, "lifespan.startup.failed")                                          \
    X(lifespan_shutdown_complete, "lifespan.shutdown.complete")                                    \
    X(lifespan_shutdown_failed, "lifespan.shutdown.failed")                                        \
    X(create_task, "create_task")                                                                  \
    X(create_future, "create_future")                                                              \
    X(get_task_factory, "get_task_factory")                                                        \
    X(kw_loop, "loop")                                                                             \
    X(kw_name, "name")                                                                             \
    X(kw_eager_start, "eager_start")                                                               \
    X(app_task_name, "casgi.app")                                                                  \
    X(set_result, "set_result")                                                                    \
    X(done, "done")                                                                                \
    X(cancel, "cancel")                                                                            \
    X(cancelled, "cancelled")                                                                      \
    X(add_done_callback, "add_done_callback")                                                      \
    X(call_later, "call_later")                                                                    \
    X(call_soon, "call_soon")                                                                      \
    X(write, "write")                                                                              \
    X(close, "close")                                                                              \
    X(write_eof, "write_eof")                                                                      \
    X(abort, "abort")                                                                              \
    X(pause_reading, "pause_reading")                                                              \
    X(resume_reading, "resume_reading")                                                            \
    X(get_extra_info, "get_extra_info")                                                            \
    X(get_write_buffer_size, "get_write_buffer_size")                                              \
    X(set_write_buffer_limits, "set_write_buffer_limits")                                          \
    X(add_writer, "add_writer")                                                                    \
    X(remove_writer, "remove_writer")                                                              \
    X(peername, "peername")                                                                        \
    X(sockname, "sockname")                                                                        \
    X(socket, "socket")                                                                            \
    X(m_GET, "GET")                                                                                \
    X(m_POST, "POST")                                                                              \
    X(m_PUT, "PUT")                                                                                \
    X(m_DELETE, "DELETE")                                                                          \
    X(m_HEAD, "HEAD")                                                                              \
    X(m_PATCH, "PATCH")                                                                            \
    X(m_OPTIONS, "OPTIONS")                                                                        \
    X(websocket, "websocket")                                                                      \
    X(ws, "ws")                                                                                    \
    X(wss, "wss")                                                                                  \
    X(v2_4, "2.4")                                                                                 \
    X(subprotocols, "subprotocols")                                                                \
    X(subprotocol, "subprotocol")                                                                  \
    X(text, "text")                                                                                \
    X(bytes, "bytes")                                                                              \
    X(code, "code")                                                                                \
    X(reason, "reason")                                                                            \
    X(websocket_connect, "websocket.connect")                                                      \
    X(websocket_accept, "websocket.accept")                                                        \
    X(websocket_receive, "websocket.receive")                                                      \
    X(websocket_send, "websocket.send")                                                            \
    X(websocket_close, "websocket.close")                                                          \
    X(websocket_disconnect, "websocket.disconnect")                                                \
    X(websocket_http_response_start, "websocket.http.response.start")                              \
    X(websocket_http_response_body, "websocket.http.response.body")

/* Module state: everything the extension keeps between calls. */
typedef struct cg_state {
    PyTypeObject *ServerType;
    PyTypeObject *ConnType;
    PyTypeObject *OutputType; /* a block of output handed to the transport (conn.c) */
    PyTypeObject *CycleType;  /* one HTTP request/response cycle */
    PyTypeObject *AwaitType;  /* awaitable that polls its owner (runner.c) */
    PyTypeObject *DoneType;   /* awaitable already complete with None */
    PyTypeObject *RunnerType; /* drives an app coroutine inside a Task */
    PyTypeObject *LifespanType;
    PyTypeObject *WebSocketType; /* one WebSocket session (asgi_ws.c) */
    PyObject *done;              /* the one DoneType instance */
    PyTypeObject *ASGI2Type;     /* adapter for ASGI 2 (double-callable) apps */
    PyObject *BufferedProtocol;  /* asyncio.BufferedProtocol */
    PyObject *asyncio;           /* the asyncio module */
    PyObject *CancelledError;    /* asyncio.CancelledError */
    PyObject *Future;            /* asyncio.Future */
    PyObject *Task;              /* asyncio.Task */
    PyObject *task_kwnames;      /* ("loop", "name"): keywords of a Task(...) call */
    PyObject *eager_kwnames;     /* ("loop", "name", "eager_start"), Python 3.12+ */
    PyObject *InvalidStateError; /* asyncio.InvalidStateError */
    PyObject *version;           /* "0.1.0" */
#define CG_STATE_STR(name, text) PyObject *s_##name;
    CG_STRINGS(CG_STATE_STR)
#undef CG_STATE_STR
    PyObject *hdr_names[CG_HDR__COUNT]; /* lower-case bytes per known header */
    PyObject *asgi_dict;                /* {"version": "3.0", "spec_version": "2.3"} template */
    PyObject *asgi_ws_dict;             /* {"version": "3.0", "spec_version": "2.4"} template */
    PyObject *ClientDisconnected;       /* OSError subclass raised by send() on a closed socket */
    PyObject *empty_bytes;
    PyObject *empty_str;
    cg_log_state log;
    /* Signal handling shared by the servers serving in the main thread
     * (server.c): */
    PyObject *sig_servers;  /* list of the servers hearing them */
    PyObject *sig_saved;    /* {signal number: previous Python handler} */
    PyObject *sig_captured; /* SIGINT/SIGTERM received meanwhile (list) */
    PyObject *sig_loop;     /* the loop whose handlers are set */
} cg_state;

/** The module state of the casgi._casgi module object `m`. */
static inline cg_state *cg_get_state(PyObject *m)
{
    return (cg_state *)PyModule_GetState(m);
}

/* What a hosting process (the gunicorn worker) provides in place of casgi's
 * own setup: its listening sockets, a heartbeat, and its logging. */
typedef struct cg_host {
    PyObject *sockets; /* list of listening socket.socket objects */
    PyObject *notify;  /* called from the event loop on every tick, or NULL */
} cg_host;

/** Runs the server for `cfg` until shutdown. `app` is an ASGI application
 * object given to run(), or NULL to import cfg->app. `host` is NULL except
 * under gunicorn. Returns the process exit status (0 clean, 3 startup
 * failure), or -1 with an exception set when an uncaught BaseException
 * (SystemExit, KeyboardInterrupt) must propagate. */
int cg_serve(PyObject *module, cg_config *cfg, PyObject *app, const cg_host *host);

/** The server for Config(app, **options) (`options` a dict of keywords, as
 * run() takes them): the app imported or prepared, logging set up, not yet
 * serving; its methods start(loop, sockets, signals), run(sockets, signals)
 * and request_exit(force) serve it. None after logging a startup failure;
 * NULL with an exception for a bad option. */
PyObject *cg_server_embed(PyObject *module, PyObject *app, PyObject *options);

/* Type specs, one file each; registered by module.c. */
int cg_server_types_init(PyObject *module, cg_state *st);
int cg_conn_types_init(PyObject *module, cg_state *st);
int cg_runner_types_init(PyObject *module, cg_state *st);
int cg_asgi_http_types_init(PyObject *module, cg_state *st);
int cg_lifespan_types_init(PyObject *module, cg_state *st);
int cg_ws_types_init(PyObject *module, cg_state *st);
int cg_app_types_init(PyObject *module, cg_state *st);

/* ---- runner.c: awaitables and the app runner ---------------------------- */

/** Polls for an awaitable's result. Returns a new reference to the result;
 * or NULL with no exception and *fut set to a new reference to a future to
 * wait on before polling again; or NULL with an exception set. */
typedef PyObject *(*cg_poll_fn)(PyObject *owner, PyObject **fut);

/** An awaitable that calls `poll(owner)` when awaited, and again each time
 * the future it returned completes. */
PyObject *cg_await_new(cg_state *st, PyObject *owner, cg_poll_fn poll);

/** Hooks a Runner calls while it drives an app coroutine. */
typedef struct cg_runner_hooks {
    /* The app is about to run a step (may be NULL). */
    void (*on_enter)(PyObject *owner);
    /* The app suspended: it yielded to the loop (may be NULL). */
    void (*on_leave)(PyObject *owner);
    /* The app finished: exc is NULL when it returned, else the exception it
     * raised (borrowed). No exception is set during the call; the hook must
     * not leave one set. */
    void (*on_finish)(PyObject *owner, PyObject *exc);
} cg_runner_hooks;

/** Wraps the awaitable returned by an app call in an object a Task accepts as
 * a coroutine. Exceptions (but not BaseException or CancelledError) are
 * handed to on_finish and not re-raised, so the Task never logs them. */
PyObject *cg_runner_new(cg_state *st, PyObject *awaitable, PyObject *owner,
                        const cg_runner_hooks *hooks);

/**
 * Starts an ASGI app: binds receive/send (`receive_def`, `send_def`) to
 * `owner`, calls app(scope, receive, send), and runs the result in a Task
 * (*task, a new reference) through a Runner with `hooks`. The call and the
 * Task run in a fresh copy of `context` (the server's), whatever context is
 * current: a request started from another request's task (pipelining) sees
 * none of its context variables. When the call itself raises,
 * hooks->on_finish gets that exception at once and *task stays NULL.
 * `eager` (Python 3.12+, no task factory set, loop running): the Task runs
 * the app's first step before this returns, as asyncio's eager tasks do; an
 * app that finishes in it leaves *task NULL too.
 * Returns 0, or -1 with an exception set when no task could be made.
 */
int cg_app_start(cg_state *st, PyObject *loop, PyObject *context, PyObject *app, PyObject *scope,
                 PyObject *owner, PyMethodDef *receive_def, PyMethodDef *send_def,
                 const cg_runner_hooks *hooks, int eager, PyObject **task);

/** Calls loop.create_future(). */
PyObject *cg_future_new(cg_state *st, PyObject *loop);
/** A future of the running loop: asyncio.Future() with no arguments, which is
 * cheaper than create_future() (no keyword parsing). Only from code the
 * running loop called (the app's receive() and send()). */
PyObject *cg_future_new_running(cg_state *st);
/** Completes fut with None unless it is already done. Never raises. */
void cg_future_wake(cg_state *st, PyObject *fut);
/** The calls waiting for one event (a message to receive, the end of write
 * backpressure). Each waiting call awaits its own future: a Task cancelled
 * while it waits cancels the future it awaits, and that must leave the other
 * calls waiting and the next call free to wait again. One waiting call, by
 * far the most common case, costs no list. */
typedef struct cg_waiters {
    PyObject *first; /* the future of a waiting call, or NULL (then rest is NULL too) */
    PyObject *rest;  /* list of the futures of further concurrent calls, or NULL */
} cg_waiters;

/** A future for one more call that must wait (a new reference), or NULL
 * with an exception set. Futures of calls that were cancelled meanwhile
 * are dropped, so repeated cancellations keep the set small. */
PyObject *cg_waiters_add(cg_state *st, cg_waiters *w);
/** Completes the futures of every waiting call and empties the set; each
 * call then polls again. Never raises. */
void cg_waiters_wake(cg_state *st, cg_waiters *w);
static inline int cg_waiters_traverse(cg_waiters *w, visitproc visit, void *arg)
{
    Py_VISIT(w->first);
    Py_VISIT(w->rest);
    return 0;
}
static inline void cg_waiters_clear(cg_waiters *w)
{
    Py_CLEAR(w->first);
    Py_CLEAR(w->rest);
}

#endif
