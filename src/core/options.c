/* The option table and the command-line / environment parser built on it.
 * Pure C: the bindings convert Python values to text and call cg_option_set. */
#include "options.h"

#include "errfmt.h"
#include "proxy.h"
#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ascii.h"

static const char *const loop_choices[] = {"auto", "asyncio", "uvloop", NULL};
static const char *const lifespan_choices[] = {"auto", "on", "off", NULL};
/* Same order as enum cg_ws_mode: uvicorn's implementation names come last and
 * are served by casgi's own implementation. */
static const char *const ws_choices[] = {
    "auto", "casgi", "none", "websockets", "wsproto", "websockets-sansio", NULL};
/* Same orders as enum cg_http_mode and enum cg_interface. */
static const char *const http_choices[] = {"auto", "h11", "httptools", NULL};
static const char *const interface_choices[] = {"auto", "asgi3", "asgi2", NULL};
/* Same order as enum cg_log_level. */
static const char *const log_level_choices[] = {"critical", "error", "warning", "info",
                                                "debug",    "trace", NULL};

#define F(field) offsetof(cg_config, field)
#define NOMAX HUGE_VAL
#define LMAX ((double)LONG_MAX)

/* The order here is the order of --help. */
const cg_option cg_options[] = {
    {"app", CG_OPT_STR, F(app), NULL, "CASGI_APP", "APP", NULL, 0, 0,
     "The ASGI application as \"module:attribute\" (dotted attributes allowed)."},
    {"factory", CG_OPT_FLAG, F(factory), NULL, "CASGI_FACTORY", NULL, NULL, 0, 0,
     "Treat APP as a factory: call it without arguments to get the application."},
    {"app-dir", CG_OPT_STR, F(app_dir), ".", "CASGI_APP_DIR", "PATH", NULL, 0, 0,
     "Directory put first on sys.path before importing APP."},
    {"host", CG_OPT_STR, F(host), "127.0.0.1", "CASGI_HOST", "HOST", NULL, 0, 0,
     "Address to bind; an address containing ':' is IPv6. Use 0.0.0.0 to listen on all "
     "interfaces."},
    {"port", CG_OPT_INT, F(port), "8000", "CASGI_PORT", "PORT", NULL, 0, 65535,
     "Port to bind; 0 picks a free port (the real one is logged)."},
    {"uds", CG_OPT_STR, F(uds), NULL, "CASGI_UDS", "PATH", NULL, 0, 0,
     "Listen on this Unix domain socket instead of TCP."},
    {"fd", CG_OPT_INT, F(fd), NULL, "CASGI_FD", "FD", NULL, 0, INT_MAX,
     "Serve an already listening socket inherited as this file descriptor."},
    {"backlog", CG_OPT_INT, F(backlog), "2048", "CASGI_BACKLOG", "N", NULL, 1, INT_MAX,
     "Most connections waiting in the kernel's accept queue."},
    {"workers", CG_OPT_INT, F(workers), "1", "CASGI_WORKERS", "N", NULL, 1, 4096,
     "Number of worker processes (default: $WEB_CONCURRENCY, else 1)."},
    {"reload", CG_OPT_FLAG, F(reload), NULL, "CASGI_RELOAD", NULL, NULL, 0, 0,
     "Restart the workers whenever a watched file changes (development)."},
    {"reload-dir", CG_OPT_LIST, F(reload_dirs), NULL, "CASGI_RELOAD_DIR", "PATH", NULL, 0, 0,
     "Directory to watch; repeatable (default: the current directory)."},
    {"reload-include", CG_OPT_LIST, F(reload_includes), NULL, "CASGI_RELOAD_INCLUDE", "GLOB", NULL,
     0, 0, "Files whose changes trigger a reload; repeatable (default: *.py)."},
    {"reload-exclude", CG_OPT_LIST, F(reload_excludes), NULL, "CASGI_RELOAD_EXCLUDE", "GLOB", NULL,
     0, 0, "Files and directories never watched; repeatable (default: .*, .py[cod], .sw.*, ~*)."},
    {"reload-delay", CG_OPT_FLOAT, F(reload_delay), "0.1", "CASGI_RELOAD_DELAY", "SECONDS", NULL, 0,
     NOMAX, "Changes within this window make one reload."},
    {"reload-poll", CG_OPT_FLAG, F(reload_poll), NULL, "CASGI_RELOAD_POLL", NULL, NULL, 0, 0,
     "Watch by polling file times instead of inotify (bind mounts, network file systems)."},
    {"reload-standby", CG_OPT_BOOL, F(reload_standby), "true", "CASGI_RELOAD_STANDBY", NULL, NULL,
     0, 0,
     "Keep a worker started with the installed packages already imported, so a reload only "
     "imports the project's own code."},
    {"loop", CG_OPT_CHOICE, F(loop), "auto", "CASGI_LOOP", NULL, loop_choices, 0, 0,
     "Event loop; auto uses uvloop when it is installed."},
    {"lifespan", CG_OPT_CHOICE, F(lifespan), "auto", "CASGI_LIFESPAN", NULL, lifespan_choices, 0, 0,
     "Lifespan protocol: on requires it, off skips it, auto uses it when the app supports it."},
    {"interface", CG_OPT_CHOICE, F(interface), "auto", "CASGI_INTERFACE", NULL, interface_choices,
     0, 0, "Application interface: auto detects ASGI 2 or 3, asgi3 and asgi2 skip the detection."},
    {"http", CG_OPT_CHOICE, F(http), "auto", "CASGI_HTTP", NULL, http_choices, 0, 0,
     "Accepted for uvicorn compatibility: casgi's own HTTP/1.1 implementation serves every "
     "choice."},
    {"h11-max-incomplete-event-size", CG_OPT_INT, F(h11_max_incomplete_event_size), NULL,
     "CASGI_H11_MAX_INCOMPLETE_EVENT_SIZE", "BYTES", NULL, 1, LMAX,
     "Longest request head buffered while incomplete; longer gets 431 (default: bounded by the "
     "--limit-request-* options only)."},
    {"reset-contextvars", CG_OPT_FLAG, F(reset_contextvars), NULL, "CASGI_RESET_CONTEXTVARS", NULL,
     NULL, 0, 0,
     "Accepted for uvicorn compatibility: every request already runs in a fresh copy of the "
     "context the server started with."},
    {"root-path", CG_OPT_STR, F(root_path), "", "CASGI_ROOT_PATH", "PATH", NULL, 0, 0,
     "Path prefix the app is mounted under behind a proxy (ASGI root_path)."},
    {"log-level", CG_OPT_CHOICE, F(log_level), "info", "CASGI_LOG_LEVEL", "LEVEL",
     log_level_choices, 0, 0, "Log level: critical, error, warning, info, debug or trace."},
    {"access-log", CG_OPT_BOOL, F(access_log), "true", "CASGI_ACCESS_LOG", NULL, NULL, 0, 0,
     "Log one line per request to the casgi.access logger."},
    {"use-colors", CG_OPT_BOOL, F(use_colors), NULL, "CASGI_USE_COLORS", NULL, NULL, 0, 0,
     "Colour the default log output (default: only on a terminal)."},
    {"log-config", CG_OPT_STR, F(log_config), NULL, "CASGI_LOG_CONFIG", "PATH", NULL, 0, 0,
     "Logging configuration: .json or .yaml/.yml as dictConfig, anything else as fileConfig."},
    {"timeout-keep-alive", CG_OPT_FLOAT, F(timeout_keep_alive), "5", "CASGI_TIMEOUT_KEEP_ALIVE",
     "SECONDS", NULL, 0, NOMAX, "Close an idle keep-alive connection after this many seconds."},
    {"timeout-graceful-shutdown", CG_OPT_FLOAT, F(timeout_graceful_shutdown), NULL,
     "CASGI_TIMEOUT_GRACEFUL_SHUTDOWN", "SECONDS", NULL, 0, NOMAX,
     "On shutdown, wait at most this long for requests in flight (default: no bound)."},
    {"timeout-request-header", CG_OPT_FLOAT, F(timeout_request_header), "30",
     "CASGI_TIMEOUT_REQUEST_HEADER", "SECONDS", NULL, 0, NOMAX,
     "Close a connection whose request head has not fully arrived after this many seconds."},
    {"timeout-request-body-idle", CG_OPT_FLOAT, F(timeout_request_body_idle), "60",
     "CASGI_TIMEOUT_REQUEST_BODY_IDLE", "SECONDS", NULL, 0, NOMAX,
     "Answer 408 (or close) when a request body makes no progress for this many seconds "
     "(0 = never)."},
    {"limit-concurrency", CG_OPT_INT, F(limit_concurrency), NULL, "CASGI_LIMIT_CONCURRENCY", "N",
     NULL, 1, LMAX,
     "Answer 503 beyond this many requests in progress (HTTP and WebSocket); beyond this many "
     "connections, close the longest idle keep-alive one."},
    {"limit-max-requests", CG_OPT_INT, F(limit_max_requests), NULL, "CASGI_LIMIT_MAX_REQUESTS", "N",
     NULL, 1, LMAX, "Shut down gracefully after serving this many requests."},
    {"limit-max-requests-jitter", CG_OPT_INT, F(limit_max_requests_jitter), "0",
     "CASGI_LIMIT_MAX_REQUESTS_JITTER", "N", NULL, 0, LMAX,
     "With --workers: each worker retires after up to this many more requests, at random."},
    {"timeout-worker-healthcheck", CG_OPT_FLOAT, F(timeout_worker_healthcheck), "30",
     "CASGI_TIMEOUT_WORKER_HEALTHCHECK", "SECONDS", NULL, 0, NOMAX,
     "With --workers: replace a worker whose event loop is stuck this long (0 = never)."},
    {"timeout-worker-startup", CG_OPT_FLOAT, F(timeout_worker_startup), "60",
     "CASGI_TIMEOUT_WORKER_STARTUP", "SECONDS", NULL, 0, NOMAX,
     "With --workers or --reload: replace a worker not serving this long after it started, "
     "lifespan startup included (0 = never)."},
    {"ws", CG_OPT_CHOICE, F(ws), "auto", "CASGI_WS", NULL, ws_choices, 0, 0,
     "WebSocket support: none serves upgrade requests as plain HTTP; every other choice "
     "(uvicorn's websockets, wsproto, websockets-sansio included) uses casgi's C implementation."},
    {"ws-max-size", CG_OPT_INT, F(ws_max_size), "16777216", "CASGI_WS_MAX_SIZE", "BYTES", NULL, 1,
     LMAX, "Largest WebSocket message accepted (after decompression); larger closes with 1009."},
    {"ws-max-queue", CG_OPT_INT, F(ws_max_queue), "32", "CASGI_WS_MAX_QUEUE", "N", NULL, 1, LMAX,
     "Received WebSocket messages waiting for the app before reading pauses."},
    {"ws-ping-interval", CG_OPT_FLOAT, F(ws_ping_interval), "20", "CASGI_WS_PING_INTERVAL",
     "SECONDS", NULL, 0, NOMAX, "Send a WebSocket ping this often (0 = never)."},
    {"ws-ping-timeout", CG_OPT_FLOAT, F(ws_ping_timeout), "20", "CASGI_WS_PING_TIMEOUT", "SECONDS",
     NULL, 0, NOMAX, "Close with 1011 when a ping gets no pong within this time (0 = wait)."},
    {"ws-per-message-deflate", CG_OPT_BOOL, F(ws_per_message_deflate), "true",
     "CASGI_WS_PER_MESSAGE_DEFLATE", NULL, NULL, 0, 0,
     "Allow the permessage-deflate WebSocket extension."},
    {"proxy-headers", CG_OPT_BOOL, F(proxy_headers), "true", "CASGI_PROXY_HEADERS", NULL, NULL, 0,
     0,
     "Take the client address and scheme from X-Forwarded-For / X-Forwarded-Proto sent by a "
     "trusted proxy."},
    {"forwarded-allow-ips", CG_OPT_STR, F(forwarded_allow_ips), "127.0.0.1,::1",
     "FORWARDED_ALLOW_IPS", "IPS", NULL, 0, 0,
     "Comma-separated proxies trusted for proxy headers: addresses, networks (10.0.0.0/8, "
     "::/0), 'unix:' for peers on a Unix socket, or '*' for all."},
    {"server-header", CG_OPT_BOOL, F(server_header), "true", "CASGI_SERVER_HEADER", NULL, NULL, 0,
     0, "Add a 'server: casgi' header to responses."},
    {"date-header", CG_OPT_BOOL, F(date_header), "true", "CASGI_DATE_HEADER", NULL, NULL, 0, 0,
     "Add a 'date' header to responses."},
    {"ssl-keyfile", CG_OPT_STR, F(ssl_keyfile), NULL, "CASGI_SSL_KEYFILE", "PATH", NULL, 0, 0,
     "TLS private key (PEM, PKCS#1 or PKCS#8, may be encrypted); without it the key is read "
     "from --ssl-certfile."},
    {"ssl-certfile", CG_OPT_STR, F(ssl_certfile), NULL, "CASGI_SSL_CERTFILE", "PATH", NULL, 0, 0,
     "TLS certificate (PEM) followed by its chain: serve HTTPS and WSS."},
    {"ssl-keyfile-password", CG_OPT_STR, F(ssl_keyfile_password), NULL,
     "CASGI_SSL_KEYFILE_PASSWORD", "PASSWORD", NULL, 0, 0, "Password of an encrypted key."},
    {"ssl-version", CG_OPT_INT, F(ssl_version), "17", "CASGI_SSL_VERSION", "N", NULL, 0, INT_MAX,
     "TLS versions as Python's ssl.PROTOCOL_* number: 17 or 2 negotiate TLS 1.2 or 1.3, 5 "
     "allows TLS 1.2 only."},
    {"ssl-cert-reqs", CG_OPT_INT, F(ssl_cert_reqs), "0", "CASGI_SSL_CERT_REQS", "N", NULL, 0, 2,
     "Client certificates: 0 not asked for, 1 optional (one that fails verification is let in "
     "and reported to the app), 2 required."},
    {"ssl-ca-certs", CG_OPT_STR, F(ssl_ca_certs), NULL, "CASGI_SSL_CA_CERTS", "PATH", NULL, 0, 0,
     "CA certificates (PEM) that verify client certificates."},
    {"ssl-ciphers", CG_OPT_STR, F(ssl_ciphers), "TLSv1", "CASGI_SSL_CIPHERS", "LIST", NULL, 0, 0,
     "OpenSSL cipher list for TLS 1.2; uvicorn's default TLSv1 means OpenSSL's default list."},
    {"timeout-handshake", CG_OPT_FLOAT, F(timeout_handshake), "10", "CASGI_TIMEOUT_HANDSHAKE",
     "SECONDS", NULL, 0, NOMAX,
     "Close a connection whose TLS handshake is not complete after this many seconds (0 = "
     "never)."},
    {"header", CG_OPT_LIST, F(headers), NULL, "CASGI_HEADER", "NAME:VALUE", NULL, 0, 0,
     "Add this header to every response; repeatable (one per line in the env var)."},
    {"env-file", CG_OPT_STR, F(env_file), NULL, "CASGI_ENV_FILE", "PATH", NULL, 0, 0,
     "Load environment variables from this dotenv file before importing APP."},
    {"limit-request-line", CG_OPT_INT, F(limit_request_line), "8190", "CASGI_LIMIT_REQUEST_LINE",
     "BYTES", NULL, 1, INT_MAX, "Longest request line accepted; longer gets 414."},
    {"limit-request-fields", CG_OPT_INT, F(limit_request_fields), "100",
     "CASGI_LIMIT_REQUEST_FIELDS", "N", NULL, 1, INT_MAX,
     "Most header fields in a request head; more gets 431."},
    {"limit-request-field-size", CG_OPT_INT, F(limit_request_field_size), "8190",
     "CASGI_LIMIT_REQUEST_FIELD_SIZE", "BYTES", NULL, 1, INT_MAX,
     "Longest header field (name, colon and value) accepted; longer gets 431."},
};
const size_t cg_options_count = sizeof(cg_options) / sizeof(cg_options[0]);

