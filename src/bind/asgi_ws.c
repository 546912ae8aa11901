/* ASGI WebSocket sessions over the C codec (core/ws.c).
 *
 * After an upgrade request the stream belongs to a cg_ws: the app gets
 * websocket.connect, then accepts (101), closes (403) or answers with a
 * denial response (websocket.http.response.*, served by an HTTP cycle).
 * Frames are read in C: pings are answered at once, messages are queued for
 * receive() (reading pauses past --ws-max-queue messages or --ws-max-size
 * bytes waiting), close handshakes are completed within a bound. */
#include "asgi.h"

#include <assert.h>
#include <string.h>

#include "clock.h"
#include "meter.h"
#include "ws.h"

/* How long a closing handshake may wait for the peer's close frame. */
#define CG_WS_CLOSE_TIMEOUT 5.0

enum cg_ws_state {
    CG_WS_CONNECTING, /* waiting for the app to accept or deny */
    CG_WS_OPEN,
    CG_WS_CLOSING, /* our close frame is sent, waiting for the peer's */
    CG_WS_CLOSED,
    CG_WS_DENYING, /* answering with an HTTP response instead */
};

struct cg_ws {
    PyObject_HEAD cg_server *server; /* strong */
    cg_stream *stream;               /* until the stream is gone (a reference to its owner
                                      * is held) */
    cg_cycle *http;                  /* request data for logs; serves a denial response */
    PyObject *task;                  /* the app's task until it finishes */
    PyObject *queue;                 /* list of websocket.receive messages for the app */
    cg_buf queue_sizes;              /* their payload sizes in bytes (size_t), oldest first */
    size_t queue_bytes;
    cg_waiters recv_waiters; /* woken when a message or the close arrives */
    PyObject *subprotocols;
    cg_ws_reader *reader;
    cg_ws_deflater *deflater;
    cg_ws_deflate_params deflate;
    char extensions[160]; /* negotiated Sec-WebSocket-Extensions value, or "" */
    char accept[29];
    int state;
    int close_code; /* for websocket.disconnect */
    PyObject *close_reason;
    double next_ping;
    double pong_deadline;  /* 0 = no ping outstanding */
    double close_deadline; /* CLOSING: when to give up on the peer */
    cg_buf out;            /* frame being built */
    unsigned connect_sent : 1;
    unsigned over_h2 : 1; /* an extended CONNECT (RFC 8441): accepted with 200, no key */
};

/* Releases the stream (and the reference to its owner). */
static void ws_detach(cg_ws *ws)
{
    cg_stream *s = ws->stream;
    if (!s)
        return;
    ws->stream = NULL;
    Py_DECREF(s->owner);
}

static cg_state *ws_state(cg_ws *ws)
{
    return ws->server->st;
}

static void ws_wake(cg_ws *ws)
{
    cg_waiters_wake(ws_state(ws), &ws->recv_waiters);
}

/* "host:port - "WebSocket /path?query" <what>" on the error logger, as uvicorn does. */
static void ws_log(cg_ws *ws, const char *what)
{
    cg_state *st = ws_state(ws);
    if (st->log.error_level > CG_INFO)
        return;
    size_t client_len;
    const char *client = cg_cycle_client_text(ws->http, &client_len);
    PyObject *q = ws->http->query;
    if (PyBytes_GET_SIZE(q))
        cg_log(&st->log, CG_INFO, "%s - \"WebSocket %s?%s\" %s", client,
               PyBytes_AS_STRING(ws->http->raw_path), PyBytes_AS_STRING(q), what);
    else
        cg_log(&st->log, CG_INFO, "%s - \"WebSocket %s\" %s", client,
               PyBytes_AS_STRING(ws->http->raw_path), what);
}

int cg_ws_queue_full(cg_ws *ws)
{
    const cg_config *cfg = ws->server->cfg;
    return PyList_GET_SIZE(ws->queue) >= cfg->ws_max_queue ||
           ws->queue_bytes >= (size_t)cfg->ws_max_size;
}

/* Writes one frame built by `build` into ws->out. */
static int ws_write_out(cg_ws *ws)
{
    int rc = 0;
    if (ws->stream && ws->out.len)
        rc = ws->stream->ops->send(ws->stream, NULL, ws->out.data, ws->out.len, NULL, 1);
    cg_buf_reset(&ws->out);
    return rc;
}

