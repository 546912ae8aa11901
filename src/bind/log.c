/* Logging through Python's `logging` module: setup from the configuration,
 * and the calls the server makes (messages, exceptions, access lines). */
#include "log.h"

#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "http1.h"
#include "options.h"

/* Python levels by enum cg_log_level. */
static const int level_values[] = {CG_CRITICAL, CG_ERROR, CG_WARNING, CG_INFO, CG_DEBUG, CG_TRACE};

/* ---- errors during setup ---- */

void cg_print_exception_line(const char *prefix)
{
    PyObject *t, *v, *tb, *text = NULL;
    const char *s = NULL;

    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (v)
        text = PyUnicode_FromFormat("%s: %S", Py_TYPE(v)->tp_name, v);
    if (text)
        s = PyUnicode_AsUTF8(text);
    if (!s) {
        PyErr_Clear();
        s = "unknown error";
    }
    fflush(stdout);
    if (prefix)
        fprintf(stderr, "Error: %s: ", prefix);
    else
        fputs("Error: ", stderr);
    /* One line whatever the exception's text holds. */
    for (int blank = 0; *s; s++) {
        int ws = *s == '\n' || *s == '\r' || *s == '\t' || *s == ' ';
        if (!ws || !blank)
            fputc(ws ? ' ' : *s, stderr);
        blank = ws;
    }
    fputc('\n', stderr);
    fflush(stderr);
    Py_XDECREF(text);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* Reads a whole file as str (UTF-8). NULL with no exception set and a
 * printed error when the file cannot be read. */
static PyObject *read_text(const char *path, const char *what)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0;
    PyObject *text = NULL;

    if (!f) {
        fprintf(stderr, "Error: cannot read %s '%s': %s\n", what, path, strerror(errno));
        return NULL;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            char *bigger = PyMem_Realloc(data, cap ? cap * 2 : 4096);
            if (!bigger) {
                PyErr_NoMemory();
                goto out;
            }
            data = bigger;
            cap = cap ? cap * 2 : 4096;
        }
        got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "Error: cannot read %s '%s': %s\n", what, path, strerror(errno));
        goto out;
    }
    text = PyUnicode_DecodeUTF8(data ? data : "", (Py_ssize_t)len, "strict");
out:
    if (!text && PyErr_Occurred()) {
        char prefix[600];
        snprintf(prefix, sizeof(prefix), "cannot read %s '%s'", what, path);
        cg_print_exception_line(prefix);
    }
    PyMem_Free(data);
    fclose(f);
    return text;
}

/* formatters[name]["use_colors"] = value, when that formatter is a dict. */
static int set_use_colors(PyObject *formatters, const char *name, int value)
{
    PyObject *fmt;
    if (!formatters || !PyDict_Check(formatters))
        return 0;
    fmt = PyDict_GetItemString(formatters, name); /* borrowed */
    if (!fmt || !PyDict_Check(fmt))
        return 0;
    return PyDict_SetItemString(fmt, "use_colors", value ? Py_True : Py_False);
}

static int stream_isatty(const char *name)
{
    PyObject *stream = PySys_GetObject(name); /* borrowed */
    PyObject *r;
    int tty;
    if (!stream || stream == Py_None)
        return 0;
    r = PyObject_CallMethod(stream, "isatty", NULL);
    if (!r) {
        PyErr_Clear();
        return 0;
    }
    tty = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (tty < 0) {
        PyErr_Clear();
        tty = 0;
    }
    return tty;
}

