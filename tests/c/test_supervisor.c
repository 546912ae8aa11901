/* Tests of the process supervisor with real processes and real signals.
 *
 * Each case forks a child that runs cg_supervisor_run() (so the test can
 * signal it and look at it through /proc) with tests/c/fake_worker as the
 * worker command. The fake workers append their events to a log file
 * ("<pid> <ms> <event>"), the supervisor's log lines go to another; the test
 * reads both. The test process is a child subreaper, so a worker orphaned by
 * its supervisor would become the test's child and be noticed.
 *
 * Usage: test_supervisor PATH_TO_FAKE_WORKER
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervisor.h"
#include "tap.h"
#include "watch.h"

#define LISTEN_FD 3 /* the worker's listening fd, deliberately the lowest free number */
#define MAX_EV 4096

static const char *fake_worker;
static int inherited_fds; /* fds the test itself got without close-on-exec */
static char dir[64];
static int case_no;

typedef struct sup_run {
    pid_t pid;
    char wlog[128]; /* worker events */
    char slog[128]; /* supervisor log lines */
    char modefile[128];
    char app[128]; /* reload mode: the watched directory, "<case dir>/app" */
} sup_run;

typedef struct sup_opts {
    const char *mode;  /* fake_worker MODE, or NULL for "@modefile" */
    const char *first; /* with mode NULL: the mode file's first content (default "serve") */
    const char *arg;
    const char *argv0; /* override the executable */
    int workers;
    double reload_timeout, shutdown_timeout, healthcheck_timeout, startup_timeout;
    int reload;     /* 1: watch "app" with inotify, 2: with polling */
    int fd_starved; /* the supervisor may open one more fd (its signalfd), no pipes */
    int standby;    /* reload mode: keep a standby worker */
} sup_opts;

typedef struct ev {
    int pid;
    long ms;
    char what[64];
} ev;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void write_file(const char *path, const char *text)
{
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

/* ---- the supervisor child ----------------------------------------------- */

static int slog_fd = -1;

static void log_to_file(void *ctx, int level, const char *msg)
{
    char line[1200];
    (void)ctx;
    int n = snprintf(line, sizeof(line), "%d %s\n", level, msg);
    if (n > (int)sizeof(line) - 1)
        n = (int)sizeof(line) - 1;
    if (write(slog_fd, line, (size_t)n) < 0)
        _exit(98);
}

static sup_run start_sup(const sup_opts *o)
{
    sup_run r;
    case_no++;
    snprintf(r.wlog, sizeof(r.wlog), "%s/w%d.log", dir, case_no);
    snprintf(r.slog, sizeof(r.slog), "%s/s%d.log", dir, case_no);
    snprintf(r.modefile, sizeof(r.modefile), "%s/mode%d", dir, case_no);
    if (!o->mode)
        write_file(r.modefile, o->first ? o->first : "serve");
    char casedir[96];
    snprintf(casedir, sizeof(casedir), "%s/c%d", dir, case_no);
    snprintf(r.app, sizeof(r.app), "%s/app", casedir);
    if (o->reload) {
        char path[160];
        mkdir(casedir, 0755);
        mkdir(r.app, 0755);
        snprintf(path, sizeof(path), "%s/main.py", r.app);
        write_file(path, "app = None\n");
        snprintf(path, sizeof(path), "%s/other.py", r.app);
        write_file(path, "x = 1\n");
    }
    fflush(stdout);
    fflush(stderr);
    r.pid = fork();
    if (r.pid < 0)
        abort();
    if (r.pid > 0)
        return r;

    /* If the test dies, so does its supervisor (and through it the workers). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The supervisor: its listening socket sits at LISTEN_FD, close-on-exec
     * as the binding creates it. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        _exit(97);
    if (sv[0] != LISTEN_FD) {
        if (dup3(sv[0], LISTEN_FD, O_CLOEXEC) < 0)
            _exit(97);
        close(sv[0]);
    }
    slog_fd = open(r.slog, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    char modearg[160];
    snprintf(modearg, sizeof(modearg), "@%s", r.modefile);
    char *argv[] = {(char *)(o->argv0 ? o->argv0 : fake_worker), r.wlog,
                    (char *)(o->mode ? o->mode : modearg), (char *)(o->arg ? o->arg : "0"), NULL};
    char lfd[32];
    snprintf(lfd, sizeof(lfd), "FAKE_LISTEN_FD=%d", LISTEN_FD);
    /* LeakSanitizer's exit-time tracer is a process of its own: it would
     * outlive a worker SIGTERMed during its exit and show up as an orphan. */
    char *envp[] = {lfd, "CASGI_WORKER=stale", "PATH=/usr/bin:/bin", "ASAN_OPTIONS=detect_leaks=0",
                    NULL};
    /* Like a Python caller: SIGPIPE ignored, SIGHUP handled elsewhere. The
     * workers must start with default dispositions anyway. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    int fds[1] = {LISTEN_FD};
    cg_sup_config cfg = {
        .argv = argv,
        .envp = envp,
        .listen_fds = fds,
        .nlisten = 1,
        .workers = o->workers ? o->workers : 1,
        .watch = NULL,
        .standby = o->standby,
        /* Polling: a burst can straddle a scan (every 0.1 s), so the window
         * must be longer than that for the burst to stay one reload. */
        .reload_delay = o->reload == 2 ? 0.3 : 0.05,
        .reload_timeout = o->reload_timeout ? o->reload_timeout : 1.0,
        .shutdown_timeout = o->shutdown_timeout ? o->shutdown_timeout : 1.0,
        .healthcheck_timeout = o->healthcheck_timeout,
        .startup_timeout = o->startup_timeout,
        .log = log_to_file,
        .log_ctx = NULL,
    };
    if (o->fd_starved) {
        int lowest = dup(0);
        close(lowest);
        struct rlimit rl = {(rlim_t)lowest + 1, (rlim_t)lowest + 1};
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    cg_watch *watch = NULL;
    if (o->reload) {
        /* Paths are reported relative to the current directory: "app/main.py". */
        static const char *const dirs[] = {"app"}, *const include[] = {"*.py"};
        cg_watch_opts wo = {.dirs = dirs,
                            .ndirs = 1,
                            .include = include,
                            .ninclude = 1,
                            .poll = o->reload == 2,
                            .poll_interval = 0.1};
        char err[256] = "";
        if (chdir(casedir) < 0 || !(watch = cg_watch_new(&wo, err, sizeof(err)))) {
            fprintf(stderr, "cannot watch: %s\n", err);
            exit(96);
        }
        cfg.watch = watch;
    }
    int rc = cg_supervisor_run(&cfg);
    if (watch)
        cg_watch_free(watch);
    close(slog_fd);
    close(LISTEN_FD);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' && atoi(de->d_name) > 2 && atoi(de->d_name) != dirfd(d) &&
            !(fcntl(atoi(de->d_name), F_GETFD) & FD_CLOEXEC))
            inherited_fds++;
    if (d)
        closedir(d);
    close(sv[1]);
    /* exit(), not _exit(): LeakSanitizer checks the supervisor here. */
    exit(rc);
}

