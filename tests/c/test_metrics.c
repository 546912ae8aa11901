/* Unit tests of the metrics core: counting, slot reuse (the aggregate never
 * goes backwards), attaching a worker to the region, the text exposition
 * (golden output) and the exposition server's request handling. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "tap.h"

static const char golden[] =
    "# HELP casgi_requests_total Requests answered, by protocol and status class (WebSocket: "
    "the handshake).\n"
    "# TYPE casgi_requests_total counter\n"
    "casgi_requests_total{protocol=\"http/1.0\",status=\"1xx\"} 0\n"
    "casgi_requests_total{protocol=\"http/1.0\",status=\"2xx\"} 1\n"
    "casgi_requests_total{protocol=\"http/1.0\",status=\"3xx\"} 0\n"
    "casgi_requests_total{protocol=\"http/1.0\",status=\"4xx\"} 0\n"
    "casgi_requests_total{protocol=\"http/1.0\",status=\"5xx\"} 0\n"
    "casgi_requests_total{protocol=\"http/1.1\",status=\"1xx\"} 0\n"
    "casgi_requests_total{protocol=\"http/1.1\",status=\"2xx\"} 2\n"
    "casgi_requests_total{protocol=\"http/1.1\",status=\"3xx\"} 0\n"
    "casgi_requests_total{protocol=\"http/1.1\",status=\"4xx\"} 1\n"
    "casgi_requests_total{protocol=\"http/1.1\",status=\"5xx\"} 1\n"
    "casgi_requests_total{protocol=\"h2\",status=\"1xx\"} 0\n"
    "casgi_requests_total{protocol=\"h2\",status=\"2xx\"} 1\n"
    "casgi_requests_total{protocol=\"h2\",status=\"3xx\"} 0\n"
    "casgi_requests_total{protocol=\"h2\",status=\"4xx\"} 0\n"
    "casgi_requests_total{protocol=\"h2\",status=\"5xx\"} 0\n"
    "casgi_requests_total{protocol=\"websocket\",status=\"1xx\"} 1\n"
    "casgi_requests_total{protocol=\"websocket\",status=\"2xx\"} 0\n"
    "casgi_requests_total{protocol=\"websocket\",status=\"3xx\"} 0\n"
    "casgi_requests_total{protocol=\"websocket\",status=\"4xx\"} 0\n"
    "casgi_requests_total{protocol=\"websocket\",status=\"5xx\"} 0\n"
    "# HELP casgi_request_duration_seconds Time from a request's complete head to the end of "
    "its response.\n"
    "# TYPE casgi_request_duration_seconds histogram\n"
    "casgi_request_duration_seconds_bucket{le=\"0.005\"} 2\n"
    "casgi_request_duration_seconds_bucket{le=\"0.01\"} 3\n"
    "casgi_request_duration_seconds_bucket{le=\"0.025\"} 3\n"
    "casgi_request_duration_seconds_bucket{le=\"0.05\"} 3\n"
    "casgi_request_duration_seconds_bucket{le=\"0.1\"} 3\n"
    "casgi_request_duration_seconds_bucket{le=\"0.25\"} 3\n"
    "casgi_request_duration_seconds_bucket{le=\"0.5\"} 4\n"
    "casgi_request_duration_seconds_bucket{le=\"1.0\"} 4\n"
    "casgi_request_duration_seconds_bucket{le=\"2.5\"} 4\n"
    "casgi_request_duration_seconds_bucket{le=\"5.0\"} 5\n"
    "casgi_request_duration_seconds_bucket{le=\"10.0\"} 5\n"
    "casgi_request_duration_seconds_bucket{le=\"+Inf\"} 6\n"
    "casgi_request_duration_seconds_sum 15.516000001\n"
    "casgi_request_duration_seconds_count 6\n"
    "# HELP casgi_requests_active Requests in progress (HTTP requests, HTTP/2 streams and "
    "WebSocket sessions whose app runs).\n"
    "# TYPE casgi_requests_active gauge\n"
    "casgi_requests_active 2\n"
    "# HELP casgi_connections_total Connections accepted.\n"
    "# TYPE casgi_connections_total counter\n"
    "casgi_connections_total 7\n"
    "# HELP casgi_connections_open Connections open.\n"
    "# TYPE casgi_connections_open gauge\n"
    "casgi_connections_open 3\n"
    "# HELP casgi_received_bytes_total Bytes received on client connections (TLS: as "
    "encrypted).\n"
    "# TYPE casgi_received_bytes_total counter\n"
    "casgi_received_bytes_total 1000\n"
    "# HELP casgi_sent_bytes_total Bytes written to client connections (TLS: as encrypted).\n"
    "# TYPE casgi_sent_bytes_total counter\n"
    "casgi_sent_bytes_total 2000\n"
    "# HELP casgi_websocket_sessions_total WebSocket sessions accepted.\n"
    "# TYPE casgi_websocket_sessions_total counter\n"
    "casgi_websocket_sessions_total 1\n"
    "# HELP casgi_websocket_sessions_active WebSocket sessions open.\n"
    "# TYPE casgi_websocket_sessions_active gauge\n"
    "casgi_websocket_sessions_active 1\n"
    "# HELP casgi_tls_handshakes_total TLS handshakes completed.\n"
    "# TYPE casgi_tls_handshakes_total counter\n"
    "casgi_tls_handshakes_total 4\n"
    "# HELP casgi_tls_handshake_failures_total TLS handshakes that failed or timed out.\n"
    "# TYPE casgi_tls_handshake_failures_total counter\n"
    "casgi_tls_handshake_failures_total 1\n"
    "# HELP casgi_rejections_total Requests the server refused before an app saw them, by "
    "status.\n"
    "# TYPE casgi_rejections_total counter\n"
    "casgi_rejections_total{status=\"400\"} 2\n"
    "casgi_rejections_total{status=\"408\"} 0\n"
    "casgi_rejections_total{status=\"413\"} 0\n"
    "casgi_rejections_total{status=\"414\"} 0\n"
    "casgi_rejections_total{status=\"417\"} 0\n"
    "casgi_rejections_total{status=\"426\"} 0\n"
    "casgi_rejections_total{status=\"431\"} 1\n"
    "casgi_rejections_total{status=\"501\"} 0\n"
    "casgi_rejections_total{status=\"505\"} 0\n"
    "casgi_rejections_total{status=\"other\"} 1\n"
    "# HELP casgi_worker_restarts_total Worker processes replaced by the supervisor, by cause.\n"
    "# TYPE casgi_worker_restarts_total counter\n"
    "casgi_worker_restarts_total{cause=\"crash\"} 1\n"
    "casgi_worker_restarts_total{cause=\"healthcheck\"} 0\n"
    "casgi_worker_restarts_total{cause=\"max_requests\"} 0\n"
    "casgi_worker_restarts_total{cause=\"reload\"} 2\n"
    "casgi_worker_restarts_total{cause=\"startup_timeout\"} 0\n"
    "# HELP casgi_workers Worker processes counting (the single process: 1).\n"
    "# TYPE casgi_workers gauge\n"
    "casgi_workers 2\n";

/* Fills two worker slots with known events. */
static void fill(cg_metrics_region *r, int a, int b)
{
    cg_metrics_slot *s = &r->slots[a], *t = &r->slots[b];
    cg_metrics_request(s, CG_MP_HTTP10, 200, 1000000);       /* 1 ms */
    cg_metrics_request(s, CG_MP_HTTP11, 204, 5000000);       /* exactly 5 ms: le 0.005 */
    cg_metrics_request(t, CG_MP_HTTP11, 200, 5000001);       /* just above: le 0.01 */
    cg_metrics_request(t, CG_MP_HTTP11, 404, 300000000);     /* le 0.5 */
    cg_metrics_request(t, CG_MP_H2, 200, 4000000000);        /* le 5.0 */
    cg_metrics_request(s, CG_MP_HTTP11, 503, 11205000000LL); /* above 10 s */
    cg_metrics_request(s, CG_MP_WEBSOCKET, 101, -1);         /* not timed */
    cg_metrics_reject(s, 400);
    cg_metrics_reject(t, 400);
    cg_metrics_reject(t, 431);
    cg_metrics_reject(t, 499); /* other */
    cg_mc_add(&s->c.connections, 4);
    cg_mc_add(&t->c.connections, 3);
    cg_mg_add(&s->g.connections_open, 2);
    cg_mg_add(&t->g.connections_open, 1);
    cg_mg_set(&t->g.requests_active, 2);
    cg_mc_add(&s->c.bytes_received, 600);
    cg_mc_add(&t->c.bytes_received, 400);
    cg_mc_add(&s->c.bytes_sent, 2000);
    cg_mc_add(&s->c.ws_sessions, 1);
    cg_mg_add(&s->g.ws_active, 1);
    cg_mc_add(&s->c.tls_handshakes, 3);
    cg_mc_add(&t->c.tls_handshakes, 1);
    cg_mc_add(&t->c.tls_failures, 1);
    cg_metrics_restart(r, CG_MCAUSE_CRASH);
    cg_metrics_restart(r, CG_MCAUSE_RELOAD);
    cg_metrics_restart(r, CG_MCAUSE_RELOAD);
}