#undef F

/* ---- small helpers ---- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void *field(cg_config *c, const cg_option *o)
{
    return (char *)c + o->offset;
}

/* Names compare with '-' and '_' interchangeable. */
static int name_eq(const char *a, const char *b, size_t blen)
{
    size_t i;
    for (i = 0; i < blen; i++) {
        char x = a[i], y = b[i];
        if (x == '\0')
            return 0;
        if (x == '_')
            x = '-';
        if (y == '_')
            y = '-';
        if (x != y)
            return 0;
    }
    return a[i] == '\0';
}

static const cg_option *find_n(const char *name, size_t len)
{
    for (size_t i = 0; i < cg_options_count; i++)
        if (name_eq(cg_options[i].name, name, len))
            return &cg_options[i];
    return NULL;
}

const cg_option *cg_option_find(const char *name)
{
    return name ? find_n(name, strlen(name)) : NULL;
}

static int is_app(const cg_option *o)
{
    return o == &cg_options[0];
}

static int is_header(const cg_option *o)
{
    return o->type == CG_OPT_LIST && strcmp(o->name, "header") == 0;
}

/* 1 when `text` equals the lower-case `lower` ignoring ASCII case. */
static int lower_eq(const char *text, const char *lower)
{
    return cg_ascii_ieq(text, strlen(text), lower);
}

