/* Process supervisor for --workers and --reload (see supervisor.h).
 *
 * Shape. One loop, one place to sleep: poll() over a signalfd, each worker's
 * ctl pipe and the watcher's fd, with a timeout computed from the nearest
 * deadline (a SIGKILL due, a heartbeat due, the end of the debounce window,
 * the end of a spawn backoff, a rolling-restart replacement's readiness
 * bound, the watcher's next scan). Each iteration first runs what is due
 * (timers, then the "keep N workers" rules), then sleeps, then handles what
 * woke it: ctl bytes, signals (reaping on SIGCHLD), watcher events. Work per
 * wakeup is bounded: a fixed number of siginfo records, one read per ctl
 * pipe, one cg_watch_process call.
 *
 * Worker records. A worker is STARTING until it sends 'R', then READY. Once
 * the supervisor has sent it SIGTERM (or SIGUSR1 for a stuck worker) it is
 * STOPPING with a deadline after which it gets SIGKILL. A record lives until
 * the process is reaped; its pipes are closed then. Which workers count
 * toward the target N ("active"): not STOPPING, not retiring ('X'), and not a
 * rolling-restart replacement that is still STARTING. Two rules keep N:
 * fewer active than N: spawn (subject to backoff); more than N: stop the
 * surplus, workers marked old by a rolling restart first. A rolling restart
 * is then only "mark everyone old, start one extra replacement at a time":
 * when it becomes ready it counts, the surplus rule stops an old worker, and
 * the next replacement is started.
 *
 * Timeouts below zero in the configuration mean "use the default" (5 s for
 * reload restarts, 30 s for shutdown): a stop is always bounded.
 *
 * Standby (reload mode). A standby record is not active; it is started once
 * no active worker is still starting (so it never slows a reload down and
 * the worker it learns from is up), and a reload releases it ('G') instead of
 * waiting for a fresh interpreter.
 */
#include "supervisor.h"
#include "metrics.h"
#include "watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "systemd.h"

#define CG_SUP_BACKOFF_MIN 0.1   /* first delay after a quick death, seconds */
#define CG_SUP_BACKOFF_MAX 10.0  /* the delay doubles up to this */
#define CG_SUP_BACKOFF_RESET 5.0 /* a worker that lived longer resets the backoff */
#define CG_SUP_STACK_GRACE 0.75  /* SIGUSR1 (stack dump) -> SIGKILL for a stuck worker */
#define CG_SUP_STARTUP_GRACE 2.0 /* SIGTERM -> SIGKILL for a worker not ready in time */
#define CG_SUP_DEBOUNCE_MAX 2.0  /* a continuous stream of changes still reloads */
#define CG_SUP_WATCH_RETRY 1.0   /* pause after a watcher error */
#define CG_SUP_LIST_FILES 10     /* changed files named in the reload message */
#define CG_SUP_SIGINFO_BATCH 16  /* siginfo records read per wakeup */
#define CG_SUP_CTL_BATCH 64      /* ctl bytes read per worker per wakeup */
#define CG_SUP_HEARTBEAT 1.0     /* a worker's loop beats about this often, seconds */

enum cg_wstate { CG_W_STARTING, CG_W_READY, CG_W_STOPPING };

/* One child process. `ctl` and `alive` are owned and closed when the record is
 * removed (after the process is reaped). */
typedef struct cg_worker {
    pid_t pid;
    int ctl;      /* read end of the ctl pipe (non-blocking); -1 after EOF */
    int alive;    /* our end of the alive socket pair; closed at removal */
    int state;    /* enum cg_wstate */
    int old;      /* to be replaced by the rolling restart in progress */
    int roll;     /* a rolling-restart replacement (until it is ready) */
    int retiring; /* sent 'X': replace it, then stop it */
    int stuck;    /* stopped by the health check */
    int standby;  /* started as a standby and not released yet */
    int killed;   /* SIGKILL sent */
    double started, last_hb;
    double kill_at;  /* STOPPING: when SIGKILL is due */
    double ready_by; /* roll: when the replacement must be ready */
    int mslot;       /* its slot of cfg->metrics, or -1 */
} cg_worker;

typedef struct cg_sup {
    const cg_sup_config *cfg;
    int sfd;
    cg_worker *w; /* owned array, start order */
    size_t nw, capw;
    int target;      /* how many active workers to keep */
    int reload_mode; /* cfg->watch != NULL */
    int stopping;    /* 1: stopping for good */
    int forced;      /* SIGKILL sent to everyone */
    int status;      /* return value once stopped */
    int ever_ready;  /* some worker has sent 'R' */
    int waiting;     /* reload mode: a worker failed, wait for a change */
    int rolling;     /* workers mode: rolling restart in progress */
    int standby_ok;  /* reload mode: a standby may be started (cleared when one fails) */
    double stop_deadline;
    double backoff, next_spawn_at;
    double reload_at, first_change_at; /* debounce window; 0 = none */
    double watch_retry_at;
    double reload_bound, shutdown_bound;
    double roll_bound; /* a rolling replacement must be ready within this */
    char **changed;    /* owned: pending changed paths (debounced) */
    size_t nchanged, capchanged;
    int sd_ready;   /* READY=1 sent for the workers serving now */
    double wd_next; /* when the next WATCHDOG=1 is due (cfg->watchdog > 0) */
    pid_t wd_stale; /* the worker whose stale heartbeat holds the pings back, or 0 */
} cg_sup;

__attribute__((format(printf, 3, 4))) static void sup_log(cg_sup *s, int level, const char *fmt,
                                                          ...)
{
    char msg[1024];
    va_list ap;

    if (!s->cfg->log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->cfg->log(s->cfg->log_ctx, level, msg);
}

/* systemd notifications (cfg->notify); a failed send is not the service's
 * failure, and systemd notices a missing READY=1 or WATCHDOG=1 itself. */
static void sd_send(cg_sup *s, const char *msg)
{
    if (s->cfg->notify)
        (void)cg_sd_notify_send(s->cfg->notify, msg);
}

static void sd_reloading(cg_sup *s)
{
    s->sd_ready = 0;
    if (s->cfg->notify)
        (void)cg_sd_notify_reloading(s->cfg->notify, "Reloading");
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        /* close() is not retried on EINTR: on Linux the fd is gone either way. */
        close(*fd);
        *fd = -1;
    }
}

