/* Unit tests of the HTTP/1.1 head parser, chunked decoder, header table and
 * response helpers. Every head and body is parsed whole, fed growing one byte
 * at a time with the same parser, and split in two at every position; all
 * ways must agree. Each input lies right before a PROT_NONE page, so reading
 * one byte too far crashes the test. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "hdrtab.h"
#include "http1.h"
#include "guard.h"
#include "tap.h"

#define S(lit) (lit), sizeof(lit) - 1
#define MAXH 256

static const cg_http1_limits deflim = {8190, 8190, 100};

/* ---- head parsing in every split ------------------------------------- */

typedef struct result {
    long ret;
    const char *error;
    const char *base; /* the buffer the slices point into */
    size_t len;
    cg_http1_request req;
    cg_http1_header hdrs[MAXH];
} result;

static void parse_into(result *r, cg_http1_parser *p, const char *buf, size_t n,
                       const cg_http1_limits *lim)
{
    r->req.headers = r->hdrs;
    r->ret = cg_http1_parse_head(p, buf, n, lim, &r->req);
    r->error = p->error;
    r->base = buf;
    r->len = n;
}

/* Same bytes at the same offsets; a slice outside its buffer (the static "/"
 * of an absolute-form target) must be the same pointer. */
static int slice_same(cg_slice a, const result *ra, cg_slice b, const result *rb)
{
    if (a.len != b.len)
        return 0;
    int ain = a.base >= ra->base && a.base + a.len <= ra->base + ra->len;
    int bin = b.base >= rb->base && b.base + b.len <= rb->base + rb->len;
    if (ain != bin)
        return 0;
    if (!ain)
        return a.base == b.base;
    return a.base - ra->base == b.base - rb->base;
}

static int same_result(const result *a, const result *b)
{
    if (a->ret != b->ret || a->error != b->error)
        return 0;
    if (a->ret < 0)
        return 1;
    const cg_http1_request *x = &a->req, *y = &b->req;
    if (!slice_same(x->method, a, y->method, b) || !slice_same(x->target, a, y->target, b) ||
        !slice_same(x->path, a, y->path, b) || !slice_same(x->query, a, y->query, b) ||
        !slice_same(x->authority, a, y->authority, b))
        return 0;
    if (x->target_form != y->target_form || x->version != y->version ||
        x->num_headers != y->num_headers || x->content_length != y->content_length ||
        x->chunked != y->chunked || x->keep_alive != y->keep_alive ||
        x->expect_continue != y->expect_continue || x->upgrade != y->upgrade)
        return 0;
    for (size_t i = 0; i < x->num_headers; i++)
        if (!slice_same(x->headers[i].name, a, y->headers[i].name, b) ||
            !slice_same(x->headers[i].value, a, y->headers[i].value, b) ||
            x->headers[i].token != y->headers[i].token)
            return 0;
    return 1;
}

/* Every slice of a successful parse lies inside the head. */
static int slices_inside(const result *r)
{
    if (r->ret < 0)
        return 1;
    const char *lo = r->base, *hi = r->base + r->ret;
#define IN(s) ((s).base >= lo && (s).base + (s).len <= hi)
    const cg_http1_request *q = &r->req;
    if (!IN(q->method) || !IN(q->target) || !IN(q->query) || !IN(q->authority))
        return 0;
    if (!IN(q->path) &&
        !(q->target_form == CG_TARGET_ABSOLUTE && q->path.len == 1 && q->path.base[0] == '/'))
        return 0;
    for (size_t i = 0; i < q->num_headers; i++)
        if (!IN(q->headers[i].name) || !IN(q->headers[i].value))
            return 0;
#undef IN
    return 1;
}

static guard whole_guard;
static result whole;

/* Parses `in` whole (kept in `whole` until the next call), then growing and
 * split; returns 1 when all agree. */
static int parse_every_way(const char *in, size_t n, const cg_http1_limits *lim)
{
    static result r;
    cg_http1_parser p;
    int agree = 1;

    guard_free(&whole_guard);
    char *buf = guard_put(&whole_guard, in, n);
    cg_http1_parser_init(&p);
    parse_into(&whole, &p, buf, n, lim);
    if (!slices_inside(&whole))
        agree = 0;

    /* Growing one byte at a time, same parser, buffer moving each time. */
    cg_http1_parser_init(&p);
    r.ret = CG_HTTP1_INCOMPLETE;
    size_t k = 0;
    for (k = 0; k <= n; k++) {
        guard g;
        char *b = guard_put(&g, in, k);
        parse_into(&r, &p, b, k, lim);
        if (r.ret != CG_HTTP1_INCOMPLETE) {
            if (!same_result(&r, &whole) || (r.ret >= 0 && (size_t)r.ret != k))
                agree = 0;
            guard_free(&g);
            break;
        }
        guard_free(&g);
    }
    if (k > n && whole.ret != CG_HTTP1_INCOMPLETE)
        agree = 0;

    /* Two pieces: prefix of s bytes, then everything. */
    for (size_t s = 0; s <= n; s++) {
        guard g1, g2;
        cg_http1_parser_init(&p);
        char *b1 = guard_put(&g1, in, s);
        parse_into(&r, &p, b1, s, lim);
        if (r.ret == CG_HTTP1_INCOMPLETE) {
            char *b2 = guard_put(&g2, in, n);
            parse_into(&r, &p, b2, n, lim);
            guard_free(&g2);
        } else if (r.ret >= 0 && (size_t)r.ret > s) {
            agree = 0;
        }
        if (!same_result(&r, &whole))
            agree = 0;
        guard_free(&g1);
    }
    return agree;
}

static int sl_is(cg_slice s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.base, lit, s.len) == 0;
}

/* Expects rejection `code` for rule `why` (NULL: any rule). */
static void reject_lim(const char *in, size_t n, long code, const char *why,
                       const cg_http1_limits *lim, const char *name)
{
    int agree = parse_every_way(in, n, lim);
    ok(agree, "%s: same result in every split", name);
    ok(whole.ret == code && (!why || (whole.error && strcmp(whole.error, why) == 0)),
       "%s: rejected %ld (%s), got %ld (%s)", name, code, why ? why : "-", whole.ret,
       whole.error ? whole.error : "-");
}

static void reject(const char *in, size_t n, long code, const char *why, const char *name)
{
    reject_lim(in, n, code, why, &deflim, name);
}

/* Expects success with the whole input as the head; returns the request. */
static const cg_http1_request *accept_lim(const char *in, size_t n, const cg_http1_limits *lim,
                                          const char *name)
{
    int agree = parse_every_way(in, n, lim);
    ok(agree, "%s: same result in every split", name);
    ok(whole.ret == (long)n, "%s: accepted (%ld, %s)", name, whole.ret,
       whole.error ? whole.error : "-");
    return &whole.req;
}

static const cg_http1_request *accept(const char *in, size_t n, const char *name)
{
    return accept_lim(in, n, &deflim, name);
}

static const cg_http1_header *find(const cg_http1_request *r, const char *name)
{
    for (size_t i = 0; i < r->num_headers; i++)
        if (sl_is(r->headers[i].name, name))
            return &r->headers[i];
    return NULL;
}

/* ---- head: accepted requests ------------------------------------------ */

