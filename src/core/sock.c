#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <unistd.h>

static void set_errno_msg(char *err, size_t errlen, int e)
{
    snprintf(err, errlen, "[Errno %d] %s", e, strerror(e));
}

int cg_listen_tcp(const char *host, int port, int backlog, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portstr[16];
    int fd = -1, one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = strchr(host, ':') ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve host '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail_errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail_errno;
    if (res->ai_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0)
        goto fail_errno;
    if (listen(fd, backlog) < 0)
        goto fail_errno;
    freeaddrinfo(res);
    return fd;

fail_errno:
    set_errno_msg(err, errlen, errno);
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

int cg_listen_unix(const char *path, int backlog, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat stbuf;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "unix socket path too long: '%s'", path);
        return -1;
    }
    /* Only a leftover socket is replaced, never a regular file. */
    if (stat(path, &stbuf) == 0 && S_ISSOCK(stbuf.st_mode))
        unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto fail_errno;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto fail_errno;
    if (chmod(path, 0666) < 0)
        goto fail_errno;
    if (listen(fd, backlog) < 0)
        goto fail_errno;
    return fd;

fail_errno:
    set_errno_msg(err, errlen, errno);
    if (fd >= 0)
        close(fd);
    return -1;
}

int cg_sock_url(int fd, const char *scheme, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s://%s:%d", scheme, host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "%s://[%s]:%d", scheme, host, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        struct sockaddr_un *a = (struct sockaddr_un *)&ss;
        snprintf(out, outlen, "unix:%s", a->sun_path);
    } else {
        return -1;
    }
    return 0;
}
