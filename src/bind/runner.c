/* Awaitables and the app runner.
 *
 * Await: what receive() and send() return when they may have to wait. It
 * polls its owner; only when the owner cannot answer yet does a future get
 * created, and the awaitable delegates to that future's iterator until it
 * completes, then polls again. Done: the shared awaitable for a send() that
 * completed at call time, so the common path allocates nothing.
 *
 * Runner: a coroutine-shaped object (send/throw/close/__await__ and
 * tp_iternext) that a Task drives instead of the app's coroutine. It sees
 * every step (on_enter), every suspension (on_leave, used to flush a held
 * response head) and every outcome (on_finish) without a done-callback per
 * request. */
#include "casgi.h"

#include <assert.h>

/* ---- Done --------------------------------------------------------------- */

static PyObject *done_iternext(PyObject *self)
{
    (void)self;
    return NULL; /* exhausted without error: StopIteration(None) */
}

static PyObject *self_iter(PyObject *self)
{
    return Py_NewRef(self);
}

static void done_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot done_slots[] = {
    {Py_am_await, self_iter},
    {Py_tp_iter, self_iter},
    {Py_tp_iternext, done_iternext},
    {Py_tp_dealloc, done_dealloc},
    {0, NULL},
};

static PyType_Spec done_spec = {
    .name = "casgi._casgi.Done",
    .basicsize = sizeof(PyObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = done_slots,
};

/* ---- Await -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD PyObject *owner; /* strong */
    cg_poll_fn poll;
    PyObject *fut_iter; /* iterator of the future being waited on, or NULL */
} cg_await;

PyObject *cg_await_new(cg_state *st, PyObject *owner, cg_poll_fn poll)
{
    cg_await *a = PyObject_GC_New(cg_await, st->AwaitType);
    if (!a)
        return NULL;
    a->owner = Py_NewRef(owner);
    a->poll = poll;
    a->fut_iter = NULL;
    PyObject_GC_Track(a);
    return (PyObject *)a;
}

/* Raises StopIteration carrying `value` (a dict or None here). */
static void set_stop_iteration(PyObject *value)
{
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return;
    }
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (exc) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
}

/* One step of the awaitable: 1 with the value to yield to the Task in *out
 * (a future), 0 with the result in *out (finished), -1 on error. The same
 * for both protocols below, so the steps are written once. */
static int await_step(cg_await *self, PyObject **out)
{
    for (;;) {
        if (self->fut_iter) {
            PyObject *r = NULL;
#if PY_VERSION_HEX >= 0x030A0000
            PySendResult sr = PyIter_Send(self->fut_iter, Py_None, &r);
            if (sr == PYGEN_NEXT) {
                *out = r; /* the future itself, yielded to the Task */
                return 1;
            }
            if (sr == PYGEN_ERROR)
                return -1; /* cancelled or failed */
            Py_XDECREF(r);
#else
            r = Py_TYPE(self->fut_iter)->tp_iternext(self->fut_iter);
            if (r) {
                *out = r;
                return 1;
            }
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_StopIteration))
                    return -1;
                PyErr_Clear();
            }
#endif
            Py_CLEAR(self->fut_iter);
        }
        PyObject *fut = NULL;
        PyObject *res = self->poll(self->owner, &fut);
        if (res) {
            *out = res;
            return 0;
        }
        if (!fut)
            return -1; /* error from poll */
        PyObject *it = PyObject_GetIter(fut);
        Py_DECREF(fut);
        if (!it)
            return -1;
        self->fut_iter = it;
    }
}

static PyObject *await_iternext(cg_await *self)
{
    PyObject *out = NULL;
    int r = await_step(self, &out);
    if (r == 0) {
        set_stop_iteration(out);
        Py_DECREF(out);
        return NULL;
    }
    return r > 0 ? out : NULL;
}

#if PY_VERSION_HEX >= 0x030A0000
/* `await` from Python 3.10 on: the result is returned as is, with no
 * StopIteration created and caught per completed receive() or send(). The
 * value sent in is always None from a Task and is not needed. */
static PySendResult await_am_send(cg_await *self, PyObject *arg, PyObject **presult)
{
    (void)arg;
    *presult = NULL;
    int r = await_step(self, presult);
    return r > 0 ? PYGEN_NEXT : r == 0 ? PYGEN_RETURN : PYGEN_ERROR;
}
#endif

static int await_traverse(cg_await *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    Py_VISIT(self->fut_iter);
    return 0;
}

static int await_clear(cg_await *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->fut_iter);
    return 0;
}

