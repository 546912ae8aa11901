/* Unit tests for the option table, the command-line/environment parser,
 * --header splitting and the dotenv parser. */
#include "cg_build.h"
#include "options.h"
#include "tap.h"
#include "tls.h"

#include <stdlib.h>
#include <string.h>

static char err[256];

/* Parses argv (NULL-terminated) with envp into a fresh config. */
static int parse(cg_config *c, char *const envp[], ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, envp);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 64;)
        argv[argc++] = a;
    va_end(ap);
    cg_config_init(c, envp);
    err[0] = '\0';
    return cg_config_parse(c, argc, argv, envp, err, sizeof(err));
}

/* Parses, expects an error, and checks its exact text. */
static void expect_error(const char *want, char *const envp[], char *const argv[], int argc)
{
    cg_config c;
    int rc;
    cg_config_init(&c, envp);
    err[0] = '\0';
    rc = cg_config_parse(&c, argc, argv, envp, err, sizeof(err));
    ok(rc == CG_PARSE_ERROR && strcmp(err, want) == 0, "error \"%s\" (got rc %d \"%s\")", want, rc,
       err);
    cg_config_free(&c);
}

#define ERR(want, ...)                                                                             \
    do {                                                                                           \
        char *argv_[] = {__VA_ARGS__};                                                             \
        expect_error(want, NULL, argv_, (int)(sizeof(argv_) / sizeof(argv_[0])));                  \
    } while (0)

static void test_defaults(void)
{
    cg_config c;
    int rc = parse(&c, NULL, "main:app", NULL);
    ok(rc == CG_PARSE_OK, "minimal command line parses");
    ok(c.app && strcmp(c.app, "main:app") == 0, "APP");
    ok(c.factory == 0, "factory off");
    ok(c.app_dir && strcmp(c.app_dir, ".") == 0, "app-dir .");
    ok(c.host && strcmp(c.host, "127.0.0.1") == 0, "host 127.0.0.1");
    ok(c.port == 8000, "port 8000");
    ok(c.uds == NULL && c.fd == -1, "uds and fd unset");
    ok(c.backlog == 2048, "backlog 2048");
    ok(c.workers == 1, "workers 1");
    ok(c.loop == CG_LOOP_AUTO && c.lifespan == CG_LIFESPAN_AUTO, "loop and lifespan auto");
    ok(c.root_path && strcmp(c.root_path, "") == 0, "root-path empty");
    ok(c.log_level == CG_LOG_INFO, "log-level info");
    ok(c.access_log == 1 && c.use_colors == -1, "access log on, colours auto");
    ok(c.log_config == NULL && c.env_file == NULL, "log-config and env-file unset");
    ok(c.timeout_keep_alive == 5.0, "keep-alive 5");
    ok(c.timeout_graceful_shutdown == -1.0, "graceful shutdown unset");
    ok(c.timeout_request_header == 30.0, "request header timeout 30");
    ok(c.limit_concurrency == -1 && c.limit_max_requests == -1, "limits unset");
    ok(c.server_header == 1 && c.date_header == 1, "server and date headers on");
    ok(c.headers.n == 0 && c.headers.items == NULL, "no extra headers");
    ok(c.limit_request_line == 8190 && c.limit_request_field_size == 8190 &&
           c.limit_request_fields == 100,
       "parser limits");
    ok(c.ssl_keyfile == NULL && c.ssl_certfile == NULL && c.ssl_keyfile_password == NULL &&
           c.ssl_ca_certs == NULL,
       "TLS files unset (TLS off)");
    ok(c.ssl_version == 17 && c.ssl_cert_reqs == 0, "ssl-version 17, ssl-cert-reqs 0 (uvicorn's)");
    ok(c.ssl_ciphers && strcmp(c.ssl_ciphers, "TLSv1") == 0, "ssl-ciphers TLSv1 (uvicorn's)");
    ok(c.timeout_handshake == 10.0, "handshake timeout 10");
    ok(c.http2 == -1 && cg_config_http2(&c) == CG_HAVE_NGHTTP2,
       "http2 not given: on exactly when built with nghttp2");
    ok(c.h2_max_concurrent_streams == 100 && c.h2_max_header_list_size == 65536 &&
           c.h2_initial_window_size == 262144,
       "HTTP/2 settings 100 streams, 64 KiB header list, 256 KiB window");
    ok(c.metrics_port == -1 && c.metrics_host && strcmp(c.metrics_host, "127.0.0.1") == 0,
       "no metrics unless --metrics-port; metrics host 127.0.0.1");
    cg_config_free(&c);
}

