/* Worker mode: see worker.h. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"

/* Under the supervisor (core/supervisor.h) a worker finds CASGI_WORKER set to
 * "<ctl_fd>:<alive_fd>". It reports 'R' once serving, 'H' from its event loop
 * on every tick (so a blocked loop stops the heartbeat), 'X' when it wants to
 * be replaced; it exits at once when the supervisor is gone. */
void cg_worker_attach(cg_server *srv)
{
    const char *v = getenv("CASGI_WORKER");
    int ctl, alive;
    srv->ctl_fd = srv->alive_fd = -1;
    if (!v || sscanf(v, "%d:%d", &ctl, &alive) != 2 || ctl < 0 || alive < 0)
        return;
    /* The app's own subprocesses must not think they are workers. */
    cg_environ_remove("CASGI_WORKER");
    /* A heartbeat must never block the loop: drop it when the pipe is full. */
    fcntl(ctl, F_SETFL, fcntl(ctl, F_GETFL) | O_NONBLOCK);
    fcntl(ctl, F_SETFD, FD_CLOEXEC);
    fcntl(alive, F_SETFD, FD_CLOEXEC);
    srv->ctl_fd = ctl;
    srv->alive_fd = alive;
}

void cg_worker_notify(cg_server *srv, char what)
{
    ssize_t n;
    if (srv->ctl_fd < 0)
        return;
    do {
        n = write(srv->ctl_fd, &what, 1);
    } while (n < 0 && errno == EINTR);
}

static PyObject *worker_alive_readable(cg_server *srv, PyObject *unused)
{
    (void)unused;
    char buf[64];
    ssize_t n = read(srv->alive_fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        /* The supervisor died: never keep serving on our own. */
        cg_log(&srv->st->log, CG_ERROR, "Supervisor is gone; exiting");
        _exit(1);
    }
    Py_RETURN_NONE;
}

static PyMethodDef alive_def = {"alive", (PyCFunction)worker_alive_readable, METH_NOARGS, NULL};

/* Worker mode setup once the loop exists: stack dumps on SIGUSR1 and the
 * liveness watch. */
int cg_worker_start(cg_server *srv)
{
    if (srv->ctl_fd < 0)
        return 0;
    PyObject *fh = PyImport_ImportModule("faulthandler");
    if (!fh)
        return -1;
    PyObject *reg = PyObject_GetAttrString(fh, "register");
    PyObject *args = Py_BuildValue("(i)", SIGUSR1);
    PyObject *kw = Py_BuildValue("{s:O}", "all_threads", Py_True);
    PyObject *r = reg && args && kw ? PyObject_Call(reg, args, kw) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(reg);
    Py_DECREF(fh);
    if (!r)
        return -1;
    PyObject *cb = PyCFunction_New(&alive_def, (PyObject *)srv);
    if (!cb)
        return -1;
    r = PyObject_CallMethod(srv->loop, "add_reader", "iO", srv->alive_fd, cb);
    Py_DECREF(cb);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}