/* The session is over: record how, release the connection. */
static void ws_closed(cg_ws *ws, int code, const char *reason, size_t reason_len)
{
    if (ws->state == CG_WS_OPEN || ws->state == CG_WS_CLOSING)
        cg_meter_ws(ws->server, -1); /* an accepted session ended */
    if (ws->state != CG_WS_CLOSED) {
        ws->state = CG_WS_CLOSED;
        ws->close_code = code;
        Py_XSETREF(ws->close_reason,
                   PyUnicode_DecodeUTF8(reason, (Py_ssize_t)reason_len, "replace"));
        if (!ws->close_reason)
            PyErr_Clear();
    }
    if (ws->stream)
        ws->stream->ops->close(ws->stream);
    ws_wake(ws);
}

/* 1 when `code` may appear in a close frame (RFC 6455 section 7.4). */
static int sendable_close_code(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* Sends our close frame and waits (bounded) for the peer's. A code that must
 * not be sent (1005, 1006, 1015, out of range) becomes an empty payload. */
static int ws_send_close(cg_ws *ws, int code, const char *reason, size_t reason_len)
{
    if (ws->state != CG_WS_OPEN)
        return 0;
    if (!sendable_close_code(code)) {
        code = 0;
        reason_len = 0;
    }
    if (cg_ws_close_frame(&ws->out, code, reason, reason_len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    ws->state = CG_WS_CLOSING;
    ws->close_code = code;
    ws->close_deadline = cg_monotonic_now() + CG_WS_CLOSE_TIMEOUT;
    return ws_write_out(ws);
}

/* A protocol failure: tell the peer why and end the session. */
static void ws_fail(cg_ws *ws, int code, const char *why)
{
    cg_log(&ws_state(ws)->log, CG_DEBUG, "WebSocket closed with %d: %s", code, why);
    if (ws->state == CG_WS_OPEN && cg_ws_close_frame(&ws->out, code, NULL, 0) == 0 &&
        ws_write_out(ws) < 0)
        PyErr_Clear();
    ws_closed(ws, code, "", 0);
}

/* Queues a received message. Its size is counted in payload bytes as
 * received (UTF-8 for text), and the same number leaves with it. */
static int ws_queue_message(cg_ws *ws, int text, cg_slice data)
{
    cg_state *st = ws_state(ws);
    PyObject *msg = PyDict_New(), *payload;
    if (!msg)
        return -1;
    payload = text ? PyUnicode_DecodeUTF8(data.base, (Py_ssize_t)data.len, "strict")
                   : PyBytes_FromStringAndSize(data.base, (Py_ssize_t)data.len);
    if (!payload || PyDict_SetItem(msg, st->s_type, st->s_websocket_receive) < 0 ||
        PyDict_SetItem(msg, text ? st->s_text : st->s_bytes, payload) < 0 ||
        cg_buf_append(&ws->queue_sizes, &data.len, sizeof(data.len)) < 0) {
        Py_XDECREF(payload);
        Py_DECREF(msg);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    Py_DECREF(payload);
    if (PyList_Append(ws->queue, msg) < 0) {
        ws->queue_sizes.len -= sizeof(data.len);
        Py_DECREF(msg);
        return -1;
    }
    Py_DECREF(msg);
    assert(cg_buf_unread(&ws->queue_sizes) == sizeof(size_t) * (size_t)PyList_GET_SIZE(ws->queue));
    ws->queue_bytes += data.len;
    ws_wake(ws);
    return 0;
}

/* The size counted for the oldest queued message, which is leaving. */
static size_t ws_queue_pop_size(cg_ws *ws)
{
    size_t n;
    assert(cg_buf_unread(&ws->queue_sizes) >= sizeof(n));
    memcpy(&n, ws->queue_sizes.data + ws->queue_sizes.pos, sizeof(n));
    cg_buf_consume(&ws->queue_sizes, sizeof(n));
    assert(ws->queue_bytes >= n);
    return n;
}

void cg_ws_feed(cg_ws *ws, cg_buf *in)
{
    cg_stream *s = ws->stream;
    if (!s)
        return;
    if (ws->state == CG_WS_CONNECTING || ws->state == CG_WS_DENYING) {
        /* Frames sent before the handshake is answered wait, boundedly. */
        if (cg_buf_unread(in) >= (size_t)ws->server->cfg->ws_max_size)
            s->ops->pause(s);
        return;
    }
    Py_INCREF(ws);
    while (ws->stream && (ws->state == CG_WS_OPEN || ws->state == CG_WS_CLOSING)) {
        size_t avail = cg_buf_unread(in), used = 0;
        cg_ws_event ev;
        if (avail == 0)
            break;
        if (cg_ws_queue_full(ws) || s->ops->write_blocked(s)) {
            /* The app, or the peer reading our pongs and echoes, is behind:
             * stop reading so memory stays bounded. */
            s->ops->pause(s);
            break;
        }
        cg_ws_read(ws->reader, in->data + in->pos, avail, &used, &ev);
        cg_buf_consume(in, used);
        switch (ev.type) {
        case CG_WS_EV_NONE:
            goto out;
        case CG_WS_EV_TEXT:
        case CG_WS_EV_BINARY:
            if (ws->state == CG_WS_OPEN &&
                ws_queue_message(ws, ev.type == CG_WS_EV_TEXT, ev.data) < 0) {
                PyErr_Clear();
                ws_fail(ws, CG_WS_CLOSE_INTERNAL_ERROR, "cannot queue a message");
            }
            break;
        case CG_WS_EV_PING:
            if (ws->state == CG_WS_OPEN && (cg_ws_write_message(&ws->out, NULL, CG_WS_OP_PONG,
                                                                ev.data.base, ev.data.len) < 0 ||
                                            ws_write_out(ws) < 0))
                PyErr_Clear();
            break;
        case CG_WS_EV_PONG:
            ws->pong_deadline = 0;
            break;
        case CG_WS_EV_CLOSE:
            if (ws->state == CG_WS_OPEN) {
                /* Echo the close, then the server ends the TCP connection. */
                int code = ev.code == CG_WS_CLOSE_NO_STATUS ? 0 : ev.code;
                if (cg_ws_close_frame(&ws->out, code, NULL, 0) < 0 || ws_write_out(ws) < 0)
                    PyErr_Clear();
            }
            ws_closed(ws, ev.code, ev.data.base, ev.data.len);
            goto out;
        case CG_WS_EV_ERROR:
            ws_fail(ws, ev.code, ev.error ? ev.error : "protocol error");
            goto out;
        }
    }
out:
    Py_DECREF(ws);
}

/* ---- receive ------------------------------------------------------------ */

static PyObject *ws_message(cg_state *st, PyObject *type)
{
    PyObject *d = PyDict_New();
    if (d && PyDict_SetItem(d, st->s_type, type) < 0)
        Py_CLEAR(d);
    return d;
}

static PyObject *poll_ws_receive(PyObject *owner, PyObject **fut)
{
    cg_ws *ws = (cg_ws *)owner;
    cg_state *st = ws_state(ws);

    if (!ws->connect_sent) {
        ws->connect_sent = 1;
        return ws_message(st, st->s_websocket_connect);
    }
    if (PyList_GET_SIZE(ws->queue) > 0) {
        PyObject *msg = Py_NewRef(PyList_GET_ITEM(ws->queue, 0));
        ws->queue_bytes -= ws_queue_pop_size(ws);
        if (PySequence_DelItem(ws->queue, 0) < 0) {
            Py_DECREF(msg);
            return NULL;
        }
        if (ws->stream && !cg_ws_queue_full(ws))
            ws->stream->ops->consumed(ws->stream); /* frames that waited for room */
        return msg;
    }
    if (ws->state == CG_WS_CLOSED) {
        PyObject *msg = ws_message(st, st->s_websocket_disconnect);
        PyObject *code = PyLong_FromLong(ws->close_code);
        if (!msg || !code || PyDict_SetItem(msg, st->s_code, code) < 0 ||
            PyDict_SetItem(msg, st->s_reason, ws->close_reason ? ws->close_reason : st->empty_str) <
                0) {
            Py_XDECREF(code);
            Py_XDECREF(msg);
            return NULL;
        }
        Py_DECREF(code);
        return msg;
    }
    *fut = cg_waiters_add(st, &ws->recv_waiters);
    return NULL;
}

static PyObject *ws_receive(PyObject *self, PyObject *unused)
{
    (void)unused;
    return cg_await_new(ws_state((cg_ws *)self), self, poll_ws_receive);
}

/* ---- send --------------------------------------------------------------- */

/* websocket.accept: the 101 response, then frames flow. */
static int ws_accept(cg_ws *ws, PyObject *message)
{
    cg_state *st = ws_state(ws);
    cg_server *srv = ws->server;
    PyObject *sub, *headers;
    cg_fields fields;
    cg_resp_head head = {101, &fields, CG_HEAD_SERVER | CG_HEAD_DATE, -1, 0, 0, 0, 1, 0};
    int rc = -1;

    sub = PyDict_GetItemWithError(message, st->s_subprotocol);
    if (!sub && PyErr_Occurred())
        return -1;
    headers = PyDict_GetItemWithError(message, st->s_headers);
    if (!headers && PyErr_Occurred())
        return -1;
    cg_fields_init(&fields);
    if (ws->over_h2) {
        /* RFC 8441 section 5: a 2xx accepts; the stream carries the frames. */
        head.status = 200;
        head.upgrade = 0;
    } else if (cg_fields_add(&fields, "upgrade", 7, "websocket", 9) < 0 ||
               cg_fields_add(&fields, "connection", 10, "Upgrade", 7) < 0 ||
               cg_fields_add(&fields, "sec-websocket-accept", 20, ws->accept, 28) < 0) {
        goto nomem;
    }
    if (sub && sub != Py_None) {
        Py_ssize_t n;
        const char *p = PyUnicode_Check(sub) ? PyUnicode_AsUTF8AndSize(sub, &n) : NULL;
        if (!p || !cg_http1_valid_field("x", 1, p, (size_t)n)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_RuntimeError, "invalid subprotocol %R", sub);
            goto done;
        }
        if (cg_fields_add(&fields, "sec-websocket-protocol", 22, p, (size_t)n) < 0)
            goto nomem;
    }
    if (ws->extensions[0] && cg_fields_add(&fields, "sec-websocket-extensions", 24, ws->extensions,
                                           strlen(ws->extensions)) < 0)
        goto nomem;
    if (headers && headers != Py_None) {
        PyObject *it = PyObject_GetIter(headers), *item;
        if (!it)
            goto done;
        while ((item = PyIter_Next(it))) {
            PyObject *pair = PySequence_Fast(item, "each header must be a [name, value] pair");
            Py_DECREF(item);
            int ok = pair && PySequence_Fast_GET_SIZE(pair) == 2 &&
                     PyBytes_Check(PySequence_Fast_GET_ITEM(pair, 0)) &&
                     PyBytes_Check(PySequence_Fast_GET_ITEM(pair, 1));
            if (ok) {
                PyObject *n = PySequence_Fast_GET_ITEM(pair, 0),
                         *v = PySequence_Fast_GET_ITEM(pair, 1);
                ok = cg_http1_valid_field(PyBytes_AS_STRING(n), (size_t)PyBytes_GET_SIZE(n),
                                          PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v)) &&
                     cg_fields_add(&fields, PyBytes_AS_STRING(n), (size_t)PyBytes_GET_SIZE(n),
                                   PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v)) == 0;
            }
            if (!ok) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_RuntimeError,
                                    "websocket.accept headers must be valid (bytes, bytes) pairs");
                Py_XDECREF(pair);
                Py_DECREF(it);
                goto done;
            }
            Py_DECREF(pair);
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            goto done;
    }
    if (ws->stream && ws->stream->ops->send(ws->stream, &head, NULL, 0, NULL, 1) < 0)
        goto done;
    ws->state = CG_WS_OPEN;
    ws->next_ping = cg_monotonic_now() + srv->cfg->ws_ping_interval;
    ws_log(ws, "[accepted]");
    cg_cycle_meter(ws->http, ws->over_h2 ? 200 : 101);
    cg_meter_ws(ws->server, 1);
    if (ws->stream)
        ws->stream->ops->consumed(ws->stream); /* frames sent right after the handshake */
    rc = 0;
    goto done;
nomem:
    PyErr_NoMemory();
done:
    cg_fields_free(&fields);
    return rc;
}

