/* WebSocket echo load client for bench/ws_bench.py.
 *
 *   ws_client echo HOST PORT PATH CONNS SIZE DURATION WARMUP [text|binary]
 *   ws_client idle HOST PORT PATH CONNS HOLD
 *
 * echo: CONNS non-blocking connections on one epoll loop. Each performs the
 * opening handshake, then sends one masked message of SIZE bytes, waits for
 * the complete echo (pings are answered with pongs), and sends the next.
 * After WARMUP seconds the counters reset and "START" is printed; after
 * DURATION more seconds "END" is printed, the client sleeps 0.5 s (so a CPU
 * sample taken right after END covers the window only) and prints one line:
 *   conns=.. size=.. seconds=.. messages=.. msgs_per_sec=.. p50_us=.. p99_us=..
 *   max_us=.. errors=..
 * Latency: a 1 us histogram up to 1 s (overflow counted as 1 s).
 *
 * idle: opens CONNS WebSockets, prints "READY n" once all handshakes are done,
 * then holds them for HOLD seconds (answering pings) and exits.
 *
 * Build: cc -O2 -o ws_client ws_client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 1000000

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_DEAD };

typedef struct conn {
    int fd;
    int state;
    /* output */
    unsigned char *out; /* pending bytes to write */
    size_t out_len, out_off;
    int out_is_msg; /* the pending write is the message frame (timestamp on start) */
    /* input */
    char head[4096];
    size_t head_len;
    unsigned char fh[14]; /* frame header being read */
    size_t fh_len, fh_need;
    uint64_t payload_left;
    int opcode, fin;
    unsigned char ctl[125]; /* control frame payload */
    size_t ctl_len;
    uint64_t msg_bytes; /* data bytes of the message being received */
    double sent_at;
    unsigned char pong[131];
    size_t pong_len;
} conn;

static int g_ep;
static conn *g_conns;
static int g_nconns;
static size_t g_size;
static int g_text = 0;
static unsigned char *g_frame;
static size_t g_frame_len;
static char g_req[1024];
static size_t g_req_len;
static int g_measuring = 0;
static uint64_t g_messages = 0, g_errors = 0, g_open = 0;
static uint32_t *g_hist;
static uint64_t g_hist_over = 0;
static double g_max_us = 0;
static int g_idle_mode = 0;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m)
{
    perror(m);
    exit(2);
}

static void build_frame(void)
{
    /* one masked frame reused for every message: FIN + opcode, mask key, payload */
    size_t hl = 2 + (g_size <= 125 ? 0 : g_size <= 0xFFFF ? 2 : 8) + 4;
    g_frame = malloc(hl + g_size);
    if (!g_frame)
        die("malloc");
    unsigned char *p = g_frame;
    *p++ = 0x80 | (g_text ? 0x1 : 0x2);
    if (g_size <= 125) {
        *p++ = 0x80 | (unsigned char)g_size;
    } else if (g_size <= 0xFFFF) {
        *p++ = 0x80 | 126;
        *p++ = (unsigned char)(g_size >> 8);
        *p++ = (unsigned char)g_size;
    } else {
        *p++ = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            *p++ = (unsigned char)((uint64_t)g_size >> (8 * i));
    }
    unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(p, key, 4);
    p += 4;
    for (size_t i = 0; i < g_size; i++)
        p[i] = (unsigned char)('a' + i % 26) ^ key[i & 3];
    g_frame_len = hl + g_size;
}

static void conn_close(conn *c)
{
    if (c->state == ST_DEAD)
        return;
    if (c->state == ST_OPEN && g_open)
        g_open--;
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_DEAD;
    g_errors++;
}

static void want_write(conn *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is pending; 0 when all written, 1 when blocked, -1 on error. */
static int flush_out(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                want_write(c, 1);
                return 1;
            }
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return 0;
}

static void send_message(conn *c)
{
    if (g_idle_mode)
        return;
    c->out = g_frame;
    c->out_len = g_frame_len;
    c->out_off = 0;
    c->sent_at = now();
    c->msg_bytes = 0;
    int r = flush_out(c);
    if (r < 0)
        conn_close(c);
}

