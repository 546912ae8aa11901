/* Prometheus metrics: the shared region, counting, aggregation and the text
 * exposition (see metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CG_METRICS_MAGIC 0x63676d31u /* "cgm1" */

/* Upper bounds of the duration buckets, nanoseconds, and as written. */
static const uint64_t bucket_ns[CG_MBUCKET_N] = {
    5000000,   10000000,   25000000,    50000000,    100000000,    250000000,
    500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u,
};
static const char *const bucket_text[CG_MBUCKET_N] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
};
static const int reject_status[CG_MREJECT_N - 1] = {400, 408, 413, 414, 417, 426, 431, 501, 505};
static const char *const reject_text[CG_MREJECT_N] = {"400", "408", "413", "414", "417",
                                                      "426", "431", "501", "505", "other"};
static const char *const proto_text[CG_MP_N] = {"http/1.0", "http/1.1", "h2", "websocket"};
static const char *const cause_text[CG_MCAUSE_N] = {"crash", "healthcheck", "max_requests",
                                                    "reload", "startup_timeout"};

/* ---- counting ------------------------------------------------------------ */

void cg_metrics_request(cg_metrics_slot *s, int proto, int status, int64_t ns)
{
    int cls = status / 100 - 1;
    if (cls < 0)
        cls = 0;
    else if (cls >= CG_MCLASS_N)
        cls = CG_MCLASS_N - 1;
    if (proto < 0 || proto >= CG_MP_N)
        proto = CG_MP_HTTP11;
    cg_mc_add(&s->c.requests[proto][cls], 1);
    if (ns < 0)
        return;
    int b = 0;
    while (b < CG_MBUCKET_N && (uint64_t)ns > bucket_ns[b])
        b++;
    cg_mc_add(&s->c.duration_bucket[b], 1);
    cg_mc_add(&s->c.duration_ns, (uint64_t)ns);
}

void cg_metrics_reject(cg_metrics_slot *s, int status)
{
    int i = 0;
    while (i < CG_MREJECT_N - 1 && reject_status[i] != status)
        i++;
    cg_mc_add(&s->c.rejections[i], 1);
}

const char *cg_metrics_reject_label(int i)
{
    return i >= 0 && i < CG_MREJECT_N ? reject_text[i] : NULL;
}

/* ---- regions --------------------------------------------------------------- */

static size_t region_size(uint32_t nslots)
{
    size_t n = sizeof(cg_metrics_region) + (size_t)nslots * sizeof(cg_metrics_slot);
    long page = sysconf(_SC_PAGESIZE);
    size_t p = page > 0 ? (size_t)page : 4096;
    return (n + p - 1) / p * p;
}

int cg_metrics_create(cg_metrics *m, uint32_t nslots)
{
    size_t size = region_size(nslots);
    int fd = memfd_create("casgi-metrics", MFD_CLOEXEC);
    void *p;

    m->r = NULL;
    m->size = 0;
    m->fd = -1;
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) < 0)
        goto fail;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        goto fail;
    /* A new memfd reads as zeros: every counter, the sequence and the pids. */
    m->r = p;
    m->r->magic = CG_METRICS_MAGIC;
    m->r->nslots = nslots;
    m->size = size;
    m->fd = fd;
    return 0;

fail : {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}
}

cg_metrics_slot *cg_metrics_attach(cg_metrics *m, const char *spec, char *err, size_t errlen)
{
    int fd = -1, slot = -1;
    struct stat st;
    void *p;

    m->r = NULL;
    m->size = 0;
    m->fd = -1;
    if (!spec || sscanf(spec, "%d:%d", &fd, &slot) != 2 || fd < 0 || slot < 0) {
        snprintf(err, errlen, "invalid CASGI_METRICS value '%s'", spec ? spec : "");
        return NULL;
    }
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(cg_metrics_region)) {
        snprintf(err, errlen, "metrics region (fd %d): [Errno %d] %s", fd, errno ? errno : EINVAL,
                 strerror(errno ? errno : EINVAL));
        close(fd);
        return NULL;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "metrics region: [Errno %d] %s", errno, strerror(errno));
        return NULL;
    }
    m->r = p;
    m->size = (size_t)st.st_size;
    if (m->r->magic != CG_METRICS_MAGIC || (uint32_t)slot >= m->r->nslots ||
        region_size(m->r->nslots) > m->size) {
        snprintf(err, errlen, "metrics region: not a casgi region or slot %d out of range", slot);
        cg_metrics_close(m);
        return NULL;
    }
    return &m->r->slots[slot];
}

