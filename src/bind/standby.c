/* --reload standby workers (see standby.h and core/supervisor.h). */
#include "standby.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

#define CG_MODULES_ENV "CASGI_RELOAD_MODULES"
#define CG_CMDLINE_MAX (1 << 20) /* bytes of /proc/self/cmdline read for a re-exec */

/* The list file, taken from the environment by cg_standby_wait: per process,
 * as the environment is. Empty when this is not a reload-mode worker. */
static char modules_path[PATH_MAX];

int cg_standby_file_create(char *path, size_t size)
{
    const char *dir = getenv("TMPDIR");
    int n, fd;

    if (!dir || !*dir)
        dir = "/tmp";
    n = snprintf(path, size, "%s/casgi-modules-XXXXXX", dir);
    if (n < 0 || (size_t)n >= size)
        goto fail;
    fd = mkstemp(path); /* mode 0600, never an existing file */
    if (fd < 0)
        goto fail;
    close(fd);
    if (setenv(CG_MODULES_ENV, path, 1) < 0) {
        unlink(path);
        goto fail;
    }
    return 0;
fail:
    path[0] = '\0';
    return -1;
}

void cg_standby_file_remove(const char *path)
{
    unlink(path);
    unsetenv(CG_MODULES_ENV);
}

/* ---- installed modules --------------------------------------------------- */

static int add_prefix(PyObject *list, PyObject *dir)
{
    PyObject *p;
    if (!PyUnicode_Check(dir) || PyUnicode_GET_LENGTH(dir) == 0)
        return 0;
    p = PyUnicode_FromFormat("%U/", dir);
    if (!p)
        return -1;
    int r = PyList_Append(list, p);
    Py_DECREF(p);
    return r;
}

/* Directory prefixes (each ending in '/') of installed modules: the
 * interpreter's library (sysconfig stdlib/platstdlib/purelib/platlib) and
 * every sys.path entry that is a site-packages or dist-packages directory.
 * A tuple, for str.startswith. */
static PyObject *installed_prefixes(void)
{
    static const char *const keys[] = {"stdlib", "platstdlib", "purelib", "platlib"};
    PyObject *list = PyList_New(0), *sysconfig = NULL, *paths = NULL, *result = NULL;
    PyObject *syspath;

    sysconfig = PyImport_ImportModule("sysconfig");
    paths = sysconfig ? PyObject_CallMethod(sysconfig, "get_paths", NULL) : NULL;
    syspath = PySys_GetObject("path"); /* borrowed: after the Python code above ran */
    if (!list || !paths || !PyDict_Check(paths))
        goto done;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        PyObject *dir = PyDict_GetItemString(paths, keys[i]); /* borrowed */
        if (dir && add_prefix(list, dir) < 0)
            goto done;
    }
    for (Py_ssize_t i = 0; syspath && PyList_Check(syspath) && i < PyList_GET_SIZE(syspath); i++) {
        PyObject *dir = PyList_GET_ITEM(syspath, i);
        const char *s = PyUnicode_Check(dir) ? PyUnicode_AsUTF8(dir) : NULL;
        size_t n = s ? strlen(s) : 0;
        if (!s) {
            PyErr_Clear();
            continue;
        }
        while (n > 1 && s[n - 1] == '/')
            n--;
        if ((n >= 14 && !strncmp(s + n - 14, "/site-packages", 14)) ||
            (n >= 14 && !strncmp(s + n - 14, "/dist-packages", 14))) {
            if (add_prefix(list, dir) < 0)
                goto done;
        }
    }
    result = PyList_AsTuple(list);
done:
    Py_XDECREF(paths);
    Py_XDECREF(sysconfig);
    Py_XDECREF(list);
    return result;
}

/* A module's __file__ when it is a str (borrowed), else NULL. Read from the
 * module's dict: no module __getattr__ (lazy loaders) runs. */
static PyObject *module_file(PyObject *mod)
{
    PyObject *dict, *file;
    if (!PyModule_Check(mod))
        return NULL;
    dict = PyModule_GetDict(mod);
    file = dict ? PyDict_GetItemString(dict, "__file__") : NULL;
    return file && PyUnicode_Check(file) ? file : NULL;
}

/* 1 when `file` lies under one of `prefixes`, 0 when not, -1 on error. */
static int is_installed(PyObject *file, PyObject *prefixes)
{
    PyObject *r = PyObject_CallMethod(file, "startswith", "(O)", prefixes);
    if (!r)
        return -1;
    int yes = PyObject_IsTrue(r);
    Py_DECREF(r);
    return yes;
}