static int render(const cg_metrics_region *r, cg_buf *out)
{
    cg_metrics_snapshot snap;
    cg_buf_reset(out);
    cg_metrics_read(r, &snap);
    return cg_metrics_render(&snap, out);
}

static int same_text(const cg_buf *b, const char *want)
{
    if (b->len == strlen(want) && memcmp(b->data, want, b->len) == 0)
        return 1;
    /* Shows the first difference. */
    size_t i = 0;
    while (i < b->len && want[i] && b->data[i] == want[i])
        i++;
    printf("# differs at byte %zu: got \"", i);
    for (size_t k = i; k < b->len && k < i + 60; k++)
        printf(b->data[k] == '\n' ? "\\n" : "%c", b->data[k]);
    printf("\"\n");
    return 0;
}

static void test_golden(void)
{
    cg_metrics m;
    cg_buf out;
    cg_buf_init(&out);
    ok(cg_metrics_create(&m, 4) == 0 && m.r && m.fd >= 0, "region created");
    ok(cg_metrics_slot_take(m.r, 100) == 0 && cg_metrics_slot_take(m.r, 101) == 1, "two slots");
    fill(m.r, 0, 1);
    ok(render(m.r, &out) == 0, "rendered");
    ok(same_text(&out, golden), "the exposition is the golden text");
    cg_buf_free(&out);
    cg_metrics_close(&m);
    ok(m.r == NULL && m.fd == -1, "closed");
}