/* Calls casgi.logging.<func>(*args): the Python side of --log-config. */
static int call_casgi_logging(const char *func, PyObject *args)
{
    PyObject *mod = PyImport_ImportModule("casgi.logging"), *fn, *r = NULL;
    if (!mod)
        return -1;
    fn = PyObject_GetAttrString(mod, func);
    if (fn)
        r = PyObject_CallObject(fn, args);
    Py_XDECREF(fn);
    Py_DECREF(mod);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* A --log-config value that is a dictConfig as JSON text itself (what
 * run(log_config=dict) passes) rather than a path. */
static int is_inline_json(const char *v)
{
    while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
        v++;
    return *v == '{';
}

/* --log-config as a dictConfig: a JSON or YAML file, or inline JSON. */
static int load_dict_config(const cg_config *cfg, int yaml)
{
    PyObject *text = NULL, *parser = NULL, *conf = NULL, *args = NULL;
    int rc = -1, inline_json = is_inline_json(cfg->log_config);
    char prefix[600];

    text = inline_json ? PyUnicode_FromString(cfg->log_config)
                       : read_text(cfg->log_config, "log config");
    if (!text) {
        if (PyErr_Occurred())
            cg_print_exception_line("invalid log config");
        return -1;
    }
    if (inline_json)
        snprintf(prefix, sizeof(prefix), "invalid log config");
    else
        snprintf(prefix, sizeof(prefix), "invalid log config '%s'", cfg->log_config);
    if (yaml) {
        parser = PyImport_ImportModule("yaml");
        if (!parser) {
            if (PyErr_ExceptionMatches(PyExc_ImportError)) {
                PyErr_Clear();
                fprintf(stderr,
                        "Error: log config '%s' is YAML, but PyYAML is not installed "
                        "(pip install pyyaml)\n",
                        cfg->log_config);
                goto done;
            }
            goto failed;
        }
        conf = PyObject_CallMethod(parser, "safe_load", "O", text);
    } else {
        parser = PyImport_ImportModule("json");
        if (!parser)
            goto failed;
        conf = PyObject_CallMethod(parser, "loads", "O", text);
    }
    if (!conf)
        goto failed;
    if (!PyDict_Check(conf)) {
        fprintf(stderr, "Error: %s: the top level is not a mapping\n", prefix);
        goto done;
    }
    args = Py_BuildValue("(OO)", conf,
                         cfg->use_colors < 0 ? Py_None
                         : cfg->use_colors   ? Py_True
                                             : Py_False);
    if (!args || call_casgi_logging("dict_config", args) < 0)
        goto failed;
    rc = 0;
    goto done;
failed:
    cg_print_exception_line(prefix);
done:
    Py_XDECREF(args);
    Py_XDECREF(conf);
    Py_XDECREF(parser);
    Py_DECREF(text);
    return rc;
}

/* --log-config as an INI file for logging.config.fileConfig. */
static int load_file_config(const cg_config *cfg)
{
    PyObject *args;
    FILE *f = fopen(cfg->log_config, "rb");
    char prefix[600];

    if (!f) {
        fprintf(stderr, "Error: cannot read log config '%s': %s\n", cfg->log_config,
                strerror(errno));
        return -1;
    }
    fclose(f);
    args = Py_BuildValue("(s)", cfg->log_config);
    if (args && call_casgi_logging("file_config", args) == 0) {
        Py_DECREF(args);
        return 0;
    }
    Py_XDECREF(args);
    snprintf(prefix, sizeof(prefix), "invalid log config '%s'", cfg->log_config);
    cg_print_exception_line(prefix);
    return -1;
}

/* The access formatter's format when --access-log-format or --access-log-json
 * makes the line. */
#define CG_MESSAGE_FMT "%(message)s"

static int cg_config_alog(const cg_config *cfg)
{
    return cfg->access_log_format || cfg->access_log_json > 0;
}

/* casgi.logging.LOGGING_CONFIG with use_colors resolved: explicit, or each
 * formatter coloured when its stream is a terminal. */
static int load_default_config(PyObject *logging_config, const cg_config *cfg)
{
    PyObject *mod = NULL, *base = NULL, *copy_mod = NULL, *conf = NULL, *r = NULL;
    PyObject *formatters;
    int rc = -1;
    int err_colors = cfg->use_colors >= 0 ? cfg->use_colors : stream_isatty("stderr");
    int out_colors = cfg->use_colors >= 0 ? cfg->use_colors : stream_isatty("stdout");

    mod = PyImport_ImportModule("casgi.logging");
    if (!mod)
        goto failed;
    base = PyObject_GetAttrString(mod, "LOGGING_CONFIG");
    copy_mod = PyImport_ImportModule("copy");
    if (!base || !copy_mod)
        goto failed;
    conf = PyObject_CallMethod(copy_mod, "deepcopy", "O", base);
    if (!conf)
        goto failed;
    formatters = PyDict_Check(conf) ? PyDict_GetItemString(conf, "formatters") : NULL;
    if (set_use_colors(formatters, "default", err_colors) < 0 ||
        set_use_colors(formatters, "access", out_colors) < 0)
        goto failed;
    if (cg_config_alog(cfg)) {
        /* The formatted line is the whole line, as gunicorn's access log
         * writes it (no level prefix). */
        PyObject *access = formatters ? PyDict_GetItemString(formatters, "access") : NULL;
        if (access && PyDict_Check(access)) {
            PyObject *fmt = PyUnicode_FromString(CG_MESSAGE_FMT);
            int bad = !fmt || PyDict_SetItemString(access, "fmt", fmt) < 0;
            Py_XDECREF(fmt);
            if (bad)
                goto failed;
        }
    }
    r = PyObject_CallMethod(logging_config, "dictConfig", "O", conf);
    if (!r)
        goto failed;
    rc = 0;
    goto done;
failed:
    cg_print_exception_line("cannot configure logging");
done:
    Py_XDECREF(r);
    Py_XDECREF(conf);
    Py_XDECREF(copy_mod);
    Py_XDECREF(base);
    Py_XDECREF(mod);
    return rc;
}

/* The logger named st->family + suffix ("casgi" + ".error"). */
static PyObject *get_family_logger(PyObject *logging, const cg_log_state *st, const char *suffix)
{
    return PyObject_CallMethod(logging, "getLogger", "N",
                               PyUnicode_FromFormat("%s%s", st->family, suffix));
}

/* st->family from casgi.logging.logger_family(): "uvicorn" when the user's
 * configuration set up uvicorn's loggers and none of casgi's. */
static int logger_family(cg_log_state *st)
{
    PyObject *mod = PyImport_ImportModule("casgi.logging");
    PyObject *name = mod ? PyObject_CallMethod(mod, "logger_family", NULL) : NULL;
    const char *s = name ? PyUnicode_AsUTF8(name) : NULL;
    int rc = -1;
    if (s && strlen(s) < sizeof(st->family)) {
        strcpy(st->family, s);
        rc = 0;
    }
    Py_XDECREF(name);
    Py_XDECREF(mod);
    return rc;
}

static int set_level_of(PyObject *logging, const cg_log_state *st, const char *suffix, int level)
{
    PyObject *logger = get_family_logger(logging, st, suffix), *r;
    if (!logger)
        return -1;
    r = PyObject_CallMethod(logger, "setLevel", "i", level);
    Py_DECREF(logger);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Bool-returning method call; -1 on error. */
static int call_bool(PyObject *obj, const char *meth, int arg)
{
    PyObject *r = PyObject_CallMethod(obj, meth, "i", arg);
    int v;
    if (!r)
        return -1;
    v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return v;
}

static int intern_cached(PyObject **slot, const char *text)
{
    if (!*slot)
        *slot = PyUnicode_InternFromString(text);
    return *slot ? 0 : -1;
}

/* ---- the access fast path ---- */

/* With the default configuration the access logger has one StreamHandler
 * with casgi.logging.AccessFormatter and its default format, no filters, and
 * does not propagate. Then a line is formatted here, with the texts the
 * formatter itself produced at setup, and written to the handler's stream:
 * the same bytes as the LogRecord path at a fraction of the cost. Every call
 * first checks (through the objects' __dict__s, no Python calls) that nothing
 * was reconfigured since; if anything was, the LogRecord path is taken. */

#define CG_STATUS_MIN 100
#define CG_STATUS_MAX 599
#define CG_STATUS_TEXT 48

struct cg_log_fast {
    PyObject *logger_dict;  /* casgi.access.__dict__ */
    PyObject *handler;      /* its one handler */
    PyObject *handler_dict; /* handler.__dict__ */
    PyObject *formatter;    /* handler.formatter at setup */
    PyObject *stream;       /* handler.stream at setup */
    PyObject *handlers;     /* "handlers" and the other attribute names */
    PyObject *filters;
    PyObject *disabled;
    PyObject *level;
    PyObject *propagate;
    PyObject *s_stream;
    PyObject *s_formatter;
    PyObject *s_write;
    PyObject *s_flush;
    PyObject *get_running_loop; /* asyncio._get_running_loop */
    PyObject *s_call_soon;
    PyObject *flush_state;  /* capsule of struct cg_flush_state */
    PyObject *flush_fn;     /* callable flushing the stream, for call_soon */
    PyObject *manager_dict; /* logging.Logger.manager.__dict__ (logging.disable) */
    PyObject *s_disable;
    long logger_level; /* logger.level at setup */
    int colors;
    char prefix[64]; /* levelprefix and the space after it */
    size_t prefix_len;
    char term[8];
    size_t term_len;
    unsigned char status_len[CG_STATUS_MAX - CG_STATUS_MIN + 1]; /* 0 = not cached */
    char status[CG_STATUS_MAX - CG_STATUS_MIN + 1][CG_STATUS_TEXT];
};

/* Access lines are formatted into `lines` and handed to the stream once per
 * event loop iteration (one stream.write and one flush, which is a write(2)):
 * under load one iteration completes many requests. The state lives in a
 * capsule that the scheduled callback also holds, so a pending flush
 * outlives a reconfiguration safely; lines still pending are written out
 * before any line that takes the logging path, and when the state goes. */
struct cg_flush_state {
    PyObject *stream;
    cg_buf lines; /* formatted ASCII lines not yet given to the stream */
    int pending;  /* a flush is scheduled with call_soon */
};

/* Gives the pending lines to the stream and flushes it. Keeps a pending
 * exception; a failing stream is ignored, as a logging handler would. */
static void flush_lines(struct cg_flush_state *fs)
{
    PyObject *t, *v, *tb, *text, *r;
    PyErr_Fetch(&t, &v, &tb);
    if (fs->lines.len > fs->lines.pos) {
        text = PyUnicode_DecodeASCII(fs->lines.data + fs->lines.pos,
                                     (Py_ssize_t)(fs->lines.len - fs->lines.pos), "replace");
        cg_buf_reset(&fs->lines);
        r = text ? PyObject_CallMethod(fs->stream, "write", "O", text) : NULL;
        Py_XDECREF(text);
        Py_XDECREF(r);
    }
    r = PyObject_CallMethod(fs->stream, "flush", NULL);
    Py_XDECREF(r);
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
}

#define CG_FLUSH_CAPSULE "casgi._casgi.access_flush"

static void flush_state_free(PyObject *capsule)
{
    struct cg_flush_state *fs = PyCapsule_GetPointer(capsule, CG_FLUSH_CAPSULE);
    if (!fs)
        return;
    flush_lines(fs);
    cg_buf_free(&fs->lines);
    Py_XDECREF(fs->stream);
    PyMem_Free(fs);
}

static PyObject *flush_now(PyObject *capsule, PyObject *unused)
{
    struct cg_flush_state *fs = PyCapsule_GetPointer(capsule, CG_FLUSH_CAPSULE);
    (void)unused;
    if (!fs)
        return NULL;
    fs->pending = 0;
    flush_lines(fs);
    Py_RETURN_NONE;
}

static PyMethodDef flush_def = {"casgi_access_flush", flush_now, METH_NOARGS,
                                "Flushes the access log stream."};

static void fast_free(struct cg_log_fast *f)
{
    if (!f)
        return;
    Py_XDECREF(f->logger_dict);
    Py_XDECREF(f->handler);
    Py_XDECREF(f->handler_dict);
    Py_XDECREF(f->formatter);
    Py_XDECREF(f->stream);
    Py_XDECREF(f->handlers);
    Py_XDECREF(f->filters);
    Py_XDECREF(f->disabled);
    Py_XDECREF(f->level);
    Py_XDECREF(f->propagate);
    Py_XDECREF(f->s_stream);
    Py_XDECREF(f->s_formatter);
    Py_XDECREF(f->s_write);
    Py_XDECREF(f->s_flush);
    Py_XDECREF(f->get_running_loop);
    Py_XDECREF(f->s_call_soon);
    Py_XDECREF(f->flush_fn);
    Py_XDECREF(f->flush_state);
    Py_XDECREF(f->manager_dict);
    Py_XDECREF(f->s_disable);
    PyMem_Free(f);
}

/* Copies an ASCII str into buf; -1 when it is not ASCII or does not fit. */
static int ascii_copy(PyObject *s, char *buf, size_t cap, size_t *len)
{
    Py_ssize_t n;
    const char *u;
    if (!s || !PyUnicode_Check(s) || !PyUnicode_IS_ASCII(s))
        return -1;
    u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u || (size_t)n >= cap)
        return -1;
    memcpy(buf, u, (size_t)n);
    *len = (size_t)n;
    return 0;
}

/* Borrowed d[key]; NULL when absent (no exception is left set). */
static PyObject *dict_get(PyObject *d, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (!v)
        PyErr_Clear();
    return v;
}

static int list_empty(PyObject *l)
{
    return l && PyList_Check(l) && PyList_GET_SIZE(l) == 0;
}

/* 1 when the access logger still has the configuration fast_init saw. */
static int fast_usable(const struct cg_log_fast *f)
{
    PyObject *v;
    v = dict_get(f->logger_dict, f->handlers);
    if (!v || !PyList_Check(v) || PyList_GET_SIZE(v) != 1 || PyList_GET_ITEM(v, 0) != f->handler)
        return 0;
    if (!list_empty(dict_get(f->logger_dict, f->filters)) ||
        !list_empty(dict_get(f->handler_dict, f->filters)))
        return 0;
    if (dict_get(f->handler_dict, f->s_stream) != f->stream ||
        dict_get(f->handler_dict, f->s_formatter) != f->formatter)
        return 0;
    if (dict_get(f->logger_dict, f->disabled) != Py_False ||
        dict_get(f->logger_dict, f->propagate) != Py_False)
        return 0;
    v = dict_get(f->logger_dict, f->level);
    if (!v || !PyLong_CheckExact(v) || PyLong_AsLong(v) != f->logger_level) {
        PyErr_Clear(); /* an int too large for a long */
        return 0;
    }
    v = dict_get(f->manager_dict, f->s_disable);
    if (!v || !PyLong_CheckExact(v) || PyLong_AsLong(v) >= CG_INFO) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static PyObject *intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot;
}

/* Builds the fast path state for st->access_logger, or leaves st->fast NULL
 * when the configuration is not the default one. Never raises. */
static void fast_init(cg_log_state *st, PyObject *logging)
{
    struct cg_log_fast *f = NULL;
    PyObject *handlers = NULL, *mod = NULL, *cls = NULL, *want = NULL, *fmt = NULL;
    PyObject *style = NULL, *style_cls = NULL, *handler_cls = NULL, *logger_cls = NULL;
    PyObject *manager = NULL, *levelname = NULL, *prefix = NULL, *colors = NULL, *term = NULL;
    PyObject *lvl = NULL, *hlvl = NULL;
    size_t n;

    fast_free(st->fast);
    st->fast = NULL;
    if (!st->access_enabled || !st->access_logger)
        return;
    f = PyMem_Calloc(1, sizeof(*f));
    if (!f)
        goto done;

    /* One plain StreamHandler. */
    f->logger_dict = PyObject_GetAttrString(st->access_logger, "__dict__");
    handlers = PyObject_GetAttrString(st->access_logger, "handlers");
    if (!f->logger_dict || !PyDict_Check(f->logger_dict) || !handlers || !PyList_Check(handlers) ||
        PyList_GET_SIZE(handlers) != 1)
        goto done;
    f->handler = PyList_GET_ITEM(handlers, 0);
    Py_INCREF(f->handler);
    handler_cls = PyObject_GetAttrString(logging, "StreamHandler");
    if (!handler_cls || (PyObject *)Py_TYPE(f->handler) != handler_cls)
        goto done;
    f->handler_dict = PyObject_GetAttrString(f->handler, "__dict__");
    f->formatter = PyObject_GetAttrString(f->handler, "formatter");
    f->stream = PyObject_GetAttrString(f->handler, "stream");
    hlvl = PyObject_GetAttrString(f->handler, "level");
    if (!f->handler_dict || !PyDict_Check(f->handler_dict) || !f->formatter || !f->stream ||
        !hlvl || !PyLong_Check(hlvl) || PyLong_AsLong(hlvl) > CG_INFO)
        goto done;

    /* Exactly AccessFormatter with the default %-style format. */
    mod = PyImport_ImportModule("casgi.logging");
    cls = mod ? PyObject_GetAttrString(mod, "AccessFormatter") : NULL;
    if (!cls || (PyObject *)Py_TYPE(f->formatter) != cls)
        goto done;
    if (st->alog) {
        want = PyUnicode_FromString(CG_MESSAGE_FMT);
    } else {
        want = PyObject_GetAttrString(mod, "LOGGING_CONFIG");
        Py_XSETREF(want, want ? PyMapping_GetItemString(want, "formatters") : NULL);
        Py_XSETREF(want, want ? PyMapping_GetItemString(want, "access") : NULL);
        Py_XSETREF(want, want ? PyMapping_GetItemString(want, "fmt") : NULL);
    }
    fmt = PyObject_GetAttrString(f->formatter, "_fmt");
    if (!want || !fmt || PyObject_RichCompareBool(fmt, want, Py_EQ) != 1)
        goto done;
    style = PyObject_GetAttrString(f->formatter, "_style");
    style_cls = PyObject_GetAttrString(logging, "PercentStyle");
    if (!style || !style_cls || (PyObject *)Py_TYPE(style) != style_cls)
        goto done;

    if (!intern(&f->handlers, "handlers") || !intern(&f->filters, "filters") ||
        !intern(&f->disabled, "disabled") || !intern(&f->level, "level") ||
        !intern(&f->propagate, "propagate") || !intern(&f->s_stream, "stream") ||
        !intern(&f->s_formatter, "formatter") || !intern(&f->s_write, "write") ||
        !intern(&f->s_flush, "flush") || !intern(&f->s_call_soon, "call_soon"))
        goto done;
    {
        struct cg_flush_state *fs = PyMem_Calloc(1, sizeof(*fs));
        PyObject *asyncio = PyImport_ImportModule("asyncio");
        if (asyncio) {
            f->get_running_loop = PyObject_GetAttrString(asyncio, "_get_running_loop");
            Py_DECREF(asyncio);
        }
        if (!fs || !f->get_running_loop) {
            PyMem_Free(fs);
            goto done;
        }
        Py_INCREF(f->stream);
        fs->stream = f->stream;
        f->flush_state = PyCapsule_New(fs, CG_FLUSH_CAPSULE, flush_state_free);
        if (!f->flush_state) {
            Py_DECREF(fs->stream);
            PyMem_Free(fs);
            goto done;
        }
        f->flush_fn = PyCFunction_New(&flush_def, f->flush_state);
        if (!f->flush_fn)
            goto done;
    }

    /* The texts, as the formatter itself makes them. */
    levelname = PyObject_CallMethod(logging, "getLevelName", "i", CG_INFO);
    prefix = levelname ? PyObject_CallMethod(f->formatter, "level_prefix", "Oi", levelname, CG_INFO)
                       : NULL;
    if (ascii_copy(prefix, f->prefix, sizeof(f->prefix) - 1, &n) < 0)
        goto done;
    f->prefix[n] = ' ';
    f->prefix_len = n + 1;
    colors = PyObject_GetAttrString(f->formatter, "use_colors");
    f->colors = colors ? PyObject_IsTrue(colors) : -1;
    if (f->colors < 0)
        goto done;
    for (int code = CG_STATUS_MIN; code <= CG_STATUS_MAX; code++) {
        PyObject *t = PyObject_CallMethod(f->formatter, "get_status_code", "i", code);
        size_t len;
        if (ascii_copy(t, f->status[code - CG_STATUS_MIN], CG_STATUS_TEXT, &len) == 0)
            f->status_len[code - CG_STATUS_MIN] = (unsigned char)len;
        Py_XDECREF(t);
        PyErr_Clear();
    }
    term = PyObject_GetAttrString(f->handler, "terminator");
    if (ascii_copy(term, f->term, sizeof(f->term), &f->term_len) < 0)
        goto done;

    /* The logger's level now, and logging.disable(). */
    lvl = PyObject_GetAttrString(st->access_logger, "level");
    if (!lvl || !PyLong_Check(lvl))
        goto done;
    f->logger_level = PyLong_AsLong(lvl);
    logger_cls = PyObject_GetAttrString(logging, "Logger");
    manager = logger_cls ? PyObject_GetAttrString(logger_cls, "manager") : NULL;
    f->manager_dict = manager ? PyObject_GetAttrString(manager, "__dict__") : NULL;
    if (!f->manager_dict || !PyDict_Check(f->manager_dict))
        goto done;
    /* logging.disable() stores its level in manager._disable (a property
     * named "disable" reads it); older versions store "disable" itself. */
    if (!intern(&f->s_disable, "_disable"))
        goto done;
    if (!dict_get(f->manager_dict, f->s_disable)) {
        Py_CLEAR(f->s_disable);
        if (!intern(&f->s_disable, "disable"))
            goto done;
    }
    if (!fast_usable(f))
        goto done;
    st->fast = f;
    f = NULL;
done:
    PyErr_Clear();
    fast_free(f);
    Py_XDECREF(hlvl);
    Py_XDECREF(lvl);
    Py_XDECREF(term);
    Py_XDECREF(colors);
    Py_XDECREF(prefix);
    Py_XDECREF(levelname);
    Py_XDECREF(manager);
    Py_XDECREF(logger_cls);
    Py_XDECREF(handler_cls);
    Py_XDECREF(style_cls);
    Py_XDECREF(style);
    Py_XDECREF(fmt);
    Py_XDECREF(want);
    Py_XDECREF(cls);
    Py_XDECREF(mod);
    Py_XDECREF(handlers);
}

/* st->root_path = a copy of --root-path: the access line shows the full path,
 * root path included, as uvicorn's does. */
static int set_root_path(cg_log_state *st, const char *root)
{
    size_t n = root ? strlen(root) : 0;
    char *copy = NULL;
    if (n) {
        copy = PyMem_Malloc(n);
        if (!copy) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(copy, root, n);
    }
    PyMem_Free((void *)st->root_path.base);
    st->root_path.base = copy;
    st->root_path.len = n;
    return 0;
}

static void alog_clear(cg_log_state *st)
{
    if (st->alog) {
        cg_alog_free(st->alog);
        PyMem_Free(st->alog);
        st->alog = NULL;
    }
    Py_CLEAR(st->alog_fmt);
}

/* st->alog: --access-log-format or --access-log-json compiled for this
 * process (the pid is its own). 0, or -1 after printing the error. */
static int set_alog(cg_log_state *st, const cg_config *cfg)
{
    char err[CG_ALOG_MAX_FORMAT + 200];
    alog_clear(st);
    if (!cg_config_alog(cfg))
        return 0;
    st->alog = PyMem_Malloc(sizeof(*st->alog));
    if (!st->alog) {
        fprintf(stderr, "Error: out of memory\n");
        return -1;
    }
    int rc = cfg->access_log_json > 0 ? cg_alog_init_json(st->alog, (long)getpid())
                                      : cg_alog_compile(st->alog, cfg->access_log_format,
                                                        (long)getpid(), err, sizeof(err));
    if (rc < 0) {
        PyMem_Free(st->alog);
        st->alog = NULL;
        fprintf(stderr, "Error: invalid value for '--access-log-format': %s\n",
                cfg->access_log_json > 0 ? "out of memory" : err);
        return -1;
    }
    st->alog_fmt = PyUnicode_DecodeUTF8(st->alog->fmt, (Py_ssize_t)st->alog->fmt_len, "replace");
    if (!st->alog_fmt) {
        cg_print_exception_line("cannot configure logging");
        alog_clear(st);
        return -1;
    }
    return 0;
}

/* configure: 1 to apply --log-config or the default configuration, 0 to keep
 * the handlers and levels the host (gunicorn) has set. */
static int log_setup(cg_log_state *st, const cg_config *cfg, int configure)
{
    PyObject *logging = NULL, *logging_config = NULL, *r = NULL;
    PyObject *error_logger = NULL, *access_logger = NULL, *lvl = NULL;
    int level = CG_INFO, enabled, rc = -1;

    if (intern_cached(&st->s_info, "info") < 0 ||
        intern_cached(&st->access_fmt, "%s - \"%s %s HTTP/%s\" %d") < 0 ||
        intern_cached(&st->v1_0, "1.0") < 0 || intern_cached(&st->v1_1, "1.1") < 0 ||
        intern_cached(&st->v2, "2") < 0)
        goto failed;
    if (cfg->log_level >= 0 && cfg->log_level <= CG_LOG_TRACE)
        level = level_values[cfg->log_level];

    logging = PyImport_ImportModule("logging");
    logging_config = logging ? PyImport_ImportModule("logging.config") : NULL;
    if (!logging_config)
        goto failed;
    r = PyObject_CallMethod(logging, "addLevelName", "is", CG_TRACE, "TRACE");
    if (!r)
        goto failed;
    Py_CLEAR(r);

    strcpy(st->family, "casgi");
    if (!configure) {
        /* The host configured the loggers. */
    } else if (cfg->log_config && !*cfg->log_config) {
        /* run(log_config=None): the app's own logging configuration stays. */
    } else if (cfg->log_config) {
        const char *p = cfg->log_config;
        int yaml = ends_with(p, ".yaml") || ends_with(p, ".yml");
        int loaded = yaml || ends_with(p, ".json") || is_inline_json(p)
                         ? load_dict_config(cfg, yaml)
                         : load_file_config(cfg);
        if (loaded < 0)
            goto done;
    } else if (load_default_config(logging_config, cfg) < 0) {
        goto done;
    }
    if (configure && cfg->log_config && logger_family(st) < 0)
        goto failed;

    if (configure &&
        (set_level_of(logging, st, "", level) < 0 ||
         set_level_of(logging, st, ".error", level) < 0 ||
         set_level_of(logging, st, ".asgi", level) < 0 ||
         set_level_of(logging, st, ".access", cfg->access_log ? level : CG_CRITICAL + 1) < 0))
        goto failed;

    error_logger = get_family_logger(logging, st, ".error");
    access_logger = error_logger ? get_family_logger(logging, st, ".access") : NULL;
    if (!access_logger)
        goto failed;
    lvl = PyObject_CallMethod(error_logger, "getEffectiveLevel", NULL);
    if (!lvl)
        goto failed;
    {
        long lv = PyLong_AsLong(lvl);
        int disabled;
        PyObject *d;
        if (lv == -1 && PyErr_Occurred())
            goto failed;
        /* A logger a dictConfig disabled logs nothing whatever its level. */
        d = PyObject_GetAttrString(error_logger, "disabled");
        disabled = d ? PyObject_IsTrue(d) : -1;
        Py_XDECREF(d);
        if (disabled < 0)
            goto failed;
        level = disabled || lv > INT_MAX ? INT_MAX : (int)lv;
    }
    enabled = cfg->access_log ? call_bool(access_logger, "isEnabledFor", CG_INFO) : 0;
    if (enabled < 0)
        goto failed;

    Py_XSETREF(st->error_logger, error_logger);
    Py_XSETREF(st->access_logger, access_logger);
    error_logger = access_logger = NULL;
    st->error_level = level;
    st->access_enabled = enabled;
    if (set_root_path(st, cfg->root_path) < 0)
        goto failed;
    if (set_alog(st, cfg) < 0)
        goto done;
    if (cfg->log_config || !configure) {
        fast_free(st->fast);
        st->fast = NULL;
    } else {
        fast_init(st, logging);
    }
    rc = 0;
    goto done;
failed:
    cg_print_exception_line("cannot configure logging");
done:
    Py_XDECREF(lvl);
    Py_XDECREF(access_logger);
    Py_XDECREF(error_logger);
    Py_XDECREF(r);
    Py_XDECREF(logging_config);
    Py_XDECREF(logging);
    return rc;
}

/* ---- uvicorn's implementation options ---- */

/* One INFO line for each uvicorn implementation option given, naming what
 * serves it. */
static void log_dropin_options(cg_log_state *log, const cg_config *cfg)
{
    static const char *const http_names[] = {"auto", "h11", "httptools"};
    static const char *const ws_names[] = {"websockets", "wsproto", "websockets-sansio"};

    if (cfg->http > CG_HTTP_AUTO && cfg->http <= CG_HTTP_HTTPTOOLS)
        cg_log(log, CG_INFO, "--http %s: casgi's own HTTP/1.1 implementation serves it.",
               http_names[cfg->http]);
    if (cfg->ws >= CG_WS_WEBSOCKETS && cfg->ws <= CG_WS_WEBSOCKETS_SANSIO)
        cg_log(log, CG_INFO, "--ws %s: casgi's own WebSocket implementation serves it.",
               ws_names[cfg->ws - CG_WS_WEBSOCKETS]);
    if (cfg->interface == CG_INTERFACE_ASGI3)
        cg_log(log, CG_INFO,
               "--interface asgi3: the application is called as ASGI 3 without "
               "detection.");
    else if (cfg->interface == CG_INTERFACE_ASGI2)
        cg_log(log, CG_INFO, "--interface asgi2: casgi's ASGI 2 adapter serves the application.");
    if (cfg->h11_max_incomplete_event_size > 0)
        cg_log(log, CG_INFO,
               "--h11-max-incomplete-event-size %ld: casgi's own HTTP/1.1 parser serves it; an "
               "incomplete request head longer than that gets 431.",
               cfg->h11_max_incomplete_event_size);
    if (cfg->reset_contextvars > 0)
        cg_log(log, CG_INFO,
               "--reset-contextvars: casgi's behaviour already; every request runs in a fresh copy "
               "of the context the server started with.");
}

int cg_log_setup(cg_log_state *st, const cg_config *cfg)
{
    if (log_setup(st, cfg, 1) < 0)
        return -1;
    /* Once, from the process the user started (not again in each worker). */
    if (!getenv("CASGI_WORKER"))
        log_dropin_options(st, cfg);
    return 0;
}

int cg_log_attach(cg_log_state *st, const cg_config *cfg)
{
    return log_setup(st, cfg, 0);
}

void cg_log_clear(cg_log_state *st)
{
    Py_CLEAR(st->error_logger);
    Py_CLEAR(st->access_logger);
    Py_CLEAR(st->s_info);
    Py_CLEAR(st->access_fmt);
    Py_CLEAR(st->v1_0);
    Py_CLEAR(st->v1_1);
    Py_CLEAR(st->v2);
    alog_clear(st);
    fast_free(st->fast);
    st->fast = NULL;
    st->access_enabled = 0;
    st->error_level = 0;
    (void)set_root_path(st, NULL);
}

int cg_log_traverse(cg_log_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->error_logger);
    Py_VISIT(st->access_logger);
    Py_VISIT(st->s_info);
    Py_VISIT(st->access_fmt);
    Py_VISIT(st->v1_0);
    Py_VISIT(st->v1_1);
    Py_VISIT(st->v2);
    Py_VISIT(st->alog_fmt);
    if (st->fast) {
        Py_VISIT(st->fast->logger_dict);
        Py_VISIT(st->fast->handler);
        Py_VISIT(st->fast->handler_dict);
        Py_VISIT(st->fast->formatter);
        Py_VISIT(st->fast->stream);
        Py_VISIT(st->fast->manager_dict);
    }
    return 0;
}

