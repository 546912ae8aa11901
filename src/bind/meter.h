/* Metrics (--metrics-port) in the extension: where this process's counters
 * live, and the hooks the connection, the protocols and the ASGI cycles call
 * at their one place per event. Each hook is a test of srv->metrics and a
 * few plain stores into this process's slot (core/metrics.h); without
 * --metrics-port it is one predictable branch. */
#ifndef CASGI_METER_H
#define CASGI_METER_H

#include "context.h"

_Static_assert((int)CG_HTTP_1_0 == (int)CG_MP_HTTP10 && (int)CG_HTTP_1_1 == (int)CG_MP_HTTP11 &&
                   (int)CG_HTTP_2 == (int)CG_MP_H2,
               "an HTTP version is its metrics protocol label");

/** When a supervisor gave this worker a slot (CASGI_METRICS), maps it into
 * srv->metrics and removes the variable; a bad value is logged and ignored. */
void cg_meter_attach(cg_server *srv);
/** A single process with --metrics-port: a region of one slot and its
 * exposition server. 0, or -1 after logging why (a port in use). */
int cg_meter_start(cg_server *srv);
/** Stops the exposition server and unmaps the counters (server teardown). */
void cg_meter_free(cg_server *srv);
/** Starts the exposition server of `r` on --metrics-host/--metrics-port and
 * logs its URL; NULL after logging why. Used by the single process and the
 * supervisor alike. */
cg_metrics_server *cg_meter_serve(cg_log_state *log, const cg_config *cfg,
                                  const cg_metrics_region *r);

/* ---- hooks ----------------------------------------------------------------- */

/** A connection opened (+1) or closed (-1). */
static inline void cg_meter_conn(cg_server *srv, int delta)
{
    cg_metrics_slot *m = srv->metrics;
    if (!m)
        return;
    if (delta > 0)
        cg_mc_add(&m->c.connections, 1);
    cg_mg_add(&m->g.connections_open, delta);
}

static inline void cg_meter_bytes_in(cg_server *srv, size_t n)
{
    if (srv->metrics)
        cg_mc_add(&srv->metrics->c.bytes_received, n);
}

static inline void cg_meter_bytes_out(cg_server *srv, size_t n)
{
    if (srv->metrics)
        cg_mc_add(&srv->metrics->c.bytes_sent, n);
}

/** A TLS handshake completed (ok) or failed. */
static inline void cg_meter_tls(cg_server *srv, int ok)
{
    if (srv->metrics)
        cg_mc_add(ok ? &srv->metrics->c.tls_handshakes : &srv->metrics->c.tls_failures, 1);
}

/** The server refused a request itself with `status`. */
static inline void cg_meter_reject(cg_server *srv, int status)
{
    if (srv->metrics)
        cg_metrics_reject(srv->metrics, status);
}

/** srv->ntasks changed (app tasks: requests in progress). */
static inline void cg_meter_tasks(cg_server *srv)
{
    if (srv->metrics)
        cg_mg_set(&srv->metrics->g.requests_active, (int64_t)srv->ntasks);
}

/** A WebSocket session was accepted (+1) or ended (-1). */
static inline void cg_meter_ws(cg_server *srv, int delta)
{
    cg_metrics_slot *m = srv->metrics;
    if (!m)
        return;
    if (delta > 0)
        cg_mc_add(&m->c.ws_sessions, 1);
    cg_mg_add(&m->g.ws_active, delta);
}

/** A request's start, for its duration: 0 when not counting. */
static inline uint64_t cg_meter_clock(cg_server *srv)
{
    return srv->metrics ? cg_metrics_now_ns() : 0;
}

/** A request answered with `status`: `proto` is its HTTP version or
 * CG_MP_WEBSOCKET; `t0` from cg_meter_clock, 0 = not timed. */
static inline void cg_meter_request(cg_server *srv, int proto, int status, uint64_t t0)
{
    if (srv->metrics)
        cg_metrics_request(srv->metrics, proto, status,
                           t0 ? (int64_t)(cg_metrics_now_ns() - t0) : -1);
}

#endif