static void send_pong(conn *c, const unsigned char *data, size_t len)
{
    /* a pong is written synchronously (tiny); if the socket is blocked by a
     * partial message write, it is dropped (the server's keepalive is long) */
    if (c->out_len)
        return;
    unsigned char *p = c->pong;
    *p++ = 0x8A;
    *p++ = 0x80 | (unsigned char)len;
    memset(p, 0, 4);
    p += 4;
    memcpy(p, data, len);
    c->pong_len = 6 + len;
    c->out = c->pong;
    c->out_len = c->pong_len;
    c->out_off = 0;
    if (flush_out(c) < 0)
        conn_close(c);
}

static void message_done(conn *c)
{
    if (g_measuring) {
        double us = (now() - c->sent_at) * 1e6;
        if (us > g_max_us)
            g_max_us = us;
        if (us >= HIST_US)
            g_hist_over++;
        else
            g_hist[(size_t)us]++;
        g_messages++;
    }
    send_message(c);
}

/* Consumes frames from buf. */
static void on_frames(conn *c, const unsigned char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && c->state == ST_OPEN) {
        if (c->fh_len < c->fh_need || c->fh_need == 0) {
            if (c->fh_need == 0)
                c->fh_need = 2;
            while (c->fh_len < c->fh_need && i < len) {
                c->fh[c->fh_len++] = buf[i++];
                if (c->fh_len == 2) {
                    int l7 = c->fh[1] & 0x7f;
                    c->fh_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
                }
            }
            if (c->fh_len < c->fh_need)
                return;
            c->fin = c->fh[0] >> 7;
            c->opcode = c->fh[0] & 0xf;
            int l7 = c->fh[1] & 0x7f;
            uint64_t n = (uint64_t)l7;
            if (l7 == 126)
                n = ((uint64_t)c->fh[2] << 8) | c->fh[3];
            else if (l7 == 127) {
                n = 0;
                for (int k = 0; k < 8; k++)
                    n = (n << 8) | c->fh[2 + k];
            }
            c->payload_left = n;
            c->ctl_len = 0;
            if (c->opcode >= 8 && n > 125) {
                conn_close(c);
                return;
            }
            if (c->opcode == 0x8) { /* close: the run is over for this connection */
                conn_close(c);
                return;
            }
        }
        size_t take =
            (size_t)((uint64_t)(len - i) < c->payload_left ? (uint64_t)(len - i) : c->payload_left);
        if (c->opcode >= 8) {
            memcpy(c->ctl + c->ctl_len, buf + i, take);
            c->ctl_len += take;
        } else {
            c->msg_bytes += take;
        }
        i += take;
        c->payload_left -= take;
        if (c->payload_left == 0) {
            int op = c->opcode, fin = c->fin;
            c->fh_len = 0;
            c->fh_need = 0;
            if (op == 0x9)
                send_pong(c, c->ctl, c->ctl_len);
            else if (op < 8 && fin) {
                if (c->msg_bytes != g_size) {
                    fprintf(stderr, "echo of %llu bytes, expected %zu\n",
                            (unsigned long long)c->msg_bytes, g_size);
                    conn_close(c);
                    return;
                }
                message_done(c);
            }
        }
    }
}

static void on_handshake(conn *c, const char *buf, size_t len)
{
    size_t room = sizeof(c->head) - 1 - c->head_len;
    size_t take = len < room ? len : room;
    memcpy(c->head + c->head_len, buf, take);
    c->head_len += take;
    c->head[c->head_len] = 0;
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len >= sizeof(c->head) - 1)
            conn_close(c);
        return;
    }
    if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "handshake failed: %.*s\n", (int)(strchr(c->head, '\r') - c->head),
                c->head);
        conn_close(c);
        return;
    }
    c->state = ST_OPEN;
    g_open++;
    size_t head_bytes = (size_t)(end + 4 - c->head);
    size_t extra_from_this = head_bytes < c->head_len ? c->head_len - head_bytes : 0;
    send_message(c);
    if (extra_from_this)
        on_frames(c, (const unsigned char *)buf + (take - extra_from_this), extra_from_this);
}

static void on_readable(conn *c)
{
    static unsigned char buf[1 << 18];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            conn_close(c);
            return;
        }
        if (n == 0) {
            conn_close(c);
            return;
        }
        if (c->state == ST_HANDSHAKE)
            on_handshake(c, (const char *)buf, (size_t)n);
        else if (c->state == ST_OPEN)
            on_frames(c, buf, (size_t)n);
        if (c->state == ST_DEAD || (size_t)n < sizeof buf)
            return;
    }
}

