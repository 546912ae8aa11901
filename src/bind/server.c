/* The server's lifecycle: choose the loop, bind, run lifespan startup, serve
 * until a signal (or --limit-max-requests), then shut down gracefully:
 * stop accepting, close idle connections, let in-flight requests finish within
 * --timeout-graceful-shutdown, run lifespan shutdown last.
 *
 * Everything is driven with loop.run_until_complete on futures that C code
 * completes; no Python coroutine is involved. One ticker per server refreshes
 * the date header and enforces every connection's deadline, so requests pay
 * nothing for timeouts. */
#include "protocols.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "clock.h"
#include "config.h"
#include "lifespan.h"
#include "meter.h"
#include "sock.h"
#include "standby.h"
#include "worker.h"

/* On shutdown, how long a connection accepted just before may take to send
 * its first request. */
#define CG_SHUTDOWN_FIRST_REQUEST 1.0

/* ---- out of file descriptors ---------------------------------------------
 * With every fd in use accept() fails. asyncio's accept loop would log a
 * traceback and schedule a retry for each attempt left in its pass (up to the
 * backlog: thousands a second); uvloop (libuv) resets the waiting connections
 * silently. casgi's listening socket lets one failure per pass through, so
 * asyncio stops watching the socket and retries a second later, and answers
 * the rest of the pass as "nothing to accept"; asyncio's message for it is
 * filtered out. The ticker probes for a free fd and says once per episode
 * when the server stops and starts accepting. */

#define CG_ACCEPT_RESOURCE_MSG "socket.accept() out of system resource"

static void fd_episode(cg_server *srv, int exhausted)
{
    if (exhausted == srv->fd_exhausted)
        return;
    srv->fd_exhausted = exhausted;
    if (exhausted)
        cg_log(&srv->st->log, CG_WARNING,
               "Too many open files: not accepting new connections until some close "
               "(open connections: %zu)",
               srv->nconns);
    else
        cg_log(&srv->st->log, CG_INFO, "File descriptors free: accepting new connections again");
}

static void probe_fd_limit(cg_server *srv)
{
    if (srv->listen_fd < 0)
        return;
    int fd = fcntl(srv->listen_fd, F_DUPFD_CLOEXEC, 0);
    if (fd >= 0) {
        close(fd);
        fd_episode(srv, 0);
    } else if (errno == EMFILE || errno == ENFILE) {
        fd_episode(srv, 1);
    }
}

static PyObject *accept_pass_over(cg_server *srv, PyObject *unused)
{
    (void)unused;
    srv->accept_refused = 0;
    Py_RETURN_NONE;
}

static PyMethodDef pass_over_def = {"accept_pass_over", (PyCFunction)accept_pass_over, METH_NOARGS,
                                    NULL};

/* The listening socket's accept(): socket.socket.accept, except that a
 * failure for lack of resources ends asyncio's accept pass (see above). */
static PyObject *listener_accept(cg_server *srv, PyObject *sock)
{
    PyObject *t, *v, *tb, *r = PyObject_CallOneArg(srv->base_accept, sock);
    if (r || !PyErr_ExceptionMatches(PyExc_OSError))
        return r;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject *no = v ? PyObject_GetAttrString(v, "errno") : NULL;
    long err = no && PyLong_Check(no) ? PyLong_AsLong(no) : 0;
    Py_XDECREF(no);
    PyErr_Clear();
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        PyErr_Restore(t, v, tb);
        return NULL;
    }
    if (srv->accept_refused) { /* the rest of this pass: nothing to accept */
        Py_XDECREF(t);
        Py_XDECREF(v);
        Py_XDECREF(tb);
        PyErr_SetNone(PyExc_BlockingIOError);
        return NULL;
    }
    srv->accept_refused = 1;
    PyObject *cb = PyCFunction_New(&pass_over_def, (PyObject *)srv);
    PyObject *h = cb ? PyObject_CallMethodOneArg(srv->loop, srv->st->s_call_soon, cb) : NULL;
    Py_XDECREF(cb);
    Py_XDECREF(h);
    PyErr_Clear();
    fd_episode(srv, 1);
    PyErr_Restore(t, v, tb);
    return NULL;
}

static PyMethodDef accept_def = {"accept", (PyCFunction)listener_accept, METH_O, NULL};

/* Drops asyncio's log record for a failed accept (fd_episode says it once). */
static PyObject *asyncio_log_filter(PyObject *unused, PyObject *record)
{
    (void)unused;
    PyObject *msg = PyObject_GetAttrString(record, "msg");
    PyObject *prefix = PyUnicode_FromString(CG_ACCEPT_RESOURCE_MSG);
    /* The record's message goes on with details on more lines. */
    int drop = msg && prefix && PyUnicode_Check(msg) &&
               PyUnicode_Tailmatch(msg, prefix, 0, PY_SSIZE_T_MAX, -1) == 1;
    Py_XDECREF(prefix);
    Py_XDECREF(msg);
    PyErr_Clear();
    return PyBool_FromLong(!drop);
}