/* Returns 1/0, or -1 when the text is not a boolean. */
static int parse_bool(const char *t)
{
    static const char *const yes[] = {"true", "1", "yes", "on", "y", "t"};
    static const char *const no[] = {"false", "0", "no", "off", "n", "f"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (lower_eq(t, yes[i]))
            return 1;
        if (lower_eq(t, no[i]))
            return 0;
    }
    return -1;
}

/* The label an error names: "--port", "APP", or "CASGI_PORT" for the environment. */
static void label_of(const cg_option *o, char *buf, size_t n)
{
    if (is_app(o))
        snprintf(buf, n, "APP");
    else
        snprintf(buf, n, "--%s", o->name);
}

/* The message names the lower bound alone when there is no real upper one,
 * or when the value is below it and the upper one is only a type's limit; a
 * value above a bound that is meant (2147483647 for an HTTP/2 window) names
 * the range. */
static void range_err(char *err, size_t errlen, const char *label, const char *text,
                      const cg_option *o, int integral, int below)
{
    if (o->max >= LMAX || (below && o->max >= (double)INT_MAX)) {
        if (integral)
            cg_set_err(err, errlen, "invalid value for '%s': %s is not >= %ld", label, text,
                       (long)o->min);
        else
            cg_set_err(err, errlen, "invalid value for '%s': %s is not >= %g", label, text, o->min);
    } else if (integral) {
        cg_set_err(err, errlen, "invalid value for '%s': %s is not in the range %ld..%ld", label,
                   text, (long)o->min, (long)o->max);
    } else {
        cg_set_err(err, errlen, "invalid value for '%s': %s is not in the range %g..%g", label,
                   text, o->min, o->max);
    }
}

