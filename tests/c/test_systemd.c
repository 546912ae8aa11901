/* Unit tests for the systemd protocols: LISTEN_PID/LISTEN_FDS parsing, the
 * listening-socket check on real sockets, and notifications received on a
 * real AF_UNIX datagram socket (a path and an abstract name). */
#include "systemd.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char err[256];

static void test_listen_parse(void)
{
    ok(cg_sd_listen_parse(NULL, NULL, 42, err, sizeof(err)) == 0, "no variables: 0");
    ok(cg_sd_listen_parse("42", NULL, 42, err, sizeof(err)) == 0, "LISTEN_FDS missing: 0");
    ok(cg_sd_listen_parse(NULL, "2", 42, err, sizeof(err)) == 0, "LISTEN_PID missing: 0");
    ok(cg_sd_listen_parse("42", "2", 42, err, sizeof(err)) == 2, "two sockets for us");
    ok(cg_sd_listen_parse("42", "0", 42, err, sizeof(err)) == 0, "zero sockets");
    ok(cg_sd_listen_parse("43", "2", 42, err, sizeof(err)) == 0, "another process's: 0");
    ok(cg_sd_listen_parse("43", "junk", 42, err, sizeof(err)) == 0,
       "another process's, even malformed: 0");
    const char *bad_pids[] = {"", "x", "-42", " 42", "42 ", "4 2", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad_pids) / sizeof(bad_pids[0]); i++) {
        err[0] = '\0';
        ok(cg_sd_listen_parse(bad_pids[i], "1", 42, err, sizeof(err)) == -1 &&
               strstr(err, "LISTEN_PID"),
           "LISTEN_PID '%s' refused: %s", bad_pids[i], err);
    }
    const char *bad_fds[] = {"", "x", "-1", "1x", "+1", "2147483647", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad_fds) / sizeof(bad_fds[0]); i++) {
        err[0] = '\0';
        ok(cg_sd_listen_parse("42", bad_fds[i], 42, err, sizeof(err)) == -1 &&
               strstr(err, "LISTEN_FDS"),
           "LISTEN_FDS '%s' refused: %s", bad_fds[i], err);
    }
}

static int tcp_socket(int do_listen)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        (do_listen && listen(fd, 8) < 0))
        return -1;
    return fd;
}

static void test_check_listener(void)
{
    int lfd = tcp_socket(1), bound = tcp_socket(0);
    int dgram = socket(AF_INET, SOCK_DGRAM, 0);
    int pipefd[2];
    ok(lfd >= 0 && bound >= 0 && dgram >= 0 && pipe(pipefd) == 0, "test sockets");

    ok(cg_sd_check_listener(lfd, err, sizeof(err)) == 0, "a listening TCP socket passes");
    ok(fcntl(lfd, F_GETFD) & FD_CLOEXEC, "and is made close-on-exec");
    err[0] = '\0';
    ok(cg_sd_check_listener(bound, err, sizeof(err)) == -1 && strstr(err, "not listening"),
       "a bound, not listening socket: %s", err);
    err[0] = '\0';
    ok(cg_sd_check_listener(dgram, err, sizeof(err)) == -1 && strstr(err, "not a stream socket"),
       "a datagram socket: %s", err);
    err[0] = '\0';
    ok(cg_sd_check_listener(pipefd[0], err, sizeof(err)) == -1 && strstr(err, "not a socket"),
       "a pipe: %s", err);
    int closed = dup(lfd);
    close(closed);
    err[0] = '\0';
    ok(cg_sd_check_listener(closed, err, sizeof(err)) == -1 && strstr(err, "Errno 9"),
       "a closed fd: %s", err);

    /* A connected (accepted) socket, as Accept=yes would pass. */
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    getsockname(lfd, (struct sockaddr *)&a, &al);
    int cli = socket(AF_INET, SOCK_STREAM, 0);
    ok(connect(cli, (struct sockaddr *)&a, al) == 0, "connect");
    int acc = accept(lfd, NULL, NULL);
    err[0] = '\0';
    ok(acc >= 0 && cg_sd_check_listener(acc, err, sizeof(err)) == -1 && strstr(err, "Accept=no"),
       "an accepted connection: %s", err);

    close(acc);
    close(cli);
    close(lfd);
    close(bound);
    close(dgram);
    close(pipefd[0]);
    close(pipefd[1]);
}

/* A datagram socket bound to `name` (a path, or "@..." abstract). */
static int receiver(const char *name)
{
    struct sockaddr_un a;
    size_t len = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, name, len);
    if (name[0] == '@')
        a.sun_path[0] = '\0';
    socklen_t al = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] != '@'));
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, al) < 0)
        return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* The next datagram as a string ("" on timeout). */