/* Waits for the supervisor; returns its exit status, or -1 (and kills it)
 * after timeout_ms. */
static int wait_sup(sup_run *r, long timeout_ms, long *took_ms)
{
    long t0 = now_ms();
    int status;
    for (;;) {
        pid_t p = waitpid(r->pid, &status, WNOHANG);
        if (p == r->pid)
            break;
        if (now_ms() - t0 > timeout_ms) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &status, 0);
            return -1;
        }
        sleep_ms(5);
    }
    if (took_ms)
        *took_ms = now_ms() - t0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- reading the logs ----------------------------------------------------- */

static int read_events(const char *path, ev *out, int max)
{
    FILE *f = fopen(path, "r");
    int n = 0;
    char line[256];
    if (!f)
        return 0;
    while (n < max && fgets(line, sizeof(line), f)) {
        ev *e = &out[n];
        if (sscanf(line, "%d %ld %63[^\n]", &e->pid, &e->ms, e->what) == 3)
            n++;
    }
    fclose(f);
    return n;
}

static ev evs[MAX_EV];

/* Pids with event `what` (prefix match), in log order, without duplicates. */
static int pids_with(const sup_run *r, const char *what, int *pids, int max)
{
    int n = read_events(r->wlog, evs, MAX_EV), k = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(evs[i].what, what, strlen(what)) != 0)
            continue;
        int dup = 0;
        for (int j = 0; j < k; j++)
            dup |= pids[j] == evs[i].pid;
        if (!dup && k < max)
            pids[k++] = evs[i].pid;
    }
    return k;
}

static int count_with(const sup_run *r, const char *what)
{
    int pids[256];
    return pids_with(r, what, pids, 256);
}

static int has_event(const sup_run *r, int pid, const char *what)
{
    int n = read_events(r->wlog, evs, MAX_EV);
    for (int i = 0; i < n; i++)
        if (evs[i].pid == pid && strncmp(evs[i].what, what, strlen(what)) == 0)
            return 1;
    return 0;
}

static int slog_has(const sup_run *r, const char *text)
{
    static char buf[1 << 16];
    int fd = open(r->slog, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/* How many times `text` occurs in the supervisor's log. */
static int slog_count(const sup_run *r, const char *text)
{
    static char buf[1 << 16];
    int fd = open(r->slog, O_RDONLY | O_CLOEXEC), n = 0;
    if (fd < 0)
        return 0;
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len < 0)
        return 0;
    buf[len] = '\0';
    for (char *p = buf; (p = strstr(p, text)); p += strlen(text))
        n++;
    return n;
}

static void dump_slog(const sup_run *r)
{
    char line[1300];
    FILE *f = fopen(r->slog, "r");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        printf("#   sup: %s", line);
    fclose(f);
}

#define WAIT_FOR(cond, ms)                                                                         \
    ({                                                                                             \
        long t0_ = now_ms();                                                                       \
        int ok_;                                                                                   \
        while (!(ok_ = (cond)) && now_ms() - t0_ < (ms))                                           \
            sleep_ms(10);                                                                          \
        ok_;                                                                                       \
    })

/* 1 when the process is gone (reaped by its parent); a zombie still counts
 * as present. Orphans reparented to this subreaper are reaped here. */
static int gone(int pid)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    return kill(pid, 0) < 0 && errno == ESRCH;
}