/* ---- worker records ---------------------------------------------------- */

static cg_worker *find_worker(cg_sup *s, pid_t pid)
{
    for (size_t i = 0; i < s->nw; i++)
        if (s->w[i].pid == pid)
            return &s->w[i];
    return NULL;
}

static void remove_worker(cg_sup *s, cg_worker *w)
{
    size_t i = (size_t)(w - s->w);

    if (s->cfg->metrics && w->mslot >= 0)
        cg_metrics_slot_release(s->cfg->metrics, w->mslot); /* its counts stay in the totals */
    close_fd(&w->ctl);
    close_fd(&w->alive);
    memmove(&s->w[i], &s->w[i + 1], (s->nw - i - 1) * sizeof(*w));
    s->nw--;
}

/* Counts a worker replaced for `cause` (enum cg_metrics_cause). */
static void count_restart(cg_sup *s, int cause)
{
    if (s->cfg->metrics)
        cg_metrics_restart(s->cfg->metrics, cause);
}

static int is_active(const cg_worker *w)
{
    return w->state != CG_W_STOPPING && !w->retiring && !w->standby &&
           !(w->roll && w->state == CG_W_STARTING);
}

static int count_active(const cg_sup *s, int ready_only)
{
    int n = 0;
    for (size_t i = 0; i < s->nw; i++)
        if (is_active(&s->w[i]) && (!ready_only || s->w[i].state == CG_W_READY))
            n++;
    return n;
}

static cg_worker *starting_roll_worker(cg_sup *s)
{
    for (size_t i = 0; i < s->nw; i++)
        if (s->w[i].roll && s->w[i].state == CG_W_STARTING)
            return &s->w[i];
    return NULL;
}

/* Sends SIGTERM (once) and sets the SIGKILL deadline. */
static void stop_worker(cg_worker *w, double kill_at)
{
    if (w->state == CG_W_STOPPING) {
        if (kill_at < w->kill_at)
            w->kill_at = kill_at;
        return;
    }
    w->state = CG_W_STOPPING;
    w->kill_at = kill_at;
    /* ESRCH only means it exited and is not reaped yet: SIGCHLD follows. */
    (void)kill(w->pid, SIGTERM);
}

static void kill_worker(cg_worker *w)
{
    if (!w->killed) {
        w->killed = 1;
        if (w->state != CG_W_STOPPING) {
            w->state = CG_W_STOPPING;
            w->kill_at = 0;
        }
        (void)kill(w->pid, SIGKILL);
    }
}

static void kill_all(cg_sup *s)
{
    for (size_t i = 0; i < s->nw; i++)
        kill_worker(&s->w[i]);
}

/* ---- spawning ---------------------------------------------------------- */

/* What the child reports through the error pipe before it exits. */
typedef struct cg_spawn_err {
    int stage; /* enum below */
    int err;   /* errno */
} cg_spawn_err;

enum { CG_STAGE_PARENT, CG_STAGE_DUP, CG_STAGE_FCNTL, CG_STAGE_EXEC };

static const char *const stage_names[] = {"parent died", "dup2", "fcntl", "exec"};

static int fd_in(int fd, const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] == fd)
            return 1;
    return 0;
}

/* The lowest fd >= 3 that is not a listening fd and not in `avoid`. */
static int pick_fd(const cg_sup_config *cfg, const int *avoid, size_t navoid)
{
    int fd = 3;
    while (fd_in(fd, cfg->listen_fds, cfg->nlisten) || fd_in(fd, avoid, navoid) ||
           (cfg->metrics && fd == cfg->metrics_fd))
        fd++;
    return fd;
}

/* Socket activation variables for one worker; `pid` is filled in by the
 * child itself (fill_pid), the only process that knows its pid before exec. */
typedef struct cg_listen_env {
    char fds[32];
    char pid[32];
    char *names; /* owned, or NULL */
} cg_listen_env;

static int is_listen_var(const char *e)
{
    return !strncmp(e, "LISTEN_PID=", 11) || !strncmp(e, "LISTEN_FDS=", 11) ||
           !strncmp(e, "LISTEN_FDNAMES=", 15);
}

/* Builds the worker's environment: the base without CASGI_WORKER and
 * CASGI_METRICS (and, with socket activation, without LISTEN_*), plus ours
 * (`mvar` and `le` may be NULL). The array, `var`, `mvar` and `le` are owned
 * by the caller; the base strings are not. */
static char **build_envp(const cg_sup_config *cfg, char *var, char *mvar, cg_listen_env *le)
{
    size_t n = 0, k = 0;
    char **envp;

    for (char *const *e = cfg->envp; e && *e; e++)
        n++;
    envp = malloc((n + 6) * sizeof(*envp));
    if (!envp)
        return NULL;
    for (char *const *e = cfg->envp; e && *e; e++)
        if (strncmp(*e, "CASGI_WORKER=", 13) != 0 && strncmp(*e, "CASGI_METRICS=", 14) != 0 &&
            !(le && is_listen_var(*e)))
            envp[k++] = *e;
    envp[k++] = var;
    if (mvar)
        envp[k++] = mvar;
    if (le) {
        snprintf(le->fds, sizeof(le->fds), "LISTEN_FDS=%zu", cfg->nlisten);
        snprintf(le->pid, sizeof(le->pid), "LISTEN_PID=");
        envp[k++] = le->fds;
        envp[k++] = le->pid;
        if (le->names)
            envp[k++] = le->names;
    }
    envp[k] = NULL;
    return envp;
}

