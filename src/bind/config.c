/* The binding side of the option table: argv and run() keywords to a
 * cg_config, --help/--version/usage errors, and --env-file. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "systemd.h"

#define CG_PROG "casgi"

/* ---- the environment as envp ---- */

static int wanted_env(const char *key, Py_ssize_t n)
{
    if ((n > 6 && memcmp(key, "CASGI_", 6) == 0) ||
        (n == 15 && memcmp(key, "WEB_CONCURRENCY", 15) == 0))
        return 1;
    /* Names kept from uvicorn (FORWARDED_ALLOW_IPS). */
    for (size_t i = 0; i < cg_options_count; i++) {
        const char *env = cg_options[i].env;
        if (env && strlen(env) == (size_t)n && memcmp(key, env, (size_t)n) == 0)
            return 1;
    }
    return 0;
}

static void free_envp(char **envp)
{
    if (!envp)
        return;
    for (size_t i = 0; envp[i]; i++)
        PyMem_Free(envp[i]);
    PyMem_Free(envp);
}

/* "KEY=VALUE" copies of the os.environ entries the option table reads
 * (NULL-terminated, PyMem-allocated), or NULL with an exception set. */
static char **build_envp(void)
{
    PyObject *os = NULL, *environ = NULL, *items = NULL;
    char **envp = NULL;
    Py_ssize_t n, k = 0;

    os = PyImport_ImportModule("os");
    if (!os)
        goto failed;
    /* os.environb shares its data with os.environ on POSIX. */
    environ = PyObject_GetAttrString(os, "environb");
    if (!environ)
        goto failed;
    items = PyMapping_Items(environ);
    if (!items)
        goto failed;
    n = PyList_GET_SIZE(items);
    envp = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (!envp) {
        PyErr_NoMemory();
        goto failed;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        PyObject *key, *value;
        char *entry;
        Py_ssize_t kl, vl;
        if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2)
            continue;
        key = PyTuple_GET_ITEM(kv, 0);
        value = PyTuple_GET_ITEM(kv, 1);
        if (!PyBytes_Check(key) || !PyBytes_Check(value))
            continue;
        kl = PyBytes_GET_SIZE(key);
        vl = PyBytes_GET_SIZE(value);
        if (!wanted_env(PyBytes_AS_STRING(key), kl))
            continue;
        entry = PyMem_Malloc((size_t)kl + (size_t)vl + 2);
        if (!entry) {
            PyErr_NoMemory();
            goto failed;
        }
        memcpy(entry, PyBytes_AS_STRING(key), (size_t)kl);
        entry[kl] = '=';
        memcpy(entry + kl + 1, PyBytes_AS_STRING(value), (size_t)vl);
        entry[kl + 1 + vl] = '\0';
        envp[k++] = entry;
    }
    Py_DECREF(items);
    Py_DECREF(environ);
    Py_DECREF(os);
    return envp;
failed:
    free_envp(envp);
    Py_XDECREF(items);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    return NULL;
}

/* Initialises cfg with defaults (WEB_CONCURRENCY included); returns the
 * envp it used, or NULL with an exception set (cfg still initialised). */
static char **init_from_environ(cg_config *cfg)
{
    char **envp;
    cg_config_init(cfg, NULL);
    envp = build_envp();
    if (!envp)
        return NULL;
    cg_config_free(cfg);
    cg_config_init(cfg, envp);
    return envp;
}

/* ---- command line ---- */