static int list_append(cg_strlist *l, const char *text)
{
    char *copy = dup_str(text);
    char **items;
    if (!copy)
        return -1;
    items = realloc(l->items, (l->n + 1) * sizeof(*items));
    if (!items) {
        free(copy);
        return -1;
    }
    items[l->n++] = copy;
    l->items = items;
    return 0;
}

static int is_tchar(unsigned char ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A --header value: a token name, then a value free of control characters. */
static int check_header(const char *label, const char *text, char *err, size_t errlen)
{
    const char *name, *value;
    size_t nlen, vlen;
    if (cg_header_option_split(text, &name, &nlen, &value, &vlen) < 0) {
        cg_set_err(err, errlen, "invalid value for '%s': '%s' is not NAME:VALUE", label, text);
        return -1;
    }
    for (size_t i = 0; i < nlen; i++) {
        if (!is_tchar((unsigned char)name[i])) {
            cg_set_err(err, errlen, "invalid value for '%s': '%.*s' is not a valid header name",
                       label, (int)nlen, name);
            return -1;
        }
    }
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            cg_set_err(err, errlen,
                       "invalid value for '%s': the value of header '%.*s' contains a control "
                       "character",
                       label, (int)nlen, name);
            return -1;
        }
    }
    return 0;
}

/* A --forwarded-allow-ips list: every entry must parse (a bad one is a usage
 * error, not an entry that never matches). */
static int check_forwarded(const cg_option *o, const char *label, const char *text, char *err,
                           size_t errlen)
{
    cg_proxy_trust t;
    cg_slice bad;
    int rc;
    if (o->offset != offsetof(cg_config, forwarded_allow_ips))
        return 0;
    rc = cg_proxy_trust_parse(&t, text, &bad);
    if (rc == CG_PROXY_NO_MEMORY) {
        cg_set_err(err, errlen, "out of memory");
        return -1;
    }
    if (rc < 0) {
        cg_set_err(err, errlen, "invalid value for '%s': '%.*s' %s", label, (int)bad.len, bad.base,
                   cg_proxy_strerror(rc));
        return -1;
    }
    cg_proxy_trust_free(&t);
    return 0;
}