/* Writes "LISTEN_PID=<getpid()>" into le->pid: async-signal-safe. */
static void fill_pid(cg_listen_env *le)
{
    char digits[24];
    size_t n = 0, off = strlen("LISTEN_PID=");
    unsigned long v = (unsigned long)getpid();
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < sizeof(digits));
    while (n > 0 && off + 1 < sizeof(le->pid))
        le->pid[off++] = digits[--n];
    le->pid[off] = '\0';
}

/* Runs in the forked child: only async-signal-safe calls from here on. */
__attribute__((noreturn)) static void child_exec(const cg_sup_config *cfg, char **envp,
                                                 cg_listen_env *le, pid_t parent, int ctl_w,
                                                 int ctl_to, int alive_r, int alive_to, int err_w,
                                                 int standby, int metrics_slot)
{
    cg_spawn_err e = {CG_STAGE_PARENT, 0};
    struct sigaction sa;
    sigset_t empty;

    /* Dispositions first, then the mask: a signal already pending then acts
     * with its default meaning. Ignored signals survive exec, so every
     * disposition is reset, not only the handled ones. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &sa, NULL);
    /* A standby leaves Ctrl-C (SIGINT to the whole group) to the supervisor,
     * from its first instruction on: an ignored signal stays ignored through
     * exec, and Python keeps it so. */
    if (standby) {
        sa.sa_handler = SIG_IGN;
        (void)sigaction(SIGINT, &sa, NULL);
    }
    sigemptyset(&empty);
    (void)sigprocmask(SIG_SETMASK, &empty, NULL);

    /* Die with the supervisor; if it already died, the signal will never come. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        goto fail;

    /* The targets were chosen apart from every fd still needed here, and
     * dup2 clears FD_CLOEXEC on the new fd. */
    e.stage = CG_STAGE_DUP;
    if (dup2(ctl_w, ctl_to) < 0 || dup2(alive_r, alive_to) < 0)
        goto fail_errno;
    e.stage = CG_STAGE_FCNTL;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        int fd = cfg->listen_fds[i];
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 || fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
            goto fail_errno;
    }
    if (le)
        fill_pid(le);
    /* The counters' memfd only to a worker that has a slot in it. */
    if (metrics_slot >= 0 && fcntl(cfg->metrics_fd, F_SETFD, 0) < 0)
        goto fail_errno;
    e.stage = CG_STAGE_EXEC;
    execve(cfg->argv[0], cfg->argv, envp);

fail_errno:
    e.err = errno;
fail:
    while (write(err_w, &e, sizeof(e)) < 0 && errno == EINTR)
        ;
    _exit(127);
}

/* Records a failed start: backoff before the next one. */
static void spawn_backoff(cg_sup *s, double now)
{
    s->backoff = s->backoff > 0 ? s->backoff * 2 : CG_SUP_BACKOFF_MIN;
    if (s->backoff > CG_SUP_BACKOFF_MAX)
        s->backoff = CG_SUP_BACKOFF_MAX;
    s->next_spawn_at = now + s->backoff;
}

static void begin_stop(cg_sup *s, int status, double now);

/* Starts one worker (a standby when `standby`). Returns it, or NULL after
 * logging why (the next attempt is then delayed, or the supervisor stops when
 * no worker ever started; a standby that cannot start is given up until the
 * next reload). */