static int ws_send_data(cg_ws *ws, PyObject *message)
{
    cg_state *st = ws_state(ws);
    PyObject *text = PyDict_GetItemWithError(message, st->s_text), *bytes = NULL;
    const char *data;
    Py_ssize_t len;
    int opcode;

    if (!text && PyErr_Occurred())
        return -1;
    if (text && text != Py_None) {
        if (!PyUnicode_Check(text)) {
            PyErr_SetString(PyExc_TypeError, "websocket.send 'text' must be str");
            return -1;
        }
        data = PyUnicode_AsUTF8AndSize(text, &len);
        if (!data)
            return -1;
        opcode = CG_WS_OP_TEXT;
    } else {
        bytes = PyDict_GetItemWithError(message, st->s_bytes);
        if ((!bytes && PyErr_Occurred()))
            return -1;
        if (!bytes || bytes == Py_None || !PyBytes_Check(bytes)) {
            PyErr_SetString(PyExc_TypeError,
                            "websocket.send needs 'text' (str) or 'bytes' (bytes)");
            return -1;
        }
        data = PyBytes_AS_STRING(bytes);
        len = PyBytes_GET_SIZE(bytes);
        opcode = CG_WS_OP_BINARY;
    }
    if (cg_ws_write_message(&ws->out, ws->deflater, opcode, data, (size_t)len) < 0) {
        cg_buf_reset(&ws->out);
        PyErr_NoMemory();
        return -1;
    }
    return ws_write_out(ws);
}

