/* casgi._casgi: module definition (multi-phase init), module state, and the
 * entry points main(argv), run(app, options), serve_host (gunicorn), and
 * server(app, options) with config_values(options) for casgi.Server/Config. */
#include "casgi.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "supervise.h"

#define CG_VERSION "0.1.0"

static PyObject *casgi_main(PyObject *module, PyObject *argv)
{
    cg_config cfg;
    int status;

    if (!PyList_Check(argv)) {
        PyErr_SetString(PyExc_TypeError, "main() expects a list of str");
        return NULL;
    }
    status = cg_config_from_argv(argv, &cfg);
    if (status < 0)
        status = cg_wants_supervisor(&cfg) ? cg_supervise(module, &cfg)
                                           : cg_serve(module, &cfg, NULL, NULL);
    cg_config_free(&cfg);
    if (status < 0)
        return NULL;
    return PyLong_FromLong(status);
}

static PyObject *casgi_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cg_config cfg;
    PyObject *app;
    int status = -1;

    if (nargs != 2 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "run(app, options: dict)");
        return NULL;
    }
    app = args[0];
    if (cg_config_from_kwargs(args[1], &cfg, "run()") < 0)
        goto done;
    if (PyUnicode_Check(app)) {
        const char *s = PyUnicode_AsUTF8(app);
        if (!s)
            goto done;
        free(cfg.app);
        cfg.app = strdup(s);
        if (!cfg.app) {
            PyErr_NoMemory();
            goto done;
        }
        app = NULL;
    }
    status =
        cg_wants_supervisor(&cfg) ? cg_supervise(module, &cfg) : cg_serve(module, &cfg, app, NULL);
done:
    cg_config_free(&cfg);
    if (status < 0)
        return NULL;
    return PyLong_FromLong(status);
}

static PyObject *casgi_serve_host(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cg_config cfg;
    cg_host host;
    int status = -1;

    if (nargs != 4 || !PyDict_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "serve_host(app, options: dict, sockets: list, notify)");
        return NULL;
    }
    host.sockets = args[2];
    host.notify = args[3] == Py_None ? NULL : args[3];
    if (cg_config_from_kwargs(args[1], &cfg, "run()") == 0)
        status = cg_serve(module, &cfg, args[0], &host);
    cg_config_free(&cfg);
    if (status < 0)
        return NULL;
    return PyLong_FromLong(status);
}

static PyObject *casgi_server(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "server(app, options: dict)");
        return NULL;
    }
    return cg_server_embed(module, args[0], args[1]);
}

/* config_values(options) -> dict: every option's value for Config(**options),
 * validated as run() validates them. */
static PyObject *casgi_config_values(PyObject *module, PyObject *options)
{
    cg_config cfg;
    PyObject *values = NULL;
    (void)module;
    if (cg_config_from_kwargs(options, &cfg, "Config()") == 0)
        values = cg_config_values(&cfg);
    cg_config_free(&cfg);
    return values;
}