/* Sets `o` from text; errors name `label`. */
static int set_labeled(cg_config *c, const cg_option *o, const char *text, const char *label,
                       char *err, size_t errlen)
{
    void *p = field(c, o);
    switch (o->type) {
    case CG_OPT_STR: {
        if (check_forwarded(o, label, text, err, errlen) < 0)
            return -1;
        char *copy = dup_str(text);
        if (!copy)
            goto nomem;
        free(*(char **)p);
        *(char **)p = copy;
        return 0;
    }
    case CG_OPT_INT: {
        char *end;
        long v;
        if (!*text || isspace((unsigned char)*text))
            goto not_int;
        errno = 0;
        v = strtol(text, &end, 10);
        if (*end)
            goto not_int;
        if (errno == ERANGE || (double)v < o->min || (double)v > o->max) {
            range_err(err, errlen, label, text, o, 1, (double)v < o->min);
            return -1;
        }
        if (o->offset == offsetof(cg_config, ssl_version) && cg_tls_version_problem(v)) {
            cg_set_err(err, errlen, "invalid value for '%s': %s: %s", label, text,
                       cg_tls_version_problem(v));
            return -1;
        }
        *(long *)p = v;
        return 0;
    not_int:
        cg_set_err(err, errlen, "invalid value for '%s': '%s' is not an integer", label, text);
        return -1;
    }
    case CG_OPT_FLOAT: {
        char *end;
        double v;
        if (!*text || isspace((unsigned char)*text))
            goto not_num;
        errno = 0;
        v = strtod(text, &end);
        if (*end || !isfinite(v))
            goto not_num;
        if (v < o->min || v > o->max) {
            range_err(err, errlen, label, text, o, 0, v < o->min);
            return -1;
        }
        *(double *)p = v;
        return 0;
    not_num:
        cg_set_err(err, errlen, "invalid value for '%s': '%s' is not a number", label, text);
        return -1;
    }
    case CG_OPT_BOOL:
    case CG_OPT_FLAG: {
        int v = parse_bool(text);
        if (v < 0) {
            cg_set_err(err, errlen,
                       "invalid value for '%s': '%s' is not a boolean (true/false, 1/0, yes/no, "
                       "on/off)",
                       label, text);
            return -1;
        }
        *(int *)p = v;
        return 0;
    }
    case CG_OPT_CHOICE: {
        size_t n = 0, off = 0;
        char list[256];
        for (size_t i = 0; o->choices[i]; i++) {
            if (lower_eq(text, o->choices[i])) {
                *(int *)p = (int)i;
                return 0;
            }
        }
        list[0] = '\0';
        for (n = 0; o->choices[n] && off < sizeof(list); n++) {
            int w =
                snprintf(list + off, sizeof(list) - off, "%s'%s'", n ? ", " : "", o->choices[n]);
            if (w < 0)
                break;
            off += (size_t)w;
        }
        cg_set_err(err, errlen, "invalid value for '%s': '%s' is not one of %s", label, text, list);
        return -1;
    }
    case CG_OPT_LIST:
        if (is_header(o) && check_header(label, text, err, errlen) < 0)
            return -1;
        if (list_append((cg_strlist *)p, text) < 0)
            goto nomem;
        return 0;
    }
    cg_set_err(err, errlen, "internal error: bad option type for '%s'", label);
    return -1;
nomem:
    cg_set_err(err, errlen, "out of memory");
    return -1;
}

int cg_option_set(cg_config *c, const cg_option *o, const char *text, char *err, size_t errlen)
{
    char label[64];
    label_of(o, label, sizeof(label));
    return set_labeled(c, o, text, label, err, errlen);
}

void cg_option_clear(cg_config *c, const cg_option *o)
{
    void *p = field(c, o);
    switch (o->type) {
    case CG_OPT_LIST: {
        cg_strlist *l = p;
        for (size_t i = 0; i < l->n; i++)
            free(l->items[i]);
        free(l->items);
        l->items = NULL;
        l->n = 0;
        break;
    }
    case CG_OPT_STR:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    default:
        break;
    }
}

static const char *env_get(char *const envp[], const char *name)
{
    size_t n = strlen(name);
    if (!envp)
        return NULL;
    for (size_t i = 0; envp[i]; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return envp[i] + n + 1;
    return NULL;
}

void cg_config_init(cg_config *c, char *const envp[])
{
    const char *wc;
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        void *p = field(c, o);
        if (o->default_value) {
            /* Defaults in the table are valid; only allocation can fail, which
             * leaves a string unset (NULL) and is caught by the user of it. */
            (void)cg_option_set(c, o, o->default_value, NULL, 0);
            continue;
        }
        switch (o->type) {
        case CG_OPT_INT:
            *(long *)p = -1;
            break;
        case CG_OPT_FLOAT:
            *(double *)p = -1;
            break;
        case CG_OPT_BOOL:
            *(int *)p = -1;
            break;
        default:
            break;
        }
    }
    wc = env_get(envp, "WEB_CONCURRENCY");
    if (wc) {
        const cg_option *o = cg_option_find("workers");
        long keep = c->workers;
        if (cg_option_set(c, o, wc, NULL, 0) < 0)
            c->workers = keep;
    }
}

void cg_config_free(cg_config *c)
{
    for (size_t i = 0; i < cg_options_count; i++)
        cg_option_clear(c, &cg_options[i]);
}