static int ws_send_close_message(cg_ws *ws, PyObject *message)
{
    cg_state *st = ws_state(ws);
    PyObject *code_obj = PyDict_GetItemWithError(message, st->s_code);
    PyObject *reason = PyDict_GetItemWithError(message, st->s_reason);
    long code = 1000;
    const char *r = "";
    Py_ssize_t rlen = 0;

    if (PyErr_Occurred())
        return -1;
    if (code_obj && code_obj != Py_None) {
        code = PyLong_AsLong(code_obj);
        if (code == -1 && PyErr_Occurred())
            return -1;
    }
    if (reason && reason != Py_None) {
        r = PyUnicode_Check(reason) ? PyUnicode_AsUTF8AndSize(reason, &rlen) : NULL;
        if (!r) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "websocket.close 'reason' must be str");
            return -1;
        }
    }
    if (ws->state == CG_WS_CONNECTING) {
        /* Closing before accept refuses the handshake. */
        ws_log(ws, "403");
        cg_cycle_meter(ws->http, 403);
        ws->state = CG_WS_CLOSED;
        ws->close_code = (int)code;
        if (ws->stream)
            ws->stream->ops->fail(ws->stream, 403);
        ws_wake(ws);
        return 0;
    }
    return ws_send_close(ws, (int)code, r, (size_t)rlen);
}

