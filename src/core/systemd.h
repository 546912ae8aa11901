/* systemd's service protocols, without libsystemd: socket activation
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES: the listening sockets are
 * inherited as fds 3, 4, ...) and the notification socket (NOTIFY_SOCKET:
 * READY=1, RELOADING=1, STOPPING=1, STATUS=, WATCHDOG=1 as datagrams on an
 * AF_UNIX socket, a path or an abstract name written with a leading '@').
 * See sd_listen_fds(3), sd_notify(3) and systemd.service(5). Pure POSIX;
 * reading and unsetting the environment is left to the caller. */
#ifndef CG_SYSTEMD_H
#define CG_SYSTEMD_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

/* The first inherited socket (SD_LISTEN_FDS_START). */
#define CG_SD_LISTEN_FDS_START 3

/** Parses the values of $LISTEN_PID and $LISTEN_FDS (either may be NULL).
 * Returns how many sockets were passed to the process `self` (0 when the
 * variables are absent or name another process), or -1 with a message in err
 * when they name this process but are malformed. */
int cg_sd_listen_parse(const char *pid, const char *fds, long self, char *err, size_t errlen);

/** Checks that fd is an open stream socket that is listening (SO_ACCEPTCONN),
 * and makes it close-on-exec. Returns 0, or -1 with a message naming the fd
 * in err. */
int cg_sd_check_listener(int fd, char *err, size_t errlen);

/** The notification socket: where the datagrams go. fd is -1 when there is
 * none (NOTIFY_SOCKET unset or empty). */
typedef struct cg_sd_notify {
    int fd; /* owned: a close-on-exec AF_UNIX datagram socket, or -1 */
    struct sockaddr_un addr;
    socklen_t addrlen;
} cg_sd_notify;

/** Opens a datagram socket for $NOTIFY_SOCKET's value `path` (NULL or "":
 * none, n->fd = -1). An abstract name is written "@name". Returns 0, or -1
 * with a message in err (the name too long, not absolute, no socket). */
int cg_sd_notify_open(cg_sd_notify *n, const char *path, char *err, size_t errlen);

/** Sends one datagram holding `msg` (newline-separated assignments, e.g.
 * "READY=1\nSTATUS=Serving"). Never blocks. Returns 0 (also when there is
 * no socket), or -1 with errno set. */
int cg_sd_notify_send(const cg_sd_notify *n, const char *msg);

/** Sends "RELOADING=1", MONOTONIC_USEC= (CLOCK_MONOTONIC now, as systemd 253
 * requires with Type=notify-reload) and STATUS=status when status is not
 * NULL. Returns as cg_sd_notify_send. */
int cg_sd_notify_reloading(const cg_sd_notify *n, const char *status);

/** Closes the socket (idempotent). */
void cg_sd_notify_close(cg_sd_notify *n);

/** The watchdog interval in seconds from the values of $WATCHDOG_USEC and
 * $WATCHDOG_PID (either may be NULL): 0 when there is no watchdog for the
 * process `self` (absent, another pid, zero, malformed). Pings are due at
 * half of it. */
double cg_sd_watchdog_interval(const char *usec, const char *pid, long self);

/** How long a worker's heartbeat may be old while the watchdog is still
 * pinged: half the watchdog interval, at least `beat` * 2 (heartbeats come
 * every `beat` seconds, so one late beat never stops the pings). */
double cg_sd_watchdog_stale_after(double interval, double beat);

#endif
