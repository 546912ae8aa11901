/* The one table of options: every CLI flag, CASGI_* environment variable and
 * casgi.run() keyword comes from cg_options[]. Names and defaults follow
 * uvicorn's where uvicorn has the option. Precedence: CLI / run() keyword,
 * then environment, then default. */
#ifndef CG_OPTIONS_H
#define CG_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

typedef struct cg_strlist {
    char **items; /* owned, each malloc'd */
    size_t n;
} cg_strlist;

enum cg_loop_kind { CG_LOOP_AUTO, CG_LOOP_ASYNCIO, CG_LOOP_UVLOOP };
enum cg_lifespan_mode { CG_LIFESPAN_AUTO, CG_LIFESPAN_ON, CG_LIFESPAN_OFF };
enum cg_ws_mode {
    CG_WS_AUTO,
    CG_WS_CASGI,
    CG_WS_NONE,
    /* uvicorn's implementations, served by casgi's own. */
    CG_WS_WEBSOCKETS,
    CG_WS_WSPROTO,
    CG_WS_WEBSOCKETS_SANSIO
};
/* uvicorn's --http choices, all served by casgi's own HTTP/1.1. */
enum cg_http_mode { CG_HTTP_AUTO, CG_HTTP_H11, CG_HTTP_HTTPTOOLS };
enum cg_interface { CG_INTERFACE_AUTO, CG_INTERFACE_ASGI3, CG_INTERFACE_ASGI2 };
enum cg_log_level {
    CG_LOG_CRITICAL,
    CG_LOG_ERROR,
    CG_LOG_WARNING,
    CG_LOG_INFO,
    CG_LOG_DEBUG,
    CG_LOG_TRACE
};

/* Parsed configuration. Strings and lists are owned (cg_config_free).
 * "Unset" is NULL for strings, -1 for numbers and tri-state booleans. */
