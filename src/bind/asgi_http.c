/* ASGI HTTP: the scope of a request, and the receive()/send() pair bound to
 * one request cycle. Bytes go out through the request's stream (stream.h).
 *
 * The response head is validated when http.response.start arrives but held
 * until the first body message, so head and body usually leave in one write
 * and a single complete body gets a content-length instead of chunked
 * framing. The head is flushed as soon as the app's task suspends, or at
 * once when the start comes from another task, so a client never waits on a
 * held head. */
#include "asgi.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alog.h"
#include "ascii.h"
#include "clock.h"
#include "hdrtab.h"
#include "meter.h"
#include "http1.h"

static void hook_enter(PyObject *owner);
static void hook_leave(PyObject *owner);
static void hook_finish(PyObject *owner, PyObject *exc);
static PyMethodDef receive_def;
static PyMethodDef send_def;

static const cg_runner_hooks http_hooks = {hook_enter, hook_leave, hook_finish};

static cg_state *cycle_state(cg_cycle *cy)
{
    return (cg_state *)PyModule_GetState(PyType_GetModule(Py_TYPE(cy)));
}

/* ---- scope -------------------------------------------------------------- */

static PyObject *method_str(cg_state *st, cg_slice m)
{
    switch (m.len) {
    case 3:
        if (!memcmp(m.base, "GET", 3))
            return Py_NewRef(st->s_m_GET);
        if (!memcmp(m.base, "PUT", 3))
            return Py_NewRef(st->s_m_PUT);
        break;
    case 4:
        if (!memcmp(m.base, "POST", 4))
            return Py_NewRef(st->s_m_POST);
        if (!memcmp(m.base, "HEAD", 4))
            return Py_NewRef(st->s_m_HEAD);
        break;
    case 5:
        if (!memcmp(m.base, "PATCH", 5))
            return Py_NewRef(st->s_m_PATCH);
        break;
    case 6:
        if (!memcmp(m.base, "DELETE", 6))
            return Py_NewRef(st->s_m_DELETE);
        break;
    case 7:
        if (!memcmp(m.base, "OPTIONS", 7))
            return Py_NewRef(st->s_m_OPTIONS);
        break;
    }
    return PyUnicode_DecodeASCII(m.base, (Py_ssize_t)m.len, "strict");
}

/* scope["path"]: root_path + the percent-decoded path, UTF-8 with
 * replacement characters for invalid sequences. */
static PyObject *decoded_path(cg_server *srv, cg_slice raw)
{
    PyObject *path;
    if (memchr(raw.base, '%', raw.len)) {
        char stackbuf[1024];
        char *tmp = raw.len <= sizeof(stackbuf) ? stackbuf : PyMem_Malloc(raw.len);
        if (!tmp)
            return PyErr_NoMemory();
        size_t n = cg_http1_percent_decode(raw.base, raw.len, tmp);
        path = PyUnicode_DecodeUTF8(tmp, (Py_ssize_t)n, "replace");
        if (tmp != stackbuf)
            PyMem_Free(tmp);
    } else {
        path = PyUnicode_DecodeUTF8(raw.base, (Py_ssize_t)raw.len, "replace");
    }
    if (!path || PyUnicode_GET_LENGTH(srv->root_path) == 0)
        return path;
    PyObject *full = PyUnicode_Concat(srv->root_path, path);
    Py_DECREF(path);
    return full;
}

/* scope["http_version"] of enum cg_http_version `v`. */
static PyObject *http_version(cg_state *st, int v)
{
    return v == CG_HTTP_2 ? st->s_v2 : v == CG_HTTP_1_0 ? st->s_v1_0 : st->s_v1_1;
}

static PyObject *header_list(cg_state *st, const cg_http1_request *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->num_headers);
    if (!list)
        return NULL;
    for (size_t i = 0; i < req->num_headers; i++) {
        const cg_http1_header *h = &req->headers[i];
        PyObject *name, *value, *pair;
        if (h->token >= 0) {
            name = Py_NewRef(st->hdr_names[h->token]);
        } else {
            name = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h->name.len);
            if (name)
                cg_ascii_lower(PyBytes_AS_STRING(name), h->name.base, h->name.len);
        }
        value = PyBytes_FromStringAndSize(h->value.base, (Py_ssize_t)h->value.len);
        if (!name || !value) {
            Py_XDECREF(name);
            Py_XDECREF(value);
            Py_DECREF(list);
            return NULL;
        }
        pair = PyTuple_New(2);
        if (!pair) {
            Py_DECREF(name);
            Py_DECREF(value);
            Py_DECREF(list);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

/* The client a trusted proxy reported: *client becomes (host, port) and the
 * cycle keeps "host:port" for its log lines. Returns 0, or -1 with an
 * exception and nothing changed. */
static int set_forwarded_client(cg_cycle *cy, const cg_proxy_forwarded *fwd, PyObject **client)
{
    PyObject *host = PyUnicode_DecodeLatin1(fwd->host.base, (Py_ssize_t)fwd->host.len, NULL);
    PyObject *t = host ? Py_BuildValue("(OI)", host, fwd->port) : NULL;
    PyObject *text = host ? PyUnicode_FromFormat("%U:%u", host, fwd->port) : NULL;
    Py_XDECREF(host);
    if (!t || !text) {
        Py_XDECREF(t);
        Py_XDECREF(text);
        return -1;
    }
    Py_SETREF(*client, t);
    Py_XSETREF(cy->client_text, text);
    return 0;
}

const char *cg_cycle_client_text(cg_cycle *cy, size_t *len)
{
    if (cy->client_text) {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(cy->client_text, &n);
        if (u) {
            *len = (size_t)n;
            return u;
        }
        PyErr_Clear();
    }
    *len = cy->stream ? cy->stream->info.client_len : 0;
    return cy->stream ? cy->stream->info.client_text : "";
}

static int dict_set_steal(PyObject *d, PyObject *key, PyObject *value)
{
    if (!value)
        return -1;
    int rc = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return rc;
}

/* A dict holding every key of a scope, built once per server: copying it
 * clones its key table in one step, and each request then only replaces
 * values, instead of inserting keys into a growing dict. Every scope has
 * "extensions" (an http one pathsend's, at least). */
static PyObject *scope_template(cg_state *st, int websocket)
{
    PyObject *keys[] = {st->s_type,   st->s_asgi,         st->s_http_version, st->s_server,
                        st->s_client, st->s_scheme,       st->s_method,       st->s_root_path,
                        st->s_path,   st->s_raw_path,     st->s_query_string, st->s_headers,
                        st->s_state,  st->s_subprotocols, st->s_extensions};
    size_t n = sizeof(keys) / sizeof(keys[0]);
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < n; i++) {
        if (websocket ? keys[i] == st->s_method : keys[i] == st->s_subprotocols)
            continue;
        if (PyDict_SetItem(d, keys[i], Py_None) < 0)
            Py_CLEAR(d);
    }
    if (d && PyDict_SetItem(d, st->s_type, websocket ? st->s_websocket : st->s_http) < 0)
        Py_CLEAR(d);
    return d;
}

/* scope["extensions"] = {name: a copy of value, or {} when value is NULL},
 * replacing what the scope had there (nothing, or None). */
static int scope_new_extensions(PyObject *scope, cg_state *st, PyObject *name, PyObject *value)
{
    PyObject *ext = PyDict_New();
    if (!ext)
        return -1;
    if (dict_set_steal(ext, name, value ? PyDict_Copy(value) : PyDict_New()) < 0) {
        Py_DECREF(ext);
        return -1;
    }
    return dict_set_steal(scope, st->s_extensions, ext);
}