/* ---- messages ---- */

static const char *level_name(int level)
{
    if (level >= CG_CRITICAL)
        return "CRITICAL";
    if (level >= CG_ERROR)
        return "ERROR";
    if (level >= CG_WARNING)
        return "WARNING";
    if (level >= CG_INFO)
        return "INFO";
    if (level >= CG_DEBUG)
        return "DEBUG";
    return "TRACE";
}

/* Before cg_log_setup (or after cg_log_clear) messages still reach stderr. */
static void fallback_write(int level, PyObject *msg)
{
    const char *s = PyUnicode_AsUTF8(msg);
    const char *name = level_name(level);
    if (!s) {
        PyErr_Clear();
        return;
    }
    fflush(stdout);
    fprintf(stderr, "%s:%*s %s\n", name, (int)(8 - strlen(name)), "", s);
    fflush(stderr);
}

void cg_log(cg_log_state *st, int level, const char *fmt, ...)
{
    PyObject *t, *v, *tb, *msg, *r = NULL;
    va_list ap;

    if (level < st->error_level || (!st->error_logger && level < CG_INFO))
        return;
    PyErr_Fetch(&t, &v, &tb);
    va_start(ap, fmt);
    msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg) {
        if (st->error_logger) {
            /* No args: logging leaves a '%' in msg alone. */
            r = PyObject_CallMethod(st->error_logger, "log", "iO", level, msg);
            Py_XDECREF(r);
        } else {
            fallback_write(level, msg);
        }
        Py_DECREF(msg);
    }
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
}