static void await_dealloc(cg_await *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    await_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot await_slots[] = {
    {Py_am_await, self_iter},
#if PY_VERSION_HEX >= 0x030A0000
    {Py_am_send, await_am_send},
#endif
    {Py_tp_iter, self_iter},     {Py_tp_iternext, await_iternext}, {Py_tp_traverse, await_traverse},
    {Py_tp_clear, await_clear},  {Py_tp_dealloc, await_dealloc},   {0, NULL},
};

static PyType_Spec await_spec = {
    .name = "casgi._casgi.Await",
    .basicsize = sizeof(cg_await),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = await_slots,
};

/* ---- Runner ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD cg_state *st;
    PyObject *it;    /* the app's coroutine, or the iterator of its awaitable */
    PyObject *owner; /* strong; cleared once finished */
    const cg_runner_hooks *hooks;
} cg_runner;

PyObject *cg_runner_new(cg_state *st, PyObject *awaitable, PyObject *owner,
                        const cg_runner_hooks *hooks)
{
    PyObject *it;
    if (PyCoro_CheckExact(awaitable)) {
        it = Py_NewRef(awaitable);
    } else {
        unaryfunc am_await =
            Py_TYPE(awaitable)->tp_as_async ? Py_TYPE(awaitable)->tp_as_async->am_await : NULL;
        if (!am_await) {
            PyErr_Format(PyExc_TypeError, "the ASGI application returned %R, not an awaitable",
                         awaitable);
            return NULL;
        }
        it = am_await(awaitable);
        if (!it)
            return NULL;
    }
    cg_runner *r = PyObject_GC_New(cg_runner, st->RunnerType);
    if (!r) {
        Py_DECREF(it);
        return NULL;
    }
    r->st = st;
    r->it = it;
    r->owner = Py_NewRef(owner);
    r->hooks = hooks;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

/* Handles the app's outcome after it stopped yielding: `res` is the value it
 * yielded (returned as is), or NULL when it returned or raised. */
static PyObject *runner_outcome(cg_runner *self, PyObject *res, int returned)
{
    PyObject *owner;

    if (res) {
        if (self->hooks->on_leave && self->owner)
            self->hooks->on_leave(self->owner);
        return res;
    }
    owner = self->owner;
    self->owner = NULL;
    if (!owner)
        return NULL; /* finished before: keep whatever is set */
    if (returned || !PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear();
        self->hooks->on_finish(owner, NULL);
        assert(!PyErr_Occurred()); /* the hook's contract */
        Py_DECREF(owner);
        return NULL;
    }
    if (!PyErr_ExceptionMatches(PyExc_Exception) ||
        PyErr_ExceptionMatches(self->st->CancelledError)) {
        /* Cancellation and BaseException reach the Task unchanged. */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        self->hooks->on_finish(owner, v);
        assert(!PyErr_Occurred());
        PyErr_Restore(t, v, tb);
        Py_DECREF(owner);
        return NULL;
    }
    PyObject *exc = cg_err_take();
    self->hooks->on_finish(owner, exc);
    assert(!PyErr_Occurred());
    Py_XDECREF(exc);
    Py_DECREF(owner);
    return NULL;
}

static PyObject *runner_send_value(cg_runner *self, PyObject *value)
{
    PyObject *res = NULL;
    if (self->hooks->on_enter)
        self->hooks->on_enter(self->owner);
#if PY_VERSION_HEX >= 0x030A0000
    PySendResult sr = PyIter_Send(self->it, value, &res);
    if (sr == PYGEN_NEXT)
        return runner_outcome(self, res, 0);
    if (sr == PYGEN_RETURN) {
        Py_XDECREF(res);
        return runner_outcome(self, NULL, 1);
    }
    return runner_outcome(self, NULL, 0);
#else
    if (value == Py_None && PyIter_Check(self->it))
        res = Py_TYPE(self->it)->tp_iternext(self->it);
    else
        res = PyObject_CallMethod(self->it, "send", "O", value);
    return runner_outcome(self, res, 0);
#endif
}

static PyObject *runner_iternext(cg_runner *self)
{
    if (!self->owner)
        return NULL;
    return runner_send_value(self, Py_None);
}

static PyObject *runner_send(cg_runner *self, PyObject *value)
{
    if (!self->owner) {
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    PyObject *r = runner_send_value(self, value);
    if (!r && !PyErr_Occurred())
        PyErr_SetNone(PyExc_StopIteration);
    return r;
}

static PyObject *runner_throw(cg_runner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    if (!self->owner) {
        /* Finished: behave like an exhausted coroutine receiving an exception. */
        if (PyExceptionInstance_Check(args[0]))
            PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
        else
            PyErr_SetObject(args[0], nargs > 1 ? args[1] : NULL);
        return NULL;
    }
    PyObject *meth = PyObject_GetAttrString(self->it, "throw");
    PyObject *res;
    if (self->hooks->on_enter)
        self->hooks->on_enter(self->owner);
    if (meth) {
        res = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
        Py_DECREF(meth);
    } else {
        PyErr_Clear();
        if (PyExceptionInstance_Check(args[0]))
            PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
        else
            PyErr_SetObject(args[0], nargs > 1 ? args[1] : NULL);
        res = NULL;
    }
    PyObject *r = runner_outcome(self, res, 0);
    if (!r && !PyErr_Occurred())
        PyErr_SetNone(PyExc_StopIteration);
    return r;
}

static PyObject *runner_close(cg_runner *self, PyObject *unused)
{
    (void)unused;
    PyObject *meth = PyObject_GetAttrString(self->it, "close");
    if (!meth) {
        PyErr_Clear();
    } else {
        PyObject *r = PyObject_CallNoArgs(meth);
        Py_DECREF(meth);
        if (!r)
            return NULL;
        Py_DECREF(r);
    }
    if (self->owner) {
        PyObject *owner = self->owner;
        self->owner = NULL;
        PyObject *exc = PyObject_CallNoArgs(PyExc_GeneratorExit);
        self->hooks->on_finish(owner, exc);
        Py_XDECREF(exc);
        PyErr_Clear();
        Py_DECREF(owner);
    }
    Py_RETURN_NONE;
}

static int runner_traverse(cg_runner *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->it);
    Py_VISIT(self->owner);
    return 0;
}

static int runner_clear(cg_runner *self)
{
    Py_CLEAR(self->it);
    Py_CLEAR(self->owner);
    return 0;
}

static void runner_dealloc(cg_runner *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    runner_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *runner_await(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyMethodDef runner_methods[] = {
    {"send", (PyCFunction)runner_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))runner_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)runner_close, METH_NOARGS, NULL},
    {"__await__", (PyCFunction)runner_await, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot runner_slots[] = {
    {Py_am_await, self_iter},          {Py_tp_iter, self_iter},
    {Py_tp_iternext, runner_iternext}, {Py_tp_methods, runner_methods},
    {Py_tp_traverse, runner_traverse}, {Py_tp_clear, runner_clear},
    {Py_tp_dealloc, runner_dealloc},   {0, NULL},
};

static PyType_Spec runner_spec = {
    .name = "casgi._casgi.Runner",
    .basicsize = sizeof(cg_runner),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = runner_slots,
};

/* ---- starting an app ---------------------------------------------------- */

static int app_start(cg_state *st, PyObject *loop, PyObject *app, PyObject *scope, PyObject *owner,
                     PyMethodDef *receive_def, PyMethodDef *send_def, const cg_runner_hooks *hooks,
                     int eager, PyObject **task);

/* loop.create_task(runner), without its costs when no task factory is set:
 * the loop is always asyncio's or uvloop's, whose create_task then makes
 * exactly this Task. The fixed name spares the default one, which is
 * formatted anew for every Task. `eager` on Python 3.12+: eager_start=True,
 * the first step runs now (when the loop is running), and an app that never
 * waits costs no Task scheduling at all. */
static PyObject *new_task(cg_state *st, PyObject *loop, PyObject *runner, int eager)
{
    PyObject *factory = PyObject_CallMethodNoArgs(loop, st->s_get_task_factory);
    if (!factory)
        return NULL;
    if (factory != Py_None) {
        Py_DECREF(factory);
        return PyObject_CallMethodOneArg(loop, st->s_create_task, runner);
    }
    Py_DECREF(factory);
    PyObject *args[4] = {runner, loop, st->s_app_task_name, Py_True};
#if PY_VERSION_HEX >= 0x030C0000
    if (eager)
        return PyObject_Vectorcall(st->Task, args, 1, st->eager_kwnames);
#else
    (void)eager;
#endif
    return PyObject_Vectorcall(st->Task, args, 1, st->task_kwnames);
}

int cg_app_start(cg_state *st, PyObject *loop, PyObject *context, PyObject *app, PyObject *scope,
                 PyObject *owner, PyMethodDef *receive_def, PyMethodDef *send_def,
                 const cg_runner_hooks *hooks, int eager, PyObject **task)
{
    PyObject *ctx = PyContext_Copy(context);
    int rc;

    *task = NULL;
    if (!ctx)
        return -1;
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return -1;
    }
    rc = app_start(st, loop, app, scope, owner, receive_def, send_def, hooks, eager, task);
    /* Exiting a context entered just above cannot fail; an error of the
     * start itself is kept aside meanwhile. */
    PyObject *t = NULL, *v = NULL, *tb = NULL;
    if (rc < 0)
        PyErr_Fetch(&t, &v, &tb);
    if (PyContext_Exit(ctx) < 0)
        PyErr_WriteUnraisable(ctx);
    if (rc < 0)
        PyErr_Restore(t, v, tb);
    Py_DECREF(ctx);
    return rc;
}

static int app_start(cg_state *st, PyObject *loop, PyObject *app, PyObject *scope, PyObject *owner,
                     PyMethodDef *receive_def, PyMethodDef *send_def, const cg_runner_hooks *hooks,
                     int eager, PyObject **task)
{
    PyObject *receive = NULL, *send = NULL, *coro = NULL, *runner = NULL;
    int rc = -1;

    receive = PyCFunction_New(receive_def, owner);
    send = receive ? PyCFunction_New(send_def, owner) : NULL;
    if (!send)
        goto done;
    PyObject *args[3] = {scope, receive, send};
    coro = PyObject_Vectorcall(app, args, 3, NULL);
    if (!coro) {
        /* Raising before returning an awaitable is the same as raising in it. */
        PyObject *exc = cg_err_take();
        hooks->on_finish(owner, exc);
        Py_XDECREF(exc);
        rc = 0;
        goto done;
    }
    runner = cg_runner_new(st, coro, owner, hooks);
    if (!runner)
        goto done;
    *task = new_task(st, loop, runner, eager);
    if (*task) {
        rc = 0;
        /* A task factory that starts tasks eagerly (Python 3.12's
         * eager_task_factory) may have run the app to its end already: its
         * outcome was reported, there is no running task to track. */
        if (!((cg_runner *)runner)->owner)
            Py_CLEAR(*task);
    }
done:
    Py_XDECREF(runner);
    Py_XDECREF(coro);
    Py_XDECREF(send);
    Py_XDECREF(receive);
    return rc;
}

/* ---- futures ------------------------------------------------------------ */

PyObject *cg_future_new(cg_state *st, PyObject *loop)
{
    return PyObject_CallMethodNoArgs(loop, st->s_create_future);
}

PyObject *cg_future_new_running(cg_state *st)
{
    return PyObject_CallNoArgs(st->Future);
}

void cg_future_wake(cg_state *st, PyObject *fut)
{
    PyObject *t, *v, *tb, *r;
    if (!fut)
        return;
    PyErr_Fetch(&t, &v, &tb);
    /* One call: a future already done (cancelled, mostly) refuses with
     * InvalidStateError, which is what done() would have told. */
    r = PyObject_CallMethodOneArg(fut, st->s_set_result, Py_None);
    if (!r) {
        if (PyErr_ExceptionMatches(st->InvalidStateError))
            PyErr_Clear();
        else
            PyErr_WriteUnraisable(fut);
    }
    Py_XDECREF(r);
    PyErr_Restore(t, v, tb);
}

/* 1 when fut is done (cancelled, for a future still in a waiter set), 0 when
 * it is pending, -1 on error. */
static int future_is_done(cg_state *st, PyObject *fut)
{
    PyObject *r = PyObject_CallMethodNoArgs(fut, st->s_done);
    if (!r)
        return -1;
    int done = r == Py_True;
    Py_DECREF(r);
    return done;
}

PyObject *cg_waiters_add(cg_state *st, cg_waiters *w)
{
    int first_done = w->first ? future_is_done(st, w->first) : 1;
    if (first_done < 0)
        return NULL;
    PyObject *fut = cg_future_new_running(st);
    if (!fut)
        return NULL;
    if (first_done) {
        Py_XSETREF(w->first, Py_NewRef(fut));
        return fut;
    }
    /* Another call is waiting: keep both, dropping those cancelled since. */
    if (!w->rest && !(w->rest = PyList_New(0)))
        goto fail;
    for (Py_ssize_t i = PyList_GET_SIZE(w->rest); i-- > 0;) {
        int done = future_is_done(st, PyList_GET_ITEM(w->rest, i));
        if (done < 0 || (done && PySequence_DelItem(w->rest, i) < 0))
            goto fail;
    }
    if (PyList_Append(w->rest, fut) < 0)
        goto fail;
    return fut;
fail:
    Py_DECREF(fut);
    return NULL;
}

void cg_waiters_wake(cg_state *st, cg_waiters *w)
{
    PyObject *first = w->first, *rest = w->rest;
    /* Emptied first: a woken call that polls again at once joins a new set. */
    w->first = w->rest = NULL;
    if (first) {
        cg_future_wake(st, first);
        Py_DECREF(first);
    }
    if (rest) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rest); i++)
            cg_future_wake(st, PyList_GET_ITEM(rest, i));
        Py_DECREF(rest);
    }
}

int cg_runner_types_init(PyObject *module, cg_state *st)
{
    st->DoneType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &done_spec, NULL);
    if (!st->DoneType)
        return -1;
    st->AwaitType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &await_spec, NULL);
    if (!st->AwaitType)
        return -1;
    st->RunnerType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &runner_spec, NULL);
    if (!st->RunnerType)
        return -1;
    st->done = PyType_GenericAlloc(st->DoneType, 0);
    if (!st->done)
        return -1;
    return 0;
}