static void print_version(void)
{
    PyObject *platform = PyImport_ImportModule("platform");
    PyObject *mod = PyImport_ImportModule("casgi._casgi");
    PyObject *line = NULL;
    if (platform && mod) {
        PyObject *ver = PyObject_GetAttrString(mod, "__version__");
        PyObject *impl = PyObject_CallMethod(platform, "python_implementation", NULL);
        PyObject *pyver = PyObject_CallMethod(platform, "python_version", NULL);
        PyObject *sys = PyObject_CallMethod(platform, "system", NULL);
        if (ver && impl && pyver && sys)
            line = PyUnicode_FromFormat("%s %S with %S %S on %S", CG_PROG, ver, impl, pyver, sys);
        Py_XDECREF(ver);
        Py_XDECREF(impl);
        Py_XDECREF(pyver);
        Py_XDECREF(sys);
    }
    if (line && PyUnicode_AsUTF8(line)) {
        printf("%s\n", PyUnicode_AsUTF8(line));
        fflush(stdout);
    } else {
        cg_print_exception_line(NULL);
    }
    Py_XDECREF(line);
    Py_XDECREF(mod);
    Py_XDECREF(platform);
}

int cg_config_from_argv(PyObject *argv, cg_config *cfg)
{
    PyObject *seq = NULL, *keep = NULL;
    char **envp = NULL, **cargv = NULL;
    char err[512];
    Py_ssize_t argc = 0;
    int status = 1, rc;

    envp = init_from_environ(cfg);
    if (!envp)
        goto pyerror;
    seq = PySequence_Fast(argv, "argv must be a sequence of str");
    if (!seq)
        goto pyerror;
    argc = PySequence_Fast_GET_SIZE(seq);
    if (argc > INT_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "too many arguments");
        goto pyerror;
    }
    keep = PyList_New(argc);
    cargv = PyMem_Calloc((size_t)argc + 1, sizeof(char *));
    if (!keep || !cargv) {
        if (keep)
            PyErr_NoMemory();
        goto pyerror;
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *b;
        if (!PyUnicode_Check(item)) {
            PyErr_Format(PyExc_TypeError, "argv items must be str, not %.100s",
                         Py_TYPE(item)->tp_name);
            goto pyerror;
        }
        b = PyUnicode_EncodeFSDefault(item);
        if (!b)
            goto pyerror;
        PyList_SET_ITEM(keep, i, b); /* steals b */
        cargv[i] = PyBytes_AS_STRING(b);
    }

    rc = cg_config_parse(cfg, (int)argc, cargv, envp, err, sizeof(err));
    switch (rc) {
    case CG_PARSE_OK:
        status = -1;
        break;
    case CG_PARSE_HELP:
        fflush(stdout);
        cg_options_help(stdout, CG_PROG);
        fflush(stdout);
        status = 0;
        break;
    case CG_PARSE_VERSION:
        print_version();
        status = 0;
        break;
    default:
        fflush(stdout);
        /* One line, so scripts and log collectors see one record. */
        fprintf(stderr, "Error: %s. Try '%s --help' for help.\n", err, CG_PROG);
        fflush(stderr);
        status = 2;
        break;
    }
    goto done;
pyerror:
    cg_print_exception_line(NULL);
    status = 2;
done:
    PyMem_Free(cargv);
    Py_XDECREF(keep);
    Py_XDECREF(seq);
    free_envp(envp);
    return status;
}

/* ---- run() keywords ---- */

static const char *type_name(const cg_option *o)
{
    switch (o->type) {
    case CG_OPT_INT:
        return "int";
    case CG_OPT_FLOAT:
        return "float";
    case CG_OPT_BOOL:
    case CG_OPT_FLAG:
        return "bool";
    case CG_OPT_LIST:
        return "list of str";
    default:
        return "str";
    }
}

static int wrong_type(const char *who, const char *kw, const cg_option *o, PyObject *value)
{
    PyErr_Format(PyExc_TypeError, "%s argument '%s' must be %s, not %.100s", who, kw, type_name(o),
                 Py_TYPE(value)->tp_name);
    return -1;
}

/* Sets o from text; a bad value raises ValueError with the command line's message. */
static int set_text(cg_config *cfg, const cg_option *o, const char *text)
{
    char err[512];
    if (cg_option_set(cfg, o, text, err, sizeof(err)) < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        return -1;
    }
    return 0;
}