static cg_worker *spawn_worker(cg_sup *s, double now, int standby)
{
    const cg_sup_config *cfg = s->cfg;
    int ctl[2] = {-1, -1}, alive[2] = {-1, -1}, errp[2] = {-1, -1};
    char var[64], mvar[64];
    char **envp = NULL;
    cg_listen_env le = {.names = NULL}, *lep = NULL;
    cg_spawn_err e;
    cg_worker *w = NULL;
    pid_t pid, parent = getpid();
    ssize_t n;
    int ctl_to, alive_to, status, exec_failed = 0, mslot = -1;

    if (s->nw == s->capw) {
        size_t cap = s->capw ? s->capw * 2 : 8;
        cg_worker *nwp = realloc(s->w, cap * sizeof(*nwp));
        if (!nwp) {
            errno = ENOMEM;
            goto fail_errno;
        }
        s->w = nwp;
        s->capw = cap;
    }
    /* alive is a socket pair so that releasing a standby whose process just
     * died fails with EPIPE (MSG_NOSIGNAL) instead of raising SIGPIPE. */
    if (pipe2(ctl, O_CLOEXEC) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, alive) < 0 || pipe2(errp, O_CLOEXEC) < 0)
        goto fail_errno;
    if (fcntl(ctl[0], F_SETFL, O_NONBLOCK) < 0)
        goto fail_errno;

    {
        int avoid[3] = {ctl[1], alive[0], errp[1]};
        ctl_to = pick_fd(cfg, avoid, 3);
        int avoid2[4] = {ctl[1], alive[0], errp[1], ctl_to};
        alive_to = pick_fd(cfg, avoid2, 4);
    }
    snprintf(var, sizeof(var), "CASGI_WORKER=%d:%d%s", ctl_to, alive_to, standby ? ":S" : "");
    if (cfg->listen_activated) {
        lep = &le;
        if (cfg->listen_fdnames) {
            size_t len = strlen("LISTEN_FDNAMES=") + strlen(cfg->listen_fdnames) + 1;
            le.names = malloc(len);
            if (!le.names) {
                errno = ENOMEM;
                goto fail_errno;
            }
            snprintf(le.names, len, "LISTEN_FDNAMES=%s", cfg->listen_fdnames);
        }
    }
    /* No free slot (more processes than the region was sized for): the worker
     * serves uncounted. */
    mslot = cfg->metrics ? cg_metrics_slot_take(cfg->metrics, -1) : -1;
    if (cfg->metrics && mslot < 0)
        sup_log(s, CG_SUP_WARNING, "No metrics slot left: a new worker is not counted");
    snprintf(mvar, sizeof(mvar), "CASGI_METRICS=%d:%d", cfg->metrics_fd, mslot);
    envp = build_envp(cfg, var, mslot >= 0 ? mvar : NULL, lep);
    if (!envp) {
        errno = ENOMEM;
        goto fail_errno;
    }

    pid = fork();
    if (pid < 0)
        goto fail_errno;
    if (pid == 0)
        child_exec(cfg, envp, lep, parent, ctl[1], ctl_to, alive[0], alive_to, errp[1], standby,
                   mslot);

    close_fd(&ctl[1]);
    close_fd(&alive[0]);
    close_fd(&errp[1]);
    free(envp);
    envp = NULL;
    free(le.names);
    le.names = NULL;

    /* EOF: exec succeeded (the pipe was close-on-exec). A record: it failed. */
    do
        n = read(errp[0], &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    close_fd(&errp[0]);
    if (n == (ssize_t)sizeof(e)) {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        exec_failed = 1;
        if (e.stage == CG_STAGE_EXEC)
            sup_log(s, CG_SUP_ERROR, "cannot start worker: [Errno %d] %s: '%s'", e.err,
                    strerror(e.err), cfg->argv[0]);
        else if (e.stage == CG_STAGE_PARENT)
            sup_log(s, CG_SUP_ERROR, "cannot start worker: the supervisor is exiting");
        else
            sup_log(s, CG_SUP_ERROR, "cannot start worker: %s: [Errno %d] %s", stage_names[e.stage],
                    e.err, strerror(e.err));
        goto fail;
    }

    w = &s->w[s->nw++];
    memset(w, 0, sizeof(*w));
    w->pid = pid;
    w->ctl = ctl[0];
    w->alive = alive[1];
    w->state = CG_W_STARTING;
    w->standby = standby;
    w->started = w->last_hb = now;
    w->mslot = mslot;
    if (mslot >= 0)
        atomic_store_explicit(&cfg->metrics->slots[mslot].pid, (int32_t)pid, memory_order_relaxed);
    sup_log(s, CG_SUP_DEBUG, "Started %sworker process [%d]", standby ? "standby " : "", (int)pid);
    return w;

fail_errno:
    sup_log(s, CG_SUP_ERROR, "cannot start worker: [Errno %d] %s", errno, strerror(errno));
fail:
    if (mslot >= 0)
        cg_metrics_slot_release(cfg->metrics, mslot);
    free(envp);
    free(le.names);
    close_fd(&ctl[0]);
    close_fd(&ctl[1]);
    close_fd(&alive[0]);
    close_fd(&alive[1]);
    close_fd(&errp[0]);
    close_fd(&errp[1]);
    if (standby) {
        s->standby_ok = 0; /* the next reload starts a worker from scratch */
    } else if (exec_failed && !s->ever_ready) {
        /* Nothing ever started: the command itself is wrong, retrying cannot help. */
        begin_stop(s, 1, now);
    } else if (exec_failed && s->reload_mode) {
        if (!s->waiting)
            sup_log(s, CG_SUP_INFO, "Waiting for file changes before restarting");
        s->waiting = 1;
    } else {
        /* fork or pipe failures (EAGAIN, EMFILE) may pass: retry later. */
        spawn_backoff(s, now);
        sup_log(s, CG_SUP_INFO, "Next attempt to start a worker in %.1f s", s->backoff);
    }
    return NULL;
}

/* ---- state changes ------------------------------------------------------ */

static void begin_stop(cg_sup *s, int status, double now)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    s->status = status;
    s->rolling = 0;
    s->reload_at = 0;
    s->stop_deadline = now + s->shutdown_bound;
    sd_send(s, "STOPPING=1\nSTATUS=Stopping");
    for (size_t i = 0; i < s->nw; i++)
        stop_worker(&s->w[i], s->stop_deadline);
}

static void force_stop(cg_sup *s, double now)
{
    begin_stop(s, s->status, now);
    if (!s->forced && s->nw > 0)
        sup_log(s, CG_SUP_WARNING, "Forcing shutdown: killing %zu worker(s)", s->nw);
    s->forced = 1;
    kill_all(s);
}

/* Reload mode: stop every worker (bounded by reload_timeout) and start new
 * ones now, the standby first; the listening sockets stay open, so nothing is
 * refused between. */
static void restart_all(cg_sup *s, double now)
{
    sd_reloading(s);
    for (size_t i = 0; i < s->nw; i++)
        if (!s->w[i].standby) {
            if (s->w[i].state != CG_W_STOPPING && !s->w[i].retiring) /* counted already */
                count_restart(s, CG_MCAUSE_RELOAD);
            stop_worker(&s->w[i], now + s->reload_bound);
        }
    for (size_t i = 0; i < s->nw; i++) {
        cg_worker *w = &s->w[i];
        if (!w->standby || w->state == CG_W_STOPPING)
            continue;
        /* At most one (wants_standby), so it is always one of the new workers. */
        w->standby = 0;
        w->started = w->last_hb = now;
        if (send(w->alive, "G", 1, MSG_NOSIGNAL) != 1)
            stop_worker(w, now + s->reload_bound); /* already gone: SIGCHLD follows */
        else
            sup_log(s, CG_SUP_DEBUG, "Released standby worker [%d]", (int)w->pid);
    }
    s->standby_ok = 1;
    s->waiting = 0;
    s->backoff = 0;
    s->next_spawn_at = 0;
}

static void abort_roll(cg_sup *s, cg_worker *repl, const char *why, double now)
{
    sup_log(s, CG_SUP_ERROR,
            "Rolling restart aborted: new worker [%d] %s; the old workers keep serving",
            (int)repl->pid, why);
    if (repl->state != CG_W_STOPPING)
        stop_worker(repl, now + s->shutdown_bound);
    repl->roll = 0;
    s->rolling = 0;
    for (size_t i = 0; i < s->nw; i++)
        s->w[i].old = 0;
}

static void clear_changed(cg_sup *s)
{
    for (size_t i = 0; i < s->nchanged; i++)
        free(s->changed[i]);
    s->nchanged = 0;
}