static PyObject *poll_ws_drain(PyObject *owner, PyObject **fut)
{
    cg_ws *ws = (cg_ws *)owner;
    if (!ws->stream || ws->state == CG_WS_CLOSED)
        return Py_NewRef(Py_None);
    return ws->stream->ops->poll_drain(ws->stream, fut);
}

static PyObject *ws_send(PyObject *self, PyObject *message)
{
    cg_ws *ws = (cg_ws *)self;
    cg_state *st = ws_state(ws);
    PyObject *type;
    int rc;

    if (!PyDict_Check(message)) {
        PyErr_Format(PyExc_TypeError, "send() expects a dict, not %.100s",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    type = PyDict_GetItemWithError(message, st->s_type);
    if (!type) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "ASGI message without 'type'");
        return NULL;
    }
    if (!ws->stream && ws->state == CG_WS_CLOSED && !cg_type_is(type, st->s_websocket_close)) {
        PyErr_SetString(st->ClientDisconnected, "the client has disconnected");
        return NULL;
    }
    if (cg_type_is(type, st->s_websocket_send)) { /* the common case first */
        if (ws->state == CG_WS_CONNECTING || ws->state == CG_WS_DENYING) {
            PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'websocket.accept' or "
                                                "'websocket.close' before 'websocket.send'.");
            return NULL;
        }
        if (ws->state != CG_WS_OPEN || !ws->stream) {
            PyErr_SetString(st->ClientDisconnected, "the WebSocket is closed");
            return NULL;
        }
        rc = ws_send_data(ws, message);
    } else if (cg_type_is(type, st->s_websocket_accept)) {
        if (ws->state != CG_WS_CONNECTING) {
            PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'websocket.accept': "
                                                "the handshake is already over.");
            return NULL;
        }
        rc = ws_accept(ws, message);
    } else if (cg_type_is(type, st->s_websocket_close)) {
        if (ws->state == CG_WS_DENYING) {
            PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'websocket.close' "
                                                "during a denial response.");
            return NULL;
        }
        rc = ws_send_close_message(ws, message);
    } else if (cg_type_is(type, st->s_websocket_http_response_start) ||
               cg_type_is(type, st->s_websocket_http_response_body)) {
        if (ws->state != CG_WS_CONNECTING && ws->state != CG_WS_DENYING) {
            PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message %R: the handshake is over.",
                         type);
            return NULL;
        }
        ws->state = CG_WS_DENYING;
        rc = cg_cycle_http_send(ws->http, cg_type_is(type, st->s_websocket_http_response_start),
                                message);
        if (rc == 0 && ws->http->resp == CG_RESP_COMPLETE)
            ws->state = CG_WS_CLOSED;
    } else {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message %R sent, for websocket.", type);
        return NULL;
    }
    if (rc < 0)
        return NULL;
    if (ws->stream && ws->stream->ops->write_blocked(ws->stream))
        return cg_await_new(st, self, poll_ws_drain);
    return Py_NewRef(st->done);
}

