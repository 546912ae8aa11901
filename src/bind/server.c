/* The server's lifecycle: choose the loop, bind, run lifespan startup, serve
 * until a signal, --limit-max-requests or request_exit(), then shut down
 * gracefully: stop accepting, close idle connections, let in-flight requests
 * finish within --timeout-graceful-shutdown, run lifespan shutdown last.
 *
 * The sequence is a chain of C steps, each awaiting a future that C code
 * completes (see "the serve sequence"); no Python coroutine is involved. It
 * runs the same on a loop of its own (casgi.run(), the command line, workers,
 * Server.run()) and in a caller's running loop (Server.serve()). One ticker per server refreshes
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
    /* From the loop itself: a stuck loop stops the pings. */
    if (srv->watchdog > 0 && now >= srv->wd_next) {
        srv->wd_next = now + srv->watchdog / 2;
        (void)cg_sd_notify_send(&srv->sd, "WATCHDOG=1");
    }
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

/* READY=1 with the address served. */
static void sd_ready(cg_server *srv)
{
    char msg[400];
    if (srv->sd.fd < 0)
        return;
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=Serving on %s", srv->url);
    (void)cg_sd_notify_send(&srv->sd, msg);
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

/* A stop as SIGTERM (force = 0) or a second SIGINT (force = 1) asks for it. */
static void server_finish(cg_server *srv, int status);

static void server_exit(cg_server *srv, int force)
{
    if (force) {
        srv->should_exit = 1;
        srv->force_exit = 1;
        cg_future_wake(srv->st, srv->stop_fut);
        cg_future_wake(srv->st, srv->drained_fut);
        if (srv->phase == CG_SV_STARTUP || srv->phase == CG_SV_LIFESPAN_DOWN) {
            /* Not waiting for the app's lifespan either (an app whose startup
             * or shutdown hangs would hold a forced stop forever). */
            cg_log(&srv->st->log, CG_WARNING,
                   "Forced stop: the application's lifespan %s is not awaited",
                   srv->phase == CG_SV_STARTUP ? "startup" : "shutdown");
            cg_lifespan_abandon(srv, srv->lifespan);
            server_finish(srv, 0);
        }
    } else {
        cg_server_request_exit(srv);
    }
}

static int handles_hup(const cg_server *srv);

static void server_on_signal(cg_server *srv, int sig)
{
    if (sig == SIGHUP) {
        if (!handles_hup(srv) || srv->should_exit)
            return;
        (void)cg_sd_notify_reloading(&srv->sd, "Reloading");
        if (srv->tls)
            server_reload_tls(srv);
        else
            cg_log(&srv->st->log, CG_INFO,
                   "Received SIGHUP; nothing to reload in a single process (--workers restarts "
                   "workers one by one on SIGHUP)");
        sd_ready(srv);
        return;
    }
    /* A second SIGINT forces (uvicorn's rule: SIGINT while stopping), and in
     * a process of its own so does a repeated SIGTERM. Under a supervisor
     * (casgi's or gunicorn's) only a second SIGINT does: a Ctrl-C to the
     * group brings a worker the SIGINT and the SIGTERM its supervisor
     * forwards, in either order, and a TERM sent to the whole group
     * (systemd's default KillMode) comes with the forwarded one; the
     * supervisor decides when to force. */
    int supervised = srv->ctl_fd >= 0 || srv->host_mode;
    int repeated =
        srv->should_exit && (sig == SIGINT ? !supervised || srv->got_sigint
                                           : sig == SIGTERM && srv->got_sigterm && !supervised);
    if (sig == SIGTERM)
        srv->got_sigterm = 1;
    else if (sig == SIGINT)
        srv->got_sigint = 1;
    server_exit(srv, sig == SIGQUIT || repeated);
}

/* The loop's handler for every handled signal: each server serving in the
 * main thread hears it. SIGINT and SIGTERM are remembered for the embedding
 * program (Server.serve() raises them again once the previous handlers are
 * back, as uvicorn does). */
static PyObject *module_on_signal(PyObject *module, PyObject *signum)
{
    cg_state *st = cg_get_state(module);
    long sig = PyLong_AsLong(signum);
    if (sig == -1 && PyErr_Occurred())
        return NULL;
    if ((sig == SIGINT || sig == SIGTERM) && st->sig_captured &&
        PyList_Append(st->sig_captured, signum) < 0)
        return NULL;
    PyObject *servers = st->sig_servers ? PySequence_List(st->sig_servers) : NULL;
    for (Py_ssize_t i = 0; servers && i < PyList_GET_SIZE(servers); i++)
        server_on_signal((cg_server *)PyList_GET_ITEM(servers, i), (int)sig);
    Py_XDECREF(servers);
    Py_RETURN_NONE;
}

static PyMethodDef signal_def = {"on_signal", module_on_signal, METH_O, NULL};

/* 1 in the main thread of the main interpreter, the only place Python lets
 * signal handlers be set. */
static int in_main_thread(void)
{
    if (PyInterpreterState_Get() != PyInterpreterState_Main())
        return 0;
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = main ? PyObject_GetAttrString(main, "ident") : NULL;
    int r =
        ident && PyLong_Check(ident) && PyLong_AsUnsignedLong(ident) == PyThread_get_thread_ident();
    Py_XDECREF(ident);
    Py_XDECREF(main);
    Py_XDECREF(threading);
    PyErr_Clear();
    return r;
}

/* SIGINT and SIGTERM stop gracefully (a second one forces); under
 * gunicorn SIGQUIT stops at once, as gunicorn's workers do. */
static const int handled_signals[] = {SIGINT, SIGTERM, SIGQUIT};

/* Takes the loop's handlers off the signals in st->sig_saved and puts their
 * previous Python handlers back; forgets the saved ones. Never raises. */
static void restore_handlers(cg_state *st)
{
    PyObject *key, *old, *r;
    Py_ssize_t pos = 0;
    PyObject *signal_mod = PyImport_ImportModule("signal");
    while (signal_mod && st->sig_loop && PyDict_Next(st->sig_saved, &pos, &key, &old)) {
        r = PyObject_CallMethod(st->sig_loop, "remove_signal_handler", "O", key);
        Py_XDECREF(r);
        /* getsignal() gives None for a handler not set from Python. */
        r = old != Py_None ? PyObject_CallMethod(signal_mod, "signal", "OO", key, old) : NULL;
        Py_XDECREF(r);
        PyErr_Clear();
    }
    Py_XDECREF(signal_mod);
    PyErr_Clear();
    Py_CLEAR(st->sig_saved);
    Py_CLEAR(st->sig_loop);
}

/* Adds srv to the servers hearing the handled signals. The first one sets
 * the loop's handlers (SIGINT, SIGTERM; SIGQUIT under a host; SIGHUP when it
 * reloads TLS), keeping each signal's previous Python handler to put back
 * when the last one leaves. Returns 0 or -1. */
static int signals_on(cg_server *srv)
{
    cg_state *st = srv->st;
    PyObject *signal_mod = NULL, *handler = NULL, *r;
    int rc = -1;

    if (!st->sig_servers && !(st->sig_servers = PyList_New(0)))
        return -1;
    if (PyList_GET_SIZE(st->sig_servers) == 0) {
        int sigs[4], n = 0;
        for (int i = 0; i < (srv->host_mode ? 3 : 2); i++)
            sigs[n++] = handled_signals[i];
        if (handles_hup(srv))
            sigs[n++] = SIGHUP;
        signal_mod = PyImport_ImportModule("signal");
        handler = signal_mod ? PyCFunction_New(&signal_def, srv->module) : NULL;
        Py_XSETREF(st->sig_saved, PyDict_New());
        Py_XSETREF(st->sig_captured, PyList_New(0));
        if (!handler || !st->sig_saved || !st->sig_captured)
            goto done;
        Py_XSETREF(st->sig_loop, Py_NewRef(srv->loop));
        for (int i = 0; i < n; i++) {
            PyObject *num = PyLong_FromLong(sigs[i]);
            PyObject *old = num ? PyObject_CallMethod(signal_mod, "getsignal", "O", num) : NULL;
            int set = old ? PyDict_SetItem(st->sig_saved, num, old) : -1;
            Py_XDECREF(old);
            r = set == 0
                    ? PyObject_CallMethod(srv->loop, "add_signal_handler", "OOO", num, handler, num)
                    : NULL;
            Py_XDECREF(num);
            if (!r)
                goto done;
            Py_DECREF(r);
        }
    }
    if (PyList_Append(st->sig_servers, (PyObject *)srv) < 0)
        goto done;
    srv->signals = 1;
    rc = 0;
done:
    if (rc < 0 && PyList_GET_SIZE(st->sig_servers) == 0 && st->sig_saved) {
        /* The first server failed halfway: no handler of it stays behind. */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        restore_handlers(st);
        Py_CLEAR(st->sig_captured);
        PyErr_Restore(t, v, tb);
    }
    Py_XDECREF(handler);
    Py_XDECREF(signal_mod);
    return rc;
}

/* Removes srv from the servers hearing signals; the last one takes the
 * loop's handlers away, puts the previous ones back, and takes the signals
 * received meanwhile (srv->captured). Never raises. */
static void signals_off(cg_server *srv)
{
    cg_state *st = srv->st;
    PyObject *t, *v, *tb;

    if (!srv->signals)
        return;
    srv->signals = 0;
    PyErr_Fetch(&t, &v, &tb);
    PyObject *r = PyObject_CallMethod(st->sig_servers, "remove", "O", (PyObject *)srv);
    Py_XDECREF(r);
    if (PyList_GET_SIZE(st->sig_servers) == 0 && st->sig_saved) {
        restore_handlers(st);
        Py_XSETREF(srv->captured, st->sig_captured);
        st->sig_captured = NULL;
    }
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
}

static PyObject *server_graceful_timeout(cg_server *srv, PyObject *unused)
{
    (void)unused;
    cg_future_wake(srv->st, srv->drained_fut);
    Py_RETURN_NONE;
}

static void log_running(cg_server *srv);

/* Runs inside the loop, so anything that reacts to the "running" line (a
 * signal, the supervisor) finds the signal handlers live: uvloop drops a
 * signal that arrives while no loop runs. */
static PyObject *server_started(cg_server *srv, PyObject *unused)
{
    (void)unused;
    if (srv->phase == CG_SV_DONE)
        Py_RETURN_NONE; /* stopped before it got here */
    srv->started = 1;
    if (srv->ctl_fd < 0 && !srv->host_mode) {
        log_running(srv); /* a supervisor says it itself */
        sd_ready(srv);
    } else if (srv->ctl_fd >= 0)
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

/* A non-blocking socket.socket for the listening fd (owned by it from now
 * on), or NULL after logging. */
static PyObject *listener_socket(cg_state *st, int fd)
{
    PyObject *socket_mod = PyImport_ImportModule("socket");
    if (!socket_mod)
        return NULL;
    PyObject *sock = PyObject_CallMethod(socket_mod, "socket", "iiii", -1, -1, -1, fd);
    Py_DECREF(socket_mod);
    if (!sock) {
        cg_log_exception(&st->log, "Error: cannot use the listening socket");
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(sock, "setblocking", "O", Py_False);
    Py_XDECREF(r);
    PyErr_Clear();
    return sock;
}

/* The sockets systemd passed (socket activation), as a list of socket.socket
 * with their addresses in url ("a, b"); NULL after logging, or with *none
 * set when there are none. */
static PyObject *activated_listeners(cg_server *srv, char *url, size_t urllen, int *none)
{
    cg_state *st = srv->st;
    char err[256], *names = NULL;
    int n = cg_config_activated_fds(&names, err, sizeof(err));
    PyMem_Free(names);
    *none = n == 0;
    if (n <= 0) {
        if (n < 0)
            cg_log(&st->log, CG_ERROR, "%s", err);
        return NULL;
    }
    PyObject *socks = PyList_New(0);
    url[0] = '\0';
    for (int i = 0; i < n && socks; i++) {
        int fd = CG_SD_LISTEN_FDS_START + i;
        size_t used = strlen(url);
        if (cg_sock_url(fd, srv->cfg->ssl_certfile ? "https" : "http", err, sizeof(err)) < 0)
            snprintf(err, sizeof(err), "fd %d", fd);
        snprintf(url + used, urllen - used, "%s%s", used ? ", " : "", err);
        PyObject *sock = listener_socket(st, fd);
        if (!sock || PyList_Append(socks, sock) < 0) {
            if (!sock)
                close(fd);
            Py_CLEAR(socks);
        }
        Py_XDECREF(sock);
    }
    if (socks && srv->ctl_fd < 0) /* a supervisor says it itself */
        cg_log(&st->log, CG_INFO, "Serving %d socket(s) passed by systemd (socket activation)", n);
    srv->activated = 1;
    return socks;
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
    PyObject *sock = listener_socket(st, fd);
    if (!sock && cfg->fd < 0)
        close(fd);
    return sock;
}

/* The listening sockets: those systemd passed, else the one cfg names
 * (bound here, or --fd). A list of socket.socket, or NULL after logging. */
static PyObject *open_listeners(cg_server *srv, char *url, size_t urllen)
{
    int none;
    PyObject *socks = activated_listeners(srv, url, urllen, &none);
    if (socks || !none)
        return socks;
    PyObject *sock = open_listener(srv->st, srv->cfg, url, urllen);
    if (!sock)
        return NULL;
    socks = PyList_New(1);
    if (!socks) {
        PyObject *r = PyObject_CallMethodNoArgs(sock, srv->st->s_close);
        Py_XDECREF(r);
        Py_DECREF(sock);
        return NULL;
    }
    PyList_SET_ITEM(socks, 0, sock);
    return socks;
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

/* --forwarded-allow-ips, parsed once (the option layer has validated it):
 * the peers believed for proxy headers, and the only ones allowed to send a
 * PROXY protocol header. */
static int parse_trusted(cg_server *srv)
{
    cg_slice bad;
    if (!srv->cfg->proxy_headers && !srv->cfg->proxy_protocol)
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
    srv->sd.fd = -1;
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

/* Cancels every task of the list and returns a task that completes when they
 * are done or `timeout` seconds passed (asyncio.wait(tasks, timeout=...)), or
 * NULL (none, or after logging a failure). */
static PyObject *cancel_tasks(cg_server *srv, PyObject *tasks, double timeout)
{
    cg_state *st = srv->st;
    if (PyList_GET_SIZE(tasks) == 0)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tasks); i++) {
        PyObject *r = PyObject_CallMethodNoArgs(PyList_GET_ITEM(tasks, i), st->s_cancel);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyObject *wait = PyObject_GetAttrString(st->asyncio, "wait");
    PyObject *args = PyTuple_Pack(1, tasks);
    PyObject *kw = Py_BuildValue("{s:d}", "timeout", timeout);
    PyObject *w = wait && args && kw ? PyObject_Call(wait, args, kw) : NULL;
    PyObject *task = w ? PyObject_CallMethodOneArg(srv->loop, st->s_create_task, w) : NULL;
    if (!task)
        cg_log_exception(&st->log, "Error while waiting for cancelled tasks\n");
    Py_XDECREF(w);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(wait);
    PyErr_Clear();
    return task;
}

/* Drops every connection and cancels the app tasks; the future to await
 * while their cancellations run (briefly), or NULL. */
static PyObject *abort_everything(cg_server *srv)
{
    for (cg_conn *c = srv->conns; c; c = c->next)
        cg_conn_drop(c);
    PyObject *tasks = PySequence_List(srv->tasks);
    if (!tasks) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *w = cancel_tasks(srv, tasks, 1.0);
    Py_DECREF(tasks);
    return w;
}

/* Tasks still pending on a loop of the server's own when it stops (mostly the
 * app's own background tasks) are cancelled and given time to run their
 * except/finally blocks, as asyncio.run() does, rather than destroyed pending
 * with the loop. Bounded: by the graceful timeout when one is set (at least
 * 1 s), else 10 s, and barely after a forced exit. An exception other than
 * the cancellation is logged, as the loop would have logged it. */
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
    PyObject *w = cancel_tasks(srv, tasks, bound);
    PyObject *r = w ? cg_server_run(srv, w) : NULL;
    if (w && !r)
        cg_log_exception(&st->log, "Error while waiting for cancelled tasks\n");
    Py_XDECREF(r);
    Py_XDECREF(w);
    PyErr_Clear();
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

/* ---- entry -------------------------------------------------------------- */

static void log_running(cg_server *srv)
{
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;
    const char *url = srv->url;
    if (srv->activated)
        cg_log(&st->log, CG_INFO, "casgi running on %s (Press CTRL+C to quit)", url);
    else if (cfg->fd >= 0)
        cg_log(&st->log, CG_INFO, "casgi running on socket %s (Press CTRL+C to quit)", url);
    else if (cfg->uds)
        cg_log(&st->log, CG_INFO, "casgi running on unix socket %s (Press CTRL+C to quit)",
               cfg->uds);
    else
        cg_log(&st->log, CG_INFO, "casgi running on %s (Press CTRL+C to quit)", url);
}

/* 1 when SIGHUP is handled in this process: it reloads the TLS files (see
 * server_reload_tls), and under systemd (notifications on) says RELOADING=1
 * and READY=1, as ExecReload=kill -HUP $MAINPID expects. */
static int handles_hup(const cg_server *srv)
{
    return (srv->tls || srv->sd.fd >= 0) && srv->ctl_fd < 0 && !srv->host_mode;
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

/* Listening servers for every socket: one task per loop.create_server(factory,
 * sock=s), gathered into one future whose result is their list (a failed
 * one's exception in its place). */
static PyObject *start_listeners(cg_server *srv)
{
    cg_state *st = srv->st;
    PyObject *meth = PyObject_GetAttrString(srv->loop, "create_server");
    PyObject *tasks = PyList_New(0), *fut = NULL;
    if (!meth || !tasks)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(srv->socks); i++) {
        PyObject *kw = Py_BuildValue("{s:O,s:l}", "sock", PyList_GET_ITEM(srv->socks, i), "backlog",
                                     srv->cfg->backlog);
        PyObject *args = kw ? PyTuple_Pack(1, (PyObject *)srv) : NULL;
        PyObject *coro = args ? PyObject_Call(meth, args, kw) : NULL;
        PyObject *task =
            coro ? PyObject_CallMethodOneArg(srv->loop, st->s_create_task, coro) : NULL;
        int rc = task ? PyList_Append(tasks, task) : -1;
        Py_XDECREF(task);
        Py_XDECREF(coro);
        Py_XDECREF(args);
        Py_XDECREF(kw);
        if (rc < 0)
            goto done;
    }
    PyObject *gather = PyObject_GetAttrString(st->asyncio, "gather");
    PyObject *targs = gather ? PySequence_Tuple(tasks) : NULL;
    /* Every outcome, so that the ones that started are closed when another failed. */
    PyObject *kw = targs ? Py_BuildValue("{s:O}", "return_exceptions", Py_True) : NULL;
    fut = kw ? PyObject_Call(gather, targs, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(targs);
    Py_XDECREF(gather);
done:
    Py_XDECREF(tasks);
    Py_XDECREF(meth);
    return fut;
}

/* ---- the serve sequence --------------------------------------------------
 * One piece of code serves whoever owns the loop. From cg_server_start on it
 * is a chain of steps, each ending by awaiting a future (server_wait) whose
 * completion calls the next one: lifespan startup, the listeners, the stop
 * request, draining, aborting what is left, lifespan shutdown. The last step
 * completes srv->done_fut with the status. casgi.run(), the command line, a
 * worker and Server.run() make a loop and run it until done_fut completes
 * (serve_own_loop); Server.serve() awaits done_fut in the caller's loop. */

static int server_step(cg_server *srv, PyObject *fut);

static PyObject *server_resume(cg_server *srv, PyObject *fut);
static PyMethodDef resume_def = {"resume", (PyCFunction)server_resume, METH_O, NULL};

/* Continues at `phase` once `fut` (stolen) is done. 0, or -1 with an exception. */
static int server_wait(cg_server *srv, PyObject *fut, int phase)
{
    srv->phase = phase;
    Py_XSETREF(srv->wait_fut, fut);
    PyObject *r = PyObject_CallMethodOneArg(fut, srv->st->s_add_done_callback, srv->resume_cb);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static void cancel_handle(cg_state *st, PyObject **handle)
{
    if (*handle) {
        PyObject *r = PyObject_CallMethodNoArgs(*handle, st->s_cancel);
        Py_XDECREF(r);
        Py_CLEAR(*handle);
        PyErr_Clear();
    }
}

/* The end, however it came: the listeners closed, the signal handlers given
 * back, done_fut completed with `status`. Runs once; never raises. */
static void server_finish(cg_server *srv, int status)
{
    cg_state *st = srv->st;
    PyObject *t, *v, *tb, *r;

    if (srv->phase == CG_SV_DONE)
        return;
    PyErr_Fetch(&t, &v, &tb);
    srv->phase = CG_SV_DONE;
    srv->status = status;
    Py_CLEAR(srv->wait_fut);
    cancel_handle(st, &srv->ticker);
    cancel_handle(st, &srv->drain_timer);
    for (Py_ssize_t i = 0; srv->listeners && i < PyList_GET_SIZE(srv->listeners); i++) {
        r = PyObject_CallMethodNoArgs(PyList_GET_ITEM(srv->listeners, i), st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    for (Py_ssize_t i = 0; srv->own_socks && i < PyList_GET_SIZE(srv->own_socks); i++) {
        r = PyObject_CallMethodNoArgs(PyList_GET_ITEM(srv->own_socks, i), st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    srv->listen_fd = -1;
    signals_off(srv);
    asyncio_filter(srv, 0);
    /* A loop stopped before its flush ran: write what is held, drop the refs. */
    cg_server_flush_held(srv);
    PyErr_Clear();
    cg_log_flush(&st->log);
    if (!srv->owns_loop && status == 0)
        cg_log(&st->log, CG_INFO, "Finished server process [%d]", (int)getpid());
    if (srv->done_fut) {
        PyObject *done = PyObject_CallMethodNoArgs(srv->done_fut, st->s_done);
        PyObject *n = done == Py_False ? PyLong_FromLong(status) : NULL;
        r = n ? PyObject_CallMethodOneArg(srv->done_fut, st->s_set_result, n) : NULL;
        Py_XDECREF(r);
        Py_XDECREF(n);
        Py_XDECREF(done);
    }
    Py_CLEAR(srv->lifespan);
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
}

/* A step failed (an exception is set): logged, and the server stops with
 * status 3. A SystemExit or KeyboardInterrupt is raised again (the loop's
 * run ends with it, as it did from a task). */
static PyObject *server_failed(cg_server *srv)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        server_finish(srv, 3);
        return NULL;
    }
    cg_log_exception(&srv->st->log, "Error: the server failed");
    server_finish(srv, 3);
    Py_RETURN_NONE;
}

static PyObject *server_resume(cg_server *srv, PyObject *fut)
{
    if (fut != srv->wait_fut || srv->phase == CG_SV_DONE)
        Py_RETURN_NONE; /* abandoned */
    Py_INCREF(fut);
    Py_CLEAR(srv->wait_fut);
    int rc = server_step(srv, fut);
    Py_DECREF(fut);
    if (rc < 0)
        return server_failed(srv);
    Py_RETURN_NONE;
}

static int after_lifespan_shutdown(cg_server *srv)
{
    int status = cg_lifespan_shutdown_end(srv, srv->lifespan) < 0 ? 3 : 0;
    server_finish(srv, status);
    return 0;
}

static int begin_lifespan_shutdown(cg_server *srv)
{
    cancel_handle(srv->st, &srv->ticker);
    if (srv->force_exit) { /* as uvicorn: a forced stop skips lifespan shutdown */
        cg_lifespan_abandon(srv, srv->lifespan);
        server_finish(srv, 0);
        return 0;
    }
    PyObject *fut = cg_lifespan_shutdown_begin(srv, srv->lifespan);
    if (fut)
        return server_wait(srv, fut, CG_SV_LIFESPAN_DOWN);
    if (PyErr_Occurred()) { /* logged */
        PyErr_Clear();
        server_finish(srv, 3);
        return 0;
    }
    return after_lifespan_shutdown(srv);
}

static int after_drain(cg_server *srv)
{
    cancel_handle(srv->st, &srv->drain_timer);
    if (srv->nconns || srv->ntasks) {
        if (!srv->force_exit)
            cg_log(&srv->st->log, CG_ERROR,
                   "Cancel %zu running task(s), timeout graceful shutdown exceeded", srv->ntasks);
        PyObject *fut = abort_everything(srv);
        if (fut)
            return server_wait(srv, fut, CG_SV_ABORTING);
    }
    return begin_lifespan_shutdown(srv);
}

/* Stops accepting, then lets the loop turn once before draining: a connection
 * the loop accepted in the turn the stop came in has its connection_made
 * scheduled but not yet run, and would otherwise be neither counted nor
 * served (uvloop accepts in the same turn as it reads). */
static int begin_shutdown(cg_server *srv)
{
    cg_state *st = srv->st;

    cg_log(&st->log, CG_INFO, "Shutting down");
    (void)cg_sd_notify_send(&srv->sd, "STOPPING=1\nSTATUS=Stopping");
    for (Py_ssize_t i = 0; srv->listeners && i < PyList_GET_SIZE(srv->listeners); i++) {
        PyObject *r = PyObject_CallMethodNoArgs(PyList_GET_ITEM(srv->listeners, i), st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyObject *turn = cg_future_new(st, srv->loop);
    PyObject *set = turn ? PyObject_GetAttr(turn, st->s_set_result) : NULL;
    PyObject *r =
        set ? PyObject_CallMethodObjArgs(srv->loop, st->s_call_soon, set, Py_None, NULL) : NULL;
    Py_XDECREF(set);
    if (!r) {
        Py_XDECREF(turn);
        return -1;
    }
    Py_DECREF(r);
    return server_wait(srv, turn, CG_SV_CLOSING);
}

/* Closes idle connections, then waits for the others and the app tasks, up
 * to --timeout-graceful-shutdown. */
static int begin_drain(cg_server *srv)
{
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;

    close_idle_connections(srv);
    if (!(srv->nconns || srv->ntasks) || srv->force_exit)
        return after_drain(srv);
    Py_XSETREF(srv->drained_fut, cg_future_new(st, srv->loop));
    if (!srv->drained_fut) {
        PyErr_Clear();
        return after_drain(srv);
    }
    if (srv->nconns)
        cg_log(&st->log, CG_INFO, "Waiting for connections to close. (CTRL+C to force quit)");
    if (cfg->timeout_graceful_shutdown >= 0) {
        PyObject *cb = PyCFunction_New(&timeout_def, (PyObject *)srv);
        if (cb) {
            srv->drain_timer = PyObject_CallMethod(srv->loop, "call_later", "dO",
                                                   cfg->timeout_graceful_shutdown, cb);
            Py_DECREF(cb);
        }
        PyErr_Clear();
    }
    cg_server_check_drained(srv);
    return server_wait(srv, Py_NewRef(srv->drained_fut), CG_SV_DRAINING);
}

/* The listeners are up: serve until asked to stop. */
static int after_listen(cg_server *srv, PyObject *fut)
{
    cg_state *st = srv->st;
    PyObject *res = PyObject_CallMethod(fut, "result", NULL), *r;
    if (!res)
        return -1;
    Py_XSETREF(srv->listeners, PySequence_List(res));
    Py_DECREF(res);
    if (!srv->listeners)
        return -1;
    /* A socket that could not be served fails the start; the listeners that
     * did start are kept in the list only to be closed by server_finish. */
    PyObject *failed = NULL;
    for (Py_ssize_t i = PyList_GET_SIZE(srv->listeners) - 1; i >= 0; i--) {
        PyObject *item = PyList_GET_ITEM(srv->listeners, i);
        if (PyExceptionInstance_Check(item)) {
            Py_XSETREF(failed, Py_NewRef(item));
            if (PySequence_DelItem(srv->listeners, i) < 0) {
                Py_DECREF(failed);
                return -1;
            }
        }
    }
    if (failed) {
        PyErr_SetObject((PyObject *)Py_TYPE(failed), failed);
        Py_DECREF(failed);
        return -1;
    }
    srv->listen_fd = (int)PyObject_AsFileDescriptor(PyList_GET_ITEM(srv->socks, 0));
    PyErr_Clear();
    asyncio_filter(srv, 1);
    if (cg_worker_start(srv) < 0)
        return -1;
    /* "running" (or, under a supervisor, ready) is said from inside the loop. */
    PyObject *cb = PyCFunction_New(&started_def, (PyObject *)srv);
    r = cb ? PyObject_CallMethodOneArg(srv->loop, st->s_call_soon, cb) : NULL;
    Py_XDECREF(cb);
    if (!r)
        return -1;
    Py_DECREF(r);
    if (arm_ticker(srv) < 0)
        return -1;
    return server_wait(srv, Py_NewRef(srv->stop_fut), CG_SV_RUNNING);
}

static int after_startup(cg_server *srv)
{
    if (cg_lifespan_startup_end(srv, &srv->lifespan) < 0) {
        server_finish(srv, 3);
        return 0;
    }
    if (srv->notify) {
        /* The host watches for a stuck worker from its first heartbeat on:
         * send one before any request can block the loop. */
        PyObject *r = PyObject_CallNoArgs(srv->notify);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    PyObject *fut = start_listeners(srv);
    return fut ? server_wait(srv, fut, CG_SV_LISTEN) : -1;
}

static int server_step(cg_server *srv, PyObject *fut)
{
    switch (srv->phase) {
    case CG_SV_STARTUP:
        return after_startup(srv);
    case CG_SV_LISTEN:
        return after_listen(srv, fut);
    case CG_SV_RUNNING:
        return begin_shutdown(srv);
    case CG_SV_CLOSING:
        return begin_drain(srv);
    case CG_SV_DRAINING:
        return after_drain(srv);
    case CG_SV_ABORTING:
        return begin_lifespan_shutdown(srv);
    case CG_SV_LIFESPAN_DOWN:
        return after_lifespan_shutdown(srv);
    default:
        return 0;
    }
}

/* Begins serving on `loop` (running or not): `socks` a list of listening
 * sockets, or NULL to bind per the configuration; the signal handlers set
 * when `signals` and this is the main thread. Returns 0 with srv->done_fut
 * to await (a startup failure has completed it with 3 already, logged), or
 * -1 with an exception. */
static int server_start(cg_server *srv, PyObject *loop, PyObject *socks, int signals)
{
    cg_state *st = srv->st;
    const cg_config *cfg = srv->cfg;
    PyObject *wait = NULL;

    if (srv->phase != CG_SV_IDLE) {
        PyErr_SetString(PyExc_RuntimeError, "this server has already been started");
        return -1;
    }
    Py_XSETREF(srv->loop, Py_NewRef(loop));
    srv->thread_id = PyThread_get_thread_ident();
    srv->done_fut = cg_future_new(st, loop);
    srv->stop_fut = srv->done_fut ? cg_future_new(st, loop) : NULL;
    srv->resume_cb = PyCFunction_New(&resume_def, (PyObject *)srv);
    if (!srv->stop_fut || !srv->resume_cb)
        return -1;
    srv->phase = CG_SV_STARTUP;
    if (srv->should_exit)
        cg_future_wake(st, srv->stop_fut); /* asked before it started */
    /* Signals are handled from here on: one arriving during startup stops
     * the server right after it. */
    if (signals && in_main_thread()) {
        if (srv->owns_loop) {
            cg_block_handled_signals(&srv->old_mask);
            srv->mask_signals = 1;
        }
        if (signals_on(srv) < 0)
            goto fail;
    }
    if (socks) {
        if (!PyList_Check(socks) || PyList_GET_SIZE(socks) == 0) {
            PyErr_SetString(PyExc_TypeError, "sockets must be a non-empty list of sockets");
            goto fail;
        }
        srv->socks = Py_NewRef(socks);
        if (srv->host_mode) {
            snprintf(srv->url, sizeof(srv->url), "%zd socket(s) of the host",
                     PyList_GET_SIZE(socks));
        } else {
            int fd = PyObject_AsFileDescriptor(PyList_GET_ITEM(socks, 0));
            if (fd < 0)
                goto fail;
            if (cg_sock_url(fd, cfg->ssl_certfile ? "https" : "http", srv->url, sizeof(srv->url)) <
                0)
                snprintf(srv->url, sizeof(srv->url), "fd %d", fd);
        }
    } else {
        srv->own_socks = open_listeners(srv, srv->url, sizeof(srv->url));
        if (!srv->own_socks) {
            if (PyErr_Occurred())
                goto fail;
            server_finish(srv, 3); /* logged */
            return 0;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(srv->own_socks); i++)
            if (guard_accept(srv, PyList_GET_ITEM(srv->own_socks, i)) < 0)
                goto fail;
        srv->socks = Py_NewRef(srv->own_socks);
        if (cg_meter_start(srv) < 0) {
            server_finish(srv, 3); /* logged */
            return 0;
        }
    }
    cg_log(&st->log, CG_INFO, "Started server process [%d]", (int)getpid());
    if (cg_lifespan_startup_begin(srv, &srv->lifespan, &wait) < 0) {
        server_finish(srv, 3); /* logged */
        return 0;
    }
    if ((wait ? server_wait(srv, wait, CG_SV_STARTUP) : after_startup(srv)) < 0)
        goto fail;
    return 0;
fail:
    if (srv->phase != CG_SV_DONE) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        server_finish(srv, 3);
        PyErr_Restore(t, v, tb);
    }
    return -1;
}

/* Imports or prepares the app and makes the server for `cfg` (borrowed for
 * the server's life). NULL after logging a startup failure, or with a
 * SystemExit/KeyboardInterrupt set that must propagate. */
static cg_server *server_prepare(PyObject *module, const cg_config *cfg, PyObject *app_obj,
                                 const cg_host *host)
{
    cg_state *st = cg_get_state(module);
    cg_server *srv = NULL;
    PyObject *app;

    if ((host ? cg_log_attach(&st->log, cfg) : cg_log_setup(&st->log, cfg)) < 0)
        return NULL;
    if (!host && cg_standby_wait(st, cfg) < 0)
        return NULL;
    if (cg_config_load_env_file(cfg) < 0)
        return NULL;
    app = app_obj ? cg_app_prepare(st, app_obj, cfg) : cg_app_load(st, cfg);
    if (!app)
        return NULL;
    srv = server_new(module, st, cfg);
    if (!srv) {
        Py_DECREF(app);
        goto error;
    }
    srv->app = app;
    srv->host_mode = host != NULL;
    if (!host && srv->ctl_fd < 0) {
        /* Notifications, in a process of its own: READY=1 when serving,
         * RELOADING=1/READY=1 on SIGHUP, STOPPING=1, WATCHDOG=1 from the ticker. */
        char err[256];
        if (cg_config_sd_notify(&srv->sd, &srv->watchdog, err, sizeof(err)) < 0)
            cg_log(&st->log, CG_WARNING, "No systemd notifications: %s", err);
        if (srv->watchdog > 0 && srv->watchdog / 4 < srv->tick_interval)
            srv->tick_interval = srv->watchdog / 4 < 0.05 ? 0.05 : srv->watchdog / 4;
    }
    if (host && host->notify)
        srv->notify = Py_NewRef(host->notify);
    if (build_head_lines(srv) < 0)
        goto error;
    if (cfg->ssl_certfile && server_tls_setup(srv) < 0)
        goto error;
    return srv;
error:
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_SystemExit) &&
        !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        cg_log_exception(&st->log, "Error: the server failed");
    Py_XDECREF(srv);
    return NULL;
}

/* Breaks the server's reference cycles (bound callables, futures) once its
 * loop is closed. */
static void server_release(cg_server *srv)
{
    Py_CLEAR(srv->tick_cb);
    Py_CLEAR(srv->flush_cb);
    Py_CLEAR(srv->resume_cb);
    Py_CLEAR(srv->notify);
    Py_CLEAR(srv->ticker);
    Py_CLEAR(srv->stop_fut);
    Py_CLEAR(srv->drained_fut);
    Py_CLEAR(srv->listeners);
    Py_CLEAR(srv->loop);
}

/* Makes a loop per --loop and runs the serve sequence on it to the end, then
 * cancels the tasks left and closes the loop, as asyncio.run() does. Returns
 * the status, or -1 with a SystemExit/KeyboardInterrupt to propagate. */
static int serve_own_loop(cg_server *srv, PyObject *socks, int signals)
{
    cg_state *st = srv->st;
    PyObject *pending_t = NULL, *pending_v = NULL, *pending_tb = NULL, *r;
    PyObject *loop = new_loop(st, srv->cfg);
    int status = 3;

    if (!loop)
        goto error;
    srv->owns_loop = 1;
    if (server_start(srv, loop, socks, signals) < 0)
        goto error;
    r = cg_server_run(srv, srv->done_fut);
    if (!r)
        goto error;
    Py_DECREF(r);
    status = srv->status;
    goto done;
error:
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        /* Raised in the loop by a host's signal handler: it decides. */
        PyErr_Fetch(&pending_t, &pending_v, &pending_tb);
    } else if (PyErr_Occurred()) {
        cg_log_exception(&st->log, "Error: the server failed");
    }
    server_finish(srv, 3);
    status = 3;
done:
    if (loop) {
        PyErr_Clear();
        cancel_remaining_tasks(srv);
        r = PyObject_CallMethod(loop, "shutdown_asyncgens", NULL);
        if (r) {
            PyObject *r2 = cg_server_run(srv, r);
            Py_XDECREF(r2);
            Py_DECREF(r);
        }
        PyErr_Clear();
        r = PyObject_CallMethodNoArgs(loop, st->s_close);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    if (srv->mask_signals) {
        pthread_sigmask(SIG_SETMASK, &srv->old_mask, NULL);
        srv->mask_signals = 0;
    }
    cg_log_flush(&st->log);
    if (loop && status == 0)
        cg_log(&st->log, CG_INFO, "Finished server process [%d]", (int)getpid());
    Py_XDECREF(loop);
    server_release(srv);
    if (pending_t) {
        PyErr_Restore(pending_t, pending_v, pending_tb);
        return -1;
    }
    return status;
}

int cg_serve(PyObject *module, cg_config *cfg, PyObject *app_obj, const cg_host *host)
{
    cg_server *srv = server_prepare(module, cfg, app_obj, host);
    if (!srv)
        return PyErr_Occurred() ? -1 : 3;
    int status = serve_own_loop(srv, host ? host->sockets : NULL, 1);
    Py_DECREF(srv);
    return status;
}

/* ---- the embedding API (casgi.Server) ------------------------------------ */

/* _casgi.server(app, options): the server for Config(app, **options), or
 * None after logging a startup failure (the app does not import...). */
PyObject *cg_server_embed(PyObject *module, PyObject *app, PyObject *options)
{
    cg_config *cfg = PyMem_Calloc(1, sizeof(*cfg));
    if (!cfg)
        return PyErr_NoMemory();
    if (cg_config_from_kwargs(options, cfg, "Config()") < 0) {
        cg_config_free(cfg);
        PyMem_Free(cfg);
        return NULL;
    }
    if (PyUnicode_Check(app)) {
        const char *s = PyUnicode_AsUTF8(app);
        char *copy = s ? strdup(s) : NULL;
        if (!copy) {
            cg_config_free(cfg);
            PyMem_Free(cfg);
            return s ? PyErr_NoMemory() : NULL;
        }
        free(cfg->app);
        cfg->app = copy;
        app = NULL;
    }
    cg_server *srv = server_prepare(module, cfg, app, NULL);
    if (!srv) {
        cg_config_free(cfg);
        PyMem_Free(cfg);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    srv->own_cfg = cfg;
    return (PyObject *)srv;
}

/* start(loop, sockets, signals) -> the future completed with the status once
 * the server has fully stopped. */
static PyObject *server_start_py(cg_server *srv, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "start(loop, sockets, signals)");
        return NULL;
    }
    int signals = PyObject_IsTrue(args[2]);
    if (signals < 0)
        return NULL;
    if (server_start(srv, args[0], args[1] == Py_None ? NULL : args[1], signals) < 0)
        return NULL;
    return Py_NewRef(srv->done_fut);
}

/* run(sockets, signals) -> status: serves on a loop of its own until stopped. */
static PyObject *server_run_py(cg_server *srv, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "run(sockets, signals)");
        return NULL;
    }
    int signals = PyObject_IsTrue(args[1]);
    if (signals < 0)
        return NULL;
    if (srv->phase != CG_SV_IDLE) {
        PyErr_SetString(PyExc_RuntimeError, "this server has already been started");
        return NULL;
    }
    int status = serve_own_loop(srv, args[0] == Py_None ? NULL : args[0], signals);
    return status < 0 ? NULL : PyLong_FromLong(status);
}

/* request_exit(force): a graceful stop, or with force one that does not wait
 * for connections and tasks. From any thread: from another than the loop's,
 * it is handed to the loop's. */
static PyObject *server_request_exit_py(cg_server *srv, PyObject *force_arg)
{
    int force = PyObject_IsTrue(force_arg);
    if (force < 0)
        return NULL;
    if (srv->phase == CG_SV_DONE)
        Py_RETURN_NONE;
    if (srv->loop && PyThread_get_thread_ident() != srv->thread_id) {
        PyObject *meth = PyObject_GetAttrString((PyObject *)srv, "request_exit");
        PyObject *r = meth ? PyObject_CallMethod(srv->loop, "call_soon_threadsafe", "OO", meth,
                                                 force ? Py_True : Py_False)
                           : NULL;
        Py_XDECREF(meth);
        if (!r && PyErr_ExceptionMatches(PyExc_RuntimeError))
            PyErr_Clear(); /* the loop is closed: the server is gone already */
        else if (!r)
            return NULL;
        Py_XDECREF(r);
        Py_RETURN_NONE;
    }
    server_exit(srv, force);
    Py_RETURN_NONE;
}

static PyObject *server_get_started(cg_server *srv, void *unused)
{
    (void)unused;
    return PyBool_FromLong(srv->started);
}

static PyObject *server_get_should_exit(cg_server *srv, void *unused)
{
    (void)unused;
    return PyBool_FromLong(srv->should_exit);
}

static PyObject *server_get_force_exit(cg_server *srv, void *unused)
{
    (void)unused;
    return PyBool_FromLong(srv->force_exit);
}

static PyObject *server_get_captured(cg_server *srv, void *unused)
{
    (void)unused;
    return srv->captured ? PySequence_List(srv->captured) : PyList_New(0);
}

static PyObject *server_get_listeners(cg_server *srv, void *unused)
{
    (void)unused;
    return srv->listeners ? PySequence_List(srv->listeners) : PyList_New(0);
}

static PyMethodDef server_methods[] = {
    {"start", (PyCFunction)(void (*)(void))server_start_py, METH_FASTCALL,
     "start(loop, sockets, signals) -> future: serve in a running loop; the future completes "
     "with the status once the server has stopped."},
    {"run", (PyCFunction)(void (*)(void))server_run_py, METH_FASTCALL,
     "run(sockets, signals) -> status: serve on a loop of its own until stopped."},
    {"request_exit", (PyCFunction)server_request_exit_py, METH_O,
     "request_exit(force): stop gracefully, or without waiting when force is true."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef server_getset[] = {
    {"started", (getter)server_get_started, NULL, "listening, the startup complete", NULL},
    {"should_exit", (getter)server_get_should_exit, NULL, "a stop was asked for", NULL},
    {"force_exit", (getter)server_get_force_exit, NULL, "a forced stop was asked for", NULL},
    {"listeners", (getter)server_get_listeners, NULL, "the loop's Server objects it serves", NULL},
    {"captured_signals", (getter)server_get_captured, NULL,
     "SIGINT/SIGTERM received while serving, when this server gave the handlers back", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

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
    Py_VISIT(srv->done_fut);
    Py_VISIT(srv->wait_fut);
    Py_VISIT(srv->resume_cb);
    Py_VISIT(srv->lifespan);
    Py_VISIT(srv->socks);
    Py_VISIT(srv->own_socks);
    Py_VISIT(srv->listeners);
    Py_VISIT(srv->drain_timer);
    Py_VISIT(srv->captured);
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
    Py_CLEAR(srv->done_fut);
    Py_CLEAR(srv->wait_fut);
    Py_CLEAR(srv->resume_cb);
    Py_CLEAR(srv->lifespan);
    Py_CLEAR(srv->socks);
    Py_CLEAR(srv->own_socks);
    Py_CLEAR(srv->listeners);
    Py_CLEAR(srv->drain_timer);
    Py_CLEAR(srv->captured);
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
    cg_sd_notify_close(&srv->sd);
    if (srv->own_cfg) {
        cg_config_free(srv->own_cfg);
        PyMem_Free(srv->own_cfg);
    }
    cg_meter_free(srv); /* no connection is left to count */
    tp->tp_free(srv);
    Py_DECREF(tp);
}

static PyType_Slot server_slots[] = {
    {Py_tp_call, server_call},
    {Py_tp_methods, server_methods},
    {Py_tp_getset, server_getset},
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