static int set_str_object(cg_config *cfg, const cg_option *o, PyObject *s)
{
    Py_ssize_t n;
    const char *text = PyUnicode_AsUTF8AndSize(s, &n);
    if (!text)
        return -1;
    if (strlen(text) != (size_t)n) {
        PyErr_SetString(PyExc_ValueError, "embedded null character");
        return -1;
    }
    return set_text(cfg, o, text);
}

/* One list item: a str, or for --header a (name, value) pair as uvicorn's
 * run(headers=[...]) takes. */
static int set_list_item(cg_config *cfg, const cg_option *o, const char *who, const char *kw,
                         PyObject *item)
{
    PyObject *joined;
    int rc;
    if (PyUnicode_Check(item))
        return set_str_object(cfg, o, item);
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2 &&
        PyUnicode_Check(PyTuple_GET_ITEM(item, 0)) && PyUnicode_Check(PyTuple_GET_ITEM(item, 1))) {
        joined =
            PyUnicode_FromFormat("%U:%U", PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1));
        if (!joined)
            return -1;
        rc = set_str_object(cfg, o, joined);
        Py_DECREF(joined);
        return rc;
    }
    PyErr_Format(PyExc_TypeError,
                 "%s argument '%s' items must be str \"NAME:VALUE\" or (name, value), not "
                 "%.100s",
                 who, kw, Py_TYPE(item)->tp_name);
    return -1;
}

/* uvicorn.run(log_config=...): None leaves the app's logging alone (an empty
 * --log-config); a dict is passed on as inline JSON, so workers get it too. */
static int set_log_config(cg_config *cfg, const cg_option *o, const char *who, PyObject *value)
{
    if (value == Py_None)
        return set_text(cfg, o, "");
    PyObject *json = PyImport_ImportModule("json");
    PyObject *text = json ? PyObject_CallMethod(json, "dumps", "O", value) : NULL;
    Py_XDECREF(json);
    if (!text) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        PyErr_Format(PyExc_TypeError,
                     "%s argument 'log_config': a dict must be JSON-serialisable (%S); pass a "
                     "file path, or configure logging yourself and pass log_config=None",
                     who, v ? v : Py_None);
        Py_XDECREF(t);
        Py_XDECREF(v);
        Py_XDECREF(tb);
        return -1;
    }
    int rc = set_str_object(cfg, o, text);
    Py_DECREF(text);
    return rc;
}

/* uvicorn.run(log_level=N): the least verbose level that shows every record
 * at N or above that casgi logs (its records are at the named levels only). */
static const char *log_level_for(long level)
{
    static const struct {
        long value;
        const char *name;
    } levels[] = {{5, "trace"}, {10, "debug"}, {20, "info"}, {30, "warning"}, {40, "error"}};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
        if (level <= levels[i].value)
            return levels[i].name;
    return "critical";
}

