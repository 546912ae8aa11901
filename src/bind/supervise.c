/* --reload and --workers: the supervising process. It binds the listening
 * socket once, never imports the application, and runs the pure-C supervisor
 * (core/supervisor.c); each worker is a fresh `python -m casgi` whose whole
 * configuration is written out from the option table, with the inherited
 * socket given as --fd. */
#include "supervise.h"

#include <errno.h>
#include <signal.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "meter.h"
#include "sock.h"
#include "standby.h"
#include "supervisor.h"
#include "systemd.h"
#include "watch.h"

/* A worker bounds its own drain by --timeout-graceful-shutdown, then runs
 * lifespan shutdown and exits: it is SIGKILLed only this much later. */
#define CG_EXIT_MARGIN 1.0

/* Seconds between scans when watching by polling. */
#define CG_POLL_INTERVAL 0.25

/* Options the supervisor consumes itself; a worker gets --fd instead. */
static int supervisor_only(const char *name)
{
    static const char *const names[] = {
        "reload",         "reload-dir",   "reload-include",
        "reload-exclude", "reload-delay", "reload-poll",
        "reload-standby", "workers",      "host",
        "port",           "uds",          "fd",
        "backlog",        "app",          "metrics-port",
        "metrics-host",   NULL,
    };
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(names[i], name))
            return 1;
    return 0;
}

typedef struct argv_builder {
    char **items;
    size_t n, cap;
    int failed;
} argv_builder;

static void argv_push(argv_builder *a, const char *s)
{
    if (a->failed)
        return;
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        char **p = realloc(a->items, cap * sizeof(char *));
        if (!p) {
            a->failed = 1;
            return;
        }
        a->items = p;
        a->cap = cap;
    }
    a->items[a->n] = strdup(s);
    if (!a->items[a->n]) {
        a->failed = 1;
        return;
    }
    a->n++;
    a->items[a->n] = NULL;
}

/* Pushes "--<prefix><name>" (prefix "" or "no-"), then value unless NULL. The
 * flag is sized from the name: a long name fails the builder, never truncates. */
static void argv_prefixed_flag(argv_builder *a, const char *prefix, const char *name,
                               const char *value)
{
    size_t len = 2 + strlen(prefix) + strlen(name) + 1;
    char *flag = malloc(len);
    if (!flag) {
        a->failed = 1;
        return;
    }
    snprintf(flag, len, "--%s%s", prefix, name);
    argv_push(a, flag);
    free(flag);
    if (value)
        argv_push(a, value);
}

static void argv_flag(argv_builder *a, const char *name, const char *value)
{
    argv_prefixed_flag(a, "", name, value);
}

static void argv_free(argv_builder *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->items[i]);
    free(a->items);
    a->items = NULL;
    a->n = a->cap = 0;
}

/* Options whose value is a secret: any local user can read a process's
 * command line (/proc/PID/cmdline, ps), only its owner its environment. */
static int secret_option(const char *name)
{
    return !strcmp(name, "ssl-keyfile-password");
}

/* Writes every set option of cfg as command-line arguments; a secret one is
 * set in the environment the workers inherit instead, under its variable. */
static void argv_from_config(argv_builder *a, const cg_config *cfg)
{
    char num[64];
    for (size_t i = 0; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        const char *field = (const char *)cfg + o->offset;
        if (supervisor_only(o->name))
            continue;
        switch (o->type) {
        case CG_OPT_STR: {
            const char *v = *(char *const *)field;
            if (v && secret_option(o->name) && o->env) {
                if (setenv(o->env, v, 1) < 0)
                    a->failed = 1;
            } else if (v) {
                argv_flag(a, o->name, v);
            }
            break;
        }
        case CG_OPT_INT: {
            long v = *(const long *)field;
            if (v < 0 && !o->default_value)
                break;
            snprintf(num, sizeof(num), "%ld", v);
            argv_flag(a, o->name, num);
            break;
        }
        case CG_OPT_FLOAT: {
            double v = *(const double *)field;
            if (v < 0 && !o->default_value)
                break;
            snprintf(num, sizeof(num), "%.17g", v);
            argv_flag(a, o->name, num);
            break;
        }
        case CG_OPT_BOOL: {
            int v = *(const int *)field;
            if (v >= 0)
                argv_prefixed_flag(a, v ? "" : "no-", o->name, NULL);
            break;
        }
        case CG_OPT_FLAG:
            if (*(const int *)field)
                argv_flag(a, o->name, NULL);
            break;
        case CG_OPT_CHOICE:
            argv_flag(a, o->name, o->choices[*(const int *)field]);
            break;
        case CG_OPT_LIST: {
            const cg_strlist *l = (const cg_strlist *)field;
            for (size_t j = 0; j < l->n; j++)
                argv_flag(a, o->name, l->items[j]);
            break;
        }
        }
    }
}