typedef struct cg_config {
    char *app;                          /* positional APP, "module:attr" */
    int factory;                        /* --factory */
    char *app_dir;                      /* --app-dir, default "." */
    char *host;                         /* --host, default "127.0.0.1" */
    long port;                          /* --port, default 8000; 0 = ephemeral */
    char *uds;                          /* --uds PATH */
    long fd;                            /* --fd N, -1 unset */
    long backlog;                       /* --backlog, default 2048 */
    int loop;                           /* enum cg_loop_kind, --loop */
    int lifespan;                       /* enum cg_lifespan_mode, --lifespan */
    int interface;                      /* enum cg_interface, --interface */
    int http;                           /* enum cg_http_mode, --http (no effect) */
    long h11_max_incomplete_event_size; /* longest incomplete head, -1 = no own bound */
    int reset_contextvars;              /* --reset-contextvars (already the behaviour) */
    char *root_path;                    /* --root-path, default "" */
    int log_level;                      /* enum cg_log_level, default info */
    int access_log;                     /* --access-log/--no-access-log, default 1 */
    char *access_log_format;   /* --access-log-format: gunicorn's atoms, NULL = uvicorn's line */
    int access_log_json;       /* --access-log-json */
    int use_colors;            /* --use-colors/--no-use-colors, -1 = auto (TTY) */
    char *log_config;          /* --log-config PATH */
    double timeout_keep_alive; /* seconds, default 5 */
    double timeout_graceful_shutdown; /* seconds, -1 = wait without bound */
    double timeout_request_header;    /* seconds, default 30 */
    double timeout_request_body_idle; /* seconds without body progress, default 60; 0 = off */
    long limit_concurrency;           /* -1 = unlimited */
    long limit_max_requests;          /* -1 = unlimited */
    int server_header;                /* default 1 */
    int date_header;                  /* default 1 */
    cg_strlist headers;            /* --header NAME:VALUE, repeatable, validated to contain ':' */
    char *env_file;                /* --env-file PATH */
    long limit_request_line;       /* default 8190 */
    long limit_request_field_size; /* default 8190 */
    long limit_request_fields;     /* default 100 */
    long workers;                  /* --workers, default $WEB_CONCURRENCY or 1 */
    /* Process management (supervisor). */
    int reload;                        /* --reload */
    cg_strlist reload_dirs;            /* --reload-dir, repeatable; empty = "." */
    cg_strlist reload_includes;        /* --reload-include, repeatable; empty = "*.py" */
    cg_strlist reload_excludes;        /* --reload-exclude, repeatable */
    double reload_delay;               /* --reload-delay, debounce seconds, default 0.1 */
    int reload_poll;                   /* --reload-poll (env CASGI_RELOAD_POLL=1) */
    int reload_standby;                /* --reload-standby/--no-reload-standby, default 1 */
    double timeout_worker_healthcheck; /* seconds without heartbeat, default 30; 0 = off */
    double timeout_worker_startup;     /* seconds from start to ready, default 60; 0 = off */
    long limit_max_requests_jitter;    /* random extra requests per worker, default 0 */
    int proxy_headers;                 /* --proxy-headers/--no-proxy-headers, default 1 */
    int proxy_protocol;                /* --proxy-protocol: CG_PP_OFF, _V1, _V2 or _ANY */
    char *forwarded_allow_ips;         /* comma-separated trusted proxy IPs or "*" */
    /* WebSockets. */
    int ws;                     /* enum cg_ws_mode, --ws */
    long ws_max_size;           /* largest message (decompressed), default 16 MiB */
    long ws_max_queue;          /* received messages waiting for the app, default 32 */
    double ws_ping_interval;    /* seconds between server pings, 0 = none, default 20 */
    double ws_ping_timeout;     /* seconds to wait for a pong, 0 = none, default 20 */
    int ws_per_message_deflate; /* allow permessage-deflate, default 1 */
    /* TLS (uvicorn's --ssl-* names and defaults). TLS is on when
     * ssl_certfile is set. */
    char *ssl_keyfile;          /* PEM key; NULL = the key is in ssl_certfile */
    char *ssl_certfile;         /* PEM certificate and chain */
    char *ssl_keyfile_password; /* for an encrypted key */
    long ssl_version;           /* Python's ssl.PROTOCOL_*: 17 (default) or 2, 5 = TLS 1.2 only */
    long ssl_cert_reqs;         /* client certificates: 0 none (default), 1 optional, 2 required */
    char *ssl_ca_certs;         /* PEM CAs verifying client certificates */
    char *ssl_ciphers;          /* TLS 1.2 cipher list, default "TLSv1" = OpenSSL's default */
    double timeout_handshake;   /* seconds to complete the TLS handshake, default 10; 0 = off */
    /* HTTP/2 (nghttp2); the h2-* values go into the server's SETTINGS frame. */
    int http2;                      /* --http2 1, --no-http2 0, -1 = neither (cg_config_http2) */
    long h2_max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS, default 100 */
    long h2_max_header_list_size;   /* SETTINGS_MAX_HEADER_LIST_SIZE, bytes, default 65536 */
    long h2_initial_window_size;    /* SETTINGS_INITIAL_WINDOW_SIZE, bytes, default 262144 */
    /* Prometheus metrics (core/metrics.h). */
    long metrics_port;  /* --metrics-port, -1 = no metrics; 0 = ephemeral */
    char *metrics_host; /* --metrics-host, default "127.0.0.1" */
} cg_config;

typedef enum cg_opt_type {
    CG_OPT_STR,    /* char * */
    CG_OPT_INT,    /* long, within [min, max] */
    CG_OPT_FLOAT,  /* double, within [min, max] */
    CG_OPT_BOOL,   /* int 0/1; "--name" sets 1, "--no-name" sets 0 when negatable */
    CG_OPT_FLAG,   /* int 0/1; "--name" only */
    CG_OPT_CHOICE, /* int index into choices */
    CG_OPT_LIST,   /* cg_strlist, each occurrence appends */
} cg_opt_type;

typedef struct cg_option {
    const char *name; /* "timeout-keep-alive"; "app" is the positional */
    cg_opt_type type;
    size_t offset;              /* offsetof(cg_config, field) */
    const char *default_value;  /* as text, NULL = unset */
    const char *env;            /* "CASGI_TIMEOUT_KEEP_ALIVE", NULL = none */
    const char *metavar;        /* for --help: "SECONDS", "PATH" */
    const char *const *choices; /* CG_OPT_CHOICE: NULL-terminated */
    double min, max;            /* CG_OPT_INT / CG_OPT_FLOAT bounds */
    const char *help;
} cg_option;

