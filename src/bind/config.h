/* Configuration from the command line, the environment and run() keywords:
 * the binding side of the option table in core/options.h. */
#ifndef CASGI_CONFIG_H
#define CASGI_CONFIG_H

#include "casgi.h"

#include "tls.h"

struct cg_sd_notify;

/**
 * Fills `cfg` from `argv` (a list of str without the program name) and
 * os.environ. Returns -1 to go on serving; otherwise the process exit status
 * after handling the request itself: 0 after printing --help or --version to
 * stdout, 2 after printing a one-line usage error "Error: ..." to stderr.
 * `cfg` is initialised in every case and must be freed by the caller.
 */
int cg_config_from_argv(PyObject *argv, cg_config *cfg);

/**
 * Fills `cfg` from os.environ and then run() keywords (name -> value; True,
 * False, int, float, str, or a list of str for list options). Returns 0, or -1
 * with TypeError/ValueError set naming the keyword and `who` (the caller as
 * users wrote it: "run()", "Config()"). `cfg` is initialised in every case and
 * must be freed by the caller.
 */
int cg_config_from_kwargs(PyObject *kwargs, cg_config *cfg, const char *who);

/** Every option's value in `cfg` as a dict keyed by its keyword name
 * ("timeout_keep_alive"): str or None, int (None when unset), float, bool
 * (None when unset), a choice's name, a list of str. NULL with an exception. */
PyObject *cg_config_values(const cg_config *cfg);

/** Loads cfg->env_file (if set) into os.environ. Returns 0, or -1 after
 * logging "Error: ..." (file missing or malformed). */
int cg_config_load_env_file(const cg_config *cfg);

/** Removes `name` from the process environment and from os.environ (never
 * raises): variables meant for this process only, not for the app's
 * subprocesses. */
void cg_environ_remove(const char *name);

/** Socket activation: the number of listening sockets systemd passed this
 * process (LISTEN_PID is ours; they are fds CG_SD_LISTEN_FDS_START onwards),
 * each checked to be a listening stream socket and made close-on-exec; 0
 * when none. The LISTEN_* variables naming this process are removed from
 * the environment (the app's subprocesses must not take the sockets for
 * theirs); *names gets a copy of LISTEN_FDNAMES (PyMem_Free) or NULL.
 * Returns -1 with a message in err when the variables or a socket are bad. */
int cg_config_activated_fds(char **names, char *err, size_t errlen);

/** systemd notifications: opens n for $NOTIFY_SOCKET (fd -1 when unset) and
 * sets *watchdog to the watchdog interval in seconds ($WATCHDOG_USEC for this
 * process, else 0), then removes NOTIFY_SOCKET, WATCHDOG_USEC and
 * WATCHDOG_PID from the environment: only this process notifies. Returns 0,
 * or -1 with a message in err (n has fd -1 then). */
int cg_config_sd_notify(struct cg_sd_notify *n, double *watchdog, char *err, size_t errlen);

/** The TLS configuration the --ssl-* options describe (strings borrowed
 * from cfg), with the ALPN protocols served. */
void cg_config_tls_conf(const cg_config *cfg, cg_tls_conf *out);
/** Loads the TLS context the --ssl-* options describe; NULL after logging
 * one ERROR line naming the file and the cause. */
cg_tls_ctx *cg_config_tls_load(const cg_config *cfg, cg_log_state *log);

/* The environment variable a supervisor passes its workers the shared
 * session-ticket secret in (hex), so a client resumes on any worker. */
#define CG_TLS_TICKET_ENV "CASGI_TLS_TICKET_SECRET"

#endif