/* A list option set from the environment holds one item per non-empty line. */
static int set_env_list(cg_config *c, const cg_option *o, const char *text, const char *label,
                        char *err, size_t errlen)
{
    char *copy = dup_str(text), *line, *save = NULL;
    int rc = 0;
    if (!copy) {
        cg_set_err(err, errlen, "out of memory");
        return -1;
    }
    for (line = strtok_r(copy, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        if (!*line)
            continue;
        if (set_labeled(c, o, line, label, err, errlen) < 0) {
            rc = -1;
            break;
        }
    }
    free(copy);
    return rc;
}

/* Applies the environment. With `bad` NULL the first invalid variable is an
 * error; otherwise each invalid one only marks its option in `bad` (the
 * command line may still set that option) and the call succeeds. */
static int apply_env(cg_config *c, char *const envp[], char *err, size_t errlen, unsigned char *bad)
{
    const char *wc = env_get(envp, "WEB_CONCURRENCY");
    const cg_option *workers = cg_option_find("workers");
    if (wc && set_labeled(c, workers, wc, "WEB_CONCURRENCY", err, errlen) < 0) {
        if (!bad)
            return -1;
        bad[workers - cg_options] = 1;
    }
    for (size_t i = 0; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        const char *v = o->env ? env_get(envp, o->env) : NULL;
        int rc;
        if (!v)
            continue;
        if (o->type == CG_OPT_LIST) {
            cg_option_clear(c, o);
            rc = set_env_list(c, o, v, o->env, err, errlen);
        } else {
            rc = set_labeled(c, o, v, o->env, err, errlen);
        }
        if (rc < 0) {
            if (!bad)
                return -1;
            bad[i] = 1;
        }
    }
    if (err && errlen)
        err[0] = '\0';
    return 0;
}

int cg_config_apply_env(cg_config *c, char *const envp[], char *err, size_t errlen)
{
    return apply_env(c, envp, err, errlen, NULL);
}

/* The error an invalid environment variable for option index i gave. */
static void env_error(size_t i, char *const envp[], char *err, size_t errlen)
{
    cg_config scratch;
    const cg_option *o = &cg_options[i];
    const char *wc = env_get(envp, "WEB_CONCURRENCY");
    const char *v = o->env ? env_get(envp, o->env) : NULL;
    memset(&scratch, 0, sizeof(scratch));
    /* WEB_CONCURRENCY is read first, so it is the culprit if it is bad. */
    if (wc && strcmp(o->name, "workers") == 0 &&
        set_labeled(&scratch, o, wc, "WEB_CONCURRENCY", err, errlen) < 0)
        goto out;
    if (v) {
        if (o->type == CG_OPT_LIST)
            set_env_list(&scratch, o, v, o->env, err, errlen);
        else
            set_labeled(&scratch, o, v, o->env, err, errlen);
    }
out:
    cg_config_free(&scratch);
}

/* ---- "did you mean" ---- */

/* Optimal string alignment distance (a transposition counts as one edit). */
static size_t edit_distance(const char *a, size_t n, const char *b, size_t m)
{
    size_t d[64][64];
    if (n >= 64 || m >= 64)
        return (size_t)-1;
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[n][m];
}

/* Writes the closest "--name" (or "--no-name") to `name` into out, or "" when none is close. */
static void closest_option(const char *name, size_t len, char *out, size_t outlen)
{
    size_t best = (size_t)-1;
    size_t limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    out[0] = '\0';
    for (size_t i = 1; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        char cand[80];
        for (int neg = 0; neg <= (o->type == CG_OPT_BOOL); neg++) {
            size_t d;
            snprintf(cand, sizeof(cand), "%s%s", neg ? "no-" : "", o->name);
            d = edit_distance(name, len, cand, strlen(cand));
            if (d <= limit && d < best) {
                best = d;
                snprintf(out, outlen, "--%s", cand);
            }
        }
    }
    static const char *const extra[] = {"help", "version"};
    for (size_t i = 0; i < 2; i++) {
        size_t d = edit_distance(name, len, extra[i], strlen(extra[i]));
        if (d <= limit && d < best) {
            best = d;
            snprintf(out, outlen, "--%s", extra[i]);
        }
    }
}

static void unknown_option(const char *arg, size_t len, char *err, size_t errlen)
{
    char guess[80];
    const cg_option *o;
    if (len > 5 && strncmp(arg, "--no-", 5) == 0 && (o = find_n(arg + 5, len - 5)) != NULL &&
        !is_app(o)) {
        cg_set_err(err, errlen, "unknown option '%.*s' ('--%s' has no --no- form)", (int)len, arg,
                   o->name);
        return;
    }
    if (len > 2 && arg[0] == '-' && arg[1] == '-')
        closest_option(arg + 2, len - 2, guess, sizeof(guess));
    else
        guess[0] = '\0';
    if (guess[0])
        cg_set_err(err, errlen, "unknown option '%.*s' (did you mean '%s'?)", (int)len, arg, guess);
    else
        cg_set_err(err, errlen, "unknown option '%.*s'", (int)len, arg);
}

/* ---- command line ---- */

int cg_config_parse(cg_config *c, int argc, char *const argv[], char *const envp[], char *err,
                    size_t errlen)
{
    /* Per option: set on the command line already (a list then appends
     * instead of replacing what the environment gave). */
    unsigned char seen[sizeof(cg_options) / sizeof(cg_options[0])] = {0};
    /* Per option: its environment variable is invalid. That is an error
     * only when the command line does not set the option (as click does). */
    unsigned char bad[sizeof(cg_options) / sizeof(cg_options[0])] = {0};
    int have_app = 0, only_positional = 0;

    if (err && errlen)
        err[0] = '\0';
    apply_env(c, envp, err, errlen, bad);

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq, *name, *value = NULL;
        const cg_option *o;
        size_t nlen;
        int neg = 0;
        char label[80];

        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (have_app) {
                cg_set_err(err, errlen, "unexpected extra argument '%s'", arg);
                return CG_PARSE_ERROR;
            }
            if (cg_option_set(c, &cg_options[0], arg, err, errlen) < 0)
                return CG_PARSE_ERROR;
            have_app = 1;
            seen[0] = 1;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
            return CG_PARSE_HELP;
        if (strcmp(arg, "--version") == 0)
            return CG_PARSE_VERSION;
        if (arg[1] != '-') {
            unknown_option(arg, strlen(arg), err, errlen);
            return CG_PARSE_ERROR;
        }
        name = arg + 2;
        eq = strchr(name, '=');
        nlen = eq ? (size_t)(eq - name) : strlen(name);
        /* Only the exact spelling with '-' is accepted on the command line. */
        o = memchr(name, '_', nlen) ? NULL : find_n(name, nlen);
        if (o && is_app(o))
            o = NULL;
        if (!o && nlen > 3 && strncmp(name, "no-", 3) == 0 && !memchr(name, '_', nlen)) {
            o = find_n(name + 3, nlen - 3);
            if (o && o->type == CG_OPT_BOOL)
                neg = 1;
            else
                o = NULL;
        }
        if (!o) {
            unknown_option(arg, (size_t)(name - arg) + nlen, err, errlen);
            return CG_PARSE_ERROR;
        }
        snprintf(label, sizeof(label), "--%.*s", (int)nlen, name);
        if (o->type == CG_OPT_FLAG || (o->type == CG_OPT_BOOL && neg)) {
            if (eq) {
                cg_set_err(err, errlen, "option '%s' does not take a value", label);
                return CG_PARSE_ERROR;
            }
            value = neg ? "false" : "true";
        } else if (o->type == CG_OPT_BOOL) {
            /* Also spelled with a value, as uvicorn has some switches:
             * "--ws-per-message-deflate false", "--access-log=0". */
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc && parse_bool(argv[i + 1]) >= 0)
                value = argv[++i];
            else
                value = "true";
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            cg_set_err(err, errlen, "option '%s' requires an argument", label);
            return CG_PARSE_ERROR;
        }
        if (o->type == CG_OPT_LIST && !seen[o - cg_options])
            cg_option_clear(c, o);
        seen[o - cg_options] = 1;
        if (set_labeled(c, o, value, label, err, errlen) < 0)
            return CG_PARSE_ERROR;
    }
    for (size_t i = 0; i < cg_options_count; i++) {
        if (bad[i] && !seen[i]) {
            env_error(i, envp, err, errlen);
            return CG_PARSE_ERROR;
        }
    }
    if (!c->app) {
        cg_set_err(err, errlen, "missing argument 'APP'");
        return CG_PARSE_ERROR;
    }
    if (cg_config_check(c, err, errlen) < 0)
        return CG_PARSE_ERROR;
    return CG_PARSE_OK;
}