/* A replaced worker's counters stay in the aggregate, its gauges go, and its
 * slot is reused zeroed. */
static void test_release_folds(void)
{
    cg_metrics m;
    cg_metrics_snapshot a, b;
    ok(cg_metrics_create(&m, 2) == 0, "region of two slots");
    int i = cg_metrics_slot_take(m.r, 10), j = cg_metrics_slot_take(m.r, 11);
    ok(i == 0 && j == 1 && cg_metrics_slot_take(m.r, 12) == -1, "no third slot");
    fill(m.r, i, j);
    cg_metrics_read(m.r, &a);
    cg_metrics_slot_release(m.r, i);
    cg_metrics_read(m.r, &b);
    ok(b.workers == 1 && a.workers == 2, "one worker left");
    ok(!memcmp(a.requests, b.requests, sizeof(a.requests)) &&
           !memcmp(a.duration_bucket, b.duration_bucket, sizeof(a.duration_bucket)) &&
           a.duration_ns == b.duration_ns && a.connections == b.connections &&
           a.bytes_received == b.bytes_received && a.bytes_sent == b.bytes_sent &&
           !memcmp(a.rejections, b.rejections, sizeof(a.rejections)) &&
           a.tls_handshakes == b.tls_handshakes && a.ws_sessions == b.ws_sessions,
       "counters unchanged by the release");
    ok(b.connections_open == 1 && b.ws_active == 0 && b.requests_active == 2,
       "the gone worker's gauges are dropped");
    ok(cg_metrics_slot_take(m.r, 13) == i, "the slot is reused");
    const cg_metrics_counters *c = &m.r->slots[i].c;
    int zero = 1;
    for (size_t k = 0; k < sizeof(*c) / sizeof(cg_mcounter); k++)
        zero &= ((const cg_mcounter *)c)[k] == 0;
    ok(zero && m.r->slots[i].g.connections_open == 0, "zeroed");
    cg_metrics_request(&m.r->slots[i], CG_MP_HTTP11, 200, 0);
    cg_metrics_read(m.r, &a);
    ok(a.requests[CG_MP_HTTP11][1] == b.requests[CG_MP_HTTP11][1] + 1, "and counts on top");
    ok(m.r->seq == 2, "one fold: the sequence moved by two");
    cg_metrics_slot_release(m.r, 7); /* out of range: ignored */
    cg_metrics_slot_release(m.r, -1);
    ok(m.r->seq == 2, "out of range releases are ignored");
    cg_metrics_close(&m);
}

