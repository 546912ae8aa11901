/* Unit tests for the access log formats: compiling gunicorn's
 * access_log_format (every atom, unknown keys, malformed formats), the
 * header values captured per request, Basic authorization users as Python's
 * base64 decodes them, escaping, and the JSON line. Inputs are placed
 * against a guard page. */
#include "alog.h"
#include "guard.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char err[512];

/* A request: GET /a%20b/c?x=1&y=%22 HTTP/1.1 from 10.0.0.7:5555, 200, 1234
 * bytes, 1.5 s, at 2000-10-10T13:55:36Z. */
static cg_alog_entry entry(cg_alog_vals *v)
{
    cg_alog_entry e;
    memset(&e, 0, sizeof(e));
    e.client = CG_SLICE_LIT("10.0.0.7:5555");
    e.method = CG_SLICE_LIT("GET");
    e.path = CG_SLICE_LIT("/a%20b/c");
    e.query = CG_SLICE_LIT("x=1&y=%22");
    e.version = 1;
    e.status = 200;
    e.bytes = 1234;
    e.duration = 1.5;
    e.now = 971186136;
    e.vals = v;
    return e;
}

/* Captures name: value pairs (request headers) and "o:name" response ones,
 * each value against a guard page. */
static void capture(cg_alog *p, cg_alog_vals *v, const char *const *pairs, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        const char *name = pairs[i];
        int resp = !strncmp(name, "o:", 2);
        if (resp)
            name += 2;
        guard g = {0};
        const char *val = guard_put(&g, pairs[i + 1], strlen(pairs[i + 1]));
        cg_alog_capture(p, v, resp, name, strlen(name), val, strlen(pairs[i + 1]));
        guard_free(&g);
    }
}

/* The line of fmt for the standard entry with headers `pairs`. */
static const char *line_of(const char *fmt, const char *const *pairs, size_t n)
{
    static char out[2048];
    cg_alog p;
    cg_alog_vals v;
    cg_buf b;
    guard g = {0};
    const char *f = guard_put(&g, fmt, strlen(fmt) + 1);
    if (cg_alog_compile(&p, f, 4242, err, sizeof(err)) < 0) {
        guard_free(&g);
        snprintf(out, sizeof(out), "ERROR: %s", err);
        return out;
    }
    guard_free(&g);
    cg_alog_vals_init(&v, 0);
    capture(&p, &v, pairs, n);
    cg_alog_entry e = entry(&v);
    cg_buf_init(&b);
    if (cg_alog_format(&p, &e, &b) < 0)
        snprintf(out, sizeof(out), "ERROR: format");
    else
        snprintf(out, sizeof(out), "%.*s", (int)b.len, b.data);
    cg_buf_free(&b);
    cg_alog_vals_free(&v);
    cg_alog_free(&p);
    return out;
}

static int line_is(const char *fmt, const char *const *pairs, size_t n, const char *want)
{
    const char *got = line_of(fmt, pairs, n);
    if (strcmp(got, want) != 0) {
        printf("#   format: %s\n#   got:    %s\n#   want:   %s\n", fmt, got, want);
        return 0;
    }
    return 1;
}

#define LINE(fmt, pairs, want) line_is(fmt, pairs, sizeof(pairs) / sizeof(pairs[0]), want)

static const char *const common[] = {
    "Referer",        "https://example.com/from",
    "User-Agent",     "curl/8.0 \"quoted\"",
    "X-Request-Id",   "first",
    "x-request-id",   "abc-123",
    "Authorization",  "Basic YnJrMHY6",
    "o:Content-Type", "text/plain",
    "o:X-Served-By",  "casgi",
};