int cg_config_check(const cg_config *c, char *err, size_t errlen)
{
    if (!c->ssl_certfile) {
        const char *given = c->ssl_keyfile            ? "--ssl-keyfile"
                            : c->ssl_keyfile_password ? "--ssl-keyfile-password"
                            : c->ssl_ca_certs         ? "--ssl-ca-certs"
                            : c->ssl_cert_reqs > 0    ? "--ssl-cert-reqs"
                                                      : NULL;
        if (given) {
            cg_set_err(err, errlen,
                       "option '%s' requires '--ssl-certfile' (TLS is off without a "
                       "certificate)",
                       given);
            return -1;
        }
        return 0;
    }
    if (!cg_tls_available()) {
        cg_set_err(err, errlen,
                   "TLS is not available: casgi was built without OpenSSL (install libssl-dev and "
                   "reinstall)");
        return -1;
    }
    if (c->ssl_cert_reqs == 2 && !c->ssl_ca_certs) {
        cg_set_err(err, errlen,
                   "option '--ssl-cert-reqs 2' requires '--ssl-ca-certs' (the CA certificates that "
                   "verify client certificates)");
        return -1;
    }
    if (err && errlen)
        err[0] = '\0';
    return 0;
}

/* ---- --help ---- */

static void option_label(const cg_option *o, char *buf, size_t n)
{
    if (o->type == CG_OPT_BOOL) {
        snprintf(buf, n, "--%s / --no-%s", o->name, o->name);
    } else if (o->type == CG_OPT_FLAG) {
        snprintf(buf, n, "--%s", o->name);
    } else if (o->type == CG_OPT_CHOICE && !o->metavar) {
        size_t off = (size_t)snprintf(buf, n, "--%s [", o->name);
        for (size_t i = 0; o->choices[i] && off < n; i++)
            off += (size_t)snprintf(buf + off, n - off, "%s%s", i ? "|" : "", o->choices[i]);
        if (off < n)
            snprintf(buf + off, n - off, "]");
    } else {
        snprintf(buf, n, "--%s %s", o->name, o->metavar ? o->metavar : "VALUE");
    }
}

static void help_line(FILE *out, const char *left, const char *text, const char *extra)
{
    if (strlen(left) <= 36)
        fprintf(out, "  %-36s  %s", left, text);
    else
        fprintf(out, "  %s  %s", left, text);
    if (extra && *extra)
        fprintf(out, "  [%s]", extra);
    fputc('\n', out);
}