void cg_standby_write_modules(cg_state *st)
{
    char tmp[PATH_MAX + 8];
    PyObject *prefixes = NULL, *items = NULL;
    PyObject *modules = PySys_GetObject("modules"); /* borrowed */
    FILE *f = NULL;
    int fd = -1, written = 0, have_tmp = 0;

    if (!modules_path[0] || !modules || !PyDict_Check(modules))
        return;
    if (!(prefixes = installed_prefixes()) || !(items = PyDict_Items(modules)))
        goto fail;
    snprintf(tmp, sizeof(tmp), "%s.XXXXXX", modules_path);
    if ((fd = mkstemp(tmp)) < 0)
        goto fail_os;
    have_tmp = 1;
    if (!(f = fdopen(fd, "w")))
        goto fail_os;
    fd = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        PyObject *file = module_file(PyTuple_GET_ITEM(item, 1));
        const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (!s || !file || !strcmp(s, "__main__") || strchr(s, '\n')) {
            PyErr_Clear();
            continue;
        }
        int yes = is_installed(file, prefixes);
        if (yes < 0)
            goto fail;
        if (yes) {
            fprintf(f, "%s\n", s);
            written++;
        }
    }
    if (fclose(f) != 0) {
        f = NULL;
        goto fail_os;
    }
    f = NULL;
    if (rename(tmp, modules_path) < 0)
        goto fail_os;
    have_tmp = 0;
    cg_log(&st->log, CG_DEBUG, "Listed %d installed modules for the standby worker", written);
    goto done;
fail_os:
    cg_log(&st->log, CG_DEBUG, "Cannot list modules for the standby worker: [Errno %d] %s", errno,
           strerror(errno));
    goto done;
fail:
    PyErr_Clear();
    cg_log(&st->log, CG_DEBUG, "Cannot list modules for the standby worker");
done:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    if (have_tmp)
        unlink(tmp);
    Py_XDECREF(items);
    Py_XDECREF(prefixes);
}

/* ---- the standby ----------------------------------------------------------- */

/* signal.signal(signum, handler), where `handler` names an attribute of the
 * signal module (SIG_DFL, default_int_handler) or, when `name` is NULL, is
 * `obj`. Returns the previous handler, or NULL with the error set. */
static PyObject *set_signal(int signum, const char *name, PyObject *obj)
{
    PyObject *sig = PyImport_ImportModule("signal");
    PyObject *h = !sig ? NULL : name ? PyObject_GetAttrString(sig, name) : Py_NewRef(obj);
    PyObject *prev = h ? PyObject_CallMethod(sig, "signal", "iO", signum, h) : NULL;
    Py_XDECREF(h);
    Py_XDECREF(sig);
    return prev;
}

/* Imports each module named in the list file; failures are skipped. */
static int import_listed(void)
{
    char line[1024];
    int imported = 0;
    FILE *f = fopen(modules_path, "r");

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        size_t n = strcspn(line, "\n");
        if (n == 0 || line[n] != '\n')
            continue; /* empty, or a name too long for the buffer */
        line[n] = '\0';
        PyObject *m = PyImport_ImportModule(line);
        if (m)
            imported++;
        Py_XDECREF(m);
        PyErr_Clear(); /* SystemExit and KeyboardInterrupt included */
    }
    fclose(f);
    return imported;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static int ts_equal(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* What a file was when the standby took it in; compared again on release, so
 * no clock is trusted (1-second file times, or times from another machine). */
typedef struct cg_fstamp {
    char *path;
    int missing;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim, ctim;
} cg_fstamp;

typedef struct cg_stamps {
    cg_fstamp *items;
    size_t n, cap;
} cg_stamps;

static void stamp_read(const char *path, cg_fstamp *f)
{
    struct stat sb;
    memset(f, 0, sizeof(*f));
    if (stat(path, &sb) < 0) {
        f->missing = 1;
        return;
    }
    f->dev = sb.st_dev;
    f->ino = sb.st_ino;
    f->size = sb.st_size;
    f->mtim = sb.st_mtim;
    f->ctim = sb.st_ctim;
}

static int stamp_same(const cg_fstamp *a, const cg_fstamp *b)
{
    return a->missing == b->missing && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           ts_equal(&a->mtim, &b->mtim) && ts_equal(&a->ctim, &b->ctim);
}

static int stamps_add(cg_stamps *s, const char *path)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        cg_fstamp *p = realloc(s->items, cap * sizeof(*p));
        if (!p)
            return -1;
        s->items = p;
        s->cap = cap;
    }
    cg_fstamp *f = &s->items[s->n];
    stamp_read(path, f);
    if (!(f->path = strdup(path)))
        return -1;
    s->n++;
    return 0;
}