int cg_scope_add_extension(PyObject *scope, cg_state *st, PyObject *name, PyObject *value)
{
    PyObject *ext = PyDict_GetItemWithError(scope, st->s_extensions);
    if (!ext && PyErr_Occurred())
        return -1;
    if (!ext || ext == Py_None)
        return scope_new_extensions(scope, st, name, value);
    return dict_set_steal(ext, name, value ? PyDict_Copy(value) : PyDict_New());
}

PyObject *cg_scope_new(cg_cycle *cy, const cg_http1_request *req, int websocket)
{
    const cg_stream_info *info = &cy->stream->info;
    cg_server *srv = cy->server;
    cg_state *st = srv->st;
    PyObject **tpl = &srv->scope_templates[websocket ? 1 : 0];
    PyObject *scope, *raw;

    if (!*tpl && !(*tpl = scope_template(st, websocket)))
        return NULL;
    scope = PyDict_Copy(*tpl);
    if (!scope)
        return NULL;
    if (PyBytes_GET_SIZE(srv->root_path_b) > 0) {
        raw = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(srv->root_path_b) +
                                                  (Py_ssize_t)req->path.len);
        if (!raw)
            goto fail;
        memcpy(PyBytes_AS_STRING(raw), PyBytes_AS_STRING(srv->root_path_b),
               (size_t)PyBytes_GET_SIZE(srv->root_path_b));
        memcpy(PyBytes_AS_STRING(raw) + PyBytes_GET_SIZE(srv->root_path_b), req->path.base,
               req->path.len);
    } else {
        raw = Py_NewRef(cy->raw_path);
    }
    PyObject *client = Py_NewRef(info->client), *scheme = Py_NewRef(info->scheme);
    cg_proxy_forwarded fwd;
    /* Python objects only when a trusted proxy sent X-Forwarded-For/-Proto. */
    if (info->trusted_proxy &&
        cg_proxy_read_headers(&srv->trust, req->headers, req->num_headers, &fwd)) {
        if (fwd.scheme == CG_PROXY_SCHEME_HTTPS)
            Py_SETREF(scheme, Py_NewRef(st->s_https));
        if (fwd.has_client && set_forwarded_client(cy, &fwd, &client) < 0)
            PyErr_Clear(); /* out of memory: the peer address stays */
    }
    if (websocket)
        Py_SETREF(scheme, Py_NewRef(scheme == st->s_https ? st->s_wss : st->s_ws));
    int failed = PyDict_SetItem(scope, st->s_client, client) < 0 ||
                 PyDict_SetItem(scope, st->s_scheme, scheme) < 0 ||
                 (!websocket && PyDict_SetItem(scope, st->s_method, cy->method) < 0);
    Py_DECREF(client);
    Py_DECREF(scheme);
    if (failed) {
        Py_DECREF(raw);
        goto fail;
    }
    if (dict_set_steal(scope, st->s_asgi,
                       PyDict_Copy(websocket ? st->asgi_ws_dict : st->asgi_dict)) < 0 ||
        PyDict_SetItem(scope, st->s_http_version, http_version(st, req->version)) < 0 ||
        PyDict_SetItem(scope, st->s_server, info->server) < 0 ||
        PyDict_SetItem(scope, st->s_root_path, srv->root_path) < 0 ||
        dict_set_steal(scope, st->s_path, decoded_path(srv, req->path)) < 0 ||
        dict_set_steal(scope, st->s_raw_path, raw) < 0 ||
        PyDict_SetItem(scope, st->s_query_string, cy->query) < 0 ||
        dict_set_steal(scope, st->s_headers, header_list(st, req)) < 0 ||
        dict_set_steal(scope, st->s_state, PyDict_Copy(srv->state)) < 0)
        goto fail;
    /* A new scope has no extensions dict yet (the template's is None). */
    if (info->tls && scope_new_extensions(scope, st, st->s_tls, info->tls) < 0)
        goto fail;
    return scope;
fail:
    Py_DECREF(scope);
    return NULL;
}

/* ---- receive ------------------------------------------------------------ */

static PyObject *message2(cg_state *st, PyObject *type)
{
    PyObject *d = PyDict_New();
    if (d && PyDict_SetItem(d, st->s_type, type) < 0)
        Py_CLEAR(d);
    return d;
}

static void cycle_account(cg_cycle *cy, int status, int server_answered);
static void file_close(cg_cycle *cy);

/* A response that started but will not complete (the client left, or the
 * connection is closed because the app failed, was cancelled or stopped
 * mid-stream) is counted and logged all the same, once, with the status the
 * app gave: the connection's end always reaches cg_cycle_disconnect. */
static void cycle_log_unfinished(cg_cycle *cy)
{
    if (cy->stream && !cy->disconnected && !cy->accounted &&
        (cy->resp == CG_RESP_HELD || cy->resp == CG_RESP_STREAMING))
        cycle_account(cy, cy->status, 0);
}

/* See cg_cycle_server_leaving. */
static int cycle_hears_server_leaving(const cg_cycle *cy)
{
    return cy->server->should_exit && cy->event_stream && cy->body_final &&
           (cy->resp == CG_RESP_HELD || cy->resp == CG_RESP_STREAMING);
}

static void cycle_wake_receiver(cg_cycle *cy)
{
    if (cy->recv_waiters.first) /* cycle_state() costs two calls: only when needed */
        cg_waiters_wake(cycle_state(cy), &cy->recv_waiters);
}

static PyObject *poll_receive(PyObject *owner, PyObject **fut)
{
    cg_cycle *cy = (cg_cycle *)owner;
    cg_state *st = cycle_state(cy);
    cg_stream *s = cy->stream;

    if (cy->expect_continue) {
        /* The client waits for permission before sending the body. */
        cy->expect_continue = 0;
        if (s && cy->resp == CG_RESP_NONE && !cy->body_done && !cy->disconnected &&
            s->ops->send_informational(s, 100, NULL) < 0)
            return NULL;
    }
    if (cy->disconnected || cy->resp == CG_RESP_COMPLETE)
        return message2(st, st->s_http_disconnect);
    if (cg_buf_unread(&cy->body) > 0 || (cy->body_done && !cy->body_final)) {
        PyObject *msg = message2(st, st->s_http_request);
        PyObject *body;
        if (!msg)
            return NULL;
        if (cg_buf_unread(&cy->body) > 0)
            body = PyBytes_FromStringAndSize(cy->body.data + cy->body.pos,
                                             (Py_ssize_t)cg_buf_unread(&cy->body));
        else
            body = Py_NewRef(st->empty_bytes);
        if (dict_set_steal(msg, st->s_body, body) < 0 ||
            PyDict_SetItem(msg, st->s_more_body, cy->body_done ? Py_False : Py_True) < 0) {
            Py_DECREF(msg);
            return NULL;
        }
        cg_buf_reset(&cy->body);
        if (cy->body_done) {
            cy->body_final = 1;
            cg_buf_free(&cy->body);
        }
        if (s)
            s->ops->consumed(s);
        return msg;
    }
    if (cycle_hears_server_leaving(cy)) {
        cy->told_leaving = 1;
        return message2(st, st->s_http_disconnect);
    }
    *fut = cg_waiters_add(st, &cy->recv_waiters);
    return NULL;
}

static PyObject *cycle_receive(PyObject *self, PyObject *unused)
{
    (void)unused;
    return cg_await_new(cycle_state((cg_cycle *)self), self, poll_receive);
}