static void test_table(void)
{
    int env_ok = 1, help_ok = 1;
    static const char *const required[] = {"factory",
                                           "app-dir",
                                           "host",
                                           "port",
                                           "uds",
                                           "fd",
                                           "backlog",
                                           "workers",
                                           "loop",
                                           "lifespan",
                                           "root-path",
                                           "log-level",
                                           "access-log",
                                           "use-colors",
                                           "log-config",
                                           "timeout-keep-alive",
                                           "timeout-graceful-shutdown",
                                           "timeout-request-header",
                                           "limit-concurrency",
                                           "limit-max-requests",
                                           "server-header",
                                           "date-header",
                                           "header",
                                           "env-file",
                                           "limit-request-line",
                                           "limit-request-fields",
                                           "limit-request-field-size",
                                           "ssl-keyfile",
                                           "ssl-certfile",
                                           "ssl-keyfile-password",
                                           "ssl-version",
                                           "ssl-cert-reqs",
                                           "ssl-ca-certs",
                                           "ssl-ciphers",
                                           "timeout-handshake",
                                           "http2",
                                           "h2-max-concurrent-streams",
                                           "h2-max-header-list-size",
                                           "h2-initial-window-size",
                                           "metrics-port",
                                           "metrics-host"};
    int all = 1;
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const cg_option *o = cg_option_find(required[i]);
        if (!o || strcmp(o->name, required[i]) != 0) {
            all = 0;
            printf("# missing option %s\n", required[i]);
        }
    }
    ok(all, "every required option is in the table (%zu entries)", cg_options_count);
    ok(strcmp(cg_options[0].name, "app") == 0, "APP first");
    for (size_t i = 0; i < cg_options_count; i++) {
        const cg_option *o = &cg_options[i];
        char want[80];
        size_t k = 0;
        k += (size_t)snprintf(want, sizeof(want), "CASGI_");
        for (const char *p = o->name; *p && k + 1 < sizeof(want); p++)
            want[k++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
        want[k] = '\0';
        /* uvicorn reads FORWARDED_ALLOW_IPS; casgi keeps that name. */
        if (strcmp(o->name, "forwarded-allow-ips") == 0)
            snprintf(want, sizeof(want), "FORWARDED_ALLOW_IPS");
        if (!o->env || strcmp(o->env, want) != 0) {
            env_ok = 0;
            printf("# bad env name for %s\n", o->name);
        }
        if (!o->help || !*o->help)
            help_ok = 0;
    }
    ok(env_ok, "every env var is CASGI_<NAME>");
    ok(help_ok, "every option has help text");
    ok(cg_option_find("limit_concurrency") == cg_option_find("limit-concurrency") &&
           cg_option_find("limit-concurrency") != NULL,
       "find: '_' and '-' interchangeable");
    ok(cg_option_find("nope") == NULL && cg_option_find("limit") == NULL, "find: unknown");
}

static void test_types(void)
{
    cg_config c;
    int rc = parse(&c, NULL, "--factory", "--app-dir", "/srv", "--host=::1", "--port", "0", "--uds",
                   "/tmp/s", "--fd=3", "--backlog", "10", "--workers", "4", "--loop", "uvloop",
                   "--lifespan", "OFF", "--root-path", "/api", "--log-level", "trace",
                   "--no-access-log", "--use-colors", "--log-config", "l.json",
                   "--timeout-keep-alive", "0.5", "--timeout-graceful-shutdown=10",
                   "--timeout-request-header", "1e1", "--limit-concurrency", "7",
                   "--limit-max-requests", "9", "--no-server-header", "--no-date-header",
                   "--env-file", ".env", "--limit-request-line", "100", "--limit-request-fields",
                   "5", "--limit-request-field-size", "200", "pkg.mod:obj.app", NULL);
    ok(rc == CG_PARSE_OK, "every option parses (%s)", err);
    ok(c.factory == 1, "flag");
    ok(strcmp(c.app_dir, "/srv") == 0 && strcmp(c.host, "::1") == 0, "strings, --name=value");
    ok(c.port == 0 && c.fd == 3 && c.backlog == 10 && c.workers == 4, "integers");
    ok(strcmp(c.uds, "/tmp/s") == 0 && strcmp(c.root_path, "/api") == 0, "more strings");
    ok(c.loop == CG_LOOP_UVLOOP && c.lifespan == CG_LIFESPAN_OFF, "choices (case-insensitive)");
    ok(c.log_level == CG_LOG_TRACE, "log level trace");
    ok(c.access_log == 0 && c.use_colors == 1, "--no-access-log, --use-colors");
    ok(strcmp(c.log_config, "l.json") == 0 && strcmp(c.env_file, ".env") == 0, "paths");
    ok(c.timeout_keep_alive == 0.5 && c.timeout_graceful_shutdown == 10.0 &&
           c.timeout_request_header == 10.0,
       "floats");
    ok(c.limit_concurrency == 7 && c.limit_max_requests == 9, "limits");
    ok(c.server_header == 0 && c.date_header == 0, "--no-server-header, --no-date-header");
    ok(c.limit_request_line == 100 && c.limit_request_fields == 5 &&
           c.limit_request_field_size == 200,
       "parser limits");
    ok(strcmp(c.app, "pkg.mod:obj.app") == 0, "APP after options");
    cg_config_free(&c);

    rc = parse(&c, NULL, "--no-use-colors", "--use-colors", "--no-use-colors", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.use_colors == 0, "last of repeated boolean wins");
    cg_config_free(&c);

    rc = parse(&c, NULL, "--", "-weird:app", NULL);
    ok(rc == CG_PARSE_OK && strcmp(c.app, "-weird:app") == 0, "-- ends options");
    cg_config_free(&c);

    rc = parse(&c, NULL, "--port", "1", "--port", "2", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.port == 2, "last repeated value wins");
    cg_config_free(&c);

    rc = parse(&c, NULL, "--host", "--port", "a:b", NULL);
    ok(rc == CG_PARSE_OK && strcmp(c.host, "--port") == 0, "a value may start with '-'");
    cg_config_free(&c);
}

