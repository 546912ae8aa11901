/* A stand-in for a casgi worker, for the supervisor's tests. It speaks the
 * worker protocol of supervisor.h and appends what happens to it to a log
 * file, one line per event written with one write(): "<pid> <ms> <event>",
 * where <ms> is CLOCK_MONOTONIC in milliseconds (comparable across
 * processes).
 *
 * Usage: fake_worker LOG MODE [ARG]
 * MODE (ARG in milliseconds):
 *   serve          'R', then 'H' every 100 ms; exits 0 on SIGTERM
 *   serve-slow N   like serve, but 'R' only after N ms
 *   boot3          exits 3 before 'R' (the app cannot load)
 *   exit1          exits 1 before 'R'
 *   crash N        'R', then exits 1 after N ms
 *   ignore-term    like serve, but SIGTERM is logged and ignored
 *   stuck N        like serve, but heartbeats stop after N ms
 *   retire N       like serve, and sends 'X' after N ms
 *   never-ready    heartbeats but never sends 'R'
 *   no-alive       like serve, but ignores EOF on the alive pipe
 *   no-pdeath      like serve, but clears PR_SET_PDEATHSIG (only the alive pipe is left)
 *   close-ctl      'R', then closes the ctl pipe and keeps running
 *   @FILE          reads "MODE [ARG]" from FILE (the test changes it between starts)
 * Always: SIGUSR1 logs "usr1" and prints a fake stack to stderr; EOF on the
 * alive pipe logs "orphan" and exits 0. At start it logs what it inherited:
 * "env ctl alive" (or "env-bad"), "mask-ok"/"mask-bad" (signal mask and
 * dispositions reset), "pdeath-ok"/"pdeath-bad" (PR_SET_PDEATHSIG is SIGKILL),
 * "listen-ok"/"listen-bad" (FAKE_LISTEN_FD open), and
 * "fds N" (open fds besides 0-2, the listening fd, ctl and alive).
 * Started as a standby (CASGI_WORKER ending in ":S") it also logs "standby"
 * and "standby-sigint-ok"/"standby-sigint-bad" (SIGINT must be ignored), then
 * waits on the alive socket: the byte 'G' logs "released" and it goes on in
 * MODE; EOF logs "standby-eof" and it exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void event(const char *fmt, const char *arg)
{
    char line[256], what[200];
    snprintf(what, sizeof(what), fmt, arg);
    int n = snprintf(line, sizeof(line), "%d %ld %s\n", (int)getpid(), now_ms(), what);
    if (write(log_fd, line, (size_t)n) < 0)
        _exit(99);
}

static void send_byte(int ctl, const char *bytes)
{
    if (ctl >= 0 && write(ctl, bytes, strlen(bytes)) < 0 && errno != EPIPE)
        event("ctl-write-failed %s", strerror(errno));
}

int main(int argc, char **argv)
{
    char mode[64] = "", buf[128];
    long arg = 0;
    int ctl = -1, alive = -1, listen_fd = -1;

    if (argc < 3)
        return 2;
    log_fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0)
        return 2;
    snprintf(mode, sizeof(mode), "%s", argv[2]);
    if (argc > 3)
        arg = atol(argv[3]);
    if (mode[0] == '@') {
        FILE *f = fopen(mode + 1, "r");
        if (!f || fscanf(f, "%63s %ld", mode, &arg) < 1)
            return 2;
        fclose(f);
    }
    event("start %s", mode);

    /* What the supervisor must have handed over. */
    const char *env = getenv("CASGI_WORKER");
    size_t envlen = env ? strlen(env) : 0;
    int standby = envlen > 2 && !strcmp(env + envlen - 2, ":S");
    if (env && sscanf(env, "%d:%d", &ctl, &alive) == 2 && fcntl(ctl, F_GETFD) == 0 &&
        fcntl(alive, F_GETFD) == 0 && ctl > 2 && alive > 2 && ctl != alive) {
        snprintf(buf, sizeof(buf), "env %d %d", ctl, alive);
        event("%s", buf);
    } else {
        event("env-bad %s", env ? env : "(unset)");
        ctl = alive = -1;
    }
    sigset_t cur;
    struct sigaction sa;
    int mask_ok = sigprocmask(SIG_SETMASK, NULL, &cur) == 0;
    for (int sig = 1; sig < 32 && mask_ok; sig++)
        if (sigismember(&cur, sig) == 1)
            mask_ok = 0;
    /* Not every signal: sanitizers install their own SIGSEGV/SIGBUS handlers. */
    static const int sigs[] = {SIGINT,  SIGTERM, SIGQUIT, SIGHUP,  SIGPIPE,
                               SIGCHLD, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigaction(sigs[i], NULL, &sa) < 0 ||
            sa.sa_handler != (standby && sigs[i] == SIGINT ? SIG_IGN : SIG_DFL))
            mask_ok = 0;
    event("%s", mask_ok ? "mask-ok" : "mask-bad");
    int pdeath = 0;
    prctl(PR_GET_PDEATHSIG, &pdeath);
    event("%s", pdeath == SIGKILL ? "pdeath-ok" : "pdeath-bad");
    if (!strcmp(mode, "no-pdeath"))
        prctl(PR_SET_PDEATHSIG, 0);
    const char *lfd = getenv("FAKE_LISTEN_FD");
    if (lfd) {
        listen_fd = atoi(lfd);
        event("%s", fcntl(listen_fd, F_GETFD) == 0 ? "listen-ok" : "listen-bad");
    }
    int extra = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            int fd = atoi(de->d_name);
            if (fd > 2 && fd != dirfd(d) && fd != log_fd && fd != ctl && fd != alive &&
                fd != listen_fd) {
                char path[64], target[128];
                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                ssize_t k = readlink(path, target, sizeof(target) - 1);
                target[k > 0 ? k : 0] = 0;
                event("extra-fd %s", target);
                extra++;
            }
        }
        closedir(d);
    }
    snprintf(buf, sizeof(buf), "fds %d", extra);
    event("%s", buf);

    if (standby) {
        char c;
        ssize_t n;
        event("%s", "standby");
        event("%s", sigaction(SIGINT, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN
                        ? "standby-sigint-ok"
                        : "standby-sigint-bad");
        do
            n = read(alive, &c, 1);
        while (n < 0 && errno == EINTR);
        if (n != 1 || c != 'G') {
            event("%s", "standby-eof");
            return 0;
        }
        signal(SIGINT, SIG_DFL);
        event("%s", "released");
    }

    if (!strcmp(mode, "boot3")) {
        event("%s", "exit 3");
        return 3;
    }
    if (!strcmp(mode, "exit1")) {
        event("%s", "exit 1");
        return 1;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);

    long start = now_ms(), next_hb = start;
    long ready_at = !strcmp(mode, "serve-slow") ? start + arg : start;
    int ready = 0, retired = 0;
    int never_ready = !strcmp(mode, "never-ready");

    for (;;) {
        long now = now_ms();
        if (!ready && !never_ready && now >= ready_at) {
            /* 'R' and the first 'H' in one write: the supervisor must read both. */
            /* Logged first: once 'R' is out, the supervisor may stop another
             * worker at once, and the log order must show cause before effect. */
            event("%s", "ready");
            send_byte(ctl, "RH");
            ready = 1;
            next_hb = now + 100;
            if (!strcmp(mode, "close-ctl")) {
                close(ctl);
                ctl = -1;
                event("%s", "ctl-closed");
            }
        }
        if (!strcmp(mode, "crash") && now - start >= arg) {
            event("%s", "crash");
            return 1;
        }
        if (!strcmp(mode, "retire") && !retired && now - start >= arg) {
            send_byte(ctl, "X");
            retired = 1;
            event("%s", "retire");
        }
        int hb = !(!strcmp(mode, "stuck") && now - start >= arg);
        if (now >= next_hb) {
            if (hb)
                send_byte(ctl, "H");
            next_hb = now + 100;
        }

        struct pollfd p[2] = {{sfd, POLLIN, 0}, {alive, POLLIN, 0}};
        long wait = next_hb - now;
        if (!ready && !never_ready && ready_at - now < wait)
            wait = ready_at - now;
        if (wait < 0)
            wait = 0;
        if (poll(p, 2, (int)wait) < 0 && errno != EINTR)
            return 2;
        if (p[1].revents && strcmp(mode, "no-alive") != 0) {
            event("%s", "orphan");
            return 0;
        }
        if (p[1].revents)
            alive = -1; /* no-alive: stop polling it */
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
            if (si.ssi_signo == SIGUSR1) {
                event("%s", "usr1");
                fprintf(stderr, "Thread 0x0001 (most recent call first):\n  File \"app.py\"\n");
            } else if (si.ssi_signo == SIGTERM) {
                if (!strcmp(mode, "ignore-term")) {
                    event("%s", "term-ignored");
                } else {
                    event("%s", "term");
                    return 0;
                }
            }
        }
    }
}