static void test_basic(void)
{
    const cg_http1_request *r = accept(S("GET /hello/world?a=1&b=2 HTTP/1.1\r\n"
                                         "Host: example.com\r\n"
                                         "User-Agent: curl/8.0\r\n"
                                         "Accept: */*\r\n"
                                         "X-Custom:  spaced value \t\r\n"
                                         "\r\n"),
                                       "simple GET");
    ok(sl_is(r->method, "GET"), "method");
    ok(sl_is(r->target, "/hello/world?a=1&b=2"), "target");
    ok(sl_is(r->path, "/hello/world"), "path");
    ok(sl_is(r->query, "a=1&b=2"), "query");
    ok(r->target_form == CG_TARGET_ORIGIN, "origin form");
    ok(r->version == 1, "HTTP/1.1");
    ok(r->num_headers == 4, "4 headers");
    ok(sl_is(r->headers[0].name, "Host") && sl_is(r->headers[0].value, "example.com") &&
           r->headers[0].token == CG_HDR_HOST,
       "Host header and token");
    ok(r->headers[1].token == CG_HDR_USER_AGENT && sl_is(r->headers[1].value, "curl/8.0"),
       "User-Agent");
    ok(r->headers[2].token == CG_HDR_ACCEPT, "Accept token");
    ok(sl_is(r->headers[3].name, "X-Custom") && sl_is(r->headers[3].value, "spaced value") &&
           r->headers[3].token == -1,
       "value trimmed, unknown token -1");
    ok(r->content_length == -1 && !r->chunked, "no body framing");
    ok(r->keep_alive && !r->expect_continue && !r->upgrade, "flags");

    r = accept(S("POST /submit HTTP/1.1\r\nhost: a\r\ncontent-length: 42\r\n\r\n"), "POST");
    ok(r->content_length == 42 && !r->chunked, "content_length 42");
    ok(sl_is(r->path, "/submit") && r->query.len == 0, "path without query");
    ok(r->headers[1].token == CG_HDR_CONTENT_LENGTH, "lower-case name token");

    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), "chunked");
    ok(r->chunked && r->content_length == -1, "chunked flag");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n"),
               "chunked any case");
    ok(r->chunked, "chunked case-insensitive");

    r = accept(S("GET / HTTP/1.0\r\n\r\n"), "HTTP/1.0 without Host");
    ok(r->version == 0 && !r->keep_alive && r->num_headers == 0, "1.0 closes by default");

    r = accept(S("GET /a? HTTP/1.1\r\nHost: a\r\n\r\n"), "empty query");
    ok(sl_is(r->path, "/a") && r->query.len == 0 && r->query.base == r->target.base + 3,
       "empty query after '?'");
    r = accept(S("GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n"), "query with '?'");
    ok(sl_is(r->path, "/a") && sl_is(r->query, "b?c"), "split at first '?'");
    r = accept(S("GET /%7Euser/a%20b;p=1 HTTP/1.1\r\nHost: a\r\n\r\n"), "raw path kept");
    ok(sl_is(r->path, "/%7Euser/a%20b;p=1"), "path undecoded");
    r = accept(S("M-SEARCH! /x HTTP/1.1\r\nHost: a\r\n\r\n"), "extension method");
    ok(sl_is(r->method, "M-SEARCH!"), "token method");

    r = accept(S("GET / HTTP/1.1\r\nHost:\r\nX:\r\nY: \t \r\n\r\n"), "empty values");
    ok(r->num_headers == 3 && r->headers[0].value.len == 0 && r->headers[1].value.len == 0 &&
           r->headers[2].value.len == 0,
       "empty values");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n"), "HTAB inside value");
    ok(sl_is(find(r, "X")->value, "a\tb"), "HTAB kept");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9 \xff\x80\r\n\r\n"), "obs-text");
    ok(sl_is(find(r, "X")->value, "caf\xc3\xa9 \xff\x80"), "obs-text kept");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"), "duplicates");
    ok(r->num_headers == 3 && sl_is(r->headers[1].name, "X-Dup") &&
           sl_is(r->headers[2].name, "x-dup"),
       "duplicates kept in order, case kept");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n"), "tchars");
    ok(r->num_headers == 2, "every tchar in a name");

    /* A long value exercises the word-at-a-time scan, with a tab in the middle. */
    char big[2048];
    int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\nCookie: ");
    for (int i = 0; i < 1000; i++)
        big[n++] = (char)(i == 517 ? '\t' : 'a' + i % 26);
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\n\r\n");
    r = accept(big, (size_t)n, "long value");
    ok(r->headers[1].value.len == 1000 && r->headers[1].token == CG_HDR_COOKIE, "long value");
    big[n - 400] = 0x7f;
    reject(big, (size_t)n, -400, "control character in field value", "DEL deep in a long value");
}

static void test_empty_lines(void)
{
    const cg_http1_request *r = accept(S("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
                                       "empty lines before the request line");
    ok(r->method.base == whole.base + 4 && sl_is(r->method, "GET"), "skipped in consumed");
    char in[200];
    size_t n = 0;
    for (int i = 0; i < 16; i++)
        n += (size_t)sprintf(in + n, "\r\n");
    n += (size_t)sprintf(in + n, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    accept(in, n, "16 empty lines");
    memmove(in + 2, in, n);
    reject(in, n + 2, -400, "too many empty lines before the request line", "17 empty lines");
    reject(S("\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "bare LF as line end",
           "bare LF before the request line");
}

static void test_pipelined(void)
{
    const char in[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
    cg_http1_parser p;
    cg_http1_header h[4];
    cg_http1_request req = {.headers = h};
    cg_http1_parser_init(&p);
    long r1 = cg_http1_parse_head(&p, in, sizeof in - 1, &deflim, &req);
    ok(r1 == 28 && sl_is(req.path, "/1"), "first of two pipelined heads (%ld)", r1);
    long r2 = cg_http1_parse_head(&p, in + r1, sizeof in - 1 - (size_t)r1, &deflim, &req);
    ok(r2 == 28 && sl_is(req.path, "/2") && sl_is(req.headers[0].value, "b"),
       "parser ready for the next head after success (%ld)", r2);
}

static void test_trailing_bytes(void)
{
    /* Body bytes and a next request after the head are not part of it. */
    const char in[] =
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
    int agree = parse_every_way(in, sizeof in - 1, &deflim);
    ok(agree, "head with trailing bytes: same result in every split");
    ok(whole.ret == 48 && whole.req.content_length == 5 && sl_is(whole.req.path, "/p"),
       "head length excludes the body (%ld)", whole.ret);
}

static void test_connection_flags(void)
{
    const cg_http1_request *r;
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), "1.1 close");
    ok(!r->keep_alive, "Connection: close");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n"),
               "1.1 close in a list");
    ok(!r->keep_alive, "close token in a list");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"), "1.1 closed");
    ok(r->keep_alive, "'closed' is not 'close'");
    r = accept(S("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), "1.0 keep-alive");
    ok(r->keep_alive, "1.0 with keep-alive");
    r = accept(S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), "1.0 Keep-Alive");
    ok(r->keep_alive, "1.0 keep-alive case-insensitive");
    r = accept(S("GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n"),
               "1.0 keep-alive in second field");
    ok(r->keep_alive, "several Connection fields");
    r = accept(S("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), "1.0 both");
    ok(!r->keep_alive, "close wins");
    r = accept(S("GET / HTTP/1.0\r\nHost: a\r\n\r\n"), "1.0 plain");
    ok(!r->keep_alive, "1.0 default close");

    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                 "Content-Length: 3\r\n\r\n"),
               "expect");
    ok(r->expect_continue, "Expect: 100-continue");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n"), "expect case");
    ok(r->expect_continue, "Expect case-insensitive");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"), "other expect");
    ok(!r->expect_continue, "other expectation ignored");

    r = accept(S("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                 "Upgrade: websocket\r\n\r\n"),
               "upgrade");
    ok(r->upgrade && r->keep_alive, "upgrade flag");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n"), "no Upgrade");
    ok(!r->upgrade, "upgrade token without Upgrade field");
    r = accept(S("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"), "no token");
    ok(!r->upgrade, "Upgrade field without the token");
}

static void test_content_length(void)
{
    const cg_http1_request *r;
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), "CL 0");
    ok(r->content_length == 0, "content_length 0");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
               "identical repeats");
    ok(r->content_length == 5, "identical CL repeats accepted");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), "CL list");
    ok(r->content_length == 5, "identical CL list accepted");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5 ,\t5\r\n\r\n"), "CL list ws");
    ok(r->content_length == 5, "CL list with OWS");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n"), "leading zeros");
    ok(r->content_length == 7, "leading zeros");
    r = accept(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n"),
               "CL max");
    ok(r->content_length == 9223372036854775807LL, "CL 2^63-1");

    static const char *bad[] = {"+5",
                                "-5",
                                "5 5",
                                "0x5",
                                "",
                                "5,",
                                ",5",
                                "5,,5",
                                "a",
                                "5a",
                                "9223372036854775808",
                                "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                         bad[i]);
        snprintf(name, sizeof name, "CL '%s'", bad[i]);
        reject(in, (size_t)n, -400, "invalid Content-Length", name);
    }
    reject(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), -400,
           "differing Content-Length values", "differing CL fields");
    reject(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"), -400,
           "differing Content-Length values", "differing CL list");
}

static void test_transfer_encoding(void)
{
    reject(S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"),
           -400, "both Content-Length and Transfer-Encoding", "CL and TE");
    reject(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
             "Content-Length: 0\r\n\r\n"),
           -400, "both Content-Length and Transfer-Encoding", "TE and CL");
    static const char *bad[] = {"gzip, chunked", "chunked, gzip", "gzip", "chunked, chunked",
                                "chunked;q=1",   "identity",      ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in,
                         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n", bad[i]);
        snprintf(name, sizeof name, "TE '%s'", bad[i]);
        reject(in, (size_t)n, -400, "Transfer-Encoding other than chunked", name);
    }
    reject(S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"),
           -400, "Transfer-Encoding other than chunked", "TE twice");
    reject(S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400,
           "Transfer-Encoding in HTTP/1.0", "TE in 1.0");
}