static void test_bools_text(void)
{
    static const char *yes[] = {"true", "1", "yes", "on", "TRUE", "Yes"};
    static const char *no[] = {"false", "0", "no", "off", "False", "OFF"};
    const cg_option *o = cg_option_find("access-log");
    cg_config c;
    int good = 1;
    cg_config_init(&c, NULL);
    for (size_t i = 0; i < 6; i++) {
        if (cg_option_set(&c, o, no[i], err, sizeof(err)) != 0 || c.access_log != 0)
            good = 0;
        if (cg_option_set(&c, o, yes[i], err, sizeof(err)) != 0 || c.access_log != 1)
            good = 0;
    }
    ok(good, "booleans accept true/false 1/0 yes/no on/off in any case");
    ok(cg_option_set(&c, o, "maybe", err, sizeof(err)) == -1 &&
           strcmp(err, "invalid value for '--access-log': 'maybe' is not a boolean "
                       "(true/false, 1/0, yes/no, on/off)") == 0,
       "bad boolean: %s", err);
    ok(cg_option_set(&c, cg_option_find("port"), "81", err, sizeof(err)) == 0 && c.port == 81,
       "cg_option_set integer");
    ok(cg_option_set(&c, cg_option_find("port"), " 81", err, sizeof(err)) == -1,
       "integer with leading space rejected");
    ok(cg_option_set(&c, cg_option_find("timeout-keep-alive"), "nan", err, sizeof(err)) == -1 &&
           cg_option_set(&c, cg_option_find("timeout-keep-alive"), "inf", err, sizeof(err)) == -1,
       "nan and inf are not numbers");
    cg_config_free(&c);

    /* uvicorn's spelling with a value: --ws-per-message-deflate false. */
    ok(parse(&c, NULL, "--ws-per-message-deflate", "false", "a:b", NULL) == CG_PARSE_OK &&
           c.ws_per_message_deflate == 0 && c.app && strcmp(c.app, "a:b") == 0,
       "boolean followed by a boolean word takes it as its value");
    cg_config_free(&c);
    ok(parse(&c, NULL, "--access-log=0", "--ws-per-message-deflate", "a:b", NULL) == CG_PARSE_OK &&
           c.access_log == 0 && c.ws_per_message_deflate == 1 && c.app && strcmp(c.app, "a:b") == 0,
       "--name=value for a boolean; a boolean before APP stays a switch");
    cg_config_free(&c);
    ok(parse(&c, NULL, "--no-access-log=1", "a:b", NULL) == CG_PARSE_ERROR,
       "the --no- form takes no value");
    cg_config_free(&c);
    ok(parse(&c, NULL, "--header", "X\nInjected: 1", "a:b", NULL) == CG_PARSE_ERROR &&
           !strchr(err, '\n') && strstr(err, "X\\x0aInjected"),
       "control characters in quoted input are escaped: %s", err);
    cg_config_free(&c);
}

