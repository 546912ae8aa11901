/* Listening sockets, created once by whichever process owns them (the single
 * server process now, the supervisor with --workers/--reload). Pure POSIX. */
#ifndef CG_SOCK_H
#define CG_SOCK_H

#include <stddef.h>

/** Binds and listens on host:port (IPv6 when host contains ':'). The socket is
 * close-on-exec, non-blocking, with SO_REUSEADDR. Returns the fd, or -1 with a
 * message ("[Errno 98] Address already in use") in err. */
int cg_listen_tcp(const char *host, int port, int backlog, char *err, size_t errlen);

/** Binds and listens on a Unix socket path (a stale socket file is replaced;
 * mode 0666). Returns the fd or -1 with a message in err. */
int cg_listen_unix(const char *path, int backlog, char *err, size_t errlen);

/** Writes the socket's local address as "SCHEME://HOST:PORT" (IPv6 in
 * brackets; scheme "http" or "https") or "unix:PATH" into out. Returns 0 or -1. */
int cg_sock_url(int fd, const char *scheme, char *out, size_t outlen);

#endif