int cg_cycle_feed(cg_cycle *cy, const char *data, size_t len)
{
    if (cy->body_final || cy->disconnected || cy->resp == CG_RESP_COMPLETE)
        return 0; /* nobody will read it */
    if (cg_buf_append(&cy->body, data, len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    cycle_wake_receiver(cy);
    return 0;
}

void cg_cycle_body_done(cg_cycle *cy)
{
    cy->body_done = 1;
    cycle_wake_receiver(cy);
}

void cg_cycle_output_dropped(cg_cycle *cy, size_t n)
{
    cy->resp_unsent += (long long)n;
}

void cg_cycle_disconnect(cg_cycle *cy)
{
    file_close(cy);
    cycle_log_unfinished(cy);
    cy->disconnected = 1;
    cycle_wake_receiver(cy);
}

void cg_cycle_server_leaving(cg_cycle *cy)
{
    if (cycle_hears_server_leaving(cy))
        cycle_wake_receiver(cy);
}

/* ---- send --------------------------------------------------------------- */

/* Reads a bytes-like object into a slice; the view must be released. bytes,
 * by far the most common, are read directly (view->obj NULL: nothing to
 * release). */
static int get_bytes(PyObject *o, Py_buffer *view, const char *what)
{
    if (PyBytes_CheckExact(o)) {
        view->obj = NULL;
        view->buf = PyBytes_AS_STRING(o);
        view->len = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be bytes, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    return 0;
}

static int parse_length(const char *p, size_t n, long long *out)
{
    long long v = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* Called for each valid [name, value] pair of a headers list: `pair` is the
 * pair object (for messages). 0, or -1 with an exception. */
typedef int (*field_fn)(void *ctx, PyObject *pair, const char *name, size_t name_len,
                        const char *value, size_t value_len);

/* Reads an ASGI headers iterable (None: empty), validating each pair, and
 * calls fn for each. 0, or -1 with an exception. */
static int each_field(PyObject *headers, field_fn fn, void *ctx)
{
    PyObject *it, *item;
    if (!headers || headers == Py_None)
        return 0;
    /* A list or tuple as it is; any other iterable as a list. */
    it = PySequence_Fast(headers, "headers must be an iterable of [name, value] pairs");
    if (!it)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(it); i++) {
        item = Py_NewRef(PySequence_Fast_GET_ITEM(it, i));
        PyObject *pair = PySequence_Fast(item, "each header must be a [name, value] pair");
        Py_buffer name, value;
        Py_DECREF(item);
        if (!pair)
            goto fail;
        if (PySequence_Fast_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_RuntimeError, "each header must be a [name, value] pair");
            goto fail;
        }
        if (get_bytes(PySequence_Fast_GET_ITEM(pair, 0), &name, "header name") < 0) {
            Py_DECREF(pair);
            goto fail;
        }
        if (get_bytes(PySequence_Fast_GET_ITEM(pair, 1), &value, "header value") < 0) {
            PyBuffer_Release(&name);
            Py_DECREF(pair);
            goto fail;
        }
        int rc;
        if (!cg_http1_valid_field(name.buf, (size_t)name.len, value.buf, (size_t)value.len)) {
            PyErr_Format(PyExc_RuntimeError, "invalid HTTP header %R: %R",
                         PySequence_Fast_GET_ITEM(pair, 0), PySequence_Fast_GET_ITEM(pair, 1));
            rc = -1;
        } else {
            rc = fn(ctx, pair, name.buf, (size_t)name.len, value.buf, (size_t)value.len);
        }
        PyBuffer_Release(&name);
        PyBuffer_Release(&value);
        Py_DECREF(pair);
        if (rc < 0)
            goto fail;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
fail:
    Py_DECREF(it);
    return -1;
}

/* What the head's own fields tell, gathered by start_field. */
typedef struct start_ctx {
    cg_cycle *cy;
    int has_server, has_date, app_chunked;
} start_ctx;

static int start_field(void *ctx, PyObject *pair, const char *nm, size_t nl, const char *vl,
                       size_t vlen)
{
    start_ctx *sc = ctx;
    cg_cycle *cy = sc->cy;
    if (cg_ascii_ieq(nm, nl, "content-length")) {
        long long len;
        if (parse_length(vl, vlen, &len) < 0) {
            PyErr_Format(PyExc_RuntimeError, "invalid content-length %R",
                         PySequence_Fast_GET_ITEM(pair, 1));
            return -1;
        }
        if (cy->resp_length >= 0 && len != cy->resp_length) {
            PyErr_Format(PyExc_RuntimeError, "conflicting content-length values %lld and %lld",
                         cy->resp_length, len);
            return -1;
        }
        if (cy->resp_length >= 0)
            return 0; /* a repeated equal value is written once */
        cy->resp_length = len;
    } else if (cg_ascii_ieq(nm, nl, "transfer-encoding")) {
        /* The server frames the body: the app may only ask for chunked. */
        if (!cg_ascii_ieq(vl, vlen, "chunked")) {
            PyErr_Format(PyExc_RuntimeError,
                         "unsupported transfer-encoding %R: only chunked is supported",
                         PySequence_Fast_GET_ITEM(pair, 1));
            return -1;
        }
        sc->app_chunked = 1;
        return 0; /* written with the framing, see head_finish */
    } else if (cg_ascii_ieq(nm, nl, "connection")) {
        if (cg_http1_has_token(vl, vlen, "close"))
            cy->head.close = 1;
        return 0; /* the server owns this header: written with the framing */
    } else if (cg_ascii_ieq(nm, nl, "server")) {
        sc->has_server = 1;
    } else if (cg_ascii_ieq(nm, nl, "date")) {
        sc->has_date = 1;
    } else if (cg_ascii_ieq(nm, nl, "content-type")) {
        cy->event_stream = vlen >= 17 && cg_ascii_ieq(vl, 17, "text/event-stream") &&
                           (vlen == 17 || vl[17] == ';' || vl[17] == ' ');
    }
    if (cg_fields_add(&cy->fields, nm, nl, vl, vlen) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Adds the pair to the fields list ctx (trailers). */
static int list_field(void *ctx, PyObject *pair, const char *nm, size_t nl, const char *vl,
                      size_t vlen)
{
    (void)pair;
    if (cg_fields_add(ctx, nm, nl, vl, vlen) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Handles http.response.start: validates and builds the head (without the
 * framing lines, added when the body's shape is known). */
static int response_start(cg_cycle *cy, PyObject *message)
{
    cg_state *st = cycle_state(cy);
    PyObject *status_obj, *headers, *trailers;
    int status;

    status_obj = PyDict_GetItemWithError(message, st->s_status);
    if (!status_obj) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "http.response.start requires 'status'");
        return -1;
    }
    long code = PyLong_Check(status_obj) ? PyLong_AsLong(status_obj) : -1;
    if (code < 200 || code > 599) {
        /* A 1xx here would be taken by the client for this request's answer
         * and the real one for the next request's (h11 refuses it too). */
        if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_RuntimeError,
                         code >= 100 && code < 200
                             ? "invalid HTTP status %R: an informational (1xx) status cannot be "
                               "the final response"
                             : "invalid HTTP status %R",
                         status_obj);
        }
        return -1;
    }
    status = (int)code;
    if (cy->is_connect && status < 300) {
        PyErr_Format(PyExc_RuntimeError,
                     "a %d answer to CONNECT would open a tunnel, which this server does not "
                     "provide",
                     status);
        return -1;
    }
    cy->status = status;
    cy->resp_length = -1;
    cg_fields_reset(&cy->fields);
    memset(&cy->head, 0, sizeof(cy->head));

    headers = PyDict_GetItemWithError(message, st->s_headers);
    if (!headers && PyErr_Occurred())
        return -1;
    start_ctx sc = {cy, 0, 0, 0};
    if (each_field(headers, start_field, &sc) < 0)
        return -1;
    if (sc.app_chunked && cy->resp_length >= 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "both content-length and transfer-encoding in the response headers");
        return -1;
    }
    /* trailers: True announces http.response.trailers after the body; sent
     * only where the extension was offered (the client accepts trailers). */
    trailers = PyDict_GetItemWithError(message, st->s_trailers);
    if (!trailers && PyErr_Occurred())
        return -1;
    int want_trailers = trailers ? PyObject_IsTrue(trailers) : 0;
    if (want_trailers < 0)
        return -1;
    cy->head.status = status;
    cy->head.fields = &cy->fields;
    cy->head.defaults =
        (sc.has_server ? 0u : CG_HEAD_SERVER) | (sc.has_date ? 0u : CG_HEAD_DATE) | CG_HEAD_EXTRA;
    cy->head.length = cy->resp_length;
    cy->head.no_body = cy->is_head || status == 204 || status == 304;
    cy->head.chunked = sc.app_chunked;
    cy->head.trailers = want_trailers && cy->trailers_ok && !cy->head.no_body;
    /* The response headers an access line reads ({name}o). The log state is
     * the process's (as Python's logging is): an embedded server configured
     * since the request began may have replaced the program or removed it. */
    const cg_alog *prog = cycle_state(cy)->log.alog;
    if (cy->alog && prog) {
        cg_field f;
        size_t pos = 0;
        while (cg_fields_next(&cy->fields, &pos, &f))
            if (cg_alog_capture(prog, cy->alog, 1, f.name, f.name_len, f.value, f.value_len) < 0)
                return PyErr_NoMemory(), -1;
    }
    return 0;
}

/* http.response.trailers: the fields are gathered until more_trailers is
 * false, then sent, and the response is complete. */
static void response_complete(cg_cycle *cy, int reusable);

static int response_trailers(cg_cycle *cy, PyObject *message)
{
    cg_state *st = cycle_state(cy);
    PyObject *headers = PyDict_GetItemWithError(message, st->s_headers), *more_obj;
    if (!headers && PyErr_Occurred())
        return -1;
    more_obj = PyDict_GetItemWithError(message, st->s_more_trailers);
    if (!more_obj && PyErr_Occurred())
        return -1;
    int more = more_obj ? PyObject_IsTrue(more_obj) : 0;
    if (more < 0 || each_field(headers, list_field, &cy->fields) < 0)
        return -1;
    if (more)
        return 0;
    cy->trailers_due = 0;
    int rc = cy->stream ? cy->stream->ops->send_trailers(cy->stream, &cy->fields) : 0;
    cg_fields_free(&cy->fields);
    if (rc < 0)
        return -1;
    response_complete(cy, 1);
    return 0;
}

/* http.response.early_hint: a 103 with the links as link fields, while the
 * final head has not left. */
static int response_early_hint(cg_cycle *cy, PyObject *message)
{
    cg_state *st = cycle_state(cy);
    PyObject *links = PyDict_GetItemWithError(message, st->s_links), *it;
    if (!links) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "http.response.early_hint requires 'links'");
        return -1;
    }
    it = PySequence_Fast(links, "links must be an iterable of byte strings");
    if (!it)
        return -1;
    cg_fields fields;
    int rc = 0;
    cg_fields_init(&fields);
    for (Py_ssize_t i = 0; rc == 0 && i < PySequence_Fast_GET_SIZE(it); i++) {
        Py_buffer v;
        if (get_bytes(PySequence_Fast_GET_ITEM(it, i), &v, "link") < 0) {
            rc = -1;
            break;
        }
        if (!cg_http1_valid_field("link", 4, v.buf, (size_t)v.len)) {
            PyErr_Format(PyExc_RuntimeError, "invalid link %R", PySequence_Fast_GET_ITEM(it, i));
            rc = -1;
        } else if (cg_fields_add(&fields, "link", 4, v.buf, (size_t)v.len) < 0) {
            PyErr_NoMemory();
            rc = -1;
        }
        PyBuffer_Release(&v);
    }
    Py_DECREF(it);
    if (rc == 0 && cy->early_hints_ok && cy->stream && fields.n &&
        (cy->resp == CG_RESP_NONE || cy->resp == CG_RESP_HELD))
        rc = cy->stream->ops->send_informational(cy->stream, 103, &fields);
    cg_fields_free(&fields);
    return rc;
}

/* Writes the access line of cy: `status` as answered, the body bytes
 * that left (none for HEAD, 204 and 304; the reason phrase when the server
 * answered the error itself: server_answered 1). */
static void cycle_log_access(cg_cycle *cy, int status, int server_answered)
{
    cg_state *st = cycle_state(cy);
    Py_ssize_t mlen;
    const char *m;

    if (!st->log.access_enabled)
        return;
    m = PyUnicode_AsUTF8AndSize(cy->method, &mlen);
    if (!m) {
        PyErr_Clear();
        return;
    }
    cg_alog_entry e;
    e.client.base = cg_cycle_client_text(cy, &e.client.len);
    e.method = (cg_slice){m, (size_t)mlen};
    e.path = (cg_slice){PyBytes_AS_STRING(cy->raw_path), (size_t)PyBytes_GET_SIZE(cy->raw_path)};
    e.query = (cg_slice){PyBytes_AS_STRING(cy->query), (size_t)PyBytes_GET_SIZE(cy->query)};
    e.qmark = cy->qmark;
    e.version = cy->version;
    e.status = status;
    if (st->log.alog) {
        /* Only a format reads these: the default line costs none of it. */
        long long sent = cy->resp_sent - cy->resp_unsent;
        if (server_answered)
            sent = (long long)strlen(cg_http1_reason(status));
        else if (cy->head.no_body)
            sent = 0;
        e.bytes = sent > 0 ? (unsigned long long)sent : 0;
        e.duration =
            cy->alog && st->log.alog->needs_time ? cg_monotonic_now() - cy->alog->start : 0;
        e.now = st->log.alog->needs_date ? (long long)time(NULL) : 0;
        e.vals = cy->alog;
    }
    cg_log_access(&st->log, &e);
}

void cg_cycle_meter(cg_cycle *cy, int status)
{
    cg_meter_request(cy->server, cy->websocket ? CG_MP_WEBSOCKET : cy->version, status,
                     cy->websocket ? 0 : cy->t0);
}

/* The end of a request's answer, once: counted (metrics) and logged. */
static void cycle_account(cg_cycle *cy, int status, int server_answered)
{
    if (cy->accounted)
        return;
    cy->accounted = 1;
    cg_cycle_meter(cy, status);
    cycle_log_access(cy, status, server_answered);
}

static void response_complete(cg_cycle *cy, int reusable)
{
    cg_stream *s = cy->stream;

    cy->resp = CG_RESP_COMPLETE;
    cycle_wake_receiver(cy);
    if (!s)
        return;
    cycle_account(cy, cy->status, 0);
    s->ops->finish(s, reusable);
}

/* The app failed before anything reached the wire: answer 500 and close. */
static void cycle_fail_500(cg_cycle *cy, cg_stream *s)
{
    cy->resp = CG_RESP_COMPLETE;
    cycle_wake_receiver(cy);
    cycle_account(cy, 500, 1);
    s->ops->fail(s, 500);
}

/* Sends the held head now, framed for a body of unknown length. */
static int flush_held_head(cg_cycle *cy)
{
    cg_stream *s = cy->stream;
    if (cy->resp != CG_RESP_HELD || !s)
        return 0;
    cy->resp = CG_RESP_STREAMING;
    int rc = s->ops->send(s, &cy->head, NULL, 0, NULL, 1);
    cg_fields_free(&cy->fields);
    return rc;
}

static int response_body(cg_cycle *cy, PyObject *message)
{
    cg_state *st = cycle_state(cy);
    cg_stream *s = cy->stream;
    PyObject *body, *more_obj;
    Py_buffer view;
    int more, rc = 0;

    body = PyDict_GetItemWithError(message, st->s_body);
    if (!body && PyErr_Occurred())
        return -1;
    more_obj = PyDict_GetItemWithError(message, st->s_more_body);
    if (!more_obj && PyErr_Occurred())
        return -1;
    more = more_obj ? PyObject_IsTrue(more_obj) : 0;
    if (more < 0)
        return -1;
    if (!body || body == Py_None)
        body = st->empty_bytes;
    if (get_bytes(body, &view, "body") < 0)
        return -1;

    size_t len = (size_t)view.len;
    int length_error = 0;
    if (!cy->head.no_body && cy->resp_length >= 0) {
        if (cy->resp_sent + (long long)len > cy->resp_length) {
            cg_log(&st->log, CG_ERROR, "Response content longer than Content-Length");
            length_error = 1;
            len = (size_t)(cy->resp_length - cy->resp_sent);
        } else if (!more && cy->resp_sent + (long long)len < cy->resp_length) {
            cg_log(&st->log, CG_ERROR, "Response content shorter than Content-Length");
            length_error = 1;
        }
    }
    cy->resp_sent += (long long)len;
    const cg_resp_head *head = cy->resp == CG_RESP_HELD ? &cy->head : NULL;
    cy->resp = CG_RESP_STREAMING;
    if (s)
        rc = s->ops->send(s, head, view.buf, len, (size_t)view.len == len ? body : NULL,
                          more && !length_error);
    PyBuffer_Release(&view);
    if (head)
        cg_fields_free(&cy->fields);
    if (rc < 0)
        return -1;
    if (length_error) {
        /* The framing is broken: closing is the only way the client cannot hang.
         * A body shorter than promised ends with a reset: an error to the
         * client, as when the app fails mid-stream (see hook_finish). */
        if (s && cy->resp_sent < cy->resp_length)
            s->ops->abort(s);
        response_complete(cy, 0);
    } else if (!more && cy->head.trailers) {
        cy->trailers_due = 1; /* complete once the trailers are sent */
    } else if (!more) {
        response_complete(cy, 1);
    }
    return 0;
}

/* ---- files: http.response.pathsend and http.response.zerocopysend ------- */

/* Body bytes read from a file per send where the stream does not send the
 * file itself (TLS, HTTP/2, small files): memory stays bounded whatever the
 * file's size, since the next read waits while the stream is blocked. */
#define CG_FILE_CHUNK (256 * 1024)
/* Bytes sent in one app step at most: a client that takes everything at
 * once would otherwise keep the loop to itself. */
#define CG_FILE_STEP (1024 * 1024)

static void file_close(cg_cycle *cy)
{
    int fd = cy->file_fd;
    if (fd < 0)
        return;
    cy->file_fd = -1;
    close(fd);
}

/* The file is out: the response goes on (more_body), or is complete. */
static PyObject *file_done(cg_cycle *cy)
{
    if (cy->file_seek >= 0 && cy->file_fd >= 0)
        (void)lseek(cy->file_fd, (off_t)cy->file_seek, SEEK_SET); /* as if the app had read it */
    file_close(cy);
    if (!cy->file_more && cy->resp != CG_RESP_COMPLETE) {
        if (cy->head.trailers)
            cy->trailers_due = 1;
        else
            response_complete(cy, 1);
    }
    return Py_NewRef(Py_None);
}

/* The file could not be read to its end (exception set): a response that
 * started cannot complete, and ends with an error the client sees. */
static PyObject *file_failed(cg_cycle *cy, cg_stream *s)
{
    file_close(cy);
    if (s && cy->resp == CG_RESP_STREAMING) {
        s->ops->abort(s);
        response_complete(cy, 0);
    }
    return NULL;
}

/* Something that completes in the loop's next pass: a step of the app
 * ends, so that the loop serves others, and the next one goes on. */
static PyObject *yield_once(cg_state *st)
{
    PyObject *coro = PyObject_CallMethod(st->asyncio, "sleep", "i", 0);
    if (!coro)
        return NULL;
    PyObject *it = PyObject_CallMethod(coro, "__await__", NULL);
    Py_DECREF(coro);
    return it;
}

/* Reads `n` bytes of the file at its offset into a new bytes object. */
static PyObject *file_read(cg_cycle *cy, size_t n)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    size_t got = 0;
    if (!b)
        return NULL;
    while (got < n) {
        ssize_t r = pread(cy->file_fd, PyBytes_AS_STRING(b) + got, n - got,
                          (off_t)(cy->file_off + (long long)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            Py_DECREF(b);
            return NULL;
        }
        if (r == 0) {
            PyErr_SetString(PyExc_RuntimeError,
                            "the file ended before the response did: it changed while being sent");
            Py_DECREF(b);
            return NULL;
        }
        got += (size_t)r;
    }
    return b;
}

/* Sends the file of a pathsend or zerocopysend (a cg_poll_fn body): the
 * stream sends it itself when it can (sendfile on a cleartext HTTP/1.1
 * connection), else it is read in chunks sent as body bytes, each one after
 * the stream has room for it. */
static PyObject *poll_file(PyObject *owner, PyObject **fut)
{
    cg_cycle *cy = (cg_cycle *)owner;
    size_t step = 0;
    for (;;) {
        cg_stream *s = cy->stream;
        if (cy->file_fd < 0)
            return Py_NewRef(Py_None); /* the client went away: nothing more to send */
        if (!s || cy->disconnected) {
            file_close(cy);
            return Py_NewRef(Py_None);
        }
        if (cy->file_stream) {
            long long sent = 0;
            PyObject *r = s->ops->poll_file(s, fut, &sent);
            if (!r && *fut)
                return NULL;
            cy->file_stream = 0;
            cy->resp_sent += sent;
            cy->file_left = 0;
            if (r) {
                Py_DECREF(r);
                return file_done(cy);
            }
            if (PyErr_ExceptionMatches(PyExc_ConnectionError)) {
                /* The client went away, as for a body sent in chunks:
                 * send() returns, and the response, unfinished, is counted
                 * and logged when the connection's end arrives. */
                PyErr_Clear();
                file_close(cy);
                return Py_NewRef(Py_None);
            }
            return file_failed(cy, s);
        }
        const cg_resp_head *head = cy->resp == CG_RESP_HELD ? &cy->head : NULL;
        int rc = 0;
        if (cy->head.no_body || cy->file_left == 0) {
            /* HEAD, 204, 304, or nothing to send: the head, or the body's end. */
            if (head || !cy->file_more)
                rc = s->ops->send(s, head, NULL, 0, NULL, cy->file_more);
            cy->resp = CG_RESP_STREAMING;
            if (head)
                cg_fields_free(&cy->fields);
            cy->file_left = 0;
            if (rc < 0) {
                file_close(cy);
                return NULL;
            }
            return file_done(cy);
        }
        if (!cy->file_tried) {
            cy->file_tried = 1;
            if (s->ops->send_file)
                rc = s->ops->send_file(s, head, cy->file_fd, cy->file_off, cy->file_left,
                                       cy->file_more);
            if (rc < 0) {
                file_close(cy);
                return NULL;
            }
            if (rc > 0) {
                cy->file_stream = 1;
                cy->resp = CG_RESP_STREAMING;
                if (head)
                    cg_fields_free(&cy->fields);
                continue;
            }
        }
        if (step >= CG_FILE_STEP) {
            *fut = yield_once(cycle_state(cy));
            return NULL;
        }
        if (!head && s->ops->write_blocked(s)) {
            PyObject *r = s->ops->poll_drain(s, fut);
            if (!r)
                return NULL;
            Py_DECREF(r);
        }
        size_t n = cy->file_left < CG_FILE_CHUNK ? (size_t)cy->file_left : CG_FILE_CHUNK;
        PyObject *b = file_read(cy, n);
        if (!b)
            return file_failed(cy, s);
        int more = cy->file_left > (long long)n || cy->file_more;
        cy->resp = CG_RESP_STREAMING;
        rc = s->ops->send(s, head, PyBytes_AS_STRING(b), n, b, more);
        Py_DECREF(b);
        if (head)
            cg_fields_free(&cy->fields);
        if (rc < 0) {
            file_close(cy);
            return NULL;
        }
        cy->file_off += (long long)n;
        cy->file_left -= (long long)n;
        cy->resp_sent += (long long)n;
        step += n;
    }
}

/* An optional non-negative int of a message; *out stays when the key is
 * absent or None. 0, or -1 with an exception. */
static int message_count(PyObject *message, PyObject *key, long long *out)
{
    PyObject *v = PyDict_GetItemWithError(message, key);
    if (!v)
        return PyErr_Occurred() ? -1 : 0;
    if (v == Py_None)
        return 0;
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "'%U' must be an int, not %.100s", key, Py_TYPE(v)->tp_name);
        return -1;
    }
    long long n = PyLong_AsLongLong(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "'%U' must not be negative", key);
        return -1;
    }
    *out = n;
    return 0;
}