void cg_options_help(FILE *out, const char *prog)
{
    char left[128], extra[160];
    const cg_option *app = &cg_options[0];

    fprintf(out, "Usage: %s [OPTIONS] APP\n\n", prog);
    fprintf(out, "  Serve the ASGI application APP, e.g. '%s main:app --port 8000'.\n\n", prog);
    fprintf(out, "  Every option can also be set by its environment variable, and by\n"
                 "  casgi.run() with '_' for '-'. Precedence: option, environment, default.\n\n");
    fprintf(out, "Arguments:\n");
    snprintf(extra, sizeof(extra), "required; env: %s", app->env);
    help_line(out, app->metavar, app->help, extra);
    fprintf(out, "\nOptions:\n");
    for (size_t i = 1; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        option_label(o, left, sizeof(left));
        if (strcmp(o->name, "workers") == 0 || !o->default_value ||
            (o->type == CG_OPT_STR && !*o->default_value))
            snprintf(extra, sizeof(extra), "env: %s", o->env);
        else if (o->type == CG_OPT_BOOL)
            snprintf(extra, sizeof(extra), "default: %s; env: %s",
                     parse_bool(o->default_value) ? "on" : "off", o->env);
        else
            snprintf(extra, sizeof(extra), "default: %s; env: %s", o->default_value, o->env);
        help_line(out, left, o->help, extra);
    }
    help_line(out, "--version", "Show the version and exit.", NULL);
    help_line(out, "-h, --help", "Show this message and exit.", NULL);
}

/* ---- --header and --env-file ---- */

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

int cg_header_option_split(const char *text, const char **name, size_t *name_len,
                           const char **value, size_t *value_len)
{
    const char *colon = strchr(text, ':');
    const char *ns = text, *ne, *vs, *ve;
    if (!colon)
        return -1;
    ne = colon;
    while (ns < ne && is_blank(*ns))
        ns++;
    while (ne > ns && is_blank(ne[-1]))
        ne--;
    if (ne == ns)
        return -1;
    vs = colon + 1;
    ve = vs + strlen(vs);
    while (vs < ve && is_blank(*vs))
        vs++;
    while (ve > vs && is_blank(ve[-1]))
        ve--;
    *name = ns;
    *name_len = (size_t)(ne - ns);
    *value = vs;
    *value_len = (size_t)(ve - vs);
    return 0;
}

static int is_key_char(char ch, int first)
{
    unsigned char u = (unsigned char)ch;
    if (isalpha(u) || ch == '_')
        return 1;
    return !first && (isdigit(u) || ch == '.' || ch == '-');
}

int cg_envfile_parse(const char *text, size_t len,
                     void (*cb)(const char *key, const char *value, void *ctx), void *ctx)
{
    /* key and value are copied into one scratch buffer; a value is never
     * longer than the text it came from. */
    char *buf = malloc(len + 2);
    size_t pos = 0;
    int line = 1, rc = 0;

    if (!buf)
        return -1;
    while (pos < len) {
        int start_line = line;
        size_t p = pos, ks, ke, vo = 0;
        char *key = buf, *val;

        while (p < len && (is_blank(text[p]) || text[p] == '\r'))
            p++;
        if (p >= len)
            break;
        if (text[p] == '\n') {
            pos = p + 1;
            line++;
            continue;
        }
        if (text[p] == '#') {
            while (p < len && text[p] != '\n')
                p++;
            pos = p;
            continue;
        }
        if (len - p > 6 && strncmp(text + p, "export", 6) == 0 && is_blank(text[p + 6])) {
            p += 7;
            while (p < len && is_blank(text[p]))
                p++;
        }
        ks = p;
        while (p < len && is_key_char(text[p], p == ks))
            p++;
        ke = p;
        while (p < len && is_blank(text[p]))
            p++;
        if (ke == ks || p >= len || text[p] != '=')
            goto malformed;
        p++;
        memcpy(key, text + ks, ke - ks);
        key[ke - ks] = '\0';
        val = key + (ke - ks) + 1;
        while (p < len && is_blank(text[p]))
            p++;
        if (p < len && (text[p] == '"' || text[p] == '\'')) {
            char q = text[p++];
            for (;;) {
                char ch;
                if (p >= len)
                    goto malformed; /* unterminated quote */
                ch = text[p++];
                if (ch == '\0')
                    goto malformed;
                if (ch == '\n')
                    line++;
                if (ch == q)
                    break;
                if (ch == '\\' && q == '"' && p < len) {
                    char e = text[p];
                    if (e == 'n' || e == 't' || e == '"' || e == '\\') {
                        p++;
                        ch = e == 'n' ? '\n' : e == 't' ? '\t' : e;
                    }
                }
                val[vo++] = ch;
            }
            /* After the closing quote: only blanks and an optional comment. */
            while (p < len && (is_blank(text[p]) || text[p] == '\r'))
                p++;
            if (p < len && text[p] == '#')
                while (p < len && text[p] != '\n')
                    p++;
            if (p < len && text[p] != '\n')
                goto malformed;
        } else {
            size_t vs = p;
            while (p < len && text[p] != '\n') {
                if (text[p] == '\0')
                    goto malformed;
                /* An unquoted value ends at " #comment". */
                if (text[p] == '#' && p > vs && is_blank(text[p - 1]))
                    break;
                p++;
            }
            size_t ve = p;
            while (ve > vs && (is_blank(text[ve - 1]) || text[ve - 1] == '\r'))
                ve--;
            memcpy(val, text + vs, ve - vs);
            vo = ve - vs;
            while (p < len && text[p] != '\n')
                p++;
        }
        val[vo] = '\0';
        cb(key, val, ctx);
        pos = p;
        continue;
    malformed:
        rc = start_line;
        break;
    }
    free(buf);
    return rc;
}