static void do_reload(cg_sup *s, double now)
{
    char msg[900];
    size_t len = 0;

    for (size_t i = 0; i < s->nchanged && i < CG_SUP_LIST_FILES; i++) {
        int k = snprintf(msg + len, sizeof(msg) - len, "%s'%s'", i ? ", " : "", s->changed[i]);
        if (k < 0 || (size_t)k >= sizeof(msg) - len) {
            len = sizeof(msg) - 1;
            break;
        }
        len += (size_t)k;
    }
    msg[len] = '\0';
    if (s->nchanged > CG_SUP_LIST_FILES)
        sup_log(s, CG_SUP_WARNING, "Detected changes in %s and %zu more. Reloading...", msg,
                s->nchanged - CG_SUP_LIST_FILES);
    else
        sup_log(s, CG_SUP_WARNING, "Detected changes in %s. Reloading...", msg);
    clear_changed(s);
    s->reload_at = s->first_change_at = 0;
    restart_all(s, now);
}

/* Adds a path to the pending set (no duplicates). */
static void add_changed(cg_sup *s, const char *path)
{
    for (size_t i = 0; i < s->nchanged; i++)
        if (strcmp(s->changed[i], path) == 0)
            return;
    if (s->nchanged == s->capchanged) {
        size_t cap = s->capchanged ? s->capchanged * 2 : 8;
        char **p = realloc(s->changed, cap * sizeof(*p));
        if (!p)
            return; /* the reload still happens, with a shorter list */
        s->changed = p;
        s->capchanged = cap;
    }
    char *copy = strdup(path);
    if (copy)
        s->changed[s->nchanged++] = copy;
}

/* ---- ctl pipes ---------------------------------------------------------- */

static void on_ctl_byte(cg_sup *s, cg_worker *w, char c, double now)
{
    switch (c) {
    case 'R':
        if (w->state == CG_W_STARTING) {
            w->state = CG_W_READY;
            w->roll = 0;
            s->ever_ready = 1;
            sup_log(s, CG_SUP_DEBUG, "Worker [%d] is ready", (int)w->pid);
        }
        w->last_hb = now;
        break;
    case 'H':
        w->last_hb = now;
        break;
    case 'X':
        if (!w->retiring && w->state != CG_W_STOPPING) {
            w->retiring = 1;
            count_restart(s, CG_MCAUSE_MAX_REQUESTS);
            sup_log(s, CG_SUP_INFO, "Worker [%d] is retiring; starting its replacement",
                    (int)w->pid);
        }
        break;
    default:
        break; /* unknown bytes are ignored, for forward compatibility */
    }
}

/* Reads what the worker wrote; `drain` reads until empty (at reap time). */
static void read_ctl(cg_sup *s, cg_worker *w, int drain, double now)
{
    char buf[CG_SUP_CTL_BATCH];
    ssize_t n;
    /* Bounded even when draining: a grandchild holding the write end could
     * keep it full forever. */
    int reads = drain ? 16 : 1;

    while (w->ctl >= 0 && reads-- > 0) {
        n = read(w->ctl, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            /* The worker closed its end (or it died): no more bytes will come.
             * A live worker without a ctl pipe is caught by the health check. */
            if (w->state != CG_W_STOPPING && !drain)
                sup_log(s, CG_SUP_DEBUG, "Worker [%d] closed its control pipe", (int)w->pid);
            close_fd(&w->ctl);
            break;
        }
        if (n < 0)
            break; /* EAGAIN */
        for (ssize_t i = 0; i < n; i++)
            on_ctl_byte(s, w, buf[i], now);
    }
}

/* ---- reaping ------------------------------------------------------------ */

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}

static void on_worker_exit(cg_sup *s, cg_worker *w, int status, double now)
{
    char how[32];
    int boot_failure;

    read_ctl(s, w, 1, now);
    describe_status(status, how, sizeof(how));
    if (w->state == CG_W_STOPPING) {
        /* Stopped on purpose: not news. */
        sup_log(s, CG_SUP_DEBUG, "Worker [%d] stopped (%s)", (int)w->pid, how);
        remove_worker(s, w);
        return;
    }
    if (w->standby) {
        /* It served nothing; the next reload starts a worker from scratch. */
        sup_log(s, CG_SUP_DEBUG, "Standby worker [%d] exited (%s)", (int)w->pid, how);
        s->standby_ok = 0;
        remove_worker(s, w);
        return;
    }
    boot_failure = w->state == CG_W_STARTING && WIFEXITED(status) && WEXITSTATUS(status) == 3;
    sup_log(s, CG_SUP_WARNING, "Child process [%d] died (%s)", (int)w->pid, how);
    if (s->stopping) {
        remove_worker(s, w);
        return;
    }
    /* A restart counts when this death brings a replacement: not for a
     * retiring worker (counted as max_requests, replaced already), a rolling
     * restart's new worker (the old one stays), reload mode (nothing starts
     * before the next change) or a boot failure (the server stops). */
    if (!w->retiring && !w->roll && !s->reload_mode && !boot_failure)
        count_restart(s, CG_MCAUSE_CRASH);
    if (w->roll) {
        abort_roll(s, w, "died before it was ready", now);
    } else if (s->reload_mode) {
        if (!s->waiting)
            sup_log(s, CG_SUP_INFO, "Waiting for file changes before restarting");
        s->waiting = 1;
    } else if (boot_failure) {
        sup_log(s, CG_SUP_ERROR,
                "Worker [%d] failed to boot (exit status 3): the application cannot be "
                "loaded; stopping",
                (int)w->pid);
        remove_worker(s, w);
        begin_stop(s, 3, now);
        return;
    } else if (now - w->started < CG_SUP_BACKOFF_RESET) {
        /* Several deaths within one backoff window (all workers crashing on
         * the same request) double the delay once, not once each. */
        if (now >= s->next_spawn_at) {
            spawn_backoff(s, now);
            sup_log(s, CG_SUP_INFO, "Workers are dying quickly; next start in %.1f s", s->backoff);
        }
    } else {
        s->backoff = 0;
    }
    remove_worker(s, w);
}

static void reap(cg_sup *s, double now)
{
    int status;
    pid_t pid;

    for (;;) {
        pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            break;
        cg_worker *w = find_worker(s, pid);
        if (w)
            on_worker_exit(s, w, status, now);
    }
}