void cg_metrics_close(cg_metrics *m)
{
    if (m->r)
        munmap(m->r, m->size);
    if (m->fd >= 0)
        close(m->fd);
    m->r = NULL;
    m->size = 0;
    m->fd = -1;
}

/* ---- the supervisor's side ------------------------------------------------- */

int cg_metrics_slot_take(cg_metrics_region *r, int32_t pid)
{
    for (uint32_t i = 0; i < r->nslots; i++)
        if (atomic_load_explicit(&r->slots[i].pid, memory_order_relaxed) == 0) {
            atomic_store_explicit(&r->slots[i].pid, pid, memory_order_release);
            return (int)i;
        }
    return -1;
}

/* Each counter of `from` moved onto `to`, field by field (the struct is an
 * array of counters). */
static void fold(cg_metrics_counters *to, cg_metrics_counters *from)
{
    cg_mcounter *t = (cg_mcounter *)to, *f = (cg_mcounter *)from;
    for (size_t i = 0; i < sizeof(*to) / sizeof(cg_mcounter); i++) {
        cg_mc_add(&t[i], atomic_load_explicit(&f[i], memory_order_relaxed));
        atomic_store_explicit(&f[i], 0, memory_order_relaxed);
    }
}

void cg_metrics_slot_release(cg_metrics_region *r, int i)
{
    if (i < 0 || (uint32_t)i >= r->nslots)
        return;
    cg_metrics_slot *s = &r->slots[i];
    uint32_t seq = atomic_load_explicit(&r->seq, memory_order_relaxed);

    /* A seqlock write: readers that overlap it retry. */
    atomic_store_explicit(&r->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    fold(&r->retired, &s->c);
    cg_mg_set(&s->g.connections_open, 0);
    cg_mg_set(&s->g.requests_active, 0);
    cg_mg_set(&s->g.ws_active, 0);
    atomic_store_explicit(&s->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&r->seq, seq + 2, memory_order_release);
}

void cg_metrics_restart(cg_metrics_region *r, int cause)
{
    if (cause >= 0 && cause < CG_MCAUSE_N)
        cg_mc_add(&r->restarts[cause], 1);
}

/* ---- reading --------------------------------------------------------------- */

static void sum_counters(cg_metrics_snapshot *out, const cg_metrics_counters *c)
{
#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
    for (int p = 0; p < CG_MP_N; p++)
        for (int k = 0; k < CG_MCLASS_N; k++)
            out->requests[p][k] += LD(c->requests[p][k]);
    for (int b = 0; b <= CG_MBUCKET_N; b++)
        out->duration_bucket[b] += LD(c->duration_bucket[b]);
    out->duration_ns += LD(c->duration_ns);
    out->connections += LD(c->connections);
    out->bytes_received += LD(c->bytes_received);
    out->bytes_sent += LD(c->bytes_sent);
    out->ws_sessions += LD(c->ws_sessions);
    out->tls_handshakes += LD(c->tls_handshakes);
    out->tls_failures += LD(c->tls_failures);
    for (int i = 0; i < CG_MREJECT_N; i++)
        out->rejections[i] += LD(c->rejections[i]);
}

void cg_metrics_read(const cg_metrics_region *r, cg_metrics_snapshot *out)
{
    for (;;) {
        uint32_t seq = atomic_load_explicit(&r->seq, memory_order_acquire);
        if (seq & 1) {
            sched_yield(); /* a fold is a few hundred stores: it ends at once */
            continue;
        }
        memset(out, 0, sizeof(*out));
        sum_counters(out, &r->retired);
        for (int i = 0; i < CG_MCAUSE_N; i++)
            out->restarts[i] = LD(r->restarts[i]);
        for (uint32_t i = 0; i < r->nslots; i++) {
            const cg_metrics_slot *s = &r->slots[i];
            if (LD(s->pid) == 0)
                continue;
            out->workers++;
            sum_counters(out, &s->c);
            out->connections_open += LD(s->g.connections_open);
            out->requests_active += LD(s->g.requests_active);
            out->ws_active += LD(s->g.ws_active);
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&r->seq, memory_order_relaxed) == seq)
            return;
    }
#undef LD
}

/* ---- the exposition ------------------------------------------------------ */

__attribute__((format(printf, 2, 3))) static int put(cg_buf *b, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -1;
    return cg_buf_append(b, line, (size_t)n);
}

