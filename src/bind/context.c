/* Shared server state: see context.h. */
#include "context.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meter.h"
#include "worker.h"

#define CG_DATE_LINE_LEN 37 /* "date: " + IMF-fixdate (29) + CRLF */

void cg_server_update_date(cg_server *srv)
{
    char *line = srv->head_lines.data + srv->head_line_offs[1];
    if (srv->head_line_offs[2] - srv->head_line_offs[1] != CG_DATE_LINE_LEN)
        return; /* no date line (--no-date-header, or not built yet) */
    memcpy(line, "date: ", 6);
    cg_http1_format_date((long long)time(NULL), line + 6);
    memcpy(line + 35, "\r\n", 2);
}

int cg_server_set_head_lines(cg_server *srv, const char *extra, size_t extra_len)
{
    cg_buf *b = &srv->head_lines;
    cg_buf_reset(b);
    srv->head_line_offs[0] = 0;
    if (srv->cfg->server_header && cg_buf_append(b, "server: casgi\r\n", 15) < 0)
        goto nomem;
    srv->head_line_offs[1] = b->len;
    if (srv->cfg->date_header && cg_buf_reserve(b, CG_DATE_LINE_LEN) < 0)
        goto nomem;
    if (srv->cfg->date_header)
        b->len += CG_DATE_LINE_LEN;
    srv->head_line_offs[2] = b->len;
    if (cg_buf_append(b, extra, extra_len) < 0)
        goto nomem;
    srv->head_line_offs[3] = b->len;
    cg_server_update_date(srv);
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* The loop callback cg_server_raise_soon schedules: raises the kept
 * exception, which ends the loop's run as it would from a task step. */
static PyObject *raise_fatal(PyObject *self, PyObject *unused)
{
    cg_server *srv = (cg_server *)self;
    PyObject *exc = srv->fatal;
    (void)unused;
    if (!exc)
        Py_RETURN_NONE;
    srv->fatal = NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static PyMethodDef raise_fatal_def = {"raise_fatal", raise_fatal, METH_NOARGS, NULL};

void cg_server_raise_soon(cg_server *srv)
{
    PyObject *v = cg_err_take(), *cb, *r = NULL;
    if (!v)
        return;
    if (srv->fatal) { /* one already on its way */
        Py_DECREF(v);
        return;
    }
    srv->fatal = v;
    cb = PyCFunction_New(&raise_fatal_def, (PyObject *)srv);
    if (cb)
        r = PyObject_CallMethodOneArg(srv->loop, srv->st->s_call_soon, cb);
    if (!r)
        PyErr_WriteUnraisable(srv->loop);
    Py_XDECREF(r);
    Py_XDECREF(cb);
}

void cg_server_check_drained(cg_server *srv)
{
    if (srv->should_exit && srv->nconns == 0 && srv->ntasks == 0)
        cg_future_wake(srv->st, srv->drained_fut);
}

int cg_server_add_task(cg_server *srv, PyObject *task)
{
    if (PySet_Add(srv->tasks, task) < 0)
        return -1;
    srv->ntasks++;
    cg_meter_tasks(srv);
    return 0;
}

void cg_server_task_done(cg_server *srv, PyObject **slot)
{
    PyObject *task = *slot;
    if (!task)
        return;
    *slot = NULL;
    if (PySet_Discard(srv->tasks, task) < 0)
        PyErr_Clear();
    Py_DECREF(task);
    srv->ntasks--;
    cg_meter_tasks(srv);
    cg_server_check_drained(srv);
}

void cg_server_request_exit(cg_server *srv)
{
    srv->should_exit = 1;
    cg_future_wake(srv->st, srv->stop_fut);
}

void cg_server_retire(cg_server *srv)
{
    if (srv->ctl_fd >= 0) {
        /* The supervisor starts a replacement first, then sends SIGTERM. */
        if (!srv->retiring) {
            srv->retiring = 1;
            cg_worker_notify(srv, 'X');
        }
        return;
    }
    cg_server_request_exit(srv);
}

/* ---- running the loop ---------------------------------------------------- */

/* The signals the server handles stay blocked while its loop is not running
 * and are unblocked from inside each run: uvloop drops a signal that arrives
 * between two runs (its wakeup fd is only installed while it runs), so a
 * SIGTERM sent during start-up or shutdown would otherwise be lost. A signal
 * sent while blocked waits and is delivered at the next unblock. */
static void handled_signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGQUIT);
}