/* An OSError(errno_, text, filename) set as the exception. */
static void set_os_error(int errno_, const char *text, PyObject *filename)
{
    PyObject *e = PyObject_CallFunction(PyExc_OSError, "isO", errno_, text, filename);
    if (e) {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
    }
}

/* Opens the file of a pathsend (absolute, or relative to the working
 * directory as Starlette's FileResponse names it): a regular file, or an
 * OSError (FileNotFoundError, PermissionError, IsADirectoryError...) naming
 * it. Returns the descriptor and its size, or -1. */
static int pathsend_open(PyObject *path, long long *size)
{
    PyObject *fs = NULL;
    struct stat sb;
    int fd;
    if (!PyUnicode_FSConverter(path, &fs))
        return -1;
    do
        fd = open(PyBytes_AS_STRING(fs), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    while (fd < 0 && errno == EINTR);
    Py_DECREF(fs);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    if (fstat(fd, &sb) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    } else if (S_ISDIR(sb.st_mode)) {
        errno = EISDIR;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    } else if (!S_ISREG(sb.st_mode)) {
        set_os_error(EINVAL, "Not a regular file", path);
    } else {
        *size = (long long)sb.st_size;
        return fd;
    }
    close(fd);
    return -1;
}

/* The range of a zerocopysend's file: a duplicate of its descriptor (the
 * app closes its own whenever it likes), offset (default: the file's
 * position, which then moves past the bytes sent, as a read would move it)
 * and count (default: to the end). Returns the descriptor, or -1. */
static int zerocopy_open(cg_cycle *cy, PyObject *message, long long *off, long long *count)
{
    cg_state *st = cycle_state(cy);
    PyObject *file = PyDict_GetItemWithError(message, st->s_file);
    struct stat sb;
    if (!file) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "http.response.zerocopysend requires 'file'");
        return -1;
    }
    int afd = PyObject_AsFileDescriptor(file);
    if (afd < 0)
        return -1;
    int fd = fcntl(afd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *off = *count = -1;
    if (fstat(fd, &sb) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        set_os_error(EINVAL, "Not a regular file", file);
        goto fail;
    }
    if (message_count(message, st->s_offset, off) < 0 ||
        message_count(message, st->s_count, count) < 0)
        goto fail;
    if (*off < 0) {
        off_t pos = lseek(fd, 0, SEEK_CUR);
        if (pos < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        *off = (long long)pos;
        cy->file_seek = 0; /* set once the count is known */
    }
    if (*count < 0)
        *count = (long long)sb.st_size > *off ? (long long)sb.st_size - *off : 0;
    if (*off > (long long)sb.st_size || *count > (long long)sb.st_size - *off) {
        PyErr_Format(PyExc_RuntimeError,
                     "http.response.zerocopysend: offset %lld and count %lld pass the end of the "
                     "file (%lld bytes)",
                     *off, *count, (long long)sb.st_size);
        goto fail;
    }
    if (cy->file_seek == 0)
        cy->file_seek = *off + *count;
    return fd;
fail:
    close(fd);
    return -1;
}

/* http.response.pathsend (pathsend = 1) or http.response.zerocopysend: the
 * file is opened and its range checked against the content-length before
 * anything of it is sent, so a missing, unreadable or mismatched file is an
 * exception from send() with the response as it was; a head still held is
 * dropped then (nothing of it was sent), and the app may start another
 * response, a 404 say. The file's size is the content-length of a response
 * that had none and that the file completes. Returns the awaitable that
 * sends the file, or NULL. */
static PyObject *response_file(cg_cycle *cy, PyObject *message, int pathsend)
{
    cg_state *st = cycle_state(cy);
    PyObject *type = pathsend ? st->s_http_response_pathsend : st->s_http_response_zerocopysend;
    long long off = 0, count = 0;
    int fd = -1, more = 0;

    if (cy->resp == CG_RESP_NONE) {
        PyErr_Format(PyExc_RuntimeError, "Expected ASGI message 'http.response.start', but got %R.",
                     type);
        return NULL;
    }
    if (cy->resp == CG_RESP_COMPLETE) {
        PyErr_Format(PyExc_RuntimeError,
                     "Unexpected ASGI message %R sent, after response already completed.", type);
        return NULL;
    }
    if (cy->trailers_due) {
        PyErr_Format(PyExc_RuntimeError,
                     "Expected ASGI message 'http.response.trailers', but got %R.", type);
        return NULL;
    }
    if (!cy->stream)
        return Py_NewRef(st->done);
    cy->file_seek = -1;
    if (pathsend) {
        PyObject *path = PyDict_GetItemWithError(message, st->s_path);
        if (!path) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "http.response.pathsend requires 'path'");
            goto fail;
        }
        fd = pathsend_open(path, &count);
    } else {
        fd = zerocopy_open(cy, message, &off, &count);
        PyObject *more_obj = fd < 0 ? NULL : PyDict_GetItemWithError(message, st->s_more_body);
        if (fd >= 0 && (more_obj           ? (more = PyObject_IsTrue(more_obj))
                        : PyErr_Occurred() ? -1
                                           : 0) < 0)
            goto fail;
    }
    if (fd < 0)
        goto fail;
    if (!cy->head.no_body && cy->resp_length >= 0) {
        long long rest = cy->resp_length - cy->resp_sent;
        if (count > rest || (!more && count < rest)) {
            PyErr_Format(PyExc_RuntimeError,
                         "%U: the file's %lld bytes do not match the response's content-length "
                         "(%lld bytes left)",
                         type, count, rest);
            goto fail;
        }
    }
    if (cy->resp == CG_RESP_HELD && cy->resp_length < 0 && !more && !cy->head.chunked) {
        char num[24];
        size_t n = cg_format_uint(num, (unsigned long long)count, 10);
        if (cg_fields_add(&cy->fields, "content-length", 14, num, n) < 0) {
            PyErr_NoMemory();
            goto fail;
        }
        cy->resp_length = cy->head.length = count;
    }
    cy->file_fd = fd;
    cy->file_off = off;
    cy->file_left = count;
    cy->file_more = (unsigned)more;
    cy->file_tried = cy->file_stream = 0;
    return cg_await_new(st, (PyObject *)cy, poll_file);