static int family(cg_buf *b, const char *name, const char *type, const char *help)
{
    return put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The metrics of one unlabelled value, in exposition order: gauges are the
 * snapshot's int64_t fields, counters its uint64_t ones. */
static const struct scalar {
    const char *name, *help;
    size_t offset;
    int gauge;
} scalars[] = {
    {"casgi_requests_active",
     "Requests in progress (HTTP requests, HTTP/2 streams and WebSocket sessions whose app runs).",
     offsetof(cg_metrics_snapshot, requests_active), 1},
    {"casgi_connections_total", "Connections accepted.", offsetof(cg_metrics_snapshot, connections),
     0},
    {"casgi_connections_open", "Connections open.", offsetof(cg_metrics_snapshot, connections_open),
     1},
    {"casgi_received_bytes_total", "Bytes received on client connections (TLS: as encrypted).",
     offsetof(cg_metrics_snapshot, bytes_received), 0},
    {"casgi_sent_bytes_total", "Bytes written to client connections (TLS: as encrypted).",
     offsetof(cg_metrics_snapshot, bytes_sent), 0},
    {"casgi_websocket_sessions_total", "WebSocket sessions accepted.",
     offsetof(cg_metrics_snapshot, ws_sessions), 0},
    {"casgi_websocket_sessions_active", "WebSocket sessions open.",
     offsetof(cg_metrics_snapshot, ws_active), 1},
    {"casgi_tls_handshakes_total", "TLS handshakes completed.",
     offsetof(cg_metrics_snapshot, tls_handshakes), 0},
    {"casgi_tls_handshake_failures_total", "TLS handshakes that failed or timed out.",
     offsetof(cg_metrics_snapshot, tls_failures), 0},
};

int cg_metrics_render(const cg_metrics_snapshot *s, cg_buf *b)
{
    int rc = 0;

    rc |= family(b, "casgi_requests_total", "counter",
                 "Requests answered, by protocol and status class (WebSocket: the handshake).");
    for (int p = 0; p < CG_MP_N; p++)
        for (int k = 0; k < CG_MCLASS_N; k++)
            rc |= put(b, "casgi_requests_total{protocol=\"%s\",status=\"%dxx\"} %" PRIu64 "\n",
                      proto_text[p], k + 1, s->requests[p][k]);

    rc |= family(b, "casgi_request_duration_seconds", "histogram",
                 "Time from a request's complete head to the end of its response.");
    uint64_t cum = 0;
    for (int i = 0; i < CG_MBUCKET_N; i++) {
        cum += s->duration_bucket[i];
        rc |= put(b, "casgi_request_duration_seconds_bucket{le=\"%s\"} %" PRIu64 "\n",
                  bucket_text[i], cum);
    }
    cum += s->duration_bucket[CG_MBUCKET_N];
    rc |= put(b, "casgi_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    rc |= put(b, "casgi_request_duration_seconds_sum %" PRIu64 ".%09" PRIu64 "\n",
              s->duration_ns / 1000000000u, s->duration_ns % 1000000000u);
    rc |= put(b, "casgi_request_duration_seconds_count %" PRIu64 "\n", cum);

    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
        const struct scalar *m = &scalars[i];
        const char *at = (const char *)s + m->offset;
        rc |= family(b, m->name, m->gauge ? "gauge" : "counter", m->help);
        if (m->gauge)
            rc |= put(b, "%s %" PRId64 "\n", m->name, *(const int64_t *)at);
        else
            rc |= put(b, "%s %" PRIu64 "\n", m->name, *(const uint64_t *)at);
    }
    rc |= family(b, "casgi_rejections_total", "counter",
                 "Requests the server refused before an app saw them, by status.");
    for (int i = 0; i < CG_MREJECT_N; i++)
        rc |= put(b, "casgi_rejections_total{status=\"%s\"} %" PRIu64 "\n", reject_text[i],
                  s->rejections[i]);
    rc |= family(b, "casgi_worker_restarts_total", "counter",
                 "Worker processes replaced by the supervisor, by cause.");
    for (int i = 0; i < CG_MCAUSE_N; i++)
        rc |= put(b, "casgi_worker_restarts_total{cause=\"%s\"} %" PRIu64 "\n", cause_text[i],
                  s->restarts[i]);
    rc |= family(b, "casgi_workers", "gauge", "Worker processes counting (the single process: 1).");
    rc |= put(b, "casgi_workers %" PRIu32 "\n", s->workers);
    return rc ? -1 : 0;
}