void cg_block_handled_signals(sigset_t *old)
{
    sigset_t set;
    handled_signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static PyObject *mask_handled_signals(int how)
{
    sigset_t set;
    handled_signal_set(&set);
    pthread_sigmask(how, &set, NULL);
    Py_RETURN_NONE;
}

static PyObject *signals_unblock(PyObject *unused_self, PyObject *unused)
{
    (void)unused_self;
    (void)unused;
    return mask_handled_signals(SIG_UNBLOCK);
}

static PyObject *signals_block(PyObject *unused_self, PyObject *fut)
{
    (void)unused_self;
    (void)fut;
    return mask_handled_signals(SIG_BLOCK);
}

static PyMethodDef unblock_def = {"unblock_signals", signals_unblock, METH_NOARGS, NULL};
static PyMethodDef block_def = {"block_signals", signals_block, METH_O, NULL};

PyObject *cg_server_run(cg_server *srv, PyObject *awaitable)
{
    cg_state *st = srv->st;
    PyObject *fut, *cb, *r, *result = NULL;

    if (!srv->mask_signals)
        return PyObject_CallMethod(srv->loop, "run_until_complete", "O", awaitable);
    fut = PyObject_CallMethod(st->asyncio, "ensure_future", "O", awaitable);
    if (!fut)
        return NULL;
    /* Blocked again as soon as the awaited future is done, before the loop
     * stops (our callback is added before run_until_complete adds its own). */
    cb = PyCFunction_New(&block_def, NULL);
    r = cb ? PyObject_CallMethodOneArg(fut, st->s_add_done_callback, cb) : NULL;
    Py_XDECREF(cb);
    if (!r)
        goto done;
    Py_DECREF(r);
    cb = PyCFunction_New(&unblock_def, NULL);
    r = cb ? PyObject_CallMethodOneArg(srv->loop, st->s_call_soon, cb) : NULL;
    Py_XDECREF(cb);
    if (!r)
        goto done;
    Py_DECREF(r);
    result = PyObject_CallMethod(srv->loop, "run_until_complete", "O", fut);
done:
    Py_DECREF(fut);
    {
        sigset_t set;
        handled_signal_set(&set);
        pthread_sigmask(SIG_BLOCK, &set, NULL); /* however the run ended */
    }
    return result;
}

static int is_unix_addr(PyObject *addr)
{
    return addr && (PyUnicode_Check(addr) || PyBytes_Check(addr));
}

int cg_server_trusts_peer(cg_server *srv, PyObject *peer, PyObject *sock)
{
    const cg_proxy_trust *t = &srv->trust;
    if (t->all)
        return 1;
    if (peer && PyTuple_Check(peer) && PyTuple_GET_SIZE(peer) >= 2) {
        PyObject *host = PyTuple_GET_ITEM(peer, 0);
        Py_ssize_t n;
        const char *u = PyUnicode_Check(host) ? PyUnicode_AsUTF8AndSize(host, &n) : NULL;
        if (!u) {
            PyErr_Clear();
            return 0;
        }
        return cg_proxy_trusts_host(t, u, (size_t)n);
    }
    /* A Unix socket's peer has no address: trusted as "unix:" says. */
    return t->unix_peers && (is_unix_addr(peer) || is_unix_addr(sock));
}

int cg_server_head_defaults(cg_server *srv, unsigned which, cg_buf *tmp, const char **out,
                            size_t *len)
{
    const size_t *off = srv->head_line_offs; /* part i is [off[i], off[i + 1]) */
    size_t start = 0, end = 0;
    int first = 1, adjacent = 1;
    for (int i = 0; i < 3; i++) {
        if (!(which & (1u << i)) || off[i] == off[i + 1])
            continue;
        if (first)
            start = off[i];
        else if (off[i] != end)
            adjacent = 0;
        first = 0;
        end = off[i + 1];
    }
    if (adjacent) {
        *out = srv->head_lines.data + start;
        *len = end - start;
        return 0;
    }
    for (int i = 0; i < 3; i++)
        if ((which & (1u << i)) &&
            cg_buf_append(tmp, srv->head_lines.data + off[i], off[i + 1] - off[i]) < 0)
            return -1;
    *out = tmp->data;
    *len = tmp->len;
    return 0;
}