extern const cg_option cg_options[];
extern const size_t cg_options_count;

enum { CG_PARSE_OK = 0, CG_PARSE_HELP = 1, CG_PARSE_VERSION = 2, CG_PARSE_ERROR = -1 };

/** Fills `c` with every default (WEB_CONCURRENCY read from `envp` for workers;
 * an invalid value there is ignored here and reported by cg_config_apply_env). */
void cg_config_init(cg_config *c, char *const envp[]);
/** Frees owned strings and lists; `c` must be re-initialised before reuse. */
void cg_config_free(cg_config *c);
/** Finds an option by name; '-' and '_' are interchangeable ("limit_concurrency"). */
const cg_option *cg_option_find(const char *name);
/** Sets `o` from text (CLI, environment or a converted run() keyword). A list
 * option appends. Returns 0, or -1 with a one-line message in err. */
int cg_option_set(cg_config *c, const cg_option *o, const char *text, char *err, size_t errlen);
/** Empties a list option (a run() keyword replaces what the environment gave). */
void cg_option_clear(cg_config *c, const cg_option *o);
/** Applies WEB_CONCURRENCY and the CASGI_* variables from envp to an initialised
 * `c` (a list variable holds one item per line and replaces the list). Returns
 * 0, or -1 with a one-line message naming the variable in err. */
int cg_config_apply_env(cg_config *c, char *const envp[], char *err, size_t errlen);
/**
 * Applies CASGI_* variables from envp (as cg_config_apply_env) to `c`, which
 * cg_config_init has filled, then argv[0..argc) (program name NOT
 * included). An invalid variable is an error only when argv does not set
 * its option. Accepts "--name value", "--name=value", "--no-name", "--" and one
 * positional APP. Returns CG_PARSE_OK, CG_PARSE_HELP (-h/--help),
 * CG_PARSE_VERSION (--version) or CG_PARSE_ERROR with a one-line message
 * ("unknown option '--prot'", "invalid value for '--port': 'abc' is not an
 * integer", "missing argument 'APP'") in err.
 */
int cg_config_parse(cg_config *c, int argc, char *const argv[], char *const envp[], char *err,
                    size_t errlen);
/** Checks that go across options, once every source (command line,
 * environment, run() keywords) is applied: --ssl-keyfile, --ssl-keyfile-password,
 * --ssl-ca-certs and --ssl-cert-reqs 1/2 need --ssl-certfile; --ssl-cert-reqs 2
 * needs --ssl-ca-certs; TLS needs a build with OpenSSL, --http2 a build with
 * nghttp2. cg_config_parse runs it. Returns 0, or -1 with a one-line message in
 * err (a usage error). */
int cg_config_check(const cg_config *c, char *err, size_t errlen);
/** 1 when HTTP/2 is to be served: --http2, or neither --http2 nor --no-http2
 * on a build with nghttp2 (CG_HAVE_NGHTTP2); else 0. */
int cg_config_http2(const cg_config *c);
/** Writes the --help text generated from the table. */
void cg_options_help(FILE *out, const char *prog);

/** Splits "NAME:VALUE" at the first ':'; both sides trimmed of spaces and tabs.
 * Returns 0, or -1 when there is no ':' or the name is empty. */
int cg_header_option_split(const char *text, const char **name, size_t *name_len,
                           const char **value, size_t *value_len);

/**
 * Parses a dotenv file's text: "KEY=VALUE" lines, optional "export ", comments
 * (#), blank lines, single- or double-quoted values (double quotes honour \n,
 * \t, \", \\). Calls `cb` for each pair with NUL-terminated copies that live
 * for the call only. Returns 0, the 1-based line number of the first
 * malformed line, or -1 when memory runs out.
 */
int cg_envfile_parse(const char *text, size_t len,
                     void (*cb)(const char *key, const char *value, void *ctx), void *ctx);

#endif