static void test_env(void)
{
    char *env[] = {"CASGI_PORT=9000",
                   "CASGI_HOST=0.0.0.0",
                   "CASGI_ACCESS_LOG=false",
                   "CASGI_LOG_LEVEL=debug",
                   "CASGI_APP=env:app",
                   "CASGI_HEADER=X-A: 1\nX-B: 2\n",
                   "CASGI_TIMEOUT_KEEP_ALIVE=2.5",
                   "WEB_CONCURRENCY=3",
                   "CASGI_METRICS_PORT=9100",
                   "CASGI_METRICS_HOST=::1",
                   "OTHER=1",
                   NULL};
    cg_config c;
    int rc = parse(&c, env, NULL);
    ok(rc == CG_PARSE_OK, "APP from CASGI_APP (%s)", err);
    ok(strcmp(c.app, "env:app") == 0, "CASGI_APP");
    ok(c.port == 9000 && strcmp(c.host, "0.0.0.0") == 0, "CASGI_PORT, CASGI_HOST");
    ok(c.access_log == 0 && c.log_level == CG_LOG_DEBUG, "CASGI_ACCESS_LOG=false, log level");
    ok(c.timeout_keep_alive == 2.5, "float from env");
    ok(c.workers == 3, "WEB_CONCURRENCY");
    ok(c.metrics_port == 9100 && strcmp(c.metrics_host, "::1") == 0,
       "CASGI_METRICS_PORT, CASGI_METRICS_HOST");
    ok(c.headers.n == 2 && strcmp(c.headers.items[0], "X-A: 1") == 0 &&
           strcmp(c.headers.items[1], "X-B: 2") == 0,
       "CASGI_HEADER one per line");
    cg_config_free(&c);

    rc = parse(&c, env, "--port", "1", "--access-log", "--header", "X-C:3", "cli:app", NULL);
    ok(rc == CG_PARSE_OK && c.port == 1 && c.access_log == 1, "CLI beats env");
    ok(strcmp(c.app, "cli:app") == 0, "CLI APP beats CASGI_APP");
    ok(c.headers.n == 1 && strcmp(c.headers.items[0], "X-C:3") == 0,
       "CLI --header replaces CASGI_HEADER");
    ok(strcmp(c.host, "0.0.0.0") == 0, "env still applies to options not on the CLI");
    cg_config_free(&c);

    {
        char *env2[] = {"CASGI_WORKERS=5", "WEB_CONCURRENCY=3", NULL};
        rc = parse(&c, env2, "a:b", NULL);
        ok(rc == CG_PARSE_OK && c.workers == 5, "CASGI_WORKERS beats WEB_CONCURRENCY");
        cg_config_free(&c);
        rc = parse(&c, env2, "--workers", "2", "a:b", NULL);
        ok(rc == CG_PARSE_OK && c.workers == 2, "--workers beats both");
        cg_config_free(&c);
    }
    {
        char *env3[] = {"CASGI_PORT=abc", NULL};
        char *argv[] = {"a:b"};
        expect_error("invalid value for 'CASGI_PORT': 'abc' is not an integer", env3, argv, 1);
    }
    {
        char *env3b[] = {"CASGI_PORT=abc", "WEB_CONCURRENCY=x", NULL};
        rc = parse(&c, env3b, "--port", "2", "--workers", "3", "a:b", NULL);
        ok(rc == CG_PARSE_OK && c.port == 2 && c.workers == 3,
           "an invalid env var is no error when the option is given (%s)", err);
        cg_config_free(&c);
    }
    {
        char *env4[] = {"WEB_CONCURRENCY=zero", NULL};
        char *argv[] = {"a:b"};
        cg_config_init(&c, env4);
        ok(c.workers == 1, "invalid WEB_CONCURRENCY ignored by init");
        cg_config_free(&c);
        expect_error("invalid value for 'WEB_CONCURRENCY': 'zero' is not an integer", env4, argv,
                     1);
    }
    {
        char *env5[] = {"CASGI_LOOP=tokio", NULL};
        cg_config_init(&c, env5);
        ok(cg_config_apply_env(&c, env5, err, sizeof(err)) == -1 &&
               strcmp(err, "invalid value for 'CASGI_LOOP': 'tokio' is not one of 'auto', "
                           "'asyncio', 'uvloop'") == 0,
           "cg_config_apply_env error: %s", err);
        cg_config_free(&c);
    }
}

static void test_lists(void)
{
    cg_config c;
    const char *n, *v;
    size_t nl, vl;
    int rc =
        parse(&c, NULL, "--header", "X-A: 1", "--header=X-B:2", "--header", "X-A:3", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.headers.n == 3, "--header repeats append");
    ok(strcmp(c.headers.items[0], "X-A: 1") == 0 && strcmp(c.headers.items[2], "X-A:3") == 0,
       "order kept, duplicates kept");
    cg_option_clear(&c, cg_option_find("header"));
    ok(c.headers.n == 0 && c.headers.items == NULL, "cg_option_clear empties a list");
    ok(cg_option_set(&c, cg_option_find("header"), "X-D: 4", err, sizeof(err)) == 0 &&
           c.headers.n == 1,
       "cg_option_set appends");
    cg_config_free(&c);

    ok(cg_header_option_split(" X-Name \t:  some value \t", &n, &nl, &v, &vl) == 0 && nl == 6 &&
           memcmp(n, "X-Name", 6) == 0 && vl == 10 && memcmp(v, "some value", 10) == 0,
       "split trims name and value");
    ok(cg_header_option_split("X:a:b", &n, &nl, &v, &vl) == 0 && nl == 1 && vl == 3 &&
           memcmp(v, "a:b", 3) == 0,
       "split at the first ':'");
    ok(cg_header_option_split("X-Empty:", &n, &nl, &v, &vl) == 0 && nl == 7 && vl == 0,
       "empty value allowed");
    ok(cg_header_option_split("novalue", &n, &nl, &v, &vl) == -1, "no ':' rejected");
    ok(cg_header_option_split(" :v", &n, &nl, &v, &vl) == -1, "empty name rejected");
}

