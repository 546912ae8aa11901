/* Shared server state and its services: the running app tasks, shutdown and
 * draining, retiring a worker, the date line, --header lines, the proxy trust
 * list, running the loop. Everything above it (the lifecycle in server.c, the
 * transport in conn.c, the protocols, the ASGI cycles, lifespan) uses it; it
 * calls none of them. */
#ifndef CASGI_CONTEXT_H
#define CASGI_CONTEXT_H

#include "casgi.h"

#include <signal.h>

#include "buf.h"
#include "http1.h"
#include "metrics.h"
#include "proxy.h"
#include "systemd.h"
#include "tls.h"

struct cg_conn;

/* Where a server's serve sequence is (server.c): each phase awaits a future. */
enum {
    CG_SV_IDLE,          /* not started */
    CG_SV_STARTUP,       /* lifespan startup */
    CG_SV_LISTEN,        /* the listeners are being created */
    CG_SV_RUNNING,       /* serving until stop_fut */
    CG_SV_CLOSING,       /* listeners closed: one loop turn for connections just accepted */
    CG_SV_DRAINING,      /* waiting for connections and tasks (drained_fut) */
    CG_SV_ABORTING,      /* the cancelled tasks run their cancellation */
    CG_SV_LIFESPAN_DOWN, /* lifespan shutdown */
    CG_SV_DONE           /* stopped: done_fut completed */
};

typedef struct cg_server {
    PyObject_HEAD cg_state *st;
    PyObject *module;     /* keeps the state alive */
    const cg_config *cfg; /* borrowed for the duration of cg_serve, or own_cfg */
    PyObject *loop;
    PyObject *app;                /* ASGI 3 callable */
    PyObject *state;              /* lifespan state dict, copied into each scope */
    PyObject *tasks;              /* set of running app tasks */
    PyObject *context;            /* contextvars.Context at start; each app task runs in a copy */
    PyObject *scope_templates[2]; /* every scope key (http, websocket), see cg_scope_new */
    PyObject *stop_fut;           /* completed to begin shutdown */
    PyObject *drained_fut;        /* completed when nothing is left during shutdown */
    PyObject *ticker;             /* TimerHandle of the next tick */
    PyObject *tick_cb;            /* bound C callable for the ticker */
    PyObject *flush_cb;           /* bound C callable: cg_server_flush_held */
    PyObject *notify;             /* host heartbeat called on each tick, or NULL */
    cg_proxy_trust trust;         /* --forwarded-allow-ips; nothing when neither proxy headers
                                   * nor the PROXY protocol are on */
    PyObject *root_path;          /* str */
    PyObject *root_path_b;        /* bytes */
    struct cg_conn *conns;        /* every open connection (strong refs), doubly linked */
    size_t nconns;
    size_t ntasks;
    unsigned long long nrequests;
    long long max_requests; /* --limit-max-requests plus this worker's jitter; -1 = none */
    cg_http1_limits limits;
    cg_http1_header *hdrs; /* scratch for head parsing, limits.fields entries */
    double tick_interval;
    double now;                 /* monotonic seconds, refreshed on each tick */
    cg_buf head_lines;          /* the server's own response-head lines, ready to copy: part 0
                                 * "server: casgi\r\n" (--server-header), part 1 the date
                                 * line (--date-header), part 2 the --header lines */
    size_t head_line_offs[4];   /* part i is head_lines[offs[i] .. offs[i + 1]) */
    cg_buf spare_in;            /* a read buffer no connection holds (see conn_get_buffer) */
    struct cg_conn *flush_list; /* held output to write (strong refs); non-empty
                                 * exactly while flush_cb is in the loop's ready queue */
    unsigned flush_solo;        /* recent flushes in a row that wrote one connection */
    unsigned flush_probe;       /* held outputs written at once since a flush last waited */
    PyObject *last_client;      /* the latest scope["client"] tuple, shared when equal */
    PyObject *last_sockname;    /* the latest scope["server"] tuple, shared when equal */
    int ctl_fd;                 /* worker mode: pipe to the supervisor (R, H, X bytes), else -1 */
    int alive_fd;               /* worker mode: EOF here means the supervisor is gone, else -1 */
    int retiring;               /* worker mode: X sent, waiting to be replaced */
    int should_exit;            /* shutdown requested */
    int force_exit;             /* second signal: stop waiting */
    int got_sigterm;            /* a SIGTERM arrived (a second one forces) */
    int got_sigint;             /* a SIGINT arrived (under a supervisor, a second one forces) */
    int exit_status;
    char url[300];   /* where it listens, for the "running on" line */
    int host_mode;   /* serving sockets of a host (gunicorn) */
    PyObject *fatal; /* a SystemExit/KeyboardInterrupt to raise from a loop callback */
    /* Out of file descriptors (server.c): */
    int listen_fd;         /* a listening fd, duplicated to probe for a free fd; -1 = none */
    int fd_exhausted;      /* in an episode (warned once) */
    int accept_refused;    /* asyncio's current accept pass met the limit */
    PyObject *base_accept; /* socket.socket.accept, for the listening socket's own */
    PyObject *log_filter;  /* the filter added to the "asyncio" logger, or NULL */
    /* TLS (--ssl-certfile), see conn.c: */
    cg_tls_ctx *tls;            /* NULL: cleartext */
    cg_buf tls_scratch;         /* ciphertext being written (one write at a time) */
    cg_buf h2_scratch;          /* HTTP/2 frames being produced (one connection at a time) */
    PyObject *tls_cert;         /* str: the server certificate for scope["extensions"]["tls"] */
    unsigned tls_causes_logged; /* handshake failure causes already summarised once */
    int pp_refusal_logged;      /* a PROXY protocol refusal was logged at info level */
    /* Protocols other than HTTP/1.1 (set by server.c, used by conn.c and h1.c): */
    const struct cg_proto_ops *h2c_proto; /* for a cleartext connection opening with the
                                           * HTTP/2 preface, or NULL */
    struct {
        const char *name;                 /* an ALPN protocol name offered by TLS */
        const struct cg_proto_ops *proto; /* the protocol serving it */
    } alpn[2];
    size_t alpn_n;
    /* The serve sequence (server.c): */
    int phase;               /* CG_SV_* */
    int started;             /* listening, the "running" line said */
    int status;              /* once done: 0, or 3 after a failure */
    int owns_loop;           /* the loop was made for this server (not the caller's) */
    int mask_signals;        /* the handled signals are blocked between runs of the loop */
    int signals;             /* among the servers hearing the handled signals */
    sigset_t old_mask;       /* the signal mask before, when mask_signals */
    unsigned long thread_id; /* the thread it serves in */
    PyObject *done_fut;      /* completed with the status once fully stopped */
    PyObject *wait_fut;      /* what the sequence awaits now */
    PyObject *resume_cb;     /* bound C callable: the sequence's next step */
    PyObject *lifespan;      /* the lifespan object, or NULL */
    PyObject *socks;         /* the listening sockets served (list) */
    PyObject *own_socks;     /* the sockets it opened (list; closed at the end), or NULL */
    PyObject *listeners;     /* the loop's Server objects (list), or NULL */
    PyObject *drain_timer;   /* --timeout-graceful-shutdown's timer, or NULL */
    PyObject *captured;      /* SIGINT/SIGTERM received (list), for the last server to stop */
    cg_config *own_cfg;      /* the configuration an embedded server owns, or NULL */

    /* systemd, in a process of its own (server.c; under casgi's supervisor
     * the supervisor notifies): */
    cg_sd_notify sd; /* $NOTIFY_SOCKET, fd -1 = none */
    double watchdog; /* $WATCHDOG_USEC in seconds, 0 = none */
    double wd_next;  /* when the ticker sends the next WATCHDOG=1 */
    int activated;   /* serving sockets passed by systemd (LISTEN_FDS) */

    /* Metrics (meter.c): this process's slot of the shared counters, NULL when
     * off; the mapping; the exposition server of a single process. */
    cg_metrics_slot *metrics;
    cg_metrics metrics_map;
    cg_metrics_server *metrics_srv;
} cg_server;