/* ---- signals ------------------------------------------------------------ */

static void on_signal(cg_sup *s, int sig, double now)
{
    switch (sig) {
    case SIGINT:
    case SIGTERM:
        if (s->stopping) { /* a second signal: kill the workers now */
            force_stop(s, now);
            break;
        }
        sup_log(s, CG_SUP_INFO, "Received %s, stopping %zu worker(s)",
                sig == SIGINT ? "SIGINT" : "SIGTERM", s->nw);
        begin_stop(s, 0, now);
        break;
    case SIGQUIT:
        sup_log(s, CG_SUP_INFO, "Received SIGQUIT, killing %zu worker(s)", s->nw);
        force_stop(s, now);
        break;
    case SIGHUP:
        if (s->stopping)
            break;
        if (s->reload_mode) {
            sup_log(s, CG_SUP_WARNING, "Received SIGHUP. Reloading...");
            clear_changed(s);
            s->reload_at = s->first_change_at = 0;
            restart_all(s, now);
        } else {
            sup_log(s, CG_SUP_INFO, "Received SIGHUP, restarting workers one by one");
            sd_reloading(s);
            /* A roll in progress starts over; its pending replacement stays one. */
            s->rolling = 1;
            for (size_t i = 0; i < s->nw; i++)
                if (s->w[i].state != CG_W_STOPPING && !s->w[i].roll)
                    s->w[i].old = 1;
        }
        break;
    case SIGTTIN:
        if (s->stopping)
            break;
        s->target++;
        sup_log(s, CG_SUP_INFO, "Received SIGTTIN, increasing the number of workers to %d",
                s->target);
        break;
    case SIGTTOU:
        if (s->stopping)
            break;
        if (s->target <= 1) {
            sup_log(s, CG_SUP_INFO, "Received SIGTTOU, but there is only one worker left");
            break;
        }
        s->target--;
        sup_log(s, CG_SUP_INFO, "Received SIGTTOU, decreasing the number of workers to %d",
                s->target);
        break;
    default:
        break;
    }
}

/* Returns 0, or -1 when the signalfd failed (internal error). */
static int read_signals(cg_sup *s, double now)
{
    struct signalfd_siginfo si[CG_SUP_SIGINFO_BATCH];
    ssize_t n;
    int child = 0;

    do
        n = read(s->sfd, si, sizeof(si));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN ? 0 : -1;
    for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
        if (si[i].ssi_signo == SIGCHLD)
            child = 1;
        else
            on_signal(s, (int)si[i].ssi_signo, now);
    }
    if (child)
        reap(s, now);
    return 0;
}

/* ---- watcher ------------------------------------------------------------ */

static void read_watch(cg_sup *s, double now)
{
    cg_strlist got = {NULL, 0};
    int n = cg_watch_process(s->cfg->watch, &got);

    if (n < 0) {
        sup_log(s, CG_SUP_ERROR, "file watcher failed: [Errno %d] %s", errno, strerror(errno));
        s->watch_retry_at = now + CG_SUP_WATCH_RETRY;
    } else if (got.n > 0 && !s->stopping) {
        for (size_t i = 0; i < got.n; i++)
            add_changed(s, got.items[i]);
        /* Each change extends the window, within a bound. */
        if (!s->first_change_at)
            s->first_change_at = now;
        s->reload_at = now + s->cfg->reload_delay;
        double cap = s->first_change_at + CG_SUP_DEBOUNCE_MAX;
        if (s->cfg->reload_delay > CG_SUP_DEBOUNCE_MAX / 2)
            cap = s->first_change_at + 2 * s->cfg->reload_delay;
        if (s->reload_at > cap)
            s->reload_at = cap;
    }
    cg_strlist_clear(&got);
}

/* ---- timers and the keep-N rules ----------------------------------------- */

/* Reload mode: start a standby when there is none and every active worker is
 * ready (or the app is broken and we wait for a change). */
static int wants_standby(const cg_sup *s)
{
    if (!s->cfg->standby || !s->reload_mode || !s->standby_ok || s->stopping)
        return 0;
    for (size_t i = 0; i < s->nw; i++) {
        const cg_worker *w = &s->w[i];
        if (w->standby || (is_active(w) && w->state == CG_W_STARTING))
            return 0;
    }
    return s->waiting || count_active(s, 1) >= s->target;
}

/* When a starting worker must have sent 'R' (a rolling replacement has its
 * own bound, a standby waits unreleased), or 0. */
static double startup_deadline(const cg_sup *s, const cg_worker *w)
{
    if (w->state != CG_W_STARTING || w->standby || w->roll || s->stopping ||
        s->cfg->startup_timeout <= 0)
        return 0;
    return w->started + s->cfg->startup_timeout;
}

static int startup_overdue(const cg_sup *s, const cg_worker *w, double now)
{
    double t = startup_deadline(s, w);
    return t > 0 && now >= t;
}

/* READY=1 once the target number of workers serve, and again after a
 * reload or a rolling restart (which sent RELOADING=1). */
static void sd_check_ready(cg_sup *s)
{
    char msg[512];

    if (s->sd_ready || !s->cfg->notify || s->stopping || s->rolling ||
        count_active(s, 1) < s->target)
        return;
    s->sd_ready = 1;
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s%s(%d worker%s)",
             s->cfg->ready_status ? s->cfg->ready_status : "", s->cfg->ready_status ? " " : "",
             s->target, s->target == 1 ? "" : "s");
    sd_send(s, msg);
}

/* WATCHDOG=1 when due, unless a ready worker's loop has not beaten lately:
 * systemd then sees the pings stop, as it would for a stuck service. */