static void test_errors(void)
{
    ERR("unknown option '--prot' (did you mean '--port'?)", "--prot", "1", "a:b");
    ERR("unknown option '--prot' (did you mean '--port'?)", "--prot=1", "a:b");
    ERR("unknown option '--acess-log' (did you mean '--access-log'?)", "--acess-log", "a:b");
    ERR("unknown option '--no-acces-log' (did you mean '--no-access-log'?)", "--no-acces-log",
        "a:b");
    ERR("unknown option '--verison' (did you mean '--version'?)", "--verison");
    ERR("unknown option '--frobnicate'", "--frobnicate", "a:b");
    ERR("unknown option '-p'", "-p", "1", "a:b");
    ERR("unknown option '--no-factory' ('--factory' has no --no- form)", "--no-factory", "a:b");
    ERR("unknown option '--no-port' ('--port' has no --no- form)", "--no-port", "a:b");
    ERR("unknown option '--app'", "--app", "x", "a:b");
    ERR("unknown option '--log_level' (did you mean '--log-level'?)", "--log_level", "info", "a:b");
    ERR("option '--port' requires an argument", "a:b", "--port");
    ERR("option '--factory' does not take a value", "--factory=1", "a:b");
    ERR("option '--no-access-log' does not take a value", "--no-access-log=yes", "a:b");
    ERR("invalid value for '--port': 'abc' is not an integer", "--port", "abc", "a:b");
    ERR("invalid value for '--port': '80x' is not an integer", "--port=80x", "a:b");
    ERR("invalid value for '--port': '' is not an integer", "--port=", "a:b");
    ERR("invalid value for '--port': 70000 is not in the range 0..65535", "--port", "70000", "a:b");
    ERR("invalid value for '--port': -1 is not in the range 0..65535", "--port", "-1", "a:b");
    ERR("invalid value for '--backlog': 0 is not >= 1", "--backlog", "0", "a:b");
    ERR("invalid value for '--backlog': 3000000000 is not in the range 1..2147483647", "--backlog",
        "3000000000", "a:b");
    ERR("invalid value for '--limit-concurrency': 99999999999999999999999 is not >= 1",
        "--limit-concurrency", "99999999999999999999999", "a:b");
    ERR("invalid value for '--timeout-keep-alive': 'soon' is not a number", "--timeout-keep-alive",
        "soon", "a:b");
    ERR("invalid value for '--timeout-keep-alive': -1 is not >= 0", "--timeout-keep-alive", "-1",
        "a:b");
    ERR("invalid value for '--loop': 'tokio' is not one of 'auto', 'asyncio', 'uvloop'", "--loop",
        "tokio", "a:b");
    ERR("invalid value for '--log-level': 'loud' is not one of 'critical', 'error', 'warning', "
        "'info', 'debug', 'trace'",
        "--log-level", "loud", "a:b");
    ERR("invalid value for '--header': 'X-Nope' is not NAME:VALUE", "--header", "X-Nope", "a:b");
    ERR("invalid value for '--header': ':v' is not NAME:VALUE", "--header", ":v", "a:b");
    ERR("invalid value for '--header': 'Bad Name' is not a valid header name", "--header",
        "Bad Name: v", "a:b");
    ERR("invalid value for '--header': the value of header 'X' contains a control character",
        "--header", "X: a\rb", "a:b");
    ERR("invalid value for '--access-log-format': '%' must be followed by '(name)s' or '%' at "
        "offset 6 of the format '%(h)s %s'",
        "--access-log-format", "%(h)s %s", "a:b");
    ERR("invalid value for '--access-log-format': '%(h)d': only B, T, M and D are numbers at "
        "offset 0 of the format '%(h)d'",
        "--access-log-format=%(h)d", "a:b");
    ERR("--access-log-format and --access-log-json exclude each other", "--access-log-json",
        "--access-log-format", "%(h)s", "a:b");
    ERR("missing argument 'APP'", "--port", "1");
    ERR("unexpected extra argument 'c:d'", "a:b", "c:d");
}

static void test_access_log_options(void)
{
    cg_config c;
    char *envp[] = {"CASGI_ACCESS_LOG_FORMAT=%(h)s \"%(r)s\" %(s)s", "CASGI_ACCESS_LOG_JSON=0",
                    NULL};
    ok(parse(&c, envp, "a:b", NULL) == CG_PARSE_OK && c.access_log_format &&
           !strcmp(c.access_log_format, "%(h)s \"%(r)s\" %(s)s") && c.access_log_json <= 0,
       "CASGI_ACCESS_LOG_FORMAT");
    cg_config_free(&c);
    ok(parse(&c, NULL, "a:b", "--access-log-json", NULL) == CG_PARSE_OK && c.access_log_json == 1 &&
           !c.access_log_format,
       "--access-log-json");
    cg_config_free(&c);
    char *bad[] = {"CASGI_ACCESS_LOG_FORMAT=%(h", NULL};
    ok(parse(&c, bad, "a:b", NULL) == CG_PARSE_ERROR && strstr(err, "CASGI_ACCESS_LOG_FORMAT") &&
           strstr(err, "unbalanced"),
       "a malformed CASGI_ACCESS_LOG_FORMAT: %s", err);
    cg_config_free(&c);
}