static PyMethodDef log_filter_def = {"accept_log_filter", asyncio_log_filter, METH_O, NULL};

/* Adds (add = 1) or removes the filter on the "asyncio" logger. */
static void asyncio_filter(cg_server *srv, int add)
{
    PyObject *logging = PyImport_ImportModule("logging");
    PyObject *logger = logging ? PyObject_CallMethod(logging, "getLogger", "s", "asyncio") : NULL;
    if (add && logger && !srv->log_filter)
        srv->log_filter = PyCFunction_New(&log_filter_def, NULL);
    if (logger && srv->log_filter) {
        PyObject *r =
            PyObject_CallMethod(logger, add ? "addFilter" : "removeFilter", "O", srv->log_filter);
        Py_XDECREF(r);
    }
    if (!add)
        Py_CLEAR(srv->log_filter);
    Py_XDECREF(logger);
    Py_XDECREF(logging);
    PyErr_Clear();
}

/* Makes sock (a socket.socket of ours) a subclass whose accept() is
 * listener_accept. Returns 0 or -1. */
static int guard_accept(cg_server *srv, PyObject *sock)
{
    PyObject *base = (PyObject *)Py_TYPE(sock);
    PyObject *fn = PyCFunction_New(&accept_def, (PyObject *)srv);
    PyObject *meth = fn ? PyInstanceMethod_New(fn) : NULL;
    PyObject *slots = PyTuple_New(0);
    PyObject *cls = meth && slots ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(O){sOsO}",
                                                          "ListenSocket", base, "__slots__", slots,
                                                          "accept", meth)
                                  : NULL;
    Py_XDECREF(slots);
    Py_XDECREF(meth);
    Py_XDECREF(fn);
    if (!cls)
        return -1;
    Py_XSETREF(srv->base_accept, PyObject_GetAttrString(base, "accept"));
    int rc = srv->base_accept ? PyObject_SetAttrString(sock, "__class__", cls) : -1;
    Py_DECREF(cls);
    return rc;
}

/* ---- ticker ------------------------------------------------------------- */

static int arm_ticker(cg_server *srv)
{
    PyObject *interval = PyFloat_FromDouble(srv->tick_interval);
    if (!interval)
        return -1;
    PyObject *h =
        PyObject_CallMethodObjArgs(srv->loop, srv->st->s_call_later, interval, srv->tick_cb, NULL);
    Py_DECREF(interval);
    if (!h)
        return -1;
    Py_XSETREF(srv->ticker, h);
    return 0;
}