/* ---- the app's task ----------------------------------------------------- */

static void ws_finish(PyObject *owner, PyObject *exc)
{
    cg_ws *ws = (cg_ws *)owner;
    cg_state *st = ws_state(ws);
    cg_server *srv = ws->server;

    if (exc && PyObject_IsInstance(exc, PyExc_Exception) == 1 &&
        !PyObject_IsInstance(exc, st->CancelledError)) {
        PyObject *tb = PyException_GetTraceback(exc);
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
        cg_log_exception(&st->log, "Exception in ASGI application\n");
        if (ws->state == CG_WS_CONNECTING) {
            ws_log(ws, "500");
            cg_cycle_meter(ws->http, 500);
            ws->state = CG_WS_CLOSED;
            if (ws->stream)
                ws->stream->ops->fail(ws->stream, 500);
        } else if (ws->state == CG_WS_OPEN) {
            if (ws_send_close(ws, CG_WS_CLOSE_INTERNAL_ERROR, NULL, 0) < 0)
                PyErr_Clear();
        } else if (ws->state == CG_WS_DENYING && ws->stream) {
            ws->stream->ops->close(ws->stream);
        }
    } else if (ws->state == CG_WS_CONNECTING) {
        cg_log(&st->log, CG_ERROR, "ASGI callable returned without sending handshake.");
        ws_log(ws, "500");
        cg_cycle_meter(ws->http, 500);
        ws->state = CG_WS_CLOSED;
        if (ws->stream)
            ws->stream->ops->fail(ws->stream, 500);
    } else if (ws->state == CG_WS_OPEN) {
        if (ws_send_close(ws, CG_WS_CLOSE_NORMAL, NULL, 0) < 0)
            PyErr_Clear();
    } else if (ws->state == CG_WS_DENYING && ws->stream) {
        ws->stream->ops->close(ws->stream); /* an unfinished denial response */
    }
    PyErr_Clear();
    cg_server_task_done(srv, &ws->task);
}

static const cg_runner_hooks ws_hooks = {NULL, NULL, ws_finish};
static PyMethodDef ws_receive_def = {"receive", (PyCFunction)ws_receive, METH_NOARGS, NULL};
static PyMethodDef ws_send_def = {"send", (PyCFunction)ws_send, METH_O, NULL};

/* ---- handshake ---------------------------------------------------------- */

static const cg_http1_header *find_header(const cg_http1_request *req, int token)
{
    for (size_t i = 0; i < req->num_headers; i++)
        if (req->headers[i].token == token)
            return &req->headers[i];
    return NULL;
}

/* The field with `token` when it appears exactly once, else NULL. */
static const cg_http1_header *find_single_header(const cg_http1_request *req, int token)
{
    const cg_http1_header *h = find_header(req, token);
    for (const cg_http1_header *o = h ? h + 1 : NULL; o && o < req->headers + req->num_headers; o++)
        if (o->token == token)
            return NULL;
    return h;
}

int cg_ws_is_upgrade(cg_server *srv, const cg_http1_request *req)
{
    const cg_http1_header *up;
    if (srv->cfg->ws == CG_WS_NONE || !req->upgrade || req->method.len != 3 ||
        memcmp(req->method.base, "GET", 3) != 0)
        return 0;
    up = find_header(req, CG_HDR_UPGRADE);
    return up && cg_http1_has_token(up->value.base, up->value.len, "websocket");
}

/* Subprotocols the client offers, in order. */
static PyObject *offered_subprotocols(const cg_http1_request *req)
{
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list && i < req->num_headers; i++) {
        const cg_http1_header *h = &req->headers[i];
        if (h->token != CG_HDR_SEC_WEBSOCKET_PROTOCOL)
            continue;
        const char *p = h->value.base, *end = p + h->value.len;
        while (p < end) {
            const char *q = memchr(p, ',', (size_t)(end - p));
            const char *a = p, *b = q ? q : end;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            if (b > a) {
                PyObject *s = PyUnicode_DecodeLatin1(a, b - a, NULL);
                if (!s || PyList_Append(list, s) < 0) {
                    Py_XDECREF(s);
                    Py_CLEAR(list);
                    break;
                }
                Py_DECREF(s);
            }
            p = q ? q + 1 : end;
        }
    }
    return list;
}