static void test_tls_options(void)
{
    cg_config c;
    int rc =
        parse(&c, NULL, "--ssl-keyfile", "k.pem", "--ssl-certfile=c.pem", "--ssl-keyfile-password",
              "pw", "--ssl-version", "5", "--ssl-cert-reqs", "2", "--ssl-ca-certs", "ca.pem",
              "--ssl-ciphers", "ECDHE+AESGCM", "--timeout-handshake", "2.5", "a:b", NULL);
    if (cg_tls_available()) {
        ok(rc == CG_PARSE_OK, "every TLS option parses (%s)", err);
        ok(strcmp(c.ssl_keyfile, "k.pem") == 0 && strcmp(c.ssl_certfile, "c.pem") == 0 &&
               strcmp(c.ssl_keyfile_password, "pw") == 0 && strcmp(c.ssl_ca_certs, "ca.pem") == 0 &&
               strcmp(c.ssl_ciphers, "ECDHE+AESGCM") == 0,
           "TLS strings");
        ok(c.ssl_version == 5 && c.ssl_cert_reqs == 2 && c.timeout_handshake == 2.5, "TLS numbers");
    } else {
        ok(rc == CG_PARSE_ERROR &&
               strcmp(err, "TLS is not available: casgi was built without OpenSSL (install "
                           "libssl-dev and reinstall)") == 0,
           "a build without OpenSSL refuses TLS: %s", err);
    }
    cg_config_free(&c);

    /* The certificate file alone holds the key as well (uvicorn allows it). */
    rc = parse(&c, NULL, "--ssl-certfile", "both.pem", "a:b", NULL);
    ok(rc == (cg_tls_available() ? CG_PARSE_OK : CG_PARSE_ERROR), "--ssl-certfile alone");
    cg_config_free(&c);

    char *env[] = {"CASGI_SSL_CERTFILE=/e/c.pem", "CASGI_SSL_CERT_REQS=1",
                   "CASGI_SSL_CA_CERTS=/e/ca.pem", "CASGI_TIMEOUT_HANDSHAKE=3", NULL};
    rc = parse(&c, env, "a:b", NULL);
    if (cg_tls_available())
        ok(rc == CG_PARSE_OK && strcmp(c.ssl_certfile, "/e/c.pem") == 0 && c.ssl_cert_reqs == 1 &&
               strcmp(c.ssl_ca_certs, "/e/ca.pem") == 0 && c.timeout_handshake == 3.0,
           "TLS options from the environment");
    cg_config_free(&c);

    ERR("option '--ssl-keyfile' requires '--ssl-certfile' (TLS is off without a certificate)",
        "--ssl-keyfile", "k.pem", "a:b");
    ERR("option '--ssl-keyfile-password' requires '--ssl-certfile' (TLS is off without a "
        "certificate)",
        "--ssl-keyfile-password", "pw", "a:b");
    ERR("option '--ssl-ca-certs' requires '--ssl-certfile' (TLS is off without a certificate)",
        "--ssl-ca-certs", "ca.pem", "a:b");
    ERR("option '--ssl-cert-reqs' requires '--ssl-certfile' (TLS is off without a certificate)",
        "--ssl-cert-reqs", "1", "a:b");
    if (cg_tls_available())
        ERR("option '--ssl-cert-reqs 2' requires '--ssl-ca-certs' (the CA certificates that "
            "verify client certificates)",
            "--ssl-certfile", "c.pem", "--ssl-cert-reqs", "2", "a:b");
    ERR("invalid value for '--ssl-cert-reqs': 3 is not in the range 0..2", "--ssl-cert-reqs", "3",
        "a:b");
    ERR("invalid value for '--ssl-cert-reqs': -1 is not in the range 0..2", "--ssl-cert-reqs", "-1",
        "a:b");
    ERR("invalid value for '--ssl-version': 3: TLS 1.0 and 1.1 are not supported; the minimum "
        "is TLS 1.2",
        "--ssl-version", "3", "a:b");
    ERR("invalid value for '--ssl-version': 4: TLS 1.0 and 1.1 are not supported; the minimum "
        "is TLS 1.2",
        "--ssl-version=4", "a:b");
    ERR("invalid value for '--ssl-version': 16: PROTOCOL_TLS_CLIENT is for clients; use 17 "
        "(PROTOCOL_TLS_SERVER)",
        "--ssl-version", "16", "a:b");
    ERR("invalid value for '--ssl-version': 'tls' is not an integer", "--ssl-version", "tls",
        "a:b");
    ERR("invalid value for '--timeout-handshake': -1 is not >= 0", "--timeout-handshake", "-1",
        "a:b");
    char *badenv[] = {"CASGI_SSL_VERSION=3", NULL};
    char *argv[] = {"a:b"};
    expect_error("invalid value for 'CASGI_SSL_VERSION': 3: TLS 1.0 and 1.1 are not supported; "
                 "the minimum is TLS 1.2",
                 badenv, argv, 1);
    static const long good[] = {2, 5, 17};
    for (size_t i = 0; i < 3; i++) {
        long v = good[i];
        char text[8];
        snprintf(text, sizeof(text), "%ld", v);
        rc = parse(&c, NULL, "--ssl-version", text, "a:b", NULL);
        ok(rc == CG_PARSE_OK && c.ssl_version == v, "--ssl-version %ld accepted", v);
        cg_config_free(&c);
    }
}

