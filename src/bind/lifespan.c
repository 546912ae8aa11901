/* ASGI lifespan: the app runs as a Task through a Runner; receive() hands it
 * lifespan.startup, then lifespan.shutdown; send() records its answers. The
 * server's serve sequence awaits each answer: `phase_fut`, completed by the
 * answer or by the app's end. */
#include "lifespan.h"

#include <string.h>

enum { LS_NONE, LS_STARTUP, LS_SHUTDOWN };

typedef struct {
    PyObject_HEAD cg_server *srv; /* strong */
    PyObject *task;
    cg_waiters waiters;  /* receive() calls waiting for the next event */
    PyObject *phase_fut; /* completed by the app's answer or its end */
    PyObject *message;   /* the app's failure message, if any */
    int pending;         /* event queued for receive(): LS_STARTUP / LS_SHUTDOWN */
    int phase;           /* event being answered */
    unsigned startup_complete : 1;
    unsigned startup_failed : 1;
    unsigned shutdown_complete : 1;
    unsigned shutdown_failed : 1;
    unsigned finished : 1;    /* the app returned or raised */
    unsigned error : 1;       /* the app raised */
    unsigned unsupported : 1; /* auto mode and the app raised before answering */
} cg_lifespan;

static cg_state *ls_state(cg_lifespan *ls)
{
    return ls->srv->st;
}

static void ls_wake_phase(cg_lifespan *ls)
{
    cg_future_wake(ls_state(ls), ls->phase_fut);
}

static PyObject *poll_event(PyObject *owner, PyObject **fut)
{
    cg_lifespan *ls = (cg_lifespan *)owner;
    cg_state *st = ls_state(ls);
    if (ls->pending != LS_NONE) {
        PyObject *msg = PyDict_New();
        if (!msg)
            return NULL;
        if (PyDict_SetItem(msg, st->s_type,
                           ls->pending == LS_STARTUP ? st->s_lifespan_startup
                                                     : st->s_lifespan_shutdown) < 0) {
            Py_DECREF(msg);
            return NULL;
        }
        ls->phase = ls->pending;
        ls->pending = LS_NONE;
        return msg;
    }
    *fut = cg_waiters_add(st, &ls->waiters);
    return NULL;
}

static PyObject *ls_receive(PyObject *self, PyObject *unused)
{
    (void)unused;
    cg_lifespan *ls = (cg_lifespan *)self;
    return cg_await_new(ls_state(ls), self, poll_event);
}

static PyObject *ls_send(PyObject *self, PyObject *message)
{
    cg_lifespan *ls = (cg_lifespan *)self;
    cg_state *st = ls_state(ls);
    PyObject *type;

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
    int is_startup_complete = cg_type_is(type, st->s_lifespan_startup_complete);
    int is_startup_failed = cg_type_is(type, st->s_lifespan_startup_failed);
    int is_shutdown_complete = cg_type_is(type, st->s_lifespan_shutdown_complete);
    int is_shutdown_failed = cg_type_is(type, st->s_lifespan_shutdown_failed);

    if ((is_startup_complete || is_startup_failed) && ls->phase != LS_STARTUP) {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message %R sent, outside startup.", type);
        return NULL;
    }
    if ((is_shutdown_complete || is_shutdown_failed) && ls->phase != LS_SHUTDOWN) {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message %R sent, outside shutdown.",
                     type);
        return NULL;
    }
    if (is_startup_complete) {
        ls->startup_complete = 1;
    } else if (is_shutdown_complete) {
        ls->shutdown_complete = 1;
    } else if (is_startup_failed || is_shutdown_failed) {
        PyObject *m = PyDict_GetItemWithError(message, st->s_message);
        if (!m && PyErr_Occurred())
            return NULL;
        Py_XSETREF(ls->message, m ? PyObject_Str(m) : NULL);
        PyErr_Clear();
        if (is_startup_failed)
            ls->startup_failed = 1;
        else
            ls->shutdown_failed = 1;
    } else {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message %R sent, for lifespan.", type);
        return NULL;
    }
    ls->phase = LS_NONE;
    ls_wake_phase(ls);
    return Py_NewRef(st->done);
}