static PyMethodDef module_methods[] = {
    {"server", (PyCFunction)(void (*)(void))casgi_server, METH_FASTCALL,
     "server(app, options) -> Server or None: a server to serve() or run() (casgi.Server)."},
    {"config_values", (PyCFunction)casgi_config_values, METH_O,
     "config_values(options) -> dict: every option's value, validated (casgi.Config)."},
    {"serve_host", (PyCFunction)(void (*)(void))casgi_serve_host, METH_FASTCALL,
     "serve_host(app, options, sockets, notify) -> int: serve on a host's sockets (gunicorn)."},
    {"main", (PyCFunction)casgi_main, METH_O,
     "main(argv) -> int: run the command line (argv without the program name)."},
    {"run", (PyCFunction)(void (*)(void))casgi_run, METH_FASTCALL,
     "run(app, options) -> int: serve an app object or import string."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *m)
{
    cg_state *st = cg_get_state(m);
    PyObject *tmp;

#define CG_INIT_STR(name, text)                                                                    \
    if (!(st->s_##name = PyUnicode_InternFromString(text)))                                        \
        return -1;
    CG_STRINGS(CG_INIT_STR)
#undef CG_INIT_STR

    for (int i = 0; i < CG_HDR__COUNT; i++) {
        st->hdr_names[i] =
            PyBytes_FromStringAndSize(cg_hdr_names[i].base, (Py_ssize_t)cg_hdr_names[i].len);
        if (!st->hdr_names[i])
            return -1;
    }
    if (!(st->asyncio = PyImport_ImportModule("asyncio")))
        return -1;
    if (!(st->BufferedProtocol = PyObject_GetAttrString(st->asyncio, "BufferedProtocol")))
        return -1;
    if (!(st->CancelledError = PyObject_GetAttrString(st->asyncio, "CancelledError")))
        return -1;
    if (!(st->Future = PyObject_GetAttrString(st->asyncio, "Future")))
        return -1;
    if (!(st->InvalidStateError = PyObject_GetAttrString(st->asyncio, "InvalidStateError")))
        return -1;
    if (!(st->Task = PyObject_GetAttrString(st->asyncio, "Task")))
        return -1;
    if (!(st->task_kwnames = PyTuple_Pack(2, st->s_kw_loop, st->s_kw_name)))
        return -1;
    if (!(st->eager_kwnames = PyTuple_Pack(3, st->s_kw_loop, st->s_kw_name, st->s_kw_eager_start)))
        return -1;
    if (!(st->empty_bytes = PyBytes_FromStringAndSize(NULL, 0)))
        return -1;
    if (!(st->empty_str = PyUnicode_FromStringAndSize(NULL, 0)))
        return -1;
    if (!(st->version = PyUnicode_FromString(CG_VERSION)))
        return -1;
    if (!(st->asgi_dict = PyDict_New()))
        return -1;
    if (PyDict_SetItem(st->asgi_dict, st->s_version, st->s_v3_0) < 0 ||
        PyDict_SetItem(st->asgi_dict, st->s_spec_version, st->s_v2_3) < 0)
        return -1;
    if (!(st->asgi_ws_dict = PyDict_New()))
        return -1;
    if (PyDict_SetItem(st->asgi_ws_dict, st->s_version, st->s_v3_0) < 0 ||
        PyDict_SetItem(st->asgi_ws_dict, st->s_spec_version, st->s_v2_4) < 0)
        return -1;
    st->ClientDisconnected = PyErr_NewExceptionWithDoc(
        "casgi._casgi.ClientDisconnected",
        "send() on a WebSocket whose client has gone or that is closed.", PyExc_OSError, NULL);
    if (!st->ClientDisconnected ||
        PyModule_AddObjectRef(m, "ClientDisconnected", st->ClientDisconnected) < 0)
        return -1;

    if (cg_runner_types_init(m, st) < 0 || cg_server_types_init(m, st) < 0 ||
        cg_conn_types_init(m, st) < 0 || cg_asgi_http_types_init(m, st) < 0 ||
        cg_lifespan_types_init(m, st) < 0 || cg_ws_types_init(m, st) < 0 ||
        cg_app_types_init(m, st) < 0)
        return -1;

    tmp = Py_NewRef(st->version);
    if (PyModule_AddObject(m, "__version__", tmp) < 0) {
        Py_DECREF(tmp);
        return -1;
    }
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    cg_state *st = cg_get_state(m);
    if (!st)
        return 0;
#define CG_VISIT_STR(name, text) Py_VISIT(st->s_##name);
    CG_STRINGS(CG_VISIT_STR)
#undef CG_VISIT_STR
    for (int i = 0; i < CG_HDR__COUNT; i++)
        Py_VISIT(st->hdr_names[i]);
    Py_VISIT(st->ServerType);
    Py_VISIT(st->ConnType);
    Py_VISIT(st->OutputType);
    Py_VISIT(st->AwaitType);
    Py_VISIT(st->DoneType);
    Py_VISIT(st->RunnerType);
    Py_VISIT(st->CycleType);
    Py_VISIT(st->LifespanType);
    Py_VISIT(st->WebSocketType);
    Py_VISIT(st->asgi_ws_dict);
    Py_VISIT(st->ClientDisconnected);
    Py_VISIT(st->ASGI2Type);
    Py_VISIT(st->done);
    Py_VISIT(st->BufferedProtocol);
    Py_VISIT(st->asyncio);
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->Future);
    Py_VISIT(st->Task);
    Py_VISIT(st->task_kwnames);
    Py_VISIT(st->eager_kwnames);
    Py_VISIT(st->InvalidStateError);
    Py_VISIT(st->version);
    Py_VISIT(st->asgi_dict);
    Py_VISIT(st->empty_bytes);
    Py_VISIT(st->empty_str);
    Py_VISIT(st->sig_servers);
    Py_VISIT(st->sig_saved);
    Py_VISIT(st->sig_captured);
    Py_VISIT(st->sig_loop);
    return cg_log_traverse(&st->log, visit, arg);
}

static int module_clear(PyObject *m)
{
    cg_state *st = cg_get_state(m);
    if (!st)
        return 0;
#define CG_CLEAR_STR(name, text) Py_CLEAR(st->s_##name);
    CG_STRINGS(CG_CLEAR_STR)
#undef CG_CLEAR_STR
    for (int i = 0; i < CG_HDR__COUNT; i++)
        Py_CLEAR(st->hdr_names[i]);
    Py_CLEAR(st->ServerType);
    Py_CLEAR(st->ConnType);
    Py_CLEAR(st->OutputType);
    Py_CLEAR(st->AwaitType);
    Py_CLEAR(st->DoneType);
    Py_CLEAR(st->RunnerType);
    Py_CLEAR(st->CycleType);
    Py_CLEAR(st->LifespanType);
    Py_CLEAR(st->WebSocketType);
    Py_CLEAR(st->asgi_ws_dict);
    Py_CLEAR(st->ClientDisconnected);
    Py_CLEAR(st->ASGI2Type);
    Py_CLEAR(st->done);
    Py_CLEAR(st->BufferedProtocol);
    Py_CLEAR(st->asyncio);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->Future);
    Py_CLEAR(st->Task);
    Py_CLEAR(st->task_kwnames);
    Py_CLEAR(st->eager_kwnames);
    Py_CLEAR(st->InvalidStateError);
    Py_CLEAR(st->version);
    Py_CLEAR(st->asgi_dict);
    Py_CLEAR(st->empty_bytes);
    Py_CLEAR(st->empty_str);
    Py_CLEAR(st->sig_servers);
    Py_CLEAR(st->sig_saved);
    Py_CLEAR(st->sig_captured);
    Py_CLEAR(st->sig_loop);
    cg_log_clear(&st->log);
    return 0;
}

static void module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef casgi_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "casgi._casgi",
    .m_doc = "The C core of the casgi ASGI server.",
    .m_size = sizeof(cg_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__casgi(void)
{
    return PyModuleDef_Init(&casgi_module);
}