static PyObject *server_tick(cg_server *srv, PyObject *unused)
{
    (void)unused;
    double now = cg_monotonic_now();
    cg_conn *c, *next;

    srv->now = now;
    cg_server_update_date(srv);
    probe_fd_limit(srv);
    cg_worker_notify(srv, 'H');
    if (srv->notify) {
        PyObject *r = PyObject_CallNoArgs(srv->notify);
        if (!r)
            cg_log_exception(&srv->st->log, "Error in the worker heartbeat");
        Py_XDECREF(r);
    }
    for (c = srv->conns; c; c = next) {
        next = c->next;
        cg_conn_tick(c, now);
    }
    if (arm_ticker(srv) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* SIGHUP with TLS in a process of its own: the key and certificate files are
 * read again; new connections get them, open ones keep theirs. A file that
 * does not load leaves the current ones in use. (Under a supervisor, SIGHUP
 * replaces the workers, which load the files as they start.) */
static void server_reload_tls(cg_server *srv)
{
    cg_tls_conf conf;
    char err[512];
    cg_config_tls_conf(srv->cfg, &conf);
    if (cg_tls_ctx_reload(srv->tls, &conf, err, sizeof(err)) < 0)
        cg_log(&srv->st->log, CG_ERROR, "Received SIGHUP; the TLS certificate was not reloaded: %s",
               err);
    else
        cg_log(&srv->st->log, CG_INFO, "Received SIGHUP; TLS certificate and key reloaded.");
}

static PyObject *server_on_signal(cg_server *srv, PyObject *signum)
{
    long sig = PyLong_AsLong(signum);
    if (sig == -1 && PyErr_Occurred())
        return NULL;
    if (sig == SIGHUP) {
        server_reload_tls(srv);
        Py_RETURN_NONE;
    }
    /* A repeated SIGTERM forces as a second SIGINT does, in a process of its
     * own. Not under a supervisor (casgi's or gunicorn's): a TERM sent to the
     * whole group (systemd's default KillMode) reaches a worker together with
     * the one its supervisor forwards, and the supervisor decides when to
     * force. SIGTERM after SIGINT never forces: a Ctrl-C under a supervisor
     * brings both to a worker. */
    int supervised = srv->ctl_fd >= 0 || srv->host_mode;
    int repeated =
        srv->should_exit && (sig == SIGINT || (sig == SIGTERM && srv->got_sigterm && !supervised));
    if (sig == SIGTERM)
        srv->got_sigterm = 1;
    if (sig == SIGQUIT || repeated) {
        srv->should_exit = 1;
        srv->force_exit = 1;
        cg_future_wake(srv->st, srv->drained_fut);
    } else {
        cg_server_request_exit(srv);
    }
    Py_RETURN_NONE;
}

static PyObject *server_graceful_timeout(cg_server *srv, PyObject *unused)
{
    (void)unused;
    cg_future_wake(srv->st, srv->drained_fut);
    Py_RETURN_NONE;
}

static void log_running(cg_state *st, const cg_config *cfg, const char *url);

/* Runs inside the loop, so anything that reacts to the "running" line (a
 * signal, the supervisor) finds the signal handlers live: uvloop drops a
 * signal that arrives while no loop runs. */
static PyObject *server_started(cg_server *srv, PyObject *unused)
{
    (void)unused;
    if (srv->ctl_fd < 0 && !srv->host_mode)
        log_running(srv->st, srv->cfg, srv->url); /* a supervisor says it itself */
    else if (srv->ctl_fd >= 0)
        cg_standby_write_modules(srv->st); /* before 'R': the next standby reads it */
    cg_worker_notify(srv, 'R');
    Py_RETURN_NONE;
}

static PyMethodDef started_def = {"started", (PyCFunction)server_started, METH_NOARGS, NULL};
static PyMethodDef tick_def = {"tick", (PyCFunction)server_tick, METH_NOARGS, NULL};
static PyObject *server_flush(cg_server *srv, PyObject *unused)
{
    (void)unused;
    cg_server_flush_held(srv);
    Py_RETURN_NONE;
}
static PyMethodDef flush_def = {"flush", (PyCFunction)server_flush, METH_NOARGS, NULL};
static PyMethodDef signal_def = {"on_signal", (PyCFunction)server_on_signal, METH_O, NULL};
static PyMethodDef timeout_def = {"graceful_timeout", (PyCFunction)server_graceful_timeout,
                                  METH_NOARGS, NULL};

/* ---- setup -------------------------------------------------------------- */

static PyObject *new_loop(cg_state *st, const cg_config *cfg)
{
    PyObject *mod = NULL, *loop;
    if (cfg->loop != CG_LOOP_ASYNCIO) {
        mod = PyImport_ImportModule("uvloop");
        if (!mod) {
            if (cfg->loop == CG_LOOP_UVLOOP)
                return NULL;
            PyErr_Clear();
        }
    }
    loop = PyObject_CallMethod(mod ? mod : st->asyncio, "new_event_loop", NULL);
    Py_XDECREF(mod);
    if (!loop)
        return NULL;
    PyObject *r = PyObject_CallMethod(st->asyncio, "set_event_loop", "O", loop);
    if (!r) {
        Py_DECREF(loop);
        return NULL;
    }
    Py_DECREF(r);
    return loop;
}

/* Binds the listening socket per cfg. Returns a socket.socket or NULL after
 * logging. */
static PyObject *open_listener(cg_state *st, const cg_config *cfg, char *url, size_t urllen)
{
    char err[256];
    int fd;
    if (cfg->fd >= 0) {
        fd = (int)cfg->fd;
    } else if (cfg->uds) {
        fd = cg_listen_unix(cfg->uds, (int)cfg->backlog, err, sizeof(err));
    } else {
        fd = cg_listen_tcp(cfg->host, (int)cfg->port, (int)cfg->backlog, err, sizeof(err));
    }
    if (fd < 0) {
        if (cfg->uds)
            cg_log(&st->log, CG_ERROR, "%s: error while attempting to bind on unix socket '%s'",
                   err, cfg->uds);
        else
            cg_log(&st->log, CG_ERROR, "%s: error while attempting to bind on address ('%s', %ld)",
                   err, cfg->host, cfg->port);
        return NULL;
    }
    if (cg_sock_url(fd, cfg->ssl_certfile ? "https" : "http", url, urllen) < 0)
        snprintf(url, urllen, "fd %d", fd);
    PyObject *socket_mod = PyImport_ImportModule("socket");
    if (!socket_mod)
        return NULL;
    PyObject *sock = PyObject_CallMethod(socket_mod, "socket", "iiii", -1, -1, -1, fd);
    Py_DECREF(socket_mod);
    if (!sock) {
        cg_log_exception(&st->log, "Error: cannot use the listening socket");
        if (cfg->fd < 0)
            close(fd);
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(sock, "setblocking", "O", Py_False);
    Py_XDECREF(r);
    PyErr_Clear();
    return sock;
}

static int build_head_lines(cg_server *srv)
{
    const cg_config *cfg = srv->cfg;
    cg_buf extra;
    int rc = 0;
    cg_buf_init(&extra);
    for (size_t i = 0; i < cfg->headers.n && rc == 0; i++) {
        const char *name, *value;
        size_t nlen, vlen;
        if (cg_header_option_split(cfg->headers.items[i], &name, &nlen, &value, &vlen) < 0 ||
            !cg_http1_valid_field(name, nlen, value, vlen)) {
            cg_log(&srv->st->log, CG_ERROR, "Error: invalid --header '%s'", cfg->headers.items[i]);
            rc = -1;
        } else if (cg_buf_append(&extra, name, nlen) < 0 || cg_buf_append(&extra, ": ", 2) < 0 ||
                   cg_buf_append(&extra, value, vlen) < 0 || cg_buf_append(&extra, "\r\n", 2) < 0) {
            PyErr_NoMemory();
            rc = -1;
        }
    }
    if (rc == 0)
        rc = cg_server_set_head_lines(srv, extra.data, extra.len);
    cg_buf_free(&extra);
    return rc;
}

/* --forwarded-allow-ips, parsed once (the option layer has validated it). */
static int parse_trusted(cg_server *srv)
{
    cg_slice bad;
    if (!srv->cfg->proxy_headers)
        return 0;
    int rc = cg_proxy_trust_parse(&srv->trust, srv->cfg->forwarded_allow_ips, &bad);
    if (rc == CG_PROXY_NO_MEMORY)
        PyErr_NoMemory();
    else if (rc < 0)
        PyErr_SetString(PyExc_ValueError, "invalid value for '--forwarded-allow-ips'");
    return rc < 0 ? -1 : 0;
}

static cg_server *server_new(PyObject *module, cg_state *st, const cg_config *cfg)
{
    cg_server *srv = PyObject_GC_New(cg_server, st->ServerType);
    if (!srv)
        return NULL;
    memset((char *)srv + sizeof(PyObject), 0, sizeof(*srv) - sizeof(PyObject));
    srv->st = st;
    srv->module = Py_NewRef(module);
    srv->cfg = cfg;
    cg_buf_init(&srv->head_lines);
    PyObject_GC_Track(srv);
    srv->limits.request_line = (size_t)cfg->limit_request_line;
    srv->limits.field_size = (size_t)cfg->limit_request_field_size;
    srv->limits.fields = (size_t)cfg->limit_request_fields;
    cg_worker_attach(srv);
    cg_meter_attach(srv);
    if (cg_config_http2(cfg)) {
        srv->h2c_proto = &cg_h2_proto;
        srv->alpn[0].name = "h2";
        srv->alpn[0].proto = &cg_h2_proto;
        srv->alpn_n = 1;
    }
    srv->listen_fd = -1;
    srv->max_requests = cfg->limit_max_requests;
    if (srv->max_requests >= 0 && cfg->limit_max_requests_jitter > 0) {
        /* Workers retire at different times, so they are not all replaced at once. */
        srand((unsigned)getpid() ^ (unsigned)time(NULL));
        srv->max_requests += rand() % (cfg->limit_max_requests_jitter + 1);
    }
    srv->hdrs = PyMem_Calloc(srv->limits.fields + 1, sizeof(cg_http1_header));
    srv->state = PyDict_New();
    srv->tasks = PySet_New(NULL);
    srv->context = PyContext_CopyCurrent();
    srv->root_path = PyUnicode_FromString(cfg->root_path ? cfg->root_path : "");
    srv->root_path_b = srv->root_path ? PyUnicode_AsUTF8String(srv->root_path) : NULL;
    srv->tick_cb = PyCFunction_New(&tick_def, (PyObject *)srv);
    srv->flush_cb = PyCFunction_New(&flush_def, (PyObject *)srv);
    if (!srv->hdrs || !srv->state || !srv->tasks || !srv->context || !srv->root_path_b ||
        !srv->tick_cb || !srv->flush_cb || parse_trusted(srv) < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        Py_DECREF(srv);
        return NULL;
    }
    /* The ticker checks every deadline: tick at a quarter of the shortest
     * timeout (at most once a second, at least every 50 ms). */
    const double timeouts[] = {cfg->timeout_keep_alive, cfg->timeout_request_header,
                               cfg->timeout_request_body_idle, cfg->ws_ping_interval,
                               cfg->ws_ping_timeout};
    double t = 1.0;
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
        if (timeouts[i] > 0 && timeouts[i] / 4 < t)
            t = timeouts[i] / 4;
    srv->tick_interval = t < 0.05 ? 0.05 : t;
    cg_server_update_date(srv);
    return srv;
}

static PyObject *server_call(cg_server *srv, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    /* the protocol factory given to create_server */
    return cg_conn_new(srv, &cg_h1_proto);
}

/* ---- shutdown ----------------------------------------------------------- */

static void close_idle_connections(cg_server *srv)
{
    srv->now = cg_monotonic_now();
    double soon = srv->now + CG_SHUTDOWN_FIRST_REQUEST;
    for (cg_conn *c = srv->conns; c; c = c->next)
        cg_conn_shutdown(c, soon);
}

/* Cancels every task of the list, then runs the loop until they are done or
 * `timeout` seconds passed: asyncio.wait(tasks, timeout=timeout). */
static void cancel_and_wait(cg_server *srv, PyObject *tasks, double timeout)
{
    cg_state *st = srv->st;
    if (PyList_GET_SIZE(tasks) == 0)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tasks); i++) {
        PyObject *r = PyObject_CallMethodNoArgs(PyList_GET_ITEM(tasks, i), st->s_cancel);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyObject *wait = PyObject_GetAttrString(st->asyncio, "wait");
    PyObject *args = PyTuple_Pack(1, tasks);
    PyObject *kw = Py_BuildValue("{s:d}", "timeout", timeout);
    PyObject *w = wait && args && kw ? PyObject_Call(wait, args, kw) : NULL;
    PyObject *r = w ? cg_server_run(srv, w) : NULL;
    if (!r)
        cg_log_exception(&st->log, "Error while waiting for cancelled tasks\n");
    Py_XDECREF(r);
    Py_XDECREF(w);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(wait);
    PyErr_Clear();
}

static void abort_everything(cg_server *srv)
{
    for (cg_conn *c = srv->conns; c; c = c->next)
        cg_conn_drop(c);
    PyObject *tasks = PySequence_List(srv->tasks);
    if (!tasks) {
        PyErr_Clear();
        return;
    }
    cancel_and_wait(srv, tasks, 1.0); /* let the cancellations run, briefly */
    Py_DECREF(tasks);
}

/* Tasks still pending when the server stops (mostly the app's own background
 * tasks) are cancelled and given time to run their except/finally blocks, as
 * asyncio.run() does, rather than destroyed pending with the loop. Bounded:
 * by the graceful timeout when one is set (at least 1 s), else 10 s, and
 * barely after a forced exit. An exception other than the cancellation is
 * logged, as the loop would have logged it. */
static void cancel_remaining_tasks(cg_server *srv)
{
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;
    PyObject *all = PyObject_CallMethod(st->asyncio, "all_tasks", "O", srv->loop);
    PyObject *tasks = all ? PySequence_List(all) : NULL;
    Py_ssize_t pending = 0;

    Py_XDECREF(all);
    if (!tasks || PyList_GET_SIZE(tasks) == 0)
        goto out;
    double bound = srv->force_exit                        ? 0.1
                   : cfg->timeout_graceful_shutdown < 0   ? 10.0
                   : cfg->timeout_graceful_shutdown < 1.0 ? 1.0
                                                          : cfg->timeout_graceful_shutdown;
    cancel_and_wait(srv, tasks, bound);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tasks); i++) {
        PyObject *task = PyList_GET_ITEM(tasks, i);
        PyObject *done = PyObject_CallMethodNoArgs(task, st->s_done);
        PyObject *cancelled =
            done == Py_True ? PyObject_CallMethodNoArgs(task, st->s_cancelled) : NULL;
        PyObject *exc = cancelled == Py_False ? PyObject_CallMethod(task, "exception", NULL) : NULL;
        if (done == Py_False)
            pending++;
        if (exc && exc != Py_None) {
            PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc),
                          PyException_GetTraceback(exc));
            cg_log_exception(&st->log, "Exception in a task cancelled at shutdown\n");
        }
        Py_XDECREF(exc);
        Py_XDECREF(cancelled);
        Py_XDECREF(done);
        PyErr_Clear();
    }
    if (pending)
        cg_log(&st->log, CG_WARNING,
               "%zd task(s) still running %d ms after being cancelled at shutdown", pending,
               (int)(bound * 1000));