static void sd_watchdog(cg_sup *s, double now)
{
    const cg_sup_config *cfg = s->cfg;
    const cg_worker *stale = NULL;
    double limit;

    if (cfg->watchdog <= 0 || now < s->wd_next)
        return;
    s->wd_next = now + cfg->watchdog / 2;
    limit = cg_sd_watchdog_stale_after(cfg->watchdog, CG_SUP_HEARTBEAT);
    for (size_t i = 0; i < s->nw && !stale; i++)
        if (s->w[i].state == CG_W_READY && now - s->w[i].last_hb > limit)
            stale = &s->w[i];
    if (stale) {
        if (s->wd_stale != stale->pid)
            sup_log(s, CG_SUP_WARNING,
                    "Worker [%d] sent no heartbeat for %.1f s: not pinging the systemd watchdog",
                    (int)stale->pid, now - stale->last_hb);
        s->wd_stale = stale->pid;
        return;
    }
    if (s->wd_stale)
        sup_log(s, CG_SUP_INFO, "Every worker's heartbeat is fresh: pinging the systemd watchdog");
    s->wd_stale = 0;
    sd_send(s, "WATCHDOG=1");
}

static void run_due(cg_sup *s, double now)
{
    const cg_sup_config *cfg = s->cfg;

    sd_watchdog(s, now);

    for (size_t i = 0; i < s->nw; i++) {
        cg_worker *w = &s->w[i];
        if (w->state == CG_W_STOPPING && !w->killed && now >= w->kill_at) {
            if (!w->stuck)
                sup_log(s, CG_SUP_WARNING, "Worker [%d] did not stop in time; killing it",
                        (int)w->pid);
            kill_worker(w);
        } else if (w->state == CG_W_READY && cfg->healthcheck_timeout > 0 &&
                   now - w->last_hb >= cfg->healthcheck_timeout && !s->stopping) {
            sup_log(s, CG_SUP_ERROR,
                    "Worker [%d] is not responding (no heartbeat for %g s); dumping its stack "
                    "and killing it",
                    (int)w->pid, cfg->healthcheck_timeout);
            w->stuck = 1;
            count_restart(s, CG_MCAUSE_HEALTHCHECK);
            w->state = CG_W_STOPPING;
            w->kill_at = now + CG_SUP_STACK_GRACE;
            (void)kill(w->pid, SIGUSR1);
        } else if (startup_overdue(s, w, now)) {
            sup_log(s, CG_SUP_ERROR,
                    "Worker [%d] was not ready within %g s (--timeout-worker-startup); "
                    "stopping it and starting another",
                    (int)w->pid, cfg->startup_timeout);
            count_restart(s, CG_MCAUSE_STARTUP);
            stop_worker(w, now + CG_SUP_STARTUP_GRACE);
        }
    }
    if (s->stopping)
        return;

    if (s->reload_at && now >= s->reload_at)
        do_reload(s, now);

    /* Retiring workers stop once enough others are ready. */
    if (count_active(s, 1) >= s->target)
        for (size_t i = 0; i < s->nw; i++)
            if (s->w[i].retiring && s->w[i].state != CG_W_STOPPING)
                stop_worker(&s->w[i], now + s->shutdown_bound);

    /* Surplus: old workers first, then the newest. */
    for (int surplus = count_active(s, 0) - s->target; surplus > 0; surplus--) {
        cg_worker *victim = NULL;
        for (size_t i = 0; i < s->nw; i++) {
            cg_worker *w = &s->w[i];
            if (!is_active(w))
                continue;
            if (w->old) {
                victim = w;
                break;
            }
            if (!victim || w->state == CG_W_STARTING || victim->state != CG_W_STARTING)
                victim = w; /* later in the array = newer; a starting one wins */
        }
        if (!victim)
            break;
        if (victim->old)
            count_restart(s, CG_MCAUSE_RELOAD); /* SIGHUP: replaced one by one */
        stop_worker(victim, now + s->shutdown_bound);
    }

    /* After the surplus rule: an old worker it just stopped is not replaced twice. */
    if (s->rolling) {
        cg_worker *r = starting_roll_worker(s);
        if (r && now >= r->ready_by) {
            abort_roll(s, r, "was not ready in time", now);
        } else if (!r) {
            int old = 0;
            for (size_t i = 0; i < s->nw; i++)
                if (s->w[i].old && s->w[i].state != CG_W_STOPPING)
                    old++;
            if (!old) {
                s->rolling = 0;
                sup_log(s, CG_SUP_INFO, "Rolling restart done");
            } else if (now >= s->next_spawn_at) {
                r = spawn_worker(s, now, 0);
                if (r) {
                    r->roll = 1;
                    r->ready_by = now + s->roll_bound;
                }
                if (s->stopping)
                    return;
            }
        }
    }

    if (!(s->reload_mode && s->waiting))
        while (count_active(s, 0) < s->target && now >= s->next_spawn_at && !s->stopping)
            if (!spawn_worker(s, now, 0))
                break;
    if (wants_standby(s))
        (void)spawn_worker(s, now, 1);
    sd_check_ready(s);
}

static void min_deadline(double *best, double t)
{
    if (t > 0 && (*best < 0 || t < *best))
        *best = t;
}