static const char *recv_msg(int fd)
{
    static char buf[1024];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_notify_to(const char *name)
{
    cg_sd_notify n;
    int rfd = receiver(name);
    ok(rfd >= 0, "%s: receiver bound", name);
    ok(cg_sd_notify_open(&n, name, err, sizeof(err)) == 0 && n.fd >= 0, "%s: opened", name);
    ok(fcntl(n.fd, F_GETFD) & FD_CLOEXEC, "%s: the socket is close-on-exec", name);
    ok(cg_sd_notify_send(&n, "READY=1\nSTATUS=Serving on http://127.0.0.1:8000") == 0, "%s: sent",
       name);
    ok(!strcmp(recv_msg(rfd), "READY=1\nSTATUS=Serving on http://127.0.0.1:8000"),
       "%s: READY=1 and STATUS in one datagram", name);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long before = (unsigned long long)ts.tv_sec * 1000000u + ts.tv_nsec / 1000u;
    ok(cg_sd_notify_reloading(&n, "Reloading") == 0, "%s: RELOADING sent", name);
    const char *m = recv_msg(rfd);
    unsigned long long usec = 0;
    char status[64] = "";
    int got = sscanf(m, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%63[^\n]", &usec, status);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long after = (unsigned long long)ts.tv_sec * 1000000u + ts.tv_nsec / 1000u;
    ok(got == 2 && usec >= before && usec <= after && !strcmp(status, "Reloading"),
       "%s: RELOADING=1 with MONOTONIC_USEC of CLOCK_MONOTONIC (%llu)", name, usec);
    ok(cg_sd_notify_reloading(&n, NULL) == 0 && !strncmp(recv_msg(rfd), "RELOADING=1\n", 12),
       "%s: RELOADING without a status", name);
    cg_sd_notify_close(&n);
    ok(n.fd == -1, "%s: closed", name);
    cg_sd_notify_close(&n);
    close(rfd);
}

static void test_notify(void)
{
    char path[64];
    cg_sd_notify n;

    snprintf(path, sizeof(path), "/tmp/cg-sd-test-%d.sock", (int)getpid());
    unlink(path);
    test_notify_to(path);
    unlink(path);
    snprintf(path, sizeof(path), "@cg-sd-test-%d", (int)getpid());
    test_notify_to(path);

    ok(cg_sd_notify_open(&n, NULL, err, sizeof(err)) == 0 && n.fd == -1, "unset: no socket");
    ok(cg_sd_notify_send(&n, "READY=1") == 0, "sending without a socket is a no-op");
    ok(cg_sd_notify_open(&n, "", err, sizeof(err)) == 0 && n.fd == -1, "empty: no socket");
    err[0] = '\0';
    ok(cg_sd_notify_open(&n, "relative/path", err, sizeof(err)) == -1 && n.fd == -1 &&
           strstr(err, "absolute"),
       "a relative path is refused: %s", err);
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[0] = '/';
    longname[sizeof(longname) - 1] = '\0';
    err[0] = '\0';
    ok(cg_sd_notify_open(&n, longname, err, sizeof(err)) == -1 && strstr(err, "too long"),
       "a name longer than sun_path is refused");

    /* Nobody listening: the send fails, it never blocks or raises SIGPIPE. */
    snprintf(path, sizeof(path), "/tmp/cg-sd-none-%d.sock", (int)getpid());
    unlink(path);
    ok(cg_sd_notify_open(&n, path, err, sizeof(err)) == 0, "open with no receiver");
    errno = 0;
    ok(cg_sd_notify_send(&n, "WATCHDOG=1") == -1 && errno == ENOENT, "send fails with ENOENT");
    cg_sd_notify_close(&n);
}

static void test_watchdog(void)
{
    ok(cg_sd_watchdog_interval(NULL, NULL, 42) == 0, "no WATCHDOG_USEC: none");
    ok(cg_sd_watchdog_interval("3000000", NULL, 42) == 3.0, "3 s, no WATCHDOG_PID");
    ok(cg_sd_watchdog_interval("3000000", "42", 42) == 3.0, "3 s, WATCHDOG_PID is us");
    ok(cg_sd_watchdog_interval("3000000", "43", 42) == 0, "WATCHDOG_PID is another process");
    ok(cg_sd_watchdog_interval("3000000", "x", 42) == 0, "WATCHDOG_PID malformed");
    ok(cg_sd_watchdog_interval("0", NULL, 42) == 0, "0: none");
    ok(cg_sd_watchdog_interval("-5", NULL, 42) == 0, "negative: none");
    ok(cg_sd_watchdog_interval("1s", NULL, 42) == 0, "malformed: none");
    ok(cg_sd_watchdog_interval("500", NULL, 42) == 0.0005, "microseconds");
    ok(cg_sd_watchdog_stale_after(30, 1) == 15, "stale after half the interval");
    ok(cg_sd_watchdog_stale_after(2, 1) == 2, "at least two heartbeats");
}

int main(void)
{
    test_listen_parse();
    test_check_listener();
    test_notify();
    test_watchdog();
    return tap_done();
}