static void test_h2_options(void)
{
    cg_config c;
    int rc = parse(&c, NULL, "--no-http2", "--h2-max-concurrent-streams", "1",
                   "--h2-max-header-list-size=1024", "--h2-initial-window-size", "0", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.http2 == 0 && cg_config_http2(&c) == 0,
       "--no-http2 on every build (%s)", err);
    ok(c.h2_max_concurrent_streams == 1 && c.h2_max_header_list_size == 1024 &&
           c.h2_initial_window_size == 0,
       "HTTP/2 settings at their lower bounds");
    cg_config_free(&c);

    rc = parse(&c, NULL, "--h2-max-concurrent-streams", "2147483647", "--h2-max-header-list-size",
               "16777216", "--h2-initial-window-size=2147483647", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.h2_max_concurrent_streams == 2147483647 &&
           c.h2_max_header_list_size == 16777216 && c.h2_initial_window_size == 2147483647,
       "HTTP/2 settings at their upper bounds (%s)", err);
    cg_config_free(&c);

    char *env[] = {"CASGI_HTTP2=false", "CASGI_H2_MAX_CONCURRENT_STREAMS=7",
                   "CASGI_H2_MAX_HEADER_LIST_SIZE=4096", "CASGI_H2_INITIAL_WINDOW_SIZE=65535",
                   NULL};
    rc = parse(&c, env, "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.http2 == 0 && c.h2_max_concurrent_streams == 7 &&
           c.h2_max_header_list_size == 4096 && c.h2_initial_window_size == 65535,
       "HTTP/2 options from the environment (%s)", err);
    cg_config_free(&c);
    rc = parse(&c, env, "--h2-max-concurrent-streams", "8", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.h2_max_concurrent_streams == 8, "the command line wins");
    cg_config_free(&c);

    /* --http2, from the command line or the environment: a build without
     * nghttp2 refuses it, one with it takes it. */
    static const char no_h2[] = "HTTP/2 is not available: casgi was built without nghttp2 "
                                "(install libnghttp2-dev and reinstall, or drop --http2)";
    char *on_env[] = {"CASGI_HTTP2=1", NULL};
    for (int from_env = 0; from_env <= 1; from_env++) {
        rc = from_env ? parse(&c, on_env, "a:b", NULL) : parse(&c, NULL, "--http2", "a:b", NULL);
        if (CG_HAVE_NGHTTP2)
            ok(rc == CG_PARSE_OK && c.http2 == 1 && cg_config_http2(&c) == 1,
               "--http2 on a build with nghttp2 (%s)", from_env ? "environment" : "command line");
        else
            ok(rc == CG_PARSE_ERROR && strcmp(err, no_h2) == 0,
               "--http2 on a build without nghttp2 (%s): %s",
               from_env ? "environment" : "command line", err);
        cg_config_free(&c);
    }
    /* The refusal also comes from cg_config_check alone (after run() keywords). */
    cg_config_init(&c, NULL);
    c.http2 = 1;
    rc = cg_config_check(&c, err, sizeof(err));
    ok(CG_HAVE_NGHTTP2 ? rc == 0 : rc == -1 && strcmp(err, no_h2) == 0, "check: --http2 (%s)", err);
    cg_config_free(&c);
    rc = parse(&c, on_env, "--no-http2", "a:b", NULL);
    ok(rc == CG_PARSE_OK && c.http2 == 0, "--no-http2 wins over CASGI_HTTP2=1 (%s)", err);
    cg_config_free(&c);

    ERR("invalid value for '--h2-max-concurrent-streams': 0 is not >= 1",
        "--h2-max-concurrent-streams", "0", "a:b");
    ERR("invalid value for '--h2-max-concurrent-streams': 2147483648 is not in the range "
        "1..2147483647",
        "--h2-max-concurrent-streams", "2147483648", "a:b");
    ERR("invalid value for '--h2-max-concurrent-streams': 'many' is not an integer",
        "--h2-max-concurrent-streams", "many", "a:b");
    ERR("invalid value for '--h2-max-header-list-size': 1023 is not in the range 1024..16777216",
        "--h2-max-header-list-size", "1023", "a:b");
    ERR("invalid value for '--h2-max-header-list-size': 16777217 is not in the range "
        "1024..16777216",
        "--h2-max-header-list-size", "16777217", "a:b");
    ERR("invalid value for '--h2-initial-window-size': -1 is not >= 0", "--h2-initial-window-size",
        "-1", "a:b");
    ERR("invalid value for '--h2-initial-window-size': 2147483648 is not in the range "
        "0..2147483647",
        "--h2-initial-window-size", "2147483648", "a:b");
    ERR("invalid value for '--http2': 'maybe' is not a boolean (true/false, 1/0, yes/no, on/off)",
        "--http2=maybe", "a:b");
    ERR("option '--no-http2' does not take a value", "--no-http2=1", "a:b");
    char *badenv[] = {"CASGI_H2_INITIAL_WINDOW_SIZE=4294967296", NULL};
    char *argv[] = {"a:b"};
    expect_error("invalid value for 'CASGI_H2_INITIAL_WINDOW_SIZE': 4294967296 is not in the "
                 "range 0..2147483647",
                 badenv, argv, 1);
}