static void test_classes(void)
{
    cg_metrics m;
    ok(cg_metrics_create(&m, 1) == 0, "region");
    cg_metrics_slot *s = &m.r->slots[0];
    cg_metrics_request(s, CG_MP_HTTP11, 99, -1);  /* below 1xx: 1xx */
    cg_metrics_request(s, CG_MP_HTTP11, 650, -1); /* above: 5xx */
    cg_metrics_request(s, 42, 302, -1);           /* unknown protocol: http/1.1 */
    ok(s->c.requests[CG_MP_HTTP11][0] == 1 && s->c.requests[CG_MP_HTTP11][4] == 1 &&
           s->c.requests[CG_MP_HTTP11][2] == 1,
       "statuses out of range are clamped");
    ok(s->c.duration_bucket[0] == 0 && s->c.duration_ns == 0, "untimed: no histogram");
    for (int i = 0; i < CG_MREJECT_N; i++)
        ok(cg_metrics_reject_label(i) != NULL, "label %d", i);
    ok(cg_metrics_reject_label(CG_MREJECT_N) == NULL, "no label past the end");
    cg_metrics_close(&m);
}

/* A worker maps the region by "<fd>:<slot>" and writes its slot. */
static void test_attach(void)
{
    cg_metrics m, w;
    char spec[64], err[256];
    ok(cg_metrics_create(&m, 3) == 0, "region");
    int fd = dup(m.fd);
    snprintf(spec, sizeof(spec), "%d:%d", fd, 2);
    cg_metrics_slot *s = cg_metrics_attach(&w, spec, err, sizeof(err));
    ok(s != NULL, "attached");
    if (s) {
        cg_mc_add(&s->c.bytes_sent, 5);
        ok(m.r->slots[2].c.bytes_sent == 5, "the writes are shared");
        ok(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "the inherited fd is closed");
        cg_metrics_close(&w);
    }
    fd = dup(m.fd);
    snprintf(spec, sizeof(spec), "%d:%d", fd, 3);
    ok(cg_metrics_attach(&w, spec, err, sizeof(err)) == NULL && strstr(err, "out of range"),
       "a slot out of range: %s", err);
    ok(cg_metrics_attach(&w, "x", err, sizeof(err)) == NULL && strstr(err, "invalid"),
       "a malformed value: %s", err);
    ok(cg_metrics_attach(&w, "999:0", err, sizeof(err)) == NULL && strstr(err, "Errno"),
       "a closed fd: %s", err);
    int p[2];
    ok(pipe(p) == 0, "pipe");
    snprintf(spec, sizeof(spec), "%d:0", p[0]);
    ok(cg_metrics_attach(&w, spec, err, sizeof(err)) == NULL, "not a region: %s", err);
    close(p[1]);
    cg_metrics_close(&m);
}