static int all_gone(const int *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (!gone(pids[i]))
            return 0;
    return 1;
}

/* The supervisor's children, from /proc (no zombies among them). */
static int sup_children(const sup_run *r, int *pids, int max, int *zombies)
{
    char path[96], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)r->pid, (int)r->pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC), n = 0;
    *zombies = 0;
    if (fd < 0)
        return -1;
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (len < 0)
        return -1;
    buf[len] = '\0';
    for (char *p = buf; *p && n < max;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        pids[n++] = (int)v;
        char sp[64], st[512];
        snprintf(sp, sizeof(sp), "/proc/%ld/stat", v);
        int sfd = open(sp, O_RDONLY | O_CLOEXEC);
        if (sfd >= 0) {
            ssize_t k = read(sfd, st, sizeof(st) - 1);
            close(sfd);
            if (k > 0) {
                st[k] = '\0';
                char *rp = strrchr(st, ')');
                if (rp && rp[1] == ' ' && rp[2] == 'Z')
                    (*zombies)++;
            }
        }
        p = end;
    }
    return n;
}

/* No process of ours is left: the test has no children but the ones it knows. */
static int no_orphans(void)
{
    int n = 0, status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
        printf("# orphan %d status %d\n", (int)p, status);
        n++;
    }
    return n == 0;
}

/* Stops the supervisor with SIGTERM if a case left it running. */
static void finish(sup_run *r)
{
    if (kill(r->pid, 0) == 0) {
        kill(r->pid, SIGTERM);
        if (wait_sup(r, 5000, NULL) < 0)
            printf("# supervisor had to be killed\n");
    }
}

/* ---- cases ------------------------------------------------------------- */

static void test_start_and_sigterm(void)
{
    sup_opts o = {.mode = "serve", .workers = 3};
    sup_run r = start_sup(&o);
    int pids[8];

    ok(WAIT_FOR(count_with(&r, "ready") == 3, 3000), "three workers start and send 'R'");
    ok(slog_has(&r, "Started parent process ["), "logs Started parent process [PID]");
    int n = pids_with(&r, "ready", pids, 8);
    ok(count_with(&r, "env ") == 3 && count_with(&r, "env-bad") == 0,
       "CASGI_WORKER is ctl:alive, both open, the stale value replaced");
    ok(count_with(&r, "mask-ok") == 3, "signal mask and dispositions are reset in workers");
    ok(count_with(&r, "pdeath-ok") == 3, "workers have PR_SET_PDEATHSIG = SIGKILL");
    ok(count_with(&r, "listen-ok") == 3, "the listening fd is inherited at the same number");
    char fds[32];
    snprintf(fds, sizeof(fds), "fds %d", inherited_fds);
    ok(count_with(&r, fds) == 3, "no other fd leaks into a worker (%d inherited by the test)",
       inherited_fds);
    int kids[16], z;
    ok(sup_children(&r, kids, 16, &z) == 3 && z == 0, "the supervisor has exactly three children");
    usleep(300000);
    ok(count_with(&r, "start") == 3, "no worker is restarted while healthy");

    kill(r.pid, SIGTERM);
    long took = 0;
    int rc = wait_sup(&r, 5000, &took);
    ok(rc == 0, "SIGTERM: the supervisor returns 0 (got %d)", rc);
    ok(count_with(&r, "term") == 3, "every worker got SIGTERM");
    ok(took < 900, "graceful stop does not wait for the bound when workers exit (%ld ms)", took);
    ok(all_gone(pids, n), "no worker is left");
    ok(no_orphans(), "no orphan reached the subreaper");
    ok(slog_has(&r, "Stopping parent process ["), "logs Stopping parent process [PID]");
}

static void test_sigkill_supervisor(const char *mode, const char *what)
{
    sup_opts o = {.mode = mode, .workers = 2};
    sup_run r = start_sup(&o);
    int pids[8];

    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "%s: two workers ready", mode);
    int n = pids_with(&r, "ready", pids, 8);
    kill(r.pid, SIGKILL);
    waitpid(r.pid, NULL, 0);
    ok(WAIT_FOR(all_gone(pids, n), 2000), "SIGKILL of the supervisor: workers gone within 2 s (%s)",
       what);
}

