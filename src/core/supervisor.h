/* Process supervisor for --workers and --reload: pure C (POSIX + Linux).
 *
 * It keeps the listening sockets open for its whole life (connections that
 * arrive while no worker is up wait in the backlog), starts workers with
 * fork+exec, receives signals through a signalfd (no work in handlers),
 * signals only its children by pid, reaps every child, and escalates SIGTERM
 * to SIGKILL after a bounded grace period.
 *
 * Worker protocol. Each worker is exec'd with the environment variable
 *   CASGI_WORKER="<ctl_fd>:<alive_fd>"
 * added, the listening fds inherited at the same numbers, PR_SET_PDEATHSIG
 * set to SIGKILL, and the signal mask and dispositions reset. The worker
 * writes single bytes to ctl_fd: 'R' ready (serving), 'H' heartbeat (sent by
 * its event loop about once a second), 'X' retiring (wants to be replaced,
 * e.g. --limit-max-requests; it keeps serving until it gets SIGTERM). It
 * exits when alive_fd reports EOF (the supervisor is gone). It exits with
 * status 3 when its app cannot load. SIGUSR1 asks it to dump its Python stack
 * to stderr (used before killing a worker whose loop is stuck).
 *
 * Standby (reload mode with cfg->standby). Once the workers are ready, one
 * more is started with CASGI_WORKER="<ctl_fd>:<alive_fd>:S": it prepares what
 * it can without the app, then blocks reading alive_fd. On a reload the
 * supervisor writes the byte 'G' to it, and from then on it is an ordinary
 * starting worker (it loads the app and sends 'R'); EOF on alive_fd still
 * means "exit". A standby is not counted as a worker, is stopped like one,
 * and one that exits before it is released is not replaced until the next
 * reload. A standby starts with SIGINT ignored (Ctrl-C reaches the whole
 * group; the supervisor stops the standby itself). alive_fd is one end of a
 * stream socket pair.
 *
 * Metrics (cfg->metrics). Each worker is given a slot of the shared region
 * (core/metrics.h) and exec'd with CASGI_METRICS="<fd>:<slot>", the region's
 * memfd inherited at the same number. When the worker is reaped its counters
 * are folded into the region's retired section and the slot is freed. The
 * supervisor counts the workers it replaces by cause (crash, health check,
 * --limit-max-requests, reload or SIGHUP, startup timeout).
 */
#ifndef CG_SUPERVISOR_H
#define CG_SUPERVISOR_H

#include <stddef.h>

struct cg_watch;
struct cg_sd_notify;

struct cg_metrics_region;

enum { CG_SUP_DEBUG = 10, CG_SUP_INFO = 20, CG_SUP_WARNING = 30, CG_SUP_ERROR = 40 };

typedef struct cg_sup_config {
    char *const *argv;     /* worker command; argv[0] is the executable's path */
    char *const *envp;     /* base environment of workers (CASGI_WORKER is added) */
    const int *listen_fds; /* inherited by workers at the same numbers */
    size_t nlisten;
    int workers;                /* how many to keep running (>= 1) */
    struct cg_watch *watch;     /* non-NULL: --reload, restart all workers on changes */
    int standby;                /* reload mode: keep a standby worker (see above) */
    double reload_delay;        /* debounce window, seconds (a burst is one reload) */
    double reload_timeout;      /* SIGTERM->SIGKILL bound when restarting for reload (< 0: 5 s) */
    double shutdown_timeout;    /* SIGTERM->SIGKILL bound when stopping for good (< 0: 30 s).
                                   A rolling-restart replacement must send 'R' within the
                                   larger of this and healthcheck_timeout. */
    double healthcheck_timeout; /* seconds without 'H' after 'R' = stuck; 0 = off */
    double startup_timeout;     /* seconds from start to 'R' (lifespan startup included):
                                   a worker not ready by then is stopped and replaced; 0 = off */
    /* Socket activation: listen_fds are the inherited 3, 4, ... and each worker
     * gets them the way systemd gave them: LISTEN_FDS=nlisten, LISTEN_PID=<the
     * worker's pid> and LISTEN_FDNAMES=listen_fdnames (unless NULL). */
    int listen_activated;
    const char *listen_fdnames;
    /* systemd notifications (NULL, or fd -1: none): READY=1 once `workers`
     * workers are ready (again after a reload or a rolling restart), with
     * "STATUS=<ready_status>"; RELOADING=1 on SIGHUP and on a reload for file
     * changes; STOPPING=1 when stopping; WATCHDOG=1 every watchdog / 2
     * seconds (0: none) while no ready worker's heartbeat is stale
     * (cg_sd_watchdog_stale_after), so a stuck event loop stops the pings. */
    const struct cg_sd_notify *notify;
    const char *ready_status;
    double watchdog;

    struct cg_metrics_region *metrics; /* non-NULL: a slot per worker, restarts counted */
    int metrics_fd;                    /* the region's memfd, inherited by workers */
    /* Log sink; `level` is one of CG_SUP_*. Called from the supervisor's loop. */
    void (*log)(void *ctx, int level, const char *msg);
    void *log_ctx;
} cg_sup_config;

/**
 * Runs until SIGINT/SIGTERM (graceful: workers get SIGTERM, the supervisor
 * waits up to shutdown_timeout, then SIGKILLs; a second SIGINT or SIGTERM
 * SIGKILLs them at once),
 * SIGQUIT (immediate: SIGKILL all), or a boot failure in workers mode (a
 * worker that exits with status 3 before sending 'R': all workers are
 * stopped and 3 is returned). Also: SIGHUP reloads (reload mode: restart all;
 * workers mode: rolling restart, a new worker started and ready before an
 * old one is stopped, an unready replacement aborting the roll); SIGTTIN /
 * SIGTTOU add / remove one worker (never below one); a dead worker is
 * replaced with exponential backoff when workers die repeatedly within
 * seconds (reload mode: a worker that fails is not restarted until the next
 * change: "Waiting for file changes before restarting"); a worker that sent
 * 'X' is replaced (replacement ready first, then the old one stopped); a
 * worker not ready within startup_timeout is stopped (SIGTERM, then SIGKILL
 * shortly after) and replaced.
 * Returns the exit status: 0 after a clean stop, 3 after a boot failure,
 * 1 on an internal error (logged). The caller must not have other children.
 */
int cg_supervisor_run(const cg_sup_config *cfg);

#endif