fail:
    if (fd >= 0)
        close(fd);
    if (cy->resp == CG_RESP_HELD) {
        cy->resp = CG_RESP_NONE;
        cg_fields_reset(&cy->fields);
    }
    return NULL;
}

static PyObject *poll_drain(PyObject *owner, PyObject **fut)
{
    cg_cycle *cy = (cg_cycle *)owner;
    if (!cy->stream || cy->disconnected)
        return Py_NewRef(Py_None);
    return cy->stream->ops->poll_drain(cy->stream, fut);
}

int cg_cycle_http_send(cg_cycle *cy, int start, PyObject *message)
{
    if (start) {
        if (cy->resp != CG_RESP_NONE) {
            PyErr_SetString(PyExc_RuntimeError,
                            cy->resp == CG_RESP_COMPLETE
                                ? "Unexpected ASGI message 'http.response.start' sent, after "
                                  "response already completed."
                                : "Expected ASGI message 'http.response.body', but got "
                                  "'http.response.start'.");
            return -1;
        }
        if (!cy->stream)
            return 0;
        if (response_start(cy, message) < 0)
            return -1;
        cy->resp = CG_RESP_HELD;
        if (!cy->in_step && flush_held_head(cy) < 0)
            return -1;
        return 0;
    }
    if (cy->resp == CG_RESP_NONE) {
        PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'http.response.start', "
                                            "but got 'http.response.body'.");
        return -1;
    }
    if (cy->resp == CG_RESP_COMPLETE) {
        PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'http.response.body' "
                                            "sent, after response already completed.");
        return -1;
    }
    if (cy->trailers_due) {
        PyErr_SetString(PyExc_RuntimeError, "Expected ASGI message 'http.response.trailers', "
                                            "but got 'http.response.body'.");
        return -1;
    }
    return response_body(cy, message);
}