static void test_crash_replaced(void)
{
    sup_opts o = {.mode = "serve", .workers = 2};
    sup_run r = start_sup(&o);
    int pids[8];

    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "two workers ready");
    pids_with(&r, "ready", pids, 8);
    kill(pids[0], SIGKILL);
    char msg[64];
    snprintf(msg, sizeof(msg), "Child process [%d] died (signal 9)", pids[0]);
    ok(WAIT_FOR(slog_has(&r, msg), 2000), "logs '%s'", msg);
    ok(WAIT_FOR(count_with(&r, "ready") == 3, 2000), "the dead worker is replaced");
    ok(gone(pids[0]), "the dead worker was reaped (no zombie)");
    int kids[16], z;
    ok(sup_children(&r, kids, 16, &z) == 2 && z == 0, "two children, no zombie");

    /* A crash in the middle of the worker's life: exit status. */
    pids_with(&r, "ready", pids, 8);
    kill(pids[1], SIGSTOP); /* not a death: nothing happens */
    usleep(100000);
    ok(count_with(&r, "start") == 3, "a stopped worker is not a dead one");
    kill(pids[1], SIGCONT);
    finish(&r);
    ok(no_orphans(), "no orphan");
}

static void test_crash_loop_backoff(void)
{
    sup_opts o = {.mode = "crash", .arg = "20", .workers = 1};
    sup_run r = start_sup(&o);
    usleep(2700000);
    int n = read_events(r.wlog, evs, MAX_EV);
    long starts[64];
    int k = 0;
    for (int i = 0; i < n && k < 64; i++)
        if (!strncmp(evs[i].what, "start", 5))
            starts[k++] = evs[i].ms;
    ok(k >= 4 && k <= 8, "crash loop: %d starts in 2.7 s (backoff, no tight loop)", k);
    int grows = k >= 4;
    for (int i = 2; i < k; i++) {
        long a = starts[i - 1] - starts[i - 2], b = starts[i] - starts[i - 1];
        printf("#   gap %ld ms -> %ld ms\n", a, b);
        if (b < a + 50)
            grows = 0;
    }
    ok(grows, "the spacing between starts grows");
    ok(slog_has(&r, "Workers are dying quickly; next start in"), "the backoff is logged");
    ok(slog_has(&r, "died (exit status 1)"), "logs the exit status");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

static void test_boot_failure(void)
{
    sup_opts o = {.mode = "boot3", .workers = 2};
    sup_run r = start_sup(&o);
    long took = 0;
    int rc = wait_sup(&r, 5000, &took);
    ok(rc == 3, "exit 3 before 'R': the supervisor returns 3 (got %d)", rc);
    ok(slog_has(&r, "failed to boot (exit status 3)"), "the boot failure is logged");
    ok(no_orphans(), "no orphan");
}

static void test_ignore_sigterm(void)
{
    sup_opts o = {.mode = "ignore-term", .workers = 1, .shutdown_timeout = 0.5};
    sup_run r = start_sup(&o);
    int pids[4];
    ok(WAIT_FOR(count_with(&r, "ready") == 1, 3000), "worker ready");
    pids_with(&r, "ready", pids, 4);
    kill(r.pid, SIGTERM);
    long took = 0;
    int rc = wait_sup(&r, 5000, &took);
    ok(rc == 0, "returns 0 (got %d)", rc);
    ok(has_event(&r, pids[0], "term-ignored"), "the worker got SIGTERM first");
    ok(took >= 450 && took < 2000, "SIGKILL after the shutdown bound (%ld ms)", took);
    ok(slog_has(&r, "did not stop in time; killing it"), "the SIGKILL is logged");
    ok(gone(pids[0]) && no_orphans(), "the worker is gone");
}

static void test_ttin_ttou(void)
{
    sup_opts o = {.mode = "serve", .workers = 2};
    sup_run r = start_sup(&o);
    int kids[16], z;
    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "two workers");
    kill(r.pid, SIGTTIN);
    ok(WAIT_FOR(count_with(&r, "ready") == 3, 2000), "SIGTTIN: a third worker starts");
    ok(slog_has(&r, "increasing the number of workers to 3"), "SIGTTIN is logged");
    kill(r.pid, SIGTTOU);
    ok(WAIT_FOR(count_with(&r, "term") == 1, 2000), "SIGTTOU: one worker is stopped");
    ok(WAIT_FOR(sup_children(&r, kids, 16, &z) == 2, 2000), "two children left");
    kill(r.pid, SIGTTOU);
    ok(WAIT_FOR(count_with(&r, "term") == 2, 2000), "SIGTTOU again: one left");
    kill(r.pid, SIGTTOU);
    ok(WAIT_FOR(slog_has(&r, "there is only one worker left"), 2000), "never below one");
    usleep(200000);
    ok(count_with(&r, "term") == 2 && sup_children(&r, kids, 16, &z) == 1 && z == 0,
       "still one worker");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

/* The number of workers that are ready and not yet told to stop, at its
 * lowest after the first `n` became ready. */
static int min_serving(const sup_run *r, int n_first)
{
    int n = read_events(r->wlog, evs, MAX_EV), serving = 0, seen = 0, min = 1 << 30;
    for (int i = 0; i < n; i++) {
        if (!strcmp(evs[i].what, "ready")) {
            serving++;
            seen++;
        } else if (!strcmp(evs[i].what, "term") || !strcmp(evs[i].what, "crash")) {
            serving--;
        }
        if (seen >= n_first && serving < min)
            min = serving;
    }
    return min;
}

static void test_rolling_restart(void)
{
    sup_opts o = {.mode = "serve-slow", .arg = "150", .workers = 3};
    sup_run r = start_sup(&o);
    int old[8], all[16];
    ok(WAIT_FOR(count_with(&r, "ready") == 3, 3000), "three workers");
    pids_with(&r, "ready", old, 8);
    kill(r.pid, SIGHUP);
    ok(WAIT_FOR(count_with(&r, "ready") == 6 && count_with(&r, "term") == 3, 5000),
       "SIGHUP: three new workers, three old ones stopped");
    ok(WAIT_FOR(all_gone(old, 3), 2000), "the old ones are gone");
    int n = pids_with(&r, "ready", all, 16);
    int fresh = n == 6;
    for (int i = 3; i < n; i++)
        for (int j = 0; j < 3; j++)
            fresh &= all[i] != old[j];
    ok(fresh, "the new workers have new pids");
    ok(min_serving(&r, 3) >= 3, "never fewer than three ready workers during the roll (min %d)",
       min_serving(&r, 3));
    ok(slog_has(&r, "restarting workers one by one") && slog_has(&r, "Rolling restart done"),
       "the roll is logged");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

static void test_rolling_abort(const char *mode, const char *why)
{
    sup_opts o = {.mode = NULL, .workers = 2, .shutdown_timeout = 0.6};
    sup_run r = start_sup(&o);
    int old[8];
    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "two workers");
    pids_with(&r, "ready", old, 8);
    write_file(r.modefile, mode);
    kill(r.pid, SIGHUP);
    ok(WAIT_FOR(slog_has(&r, why), 3000), "an unready replacement (%s) aborts the roll", mode);
    usleep(300000);
    ok(!has_event(&r, old[0], "term") && !has_event(&r, old[1], "term") && kill(old[0], 0) == 0 &&
           kill(old[1], 0) == 0,
       "the old workers keep serving");
    ok(count_with(&r, "start") == 3, "no further replacement is started");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

static void test_stuck_worker(void)
{
    sup_opts o = {.mode = NULL, .first = "stuck 300\n", .workers = 1, .healthcheck_timeout = 0.5};
    sup_run r = start_sup(&o);
    int pids[8];
    ok(WAIT_FOR(count_with(&r, "ready") == 1, 3000), "worker ready");
    pids_with(&r, "ready", pids, 8);
    write_file(r.modefile, "serve\n");
    char msg[128];
    snprintf(msg, sizeof(msg),
             "Worker [%d] is not responding (no heartbeat for 0.5 s); dumping its stack and "
             "killing it",
             pids[0]);
    ok(WAIT_FOR(slog_has(&r, msg), 3000), "logs '%s'", msg);
    ok(WAIT_FOR(has_event(&r, pids[0], "usr1"), 1000), "the stuck worker gets SIGUSR1");
    ok(WAIT_FOR(gone(pids[0]), 2000), "then it is killed");
    ok(WAIT_FOR(count_with(&r, "ready") == 2, 2000), "and replaced");
    ok(!has_event(&r, pids[0], "term"), "no SIGTERM: the stack dump is all it gets");
    usleep(700000);
    ok(count_with(&r, "start") == 2, "the healthy replacement stays");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

/* A worker that never sends 'R' (hung in its startup: here it heartbeats,
 * then is SIGSTOPped, so only SIGKILL ends it) is replaced. */
static void test_startup_timeout(void)
{
    sup_opts o = {.mode = NULL, .first = "never-ready\n", .workers = 1, .startup_timeout = 0.5};
    sup_run r = start_sup(&o);
    int pids[8];
    ok(WAIT_FOR(pids_with(&r, "start", pids, 8) == 1, 3000), "the first worker starts");
    write_file(r.modefile, "serve\n");
    kill(pids[0], SIGSTOP);
    char msg[160];
    snprintf(msg, sizeof(msg),
             "Worker [%d] was not ready within 0.5 s (--timeout-worker-startup); stopping it "
             "and starting another",
             pids[0]);
    ok(WAIT_FOR(slog_has(&r, msg), 3000), "logs '%s'", msg);
    ok(WAIT_FOR(count_with(&r, "ready") == 1, 2000), "a replacement starts and is ready");
    ok(WAIT_FOR(gone(pids[0]), 4000), "the stopped worker is killed and reaped");
    usleep(700000);
    ok(count_with(&r, "start") == 2, "the ready replacement stays");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

static void test_retire(void)
{
    sup_opts o = {.mode = NULL, .first = "retire 200\n", .workers = 1};
    sup_run r = start_sup(&o);
    int pids[8];
    ok(WAIT_FOR(count_with(&r, "ready") == 1, 3000), "worker ready");
    write_file(r.modefile, "serve-slow 200\n");
    pids_with(&r, "ready", pids, 8);
    ok(WAIT_FOR(has_event(&r, pids[0], "term"), 3000), "the retiring worker is stopped");
    ok(count_with(&r, "ready") == 2, "its replacement was ready before that");
    ok(min_serving(&r, 1) >= 1, "never zero ready workers");
    ok(slog_has(&r, "is retiring; starting its replacement"), "retirement is logged");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

static void test_exec_failure(void)
{
    sup_opts o = {.mode = "serve", .workers = 2, .argv0 = "/nonexistent/casgi-worker"};
    sup_run r = start_sup(&o);
    int rc = wait_sup(&r, 5000, NULL);
    ok(rc == 1, "exec failure: the supervisor returns 1 (got %d)", rc);
    ok(slog_has(&r, "cannot start worker: [Errno 2] No such file or directory: "
                    "'/nonexistent/casgi-worker'"),
       "the exec failure is reported");
    ok(no_orphans(), "no orphan");
    if (rc != 1)
        dump_slog(&r);
}

static void test_no_fds(void)
{
    /* pipe2 fails with EMFILE: logged, retried with backoff, never fatal. */
    sup_opts o = {.mode = "serve", .workers = 1, .fd_starved = 1};
    sup_run r = start_sup(&o);
    ok(WAIT_FOR(slog_count(&r, "cannot start worker: [Errno 24] Too many open files") >= 3, 3000),
       "a pipe failure is logged and retried");
    ok(slog_has(&r, "Next attempt to start a worker in 0.4 s"), "with a growing delay");
    ok(kill(r.pid, 0) == 0 && count_with(&r, "start") == 0, "the supervisor stays up");
    kill(r.pid, SIGTERM);
    ok(wait_sup(&r, 3000, NULL) == 0, "and stops cleanly");
}

static void test_sigquit(void)
{
    sup_opts o = {.mode = "ignore-term", .workers = 2, .shutdown_timeout = 10};
    sup_run r = start_sup(&o);
    int pids[8];
    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "two workers");
    pids_with(&r, "ready", pids, 8);
    kill(r.pid, SIGQUIT);
    long took = 0;
    int rc = wait_sup(&r, 5000, &took);
    ok(rc == 0 && took < 1000, "SIGQUIT: immediate stop, returns 0 (%d, %ld ms)", rc, took);
    ok(all_gone(pids, 2) && no_orphans(), "workers killed and reaped");
}

static void test_double_signal(int sig, const char *name)
{
    sup_opts o = {.mode = "ignore-term", .workers = 2, .shutdown_timeout = 10};
    sup_run r = start_sup(&o);
    int pids[8];
    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "two workers");
    pids_with(&r, "ready", pids, 8);
    kill(r.pid, sig);
    ok(WAIT_FOR(count_with(&r, "term-ignored") == 2, 2000), "%s: workers get SIGTERM", name);
    kill(r.pid, sig);
    long took = 0;
    int rc = wait_sup(&r, 5000, &took);
    ok(rc == 0 && took < 1000, "a second %s forces the stop (%d, %ld ms)", name, rc, took);
    ok(slog_has(&r, "Forcing shutdown"), "the forced stop is logged");
    ok(all_gone(pids, 2) && no_orphans(), "workers killed and reaped");
}

static void test_closed_ctl(void)
{
    sup_opts o = {.mode = "close-ctl", .workers = 1};
    sup_run r = start_sup(&o);
    ok(WAIT_FOR(count_with(&r, "ctl-closed") == 1, 3000), "the worker closes its ctl pipe");
    usleep(200000);
    ok(kill(r.pid, 0) == 0 && count_with(&r, "start") == 1, "the supervisor carries on");
    kill(r.pid, SIGTERM);
    ok(wait_sup(&r, 3000, NULL) == 0 && count_with(&r, "term") == 1, "and stops it normally");
    ok(no_orphans(), "no orphan");
}

static void test_ready_then_exit(void)
{
    /* Exit 1 before 'R' in workers mode is not a boot failure: replaced. */
    sup_opts o = {.mode = NULL, .first = "exit1\n", .workers = 1};
    sup_run r = start_sup(&o);
    ok(WAIT_FOR(count_with(&r, "exit 1") >= 1, 3000), "the worker exits 1 before 'R'");
    write_file(r.modefile, "serve\n");
    ok(WAIT_FOR(count_with(&r, "ready") == 1, 3000), "it is replaced (status 1 is not 3)");
    finish(&r);
    ok(no_orphans(), "no orphan");
}

/* Edits a file of the watched app: in place (truncate, then write) with
 * inotify, which must see it as one change; by rename with polling, where a
 * scan between the truncation and the write would rightly see two. */
static int touch_in_place = 1;

static void touch_app(const sup_run *r, const char *name, const char *text)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/%s", r->app, name);
    if (!touch_in_place) {
        write_file(path, text);
        return;
    }
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) < 0)
        abort();
    close(fd);
}

