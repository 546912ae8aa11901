/* Prometheus metrics (--metrics-port): the shared counters, their aggregation
 * and their text exposition. Pure C11 (POSIX + Linux).
 *
 * Memory. One region (cg_metrics_region) holds a header, a supervisor
 * section (worker restarts by cause, the "retired" totals of workers that are
 * gone) and one fixed-size slot per worker process. It lives in a memfd the
 * supervisor creates before it starts workers; each worker maps it and
 * writes only its own slot (CASGI_METRICS="<fd>:<slot>", see supervisor.h).
 * A single process (no --workers, no --reload) uses a region of one slot.
 *
 * Writers. A slot has one writer, the worker's event-loop thread: a counter
 * is incremented with a relaxed atomic load and store (plain moves on x86-64
 * and arm64, no locked instruction), so a reader in another thread or
 * process never sees a torn value and the hot path costs a few instructions.
 * Gauges are signed values written the same way.
 *
 * Slot reuse. When a worker is reaped, the supervisor adds its counters to
 * the retired section and zeroes the slot before it is given to another
 * worker, so the aggregate never goes backwards. That fold is bracketed by a
 * sequence counter (odd while it runs); a reader retries a snapshot taken
 * across it. Gauges of a dead worker are dropped, not folded.
 *
 * Readers. The exposition server (metrics_server below) runs in a thread
 * of its own that only reads the region: in the supervisor with --workers or
 * --reload, in the single process otherwise. */
#ifndef CG_METRICS_H
#define CG_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"

/* The protocol label of casgi_requests_total. */
enum cg_metrics_proto { CG_MP_HTTP10, CG_MP_HTTP11, CG_MP_H2, CG_MP_WEBSOCKET, CG_MP_N };
/* Status classes 1xx .. 5xx. */
enum { CG_MCLASS_N = 5 };
/* Request duration buckets (seconds, Prometheus client defaults); the last
 * counts the requests above the largest bound (+Inf takes the count). */
enum { CG_MBUCKET_N = 11 };
/* Statuses of requests refused by the server before any app saw them; the
 * last entry counts any other status. */
enum { CG_MREJECT_N = 10 };
/* Why the supervisor replaced a worker. */
enum cg_metrics_cause {
    CG_MCAUSE_CRASH,        /* it died unasked */
    CG_MCAUSE_HEALTHCHECK,  /* its loop stopped beating (--timeout-worker-healthcheck) */
    CG_MCAUSE_MAX_REQUESTS, /* it retired (--limit-max-requests) */
    CG_MCAUSE_RELOAD,       /* --reload saw a change, or SIGHUP */
    CG_MCAUSE_STARTUP,      /* not ready within --timeout-worker-startup */
    CG_MCAUSE_N
};

typedef _Atomic uint64_t cg_mcounter;
typedef _Atomic int64_t cg_mgauge;

/* The monotonic counters of one worker (and of the retired section). */
typedef struct cg_metrics_counters {
    cg_mcounter requests[CG_MP_N][CG_MCLASS_N];
    cg_mcounter duration_bucket[CG_MBUCKET_N + 1]; /* per bucket, not cumulative */
    cg_mcounter duration_ns;                       /* sum of the durations */
    cg_mcounter connections;                       /* accepted */
    cg_mcounter bytes_received, bytes_sent;        /* on the wire (TLS: ciphertext) */
    cg_mcounter ws_sessions;                       /* accepted WebSocket sessions */
    cg_mcounter tls_handshakes, tls_failures;
    cg_mcounter rejections[CG_MREJECT_N];
} cg_metrics_counters;

/* The gauges of one live worker. */
typedef struct cg_metrics_gauges {
    cg_mgauge connections_open;
    cg_mgauge requests_active; /* app tasks: HTTP cycles and WebSocket sessions */
    cg_mgauge ws_active;       /* accepted WebSocket sessions not closed yet */
} cg_metrics_gauges;

typedef struct cg_metrics_slot {
    _Atomic int32_t pid; /* the worker using it, 0 = free (written by the supervisor) */
    int32_t pad_;
    cg_metrics_counters c;
    cg_metrics_gauges g;
} cg_metrics_slot;

typedef struct cg_metrics_region {
    uint32_t magic, nslots;
    _Atomic uint32_t seq; /* odd while the supervisor folds a slot */
    uint32_t pad_;
    cg_mcounter restarts[CG_MCAUSE_N];
    cg_metrics_counters retired;
    cg_metrics_slot slots[];
} cg_metrics_region;

