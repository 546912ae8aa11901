/* The exposition server: a thread of its own serving GET /metrics (see
 * metrics.h). It only reads the shared region, never anything of the
 * process's event loop or interpreter, so it answers while an app blocks its
 * loop. One connection at a time, one request per connection (connection:
 * close): a scraper is one client; a slow one holds the others back for at
 * most CG_MSRV_TIMEOUT_MS. */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "http1.h"
#include "sock.h"

#define CG_MSRV_HEAD_MAX 8192   /* longest request head read */
#define CG_MSRV_FIELDS 64       /* most fields in it */
#define CG_MSRV_TIMEOUT_MS 5000 /* a connection's whole life: read, answer */
#define CG_MSRV_BACKLOG 64

struct cg_metrics_server {
    const cg_metrics_region *r;
    int lfd;
    int wake[2]; /* a byte (or EOF) on wake[0] stops the thread */
    pthread_t thread;
};

/* Milliseconds left until `deadline` (monotonic seconds), at least 0. */
static int ms_left(double deadline)
{
    double ms = (deadline - cg_monotonic_now()) * 1000.0;
    return ms <= 0 ? 0 : (int)ms + 1;
}

/* Waits for `events` on fd, or input on `wake` (>= 0). 1 ready, 0 timed out
 * or woken. */
static int wait_fd(int fd, short events, int wake, double deadline)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = wake, .events = POLLIN}};
        int n = poll(p, wake >= 0 ? 2 : 1, ms_left(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (wake >= 0 && p[1].revents))
            return 0;
        return 1;
    }
}

static void send_all(int fd, const char *p, size_t n, int wake, double deadline)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, wake, deadline))
            continue;
        if (k <= 0)
            return;
        p += k;
        n -= (size_t)k;
    }
}

static int slice_is(cg_slice s, const char *text)
{
    size_t n = strlen(text);
    return s.len == n && memcmp(s.base, text, n) == 0;
}

/* The answer to one request head (rc: its length, or a negated status). */
static void answer(const cg_metrics_region *r, int fd, long rc, const cg_http1_request *req,
                   int wake, double deadline)
{
    static const char text_type[] = "text/plain; charset=utf-8";
    static const char prom_type[] = "text/plain; version=0.0.4; charset=utf-8";
    int status = 200, head_only = 0;
    const char *type = prom_type, *extra = "";
    cg_buf body, out;
    cg_metrics_snapshot snap;

    cg_buf_init(&body);
    cg_buf_init(&out);
    if (rc < 0) {
        status = (int)-rc;
    } else if (!slice_is(req->method, "GET") && !slice_is(req->method, "HEAD")) {
        status = 405;
        extra = "allow: GET, HEAD\r\n";
    } else if (!slice_is(req->path, "/metrics")) {
        status = 404;
    } else {
        head_only = slice_is(req->method, "HEAD");
        cg_metrics_read(r, &snap);
        if (cg_metrics_render(&snap, &body) < 0)
            status = 500;
    }
    if (status != 200) {
        const char *reason = cg_http1_reason(status);
        type = text_type;
        cg_buf_reset(&body);
        if (cg_buf_append(&body, reason, strlen(reason)) < 0 || cg_buf_append(&body, "\n", 1) < 0)
            goto out;
    }
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s"
                     "connection: close\r\n\r\n",
                     status, cg_http1_reason(status), type, body.len, extra);
    if (n < 0 || (size_t)n >= sizeof(head) || cg_buf_append(&out, head, (size_t)n) < 0 ||
        (!head_only && cg_buf_append(&out, body.data, body.len) < 0))
        goto out;
    send_all(fd, out.data, out.len, wake, deadline);
out:
    cg_buf_free(&body);
    cg_buf_free(&out);
}

static void serve_conn(const cg_metrics_region *r, int fd, int timeout_ms, int wake)
{
    char buf[CG_MSRV_HEAD_MAX];
    cg_http1_header hdrs[CG_MSRV_FIELDS];
    cg_http1_limits lim = {CG_MSRV_HEAD_MAX, CG_MSRV_HEAD_MAX, CG_MSRV_FIELDS};
    cg_http1_parser parser;
    cg_http1_request req;
    double deadline = cg_monotonic_now() + timeout_ms / 1000.0;
    size_t len = 0;
    long rc = CG_HTTP1_INCOMPLETE;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    cg_http1_parser_init(&parser);
    memset(&req, 0, sizeof(req));
    req.headers = hdrs;
    while (rc == CG_HTTP1_INCOMPLETE) {
        if (len == sizeof(buf)) {
            rc = -431;
            break;
        }
        ssize_t k = recv(fd, buf + len, sizeof(buf) - len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN) {
            if (!wait_fd(fd, POLLIN, wake, deadline))
                goto done; /* too slow, or the server stops: no answer */
            continue;
        }
        if (k <= 0)
            goto done; /* closed before a whole head */
        len += (size_t)k;
        rc = cg_http1_parse_head(&parser, buf, len, &lim, &req);
    }
    answer(r, fd, rc, &req, wake, deadline);
    /* Whatever else the client sent is dropped; the FIN follows the answer. */
    shutdown(fd, SHUT_WR);
done:
    close(fd);
}

void cg_metrics_serve_conn(const cg_metrics_region *r, int fd, int timeout_ms)
{
    serve_conn(r, fd, timeout_ms, -1);
}

static void *server_main(void *arg)
{
    cg_metrics_server *srv = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = srv->lfd, .events = POLLIN},
                              {.fd = srv->wake[0], .events = POLLIN}};
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[1].revents)
            break;
        /* Bounded work per wakeup; the backlog keeps the rest. */
        for (int i = 0; i < 16; i++) {
            int fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0)
                break; /* EAGAIN, or a transient error (EMFILE): poll again */
            serve_conn(srv->r, fd, CG_MSRV_TIMEOUT_MS, srv->wake[0]);
        }
    }
    return NULL;
}

cg_metrics_server *cg_metrics_server_start(const cg_metrics_region *r, const char *host, int port,
                                           char *url, size_t urllen, char *err, size_t errlen)
{
    cg_metrics_server *srv = calloc(1, sizeof(*srv));
    sigset_t all, old;
    int rc;

    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->r = r;
    srv->wake[0] = srv->wake[1] = -1;
    srv->lfd = cg_listen_tcp(host, port, CG_MSRV_BACKLOG, err, errlen);
    if (srv->lfd < 0)
        goto fail;
    if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "[Errno %d] %s", errno, strerror(errno));
        goto fail;
    }
    if (cg_sock_url(srv->lfd, "http", url, urllen) == 0 &&
        strlen(url) + sizeof("/metrics") <= urllen)
        strcat(url, "/metrics");
    /* Every signal stays with the other threads: the thread starts with all
     * blocked (a supervisor reads them from a signalfd, which only works when
     * no thread would take them). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&srv->thread, NULL, server_main, srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the metrics thread: [Errno %d] %s", rc, strerror(rc));
        goto fail;
    }
    return srv;

fail:
    if (srv->lfd >= 0)
        close(srv->lfd);
    if (srv->wake[0] >= 0) {
        close(srv->wake[0]);
        close(srv->wake[1]);
    }
    free(srv);
    return NULL;
}

void cg_metrics_server_stop(cg_metrics_server *srv)
{
    if (!srv)
        return;
    close(srv->wake[1]); /* EOF wakes the thread wherever it waits */
    pthread_join(srv->thread, NULL);
    close(srv->wake[0]);
    close(srv->lfd);
    free(srv);
}