void cg_log_exception(cg_log_state *st, const char *msg)
{
    PyObject *t, *v, *tb, *text = NULL, *meth = NULL, *args = NULL, *kwargs = NULL, *r = NULL;

    PyErr_Fetch(&t, &v, &tb);
    if (!t) {
        cg_log(st, CG_ERROR, "%s", msg);
        return;
    }
    PyErr_NormalizeException(&t, &v, &tb);
    if (v && tb)
        PyException_SetTraceback(v, tb);
    if (CG_ERROR < st->error_level)
        goto done;
    text = PyUnicode_FromString(msg);
    if (st->error_logger && text && v) {
        meth = PyObject_GetAttrString(st->error_logger, "error");
        args = PyTuple_Pack(1, text);
        kwargs = Py_BuildValue("{s:O}", "exc_info", v);
        if (meth && args && kwargs)
            r = PyObject_Call(meth, args, kwargs);
        if (r)
            goto done;
        PyErr_Clear();
    }
    /* No logger, or it failed: still show the message and the traceback. */
    if (text)
        fallback_write(CG_ERROR, text);
    PyErr_Clear();
    if (t)
        PyErr_Display(t, v, tb);
done:
    PyErr_Clear();
    Py_XDECREF(r);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(meth);
    Py_XDECREF(text);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
}