static void ls_finish(PyObject *owner, PyObject *exc)
{
    cg_lifespan *ls = (cg_lifespan *)owner;
    cg_state *st = ls_state(ls);

    ls->finished = 1;
    if (exc && PyObject_IsInstance(exc, PyExc_Exception) == 1 &&
        !PyObject_IsInstance(exc, st->CancelledError)) {
        PyObject *tb = PyException_GetTraceback(exc);
        int answered = ls->startup_complete || ls->startup_failed;
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
        if (!answered && ls->srv->cfg->lifespan == CG_LIFESPAN_AUTO) {
            ls->unsupported = 1;
            if (st->log.error_level <= CG_DEBUG) {
                cg_log_exception(&st->log, "Exception in 'lifespan' protocol");
            } else {
                PyErr_Clear();
            }
            /* INFO, as uvicorn: an app without lifespan (Django) is normal. */
            cg_log(&st->log, CG_INFO, "ASGI 'lifespan' protocol appears unsupported.");
        } else {
            ls->error = 1;
            cg_log_exception(&st->log, "Exception in 'lifespan' protocol\n");
        }
    }
    PyErr_Clear();
    Py_CLEAR(ls->task);
    ls_wake_phase(ls);
}

static const cg_runner_hooks ls_hooks = {NULL, NULL, ls_finish};

static PyMethodDef ls_receive_def = {"receive", (PyCFunction)ls_receive, METH_NOARGS, NULL};
static PyMethodDef ls_send_def = {"send", (PyCFunction)ls_send, METH_O, NULL};

/* Queues `event` for receive(): returns the future the app's answer (or
 * its end) completes, a new reference, or NULL with an exception. */
static PyObject *ls_queue(cg_lifespan *ls, int event)
{
    cg_state *st = ls_state(ls);
    Py_XSETREF(ls->phase_fut, cg_future_new(st, ls->srv->loop));
    if (!ls->phase_fut)
        return NULL;
    ls->pending = event;
    cg_waiters_wake(st, &ls->waiters);
    return Py_NewRef(ls->phase_fut);
}

int cg_lifespan_startup_begin(cg_server *srv, PyObject **out, PyObject **wait)
{
    cg_state *st = srv->st;
    cg_lifespan *ls = NULL;
    PyObject *scope = NULL, *asgi = NULL;
    int rc = -1;

    *out = *wait = NULL;
    if (srv->cfg->lifespan == CG_LIFESPAN_OFF)
        return 0;
    ls = PyObject_GC_New(cg_lifespan, st->LifespanType);
    if (!ls)
        goto error;
    memset((char *)ls + sizeof(PyObject), 0, sizeof(*ls) - sizeof(PyObject));
    ls->srv = (cg_server *)Py_NewRef(srv);
    PyObject_GC_Track(ls);

    asgi = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.0");
    scope = asgi ? Py_BuildValue("{s:O,s:O,s:O}", "type", st->s_lifespan, "asgi", asgi, "state",
                                 srv->state)
                 : NULL;
    if (!scope)
        goto error;

    cg_log(&st->log, CG_INFO, "Waiting for application startup.");
    ls->pending = LS_STARTUP;
    if (cg_app_start(st, srv->loop, srv->context, srv->app, scope, (PyObject *)ls, &ls_receive_def,
                     &ls_send_def, &ls_hooks, 0, &ls->task) < 0)
        goto error;
    /* ls->task is NULL when the app raised at once (ls_finish ran already). */
    if (ls->task && !(*wait = ls_queue(ls, LS_STARTUP)))
        goto error;
    *out = Py_NewRef((PyObject *)ls);
    rc = 0;
    goto done;
error:
    if (PyErr_Occurred())
        cg_log_exception(&st->log, "Error during lifespan startup");
    if (ls && ls->task) {
        PyObject *r = PyObject_CallMethodNoArgs(ls->task, st->s_cancel);
        Py_XDECREF(r);
        PyErr_Clear();
    }
done:
    Py_XDECREF(scope);
    Py_XDECREF(asgi);
    Py_XDECREF(ls);
    return rc;
}