static void test_reload(int backend)
{
    const char *name = backend == 1 ? "inotify" : "polling";
    sup_opts o = {.mode = NULL, .workers = 2, .reload = backend};
    sup_run r = start_sup(&o);
    int old[8], all[16];
    char msg[128];
    touch_in_place = backend == 1;

    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "%s: reload mode with two workers", name);
    snprintf(msg, sizeof(msg), "Started reloader process [%d] using %s", (int)r.pid, name);
    ok(slog_has(&r, msg), "logs '%s'", msg);
    pids_with(&r, "ready", old, 8);

    /* A burst of writes is one reload. */
    for (int i = 0; i < 5; i++) {
        touch_app(&r, "main.py", "app = 1\n");
        usleep(5000);
    }
    ok(WAIT_FOR(count_with(&r, "ready") == 4, 3000), "an edit replaces both workers");
    ok(slog_count(&r, "Detected changes in 'app/main.py'. Reloading...") == 1,
       "logs Detected changes in 'app/main.py'. Reloading... once for a burst");
    ok(has_event(&r, old[0], "term") && has_event(&r, old[1], "term"), "the old ones got SIGTERM");
    ok(WAIT_FOR(all_gone(old, 2), 2000), "and are gone");

    /* Several files in one window. */
    touch_app(&r, "other.py", "x = 2\n");
    touch_app(&r, "main.py", "app = 2\n");
    ok(WAIT_FOR(count_with(&r, "ready") == 6, 3000), "a second edit: two more workers");
    ok(slog_has(&r, "Detected changes in 'app/other.py', 'app/main.py'. Reloading...") ||
           slog_has(&r, "Detected changes in 'app/main.py', 'app/other.py'. Reloading..."),
       "several files are listed, quoted, comma separated");
    touch_app(&r, "notes.txt", "not python\n");
    usleep(400000);
    ok(count_with(&r, "start") == 6, "a file outside the include patterns does not reload");

    /* A broken app: the supervisor waits for the next change. */
    write_file(r.modefile, "exit1\n");
    touch_app(&r, "main.py", "app = (\n");
    ok(WAIT_FOR(slog_has(&r, "Waiting for file changes before restarting"), 3000),
       "a worker that fails logs Waiting for file changes before restarting");
    ok(WAIT_FOR(count_with(&r, "exit 1") == 2, 2000), "both new workers failed");
    usleep(500000);
    ok(count_with(&r, "start") == 8 && kill(r.pid, 0) == 0,
       "no restart without a change, and the supervisor stays up");
    write_file(r.modefile, "serve\n");
    touch_app(&r, "main.py", "app = 3\n");
    ok(WAIT_FOR(count_with(&r, "ready") == 8, 3000), "the fix brings two workers back");

    /* A worker that dies later: also waits for a change. */
    int pids[16];
    int n = pids_with(&r, "ready", pids, 16);
    kill(pids[n - 1], SIGKILL);
    snprintf(msg, sizeof(msg), "Child process [%d] died (signal 9)", pids[n - 1]);
    ok(WAIT_FOR(slog_has(&r, msg), 2000), "a killed worker is logged");
    ok(WAIT_FOR(slog_count(&r, "Waiting for file changes before restarting") == 2, 2000),
       "and the supervisor waits for a change");
    usleep(300000);
    ok(count_with(&r, "start") == 10 && gone(pids[n - 1]), "not restarted, reaped");
    int kids[16], z;
    ok(sup_children(&r, kids, 16, &z) == 1 && z == 0, "one child left, no zombie");

    /* SIGHUP restarts now. */
    kill(r.pid, SIGHUP);
    ok(WAIT_FOR(count_with(&r, "ready") == 10, 3000), "SIGHUP restarts the workers");
    ok(slog_has(&r, "Received SIGHUP. Reloading..."), "SIGHUP is logged");

    char fds[32];
    snprintf(fds, sizeof(fds), "fds %d", inherited_fds);
    ok(count_with(&r, fds) == count_with(&r, "start"), "no fd of the watcher leaks into workers");

    kill(r.pid, SIGTERM);
    ok(wait_sup(&r, 5000, NULL) == 0, "SIGTERM: returns 0");
    ok(slog_has(&r, "Stopping reloader process ["), "logs Stopping reloader process [PID]");
    n = pids_with(&r, "start", all, 16);
    ok(all_gone(all, n) && no_orphans(), "no worker left");
}