/* One request through a socket pair; the answer as text. */
static void exchange(const cg_metrics_region *r, const char *req, size_t len, char *out,
                     size_t outlen, int timeout_ms)
{
    int sv[2];
    size_t n = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        out[0] = '\0';
        return;
    }
    if (len)
        (void)!write(sv[0], req, len);
    cg_metrics_serve_conn(r, sv[1], timeout_ms);
    for (;;) {
        ssize_t k = read(sv[0], out + n, outlen - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    out[n] = '\0';
    close(sv[0]);
}

static void test_serve(void)
{
    static char out[16384];
    cg_metrics m;
    cg_buf body;
    cg_buf_init(&body);
    ok(cg_metrics_create(&m, 2) == 0, "region");
    cg_metrics_slot_take(m.r, 1);
    fill(m.r, 0, 1);
    render(m.r, &body);

    const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
    exchange(m.r, get, strlen(get), out, sizeof(out), 1000);
    char head[256];
    snprintf(head, sizeof(head),
             "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"
             "content-length: %zu\r\nconnection: close\r\n\r\n",
             body.len);
    ok(!strncmp(out, head, strlen(head)), "GET /metrics: 200 with the exposition's type");
    ok(strlen(out) == strlen(head) + body.len && !memcmp(out + strlen(head), body.data, body.len),
       "the body is the exposition");

    const char query[] = "GET /metrics?x=1 HTTP/1.0\r\n\r\n";
    exchange(m.r, query, strlen(query), out, sizeof(out), 1000);
    ok(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17), "a query is ignored, HTTP/1.0 served");

    const char headreq[] = "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    exchange(m.r, headreq, strlen(headreq), out, sizeof(out), 1000);
    ok(!strncmp(out, head, strlen(head)) && strlen(out) == strlen(head), "HEAD: the head only");

    const char other[] = "GET /other HTTP/1.1\r\nHost: x\r\n\r\n";
    exchange(m.r, other, strlen(other), out, sizeof(out), 1000);
    ok(!strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24) && strstr(out, "\r\n\r\nNot Found\n"),
       "another path: 404");

    const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    exchange(m.r, post, strlen(post), out, sizeof(out), 1000);
    ok(!strncmp(out, "HTTP/1.1 405 ", 13) && strstr(out, "allow: GET, HEAD\r\n"),
       "another method: 405");

    const char bad[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nBad Field: y\r\n\r\n";
    exchange(m.r, bad, strlen(bad), out, sizeof(out), 1000);
    ok(!strncmp(out, "HTTP/1.1 400 ", 13), "a malformed head: 400");

    static char big[9000];
    memcpy(big, "GET /metrics HTTP/1.1\r\nX-Long: ", 31);
    memset(big + 31, 'a', sizeof(big) - 31);
    exchange(m.r, big, sizeof(big), out, sizeof(out), 1000);
    ok(!strncmp(out, "HTTP/1.1 431 ", 13), "a head too long: 431");

    const char part[] = "GET /metrics HTTP/1.1\r\n";
    exchange(m.r, part, strlen(part), out, sizeof(out), 100);
    ok(out[0] == '\0', "an incomplete head: closed without an answer after the timeout");

    cg_buf_free(&body);
    cg_metrics_close(&m);
}

/* The thread: a real TCP socket, stopped cleanly; a port in use is an error. */
static void test_server_thread(void)
{
    cg_metrics m;
    char url[128], err[256];
    ok(cg_metrics_create(&m, 1) == 0, "region");
    cg_metrics_server *srv =
        cg_metrics_server_start(m.r, "127.0.0.1", 0, url, sizeof(url), err, sizeof(err));
    ok(srv != NULL, "started: %s", srv ? url : err);
    if (!srv) {
        cg_metrics_close(&m);
        return;
    }
    ok(!strncmp(url, "http://127.0.0.1:", 17) && strstr(url, "/metrics"), "its URL: %s", url);
    int port = atoi(url + 17);
    cg_metrics_server *again =
        cg_metrics_server_start(m.r, "127.0.0.1", port, url, sizeof(url), err, sizeof(err));
    ok(!again && strstr(err, "Address already in use"), "the same port again: %s", err);
    cg_metrics_server_stop(again);
    cg_metrics_server_stop(srv);
    ok(1, "stopped");
    cg_metrics_close(&m);
}

int main(void)
{
    test_golden();
    test_release_folds();
    test_classes();
    test_attach();
    test_serve();
    test_server_thread();
    return tap_done();
}