static void test_atoms(void)
{
    ok(LINE("%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\"", common,
            "10.0.0.7 - brk0v [10/Oct/2000:13:55:36 +0000] \"GET /a%20b/c?x=1&y=%22 HTTP/1.1\" "
            "200 1234 \"https://example.com/from\" \"curl/8.0 \\\"quoted\\\"\""),
       "gunicorn's default format");
    ok(LINE("%(m)s|%(U)s|%(q)s|%(H)s|%(B)s", common, "GET|/a b/c|x=1&y=%22|HTTP/1.1|1234"),
       "m U (percent-decoded) q H B");
    ok(LINE("%(T)s %(M)s %(D)s %(L)s", common, "1 1500 1500000 1.500000"), "T M D L");
    ok(LINE("%(T)d %(M)i %(D)d %(B)d", common, "1 1500 1500000 1234"),
       "numbers with the d and i conversions");
    ok(LINE("%(p)s", common, "<4242>"), "p is <pid>");
    ok(LINE("%({x-request-id}i)s %({X-REQUEST-ID}I)s", common, "abc-123 abc-123"),
       "{name}i: case-insensitive, the last field wins");
    ok(LINE("%({content-type}o)s %({x-served-by}o)s %({x-missing}o)s", common,
            "text/plain casgi -"),
       "{name}o and a missing response header");
    ok(LINE("%({referer}i)s %({missing}i)s", common, "https://example.com/from -"),
       "{name}i and a missing request header");
    ok(LINE("%(zz)s %(Z)s %({foo}x)s %()s", common, "- - - -"), "unknown keys write '-'");
    ok(LINE("100%% %(s)s%%", common, "100% 200%"), "a doubled percent sign writes one");
    ok(LINE("no atoms at all", common, "no atoms at all"), "a literal format");
    ok(LINE("", common, ""), "the empty format");
    static const char *const none[] = {"x", "y"};
    ok(LINE("%(u)s \"%(f)s\" \"%(a)s\"", none, "- \"-\" \"-\""), "u f a without their headers");
}

static void test_env(void)
{
    setenv("CASGI_ALOG_TEST", "blue \"green\"\n", 1);
    static const char *const none[] = {"x", "y"};
    ok(LINE("%({CASGI_ALOG_TEST}e)s", none, "blue \\\"green\\\"\\x0a"),
       "{name}e: an environment variable, escaped");
    ok(LINE("%({casgi_alog_test}e)s", none, "blue \\\"green\\\"\\x0a"),
       "{name}e: the name in lowercase finds it");
    ok(LINE("%({CASGI_ALOG_NOT_SET}e)s", none, "-"), "{name}e unset is '-'");
}

static void test_escaping(void)
{
    cg_alog p;
    cg_buf b;
    ok(cg_alog_compile(&p, "%(r)s|%(U)s|%(h)s", 1, err, sizeof(err)) == 0, "compile r U h");
    cg_alog_entry e = entry(NULL);
    e.method = CG_SLICE_LIT("GE\"T");
    e.path = CG_SLICE_LIT("/\xc3\xa9%0a%zz%4");
    e.query = CG_SLICE_LIT("");
    e.client = CG_SLICE_LIT("::1:80");
    cg_buf_init(&b);
    ok(cg_alog_format(&p, &e, &b) == 0, "formats");
    const char want[] = "GE\\\"T /\\xc3\\xa9%0a%zz%4 HTTP/1.1|/\\xc3\\xa9\\x0a%zz%4|::1";
    ok(b.len == sizeof(want) - 1 && !memcmp(b.data, want, b.len),
       "quotes as \\\", other bytes as \\xNN, invalid escapes kept, an IPv6 host: %.*s", (int)b.len,
       b.data);
    cg_buf_reset(&b);
    e.client = CG_SLICE_LIT("");
    e.version = 2;
    cg_alog_format(&p, &e, &b);
    ok(b.len >= 2 && !memcmp(b.data + b.len - 2, "|-", 2) && memmem(b.data, b.len, "HTTP/2|", 7),
       "an unknown client is '-', HTTP/2 is HTTP/2");
    cg_buf_reset(&b);
    e.version = 0;
    cg_alog_format(&p, &e, &b);
    ok(memmem(b.data, b.len, "HTTP/1.0|", 9) != NULL, "HTTP/1.0");
    cg_buf_reset(&b);
    e.qmark = 1;
    cg_alog_format(&p, &e, &b);
    ok(memmem(b.data, b.len, "%4? HTTP/1.0|", 13) != NULL,
       "a '?' with an empty query is kept in r");
    cg_buf_free(&b);
    cg_alog_free(&p);
}

static const char *user_of(const char *auth)
{
    const char *pairs[] = {"authorization", auth};
    return line_of("%(u)s", pairs, 2);
}