static void test_help_version(void)
{
    cg_config c;
    ok(parse(&c, NULL, "--help", NULL) == CG_PARSE_HELP, "--help without APP");
    cg_config_free(&c);
    ok(parse(&c, NULL, "-h", NULL) == CG_PARSE_HELP, "-h");
    cg_config_free(&c);
    ok(parse(&c, NULL, "--port", "1", "--version", "--prot", NULL) == CG_PARSE_VERSION,
       "--version stops parsing");
    cg_config_free(&c);
    ok(parse(&c, NULL, "--", "--help", NULL) == CG_PARSE_OK && strcmp(c.app, "--help") == 0,
       "--help after -- is the APP");
    cg_config_free(&c);

    {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        int lines = 0, all_env = 1;
        cg_options_help(f, "casgi");
        fclose(f);
        ok(strncmp(text, "Usage: casgi [OPTIONS] APP\n", 27) == 0, "help usage line");
        for (size_t i = 0; i < cg_options_count; i++) {
            char want[80];
            snprintf(want, sizeof(want), "env: %s]", cg_options[i].env);
            if (!strstr(text, want))
                all_env = 0;
        }
        for (char *p = text; *p; p++)
            lines += *p == '\n';
        ok(all_env, "help names every env var");
        ok(strstr(text, "--port PORT") && strstr(text, "[default: 8000; env: CASGI_PORT]"),
           "help shows metavar and default");
        ok(strstr(text, "--access-log / --no-access-log") != NULL, "help shows --no- forms");
        ok(strstr(text, "--loop [auto|asyncio|uvloop]") != NULL, "help shows choices");
        ok(lines > (int)cg_options_count, "one line per option (%d lines)", lines);
        free(text);
    }
}

struct env_seen {
    int n;
    char keys[16][32];
    char values[16][64];
};

static void env_cb(const char *key, const char *value, void *ctx)
{
    struct env_seen *s = ctx;
    if (s->n < 16) {
        snprintf(s->keys[s->n], 32, "%s", key);
        snprintf(s->values[s->n], 64, "%s", value);
    }
    s->n++;
}

static int envfile(const char *text, struct env_seen *s)
{
    memset(s, 0, sizeof(*s));
    return cg_envfile_parse(text, strlen(text), env_cb, s);
}

static void test_envfile(void)
{
    struct env_seen s;
    const char *text = "# comment\n"
                       "\n"
                       "A=1\n"
                       "export B = two words  \n"
                       "C=\"quoted \\\"x\\\"\\n\\tend\\\\\"\n"
                       "D='single $x \\n'\n"
                       "E=\n"
                       "F=value # trailing comment\n"
                       "G=a#b\r\n"
                       "  H.I-J=\"multi\nline\"  # after\n"
                       "export=kw\n"
                       "K=last";
    int rc = envfile(text, &s);
    ok(rc == 0 && s.n == 10, "envfile: all pairs (rc %d, n %d)", rc, s.n);
    ok(strcmp(s.keys[0], "A") == 0 && strcmp(s.values[0], "1") == 0, "plain");
    ok(strcmp(s.keys[1], "B") == 0 && strcmp(s.values[1], "two words") == 0,
       "export, spaces around '=', value trimmed");
    ok(strcmp(s.values[2], "quoted \"x\"\n\tend\\") == 0, "double quotes honour escapes");
    ok(strcmp(s.values[3], "single $x \\n") == 0, "single quotes are literal");
    ok(strcmp(s.keys[4], "E") == 0 && strcmp(s.values[4], "") == 0, "empty value");
    ok(strcmp(s.values[5], "value") == 0, "inline comment after blank stripped");
    ok(strcmp(s.values[6], "a#b") == 0, "'#' inside a value kept; CRLF");
    ok(strcmp(s.keys[7], "H.I-J") == 0 && strcmp(s.values[7], "multi\nline") == 0,
       "multi-line quoted value");
    ok(strcmp(s.keys[8], "export") == 0 && strcmp(s.values[8], "kw") == 0, "key named export");
    ok(strcmp(s.keys[9], "K") == 0 && strcmp(s.values[9], "last") == 0, "no final newline");

    ok(envfile("A=1\nB=2\nnot a pair\nC=3\n", &s) == 3 && s.n == 2, "line without '=' -> 3");
    ok(envfile("A=1\nB=\"open\n\nC=3\n", &s) == 2, "unterminated quote -> its line");
    ok(envfile("A=\"x\"\nB=\"x\" junk\n", &s) == 2, "text after closing quote -> 2");
    ok(envfile("=1\n", &s) == 1, "empty key -> 1");
    ok(envfile("1A=1\n", &s) == 1, "key starting with a digit -> 1");
    ok(envfile("X=\"a\nb\"\nY\n", &s) == 3, "line numbers count lines inside quotes");
    ok(envfile("", &s) == 0 && s.n == 0, "empty file");
    {
        const char nul[] = "A=x\0y\n";
        memset(&s, 0, sizeof(s));
        ok(cg_envfile_parse(nul, sizeof(nul) - 1, env_cb, &s) == 1, "NUL in value -> malformed");
    }
}

int main(void)
{
    test_defaults();
    test_table();
    test_types();
    test_bools_text();
    test_env();
    test_lists();
    test_errors();
    test_access_log_options();
    test_help_version();
    test_envfile();
    test_tls_options();
    test_h2_options();
    return tap_done();
}