/* Milliseconds until the nearest deadline, -1 for none. */
static int poll_timeout(cg_sup *s, double now)
{
    const cg_sup_config *cfg = s->cfg;
    double t = -1;

    for (size_t i = 0; i < s->nw; i++) {
        const cg_worker *w = &s->w[i];
        if (w->state == CG_W_STOPPING && !w->killed)
            min_deadline(&t, w->kill_at);
        if (w->state == CG_W_READY && cfg->healthcheck_timeout > 0 && !s->stopping)
            min_deadline(&t, w->last_hb + cfg->healthcheck_timeout);
        if (w->roll && w->state == CG_W_STARTING)
            min_deadline(&t, w->ready_by);
        min_deadline(&t, startup_deadline(s, w));
    }
    if (cfg->watchdog > 0)
        min_deadline(&t, s->wd_next > now ? s->wd_next : now);
    if (!s->stopping) {
        min_deadline(&t, s->reload_at);
        int spawning = !(s->reload_mode && s->waiting) &&
                       (count_active(s, 0) < s->target || (s->rolling && !starting_roll_worker(s)));
        if (spawning)
            min_deadline(&t, s->next_spawn_at > now ? s->next_spawn_at : now);
    }
    if (cfg->watch && s->watch_retry_at > now) {
        min_deadline(&t, s->watch_retry_at);
    } else if (cfg->watch && cg_watch_fd(cfg->watch) < 0) {
        int ms = cg_watch_timeout_ms(cfg->watch);
        if (ms >= 0)
            min_deadline(&t, now + ms / 1000.0);
    }
    if (t < 0)
        return -1;
    if (t <= now)
        return 0;
    double ms = (t - now) * 1000.0 + 1.0; /* round up: never wake just before */
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- the loop ----------------------------------------------------------- */

static double bound(double v, double dflt)
{
    return v >= 0 ? v : dflt;
}

int cg_supervisor_run(const cg_sup_config *cfg)
{
    cg_sup s;
    sigset_t set, oldmask;
    struct sigaction dfl, oldchld;
    struct pollfd *pfd = NULL;
    size_t cappfd = 0;
    int masked = 0, chld_set = 0, rc = 1;

    memset(&s, 0, sizeof(s));
    s.cfg = cfg;
    s.sfd = -1;
    s.target = cfg->workers >= 1 ? cfg->workers : 1;
    s.reload_mode = cfg->watch != NULL;
    s.standby_ok = 1;
    s.reload_bound = bound(cfg->reload_timeout, 5.0);
    s.shutdown_bound = bound(cfg->shutdown_timeout, 30.0);
    s.roll_bound =
        s.shutdown_bound > cfg->healthcheck_timeout ? s.shutdown_bound : cfg->healthcheck_timeout;

    if (!cfg->argv || !cfg->argv[0]) {
        sup_log(&s, CG_SUP_ERROR, "supervisor: no worker command");
        return 1;
    }

    /* SIGCHLD must not be ignored, or children are reaped behind our back. */
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    if (sigaction(SIGCHLD, &dfl, &oldchld) == 0)
        chld_set = 1;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTTIN);
    sigaddset(&set, SIGTTOU);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, &oldmask) < 0)
        goto fail_errno;
    masked = 1;
    s.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sfd < 0)
        goto fail_errno;

    if (s.reload_mode)
        sup_log(&s, CG_SUP_INFO, "Started reloader process [%d] using %s", (int)getpid(),
                cg_watch_backend(cfg->watch));
    else
        sup_log(&s, CG_SUP_INFO, "Started parent process [%d]", (int)getpid());

    for (;;) {
        double now = cg_monotonic_now();
        run_due(&s, now);
        if (s.stopping && s.nw == 0)
            break;

        /* pfd[0] signals, pfd[1] watcher, then one per worker with a ctl pipe. */
        size_t need = s.nw + 2, np = 0;
        if (need > cappfd) {
            struct pollfd *p = realloc(pfd, need * 2 * sizeof(*p));
            if (!p) {
                errno = ENOMEM;
                goto fail_loop;
            }
            pfd = p;
            cappfd = need * 2;
        }
        pfd[np++] = (struct pollfd){.fd = s.sfd, .events = POLLIN};
        int wfd =
            cfg->watch && !s.stopping && s.watch_retry_at <= now ? cg_watch_fd(cfg->watch) : -1;
        pfd[np++] = (struct pollfd){.fd = wfd, .events = POLLIN};
        for (size_t i = 0; i < s.nw; i++)
            pfd[np++] = (struct pollfd){.fd = s.w[i].ctl, .events = POLLIN};

        int timeout = poll_timeout(&s, now);
        int n = poll(pfd, np, timeout);
        if (n < 0 && errno != EINTR)
            goto fail_loop;
        now = cg_monotonic_now();
        if (n <= 0)
            goto timers_only;

        /* ctl bytes first: the array cannot change before reaping. */
        for (size_t i = 0; i < s.nw; i++)
            if (pfd[i + 2].revents && s.w[i].ctl >= 0 && s.w[i].ctl == pfd[i + 2].fd)
                read_ctl(&s, &s.w[i], 0, now);
        if (pfd[0].revents && read_signals(&s, now) < 0)
            goto fail_loop;
        if (wfd >= 0 && pfd[1].revents)
            read_watch(&s, now);
    timers_only:
        /* Polling mode: cg_watch_process scans only when a scan is due. */
        if (cfg->watch && wfd < 0 && !s.stopping && s.watch_retry_at <= now &&
            cg_watch_fd(cfg->watch) < 0 && cg_watch_timeout_ms(cfg->watch) == 0)
            read_watch(&s, now);
    }

    rc = s.status;
    sup_log(&s, CG_SUP_INFO, "Stopping %s process [%d]", s.reload_mode ? "reloader" : "parent",
            (int)getpid());
    goto out;

fail_errno:
    sup_log(&s, CG_SUP_ERROR, "supervisor: [Errno %d] %s", errno, strerror(errno));
    goto out;

fail_loop:
    /* No way to wait for events any more: kill and reap synchronously. */
    sup_log(&s, CG_SUP_ERROR, "supervisor: [Errno %d] %s; killing all workers", errno,
            strerror(errno));
    kill_all(&s);
    while (s.nw > 0) {
        int status;
        pid_t pid = s.w[0].pid;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        remove_worker(&s, &s.w[0]);
    }
    rc = 1;

out:
    /* Signals already queued for us are consumed here, not delivered to the
     * caller's handlers once the mask is restored. */
    if (s.sfd >= 0) {
        struct signalfd_siginfo si[CG_SUP_SIGINFO_BATCH];
        for (int i = 0; i < 4 && read(s.sfd, si, sizeof(si)) > 0; i++)
            ;
    }
    close_fd(&s.sfd);
    while (s.nw > 0)
        remove_worker(&s, &s.w[0]);
    free(s.w);
    clear_changed(&s);
    free(s.changed);
    free(pfd);
    if (masked)
        sigprocmask(SIG_SETMASK, &oldmask, NULL);
    if (chld_set)
        sigaction(SIGCHLD, &oldchld, NULL);
    return rc;
}
