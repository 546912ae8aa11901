/* Finding the ASGI application: import string, factory call, ASGI 2
 * detection and the adapter that serves an ASGI 2 app as ASGI 3. */
#include "app.h"

#include <string.h>

/* ---- the ASGI 2 adapter ---- */

/* ASGI2Type instance: calling it with (scope, receive, send) returns
 * app(scope)(receive, send). `app` is owned and never NULL once built. */
typedef struct cg_asgi2 {
    PyObject_HEAD PyObject *app;
} cg_asgi2;

static PyObject *asgi2_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *app = ((cg_asgi2 *)self)->app;
    PyObject *scope, *receive, *send, *instance, *result;

    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "ASGI application takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "asgi2", 3, 3, &scope, &receive, &send))
        return NULL;
    if (!app) {
        PyErr_SetString(PyExc_TypeError, "ASGI 2 adapter without an application");
        return NULL;
    }
    /* Hold the app across the first call: it could drop our reference. */
    Py_INCREF(app);
    instance = PyObject_CallFunctionObjArgs(app, scope, NULL);
    Py_DECREF(app);
    if (!instance)
        return NULL;
    result = PyObject_CallFunctionObjArgs(instance, receive, send, NULL);
    Py_DECREF(instance);
    return result;
}

static int asgi2_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((cg_asgi2 *)self)->app);
    return 0;
}

static int asgi2_clear(PyObject *self)
{
    Py_CLEAR(((cg_asgi2 *)self)->app);
    return 0;
}

static void asgi2_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    asgi2_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *asgi2_repr(PyObject *self)
{
    PyObject *app = ((cg_asgi2 *)self)->app;
    return app ? PyUnicode_FromFormat("<casgi ASGI 2 adapter for %R>", app)
               : PyUnicode_FromString("<casgi ASGI 2 adapter>");
}

static PyObject *asgi2_get_app(PyObject *self, void *closure)
{
    PyObject *app = ((cg_asgi2 *)self)->app;
    (void)closure;
    if (!app)
        Py_RETURN_NONE;
    Py_INCREF(app);
    return app;
}

static PyGetSetDef asgi2_getset[] = {
    {"app", asgi2_get_app, NULL, "The ASGI 2 application being adapted.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot asgi2_slots[] = {
    {Py_tp_call, asgi2_call},
    {Py_tp_traverse, asgi2_traverse},
    {Py_tp_clear, asgi2_clear},
    {Py_tp_dealloc, asgi2_dealloc},
    {Py_tp_repr, asgi2_repr},
    {Py_tp_getset, asgi2_getset},
    {Py_tp_doc, "Serves an ASGI 2 (double-callable) application as ASGI 3."},
    {0, NULL},
};

#ifndef Py_TPFLAGS_DISALLOW_INSTANTIATION
#define Py_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif
#ifndef Py_TPFLAGS_IMMUTABLETYPE
#define Py_TPFLAGS_IMMUTABLETYPE 0
#endif

static PyType_Spec asgi2_spec = {
    .name = "casgi._casgi.ASGI2App",
    .basicsize = sizeof(cg_asgi2),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = asgi2_slots,
};

int cg_app_types_init(PyObject *module, cg_state *st)
{
    st->ASGI2Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &asgi2_spec, NULL);
    return st->ASGI2Type ? 0 : -1;
}

static PyObject *asgi2_wrap(cg_state *st, PyObject *app)
{
    cg_asgi2 *a = PyObject_GC_New(cg_asgi2, st->ASGI2Type);
    if (!a)
        return NULL;
    Py_INCREF(app);
    a->app = app;
    PyObject_GC_Track((PyObject *)a);
    return (PyObject *)a;
}

/* ---- interface detection ---- */