/** Runs the loop until `awaitable` completes, with the server's signals
 * unblocked only while it runs (when srv->mask_signals). Returns the result,
 * or NULL. */
PyObject *cg_server_run(cg_server *srv, PyObject *awaitable);
/** Blocks the signals the server handles (SIGINT, SIGTERM, SIGQUIT); the
 * previous mask goes to *old when it is not NULL. */
void cg_block_handled_signals(sigset_t *old);
/** Counts an app task as running until cg_server_task_done. 0 or -1. */
int cg_server_add_task(cg_server *srv, PyObject *task);
/** The task in *slot finished: forgets it and clears the slot. */
void cg_server_task_done(cg_server *srv, PyObject **slot);
/** Begins a graceful shutdown (as on SIGTERM). */
void cg_server_request_exit(cg_server *srv);
/** --limit-max-requests reached: under a supervisor ask to be replaced,
 * otherwise shut down gracefully. */
void cg_server_retire(cg_server *srv);
/** Takes the exception being raised (a BaseException that must end the loop,
 * met where it cannot propagate: a protocol callback, whose exceptions the
 * loop only logs) and raises it again from a loop callback, as if it had
 * come out of a task step. */
void cg_server_raise_soon(cg_server *srv);
/** Called when a connection or task goes away during shutdown. */
void cg_server_check_drained(cg_server *srv);
/** 1 when the peer of a new connection is a trusted proxy: `peer` and `sock`
 * are its transport's peername and sockname (an address tuple, or for a Unix
 * socket a path or ''). */
int cg_server_trusts_peer(cg_server *srv, PyObject *peer, PyObject *sock);
/** Refreshes the date line in srv->head_lines. */
void cg_server_update_date(cg_server *srv);
/** The server's own head lines selected by `which` (CG_HEAD_* of stream.h),
 * "name: value\r\n" each: a slice of srv->head_lines when the selected parts
 * lie side by side there (always, but for unusual sets), else assembled in
 * `tmp`. Returns 0 or -1 (out of memory, no exception). */
int cg_server_head_defaults(cg_server *srv, unsigned which, cg_buf *tmp, const char **out,
                            size_t *len);
/** Builds srv->head_lines as configured, with `extra` ("name: value\r\n"
 * lines of --header) as its last part. 0, or -1 with an exception. */
int cg_server_set_head_lines(cg_server *srv, const char *extra, size_t extra_len);

#endif