static void test_basic_user(void)
{
    /* gunicorn's tests, and Python's base64.b64decode without validation. */
    ok(!strcmp(user_of("Basic YnJrMHY6"), "brk0v"), "Basic");
    ok(!strcmp(user_of("basic YnJrMHY6"), "brk0v"), "basic");
    ok(!strcmp(user_of("BASIC YnJrMHY6"), "brk0v"), "BASIC");
    ok(!strcmp(user_of("Basic ixsTtkKzIpVTncfQjbBcnoRNoDfbnaXG"), "-"), "not UTF-8: '-'");
    ok(!strcmp(user_of("Basic dXNlcjpw"), "user"), "user:p");
    ok(!strcmp(user_of("Basic dXNlcg=="), "user"), "padded");
    ok(!strcmp(user_of("Basic dXNlcg"), "-"), "missing padding: '-'");
    ok(!strcmp(user_of("Basic dXNlc"), "-"), "one more than a multiple of 4: '-'");
    ok(!strcmp(user_of("Basic dXN!lc*g=="), "user"), "other characters are skipped");
    ok(!strcmp(user_of("Basic dXNlcg==garbage"), "user"), "input after a pad is ignored");
    ok(!strcmp(user_of("Basic asO2ZTp4"), "j\\xc3\\xb6e"), "UTF-8 user, escaped");
    ok(!strcmp(user_of("Basic OnB3"), "-"), "empty user: '-'");
    ok(!strcmp(user_of("Bearer YnJrMHY6"), "-"), "not Basic: '-'");
    ok(!strcmp(user_of("Basic"), "-"), "no credentials: '-'");
    ok(!strcmp(user_of("Basicfoo YnJrMHY6"), "brk0v"), "gunicorn's prefix test");
    char longer[2000] = "Basic ";
    for (int i = 0; i < 400; i++)
        strcat(longer, "QUFB"); /* "AAA" * 400 */
    ok(!strcmp(user_of(longer), "-"), "a user too long to keep: '-'");
}