static PyObject *cycle_send(PyObject *self, PyObject *message)
{
    cg_cycle *cy = (cg_cycle *)self;
    cg_state *st = cycle_state(cy);
    PyObject *type;
    int start;

    if (!PyDict_Check(message)) {
        PyErr_Format(PyExc_TypeError, "send() expects a dict, not %.100s",
                     Py_TYPE(message)->tp_name);
        return NULL;
    }
    if (cy->disconnected)
        return Py_NewRef(st->done); /* the client is gone: dropped */
    type = PyDict_GetItemWithError(message, st->s_type);
    if (!type) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "ASGI message without 'type'");
        return NULL;
    }
    if (cy->file_fd >= 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "Unexpected ASGI message %R sent, while a file of the response is being sent.",
                     type);
        return NULL;
    }
    if (cg_type_is(type, st->s_http_response_start)) {
        start = 1;
    } else if (cg_type_is(type, st->s_http_response_body)) {
        start = 0;
    } else if (cg_type_is(type, st->s_http_response_trailers) && cy->trailers_ok) {
        if (!cy->trailers_due) {
            PyErr_SetString(PyExc_RuntimeError,
                            "Unexpected ASGI message 'http.response.trailers' sent, before the "
                            "last body of a response started with trailers=True.");
            return NULL;
        }
        return response_trailers(cy, message) < 0 ? NULL : Py_NewRef(st->done);
    } else if (cg_type_is(type, st->s_http_response_early_hint) && cy->early_hints_ok) {
        return response_early_hint(cy, message) < 0 ? NULL : Py_NewRef(st->done);
    } else if (cg_type_is(type, st->s_http_response_pathsend) && cy->pathsend_ok) {
        return response_file(cy, message, 1);
    } else if (cg_type_is(type, st->s_http_response_zerocopysend) && cy->zerocopy_ok) {
        return response_file(cy, message, 0);
    } else {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message %R sent, for http.", type);
        return NULL;
    }
    if (cg_cycle_http_send(cy, start, message) < 0)
        return NULL;
    if (cy->stream && cy->stream->ops->write_blocked(cy->stream))
        return cg_await_new(st, self, poll_drain);
    return Py_NewRef(st->done);
}