static void stamps_free(cg_stamps *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i].path);
    free(s->items);
    s->items = NULL;
    s->n = s->cap = 0;
}

/* Stamps every loaded module's file and every installed-packages directory
 * (an install or uninstall changes the directory: a new .pth or package).
 * -1 on error (exception set or out of memory). */
static int stamp_modules(cg_stamps *s, PyObject *prefixes)
{
    PyObject *modules = PySys_GetObject("modules"); /* borrowed */
    PyObject *items = modules && PyDict_Check(modules) ? PyDict_Items(modules) : NULL;
    int rc = items ? 0 : -1;

    for (Py_ssize_t i = 0; items && i < PyList_GET_SIZE(items) && rc == 0; i++) {
        PyObject *file = module_file(PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1));
        const char *path = file ? PyUnicode_AsUTF8(file) : NULL;
        if (!path)
            PyErr_Clear();
        else
            rc = stamps_add(s, path);
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(prefixes); i++) {
        const char *dir = PyUnicode_AsUTF8(PyTuple_GET_ITEM(prefixes, i));
        rc = dir ? stamps_add(s, dir) : -1;
    }
    Py_XDECREF(items);
    return rc;
}

/* Writes into `why` the reason this process cannot serve the current code,
 * or leaves it empty: a module imported ahead (not in `before`) from outside
 * the installed paths, or a stamped file that is not what it was (or whose
 * times are not older than `since`: a change made while it was importing). */
static void staleness(PyObject *before, PyObject *prefixes, const cg_stamps *stamps,
                      const struct timespec *since, char *why, size_t size)
{
    PyObject *modules = PySys_GetObject("modules"); /* borrowed */
    PyObject *items = modules && PyDict_Check(modules) ? PyDict_Items(modules) : NULL;
    why[0] = '\0';
    if (!items) {
        PyErr_Clear();
        snprintf(why, size, "cannot inspect its modules");
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && !why[0]; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *file = module_file(PyTuple_GET_ITEM(item, 1));
        const char *path = file ? PyUnicode_AsUTF8(file) : NULL;
        if (!path) {
            PyErr_Clear();
            continue;
        }
        int yes = PySet_Contains(before, PyTuple_GET_ITEM(item, 0));
        if (yes == 0)
            yes = is_installed(file, prefixes);
        if (yes < 0) {
            PyErr_Clear();
            snprintf(why, size, "cannot inspect its modules");
        } else if (!yes) {
            snprintf(why, size, "'%s' is not an installed module", path);
        }
    }
    Py_DECREF(items);
    for (size_t i = 0; i < stamps->n && !why[0]; i++) {
        const cg_fstamp *was = &stamps->items[i];
        cg_fstamp now;
        stamp_read(was->path, &now);
        if (!stamp_same(was, &now) ||
            (!now.missing && (!ts_before(&now.mtim, since) || !ts_before(&now.ctim, since))))
            snprintf(why, size, "'%s' changed", was->path);
    }
}

/* Replaces this process by an ordinary worker with the same command line and
 * the environment it was started with (`envp`, before any --env-file). */
__attribute__((noreturn)) static void reexec_fresh(cg_state *st, int ctl, int alive, char **envp)
{
    char var[80], *buf = malloc(CG_CMDLINE_MAX), **argv = NULL;
    size_t len = 0, argc = 0;
    FILE *f = fopen("/proc/self/cmdline", "r");

    if (buf && f)
        len = fread(buf, 1, CG_CMDLINE_MAX - 1, f);
    if (f)
        fclose(f);
    if (!buf || len == 0 || !envp)
        goto fail;
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        argc += buf[i] == '\0';
    argc += buf[len - 1] != '\0';
    argv = calloc(argc + 1, sizeof(char *));
    if (!argv)
        goto fail;
    argc = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;

    /* No longer a standby: the same fds, without ":S". */
    snprintf(var, sizeof(var), "CASGI_WORKER=%d:%d", ctl, alive);
    for (char **e = envp; *e; e++)
        if (!strncmp(*e, "CASGI_WORKER=", 13))
            *e = var;
    PyObject *r1 = PySys_GetObject("stdout"), *r2 = PySys_GetObject("stderr");
    PyObject *x = r1 ? PyObject_CallMethod(r1, "flush", NULL) : NULL;
    Py_XDECREF(x);
    x = r2 ? PyObject_CallMethod(r2, "flush", NULL) : NULL;
    Py_XDECREF(x);
    PyErr_Clear();
    /* An ignored signal stays ignored through exec: Ctrl-C is the new
     * worker's own again. */
    signal(SIGINT, SIG_DFL);
    execve(argv[0], argv, envp);
fail:
    cg_log(&st->log, CG_ERROR, "Cannot restart the standby worker: [Errno %d] %s", errno,
           strerror(errno));
    _exit(1);
}