static void test_fields(void)
{
    reject(S("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), -400, "whitespace between field name and colon",
           "SP before colon");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX\t: a\r\n\r\n"), -400,
           "whitespace between field name and colon", "HTAB before colon");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"), -400, "obs-fold", "obs-fold SP");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n"), -400, "obs-fold",
           "obs-fold HTAB");
    reject(S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), -400, "whitespace before the first field",
           "whitespace line before the first field");
    reject(S("GET / HTTP/1.1\r\n\t\r\nHost: a\r\n\r\n"), -400, "whitespace before the first field",
           "HTAB line before the first field");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), -400, "empty field name", "empty name");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX(y): b\r\n\r\n"), -400, "field name is not a token",
           "'(' in name");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX@y: b\r\n\r\n"), -400, "field name is not a token",
           "'@' in name");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n"), -400,
           "field name is not a token", "non-ASCII name");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), -400, "field line without colon",
           "no colon");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX-A-Long-Field-Name(with)-Paren: 1\r\n\r\n"), -400,
           "field name is not a token", "'(' deep in a long name");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length\x80: 1\r\n\r\n"), -400,
           "field name is not a token", "known name then a high byte");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 1\r\n\r\n"), -400,
           "whitespace between field name and colon", "known name, SP before colon");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nUpgrade-Insecure-Requests\t: 1\r\n\r\n"), -400,
           "whitespace between field name and colon", "long known name, HTAB before colon");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nUpgrade-Insecure-Requests\r\n\r\n"), -400,
           "field line without colon", "long known name, no colon");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX{y}: 1\r\n\r\n"), -400, "field name is not a token",
           "'{' in name");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"), -400,
           "control character in field value", "NUL in value");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"), -400,
           "control character in field value", "DEL in value");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"), -400,
           "control character in field value", "SOH in value");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1f b\r\n\r\n"), -400,
           "control character in field value", "US in value");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\x0b"
             "0123456789\r\n\r\n"),
           -400, "control character in field value", "VT in a word-scanned value");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), -400, "more than one Host",
           "two Host fields");
    reject(S("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"), -400, "more than one Host",
           "two Host fields in 1.0");
    reject(S("GET / HTTP/1.1\r\nX: a\r\n\r\n"), -400, "missing Host", "missing Host");
    reject(S("GET / HTTP/1.1\r\n\r\n"), -400, "missing Host", "missing Host, no fields");
}