static int set_keyword(cg_config *cfg, const char *who, const char *kw, PyObject *value)
{
    const cg_option *o = cg_option_find(strcmp(kw, "headers") == 0 ? "header" : kw);
    PyObject *text = NULL;
    int rc;

    if (!o || strchr(kw, '-')) {
        PyErr_Format(PyExc_TypeError, "%s got an unexpected keyword argument '%s'", who, kw);
        return -1;
    }
    if (o->offset == offsetof(cg_config, log_config) && (value == Py_None || PyDict_Check(value)))
        return set_log_config(cfg, o, who, value);
    if (value == Py_None)
        return 0; /* the default (or the environment) stays */

    switch (o->type) {
    case CG_OPT_LIST: {
        PyObject *seq;
        cg_option_clear(cfg, o);
        if (PyUnicode_Check(value))
            return set_list_item(cfg, o, who, kw, value);
        if (!PyList_Check(value) && !PyTuple_Check(value))
            return wrong_type(who, kw, o, value);
        seq = PySequence_Fast(value, "");
        if (!seq)
            return -1;
        rc = 0;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++)
            rc = set_list_item(cfg, o, who, kw, PySequence_Fast_GET_ITEM(seq, i));
        Py_DECREF(seq);
        return rc;
    }
    case CG_OPT_BOOL:
    case CG_OPT_FLAG:
        if (PyBool_Check(value))
            return set_text(cfg, o, value == Py_True ? "true" : "false");
        if (PyLong_Check(value) || PyUnicode_Check(value))
            break;
        return wrong_type(who, kw, o, value);
    case CG_OPT_INT:
        if (PyBool_Check(value) || !(PyLong_Check(value) || PyUnicode_Check(value)))
            return wrong_type(who, kw, o, value);
        break;
    case CG_OPT_FLOAT:
        if (PyBool_Check(value) ||
            !(PyLong_Check(value) || PyFloat_Check(value) || PyUnicode_Check(value)))
            return wrong_type(who, kw, o, value);
        break;
    default:
        if (PyUnicode_Check(value))
            break;
        if (o->offset == offsetof(cg_config, log_level) && PyLong_Check(value) &&
            !PyBool_Check(value)) {
            long level = PyLong_AsLong(value);
            if (level == -1 && PyErr_Occurred())
                return -1;
            return set_text(cfg, o, log_level_for(level));
        }
        if (o->offset == offsetof(cg_config, forwarded_allow_ips) &&
            (PyList_Check(value) || PyTuple_Check(value))) {
            /* uvicorn's run(forwarded_allow_ips=[...]): the entries joined. */
            PyObject *sep = PyUnicode_FromString(","), *joined;
            joined = sep ? PyUnicode_Join(sep, value) : NULL;
            Py_XDECREF(sep);
            if (!joined)
                return -1;
            rc = set_str_object(cfg, o, joined);
            Py_DECREF(joined);
            return rc;
        }
        if (o->type == CG_OPT_STR && PyObject_HasAttrString(value, "__fspath__")) {
            /* Path-like objects for the path options. */
            PyObject *p = PyOS_FSPath(value), *s;
            if (!p)
                return -1;
            s = PyBytes_Check(p)
                    ? PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(p), PyBytes_GET_SIZE(p))
                    : (Py_INCREF(p), p);
            Py_DECREF(p);
            if (!s)
                return -1;
            rc = set_str_object(cfg, o, s);
            Py_DECREF(s);
            return rc;
        }
        return wrong_type(who, kw, o, value);
    }
    if (PyUnicode_Check(value))
        return set_str_object(cfg, o, value);
    /* An int subclass (ssl.PROTOCOL_TLS_SERVER, ssl.CERT_REQUIRED) as its
     * number: str() of an IntEnum is its name before Python 3.11. */
    text = PyFloat_Check(value)  ? PyObject_Repr(value)
           : PyLong_Check(value) ? PyNumber_ToBase(value, 10)
                                 : PyObject_Str(value);
    if (!text)
        return -1;
    rc = set_str_object(cfg, o, text);
    Py_DECREF(text);
    return rc;
}

int cg_config_from_kwargs(PyObject *kwargs, cg_config *cfg, const char *who)
{
    char **envp;
    char err[512];
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    int rc = -1;

    envp = init_from_environ(cfg);
    if (!envp)
        return -1;
    if (cg_config_apply_env(cfg, envp, err, sizeof(err)) < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        goto done;
    }
    if (kwargs && kwargs != Py_None) {
        if (!PyDict_Check(kwargs)) {
            PyErr_Format(PyExc_TypeError, "%s options must be a dict, not %.100s", who,
                         Py_TYPE(kwargs)->tp_name);
            goto done;
        }
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            const char *kw;
            if (!PyUnicode_Check(key)) {
                PyErr_Format(PyExc_TypeError, "%s keywords must be strings", who);
                goto done;
            }
            kw = PyUnicode_AsUTF8(key);
            if (!kw || set_keyword(cfg, who, kw, value) < 0)
                goto done;
        }
    }
    if (cg_config_check(cfg, err, sizeof(err)) < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        goto done;
    }
    rc = 0;
done:
    free_envp(envp);
    return rc;
}

/* ---- TLS ---- */