static void environ_free(char **envp)
{
    for (size_t i = 0; envp && envp[i]; i++)
        free(envp[i]);
    free(envp);
}

/* A copy of the environment (the strings too), or NULL. */
static char **environ_copy(void)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **copy = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; copy && i < n; i++) {
        if (!(copy[i] = strdup(environ[i]))) {
            environ_free(copy);
            return NULL;
        }
    }
    return copy;
}

int cg_standby_wait(cg_state *st, const cg_config *cfg)
{
    const char *path = getenv(CG_MODULES_ENV);
    const char *v = getenv("CASGI_WORKER");
    struct timespec since;
    char kind = 0, c = 0, why[PATH_MAX + 64];
    int ctl, alive, imported;
    PyObject *before = NULL, *prefixes = NULL, *term = NULL;
    cg_stamps stamps = {0};
    char **envp;
    ssize_t n;

    if (!v || sscanf(v, "%d:%d:%c", &ctl, &alive, &kind) != 3 || kind != 'S' || ctl < 0 ||
        alive < 0)
        kind = 0;
    /* The environment a fresh worker would start with, for a re-exec. */
    envp = kind == 'S' ? environ_copy() : NULL;
    if (path) {
        snprintf(modules_path, sizeof(modules_path), "%s", path);
        cg_environ_remove(CG_MODULES_ENV);
    }
    if (kind != 'S')
        return 0;

    /* Ctrl-C reaches the whole group: a standby leaves stopping to the
     * supervisor, which sends it SIGTERM; the supervisor started it with
     * SIGINT ignored (which Python keeps), and it is restored on release. */
    /* The kernel stamps files from the coarse clock: compare with the same. */
    clock_gettime(CLOCK_REALTIME_COARSE, &since);
    if (cfg->env_file && stamps_add(&stamps, cfg->env_file) < 0)
        goto fail_nomem;
    /* Loaded here, as a fresh worker loads it before importing anything. */
    if (cg_config_load_env_file(cfg) < 0)
        _exit(3);
    if (!(before = PySet_New(PySys_GetObject("modules"))))
        goto fail;
    imported = import_listed();
    if (!(prefixes = installed_prefixes()) || stamp_modules(&stamps, prefixes) < 0)
        goto fail;
    cg_log(&st->log, CG_DEBUG, "Standby worker [%d] imported %d modules ahead; waiting",
           (int)getpid(), imported);

    /* SIGTERM must end a waiting standby even if an imported module handles
     * it: the wait below runs no Python signal handler. */
    if (!(term = set_signal(SIGTERM, "SIG_DFL", NULL)))
        goto fail;

    Py_BEGIN_ALLOW_THREADS;
    do
        n = read(alive, &c, 1);
    while (n < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS;
    if (n != 1)
        _exit(0); /* the supervisor is gone or stopped us: nothing was served */

    staleness(before, prefixes, &stamps, &since, why, sizeof(why));
    if (why[0]) {
        cg_log(&st->log, CG_INFO, "Standby worker is out of date (%s); starting afresh", why);
        reexec_fresh(st, ctl, alive, envp);
    }
    environ_free(envp);
    /* A handler installed from C reads as None and cannot be set back: SIG_DFL stays. */
    PyObject *r = term != Py_None ? set_signal(SIGTERM, NULL, term) : NULL;
    Py_XDECREF(r);
    r = set_signal(SIGINT, "default_int_handler", NULL);
    Py_XDECREF(r);
    PyErr_Clear();
    PyObject *importlib = PyImport_ImportModule("importlib");
    r = importlib ? PyObject_CallMethod(importlib, "invalidate_caches", NULL) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(importlib);
    PyErr_Clear();
    Py_DECREF(term);
    Py_DECREF(prefixes);
    Py_DECREF(before);
    stamps_free(&stamps);
    return 0;

fail_nomem:
    PyErr_NoMemory();
fail:
    cg_log_exception(&st->log, "Error: the standby worker failed");
    _exit(3);
}
