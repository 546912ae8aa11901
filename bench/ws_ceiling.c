/* A WebSocket echo server with no Python and no framework: the ceiling a
 * server can reach on this machine in bench/ws_bench.py's echo scenarios.
 *
 *     cc -O2 -o ws_ceiling bench/ws_ceiling.c && ./ws_ceiling --port PORT
 *
 * One thread, level-triggered epoll, one read and one write per wake-up, the
 * same work per message any server must do (read, unmask, frame, write) and
 * nothing else. The handshake is answered with a fixed 101 without
 * Sec-WebSocket-Accept (bench/ws_client.c checks only the status line), so
 * this is a measuring tool, not a server for real clients. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_CAP (1 << 20)

typedef struct {
    int fd;
    int upgraded;
    size_t len;
    unsigned char in[BUF_CAP];
    unsigned char out[BUF_CAP + 16];
} conn;

static const char RESPONSE_101[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n\r\n";

static void drop(int ep, conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EAGAIN)
            continue; /* the client reads every echo before sending again */
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Echoes every complete frame in c->in; returns -1 to close. */
static int echo_frames(conn *c)
{
    size_t pos = 0, out = 0;
    while (c->len - pos >= 2) {
        unsigned char *f = c->in + pos;
        int opcode = f[0] & 0x0f;
        uint64_t plen = f[1] & 0x7f;
        size_t hlen = 2;
        if (plen == 126) {
            if (c->len - pos < 4)
                break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hlen = 4;
        } else if (plen == 127) {
            if (c->len - pos < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = (plen << 8) | f[2 + i];
            hlen = 10;
        }
        if (!(f[1] & 0x80) || plen > BUF_CAP / 2)
            return -1;
        if (c->len - pos < hlen + 4 + plen)
            break;
        const unsigned char *mask = f + hlen;
        unsigned char *payload = f + hlen + 4;
        if (opcode == 8)
            return -1;
        unsigned char *o = c->out + out;
        o[0] = f[0];
        if (plen < 126) {
            o[1] = (unsigned char)plen;
            out += 2;
        } else {
            o[1] = 126;
            o[2] = (unsigned char)(plen >> 8);
            o[3] = (unsigned char)plen;
            out += 4;
        }
        /* Unmask 8 bytes at a time, then the tail. */
        uint32_t m32;
        memcpy(&m32, mask, 4);
        uint64_t m64 = ((uint64_t)m32 << 32) | m32, w;
        uint64_t i = 0;
        for (; i + 8 <= plen; i += 8) {
            memcpy(&w, payload + i, 8);
            w ^= m64;
            memcpy(c->out + out + i, &w, 8);
        }
        for (; i < plen; i++)
            c->out[out + i] = payload[i] ^ mask[i & 3];
        out += plen;
        pos += hlen + 4 + plen;
    }
    memmove(c->in, c->in + pos, c->len - pos);
    c->len -= pos;
    return out ? write_all(c->fd, c->out, out) : 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--port") != 0) {
        fprintf(stderr, "usage: %s --port PORT\n", argv[0]);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)atoi(argv[2])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1024) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->in + c->len, BUF_CAP - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                drop(ep, c);
                continue;
            }
            c->len += (size_t)r;
            if (!c->upgraded) {
                unsigned char *end = memmem(c->in, c->len, "\r\n\r\n", 4);
                if (!end)
                    continue;
                c->len -= (size_t)(end + 4 - c->in);
                memmove(c->in, end + 4, c->len);
                c->upgraded = 1;
                if (write_all(c->fd, (const unsigned char *)RESPONSE_101,
                              sizeof(RESPONSE_101) - 1) < 0) {
                    drop(ep, c);
                    continue;
                }
            }
            if (echo_frames(c) < 0)
                drop(ep, c);
        }
    }
}
