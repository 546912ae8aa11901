/* Logging through Python's `logging`: loggers "casgi.error" and
 * "casgi.access" (or "uvicorn.error" / "uvicorn.access" when a --log-config
 * written for uvicorn configures those), configured like uvicorn's defaults
 * or from --log-config. */
#ifndef CASGI_LOG_H
#define CASGI_LOG_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "alog.h"
#include "slice.h"

struct cg_config;

/* Python logging levels, plus TRACE below DEBUG as uvicorn has it. */
enum {
    CG_TRACE = 5,
    CG_DEBUG = 10,
    CG_INFO = 20,
    CG_WARNING = 30,
    CG_ERROR = 40,
    CG_CRITICAL = 50
};

typedef struct cg_log_state {
    PyObject *error_logger;  /* logging.getLogger("casgi.error") */
    PyObject *access_logger; /* logging.getLogger("casgi.access") */
    int error_level;         /* effective level of error_logger, refreshed at setup */
    char family[8];          /* logger name prefix: "casgi", or "uvicorn" when the
                                --log-config configured uvicorn's loggers */
    int access_enabled;      /* access log on and INFO enabled for access_logger */
    cg_slice root_path;      /* --root-path, put before the path in access lines (owned) */
    /* Objects cg_log_access reuses on every call, created by cg_log_setup. */
    PyObject *s_info;     /* "info" */
    PyObject *access_fmt; /* '%s - "%s %s HTTP/%s" %d' */
    PyObject *v1_0;       /* "1.0" */
    PyObject *v1_1;       /* "1.1" */
    PyObject *v2;         /* "2" */
    /* --access-log-format / --access-log-json compiled (owned), or NULL for
     * uvicorn's line; alog_fmt is the format as str, a record's msg. */
    cg_alog *alog;
    PyObject *alog_fmt;
    /* Set when the access logger has exactly the default configuration: the
     * line is then formatted here and written to the handler's stream without
     * a LogRecord. Private to log.c; NULL otherwise. */
    struct cg_log_fast *fast;
} cg_log_state;

/**
 * Configures logging from cfg: --log-config (.json / .yaml / .yml as dictConfig,
 * anything else as fileConfig), else the default configuration (casgi.logging
 * formatters, colours when use_colors is 1 or -1 with a TTY), then --log-level
 * and --access-log. Fills st. Returns 0, or -1 after printing a one-line
 * "Error: ..." to stderr.
 */
int cg_log_setup(cg_log_state *st, const struct cg_config *cfg);
/** Like cg_log_setup, but keeps the handlers and levels already set on the
 * casgi loggers (a host such as gunicorn configured them). */
int cg_log_attach(cg_log_state *st, const struct cg_config *cfg);
void cg_log_clear(cg_log_state *st);

/** Prints "Error: [<prefix>: ]<Type>: <message>" for the current exception on
 * one line to stderr (for failures before logging exists) and clears it. */
void cg_print_exception_line(const char *prefix);
int cg_log_traverse(cg_log_state *st, visitproc visit, void *arg);

/** Logs a PyUnicode_FromFormat-style message to casgi.error at `level` when
 * enabled. Never raises; keeps any exception that was set before the call. */
void cg_log(cg_log_state *st, int level, const char *fmt, ...);

/** Writes out access lines still buffered by the fast path (they are
 * otherwise written once per event loop iteration). */
void cg_log_flush(cg_log_state *st);

/** Logs `msg` at ERROR with the current exception's traceback (exc_info) and
 * clears the exception. Must be called with an exception set. */
void cg_log_exception(cg_log_state *st, const char *msg);

/** One access line for the request e. By default uvicorn's
 * `client - "METHOD root_path+path?query HTTP/1.x" status`, logged as
 * access_logger.info(fmt, client_addr, method, full_path, http_version, status_code)
 * so formatters see uvicorn's record args (e's client, method, path, query,
 * version and status are read). With --access-log-format, the record is
 * gunicorn's: info(format, atoms), the atoms a dict (B T M D as int), so its
 * message is the line; with --access-log-json the message is the JSON text.
 * Bytes outside printable ASCII in the request data are written as \xNN (no
 * log injection). Returns at once when access_enabled is 0; never raises. */
void cg_log_access(cg_log_state *st, const cg_alog_entry *e);

#endif