static void sup_log(void *ctx, int level, const char *msg)
{
    cg_log((cg_log_state *)ctx, level, "%s", msg);
}

/* The reload patterns: defaults, minus any default the user put in the
 * other list (a pattern cannot be both included and excluded). */
static const char *const default_includes[] = {"*.py"};
static const char *const default_excludes[] = {".*", ".py[cod]", ".sw.*", "~*"};

static int in_list(const cg_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i], s))
            return 1;
    return 0;
}

static size_t patterns(const cg_strlist *given, const char *const *defaults, size_t ndefaults,
                       const cg_strlist *other, const char **out)
{
    size_t n = 0;
    for (size_t i = 0; i < ndefaults; i++)
        if (!in_list(other, defaults[i]) && !in_list(given, defaults[i]))
            out[n++] = defaults[i];
    for (size_t i = 0; i < given->n; i++)
        out[n++] = given->items[i];
    return n;
}

/* --ssl-*: the files are loaded once here, so a bad one is one line and exit
 * 3 before any worker starts; the workers get one session-ticket secret
 * (CG_TLS_TICKET_ENV), so a client resumes its session on any of them. */
static int tls_prepare(cg_state *st, const cg_config *cfg)
{
    char hex[65];
    unsigned char secret[32];
    cg_tls_ctx *ctx = cg_config_tls_load(cfg, &st->log);
    if (!ctx)
        return -1;
    cg_tls_ctx_free(ctx);
    if (getrandom(secret, sizeof(secret), 0) != (ssize_t)sizeof(secret)) {
        cg_log(&st->log, CG_WARNING, "TLS: no random secret for session tickets: %s",
               strerror(errno));
        return 0;
    }
    for (size_t i = 0; i < sizeof(secret); i++)
        snprintf(hex + 2 * i, 3, "%02x", secret[i]);
    setenv(CG_TLS_TICKET_ENV, hex, 1);
    return 0;
}