static void test_line_ends(void)
{
    reject(S("GET / HTTP/1.1\nHost: a\r\n\r\n"), -400, "bare LF as line end", "LF after request");
    reject(S("GET / HTTP/1.1\r\nHost: a\n\r\n"), -400, "bare LF as line end", "LF after field");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\n\n"), -400, "bare LF as line end", "LF at end");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\n\n\r\n"), -400, "bare LF as line end", "LF alone");
    reject(S("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), -400, "bare CR", "CR in value");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"), -400, "bare CR", "CR CR LF");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\n\rX: b\r\n\r\n"), -400, "bare CR", "CR at line start");
    reject(S("GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n"), -400, "bare CR", "CR in name");
    reject(S("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "bare CR", "CR in target");
    reject(S("G\rET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "bare CR", "CR in method");
    reject(S("GET / HTTP/1.1\rx\r\nHost: a\r\n\r\n"), -400, "bare CR", "CR in version");
    reject(S("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "bare CR", "CR before request line");
    reject(S("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n"), -400, "bare CR", "CR CR LF line");
}

static void test_request_line(void)
{
    reject(S("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "method is not a token", "'(' method");
    reject(S("G\x80T / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "method is not a token",
           "non-ASCII method");
    reject(S(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "method is not a token", "empty method");
    reject(S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), -400, "method is not a token",
           "TLS handshake refused before any line end");
    reject(S("\r\n\x00GET / HTTP/1.1\r\n"), -400, "method is not a token",
           "NUL after an empty line, incomplete");
    {
        cg_http1_parser p;
        cg_http1_header h[4];
        cg_http1_request req = {.headers = h};
        cg_http1_parser_init(&p);
        ok(cg_http1_parse_head(&p, "\x16", 1, &deflim, &req) == CG_HTTP1_BAD_REQUEST,
           "first byte of a TLS handshake: 400 at once");
        cg_http1_parser_init(&p);
        ok(cg_http1_parse_head(&p, "\r", 1, &deflim, &req) == CG_HTTP1_INCOMPLETE,
           "a CR may start an empty line");
    }
    reject(S("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "method is not a token", "HTAB");
    static const char *shape = "request line is not method SP target SP version";
    reject(S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), -400, shape, "two SP after method");
    reject(S("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), -400, shape, "two SP after target");
    reject(S("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), -400, shape, "SP after version");
    reject(S("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), -400, shape, "SP in target");
    reject(S("GET /\r\nHost: a\r\n\r\n"), -400, shape, "no version");
    reject(S("GET\r\nHost: a\r\n\r\n"), -400, shape, "method only");
    reject(S("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n"), -400, "invalid byte in request target",
           "HTAB before version");

    static const char *malformed[] = {"HTTP/1.10", "http/1.1",   "HTTP/1",    "HTTP/11",
                                      "HTTP/1.x",  "HTTP/a.1",   "HTTP 1.1",  "HTTP/1,1",
                                      "",          "HTTP/1.1\t", "HTTPS/1.1", "HTTP/+.1"};
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in, "GET / %s\r\nHost: a\r\n\r\n", malformed[i]);
        snprintf(name, sizeof name, "version '%s'", malformed[i]);
        reject(in, (size_t)n, -400, NULL, name);
    }
    reject(S("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), -400, "malformed HTTP version", "HTTP/1.10");
    static const char *unsupported[] = {"HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in, "GET / %s\r\nHost: a\r\n\r\n", unsupported[i]);
        snprintf(name, sizeof name, "version '%s'", unsupported[i]);
        reject(in, (size_t)n, -505, "unsupported HTTP version", name);
    }
}

static void test_targets(void)
{
    const cg_http1_request *r;
    r = accept(S("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), "OPTIONS *");
    ok(r->target_form == CG_TARGET_ASTERISK && sl_is(r->path, "*") && r->query.len == 0,
       "asterisk form");
    reject(S("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "asterisk-form target needs OPTIONS",
           "GET *");
    reject(S("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "invalid request target",
           "OPTIONS *x");

    r = accept(S("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), "CONNECT");
    ok(r->target_form == CG_TARGET_AUTHORITY && sl_is(r->path, "example.com:443") &&
           sl_is(r->target, "example.com:443") && r->query.len == 0,
       "authority form");
    r = accept(S("CONNECT [::1]:8080 HTTP/1.1\r\nHost: x\r\n\r\n"), "CONNECT IPv6");
    ok(r->target_form == CG_TARGET_AUTHORITY, "IPv6 authority");
    r = accept(S("CONNECT 10.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n"), "CONNECT IPv4");
    static const char *connect_bad[] = {
        "/",      "http://a:1/", "a",       ":80",   "a:", "a:80x",    "a:123456",
        "u@a:80", "a/b:80",      "[::1:80", "[]:80", "*",  "[::g]:80", "a:b:80"};
    for (size_t i = 0; i < sizeof connect_bad / sizeof *connect_bad; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in, "CONNECT %s HTTP/1.1\r\nHost: a\r\n\r\n", connect_bad[i]);
        snprintf(name, sizeof name, "CONNECT '%s'", connect_bad[i]);
        reject(in, (size_t)n, -400, "CONNECT needs an authority-form target", name);
    }
    reject(S("GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "invalid request target",
           "authority form without CONNECT");

    r = accept(S("GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n"),
               "absolute form");
    ok(r->target_form == CG_TARGET_ABSOLUTE && sl_is(r->path, "/a/b") && sl_is(r->query, "c=d"),
       "absolute path and query");
    ok(sl_is(r->authority, "example.com"), "absolute-form authority");
    r = accept(S("GET http://example.com:8080/x HTTP/1.1\r\nX-A: 1\r\nHost: other\r\n\r\n"),
               "absolute form, different Host");
    ok(r->num_headers == 2 && sl_is(r->headers[1].name, "Host") &&
           sl_is(r->headers[1].value, "example.com:8080") && sl_is(r->headers[0].value, "1"),
       "the target's authority replaces the Host value (RFC 9112 3.2.2)");
    r = accept(S("GET http://example.com/x HTTP/1.0\r\n\r\n"),
               "absolute form, HTTP/1.0 without Host");
    ok(r->num_headers == 0 && sl_is(r->authority, "example.com"), "no Host is added");
    r = accept(S("GET /x HTTP/1.1\r\nHost: h\r\n\r\n"), "origin form");
    ok(r->authority.len == 0 && sl_is(r->headers[0].value, "h"), "origin form keeps Host");
    r = accept(S("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), "CONNECT");
    ok(sl_is(r->authority, "h:443"), "authority-form authority");
    r = accept(S("GET HTTPS://example.com:8443 HTTP/1.1\r\nHost: x\r\n\r\n"), "absolute, no path");
    ok(r->target_form == CG_TARGET_ABSOLUTE && sl_is(r->path, "/") && r->query.len == 0,
       "empty absolute path is '/'");
    r = accept(S("GET Http://h?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"), "absolute, query only");
    ok(sl_is(r->path, "/") && sl_is(r->query, "x=1"), "absolute query without path");
    r = accept(S("GET http://h/ HTTP/1.1\r\nHost: x\r\n\r\n"), "absolute root");
    ok(sl_is(r->path, "/") && r->path.base > r->target.base, "path slices the target");
    reject(S("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), -400,
           "absolute-form target without a host", "empty host");
    reject(S("GET http://u@h/ HTTP/1.1\r\nHost: a\r\n\r\n"), -400,
           "userinfo in absolute-form target", "userinfo");
    static const char *bad[] = {"a", "ftp://a/", "http:/a", "http:a", "http", "?a"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", bad[i]);
        snprintf(name, sizeof name, "target '%s'", bad[i]);
        reject(in, (size_t)n, -400, "invalid request target", name);
    }
    static const char *bytes[] = {"/a#b", "/a\x7f", "/\x80", "/a\x01", "/\xff", "/a\x1b[0m"};
    for (size_t i = 0; i < sizeof bytes / sizeof *bytes; i++) {
        char in[200], name[80];
        int n = snprintf(in, sizeof in, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", bytes[i]);
        snprintf(name, sizeof name, "target byte %zu", i);
        reject(in, (size_t)n, -400, "invalid byte in request target", name);
    }
    reject(S("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n"), -400, "invalid byte in request target",
           "NUL in target");
    reject(S("GET /0123456789abcdef#0123456789 HTTP/1.1\r\nHost: a\r\n\r\n"), -400,
           "invalid byte in request target", "'#' in a word-scanned target");
}

static void test_limits(void)
{
    cg_http1_limits lim = {32, 24, 3};
    /* request line: exactly 32 bytes accepted, 33 refused */
    accept_lim(S("GET /012345678901234567 HTTP/1.1\r\nHost: a\r\n\r\n"), &lim, "line at limit");
    reject_lim(S("GET /01234567890123456789 HTTP/1.1\r\nHost: a\r\n\r\n"), -414,
               "request line too long", &lim, "line over limit");
    reject_lim(S("GET /0123456789012345678901234567890"), -414, "request line too long", &lim,
               "line over limit, incomplete");

    cg_http1_parser p;
    cg_http1_header h[4];
    cg_http1_request req = {.headers = h};
    const char *line = "GET /0123456789012345678901234567890123456789";
    cg_http1_parser_init(&p);
    ok(cg_http1_parse_head(&p, line, 32, &lim, &req) == CG_HTTP1_INCOMPLETE,
       "32 bytes of request line: incomplete");
    ok(cg_http1_parse_head(&p, line, 33, &lim, &req) == CG_HTTP1_URI_TOO_LONG,
       "33rd byte without line end: 414 at once");
    cg_http1_parser_init(&p);
    ok(cg_http1_parse_head(&p, "GET /012345678901234567 HTTP/1.1\r", 33, &lim, &req) ==
           CG_HTTP1_INCOMPLETE,
       "CR after a line of exactly the limit: still incomplete");

    /* field line "name: value" of exactly 24 bytes accepted, 25 refused */
    accept_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 012345678901234567890\r\n\r\n"), &lim,
               "field at limit");
    reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789012345678901\r\n\r\n"), -431,
               "header field line too long", &lim, "field over limit");
    reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789012345678901"), -431,
               "header field line too long", &lim, "field over limit, incomplete");
    reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789012345678901\n\r\n"), -431,
               "header field line too long", &lim, "long line with bare LF: length first");

    /* field count */
    accept_lim(S("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"), &lim, "fields at limit");
    reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), -431,
               "too many header fields", &lim, "fields over limit");
    reject_lim(S("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC"), -431, "too many header fields",
               &lim, "fields over limit, incomplete");

    /* defaults: 8190 */
    static char big[20000];
    int n = sprintf(big, "GET /");
    memset(big + n, 'a', 8190 - 14);
    n += 8190 - 14;
    n += sprintf(big + n, " HTTP/1.1\r\nHost: a\r\n\r\n");
    accept(big, (size_t)n, "request line of 8190 bytes");
    memmove(big + 6, big + 5, (size_t)n - 5);
    reject(big, (size_t)n + 1, -414, "request line too long", "request line of 8191 bytes");

    n = sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(big + n, 'b', 8190 - 3);
    n += 8190 - 3;
    n += sprintf(big + n, "\r\n\r\n");
    accept(big, (size_t)n, "field line of 8190 bytes");
    big[n - 4] = 'b';
    big[n - 3] = '\r';
    big[n - 2] = '\n';
    big[n - 1] = '\r';
    big[n] = '\n';
    reject(big, (size_t)n + 1, -431, "header field line too long", "field line of 8191 bytes");

    n = sprintf(big, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < 100; i++)
        n += sprintf(big + n, "X%d: %d\r\n", i, i);
    n += sprintf(big + n, "\r\n");
    const cg_http1_request *r = accept(big, (size_t)n, "100 fields");
    ok(r->num_headers == 100, "100 headers");
    n -= 2;
    n += sprintf(big + n, "Y: 1\r\n\r\n");
    reject(big, (size_t)n, -431, "too many header fields", "101 fields");
}

static void test_restart(void)
{
    cg_http1_parser p;
    cg_http1_header h[4];
    cg_http1_request req = {.headers = h};
    cg_http1_parser_init(&p);
    const char *a = "GET /long HTTP/1.1\r\nHos";
    const char *b = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    ok(cg_http1_parse_head(&p, a, strlen(a), &deflim, &req) == CG_HTTP1_INCOMPLETE, "partial");
    ok(cg_http1_parse_head(&p, b, 5, &deflim, &req) == CG_HTTP1_INCOMPLETE,
       "shorter buffer: starts over");
    ok(cg_http1_parse_head(&p, b, strlen(b), &deflim, &req) == (long)strlen(b) &&
           sl_is(req.path, "/"),
       "then parses the new buffer");
}

/* ---- header table ----------------------------------------------------- */

static void test_hdrtab(void)
{
    int all = 1, lower = 1, upper = 1;
    for (int t = 0; t < CG_HDR__COUNT; t++) {
        cg_slice s = cg_hdr_names[t];
        char buf[64];
        if (!s.base || s.len == 0 || s.len >= sizeof buf) {
            all = 0;
            continue;
        }
        for (size_t i = 0; i < s.len; i++)
            if (s.base[i] >= 'A' && s.base[i] <= 'Z')
                lower = 0;
        if (cg_hdr_lookup(s.base, s.len) != t)
            all = 0;
        for (size_t i = 0; i < s.len; i++)
            buf[i] = (char)(s.base[i] >= 'a' && s.base[i] <= 'z' ? s.base[i] - 32 : s.base[i]);
        if (cg_hdr_lookup(buf, s.len) != t)
            upper = 0;
        /* near misses: one byte changed, one byte longer or shorter */
        for (size_t i = 0; i < s.len; i++) {
            memcpy(buf, s.base, s.len);
            buf[i] ^= 0x01;
            if (cg_hdr_lookup(buf, s.len) != -1)
                all = 0;
            buf[i] = (char)(s.base[i] ^ 0x20);
            if ((s.base[i] < 'a' || s.base[i] > 'z') && cg_hdr_lookup(buf, s.len) != -1)
                all = 0;
        }
        memcpy(buf, s.base, s.len);
        buf[s.len] = 's';
        if (cg_hdr_lookup(buf, s.len + 1) != -1 || cg_hdr_lookup(buf, s.len - 1) != -1)
            all = 0;
    }
    ok(all, "every name maps to its token; near misses map to -1");
    ok(lower, "all names lower-case");
    ok(upper, "upper-case names found");
    ok(cg_hdr_lookup(S("Content-Length")) == CG_HDR_CONTENT_LENGTH, "mixed case");
    ok(cg_hdr_lookup(S("X-Forwarded-For")) == CG_HDR_X_FORWARDED_FOR, "X-Forwarded-For");
    ok(cg_hdr_lookup(S("x")) == -1 && cg_hdr_lookup("", 0) == -1, "short names");
    ok(cg_hdr_lookup(S("access-control-request-headersx")) == -1, "longer than any name");
    ok(cg_hdr_lookup(S("HOS\xd4")) == -1, "high byte not folded");
    ok(cg_hdr_lookup(S("\x0d\x0e")) == -1 && cg_hdr_lookup(S("te\x0d")) == -1 &&
           cg_hdr_lookup(S("x\x0dreal-ip")) == -1,
       "control bytes never match '-'");
    char name[] = "Content-TYPE-\xc3\x89-AbCdEfGhIjKlMnOpQrStUvWxYz@[`{";
    char out[sizeof name];
    cg_ascii_lower(out, name, sizeof name);
    ok(strcmp(out, "content-type-\xc3\x89-abcdefghijklmnopqrstuvwxyz@[`{") == 0, "ascii_lower");
    cg_ascii_lower(name, name, sizeof name);
    ok(strcmp(name, out) == 0, "ascii_lower in place");
}

/* ---- chunked decoder -------------------------------------------------- */

typedef struct dres {
    int ret;
    const char *error;
    size_t consumed; /* total consumed up to DONE / the error */
    size_t body_len;
    char body[70000];
} dres;

/* Feeds in[0..n) in pieces of the given sizes (0 terminates; the rest goes in
 * the last piece), each piece against a guard page. */
static void decode_pieces(const char *in, size_t n, const size_t *sizes, const cg_http1_limits *lim,
                          dres *out)
{
    cg_http1_chunked d;
    cg_http1_chunked_init(&d, lim);
    out->ret = CG_CHUNKED_MORE;
    out->error = NULL;
    out->consumed = 0;
    out->body_len = 0;
    size_t off = 0;
    for (size_t k = 0; off < n || k == 0; k++) {
        size_t sz = sizes[k] ? sizes[k] : n - off;
        if (sz > n - off)
            sz = n - off;
        guard g;
        char *b = guard_put(&g, in + off, sz);
        size_t pos = 0;
        int ret;
        do {
            size_t used = 0;
            cg_slice data;
            ret = cg_http1_chunked_decode(&d, b + pos, sz - pos, &used, &data);
            if (ret == CG_CHUNKED_DATA) {
                if (data.base < b + pos || data.base + data.len > b + pos + used ||
                    data.base + data.len != b + pos + used || data.len == 0)
                    out->ret = 99; /* slice outside the input */
                memcpy(out->body + out->body_len, data.base, data.len);
                out->body_len += data.len;
            }
            pos += used;
        } while (ret == CG_CHUNKED_DATA && pos < sz);
        off += sz;
        if (ret == CG_CHUNKED_DONE || ret == CG_CHUNKED_ERROR) {
            out->consumed = off - sz + pos;
            if (out->ret != 99)
                out->ret = ret;
            out->error = d.error;
            guard_free(&g);
            return;
        }
        if (ret != CG_CHUNKED_DATA && pos != sz)
            out->ret = 98; /* MORE must consume everything */
        guard_free(&g);
        if (sizes[k] == 0)
            break;
    }
    out->consumed = off;
    if (out->ret != 98 && out->ret != 99)
        out->ret = CG_CHUNKED_MORE;
}

static int dres_same(const dres *a, const dres *b)
{
    return a->ret == b->ret && a->error == b->error && a->consumed == b->consumed &&
           a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0;
}

static dres dwhole, dtmp;

/* Decodes whole, byte by byte and split in two everywhere; 1 when all agree. */
static int decode_every_way(const char *in, size_t n, const cg_http1_limits *lim)
{
    static size_t ones[70000];
    size_t whole_sizes[1] = {0};
    int agree = 1;
    decode_pieces(in, n, whole_sizes, lim, &dwhole);
    if (n < sizeof ones / sizeof *ones) {
        for (size_t i = 0; i < n; i++)
            ones[i] = 1;
        ones[n] = 0;
        decode_pieces(in, n, ones, lim, &dtmp);
        agree &= dres_same(&dwhole, &dtmp);
    }
    for (size_t s = 0; s <= n; s++) {
        size_t two[2] = {s ? s : n, 0};
        decode_pieces(in, n, two, lim, &dtmp);
        agree &= dres_same(&dwhole, &dtmp);
    }
    return agree;
}

/* Expects DONE with `body` after `consumed` bytes (-1: the whole input). */
static void chunked_ok_lim(const char *in, size_t n, const char *body, size_t body_len,
                           long consumed, const cg_http1_limits *lim, const char *name)
{
    size_t want = consumed < 0 ? n : (size_t)consumed;
    int agree = decode_every_way(in, n, lim);
    ok(agree, "%s: same result in every split", name);
    ok(dwhole.ret == CG_CHUNKED_DONE && dwhole.consumed == want && dwhole.body_len == body_len &&
           memcmp(dwhole.body, body, body_len) == 0,
       "%s: done with the body (ret %d, consumed %zu, %s)", name, dwhole.ret, dwhole.consumed,
       dwhole.error ? dwhole.error : "-");
}

static void chunked_ok(const char *in, size_t n, const char *body, long consumed, const char *name)
{
    chunked_ok_lim(in, n, body, strlen(body), consumed, &deflim, name);
}

static void chunked_bad_lim(const char *in, size_t n, const char *why, const cg_http1_limits *lim,
                            const char *name)
{
    int agree = decode_every_way(in, n, lim);
    ok(agree, "%s: same result in every split", name);
    ok(dwhole.ret == CG_CHUNKED_ERROR && dwhole.error && strcmp(dwhole.error, why) == 0,
       "%s: error '%s' (ret %d, %s)", name, why, dwhole.ret, dwhole.error ? dwhole.error : "-");
}

static void chunked_bad(const char *in, size_t n, const char *why, const char *name)
{
    chunked_bad_lim(in, n, why, &deflim, name);
}

static void test_chunked(void)
{
    chunked_ok(S("5\r\nhello\r\n0\r\n\r\n"), "hello", -1, "one chunk");
    chunked_ok(S("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), "hello world", 26,
               "two chunks, bytes after the body left");
    chunked_ok(S("0\r\n\r\n"), "", -1, "empty body");
    chunked_ok(S("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"), "0123456789abcdefghij", -1,
               "hex both cases");
    chunked_ok(S("0005\r\nhello\r\n000\r\n\r\n"), "hello", -1, "leading zeros");
    chunked_ok(S("5;name=value\r\nhello\r\n0;last\r\n\r\n"), "hello", -1, "extensions");
    chunked_ok(S("5 ;a\r\nhello\r\n0\t; b=\"q\"\r\n\r\n"), "hello", -1, "BWS before ';'");
    chunked_ok(S("5\r\nhello\r\n0\r\nX-Trailer: yes\r\nChecksum:  abc \r\n\r\n"), "hello", -1,
               "trailers discarded");
    chunked_ok_lim(S("3\r\na\0b\r\n0\r\nX:\r\n\r\n"), "a\0b", 3, -1, &deflim,
                   "binary data, empty trailer value");

    static char big[70000];
    static char body[66000];
    int n = sprintf(big, "10000\r\n");
    for (int i = 0; i < 65536; i++)
        body[i] = big[n + i] = (char)('a' + i % 23);
    n += 65536;
    n += sprintf(big + n, "\r\n0\r\n\r\n");
    {
        size_t whole_sizes[1] = {0};
        decode_pieces(big, (size_t)n, whole_sizes, &deflim, &dwhole);
        ok(dwhole.ret == CG_CHUNKED_DONE && dwhole.body_len == 65536 &&
               memcmp(dwhole.body, body, 65536) == 0,
           "64 KiB chunk");
        size_t sizes[] = {3, 4, 1000, 30000, 1, 1, 1, 0};
        decode_pieces(big, (size_t)n, sizes, &deflim, &dtmp);
        ok(dres_same(&dwhole, &dtmp), "64 KiB chunk in odd pieces");
    }

    /* The data slice is zero-copy and covers only what is present. */
    {
        cg_http1_chunked d;
        cg_http1_chunked_init(&d, &deflim);
        const char *in = "a\r\n0123";
        size_t used;
        cg_slice data;
        int ret = cg_http1_chunked_decode(&d, in, strlen(in), &used, &data);
        ok(ret == CG_CHUNKED_DATA && data.base == in + 3 && data.len == 4 && used == 7,
           "partial chunk data points into the input");
        ret = cg_http1_chunked_decode(&d, "", 0, &used, &data);
        ok(ret == CG_CHUNKED_MORE && used == 0, "no input: more");
        ret = cg_http1_chunked_decode(&d, "456789\r\n0\r\n\r\nX", 14, &used, &data);
        ok(ret == CG_CHUNKED_DATA && data.len == 6 && used == 6, "rest of the chunk");
        ret = cg_http1_chunked_decode(&d, "\r\n0\r\n\r\nX", 8, &used, &data);
        ok(ret == CG_CHUNKED_DONE && used == 7, "done, trailing byte left");
        ret = cg_http1_chunked_decode(&d, "X", 1, &used, &data);
        ok(ret == CG_CHUNKED_DONE && used == 0, "done stays done");
    }

    chunked_bad(S(" 5\r\nhello\r\n0\r\n\r\n"), "chunk size is not hex digits", "leading space");
    chunked_bad(S("+5\r\nhello\r\n0\r\n\r\n"), "chunk size is not hex digits", "sign");
    chunked_bad(S("-5\r\nhello\r\n0\r\n\r\n"), "chunk size is not hex digits", "minus");
    chunked_bad(S("0x5\r\nhello\r\n0\r\n\r\n"), "chunk size is not hex digits", "0x prefix");
    chunked_bad(S("g\r\n"), "chunk size is not hex digits", "not hex");
    chunked_bad(S("\r\n"), "chunk size is not hex digits", "empty size");
    chunked_bad(S(";x\r\n"), "chunk size is not hex digits", "extension without size");
    chunked_bad(S("5\r\nhello\r\n\r\n"), "chunk size is not hex digits", "missing last chunk");
    chunked_bad(S("00000000000000005\r\nhello\r\n"), "chunk size overflows", "17 digits");
    chunked_bad(S("8000000000000000\r\n"), "chunk size overflows", "2^63");
    chunked_bad(S("ffffffffffffffff\r\n"), "chunk size overflows", "2^64-1");
    chunked_bad(S("5 \r\nhello\r\n0\r\n\r\n"), "whitespace after chunk size", "trailing SP");
    chunked_bad(S("5 x\r\n"), "whitespace after chunk size", "SP then junk");
    chunked_bad(S("5\nhello\r\n0\r\n\r\n"), "bare LF", "bare LF after size");
    chunked_bad(S("5;a\nhello\r\n0\r\n\r\n"), "bare LF", "bare LF after extension");
    chunked_bad(S("5\rhello\r\n0\r\n\r\n"), "bare CR", "bare CR after size");
    chunked_bad(S("5\r\nhelloX\r\n0\r\n\r\n"), "chunk data not followed by CRLF", "data too long");
    chunked_bad(S("5\r\nhello\n0\r\n\r\n"), "chunk data not followed by CRLF", "LF after data");
    chunked_bad(S("5\r\nhello\rX0\r\n\r\n"), "chunk data not followed by CRLF", "CR X after data");
    chunked_bad(S("5;a\x01\r\nhello\r\n0\r\n\r\n"), "control character in chunk extension",
                "CTL in extension");
    chunked_bad(S("0\r\n\rX"), "bare CR", "bare CR ending the body");
    chunked_bad(S("0\r\n\n"), "bare LF", "bare LF ending the body");
    {
        /* 4 KiB of extension bytes (from the ';' or BWS to the CR) pass, one more does not. */
        static char ext[10000];
        int m = sprintf(ext, "1;");
        memset(ext + m, 'e', 4095);
        m += 4095;
        m += sprintf(ext + m, "\r\nx\r\n0\r\n\r\n");
        chunked_ok(ext, (size_t)m, "x", -1, "4 KiB of extensions");
        memmove(ext + 3, ext + 2, (size_t)m - 2);
        chunked_bad(ext, (size_t)m + 1, "chunk extensions too long", "extensions over 4 KiB");
        m = sprintf(ext, "1");
        memset(ext + m, ' ', 4097);
        m += 4097;
        m += sprintf(ext + m, ";\r\nx\r\n0\r\n\r\n");
        chunked_bad(ext, (size_t)m, "chunk extensions too long", "BWS over 4 KiB");
    }

    /* trailers */
    chunked_bad(S("0\r\nX: a\r\n b\r\n\r\n"), "obs-fold", "trailer obs-fold");
    chunked_bad(S("0\r\n X: a\r\n\r\n"), "obs-fold", "trailer starting with SP");
    chunked_bad(S("0\r\nX : a\r\n\r\n"), "whitespace between field name and colon",
                "trailer SP before colon");
    chunked_bad(S("0\r\n: a\r\n\r\n"), "empty field name", "trailer empty name");
    chunked_bad(S("0\r\nX(: a\r\n\r\n"), "field name is not a token", "trailer name not token");
    chunked_bad(S("0\r\nX\r\n\r\n"), "field line without colon", "trailer without colon");
    chunked_bad(S("0\r\nX: a\x01\r\n\r\n"), "control character in field value", "trailer CTL");
    chunked_bad(S("0\r\nX: a\0\r\n\r\n"), "control character in field value", "trailer NUL");
    chunked_bad(S("0\r\nX: a\x7f\r\n\r\n"), "control character in field value", "trailer DEL");
    chunked_bad(S("0\r\nX: a\n\r\n"), "bare LF", "trailer bare LF");
    chunked_bad(S("0\r\nX: a\rb\r\n\r\n"), "bare CR", "trailer bare CR");
    chunked_bad(S("0\r\n\x80: a\r\n\r\n"), "field name is not a token", "trailer non-ASCII name");
    chunked_ok(S("0\r\nX: caf\xc3\xa9\t!\r\n\r\n"), "", -1, "trailer obs-text and HTAB");

    cg_http1_limits lim = {8190, 10, 2};
    chunked_ok_lim(S("0\r\nA: 1\r\nB: 2\r\n\r\n"), "", 0, -1, &lim, "trailers at the count limit");
    chunked_bad_lim(S("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), "too many trailer fields", &lim,
                    "too many trailers");
    chunked_ok_lim(S("0\r\nA: 1234567\r\n\r\n"), "", 0, -1, &lim, "trailer at the size limit");
    chunked_bad_lim(S("0\r\nA: 12345678\r\n\r\n"), "trailer field line too long", &lim,
                    "trailer over the size limit");
    chunked_bad_lim(S("0\r\nABCDEFGHIJK: 1\r\n\r\n"), "trailer field line too long", &lim,
                    "trailer name over the size limit");

    /* After an error, the decoder keeps refusing. */
    {
        cg_http1_chunked d;
        cg_http1_chunked_init(&d, &deflim);
        size_t used;
        cg_slice data;
        int r1 = cg_http1_chunked_decode(&d, "x", 1, &used, &data);
        int r2 = cg_http1_chunked_decode(&d, "5\r\n", 3, &used, &data);
        ok(r1 == CG_CHUNKED_ERROR && r2 == CG_CHUNKED_ERROR && used == 0, "errors are sticky");
    }
}

/* ---- response helpers ------------------------------------------------- */

static void test_helpers(void)
{
    ok(strcmp(cg_http1_reason(200), "OK") == 0, "200 OK");
    ok(strcmp(cg_http1_reason(404), "Not Found") == 0, "404");
    ok(strcmp(cg_http1_reason(418), "I'm a Teapot") == 0, "418");
    ok(strcmp(cg_http1_reason(425), "Too Early") == 0, "425");
    ok(strcmp(cg_http1_reason(429), "Too Many Requests") == 0, "429");
    ok(strcmp(cg_http1_reason(431), "Request Header Fields Too Large") == 0, "431");
    ok(strcmp(cg_http1_reason(451), "Unavailable For Legal Reasons") == 0, "451");
    ok(strcmp(cg_http1_reason(511), "Network Authentication Required") == 0, "511");
    ok(strcmp(cg_http1_reason(505), "HTTP Version Not Supported") == 0, "505");
    ok(strcmp(cg_http1_reason(100), "Continue") == 0, "100");
    ok(strcmp(cg_http1_reason(299), "") == 0 && strcmp(cg_http1_reason(-1), "") == 0,
       "unknown status");
    static const int rfc9110[] = {100, 101, 200, 201, 202, 203, 204, 205, 206, 300, 301,
                                  302, 303, 304, 305, 307, 308, 400, 401, 402, 403, 404,
                                  405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
                                  416, 417, 421, 422, 426, 500, 501, 502, 503, 504, 505};
    int all = 1;
    for (size_t i = 0; i < sizeof rfc9110 / sizeof *rfc9110; i++)
        all &= cg_http1_reason(rfc9110[i])[0] != 0;
    ok(all, "every RFC 9110 status has a phrase");

    ok(cg_http1_valid_field(S("content-type"), S("text/plain")), "valid field");
    ok(cg_http1_valid_field(S("x"), S("")), "empty value valid");
    ok(cg_http1_valid_field(S("x"), S("caf\xc3\xa9\t")), "obs-text and HTAB valid");
    ok(!cg_http1_valid_field(S(""), S("a")), "empty name");
    ok(!cg_http1_valid_field(S("a b"), S("a")), "space in name");
    ok(!cg_http1_valid_field(S("a:"), S("a")), "colon in name");
    ok(!cg_http1_valid_field(S("a\r\n"), S("a")), "CRLF in name");
    ok(!cg_http1_valid_field(S("a"), S("a\r\nX: y")), "CRLF in value");
    ok(!cg_http1_valid_field(S("a"), S("a\nb")), "LF in value");
    ok(!cg_http1_valid_field(S("a"), S("a\rb")), "CR in value");
    ok(!cg_http1_valid_field(S("a"), S("a\0b")), "NUL in value");
    {
        int ctl_refused = 1, others_kept = 1;
        for (int b = 0; b < 256; b++) {
            char v[3] = {'a', (char)b, 'z'};
            int valid = cg_http1_valid_field(S("a"), v, 3);
            if ((b < 0x20 && b != '\t') || b == 0x7f)
                ctl_refused &= !valid;
            else
                others_kept &= valid;
        }
        ok(ctl_refused, "every control byte but HTAB, and DEL, refused in a value");
        ok(others_kept, "HTAB, SP, VCHAR and obs-text kept in a value");
        /* The same at every position of a longer value (word-at-a-time scan). */
        char v[40];
        int pos_ok = 1;
        for (size_t at = 0; at < sizeof v; at++)
            for (int b = 0; b < 256; b++) {
                memset(v, b == 'x' ? 'y' : 'x', sizeof v);
                v[at] = (char)b;
                int want = !((b < 0x20 && b != '\t') || b == 0x7f);
                pos_ok &= cg_http1_valid_field(S("a"), v, sizeof v) == want;
                memset(v, 0xe9, sizeof v); /* obs-text around it */
                v[at] = (char)b;
                pos_ok &= cg_http1_valid_field(S("a"), v, sizeof v) == want;
            }
        ok(pos_ok, "every byte judged alike at every position of a 40-byte value");
    }

    ok(cg_http1_has_token(S("close"), "close"), "single token");
    ok(cg_http1_has_token(S("keep-alive, Close"), "close"), "token in list, case");
    ok(cg_http1_has_token(S(" a ,\tUPGRADE\t, b"), "upgrade"), "surrounding whitespace");
    ok(cg_http1_has_token(S("a,,close,"), "close"), "empty elements");
    ok(!cg_http1_has_token(S("closed"), "close"), "longer word");
    ok(!cg_http1_has_token(S("clos"), "close"), "shorter word");
    ok(!cg_http1_has_token(S("keep-alive close"), "close"), "space is not a separator");
    ok(!cg_http1_has_token(S(""), "close"), "empty value");

    char out[64];
    size_t n = cg_http1_percent_decode(S("/a%20b%2Fc%zz%4"), out);
    ok(n == 11 && memcmp(out, "/a b/c%zz%4", 11) == 0, "percent decode (%zu)", n);
    n = cg_http1_percent_decode(S("%e2%82%AC%"), out);
    ok(n == 4 && memcmp(out, "\xe2\x82\xac%", 4) == 0, "percent decode UTF-8, lone '%%'");
    n = cg_http1_percent_decode(S("%00"), out);
    ok(n == 1 && out[0] == 0, "percent decode NUL");
    char inplace[] = "a%41%42c";
    n = cg_http1_percent_decode(inplace, strlen(inplace), inplace);
    ok(n == 4 && memcmp(inplace, "aABc", 4) == 0, "percent decode in place");

    char d[30];
    ok(cg_http1_format_date(784111777, d) == 29 && strcmp(d, "Sun, 06 Nov 1994 08:49:37 GMT") == 0,
       "RFC example date: %s", d);
    cg_http1_format_date(0, d);
    ok(strcmp(d, "Thu, 01 Jan 1970 00:00:00 GMT") == 0, "epoch");
    cg_http1_format_date(951782400, d);
    ok(strcmp(d, "Tue, 29 Feb 2000 00:00:00 GMT") == 0, "leap day 2000: %s", d);
    cg_http1_format_date(253402300799LL, d);
    ok(strcmp(d, "Fri, 31 Dec 9999 23:59:59 GMT") == 0, "last date: %s", d);
    cg_http1_format_date(-5, d);
    ok(strcmp(d, "Thu, 01 Jan 1970 00:00:00 GMT") == 0, "negative clamps");
    cg_http1_format_date(1LL << 62, d);
    ok(strcmp(d, "Fri, 31 Dec 9999 23:59:59 GMT") == 0, "huge clamps");
    /* Against the C library over many dates, including every 4th of a century. */
    int same = 1;
    unsigned long long x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        time_t t = (time_t)(x % 253402300800ull);
        if (i < 4000)
            t = (time_t)i * 86400 * 365 / 4 + i;
        struct tm tm;
        char want[64];
        gmtime_r(&t, &tm);
        strftime(want, sizeof want, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cg_http1_format_date((long long)t, d);
        if (strcmp(d, want) != 0) {
            if (same)
                printf("# %lld: %s != %s\n", (long long)t, d, want);
            same = 0;
        }
    }
    ok(same, "format_date agrees with gmtime_r + strftime");
}

/* ---- response head serializer ---------------------------------------- */

static char zeros[16384];

/* Writes the head into a buffer of exactly cg_http1_head_size(r) bytes that
 * ends at an unwritable page, and compares it with `want`. */
static void head_is(const cg_http1_response *r, const char *want, size_t want_len, const char *name)
{
    size_t size = cg_http1_head_size(r);
    if (!ok(size == want_len, "%s: head size %zu == %zu", name, size, want_len) ||
        size > sizeof zeros)
        return;
    guard g;
    char *out = guard_put(&g, zeros, size);
    size_t n = cg_http1_write_head(out, r);
    ok(n == size && memcmp(out, want, n) == 0, "%s: bytes", name);
    if (n != size || memcmp(out, want, n) != 0)
        printf("# got  %.*s\n# want %.*s\n", (int)n, out, (int)want_len, want);
    guard_free(&g);
}

#define HEAD_IS(r, lit, name) head_is((r), (lit), sizeof(lit) - 1, (name))

static void test_head_exact(void)
{
    cg_fields f;
    cg_fields_init(&f);
    cg_http1_response r = {200, NULL, NULL, 0, CG_FRAME_NONE, 0, CG_CONN_NONE};
    HEAD_IS(&r, "HTTP/1.1 200 OK\r\n\r\n", "bare 200, fields NULL");
    r.fields = &f;
    HEAD_IS(&r, "HTTP/1.1 200 OK\r\n\r\n", "bare 200, zero fields");

    cg_fields_add(&f, S("content-type"), S("text/plain"));
    cg_fields_add(&f, S("X-Custom"), S("a, b"));
    r.defaults = "server: casgi\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    r.defaults_len = strlen(r.defaults);
    r.framing = CG_FRAME_LENGTH;
    r.length = 5;
    HEAD_IS(&r,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-Custom: a, b\r\nserver: casgi\r\n"
            "date: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 5\r\n\r\n",
            "typical 200 with a length");

    r.status = 404;
    r.framing = CG_FRAME_CHUNKED;
    r.connection = CG_CONN_CLOSE;
    HEAD_IS(&r,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nX-Custom: a, b\r\n"
            "server: casgi\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            "transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            "chunked 404, closing");

    r.status = 500;
    r.framing = CG_FRAME_CLOSE;
    r.connection = CG_CONN_CLOSE;
    r.defaults = NULL;
    r.defaults_len = 0;
    HEAD_IS(&r,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
            "X-Custom: a, b\r\nconnection: close\r\n\r\n",
            "HTTP/1.0 body until close");

    cg_fields_reset(&f);
    cg_fields_add(&f, S("content-length"), S("12"));
    r.status = 200;
    r.framing = CG_FRAME_NONE;
    r.connection = CG_CONN_KEEP_ALIVE;
    HEAD_IS(&r, "HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: keep-alive\r\n\r\n",
            "app's content-length, HTTP/1.0 keep-alive");

    cg_fields_reset(&f);
    r.status = 204;
    r.connection = CG_CONN_NONE;
    HEAD_IS(&r, "HTTP/1.1 204 No Content\r\n\r\n", "204");
    r.status = 304;
    HEAD_IS(&r, "HTTP/1.1 304 Not Modified\r\n\r\n", "304");
    r.status = 100;
    HEAD_IS(&r, "HTTP/1.1 100 Continue\r\n\r\n", "100");
    r.status = 418;
    HEAD_IS(&r, "HTTP/1.1 418 I'm a Teapot\r\n\r\n", "418");
    r.status = 599;
    HEAD_IS(&r, "HTTP/1.1 599 \r\n\r\n", "unknown status: empty reason");
    r.status = 299;
    r.framing = CG_FRAME_LENGTH;
    r.length = 0;
    HEAD_IS(&r, "HTTP/1.1 299 \r\ncontent-length: 0\r\n\r\n", "unknown 2xx, length 0");
    r.status = 200;
    r.length = ULLONG_MAX;
    HEAD_IS(&r, "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n",
            "largest length");
    r.length = 1000000;
    HEAD_IS(&r, "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n", "length 1000000");

    /* Written as given: empty names and values, obs-text, a defaults block
     * without lines of its own shape. */
    cg_fields_add(&f, S("x-bin"), S("\x80\xff\xc3\xa9"));
    cg_fields_add(&f, "", 0, "", 0);
    cg_fields_add(&f, S("x-empty"), "", 0);
    r.defaults = "x-extra: 1\r\n";
    r.defaults_len = 12;
    r.length = 9;
    HEAD_IS(&r,
            "HTTP/1.1 200 OK\r\nx-bin: \x80\xff\xc3\xa9\r\n: \r\nx-empty: \r\nx-extra: "
            "1\r\ncontent-length: 9\r\n\r\n",
            "binary value, empty name and value");
    cg_fields_free(&f);
}

/* Every framing x connection x defaults x fields combination against a head
 * assembled here from its parts. */
static void test_head_combinations(void)
{
    static const char *const framing_line[] = {"", "content-length: 42\r\n",
                                               "transfer-encoding: chunked\r\n", ""};
    static const char *const conn_line[] = {"", "connection: close\r\n",
                                            "connection: keep-alive\r\n"};
    static const char defaults[] = "server: casgi\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    static const int statuses[] = {200, 201, 301, 404, 503, 599};
    static const char *const names[] = {"a", "Bb", "x-c"}, *const values[] = {"val", "val", ""};
    cg_fields f;
    cg_fields_init(&f);
    int all = 1, count = 0;
    for (int nf = 0; nf <= 3; nf++) {
        if (nf > 0)
            cg_fields_add(&f, names[nf - 1], strlen(names[nf - 1]), values[nf - 1],
                          strlen(values[nf - 1]));
        for (int fr = CG_FRAME_NONE; fr <= CG_FRAME_CLOSE; fr++)
            for (int cn = CG_CONN_NONE; cn <= CG_CONN_KEEP_ALIVE; cn++)
                for (int d = 0; d < 2; d++)
                    for (size_t si = 0; si < sizeof statuses / sizeof *statuses; si++) {
                        char want[1024], name[128];
                        int status = statuses[si];
                        const char *reason = status == 200   ? "OK"
                                             : status == 201 ? "Created"
                                             : status == 301 ? "Moved Permanently"
                                             : status == 404 ? "Not Found"
                                             : status == 503 ? "Service Unavailable"
                                                             : "";
                        int n = snprintf(want, sizeof want, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s\r\n",
                                         status, reason, nf >= 1 ? "a: val\r\n" : "",
                                         nf >= 2 ? "Bb: val\r\n" : "", nf >= 3 ? "x-c: \r\n" : "",
                                         d ? defaults : "", framing_line[fr], conn_line[cn]);
                        cg_http1_response r = {
                            status, &f, d ? defaults : NULL, d ? sizeof defaults - 1 : 0, fr,
                            42,     cn};
                        snprintf(name, sizeof name,
                                 "status %d fields %d framing %d conn %d defaults %d", status, nf,
                                 fr, cn, d);
                        size_t size = cg_http1_head_size(&r);
                        guard g;
                        char *out = guard_put(&g, zeros, size);
                        size_t w = cg_http1_write_head(out, &r);
                        if (size != (size_t)n || w != size || memcmp(out, want, w) != 0) {
                            if (all)
                                printf("# %s: got %.*s\n# want %s\n", name, (int)w, out, want);
                            all = 0;
                        }
                        guard_free(&g);
                        count++;
                    }
    }
    ok(all && count == 4 * 4 * 3 * 2 * 6, "%d combinations: size == bytes written == expected",
       count);
    cg_fields_free(&f);
}

/* A head with many fields and large values: the size stays exact. */
static void test_head_large(void)
{
    cg_fields f;
    char value[3000];
    cg_fields_init(&f);
    memset(value, 'v', sizeof value);
    size_t expect = 17 + 2; /* "HTTP/1.1 200 OK\r\n" and the final CRLF */
    for (int i = 0; i < 200; i++) {
        char name[32];
        size_t nl = (size_t)snprintf(name, sizeof name, "x-h%d", i);
        size_t vl = (size_t)(i * 37 % 3000);
        cg_fields_add(&f, name, nl, value, vl);
        expect += nl + 2 + vl + 2;
    }
    cg_http1_response r = {200, &f, NULL, 0, CG_FRAME_NONE, 0, CG_CONN_NONE};
    size_t size = cg_http1_head_size(&r);
    ok(size == expect, "200 fields: size %zu == %zu", size, expect);
    char *blank = calloc(1, size);
    guard g;
    char *out = guard_put(&g, blank, size);
    free(blank);
    size_t w = cg_http1_write_head(out, &r);
    int good = w == size && memcmp(out, "HTTP/1.1 200 OK\r\nx-h0: \r\nx-h1: ", 31) == 0 &&
               memcmp(out + w - 4, "\r\n\r\n", 4) == 0;
    /* Walk the written lines back against the list. */
    const char *p = out + 17;
    size_t pos = 0;
    cg_field fl;
    while (good && cg_fields_next(&f, &pos, &fl)) {
        good = memcmp(p, fl.name, fl.name_len) == 0 && memcmp(p + fl.name_len, ": ", 2) == 0 &&
               memcmp(p + fl.name_len + 2, fl.value, fl.value_len) == 0 &&
               memcmp(p + fl.name_len + 2 + fl.value_len, "\r\n", 2) == 0;
        p += fl.name_len + 2 + fl.value_len + 2;
    }
    ok(good && p == out + w - 2, "200 fields written in order");
    guard_free(&g);
    cg_fields_free(&f);
}

static void test_chunk_prefix(void)
{
    static const struct {
        unsigned long long n;
        const char *want;
    } cases[] = {
        {1, "1\r\n"},
        {9, "9\r\n"},
        {10, "a\r\n"},
        {15, "f\r\n"},
        {16, "10\r\n"},
        {255, "ff\r\n"},
        {256, "100\r\n"},
        {4096, "1000\r\n"},
        {65535, "ffff\r\n"},
        {65536, "10000\r\n"},
        {0xdeadbeef, "deadbeef\r\n"},
        {ULLONG_MAX, "ffffffffffffffff\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        guard g;
        size_t wl = strlen(cases[i].want);
        /* The last byte written is the last writable one. */
        char *out = guard_put(&g, zeros, wl);
        size_t n = cg_http1_chunk_prefix(out, cases[i].n);
        ok(n == wl && memcmp(out, cases[i].want, n) == 0, "chunk prefix %llu: %.*s", cases[i].n,
           (int)(n > 2 ? n - 2 : 0), out);
        guard_free(&g);
    }
    ok(strlen("ffffffffffffffff\r\n") == CG_HTTP1_CHUNK_PREFIX_MAX, "prefix max is the longest");
}

static void test_format_uint(void)
{
    static const struct {
        unsigned long long v;
        unsigned base;
        const char *want;
    } cases[] = {
        {0, 10, "0"},
        {9, 10, "9"},
        {10, 10, "10"},
        {99, 10, "99"},
        {100, 10, "100"},
        {101, 10, "101"},
        {9999, 10, "9999"},
        {10000, 10, "10000"},
        {4294967295ull, 10, "4294967295"},
        {9999999999999999999ull, 10, "9999999999999999999"},
        {10000000000000000000ull, 10, "10000000000000000000"},
        {ULLONG_MAX, 10, "18446744073709551615"},
        {0, 16, "0"},
        {9, 16, "9"},
        {10, 16, "a"},
        {15, 16, "f"},
        {16, 16, "10"},
        {0xabcdef, 16, "abcdef"},
        {0x8000000000000000ull, 16, "8000000000000000"},
        {ULLONG_MAX, 16, "ffffffffffffffff"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        guard g;
        size_t wl = strlen(cases[i].want);
        char *out = guard_put(&g, zeros, wl);
        size_t n = cg_format_uint(out, cases[i].v, cases[i].base);
        ok(n == wl && memcmp(out, cases[i].want, n) == 0, "format %llu base %u: %.*s", cases[i].v,
           cases[i].base, (int)n, out);
        guard_free(&g);
    }
    /* Against snprintf: every power of ten and of two, one either side, and
     * pseudo-random values of every magnitude. */
    int same = 1;
    unsigned long long x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 100000 && same; i++) {
        unsigned long long v;
        if (i < 64 * 3) {
            v = (1ull << (i / 3)) + (unsigned long long)(i % 3) - 1;
        } else if (i < 64 * 3 + 20 * 3) {
            unsigned long long p = 1;
            for (int k = 0; k < (i - 64 * 3) / 3; k++)
                p *= 10;
            v = p + (unsigned long long)((i - 64 * 3) % 3) - 1;
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v = x >> (x % 64);
        }
        char got[24], want[24];
        size_t n = cg_format_uint(got, v, 10);
        int wn = snprintf(want, sizeof want, "%llu", v);
        if (n != (size_t)wn || memcmp(got, want, n) != 0) {
            printf("# %s != %.*s\n", want, (int)n, got);
            same = 0;
        }
        n = cg_format_uint(got, v, 16);
        wn = snprintf(want, sizeof want, "%llx", v);
        if (n != (size_t)wn || memcmp(got, want, n) != 0) {
            printf("# %s != %.*s (hex)\n", want, (int)n, got);
            same = 0;
        }
    }
    ok(same, "format_uint agrees with snprintf in both bases");
}

int main(void)
{
    test_basic();
    test_empty_lines();
    test_pipelined();
    test_trailing_bytes();
    test_connection_flags();
    test_content_length();
    test_transfer_encoding();
    test_fields();
    test_line_ends();
    test_request_line();
    test_targets();
    test_limits();
    test_restart();
    test_hdrtab();
    test_chunked();
    test_helpers();
    test_head_exact();
    test_head_combinations();
    test_head_large();
    test_chunk_prefix();
    test_format_uint();
    guard_free(&whole_guard);
    return tap_done();
}
