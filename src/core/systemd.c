/* systemd's socket activation and notification protocols (see systemd.h). */
#include "systemd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A decimal number without sign, spaces or trailing bytes; -1 otherwise. */
static long long parse_count(const char *s)
{
    long long v = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (LLONG_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

int cg_sd_listen_parse(const char *pid, const char *fds, long self, char *err, size_t errlen)
{
    long long p, n;

    if (!pid || !fds)
        return 0;
    p = parse_count(pid);
    if (p < 0) {
        snprintf(err, errlen, "socket activation: invalid LISTEN_PID '%s'", pid);
        return -1;
    }
    if (p != self)
        return 0; /* meant for another process (a parent that forked us) */
    n = parse_count(fds);
    if (n < 0 || n > INT_MAX - CG_SD_LISTEN_FDS_START) {
        snprintf(err, errlen, "socket activation: invalid LISTEN_FDS '%s'", fds);
        return -1;
    }
    return (int)n;
}

int cg_sd_check_listener(int fd, char *err, size_t errlen)
{
    int type = 0, listening = 0, flags;
    socklen_t len = sizeof(type);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        if (errno == ENOTSOCK)
            snprintf(err, errlen, "socket activation: fd %d is not a socket", fd);
        else
            snprintf(err, errlen, "socket activation: fd %d: [Errno %d] %s", fd, errno,
                     strerror(errno));
        return -1;
    }
    if (type != SOCK_STREAM) {
        snprintf(err, errlen,
                 "socket activation: fd %d is not a stream socket (a datagram or sequential "
                 "packet socket cannot serve HTTP)",
                 fd);
        return -1;
    }
    len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        snprintf(err, errlen,
                 "socket activation: fd %d is not listening (a socket unit with Accept=yes "
                 "passes connections; casgi needs Accept=no)",
                 fd);
        return -1;
    }
    flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        snprintf(err, errlen, "socket activation: fd %d: [Errno %d] %s", fd, errno,
                 strerror(errno));
        return -1;
    }
    return 0;
}

int cg_sd_notify_open(cg_sd_notify *n, const char *path, char *err, size_t errlen)
{
    size_t len;

    memset(n, 0, sizeof(*n));
    n->fd = -1;
    if (!path || !*path)
        return 0;
    len = strlen(path);
    if (path[0] != '/' && path[0] != '@') {
        snprintf(err, errlen, "NOTIFY_SOCKET '%s' is neither an absolute path nor an abstract name",
                 path);
        return -1;
    }
    if (len >= sizeof(n->addr.sun_path)) {
        snprintf(err, errlen, "NOTIFY_SOCKET '%s' is too long", path);
        return -1;
    }
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    /* An abstract name has no terminating NUL: its length is the address's. */
    if (path[0] == '@')
        n->addr.sun_path[0] = '\0';
    n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '/'));
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        snprintf(err, errlen, "NOTIFY_SOCKET: [Errno %d] %s", errno, strerror(errno));
        return -1;
    }
    return 0;
}

int cg_sd_notify_send(const cg_sd_notify *n, const char *msg)
{
    ssize_t r;

    if (n->fd < 0)
        return 0;
    do
        r = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
                   (const struct sockaddr *)&n->addr, n->addrlen);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -1 : 0;
}

int cg_sd_notify_reloading(const cg_sd_notify *n, const char *status)
{
    struct timespec ts;
    char msg[512];
    uint64_t usec;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (status)
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
                 (unsigned long long)usec, status);
    else
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)usec);
    return cg_sd_notify_send(n, msg);
}

void cg_sd_notify_close(cg_sd_notify *n)
{
    if (n->fd >= 0) {
        close(n->fd);
        n->fd = -1;
    }
}

double cg_sd_watchdog_interval(const char *usec, const char *pid, long self)
{
    long long u = parse_count(usec);
    if (u <= 0)
        return 0;
    if (pid) {
        long long p = parse_count(pid);
        if (p != self)
            return 0;
    }
    return (double)u / 1e6;
}

double cg_sd_watchdog_stale_after(double interval, double beat)
{
    double half = interval / 2;
    return half > 2 * beat ? half : 2 * beat;
}