void cg_config_tls_conf(const cg_config *cfg, cg_tls_conf *out)
{
    static const char *const alpn[] = {"h2", "http/1.1"};
    memset(out, 0, sizeof(*out));
    out->certfile = cfg->ssl_certfile;
    out->keyfile = cfg->ssl_keyfile;
    out->password = cfg->ssl_keyfile_password;
    out->ca_certs = cfg->ssl_ca_certs;
    out->ciphers = cfg->ssl_ciphers;
    out->cert_reqs = (int)cfg->ssl_cert_reqs;
    out->ssl_version = cfg->ssl_version;
    /* HTTP/2 first when it is served: the client's preference is not asked. */
    out->alpn = cg_config_http2(cfg) ? alpn : alpn + 1;
    out->alpn_n = cg_config_http2(cfg) ? 2 : 1;
}

cg_tls_ctx *cg_config_tls_load(const cg_config *cfg, cg_log_state *log)
{
    cg_tls_conf conf;
    char err[512];
    cg_config_tls_conf(cfg, &conf);
    cg_tls_ctx *ctx = cg_tls_ctx_new(&conf, err, sizeof(err));
    if (!ctx)
        cg_log(log, CG_ERROR, "Error: %s", err);
    return ctx;
}

/* ---- --env-file ---- */

struct env_ctx {
    PyObject *pairs; /* list of (key, value) str tuples */
    int failed;
};

static void env_collect(const char *key, const char *value, void *arg)
{
    struct env_ctx *ctx = arg;
    PyObject *pair;
    if (ctx->failed)
        return;
    pair = Py_BuildValue("(NN)", PyUnicode_DecodeFSDefault(key), PyUnicode_DecodeFSDefault(value));
    if (!pair || PyList_Append(ctx->pairs, pair) < 0)
        ctx->failed = 1;
    Py_XDECREF(pair);
}

/* Sets os.environ[key] = value for each pair unless the variable is already
 * set: the real environment wins over the file, as with python-dotenv. */
static int env_apply(PyObject *pairs)
{
    PyObject *os = PyImport_ImportModule("os"), *environ;
    int rc = -1;
    if (!os)
        return -1;
    environ = PyObject_GetAttrString(os, "environ");
    Py_DECREF(os);
    if (!environ)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
        int has = PySequence_Contains(environ, k);
        if (has < 0 || (!has && PyObject_SetItem(environ, k, v) < 0))
            goto done;
    }
    rc = 0;
done:
    Py_DECREF(environ);
    return rc;
}