int cg_lifespan_startup_end(cg_server *srv, PyObject **lifespan)
{
    cg_lifespan *ls = (cg_lifespan *)*lifespan;
    cg_state *st = srv->st;

    if (!ls)
        return 0;
    if (ls->startup_failed || ls->error) {
        if (ls->message && PyUnicode_GET_LENGTH(ls->message) > 0)
            cg_log(&st->log, CG_ERROR, "%U", ls->message);
        cg_log(&st->log, CG_ERROR, "Application startup failed. Exiting.");
        if (ls->task) {
            PyObject *r = PyObject_CallMethodNoArgs(ls->task, st->s_cancel);
            Py_XDECREF(r);
            PyErr_Clear();
        }
        Py_CLEAR(*lifespan);
        return -1;
    }
    if (ls->startup_complete || ls->unsupported)
        cg_log(&st->log, CG_INFO, "Application startup complete.");
    if (ls->unsupported)
        Py_CLEAR(*lifespan);
    return 0;
}

PyObject *cg_lifespan_shutdown_begin(cg_server *srv, PyObject *lifespan)
{
    cg_lifespan *ls = (cg_lifespan *)lifespan;
    PyObject *fut;

    if (!ls || ls->finished)
        return NULL;
    cg_log(&srv->st->log, CG_INFO, "Waiting for application shutdown.");
    fut = ls_queue(ls, LS_SHUTDOWN);
    if (!fut)
        cg_log_exception(&srv->st->log, "Error during lifespan shutdown");
    return fut;
}

int cg_lifespan_shutdown_end(cg_server *srv, PyObject *lifespan)
{
    cg_lifespan *ls = (cg_lifespan *)lifespan;
    cg_state *st = srv->st;

    if (!ls)
        return 0;
    if (ls->shutdown_failed || ls->error) {
        if (ls->message && PyUnicode_GET_LENGTH(ls->message) > 0)
            cg_log(&st->log, CG_ERROR, "%U", ls->message);
        cg_log(&st->log, CG_ERROR, "Application shutdown failed. Exiting.");
        return -1;
    }
    cg_log(&st->log, CG_INFO, "Application shutdown complete.");
    return 0;
}

static int ls_traverse(cg_lifespan *ls, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(ls));
    Py_VISIT(ls->srv);
    Py_VISIT(ls->task);
    Py_VISIT(ls->phase_fut);
    Py_VISIT(ls->message);
    return cg_waiters_traverse(&ls->waiters, visit, arg);
}

static int ls_clear(cg_lifespan *ls)
{
    Py_CLEAR(ls->srv);
    Py_CLEAR(ls->task);
    cg_waiters_clear(&ls->waiters);
    Py_CLEAR(ls->phase_fut);
    Py_CLEAR(ls->message);
    return 0;
}

static void ls_dealloc(cg_lifespan *ls)
{
    PyTypeObject *tp = Py_TYPE(ls);
    PyObject_GC_UnTrack(ls);
    ls_clear(ls);
    tp->tp_free(ls);
    Py_DECREF(tp);
}

static PyType_Slot ls_slots[] = {
    {Py_tp_traverse, ls_traverse},
    {Py_tp_clear, ls_clear},
    {Py_tp_dealloc, ls_dealloc},
    {0, NULL},
};

static PyType_Spec ls_spec = {
    .name = "casgi._casgi.Lifespan",
    .basicsize = sizeof(cg_lifespan),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = ls_slots,
};

int cg_lifespan_types_init(PyObject *module, cg_state *st)
{
    st->LifespanType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &ls_spec, NULL);
    return st->LifespanType ? 0 : -1;
}

void cg_lifespan_abandon(cg_server *srv, PyObject *lifespan)
{
    cg_lifespan *ls = (cg_lifespan *)lifespan;
    if (!ls || !ls->task)
        return;
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(ls->task, srv->st->s_cancel);
    Py_XDECREF(r);
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
}