/* A region mapped in this process. */
typedef struct cg_metrics {
    cg_metrics_region *r;
    size_t size; /* bytes mapped */
    int fd;      /* the memfd (owner only), -1 in a worker */
} cg_metrics;

/* ---- the hot path: one writer per slot ------------------------------------ */

static inline void cg_mc_add(cg_mcounter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void cg_mg_set(cg_mgauge *g, int64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

static inline void cg_mg_add(cg_mgauge *g, int64_t d)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

/** Nanoseconds of CLOCK_MONOTONIC (a request's start and end). */
static inline uint64_t cg_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/** Counts an answered request: `proto` (enum cg_metrics_proto), its status,
 * and its duration in nanoseconds (`ns` < 0: not timed, e.g. a WebSocket
 * handshake). */
void cg_metrics_request(cg_metrics_slot *s, int proto, int status, int64_t ns);
/** Counts a request refused by the server itself (parser, timeouts, limits
 * of the protocol), by status. */
void cg_metrics_reject(cg_metrics_slot *s, int status);

/* ---- regions --------------------------------------------------------------- */

/** Creates a zeroed region of `nslots` worker slots in a memfd (close-on-exec;
 * the supervisor clears that for its workers). 0, or -1 with errno. */
int cg_metrics_create(cg_metrics *m, uint32_t nslots);
/** Maps the region a worker inherited: `spec` is "<fd>:<slot>" (the value of
 * CASGI_METRICS). The fd is closed once mapped. Returns the worker's slot, or
 * NULL with a one-line message in err. */
cg_metrics_slot *cg_metrics_attach(cg_metrics *m, const char *spec, char *err, size_t errlen);
/** Unmaps (and closes the memfd when owned). Safe on a zeroed struct. */
void cg_metrics_close(cg_metrics *m);

/* ---- the supervisor's side ------------------------------------------------- */

/** Takes a free slot for the worker `pid`; its index, or -1 when all are in use
 * (the worker then runs without counting). */
int cg_metrics_slot_take(cg_metrics_region *r, int32_t pid);
/** The worker in slot `i` is gone: its counters go to the retired section, its
 * gauges are dropped, and the slot is zeroed and free again. */
void cg_metrics_slot_release(cg_metrics_region *r, int i);
/** Counts a worker replaced for `cause` (enum cg_metrics_cause). */
void cg_metrics_restart(cg_metrics_region *r, int cause);

/* ---- reading --------------------------------------------------------------- */

/* What an exposition shows: counters summed over the live slots and the
 * retired section, gauges summed over the live slots. Plain values. */
typedef struct cg_metrics_snapshot {
    uint64_t requests[CG_MP_N][CG_MCLASS_N];
    uint64_t duration_bucket[CG_MBUCKET_N + 1];
    uint64_t duration_ns;
    uint64_t connections, bytes_received, bytes_sent, ws_sessions, tls_handshakes, tls_failures;
    uint64_t rejections[CG_MREJECT_N];
    uint64_t restarts[CG_MCAUSE_N];
    int64_t connections_open, requests_active, ws_active;
    uint32_t workers; /* slots in use */
} cg_metrics_snapshot;

/** A consistent aggregate of the region (retried while a fold runs). */
void cg_metrics_read(const cg_metrics_region *r, cg_metrics_snapshot *out);
/** Appends the Prometheus text exposition (format 0.0.4) of `s` to `out`.
 * 0, or -1 when memory runs out. */
int cg_metrics_render(const cg_metrics_snapshot *s, cg_buf *out);
/** The status label of rejection index i ("400" ... "other"). */
const char *cg_metrics_reject_label(int i);

/* ---- the exposition server ------------------------------------------------ */

typedef struct cg_metrics_server cg_metrics_server;

/** Binds host:port and starts the thread serving GET /metrics from `r` (which
 * must outlive the server). Returns the server, or NULL with a one-line
 * message ("[Errno 98] Address already in use") in err. Its URL
 * ("http://127.0.0.1:9100/metrics") is written to url. */
cg_metrics_server *cg_metrics_server_start(const cg_metrics_region *r, const char *host, int port,
                                           char *url, size_t urllen, char *err, size_t errlen);
/** Stops the thread (a request in progress is cut), closes the socket, frees. */
void cg_metrics_server_stop(cg_metrics_server *srv);

/** Serves one accepted connection: reads a request head (bounded in size and
 * by `timeout_ms`), answers GET or HEAD /metrics with the exposition of `r`,
 * 404 for another path, 405 for another method, 400 for a malformed head;
 * then closes `fd`. Exposed for tests. */
void cg_metrics_serve_conn(const cg_metrics_region *r, int fd, int timeout_ms);

#endif