/* A worker that ignores SIGTERM does not hold a reload beyond reload_timeout,
 * and its replacement starts at once (in parallel). */
static void test_reload_bound(void)
{
    sup_opts o = {
        .mode = NULL, .first = "ignore-term\n", .workers = 1, .reload = 1, .reload_timeout = 0.6};
    sup_run r = start_sup(&o);
    int old[4];
    ok(WAIT_FOR(count_with(&r, "ready") == 1, 3000), "reload: worker ready");
    pids_with(&r, "ready", old, 4);
    write_file(r.modefile, "serve\n");
    long t0 = now_ms();
    touch_app(&r, "main.py", "app = 1\n");
    ok(WAIT_FOR(count_with(&r, "ready") == 2, 3000), "the new worker is ready");
    long ready_ms = now_ms() - t0;
    ok(kill(old[0], 0) == 0 && ready_ms < 500,
       "before the old one (ignoring SIGTERM) is killed (%ld ms)", ready_ms);
    ok(WAIT_FOR(gone(old[0]), 2000), "the old one is killed after reload_timeout");
    long killed_ms = now_ms() - t0;
    ok(killed_ms >= 550 && killed_ms < 2000, "within the bound (%ld ms)", killed_ms);
    finish(&r);
    ok(no_orphans(), "no orphan");
}