static void test_malformed(void)
{
    static const char *const bad[] = {
        "%",     "abc %", "%s",     "%(h)",   "%(h)x",  "%(h",         "%((h)s",
        "%(h)d", "%(s)i", "%(zz)d", "%(h) s", "%(h)5s", "%({HOME}e)d",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cg_alog p;
        err[0] = '\0';
        int rc = cg_alog_compile(&p, bad[i], 1, err, sizeof(err));
        ok(rc == -1 && strstr(err, "offset") && strstr(err, bad[i]), "refused '%s': %s", bad[i],
           err);
    }
    /* Python's rule: the key ends at the balancing ')'. */
    static const char *const none[] = {"x", "y"};
    ok(LINE("%((h))s|%(a(b)c)s", none, "-|-"), "nested parentheses belong to the key");
    char many[2048] = "";
    for (int i = 0; i < CG_ALOG_MAX_SLOTS + 1; i++) {
        char one[32];
        snprintf(one, sizeof(one), "%%({h%d}i)s", i);
        strcat(many, one);
    }
    cg_alog p;
    ok(cg_alog_compile(&p, many, 1, err, sizeof(err)) == -1 && strstr(err, "header names"),
       "too many header names: %s", err);
    char huge[CG_ALOG_MAX_FORMAT + 2];
    memset(huge, 'x', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    ok(cg_alog_compile(&p, huge, 1, err, sizeof(err)) == -1 && strstr(err, "longer"),
       "too long: %s", err);
}

static void test_ops(void)
{
    cg_alog p;
    ok(cg_alog_compile(&p, "a%(h)sb%%c%(zz)s%({x}i)s%(D)s", 1, err, sizeof(err)) == 0, "compile");
    ok(p.nops == 6, "literal runs and atoms: %zu ops", p.nops);
    ok(p.ops[0].kind == CG_ALOG_LIT && p.ops[1].kind == CG_ALOG_HOST &&
           p.ops[2].kind == CG_ALOG_LIT && p.ops[2].len == 3 && p.ops[3].kind == CG_ALOG_LIT &&
           !p.ops[3].known && p.ops[4].kind == CG_ALOG_REQ_HDR && p.ops[5].kind == CG_ALOG_USECS,
       "op kinds (b%%c merged into one run)");
    ok(p.ops[3].key_len == 2 && !memcmp(p.fmt + p.ops[3].key_off, "zz", 2),
       "an unknown atom keeps its key");
    ok(p.needs_time && !p.needs_date, "needs the request's time, not the date");
    ok(cg_alog_reads_headers(&p, 0) && !cg_alog_reads_headers(&p, 1), "reads request headers");
    cg_alog_free(&p);
    ok(cg_alog_compile(&p, "%(h)s %(s)s", 1, err, sizeof(err)) == 0 && !p.needs_time && !p.nslots,
       "no time, no headers when not written");
    cg_alog_free(&p);
    ok(!strcmp(cg_alog_kind_key(CG_ALOG_PATH), "U") && !cg_alog_kind_key(CG_ALOG_LIT), "keys");
    cg_alog_entry e = entry(NULL);
    e.duration = 2.25;
    ok(cg_alog_number(CG_ALOG_SECS, &e) == 2 && cg_alog_number(CG_ALOG_MSECS, &e) == 2250 &&
           cg_alog_number(CG_ALOG_USECS, &e) == 2250000 &&
           cg_alog_number(CG_ALOG_BYTES, &e) == 1234,
       "numbers");
    e.duration = -1;
    ok(cg_alog_number(CG_ALOG_USECS, &e) == 0, "a negative duration is 0");
}

static void test_zero_bytes(void)
{
    cg_alog p;
    cg_buf b;
    cg_alog_compile(&p, "%(b)s %(B)s", 1, err, sizeof(err));
    cg_alog_entry e = entry(NULL);
    e.bytes = 0;
    cg_buf_init(&b);
    cg_alog_format(&p, &e, &b);
    ok(b.len == 3 && !memcmp(b.data, "0 0", 3), "no body: b and B are 0 (gunicorn's output)");
    cg_buf_free(&b);
    cg_alog_free(&p);
}

static void test_json(void)
{
    cg_alog p;
    cg_alog_vals v;
    cg_buf b;
    ok(cg_alog_init_json(&p, 77) == 0 && p.json && p.needs_time, "JSON program");
    cg_alog_vals_init(&v, 0);
    static const char *const pairs[] = {
        "User-Agent",
        "a\"b\\c\x01\x7f\n\t\r\xc3\xa9\xf0\x9f\x98\x80\xff\xc3",
        "Authorization",
        "Basic dXNlcjpw",
    };
    capture(&p, &v, pairs, 4);
    cg_alog_entry e = entry(&v);
    e.path = CG_SLICE_LIT("/p\xe2\x82");
    cg_buf_init(&b);
    ok(cg_alog_format(&p, &e, &b) == 0, "formats");
    const char want[] =
        "{\"time\":\"2000-10-10T13:55:36+00:00\",\"client\":\"10.0.0.7\",\"port\":5555,"
        "\"method\":\"GET\",\"path\":\"/p\\ufffd\\ufffd\",\"query\":\"x=1&y=%22\","
        "\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":1234,\"duration\":1.500000,"
        "\"referer\":null,\"user_agent\":\"a\\\"b\\\\c\\u0001\\u007f\\n\\t\\r\\u00e9"
        "\\ud83d\\ude00\\ufffd\\ufffd\",\"user\":\"user\",\"pid\":77}";
    ok(b.len == sizeof(want) - 1 && !memcmp(b.data, want, b.len), "the JSON line: %.*s", (int)b.len,
       b.data);
    int ascii = 1;
    for (size_t i = 0; i < b.len; i++)
        ascii &= (unsigned char)b.data[i] >= 0x20 && (unsigned char)b.data[i] < 0x7f;
    ok(ascii, "printable ASCII only");
    cg_buf_reset(&b);
    e.client = CG_SLICE_LIT("");
    e.vals = NULL;
    cg_alog_format(&p, &e, &b);
    ok(memmem(b.data, b.len, "\"client\":null,\"port\":null", 25) &&
           memmem(b.data, b.len, "\"user_agent\":null,\"user\":null", 29),
       "unknown client, absent headers: null");
    cg_buf_free(&b);
    cg_alog_vals_free(&v);
    cg_alog_free(&p);
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    test_atoms();
    test_env();
    test_escaping();
    test_basic_user();
    test_malformed();
    test_ops();
    test_zero_bytes();
    test_json();
    return tap_done();
}