static void on_writable(conn *c)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            errno = err;
            conn_close(c);
            return;
        }
        c->state = ST_HANDSHAKE;
        c->out = (unsigned char *)g_req;
        c->out_len = g_req_len;
        c->out_off = 0;
    }
    int r = flush_out(c);
    if (r < 0)
        conn_close(c);
    else if (r == 0)
        want_write(c, 0);
}

static void open_conn(conn *c, struct sockaddr_in *sa)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)sa, sizeof *sa) < 0 && errno != EINPROGRESS)
        die("connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void run_until(double deadline)
{
    struct epoll_event evs[256];
    for (;;) {
        double left = deadline - now();
        if (left <= 0)
            return;
        int ms = (int)(left * 1000) + 1;
        int n = epoll_wait(g_ep, evs, 256, ms > 100 ? 100 : ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->state == ST_DEAD)
                continue;
            if (evs[i].events & (EPOLLOUT))
                on_writable(c);
            if (c->state != ST_DEAD && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_readable(c);
        }
    }
}

static double percentile(double q, uint64_t total)
{
    if (!total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total)
        want = total - 1;
    uint64_t seen = 0;
    for (size_t us = 0; us < HIST_US; us++) {
        seen += g_hist[us];
        if (seen > want)
            return (double)us;
    }
    return HIST_US;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ws_client echo HOST PORT PATH CONNS SIZE DURATION WARMUP [text|binary]\n"
            "       ws_client idle HOST PORT PATH CONNS HOLD\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 7)
        usage();
    const char *mode = argv[1];
    const char *host = argv[2];
    int port = atoi(argv[3]);
    const char *path = argv[4];
    g_nconns = atoi(argv[5]);
    double duration = 0, warmup = 0, hold = 0;
    if (!strcmp(mode, "echo")) {
        if (argc < 9)
            usage();
        g_size = (size_t)atol(argv[6]);
        duration = atof(argv[7]);
        warmup = atof(argv[8]);
        g_text = argc > 9 && !strcmp(argv[9], "text");
    } else if (!strcmp(mode, "idle")) {
        g_idle_mode = 1;
        hold = atof(argv[6]);
    } else {
        usage();
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g_nconns + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)g_nconns + 64 ? rl.rlim_max : (rlim_t)g_nconns + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address\n");
        return 2;
    }
    g_req_len =
        (size_t)snprintf(g_req, sizeof g_req,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         path, host, port);
    if (!g_idle_mode)
        build_frame();
    g_hist = calloc(HIST_US, sizeof *g_hist);
    g_conns = calloc((size_t)g_nconns, sizeof *g_conns);
    g_ep = epoll_create1(0);
    if (!g_hist || !g_conns || g_ep < 0)
        die("setup");
    for (int i = 0; i < g_nconns; i++)
        open_conn(&g_conns[i], &sa);

    /* wait for every handshake (bounded) */
    double t_hs = now();
    while (g_open + g_errors < (uint64_t)g_nconns && now() - t_hs < 30)
        run_until(now() + 0.05);
    if (g_open < (uint64_t)g_nconns) {
        fprintf(stderr, "only %llu of %d connections opened\n", (unsigned long long)g_open,
                g_nconns);
        return 1;
    }

    if (g_idle_mode) {
        printf("READY %llu\n", (unsigned long long)g_open);
        fflush(stdout);
        run_until(now() + hold);
        return 0;
    }

    run_until(now() + warmup);
    memset(g_hist, 0, HIST_US * sizeof *g_hist);
    g_messages = g_hist_over = 0;
    g_max_us = 0;
    uint64_t errors_before = g_errors;
    printf("START\n");
    fflush(stdout);
    g_measuring = 1;
    double t0 = now();
    run_until(t0 + duration);
    double elapsed = now() - t0;
    g_measuring = 0;
    printf("END\n");
    fflush(stdout);
    usleep(500000);
    uint64_t total = g_messages;
    printf("conns=%d size=%zu seconds=%.3f messages=%llu msgs_per_sec=%.0f p50_us=%.0f p99_us=%.0f "
           "max_us=%.0f errors=%llu\n",
           g_nconns, g_size, elapsed, (unsigned long long)total, total / elapsed,
           percentile(0.50, total), percentile(0.99, total), g_max_us,
           (unsigned long long)(g_errors - errors_before));
    fflush(stdout);
    return 0;
}