/* ---- runner hooks ------------------------------------------------------- */

static void hook_enter(PyObject *owner)
{
    cg_cycle *cy = (cg_cycle *)owner;
    cy->in_step = 1;
    cy->stepped = 1;
}

static void hook_leave(PyObject *owner)
{
    cg_cycle *cy = (cg_cycle *)owner;
    cy->in_step = 0;
    if (cy->resp == CG_RESP_HELD && flush_held_head(cy) < 0) {
        PyErr_Clear();
        if (cy->stream)
            cy->stream->ops->close(cy->stream);
    }
    if (cy->stream)
        cy->stream->ops->settle(cy->stream);
}

static void log_exc(cg_state *st, PyObject *exc, const char *msg)
{
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
    cg_log_exception(&st->log, msg);
}

static void hook_finish(PyObject *owner, PyObject *exc)
{
    cg_cycle *cy = (cg_cycle *)owner;
    cg_state *st = cycle_state(cy);
    cg_stream *s = cy->stream;
    PyObject *owner_ref = s ? Py_NewRef(s->owner) : NULL; /* keeps s alive through its ends */

    cy->in_step = 0;
    cy->task_done = 1;
    file_close(cy); /* a file send the app left (cancelled) ends with the app */
    if (exc && (PyObject_IsInstance(exc, PyExc_Exception) == 1) &&
        !PyObject_IsInstance(exc, st->CancelledError)) {
        log_exc(st, exc, "Exception in ASGI application\n");
        if (s && !cy->disconnected) {
            if (cy->resp == CG_RESP_NONE || cy->resp == CG_RESP_HELD)
                cycle_fail_500(cy, s);
            else if (cy->resp == CG_RESP_STREAMING)
                s->ops->abort(s); /* a close-delimited body must not look complete */
        }
    } else if (exc) {
        /* Cancelled or BaseException: an unfinished response cannot be finished. */
        PyErr_Clear();
        if (s && cy->resp == CG_RESP_STREAMING)
            s->ops->abort(s);
        else if (s && cy->resp != CG_RESP_COMPLETE)
            s->ops->close(s);
    } else if (s && !cy->disconnected) {
        if (cy->resp == CG_RESP_NONE) {
            cg_log(&st->log, CG_ERROR, "ASGI callable returned without starting response.");
            cycle_fail_500(cy, s);
        } else if (cy->resp != CG_RESP_COMPLETE) {
            /* Not an error when the app was told the client is going away. */
            if (!cy->told_leaving)
                cg_log(&st->log, CG_ERROR, "ASGI callable returned without completing response.");
            if (cy->resp == CG_RESP_STREAMING)
                s->ops->abort(s);
            else
                s->ops->close(s);
        }
    }
    PyErr_Clear();
    if (s && cy->stream == s)
        s->ops->settle(s);
    Py_XDECREF(owner_ref);
    cg_server_task_done(cy->server, &cy->task);
}

/* ---- the cycle type ----------------------------------------------------- */

static PyMethodDef receive_def = {"receive", (PyCFunction)cycle_receive, METH_NOARGS,
                                  "receive() -> awaitable ASGI event"};
static PyMethodDef send_def = {"send", (PyCFunction)cycle_send, METH_O,
                               "send(message) -> awaitable"};

/* What the access line of an --access-log-format or --access-log-json reads
 * of the request: its start and the request headers it names. 0, or -1
 * with an exception. */
static int cycle_alog_start(cg_cycle *cy, const cg_alog *prog, const cg_http1_request *req)
{
    if (!prog->needs_time && !prog->nslots)
        return 0;
    cy->alog = PyMem_Malloc(sizeof(*cy->alog));
    if (!cy->alog) {
        PyErr_NoMemory();
        return -1;
    }
    cg_alog_vals_init(cy->alog, prog->needs_time ? cg_monotonic_now() : 0);
    if (cg_alog_reads_headers(prog, 0))
        for (size_t i = 0; i < req->num_headers; i++) {
            const cg_http1_header *h = &req->headers[i];
            if (cg_alog_capture(prog, cy->alog, 0, h->name.base, h->name.len, h->value.base,
                                h->value.len) < 0) {
                PyErr_NoMemory();
                return -1;
            }
        }
    return 0;
}