int cg_supervise(PyObject *module, cg_config *cfg)
{
    cg_state *st = cg_get_state(module);
    argv_builder argv = {0};
    cg_watch *watch = NULL;
    const char **includes = NULL, **excludes = NULL;
    const char *dot = ".";
    char err[256], fdtext[32], modules_path[256] = "", url[256], ready[320];
    int fd = -1, status = 3, nact = 0, *fds = &fd;
    char *fdnames = NULL;
    cg_sd_notify sd = {.fd = -1};
    double watchdog = 0;
    cg_metrics metrics = {NULL, 0, -1};
    cg_metrics_server *metrics_srv = NULL;
    extern char **environ;

    sigset_t blocked, old_mask;

    if (cg_log_setup(&st->log, cfg) < 0)
        return 3;
    /* Signals wait from here (the supervisor reads them from a signalfd): one
     * sent right after the "running" line is never lost or fatal. */
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGQUIT);
    sigaddset(&blocked, SIGHUP);
    sigaddset(&blocked, SIGTTIN);
    sigaddset(&blocked, SIGTTOU);
    sigprocmask(SIG_BLOCK, &blocked, &old_mask);
    if (!cfg->app) {
        cg_log(&st->log, CG_ERROR,
               "You must pass the application as an import string to enable 'reload' or "
               "'workers'.");
        goto done;
    }
    if (cfg->ssl_certfile && tls_prepare(st, cfg) < 0)
        goto done;
    /* Only the supervisor (systemd's main process) notifies. */
    if (cg_config_sd_notify(&sd, &watchdog, err, sizeof(err)) < 0)
        cg_log(&st->log, CG_WARNING, "No systemd notifications: %s", err);
    nact = cg_config_activated_fds(&fdnames, err, sizeof(err));
    if (nact < 0) {
        cg_log(&st->log, CG_ERROR, "%s", err);
        goto done;
    }
    if (nact > 0) {
        fds = PyMem_Calloc((size_t)nact, sizeof(int));
        if (!fds) {
            fds = &fd;
            nact = 0; /* nothing to close or free below */
            cg_log(&st->log, CG_ERROR, "out of memory");
            goto done;
        }
        for (int i = 0; i < nact; i++)
            fds[i] = CG_SD_LISTEN_FDS_START + i;
        fd = fds[0];
    } else if (cfg->fd >= 0)
        fd = (int)cfg->fd;
    else if (cfg->uds)
        fd = cg_listen_unix(cfg->uds, (int)cfg->backlog, err, sizeof(err));
    else
        fd = cg_listen_tcp(cfg->host, (int)cfg->port, (int)cfg->backlog, err, sizeof(err));
    if (fd < 0) {
        cg_log(&st->log, CG_ERROR, "%s: error while attempting to bind on address ('%s', %ld)", err,
               cfg->uds ? cfg->uds : cfg->host, cfg->port);
        goto done;
    }

    /* Metrics: a slot per worker process. Besides the N workers, a rolling
     * restart or a retiring worker adds one replacement at a time, reload
     * mode a standby, SIGTTIN more workers; a worker started when none is
     * free runs uncounted (logged). */
    if (cfg->metrics_port >= 0) {
        long n = (cfg->workers > 0 ? cfg->workers : 1) * 2 + 16;
        if (cg_metrics_create(&metrics, (uint32_t)n) < 0) {
            cg_log(&st->log, CG_ERROR, "Metrics: cannot create the counters: [Errno %d] %s", errno,
                   strerror(errno));
            goto done;
        }
        metrics_srv = cg_meter_serve(&st->log, cfg, metrics.r);
        if (!metrics_srv)
            goto done;
    }

    ready[0] = '\0';
    if (nact > 0)
        cg_log(&st->log, CG_INFO, "Serving %d socket(s) passed by systemd (socket activation)",
               nact);
    for (int i = 0; i < (nact > 0 ? nact : 1); i++) {
        if (cfg->uds && nact == 0)
            snprintf(url, sizeof(url), "unix socket %s", cfg->uds);
        else if (cg_sock_url(fds[i], cfg->ssl_certfile ? "https" : "http", url, sizeof(url)) < 0)
            snprintf(url, sizeof(url), "socket fd %d", fds[i]);
        cg_log(&st->log, CG_INFO, "casgi running on %s (Press CTRL+C to quit)", url);
        size_t used = strlen(ready);
        snprintf(ready + used, sizeof(ready) - used, "%s%s", used ? ", " : "Serving on ", url);
    }

    /* The worker's command: the same interpreter, the whole configuration. */
    PyObject *exe = PySys_GetObject("executable"); /* borrowed */
    const char *exe_s = exe ? PyUnicode_AsUTF8(exe) : NULL;
    if (!exe_s || !*exe_s) {
        PyErr_Clear();
        cg_log(&st->log, CG_ERROR, "cannot find the Python executable to start workers");
        goto done;
    }
    argv_push(&argv, exe_s);
    argv_push(&argv, "-m");
    argv_push(&argv, "casgi");
    argv_from_config(&argv, cfg);
    /* Activated sockets reach the workers as systemd passed them (LISTEN_*,
     * see cg_sup_config), others as --fd. */
    if (nact == 0) {
        snprintf(fdtext, sizeof(fdtext), "%d", fd);
        argv_flag(&argv, "fd", fdtext);
    }
    argv_push(&argv, "--");
    argv_push(&argv, cfg->app);
    if (argv.failed) {
        cg_log(&st->log, CG_ERROR, "out of memory");
        goto done;
    }

    if (cfg->reload) {
        size_t ni, ne;
        includes = calloc(cfg->reload_includes.n + 1, sizeof(char *));
        excludes = calloc(cfg->reload_excludes.n + 4, sizeof(char *));
        if (!includes || !excludes)
            goto done;
        ni = patterns(&cfg->reload_includes, default_includes, 1, &cfg->reload_excludes, includes);
        ne = patterns(&cfg->reload_excludes, default_excludes, 4, &cfg->reload_includes, excludes);
        cg_watch_opts wo = {
            .dirs = cfg->reload_dirs.n ? (const char *const *)cfg->reload_dirs.items : &dot,
            .ndirs = cfg->reload_dirs.n ? cfg->reload_dirs.n : 1,
            .include = includes,
            .ninclude = ni,
            .exclude = excludes,
            .nexclude = ne,
            .poll = cfg->reload_poll > 0,
            .poll_interval = CG_POLL_INTERVAL,
        };
        watch = cg_watch_new(&wo, err, sizeof(err));
        if (!watch) {
            cg_log(&st->log, CG_ERROR, "Error: cannot watch for changes: %s", err);
            goto done;
        }
    }

    double graceful = cfg->timeout_graceful_shutdown;
    double delay = cfg->reload_delay > 0 ? cfg->reload_delay : 0.1;
    /* Polling sees a burst of writes over one scan interval: debounce longer
     * than that so the burst is one reload. */
    if (watch && !strcmp(cg_watch_backend(watch), "polling") && delay < CG_POLL_INTERVAL + 0.05)
        delay = CG_POLL_INTERVAL + 0.05;
    /* Standby workers learn which installed modules to import from the file
     * each worker writes once it is serving (see standby.c). */
    if (watch && cfg->reload_standby != 0 &&
        cg_standby_file_create(modules_path, sizeof(modules_path)) < 0) {
        cg_log(&st->log, CG_WARNING,
               "No standby worker: cannot create a file in the temporary directory");
        modules_path[0] = '\0';
    }
    cg_sup_config sc = {
        .argv = argv.items,
        .envp = environ,
        .listen_fds = fds,
        .nlisten = nact > 0 ? (size_t)nact : 1,
        .listen_activated = nact > 0,
        .listen_fdnames = fdnames,
        .notify = &sd,
        .ready_status = ready,
        .watchdog = watchdog,
        .workers = cfg->workers > 0 ? (int)cfg->workers : 1,
        .watch = watch,
        .standby = modules_path[0] != '\0',
        .reload_delay = delay,
        .reload_timeout = graceful >= 0 ? graceful + CG_EXIT_MARGIN : 5.0,
        .shutdown_timeout = graceful >= 0 ? graceful + CG_EXIT_MARGIN : 30.0,
        .healthcheck_timeout = cfg->timeout_worker_healthcheck,
        .startup_timeout = cfg->timeout_worker_startup,
        .metrics = metrics.r,
        .metrics_fd = metrics.fd,
        .log = sup_log,
        .log_ctx = &st->log,
    };
    status = cg_supervisor_run(&sc);
done:
    cg_metrics_server_stop(metrics_srv);
    cg_metrics_close(&metrics);
    if (modules_path[0])
        cg_standby_file_remove(modules_path);
    if (watch)
        cg_watch_free(watch);
    free(includes);
    free(excludes);
    argv_free(&argv);
    for (int i = 0; i < nact; i++)
        close(fds[i]);
    if (nact > 0)
        PyMem_Free(fds);
    PyMem_Free(fdnames);
    cg_sd_notify_close(&sd);
    if (nact == 0 && fd >= 0 && fd != cfg->fd)
        close(fd);
    if (nact == 0 && fd >= 0 && cfg->uds && cfg->fd < 0)
        unlink(cfg->uds);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    return status;
}

int cg_wants_supervisor(const cg_config *cfg)
{
    return (cfg->reload > 0 || cfg->workers > 1) && !getenv("CASGI_WORKER");
}