out:
    Py_XDECREF(tasks);
    PyErr_Clear();
}

static void shutdown_server(cg_server *srv, PyObject *listeners)
{
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;
    PyObject *r, *timer = NULL;

    cg_log(&st->log, CG_INFO, "Shutting down");
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(listeners); i++) {
        r = PyObject_CallMethodNoArgs(PyList_GET_ITEM(listeners, i), st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    close_idle_connections(srv);
    if ((srv->nconns || srv->ntasks) && !srv->force_exit) {
        Py_XSETREF(srv->drained_fut, cg_future_new(st, srv->loop));
        if (!srv->drained_fut) {
            PyErr_Clear();
            goto force;
        }
        if (srv->nconns)
            cg_log(&st->log, CG_INFO, "Waiting for connections to close. (CTRL+C to force quit)");
        if (cfg->timeout_graceful_shutdown >= 0) {
            PyObject *cb = PyCFunction_New(&timeout_def, (PyObject *)srv);
            if (cb) {
                timer = PyObject_CallMethod(srv->loop, "call_later", "dO",
                                            cfg->timeout_graceful_shutdown, cb);
                Py_DECREF(cb);
            }
            PyErr_Clear();
        }
        cg_server_check_drained(srv);
        r = cg_server_run(srv, srv->drained_fut);
        Py_XDECREF(r);
        PyErr_Clear();
        if (timer) {
            r = PyObject_CallMethodNoArgs(timer, st->s_cancel);
            Py_XDECREF(r);
            Py_DECREF(timer);
            PyErr_Clear();
        }
    }
force:
    if (srv->nconns || srv->ntasks) {
        if (!srv->force_exit)
            cg_log(&st->log, CG_ERROR,
                   "Cancel %zu running task(s), timeout graceful shutdown exceeded", srv->ntasks);
        abort_everything(srv);
    }
}

/* ---- entry -------------------------------------------------------------- */

static void log_running(cg_state *st, const cg_config *cfg, const char *url)
{
    if (cfg->fd >= 0)
        cg_log(&st->log, CG_INFO, "casgi running on socket %s (Press CTRL+C to quit)", url);
    else if (cfg->uds)
        cg_log(&st->log, CG_INFO, "casgi running on unix socket %s (Press CTRL+C to quit)",
               cfg->uds);
    else
        cg_log(&st->log, CG_INFO, "casgi running on %s (Press CTRL+C to quit)", url);
}

/* SIGINT and SIGTERM stop gracefully (a second one forces); under
 * gunicorn SIGQUIT stops at once, as gunicorn's workers do. */
static const int handled_signals[] = {SIGINT, SIGTERM, SIGQUIT};

/* 1 when SIGHUP reloads the TLS files in this process (see server_reload_tls). */
static int reloads_tls_on_hup(const cg_server *srv)
{
    return srv->tls && srv->ctl_fd < 0 && !srv->host_mode;
}

/* --ssl-*: the TLS context, loaded before serving (a file that does not load
 * is one line and exit 3). The workers of one supervisor share the
 * session-ticket secret it passes them, so a client resumes on any worker. */
static int server_tls_setup(cg_server *srv)
{
    srv->tls = cg_config_tls_load(srv->cfg, &srv->st->log);
    if (!srv->tls)
        return -1;
    const char *hex = getenv(CG_TLS_TICKET_ENV);
    unsigned char key[64];
    size_t n = 0;
    while (hex && n < sizeof(key) && isxdigit((unsigned char)hex[2 * n]) &&
           isxdigit((unsigned char)hex[2 * n + 1])) {
        char pair[3] = {hex[2 * n], hex[2 * n + 1], 0};
        key[n++] = (unsigned char)strtoul(pair, NULL, 16);
    }
    if (hex) {
        cg_environ_remove(CG_TLS_TICKET_ENV); /* not for the app's eyes */
        if (cg_tls_ctx_set_ticket_keys(srv->tls, key, n) < 0)
            cg_log(&srv->st->log, CG_WARNING,
                   "TLS: the supervisor's session-ticket secret was not usable; sessions resume "
                   "on this worker only");
    }
    return 0;
}

static int add_signal_handlers(cg_server *srv, PyObject *handler, int nsigs)
{
    const int *sigs = handled_signals;
    for (int i = 0; i < nsigs; i++) {
        PyObject *r =
            PyObject_CallMethod(srv->loop, "add_signal_handler", "iOi", sigs[i], handler, sigs[i]);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Listening servers for every socket: loop.create_server(factory, sock=s). */
static PyObject *start_listeners(cg_server *srv, PyObject *socks)
{
    PyObject *listeners = PyList_New(0);
    PyObject *meth = PyObject_GetAttrString(srv->loop, "create_server");
    if (!listeners || !meth)
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(socks); i++) {
        PyObject *kw = Py_BuildValue("{s:O,s:l}", "sock", PyList_GET_ITEM(socks, i), "backlog",
                                     srv->cfg->backlog);
        PyObject *args = kw ? PyTuple_Pack(1, (PyObject *)srv) : NULL;
        PyObject *coro = args ? PyObject_Call(meth, args, kw) : NULL;
        PyObject *listener = coro ? cg_server_run(srv, coro) : NULL;
        Py_XDECREF(coro);
        Py_XDECREF(args);
        Py_XDECREF(kw);
        if (i == 0 && listener) {
            srv->listen_fd = (int)PyObject_AsFileDescriptor(PyList_GET_ITEM(socks, 0));
            PyErr_Clear();
        }
        if (!listener || PyList_Append(listeners, listener) < 0) {
            Py_XDECREF(listener);
            goto fail;
        }
        Py_DECREF(listener);
    }
    Py_DECREF(meth);
    return listeners;
fail:
    Py_XDECREF(meth);
    Py_XDECREF(listeners);
    return NULL;
}

int cg_serve(PyObject *module, cg_config *cfg, PyObject *app_obj, const cg_host *host)
{
    cg_state *st = cg_get_state(module);
    cg_server *srv = NULL;
    PyObject *app = NULL, *sock = NULL, *listener = NULL, *handler = NULL, *r;
    PyObject *lifespan = NULL, *socks = NULL;
    PyObject *pending_t = NULL, *pending_v = NULL, *pending_tb = NULL;
    sigset_t old_mask;
    int mask_saved = 0;
    char url[300];
    int status = 3;

    if ((host ? cg_log_attach(&st->log, cfg) : cg_log_setup(&st->log, cfg)) < 0)
        return 3;
    if (!host && cg_standby_wait(st, cfg) < 0)
        return 3;
    if (cg_config_load_env_file(cfg) < 0)
        return 3;
    app = app_obj ? cg_app_prepare(st, app_obj, cfg) : cg_app_load(st, cfg);
    if (!app)
        return 3;
    srv = server_new(module, st, cfg);
    if (!srv)
        goto error;
    srv->app = app;
    app = NULL;
    srv->host_mode = host != NULL;
    if (build_head_lines(srv) < 0)
        goto error;
    if (cfg->ssl_certfile && server_tls_setup(srv) < 0)
        goto error;
    srv->loop = new_loop(st, cfg);
    if (!srv->loop)
        goto error;
    srv->stop_fut = cg_future_new(st, srv->loop);
    if (!srv->stop_fut)
        goto error;
    /* Signals are handled from here on: one arriving during startup stops
     * the server right after it. */
    handler = PyCFunction_New(&signal_def, (PyObject *)srv);
    if (!handler || add_signal_handlers(srv, handler, host ? 3 : 2) < 0)
        goto error;
    if (reloads_tls_on_hup(srv)) {
        r = PyObject_CallMethod(srv->loop, "add_signal_handler", "iOi", SIGHUP, handler, SIGHUP);
        if (!r)
            goto error;
        Py_DECREF(r);
    }
    cg_block_handled_signals(&old_mask);
    mask_saved = 1;
    if (host) {
        srv->notify = host->notify ? Py_NewRef(host->notify) : NULL;
        socks = Py_NewRef(host->sockets);
        snprintf(url, sizeof(url), "%zd socket(s) of the host", PyList_GET_SIZE(socks));
    } else {
        sock = open_listener(st, cfg, url, sizeof(url));
        if (!sock)
            goto done;
        socks = PyList_New(1);
        if (!socks || guard_accept(srv, sock) < 0)
            goto error;
        PyList_SET_ITEM(socks, 0, Py_NewRef(sock));
        if (cg_meter_start(srv) < 0)
            goto done;
    }
    cg_log(&st->log, CG_INFO, "Started server process [%d]", (int)getpid());

    if (cg_lifespan_startup(srv, &lifespan) < 0)
        goto done;

    if (srv->notify) {
        /* The host watches for a stuck worker from its first heartbeat on:
         * send one before any request can block the loop. */
        r = PyObject_CallNoArgs(srv->notify);
        if (!r)
            goto error;
        Py_DECREF(r);
    }
    snprintf(srv->url, sizeof(srv->url), "%s", url);
    listener = start_listeners(srv, socks);
    if (!listener)
        goto error;
    asyncio_filter(srv, 1);
    if (cg_worker_start(srv) < 0)
        goto error;
    {
        /* "running" (or, under a supervisor, ready) is said from inside the loop. */
        PyObject *cb = PyCFunction_New(&started_def, (PyObject *)srv);
        r = cb ? PyObject_CallMethodOneArg(srv->loop, st->s_call_soon, cb) : NULL;
        Py_XDECREF(cb);
        if (!r)
            goto error;
        Py_DECREF(r);
    }
    if (arm_ticker(srv) < 0)
        goto error;
    if (!srv->should_exit) {
        r = cg_server_run(srv, srv->stop_fut);
        if (!r)
            goto error;
        Py_DECREF(r);
    }
    shutdown_server(srv, listener);
    if (srv->ticker) {
        r = PyObject_CallMethodNoArgs(srv->ticker, st->s_cancel);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    status = cg_lifespan_shutdown(srv, lifespan) < 0 ? 3 : 0;
    goto done;

error:
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        /* Raised in the loop by a host's signal handler: it decides. */
        PyErr_Fetch(&pending_t, &pending_v, &pending_tb);
    } else if (PyErr_Occurred()) {
        cg_log_exception(&st->log, "Error: the server failed");
    }
    status = 3;
done:
    if (srv && srv->loop) {
        for (int i = 0; i < (host ? 3 : 2); i++) {
            r = PyObject_CallMethod(srv->loop, "remove_signal_handler", "i", handled_signals[i]);
            Py_XDECREF(r);
        }
        if (reloads_tls_on_hup(srv)) {
            r = PyObject_CallMethod(srv->loop, "remove_signal_handler", "i", SIGHUP);
            Py_XDECREF(r);
        }
        if (mask_saved)
            pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        PyErr_Clear();
        cancel_remaining_tasks(srv);
        r = PyObject_CallMethod(srv->loop, "shutdown_asyncgens", NULL);
        if (r) {
            PyObject *r2 = cg_server_run(srv, r);
            Py_XDECREF(r2);
            Py_DECREF(r);
        }
        PyErr_Clear();
        r = PyObject_CallMethodNoArgs(srv->loop, st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    cg_log_flush(&st->log);
    if (srv && srv->loop && status == 0)
        cg_log(&st->log, CG_INFO, "Finished server process [%d]", (int)getpid());
    Py_XDECREF(lifespan);
    Py_XDECREF(handler);
    Py_XDECREF(listener);
    if (sock) {
        r = PyObject_CallMethodNoArgs(sock, st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    Py_XDECREF(sock);
    Py_XDECREF(socks);
    Py_XDECREF(app);
    if (srv) {
        /* A loop stopped before its flush ran: write what is held, drop the refs. */
        cg_server_flush_held(srv);
        PyErr_Clear();
        asyncio_filter(srv, 0);
        /* Break the server's reference cycles (bound callables, futures). */
        Py_CLEAR(srv->tick_cb);
        Py_CLEAR(srv->flush_cb);
        Py_CLEAR(srv->notify);
        Py_CLEAR(srv->ticker);
        Py_CLEAR(srv->stop_fut);
        Py_CLEAR(srv->drained_fut);
        Py_CLEAR(srv->loop);
        Py_DECREF(srv);
    }
    if (pending_t) {
        PyErr_Restore(pending_t, pending_v, pending_tb);
        return -1;
    }
    return status;
}

/* ---- type --------------------------------------------------------------- */

static int server_traverse(cg_server *srv, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(srv));
    Py_VISIT(srv->module);
    Py_VISIT(srv->loop);
    Py_VISIT(srv->app);
    Py_VISIT(srv->state);
    Py_VISIT(srv->tasks);
    Py_VISIT(srv->context);
    Py_VISIT(srv->fatal);
    Py_VISIT(srv->scope_templates[0]);
    Py_VISIT(srv->scope_templates[1]);
    Py_VISIT(srv->stop_fut);
    Py_VISIT(srv->drained_fut);
    Py_VISIT(srv->ticker);
    Py_VISIT(srv->tick_cb);
    Py_VISIT(srv->flush_cb);
    Py_VISIT(srv->notify);
    Py_VISIT(srv->root_path);
    Py_VISIT(srv->root_path_b);
    Py_VISIT(srv->last_client);
    Py_VISIT(srv->last_sockname);
    Py_VISIT(srv->base_accept);
    Py_VISIT(srv->log_filter);
    return 0;
}

static int server_clear(cg_server *srv)
{
    Py_CLEAR(srv->loop);
    Py_CLEAR(srv->app);
    Py_CLEAR(srv->state);
    Py_CLEAR(srv->tasks);
    Py_CLEAR(srv->context);
    Py_CLEAR(srv->fatal);
    Py_CLEAR(srv->scope_templates[0]);
    Py_CLEAR(srv->scope_templates[1]);
    Py_CLEAR(srv->stop_fut);
    Py_CLEAR(srv->drained_fut);
    Py_CLEAR(srv->ticker);
    Py_CLEAR(srv->tick_cb);
    Py_CLEAR(srv->flush_cb);
    Py_CLEAR(srv->notify);
    Py_CLEAR(srv->root_path);
    Py_CLEAR(srv->root_path_b);
    Py_CLEAR(srv->last_client);
    Py_CLEAR(srv->last_sockname);
    Py_CLEAR(srv->base_accept);
    Py_CLEAR(srv->log_filter);
    return 0;
}

static void server_dealloc(cg_server *srv)
{
    PyTypeObject *tp = Py_TYPE(srv);
    PyObject_GC_UnTrack(srv);
    server_clear(srv);
    Py_CLEAR(srv->module);
    PyMem_Free(srv->hdrs);
    if (srv->ctl_fd >= 0)
        close(srv->ctl_fd);
    if (srv->alive_fd >= 0)
        close(srv->alive_fd);
    cg_buf_free(&srv->head_lines);
    cg_buf_free(&srv->spare_in);
    cg_buf_free(&srv->tls_scratch);
    cg_buf_free(&srv->h2_scratch);
    Py_CLEAR(srv->tls_cert);
    cg_tls_ctx_free(srv->tls);
    cg_proxy_trust_free(&srv->trust);
    cg_meter_free(srv); /* no connection is left to count */
    tp->tp_free(srv);
    Py_DECREF(tp);
}

static PyType_Slot server_slots[] = {
    {Py_tp_call, server_call},
    {Py_tp_traverse, server_traverse},
    {Py_tp_clear, server_clear},
    {Py_tp_dealloc, server_dealloc},
    {0, NULL},
};

static PyType_Spec server_spec = {
    .name = "casgi._casgi.Server",
    .basicsize = sizeof(cg_server),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = server_slots,
};

int cg_server_types_init(PyObject *module, cg_state *st)
{
    st->ServerType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &server_spec, NULL);
    return st->ServerType ? 0 : -1;
}