cg_cycle *cg_cycle_new(cg_server *srv, cg_stream *s, const cg_http1_request *req)
{
    cg_state *st = srv->st;
    cg_cycle *cy = PyObject_GC_New(cg_cycle, st->CycleType);
    if (!cy)
        return NULL;
    cy->server = (cg_server *)Py_NewRef(srv);
    cy->stream = s;
    Py_INCREF(s->owner);
    cy->task = cy->client_text = NULL;
    cy->recv_waiters = (cg_waiters){NULL, NULL};
    cg_buf_init(&cy->body);
    cg_fields_init(&cy->fields);
    memset(&cy->head, 0, sizeof(cy->head));
    cy->version = req->version;
    cy->status = 0;
    cy->resp_length = -1;
    cy->resp_sent = cy->resp_unsent = 0;
    cy->resp = CG_RESP_NONE;
    cy->is_head = req->method.len == 4 && !memcmp(req->method.base, "HEAD", 4);
    cy->is_connect = req->target_form == CG_TARGET_AUTHORITY;
    cy->expect_continue = req->expect_continue && req->version != CG_HTTP_1_0; /* 1.0 has no 1xx */
    cy->body_done = cy->body_final = cy->disconnected = 0;
    cy->in_step = cy->stepped = cy->task_done = 0;
    cy->event_stream = cy->told_leaving = 0;
    cy->trailers_ok = cy->early_hints_ok = cy->trailers_due = 0;
    cy->websocket = 0;
    cy->t0 = cg_meter_clock(srv);

    cy->pathsend_ok = cy->zerocopy_ok = 0;
    cy->file_more = cy->file_tried = cy->file_stream = 0;
    cy->file_fd = -1;
    cy->file_off = cy->file_left = 0;
    cy->file_seek = -1;

    cy->accounted = 0;
    cy->qmark = req->query.len || (req->target.len && req->target.base[req->target.len - 1] == '?');
    cy->alog = NULL;
    cy->method = method_str(st, req->method);
    cy->raw_path = PyBytes_FromStringAndSize(req->path.base, (Py_ssize_t)req->path.len);
    cy->query = PyBytes_FromStringAndSize(req->query.base, (Py_ssize_t)req->query.len);
    PyObject_GC_Track(cy);
    if (st->log.alog && st->log.access_enabled && cycle_alog_start(cy, st->log.alog, req) < 0) {
        Py_DECREF(cy);
        return NULL;
    }
    if (!cy->method || !cy->raw_path || !cy->query) {
        Py_DECREF(cy);
        return NULL;
    }
    return cy;
}

int cg_cycle_begin(cg_cycle *cy, const cg_http1_request *req, PyObject **scope)
{
    cg_server *srv = cy->server;
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;

    *scope = NULL;
    srv->nrequests++;
    if (srv->max_requests >= 0 && srv->nrequests >= (unsigned long long)srv->max_requests &&
        !srv->should_exit && !srv->retiring) {
        cg_log(&st->log, CG_WARNING, "Maximum request limit of %lld exceeded. Terminating process.",
               srv->max_requests);
        cg_server_retire(srv);
    }
    if (cfg->limit_concurrency >= 0 && srv->ntasks >= (size_t)cfg->limit_concurrency) {
        /* Over capacity (requests in progress, idle connections aside):
         * answer without running the app. */
        cy->resp = CG_RESP_COMPLETE;
        cg_cycle_meter(cy, 503);
        cy->stream->ops->fail(cy->stream, 503);
        return 0;
    }
    *scope = cg_scope_new(cy, req, 0);
    if (!*scope) {
        cy->resp = CG_RESP_COMPLETE;
        return -1;
    }
    return 0;
}

int cg_cycle_run(cg_cycle *cy, PyObject *scope)
{
    cg_server *srv = cy->server;
    PyObject *task = NULL;
    int rc = 0;

    Py_INCREF(cy); /* the app may complete it at once */
    if (cg_app_start(srv->st, srv->loop, srv->context, srv->app, scope, (PyObject *)cy,
                     &receive_def, &send_def, &http_hooks, 1, &task) < 0 ||
        (task && cg_server_add_task(srv, task) < 0)) {
        Py_XDECREF(task);
        cy->resp = CG_RESP_COMPLETE;
        rc = -1;
    } else {
        cy->task = task; /* NULL when the app already finished: handled */
    }
    Py_DECREF(cy);
    return rc;
}

int cg_cycle_offer_extensions(cg_cycle *cy, PyObject *scope, unsigned which)
{
    cg_state *st = cycle_state(cy);
    if ((which & CG_EXT_TRAILERS) &&
        cg_scope_add_extension(scope, st, st->s_http_response_trailers, NULL) < 0)
        return -1;
    if ((which & CG_EXT_EARLY_HINT) &&
        cg_scope_add_extension(scope, st, st->s_http_response_early_hint, NULL) < 0)
        return -1;
    if ((which & CG_EXT_PATHSEND) &&
        cg_scope_add_extension(scope, st, st->s_http_response_pathsend, NULL) < 0)
        return -1;
    if ((which & CG_EXT_ZEROCOPYSEND) &&
        cg_scope_add_extension(scope, st, st->s_http_response_zerocopysend, NULL) < 0)
        return -1;
    cy->trailers_ok = (which & CG_EXT_TRAILERS) != 0;
    cy->early_hints_ok = (which & CG_EXT_EARLY_HINT) != 0;
    cy->pathsend_ok = (which & CG_EXT_PATHSEND) != 0;
    cy->zerocopy_ok = (which & CG_EXT_ZEROCOPYSEND) != 0;
    return 0;
}

void cg_cycle_detach(cg_cycle *cy)
{
    cg_stream *s = cy->stream;
    if (!s)
        return;
    cy->stream = NULL;
    Py_DECREF(s->owner);
}

static int cycle_traverse(cg_cycle *cy, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(cy));
    Py_VISIT(cy->server);
    if (cy->stream)
        Py_VISIT(cy->stream->owner);
    Py_VISIT(cy->task);
    Py_VISIT(cy->method);
    Py_VISIT(cy->raw_path);
    Py_VISIT(cy->query);
    return cg_waiters_traverse(&cy->recv_waiters, visit, arg);
}

static int cycle_clear(cg_cycle *cy)
{
    file_close(cy);
    cg_cycle_detach(cy);
    Py_CLEAR(cy->server);
    Py_CLEAR(cy->task);
    Py_CLEAR(cy->method);
    Py_CLEAR(cy->raw_path);
    Py_CLEAR(cy->query);
    Py_CLEAR(cy->client_text);
    cg_waiters_clear(&cy->recv_waiters);
    return 0;
}

static void cycle_dealloc(cg_cycle *cy)
{
    PyTypeObject *tp = Py_TYPE(cy);
    PyObject_GC_UnTrack(cy);
    cycle_clear(cy);
    cg_buf_free(&cy->body);
    cg_fields_free(&cy->fields);
    if (cy->alog) {
        cg_alog_vals_free(cy->alog);
        PyMem_Free(cy->alog);
    }
    tp->tp_free(cy);
    Py_DECREF(tp);
}

static PyType_Slot cycle_slots[] = {
    {Py_tp_traverse, cycle_traverse},
    {Py_tp_clear, cycle_clear},
    {Py_tp_dealloc, cycle_dealloc},
    {0, NULL},
};

static PyType_Spec cycle_spec = {
    .name = "casgi._casgi.RequestCycle",
    .basicsize = sizeof(cg_cycle),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = cycle_slots,
};

int cg_asgi_http_types_init(PyObject *module, cg_state *st)
{
    st->CycleType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &cycle_spec, NULL);
    return st->CycleType ? 0 : -1;
}