int cg_ws_start(cg_server *srv, cg_stream *s, const cg_http1_request *req, cg_ws **out)
{
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;
    const cg_http1_header *ver = find_header(req, CG_HDR_SEC_WEBSOCKET_VERSION);
    const cg_http1_header *key = find_single_header(req, CG_HDR_SEC_WEBSOCKET_KEY);
    PyObject *scope = NULL, *ext = NULL, *task = NULL;
    cg_ws *ws;

    if (!ver || ver->value.len != 2 || memcmp(ver->value.base, "13", 2) != 0) {
        cg_log(&st->log, CG_WARNING, "Invalid WebSocket handshake: unsupported version");
        return 426;
    }
    int over_h2 = req->version == CG_HTTP_2; /* no key, no accept: RFC 8441 */
    if (!over_h2 && (!key || !cg_ws_valid_key(key->value.base, key->value.len))) {
        cg_log(&st->log, CG_WARNING, "Invalid WebSocket handshake: bad Sec-WebSocket-Key");
        return 400;
    }

    ws = PyObject_GC_New(cg_ws, st->WebSocketType);
    if (!ws)
        return -1;
    memset((char *)ws + sizeof(PyObject), 0, sizeof(*ws) - sizeof(PyObject));
    ws->server = (cg_server *)Py_NewRef(srv);
    ws->stream = s;
    Py_INCREF(s->owner);
    cg_buf_init(&ws->out);
    cg_buf_init(&ws->queue_sizes);
    PyObject_GC_Track(ws);
    ws->state = CG_WS_CONNECTING;
    ws->close_code = CG_WS_CLOSE_ABNORMAL;
    ws->over_h2 = over_h2;
    if (!over_h2)
        cg_ws_accept(key->value.base, key->value.len, ws->accept);

    if (cfg->ws_per_message_deflate) {
        /* Every offer header, joined, is negotiated at once. */
        cg_buf offer;
        cg_buf_init(&offer);
        for (size_t i = 0; i < req->num_headers; i++) {
            const cg_http1_header *h = &req->headers[i];
            if (h->token != CG_HDR_SEC_WEBSOCKET_EXTENSIONS)
                continue;
            if ((offer.len && cg_buf_append(&offer, ", ", 2) < 0) ||
                cg_buf_append(&offer, h->value.base, h->value.len) < 0)
                break;
        }
        if (offer.len && cg_ws_negotiate_deflate(offer.data, offer.len, &ws->deflate,
                                                 ws->extensions, sizeof(ws->extensions)) <= 0) {
            ws->deflate.enabled = 0;
            ws->extensions[0] = 0;
        }
        cg_buf_free(&offer);
    }
    ws->reader = cg_ws_reader_new((size_t)cfg->ws_max_size, &ws->deflate);
    if (ws->deflate.enabled)
        ws->deflater = cg_ws_deflater_new(&ws->deflate);
    ws->queue = PyList_New(0);
    ws->subprotocols = offered_subprotocols(req);
    ws->http = cg_cycle_new(srv, s, req);
    if (!ws->reader || (ws->deflate.enabled && !ws->deflater) || !ws->queue || !ws->subprotocols ||
        !ws->http)
        goto fail;
    ws->http->websocket = 1;

    scope = cg_scope_new(ws->http, req, 1);
    ext = PyUnicode_InternFromString("websocket.http.response");
    if (!scope || !ext || PyDict_SetItem(scope, st->s_subprotocols, ws->subprotocols) < 0 ||
        cg_scope_add_extension(scope, st, ext, NULL) < 0)
        goto fail;

    if (cg_app_start(st, srv->loop, srv->context, srv->app, scope, (PyObject *)ws, &ws_receive_def,
                     &ws_send_def, &ws_hooks, 0, &task) < 0 ||
        (task && cg_server_add_task(srv, task) < 0))
        goto fail;
    ws->task = task; /* NULL when the app raised at once: already handled */
    task = NULL;
    Py_XDECREF(ext);
    Py_XDECREF(scope);
    *out = ws;
    return 0;
fail:
    Py_XDECREF(task);
    Py_XDECREF(ext);
    Py_XDECREF(scope);
    ws->state = CG_WS_CLOSED;
    Py_DECREF(ws);
    return -1;
}