/* ---- access lines ---- */

static inline int printable(unsigned char ch)
{
    return ch >= 0x20 && ch < 0x7f;
}

static size_t escaped_len(cg_slice s)
{
    size_t n = s.len;
    for (size_t i = 0; i < s.len; i++)
        if (!printable((unsigned char)s.base[i]))
            n += 3;
    return n;
}

static Py_UCS1 *escape_into(Py_UCS1 *out, cg_slice s)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.base[i];
        if (printable(ch)) {
            *out++ = ch;
        } else {
            *out++ = '\\';
            *out++ = 'x';
            *out++ = (Py_UCS1)hex[ch >> 4];
            *out++ = (Py_UCS1)hex[ch & 15];
        }
    }
    return out;
}

/* ASCII str of pre and a, then "?" and b when b is not empty, escaped. */
static PyObject *escaped_str(cg_slice pre, cg_slice a, cg_slice b)
{
    size_t n = escaped_len(pre) + escaped_len(a) + (b.len ? 1 + escaped_len(b) : 0);
    PyObject *s;
    Py_UCS1 *p;
    if (n > (size_t)PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    s = PyUnicode_New((Py_ssize_t)n, 127);
    if (!s)
        return NULL;
    p = escape_into(PyUnicode_1BYTE_DATA(s), pre);
    p = escape_into(p, a);
    if (b.len) {
        *p++ = '?';
        escape_into(p, b);
    }
    return s;
}

/* Flushes at the end of this loop iteration, or now when no loop runs in
 * this thread. */
static void fast_schedule_flush(struct cg_log_fast *f)
{
    struct cg_flush_state *fs = PyCapsule_GetPointer(f->flush_state, CG_FLUSH_CAPSULE);
    PyObject *loop, *r = NULL;
    if (!fs)
        return;
    if (fs->pending)
        return;
    loop = PyObject_CallNoArgs(f->get_running_loop);
    if (loop && loop != Py_None)
        r = PyObject_CallMethodObjArgs(loop, f->s_call_soon, f->flush_fn, NULL);
    Py_XDECREF(loop);
    if (r) {
        fs->pending = 1;
        Py_DECREF(r);
        return;
    }
    PyErr_Clear();
    flush_lines(fs); /* no running loop: write now */
}

static Py_UCS1 *put(Py_UCS1 *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* Writes the line of an --access-log-format or --access-log-json: what the
 * default configuration's "%(message)s" makes of its record. 0 when done,
 * -1 to take the LogRecord path. */
static int fast_write_alog(struct cg_log_fast *f, cg_alog *prog, const cg_alog_entry *e)
{
    struct cg_flush_state *fs = PyCapsule_GetPointer(f->flush_state, CG_FLUSH_CAPSULE);
    if (!fs || cg_alog_format(prog, e, &fs->lines) < 0 ||
        cg_buf_append(&fs->lines, f->term, f->term_len) < 0) {
        PyErr_Clear();
        return -1;
    }
    fast_schedule_flush(f);
    return 0;
}

/* Writes the access line the default configuration would write. 0 when done
 * (or failed writing, as a handler would), -1 to take the LogRecord path. */
static int fast_write(struct cg_log_fast *f, cg_slice root, const cg_alog_entry *e)
{
    cg_slice client = e->client, method = e->method, path = e->path, query = e->query;
    int version = e->version, status = e->status;
    static const char bold[] = "\x1b[1m", reset[] = "\x1b[0m";
    Py_UCS1 *p;
    size_t n, slen;
    const char *st_text;

    if (status < CG_STATUS_MIN || status > CG_STATUS_MAX)
        return -1;
    slen = f->status_len[status - CG_STATUS_MIN];
    st_text = f->status[status - CG_STATUS_MIN];
    if (!slen)
        return -1;
    const char *ver = version == CG_HTTP_2     ? " HTTP/2"
                      : version == CG_HTTP_1_0 ? " HTTP/1.0"
                                               : " HTTP/1.1";
    size_t ver_len = strlen(ver);
    n = f->prefix_len + escaped_len(client) + 4 + escaped_len(method) + 1 +
        (root.len ? escaped_len(root) : 0) + escaped_len(path) +
        (query.len ? 1 + escaped_len(query) : 0) + ver_len + 2 + slen + f->term_len +
        (f->colors ? 8 : 0);
    if (n > (size_t)PY_SSIZE_T_MAX)
        return -1;
    struct cg_flush_state *fs = PyCapsule_GetPointer(f->flush_state, CG_FLUSH_CAPSULE);
    if (!fs || cg_buf_reserve(&fs->lines, n) < 0) {
        PyErr_Clear();
        return -1;
    }
    p = (Py_UCS1 *)(fs->lines.data + fs->lines.len);
    p = put(p, f->prefix, f->prefix_len);
    p = escape_into(p, client);
    p = put(p, " - \"", 4);
    if (f->colors)
        p = put(p, bold, 4);
    p = escape_into(p, method);
    *p++ = ' ';
    if (root.len)
        p = escape_into(p, root);
    p = escape_into(p, path);
    if (query.len) {
        *p++ = '?';
        p = escape_into(p, query);
    }
    p = put(p, ver, ver_len);
    if (f->colors)
        p = put(p, reset, 4);
    p = put(p, "\" ", 2);
    p = put(p, st_text, slen);
    put(p, f->term, f->term_len);
    fs->lines.len += n;
    fast_schedule_flush(f);
    return 0;
}

void cg_log_flush(cg_log_state *st)
{
    struct cg_flush_state *fs;
    if (!st->fast || !st->fast->flush_state)
        return;
    fs = PyCapsule_GetPointer(st->fast->flush_state, CG_FLUSH_CAPSULE);
    if (fs)
        flush_lines(fs);
    else
        PyErr_Clear();
}

/* A str of what an atom writes in the line (ASCII), or for the numbers B T M
 * D an int, as gunicorn's atoms have them. */
static PyObject *alog_value(cg_alog *prog, const cg_alog_op *op, const cg_alog_entry *e,
                            cg_buf *tmp)
{
    if (op->kind == CG_ALOG_BYTES || op->kind == CG_ALOG_SECS || op->kind == CG_ALOG_MSECS ||
        op->kind == CG_ALOG_USECS)
        return PyLong_FromLongLong(cg_alog_number(op->kind, e));
    cg_buf_reset(tmp);
    if (cg_alog_render(prog, op, e, tmp) < 0)
        return PyErr_NoMemory();
    return PyUnicode_DecodeASCII(tmp->data ? tmp->data : "", (Py_ssize_t)tmp->len, "replace");
}

/* gunicorn's record args: every atom by its key (h, l, u, t, r, ...), and
 * the keys the format names besides ({name}i, {name}o, {name}e, unknown
 * ones), each with the text the line shows. */
static PyObject *alog_atoms(cg_alog *prog, const cg_alog_entry *e)
{
    PyObject *atoms = PyDict_New(), *v = NULL, *k = NULL;
    cg_buf tmp;
    if (!atoms)
        return NULL;
    cg_buf_init(&tmp);
    v = PyUnicode_InternFromString("-");
    if (!v || PyDict_SetItemString(atoms, "l", v) < 0)
        goto failed;
    Py_CLEAR(v);
    for (int kind = 0; kind < CG_ALOG_KINDS; kind++) {
        const char *key = cg_alog_kind_key(kind);
        if (!key)
            continue;
        cg_alog_op op = {(uint8_t)kind, 0xff, 1, 's', 0, 0, 0, 0};
        v = alog_value(prog, &op, e, &tmp);
        if (!v || PyDict_SetItemString(atoms, key, v) < 0)
            goto failed;
        Py_CLEAR(v);
    }
    for (size_t i = 0; i < prog->nops; i++) {
        const cg_alog_op *op = &prog->ops[i];
        if (!op->key_len || (op->kind != CG_ALOG_LIT && op->kind != CG_ALOG_REQ_HDR &&
                             op->kind != CG_ALOG_RESP_HDR))
            continue;
        k = PyUnicode_DecodeUTF8(prog->fmt + op->key_off, op->key_len, "replace");
        v = k ? alog_value(prog, op, e, &tmp) : NULL;
        if (!v || PyDict_SetItem(atoms, k, v) < 0)
            goto failed;
        Py_CLEAR(k);
        Py_CLEAR(v);
    }
    cg_buf_free(&tmp);
    return atoms;
failed:
    cg_buf_free(&tmp);
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_DECREF(atoms);
    return NULL;
}

/* The record of an --access-log-format line (gunicorn's: info(format, atoms))
 * or of a JSON line (its text, no args). */
static void alog_record(cg_log_state *st, const cg_alog_entry *e)
{
    PyObject *r = NULL;
    if (st->alog->json) {
        cg_buf line;
        cg_buf_init(&line);
        if (cg_alog_format(st->alog, e, &line) == 0) {
            PyObject *msg =
                PyUnicode_DecodeASCII(line.data ? line.data : "", (Py_ssize_t)line.len, "replace");
            if (msg)
                r = PyObject_CallMethodObjArgs(st->access_logger, st->s_info, msg, NULL);
            Py_XDECREF(msg);
        }
        cg_buf_free(&line);
    } else {
        PyObject *atoms = alog_atoms(st->alog, e);
        if (atoms)
            r = PyObject_CallMethodObjArgs(st->access_logger, st->s_info, st->alog_fmt, atoms,
                                           NULL);
        Py_XDECREF(atoms);
    }
    Py_XDECREF(r);
}

void cg_log_access(cg_log_state *st, const cg_alog_entry *e)
{
    static const cg_slice none = {"", 0};
    PyObject *t, *v, *tb, *c = NULL, *m = NULL, *fp = NULL, *code = NULL, *r = NULL;
    PyObject *ver;

    if (!st->access_enabled || !st->access_logger)
        return;
    PyErr_Fetch(&t, &v, &tb);
    if (st->alog) {
        if (st->fast && fast_usable(st->fast) && fast_write_alog(st->fast, st->alog, e) == 0)
            goto out;
        cg_log_flush(st);
        alog_record(st, e);
        goto out;
    }
    if (st->fast && fast_usable(st->fast) && fast_write(st->fast, st->root_path, e) == 0)
        goto out;
    cg_log_flush(st); /* earlier lines first */
    ver = e->version == CG_HTTP_2 ? st->v2 : e->version == CG_HTTP_1_0 ? st->v1_0 : st->v1_1;
    c = escaped_str(none, e->client, none);
    m = c ? escaped_str(none, e->method, none) : NULL;
    fp = m ? escaped_str(st->root_path, e->path, e->query) : NULL;
    code = fp ? PyLong_FromLong(e->status) : NULL;
    if (code)
        r = PyObject_CallMethodObjArgs(st->access_logger, st->s_info, st->access_fmt, c, m, fp, ver,
                                       code, NULL);
    Py_XDECREF(r);
    Py_XDECREF(code);
    Py_XDECREF(fp);
    Py_XDECREF(m);
    Py_XDECREF(c);
out:
    PyErr_Clear();
    PyErr_Restore(t, v, tb);
}