/* Reload mode with a standby: it starts once the worker is ready, with
 * SIGINT ignored; a reload releases it instead of starting a process; one
 * that dies is not replaced until the next reload, which then starts a worker
 * from scratch. */
static void test_standby(void)
{
    sup_opts o = {.mode = "serve", .workers = 1, .reload = 1, .standby = 1};
    sup_run r = start_sup(&o);
    int first[4], sb[8], n;
    char msg[128];
    touch_in_place = 1;

    ok(WAIT_FOR(count_with(&r, "ready") == 1 && count_with(&r, "standby") == 1, 3000),
       "standby: a worker, then a standby");
    pids_with(&r, "ready", first, 4);
    pids_with(&r, "standby", sb, 8);
    ok(has_event(&r, sb[0], "standby-sigint-ok") && has_event(&r, sb[0], "mask-ok") &&
           has_event(&r, sb[0], "listen-ok"),
       "the standby starts with SIGINT ignored, the rest reset, the socket inherited");
    ok(!has_event(&r, sb[0], "ready"), "and does not say ready before it is released");

    touch_app(&r, "main.py", "app = 1\n");
    ok(WAIT_FOR(has_event(&r, sb[0], "released") && has_event(&r, sb[0], "ready"), 3000),
       "a change releases the standby, which becomes the worker");
    ok(WAIT_FOR(gone(first[0]), 2000) && has_event(&r, first[0], "term"), "the old worker stopped");
    ok(WAIT_FOR(count_with(&r, "standby") == 2, 3000), "a new standby once the worker is ready");
    ok(count_with(&r, "start") == 3, "no other process was started (%d)", count_with(&r, "start"));

    n = pids_with(&r, "standby", sb, 8);
    kill(sb[n - 1], SIGKILL);
    snprintf(msg, sizeof(msg), "Standby worker [%d] exited (signal 9)", sb[n - 1]);
    ok(WAIT_FOR(slog_has(&r, msg), 2000), "a standby that dies is logged");
    usleep(400000);
    ok(count_with(&r, "start") == 3 && !slog_has(&r, "Waiting for file changes"),
       "not replaced at once, and the serving worker is not affected");
    touch_app(&r, "main.py", "app = 2\n");
    ok(WAIT_FOR(count_with(&r, "ready") == 3, 3000) && count_with(&r, "released") == 1,
       "the next change starts a worker from scratch");
    ok(WAIT_FOR(count_with(&r, "standby") == 3, 3000), "then a standby is kept again");

    kill(r.pid, SIGTERM);
    ok(wait_sup(&r, 5000, NULL) == 0, "SIGTERM: returns 0");
    n = pids_with(&r, "standby", sb, 8);
    ok(WAIT_FOR(gone(sb[n - 1]), 2000) && has_event(&r, sb[n - 1], "standby-eof") == 0,
       "the waiting standby was stopped by SIGTERM (not left to notice EOF)");
    int all[16];
    n = pids_with(&r, "start", all, 16);
    ok(all_gone(all, n) && no_orphans(), "no process left");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        printf("1..0 # SKIP usage: test_supervisor FAKE_WORKER\n");
        return 0;
    }
    /* Absolute: the reload cases run the supervisor in another directory. */
    static char fake_path[4096];
    if (!realpath(argv[1], fake_path))
        return 1;
    fake_worker = fake_path;
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(dir, sizeof(dir), "/tmp/cg_sup_XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* The test's own stdin/stdout may be pipes from the harness; the
     * listening fd number must be free for the supervisor child. */
    close(LISTEN_FD);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.' && atoi(de->d_name) > 2 && atoi(de->d_name) != dirfd(d) &&
            !(fcntl(atoi(de->d_name), F_GETFD) & FD_CLOEXEC))
            inherited_fds++;
    if (d)
        closedir(d);

    test_start_and_sigterm();
    test_sigkill_supervisor("serve", "alive pipe and PDEATHSIG");
    test_sigkill_supervisor("no-alive", "PDEATHSIG alone");
    test_sigkill_supervisor("no-pdeath", "alive pipe alone");
    test_crash_replaced();
    test_crash_loop_backoff();
    test_boot_failure();
    test_ready_then_exit();
    test_ignore_sigterm();
    test_ttin_ttou();
    test_rolling_restart();
    test_rolling_abort("exit1", "died before it was ready");
    test_rolling_abort("never-ready", "was not ready in time");
    test_stuck_worker();
    test_startup_timeout();
    test_retire();
    test_exec_failure();
    test_no_fds();
    test_sigquit();
    test_double_signal(SIGINT, "SIGINT");
    test_double_signal(SIGTERM, "SIGTERM");
    test_closed_ctl();
    test_reload(1);
    test_reload(2);
    test_reload_bound();
    test_standby();

    /* CG_SUP_KEEP=1 keeps the logs for a look after a failure. */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (getenv("CG_SUP_KEEP"))
        printf("# logs kept in %s\n", dir);
    else if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return tap_done();
}