/* 1 when `fn` is a coroutine function, 0 when not, -1 with an exception. */
static int is_coroutine_function(PyObject *fn)
{
    /* Before 3.12 only asyncio's version knows the legacy marker that
     * libraries such as asgiref set; from 3.12 inspect knows it too. */
#if PY_VERSION_HEX < 0x030C0000
    PyObject *mod = PyImport_ImportModule("asyncio");
#else
    PyObject *mod = PyImport_ImportModule("inspect");
#endif
    PyObject *r;
    int v;
    if (!mod)
        return -1;
    r = PyObject_CallMethod(mod, "iscoroutinefunction", "O", fn);
    Py_DECREF(mod);
    if (!r)
        return -1;
    v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

/* ASGI 3 or ASGI 2, decided as uvicorn does: a class is ASGI 3 when it has
 * __await__; a function when it is a coroutine function; any other object
 * when it or its __call__ is a coroutine function. 1/0, or -1. */
static int is_asgi3(PyObject *app)
{
    PyObject *inspect, *r, *call;
    int v;

    if (PyType_Check(app))
        return PyObject_HasAttrString(app, "__await__");
    inspect = PyImport_ImportModule("inspect");
    if (!inspect)
        return -1;
    r = PyObject_CallMethod(inspect, "isfunction", "O", app);
    Py_DECREF(inspect);
    if (!r)
        return -1;
    v = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (v < 0)
        return -1;
    if (v)
        return is_coroutine_function(app);
    /* Bound methods and functools.partial of coroutine functions count too. */
    v = is_coroutine_function(app);
    if (v != 0)
        return v;
    call = PyObject_GetAttrString(app, "__call__");
    if (!call) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    v = is_coroutine_function(call);
    Py_DECREF(call);
    return v;
}

/* ---- loading ---- */

/* "Error loading ASGI app factory: <str(exc)>" with the traceback. */
static void log_factory_error(cg_state *st)
{
    PyObject *t, *v, *tb, *text;
    const char *s;
    char msg[1024];

    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    text = v ? PyObject_Str(v) : NULL;
    s = text ? PyUnicode_AsUTF8(text) : NULL;
    if (!s) {
        PyErr_Clear();
        s = t ? ((PyTypeObject *)t)->tp_name : "unknown error";
    }
    snprintf(msg, sizeof(msg), "Error loading ASGI app factory: %s", s);
    Py_XDECREF(text);
    PyErr_Restore(t, v, tb);
    cg_log_exception(&st->log, msg);
}

/* At trace level: *app wrapped in casgi.logging.MessageLogger, which logs
 * every scope and message on the "<family>.asgi" logger, as uvicorn does.
 * Decided once at startup, so other levels pay nothing. */
static int trace_wrap(cg_state *st, PyObject **app)
{
    PyObject *mod = PyImport_ImportModule("casgi.logging"), *wrapped = NULL;
    if (mod) {
        char name[32];
        snprintf(name, sizeof(name), "%s.asgi", st->log.family);
        wrapped = PyObject_CallMethod(mod, "MessageLogger", "Os", *app, name);
        Py_DECREF(mod);
    }
    if (!wrapped)
        return -1;
    Py_SETREF(*app, wrapped);
    return 0;
}

/* cg_app_prepare; `spec` is the import string the object came from, or NULL,
 * to name it in errors. */
static PyObject *prepare(cg_state *st, PyObject *app, const cg_config *cfg, const char *spec)
{
    char what[512];
    PyObject *obj;
    int v;

    if (spec)
        snprintf(what, sizeof(what), "\"%s\"", spec);
    else
        snprintf(what, sizeof(what), "The application");
    Py_INCREF(app);
    obj = app;
    if (cfg->factory) {
        PyObject *made;
        if (!PyCallable_Check(obj)) {
            cg_log(&st->log, CG_ERROR,
                   "Error loading ASGI app factory: %s is not callable (an object of type '%s').",
                   what, Py_TYPE(obj)->tp_name);
            goto failed;
        }
        made = PyObject_CallObject(obj, NULL);
        if (!made) {
            log_factory_error(st);
            goto failed;
        }
        Py_SETREF(obj, made);
        if (spec)
            snprintf(what, sizeof(what), "The application returned by factory \"%s\"", spec);
    }
    if (!PyCallable_Check(obj)) {
        cg_log(&st->log, CG_ERROR,
               "Error loading ASGI app. %s is not callable (an object of type '%s').", what,
               Py_TYPE(obj)->tp_name);
        goto failed;
    }
    /* --interface asgi3 / asgi2 skip the detection, as uvicorn's do. */
    v = cfg->interface == CG_INTERFACE_ASGI3   ? 1
        : cfg->interface == CG_INTERFACE_ASGI2 ? 0
                                               : is_asgi3(obj);
    if (v < 0) {
        cg_log_exception(&st->log, "Error loading ASGI app. Cannot tell its ASGI version.");
        goto failed;
    }
    if (!v) {
        PyObject *wrapped = asgi2_wrap(st, obj);
        if (!wrapped) {
            cg_log_exception(&st->log, "Error loading ASGI app.");
            goto failed;
        }
        cg_log(&st->log, CG_DEBUG, "ASGI 2 application detected; serving it through an adapter.");
        Py_SETREF(obj, wrapped);
    }
    if (st->log.error_level <= CG_TRACE && trace_wrap(st, &obj) < 0) {
        cg_log_exception(&st->log, "Error loading ASGI app.");
        goto failed;
    }
    return obj;
failed:
    Py_DECREF(obj);
    return NULL;
}

PyObject *cg_app_prepare(cg_state *st, PyObject *app, const cg_config *cfg)
{
    return prepare(st, app, cfg, NULL);
}

/* Puts the absolute app_dir first on sys.path (unless it is there already). */
static int add_app_dir(const char *dir)
{
    PyObject *os_path = NULL, *abs = NULL, *path;
    int rc = -1;

    os_path = PyImport_ImportModule("os.path");
    if (!os_path)
        return -1;
    abs = PyObject_CallMethod(os_path, "abspath", "s", dir && *dir ? dir : ".");
    if (!abs)
        goto done;
    path = PySys_GetObject("path"); /* borrowed */
    if (!path || !PyList_Check(path)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is not a list");
        goto done;
    }
    if (PyList_GET_SIZE(path) > 0) {
        int same = PyObject_RichCompareBool(PyList_GET_ITEM(path, 0), abs, Py_EQ);
        if (same < 0)
            goto done;
        if (same) {
            rc = 0;
            goto done;
        }
    }
    rc = PyList_Insert(path, 0, abs);
done:
    Py_XDECREF(abs);
    Py_DECREF(os_path);
    return rc;
}

/* 1 when the pending exception is ModuleNotFoundError for exactly `name`. */
static int missing_module_is(const char *name)
{
    PyObject *t, *v, *tb, *missing;
    int same = 0;

    if (!PyErr_ExceptionMatches(PyExc_ModuleNotFoundError))
        return 0;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    missing = v ? PyObject_GetAttrString(v, "name") : NULL;
    if (missing && PyUnicode_Check(missing))
        same = PyUnicode_CompareWithASCIIString(missing, name) == 0;
    Py_XDECREF(missing);
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
    return same;
}

PyObject *cg_app_load(cg_state *st, const cg_config *cfg)
{
    const char *spec = cfg->app ? cfg->app : "";
    const char *colon = strchr(spec, ':');
    PyObject *modname = NULL, *attrs = NULL, *parts = NULL, *obj = NULL;
    PyObject *app = NULL;
    char msg[1024];

    if (!colon || colon == spec || colon[1] == '\0') {
        cg_log(&st->log, CG_ERROR,
               "Error loading ASGI app. Import string \"%s\" must be in format "
               "\"<module>:<attribute>\".",
               spec);
        return NULL;
    }
    modname = PyUnicode_FromStringAndSize(spec, colon - spec);
    attrs = modname ? PyUnicode_FromString(colon + 1) : NULL;
    if (!attrs)
        goto internal;
    if (add_app_dir(cfg->app_dir) < 0)
        goto internal;

    /* The C import API keeps importlib's own frames out of tracebacks. */
    obj = PyImport_Import(modname);
    if (!obj) {
        const char *m = PyUnicode_AsUTF8(modname);
        if (m && missing_module_is(m)) {
            PyErr_Clear();
            cg_log(&st->log, CG_ERROR, "Error loading ASGI app. Could not import module \"%U\".",
                   modname);
        } else {
            snprintf(msg, sizeof(msg),
                     "Error loading ASGI app. Importing module \"%.*s\" raised an exception.",
                     (int)(colon - spec), spec);
            cg_log_exception(&st->log, msg);
        }
        goto done;
    }

    {
        PyObject *dot = PyUnicode_FromString(".");
        if (!dot)
            goto internal;
        parts = PyUnicode_Split(attrs, dot, -1);
        Py_DECREF(dot);
    }
    if (!parts)
        goto internal;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *next = PyObject_GetAttr(obj, PyList_GET_ITEM(parts, i));
        if (!next) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                cg_log(&st->log, CG_ERROR,
                       "Error loading ASGI app. Attribute \"%U\" not found in module \"%U\".",
                       attrs, modname);
            } else {
                snprintf(msg, sizeof(msg),
                         "Error loading ASGI app. Getting attribute \"%s\" of module \"%.*s\" "
                         "raised an exception.",
                         colon + 1, (int)(colon - spec), spec);
                cg_log_exception(&st->log, msg);
            }
            goto done;
        }
        Py_SETREF(obj, next);
    }
    app = prepare(st, obj, cfg, spec);
    goto done;
internal:
    cg_log_exception(&st->log, "Error loading ASGI app.");
done:
    Py_XDECREF(parts);
    Py_XDECREF(obj);
    Py_XDECREF(attrs);
    Py_XDECREF(modname);
    return app;
}