/* ---- stream events ------------------------------------------------------ */

void cg_ws_stream_lost(cg_ws *ws)
{
    cg_stream *s = ws->stream;
    if (!s)
        return;
    Py_INCREF(ws);
    if (ws->state == CG_WS_CLOSING)
        ws_closed(ws, ws->close_code, "", 0); /* our close stands */
    else if (ws->state != CG_WS_CLOSED)
        ws_closed(ws, CG_WS_CLOSE_ABNORMAL, "", 0);
    if (ws->http && ws->http->stream == s) {
        cg_cycle_disconnect(ws->http);
        cg_cycle_detach(ws->http);
    }
    ws_detach(ws);
    ws_wake(ws);
    Py_DECREF(ws);
}

void cg_ws_tick(cg_ws *ws, double now)
{
    const cg_config *cfg = ws->server->cfg;
    if (ws->state == CG_WS_CLOSING && now >= ws->close_deadline) {
        ws_closed(ws, ws->close_code, "", 0); /* the peer never answered */
        return;
    }
    if (ws->state != CG_WS_OPEN)
        return;
    if (ws->pong_deadline > 0 && cfg->ws_ping_timeout > 0 && now >= ws->pong_deadline) {
        ws_fail(ws, CG_WS_CLOSE_INTERNAL_ERROR, "keepalive ping timeout");
        return;
    }
    if (cfg->ws_ping_interval > 0 && ws->pong_deadline == 0 && now >= ws->next_ping) {
        if (cg_ws_write_message(&ws->out, NULL, CG_WS_OP_PING, "casgi", 5) < 0 ||
            ws_write_out(ws) < 0)
            PyErr_Clear();
        ws->next_ping = now + cfg->ws_ping_interval;
        ws->pong_deadline = cfg->ws_ping_timeout > 0 ? now + cfg->ws_ping_timeout : 0;
    }
}

cg_cycle *cg_ws_cycle(cg_ws *ws)
{
    return ws->http;
}

void cg_ws_shutdown(cg_ws *ws)
{
    if (ws->state == CG_WS_OPEN && ws_send_close(ws, CG_WS_CLOSE_SERVICE_RESTART, NULL, 0) < 0)
        PyErr_Clear();
}

/* ---- type --------------------------------------------------------------- */

static int ws_traverse(cg_ws *ws, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(ws));
    Py_VISIT(ws->server);
    if (ws->stream)
        Py_VISIT(ws->stream->owner);
    Py_VISIT(ws->http);
    Py_VISIT(ws->task);
    Py_VISIT(ws->queue);
    Py_VISIT(ws->subprotocols);
    Py_VISIT(ws->close_reason);
    return cg_waiters_traverse(&ws->recv_waiters, visit, arg);
}

static int ws_clear(cg_ws *ws)
{
    ws_detach(ws);
    Py_CLEAR(ws->http);
    Py_CLEAR(ws->task);
    Py_CLEAR(ws->queue);
    cg_waiters_clear(&ws->recv_waiters);
    Py_CLEAR(ws->subprotocols);
    Py_CLEAR(ws->close_reason);
    return 0;
}

static void ws_dealloc(cg_ws *ws)
{
    PyTypeObject *tp = Py_TYPE(ws);
    PyObject_GC_UnTrack(ws);
    ws_clear(ws);
    Py_CLEAR(ws->server);
    if (ws->reader)
        cg_ws_reader_free(ws->reader);
    if (ws->deflater)
        cg_ws_deflater_free(ws->deflater);
    cg_buf_free(&ws->out);
    cg_buf_free(&ws->queue_sizes);
    tp->tp_free(ws);
    Py_DECREF(tp);
}

static PyType_Slot ws_slots[] = {
    {Py_tp_traverse, ws_traverse},
    {Py_tp_clear, ws_clear},
    {Py_tp_dealloc, ws_dealloc},
    {0, NULL},
};

static PyType_Spec ws_spec = {
    .name = "casgi._casgi.WebSocket",
    .basicsize = sizeof(cg_ws),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = ws_slots,
};

int cg_ws_types_init(PyObject *module, cg_state *st)
{
    st->WebSocketType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ws_spec, NULL);
    return st->WebSocketType ? 0 : -1;
}