int cg_config_load_env_file(const cg_config *cfg)
{
    FILE *f;
    char *data = NULL;
    size_t len = 0, cap = 0;
    struct env_ctx ctx = {NULL, 0};
    int rc = -1, line;

    if (!cfg->env_file)
        return 0;
    f = fopen(cfg->env_file, "rb");
    if (!f) {
        fprintf(stderr, "Error: cannot read env file '%s': %s\n", cfg->env_file, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            char *bigger = PyMem_Realloc(data, cap ? cap * 2 : 4096);
            if (!bigger) {
                fprintf(stderr, "Error: out of memory reading env file '%s'\n", cfg->env_file);
                goto done;
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
        fprintf(stderr, "Error: cannot read env file '%s': %s\n", cfg->env_file, strerror(errno));
        goto done;
    }
    ctx.pairs = PyList_New(0);
    if (!ctx.pairs) {
        cg_print_exception_line(NULL);
        goto done;
    }
    line = cg_envfile_parse(data ? data : "", len, env_collect, &ctx);
    if (ctx.failed) {
        cg_print_exception_line(NULL);
        goto done;
    }
    if (line > 0) {
        fprintf(stderr, "Error: env file '%s': line %d is not KEY=VALUE\n", cfg->env_file, line);
        goto done;
    }
    if (line < 0) {
        fprintf(stderr, "Error: out of memory reading env file '%s'\n", cfg->env_file);
        goto done;
    }
    if (env_apply(ctx.pairs) < 0) {
        cg_print_exception_line(NULL);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(ctx.pairs);
    PyMem_Free(data);
    fclose(f);
    return rc;
}

void cg_environ_remove(const char *name)
{
    unsetenv(name);
    PyObject *os = PyImport_ImportModule("os");
    PyObject *environ = os ? PyObject_GetAttrString(os, "environ") : NULL;
    PyObject *r = environ ? PyObject_CallMethod(environ, "pop", "sO", name, Py_None) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    PyErr_Clear();
}

/* ---- resolved values ---- */

PyObject *cg_config_values(const cg_config *cfg)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    for (size_t i = 0; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        const char *field = (const char *)cfg + o->offset;
        PyObject *v = NULL;
        switch (o->type) {
        case CG_OPT_STR: {
            const char *s = *(char *const *)field;
            v = s ? PyUnicode_FromString(s) : Py_NewRef(Py_None);
            break;
        }
        case CG_OPT_INT: {
            long n = *(const long *)field;
            v = n < 0 && o->min >= 0 ? Py_NewRef(Py_None) : PyLong_FromLong(n);
            break;
        }
        case CG_OPT_FLOAT: {
            double x = *(const double *)field;
            v = x < 0 && o->min >= 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(x);
            break;
        }
        case CG_OPT_BOOL:
        case CG_OPT_FLAG: {
            int b = *(const int *)field;
            v = b < 0 ? Py_NewRef(Py_None) : PyBool_FromLong(b);
            break;
        }
        case CG_OPT_CHOICE:
            v = PyUnicode_FromString(o->choices[*(const int *)field]);
            break;
        case CG_OPT_LIST: {
            const cg_strlist *l = (const cg_strlist *)field;
            v = PyList_New((Py_ssize_t)l->n);
            for (size_t k = 0; v && k < l->n; k++) {
                PyObject *item = PyUnicode_FromString(l->items[k]);
                if (!item)
                    Py_CLEAR(v);
                else
                    PyList_SET_ITEM(v, (Py_ssize_t)k, item);
            }
            break;
        }
        }
        char key[64];
        size_t n = strlen(o->name);
        if (!v || n >= sizeof(key)) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        for (size_t k = 0; k <= n; k++)
            key[k] = o->name[k] == '-' ? '_' : o->name[k];
        int rc = PyDict_SetItemString(d, key, v);
        Py_DECREF(v);
        if (rc < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

int cg_config_activated_fds(char **names, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *fdnames = getenv("LISTEN_FDNAMES");
    char self[32];
    int n = cg_sd_listen_parse(pid, getenv("LISTEN_FDS"), (long)getpid(), err, errlen);
    *names = NULL;
    snprintf(self, sizeof(self), "%ld", (long)getpid());
    if (n == 0 && !(pid && !strcmp(pid, self)))
        return 0; /* not ours: left for whoever they are for */
    for (int i = 0; i < n; i++)
        if (cg_sd_check_listener(CG_SD_LISTEN_FDS_START + i, err, errlen) < 0)
            return -1;
    if (n > 0 && fdnames) {
        size_t len = strlen(fdnames) + 1;
        *names = PyMem_Malloc(len);
        if (*names)
            memcpy(*names, fdnames, len);
    }
    if (n >= 0) {
        cg_environ_remove("LISTEN_PID");
        cg_environ_remove("LISTEN_FDS");
        cg_environ_remove("LISTEN_FDNAMES");
    }
    return n;
}

int cg_config_sd_notify(cg_sd_notify *n, double *watchdog, char *err, size_t errlen)
{
    int rc = cg_sd_notify_open(n, getenv("NOTIFY_SOCKET"), err, errlen);
    *watchdog = rc == 0 && n->fd >= 0
                    ? cg_sd_watchdog_interval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"),
                                              (long)getpid())
                    : 0;
    cg_environ_remove("NOTIFY_SOCKET");
    cg_environ_remove("WATCHDOG_USEC");
    cg_environ_remove("WATCHDOG_PID");
    return rc;
}
