/* Unit tests for trusted proxies: address and --forwarded-allow-ips parsing,
 * CIDR matching (IPv4, IPv6, IPv4-mapped), and the client and scheme read
 * from X-Forwarded-For / X-Forwarded-Proto of real parsed request heads. */
#include "proxy.h"
#include "options.h"
#include "guard.h"
#include "tap.h"

#include <string.h>

static char err[256];
static cg_slice bad; /* the entry a list was refused for */

static int addr_ok(const char *text, int family)
{
    cg_proxy_addr a;
    return cg_proxy_parse_addr(text, strlen(text), &a) == 0 && a.family == family;
}

static void test_addresses(void)
{
    ok(addr_ok("127.0.0.1", 4), "IPv4");
    ok(addr_ok("::1", 6), "IPv6");
    ok(addr_ok("2001:db8::a:b", 6), "IPv6 with groups");
    ok(addr_ok("::ffff:10.1.2.3", 4), "IPv4-mapped IPv6 is IPv4");
    ok(addr_ok("fe80::1%eth0", 6), "IPv6 zone ignored");
    const char *bad[] = {"",      "1.2.3",    "1.2.3.4.5", "01.2.3.4",  "256.0.0.1",
                         "::g",   "1::2::3",  "localhost", "1.2.3.4%x", "fe80::1%",
                         "[::1]", " 1.2.3.4", "1.2.3.4:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cg_proxy_addr a;
        ok(cg_proxy_parse_addr(bad[i], strlen(bad[i]), &a) < 0, "'%s' is not an address", bad[i]);
    }
    cg_proxy_addr a;
    ok(cg_proxy_parse_addr("1.2.3.4xyz", 7, &a) == 0 && a.family == 4 && a.bytes[3] == 4,
       "only len bytes are read");
}

/* The list is refused with `code`, naming `entry`. */
static void expect_list_error(const char *list, const char *entry, int code)
{
    cg_proxy_trust t;
    bad = (cg_slice){NULL, 0};
    int rc = cg_proxy_trust_parse(&t, list, &bad);
    ok(rc == code && bad.len == strlen(entry) && memcmp(bad.base, entry, bad.len) == 0 &&
           t.n == 0 && !t.nets && !t.all,
       "'%s' -> %d '%s' (got %d '%.*s')", list, code, entry, rc, (int)bad.len,
       bad.base ? bad.base : "");
}

static void test_lists(void)
{
    cg_proxy_trust t;
    ok(cg_proxy_trust_parse(&t, "127.0.0.1,::1", &bad) == 0 && t.n == 2 && !t.all &&
           !t.unix_peers && t.nets[0].prefix == 32 && t.nets[1].prefix == 128,
       "the default list: two single addresses");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, " * ", &bad) == 0 && t.all && t.n == 0, "'*'");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, "unix:, 10.0.0.0/8", &bad) == 0 && t.unix_peers && !t.all &&
           t.n == 1 && t.nets[0].prefix == 8,
       "'unix:' and a network");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, "", &bad) == 0 && t.n == 0 && !t.all, "empty list");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, " , ,\t", &bad) == 0 && t.n == 0, "empty entries");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, NULL, &bad) == 0 && t.n == 0, "NULL list");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, "10.0.0.0/255.0.0.0, 192.168.0.0/255.255.240.0", &bad) == 0 &&
           t.n == 2 && t.nets[0].prefix == 8 && t.nets[1].prefix == 20,
       "IPv4 netmasks");
    cg_proxy_trust_free(&t);
    ok(cg_proxy_trust_parse(&t, "::ffff:10.0.0.0/104", &bad) == 0 && t.n == 1 &&
           t.nets[0].addr.family == 4 && t.nets[0].prefix == 8,
       "an IPv4-mapped network is the IPv4 network");
    cg_proxy_trust_free(&t);

    expect_list_error("localhost", "localhost", CG_PROXY_BAD_ENTRY);
    expect_list_error("127.0.0.1, 10.0.0.300", "10.0.0.300", CG_PROXY_BAD_ENTRY);
    expect_list_error("10.0.0.1/8", "10.0.0.1/8", CG_PROXY_HOST_BITS);
    expect_list_error("2001:db8::1/32", "2001:db8::1/32", CG_PROXY_HOST_BITS);
    expect_list_error("10.0.0.0/33", "10.0.0.0/33", CG_PROXY_BAD_ENTRY);
    expect_list_error("::/129", "::/129", CG_PROXY_BAD_ENTRY);
    expect_list_error("10.0.0.0/", "10.0.0.0/", CG_PROXY_BAD_ENTRY);
    expect_list_error("10.0.0.0/8x", "10.0.0.0/8x", CG_PROXY_BAD_ENTRY);
    expect_list_error("10.0.0.0/-8", "10.0.0.0/-8", CG_PROXY_BAD_ENTRY);
    expect_list_error("10.0.0.0/0008", "10.0.0.0/0008", CG_PROXY_BAD_ENTRY);
    expect_list_error("10.0.0.0/255.0.255.0", "10.0.0.0/255.0.255.0", CG_PROXY_BAD_ENTRY);
    expect_list_error("::/ffff::", "::/ffff::", CG_PROXY_BAD_ENTRY);
    expect_list_error("unix:/run/app.sock", "unix:/run/app.sock", CG_PROXY_BAD_ENTRY);
    expect_list_error("**", "**", CG_PROXY_BAD_ENTRY);
    expect_list_error("[::1]", "[::1]", CG_PROXY_BAD_ENTRY);
    ok(strcmp(cg_proxy_strerror(CG_PROXY_BAD_ENTRY), "is not an IP address or network") == 0 &&
           strcmp(cg_proxy_strerror(CG_PROXY_HOST_BITS), "has host bits set") == 0,
       "reasons");
}

static int trusts(const char *list, const char *host)
{
    cg_proxy_trust t;
    if (cg_proxy_trust_parse(&t, list, &bad) < 0)
        return -1;
    int r = cg_proxy_trusts_host(&t, host, strlen(host));
    cg_proxy_trust_free(&t);
    return r;
}

static void test_matching(void)
{
    static const struct {
        const char *list, *host;
        int want;
    } cases[] = {
        {"127.0.0.1,::1", "127.0.0.1", 1},
        {"127.0.0.1,::1", "::1", 1},
        {"127.0.0.1,::1", "127.0.0.2", 0},
        {"127.0.0.1,::1", "::ffff:127.0.0.1", 1}, /* a dual-stack socket's IPv4 peer */
        {"127.0.0.1,::1", "0:0:0:0:0:0:0:1", 1},  /* compared as addresses, not text */
        {"127.0.0.1,::1", "localhost", 0},
        {"10.0.0.0/8", "10.0.0.0", 1},
        {"10.0.0.0/8", "10.255.255.255", 1},
        {"10.0.0.0/8", "11.0.0.0", 0},
        {"10.0.0.0/8", "9.255.255.255", 0},
        {"192.168.16.0/20", "192.168.31.200", 1},
        {"192.168.16.0/20", "192.168.32.0", 0},
        {"192.168.16.0/20", "192.168.15.255", 0},
        {"0.0.0.0/0", "203.0.113.9", 1},
        {"0.0.0.0/0", "2001:db8::1", 0},
        {"::/0", "2001:db8::1", 1},
        {"::/0", "203.0.113.9", 0}, /* an IPv6 network does not cover IPv4 */
        {"::/0", "::ffff:203.0.113.9", 0},
        {"2001:db8::/32", "2001:db8:ffff::1", 1},
        {"2001:db8::/32", "2001:db9::", 0},
        {"2001:db8::/127", "2001:db8::1", 1},
        {"2001:db8::/127", "2001:db8::2", 0},
        {"fe80::/10", "fe80::1%eth0", 1},
        {"fe80::/10", "febf::1", 1},
        {"fe80::/10", "fec0::1", 0},
        {"10.0.0.0/8", "::ffff:10.1.2.3", 1},
        {"::ffff:10.0.0.0/104", "10.9.9.9", 1},
        {"10.1.2.3", "10.1.2.3", 1},
        {"10.1.2.3", "10.1.2.4", 0},
        {"*", "anything at all", 1},
        {"unix:", "127.0.0.1", 0},
        {"", "127.0.0.1", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ok(trusts(cases[i].list, cases[i].host) == cases[i].want, "'%s' %s '%s'", cases[i].list,
           cases[i].want ? "trusts" : "does not trust", cases[i].host);
}

/* `fields` on one line for a test description: CRLF written as "\\r\\n". */
static const char *oneline(const char *fields)
{
    static char out[1024];
    size_t o = 0;
    for (const char *p = fields; *p && o + 3 < sizeof(out); p++) {
        if (*p == '\r' || *p == '\n') {
            out[o++] = '\\';
            out[o++] = *p == '\r' ? 'r' : 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

typedef struct fwd {
    int ret;
    char host[128]; /* "" when no client */
    unsigned port;
    int scheme;
} fwd;

/* Parses a request whose header lines are `fields` (each ending in CRLF),
 * placed against a guard page, and reads its forwarding headers. */
static fwd forwarded(const char *list, const char *fields)
{
    char text[2048];
    fwd r = {0};
    cg_proxy_trust t;
    cg_http1_parser p;
    cg_http1_header hdrs[32];
    cg_http1_request req = {0};
    cg_http1_limits lim = {8190, 8190, 32};
    guard g;
    int n = snprintf(text, sizeof(text), "GET / HTTP/1.1\r\nHost: x\r\n%s\r\n", fields);
    char *buf = guard_put(&g, text, (size_t)n);
    cg_http1_parser_init(&p);
    req.headers = hdrs;
    if (cg_proxy_trust_parse(&t, list, &bad) < 0 ||
        cg_http1_parse_head(&p, buf, (size_t)n, &lim, &req) != n) {
        r.ret = -1;
    } else {
        cg_proxy_forwarded out;
        r.ret = cg_proxy_read_headers(&t, req.headers, req.num_headers, &out);
        if (out.has_client)
            snprintf(r.host, sizeof(r.host), "%.*s", (int)out.host.len, out.host.base);
        r.port = out.port;
        r.scheme = out.scheme;
    }
    cg_proxy_trust_free(&t);
    guard_free(&g);
    return r;
}

static void expect_client(const char *list, const char *fields, const char *host, unsigned port)
{
    fwd r = forwarded(list, fields);
    ok(r.ret >= 0 && strcmp(r.host, host) == 0 && r.port == port,
       "[%s] %s -> client '%s' port %u (got %d '%s' %u)", list, oneline(fields), host, port, r.ret,
       r.host, r.port);
}

static void test_forwarded_for(void)
{
    const char *dflt = "127.0.0.1,::1";
    expect_client(dflt, "X-Forwarded-For: 203.0.113.7\r\n", "203.0.113.7", 0);
    expect_client("127.0.0.1, 10.0.0.2", "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.0.0.2\r\n",
                  "203.0.113.9", 0);
    expect_client("10.0.0.0/8", "X-Forwarded-For: 198.51.100.1,10.1.1.1,\t10.2.2.2\r\n",
                  "198.51.100.1", 0);
    /* Several lines are one list: the spoofed left part stays untrusted, the
     * address the trusted proxy appended (its own line, as HAProxy writes it)
     * is the client. */
    expect_client(dflt, "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.5\r\n",
                  "203.0.113.5", 0);
    expect_client("10.0.0.0/8",
                  "X-Forwarded-For: 198.51.100.1, 10.0.0.3\r\nAccept: */*\r\n"
                  "x-forwarded-for: 10.0.0.4\r\n",
                  "198.51.100.1", 0);
    expect_client("10.0.0.0/8", "X-Forwarded-For: 10.0.0.3\r\nX-Forwarded-For: 203.0.113.1\r\n",
                  "203.0.113.1", 0);
    /* Every hop trusted: the left-most is the client (uvicorn's rule). */
    expect_client("10.0.0.0/8", "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n", "10.0.0.1", 0);
    expect_client("10.0.0.0/8", "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n",
                  "10.0.0.1", 0);
    expect_client("*", "X-Forwarded-For: 192.0.2.5, 198.51.100.7\r\n", "192.0.2.5", 0);
    expect_client("*", "X-Forwarded-For: 192.0.2.5\r\nX-Forwarded-For: 198.51.100.7\r\n",
                  "192.0.2.5", 0);
    /* Ports, as uvicorn splits them. */
    expect_client(dflt, "X-Forwarded-For: 203.0.113.7:5678\r\n", "203.0.113.7", 5678);
    expect_client(dflt, "X-Forwarded-For: [2001:db8::1]:443\r\n", "2001:db8::1", 443);
    expect_client(dflt, "X-Forwarded-For: [2001:db8::1]\r\n", "2001:db8::1", 0);
    expect_client(dflt, "X-Forwarded-For: 2001:db8::1\r\n", "2001:db8::1", 0);
    expect_client(dflt, "X-Forwarded-For: [2001:db8::1]:x\r\n", "2001:db8::1", 0);
    expect_client(dflt, "X-Forwarded-For: [2001:db8::1]x\r\n", "[2001:db8::1]x", 0);
    expect_client(dflt, "X-Forwarded-For: [2001:db8::1\r\n", "[2001:db8::1", 0);
    expect_client(dflt, "X-Forwarded-For: 1.2.3.4:abc\r\n", "1.2.3.4:abc", 0);
    expect_client(dflt, "X-Forwarded-For: 1.2.3.4:65536\r\n", "1.2.3.4:65536", 0);
    expect_client(dflt, "X-Forwarded-For: unknown\r\n", "unknown", 0);
    /* A trusted hop written with a port is still that trusted address. */
    expect_client(dflt, "X-Forwarded-For: 203.0.113.7, 127.0.0.1:8080\r\n", "203.0.113.7", 0);
    expect_client(dflt, "X-Forwarded-For: 203.0.113.7, [::1]:8080\r\n", "203.0.113.7", 0);
    /* Empty elements are skipped; nothing usable keeps the peer. */
    expect_client(dflt, "X-Forwarded-For: 203.0.113.7, ,\r\n", "203.0.113.7", 0);
    expect_client(dflt, "X-Forwarded-For: \r\n", "", 0);
    expect_client(dflt, "X-Forwarded-For: ,,\r\n", "", 0);
    expect_client(dflt, "X-Forwarded-For: :80\r\n", "", 0);
    expect_client(dflt, "X-Forwarded-For: []:80\r\n", "", 0);
    expect_client(dflt, "X-Forwarded-Host: 203.0.113.7\r\n", "", 0);
    fwd r = forwarded(dflt, "Accept: */*\r\n");
    ok(r.ret == 0 && r.host[0] == '\0' && r.scheme == CG_PROXY_SCHEME_NONE,
       "no forwarding headers: 0, nothing set");
}

static void expect_scheme(const char *fields, int scheme)
{
    fwd r = forwarded("127.0.0.1", fields);
    ok(r.scheme == scheme && r.ret == (scheme != CG_PROXY_SCHEME_NONE), "%s -> scheme %d (got %d)",
       oneline(fields), scheme, r.scheme);
}

static void test_forwarded_proto(void)
{
    expect_scheme("X-Forwarded-Proto: https\r\n", CG_PROXY_SCHEME_HTTPS);
    expect_scheme("X-Forwarded-Proto: HTTPS\r\n", CG_PROXY_SCHEME_HTTPS);
    expect_scheme("X-Forwarded-Proto: wss\r\n", CG_PROXY_SCHEME_HTTPS);
    expect_scheme("X-Forwarded-Proto: http\r\n", CG_PROXY_SCHEME_HTTP);
    expect_scheme("X-Forwarded-Proto: ws\r\n", CG_PROXY_SCHEME_HTTP);
    expect_scheme("X-Forwarded-Proto: gopher\r\n", CG_PROXY_SCHEME_NONE);
    expect_scheme("X-Forwarded-Proto: https, http\r\n", CG_PROXY_SCHEME_NONE);
    /* The last line decides, as in uvicorn. */
    expect_scheme("X-Forwarded-Proto: http\r\nX-Forwarded-Proto: https\r\n", CG_PROXY_SCHEME_HTTPS);
    expect_scheme("X-Forwarded-Proto: https\r\nX-Forwarded-Proto: gopher\r\n",
                  CG_PROXY_SCHEME_NONE);
    fwd r = forwarded("127.0.0.1", "X-Forwarded-Proto: https\r\nX-Forwarded-For: 192.0.2.1:9\r\n");
    ok(r.ret == 1 && r.scheme == CG_PROXY_SCHEME_HTTPS && strcmp(r.host, "192.0.2.1") == 0 &&
           r.port == 9,
       "both headers");
}

/* The option: its default, and a bad entry as a usage error from the command
 * line and from the environment. */
static void test_option(void)
{
    cg_config c;
    char *argv[] = {"--forwarded-allow-ips", "10.0.0.0/8, 10.0.0.1/8", "a:b"};
    char *ok_argv[] = {"--forwarded-allow-ips", "10.0.0.0/8,::/0,unix:", "a:b"};
    char *env[] = {"FORWARDED_ALLOW_IPS=localhost", NULL};

    cg_config_init(&c, NULL);
    ok(c.forwarded_allow_ips && strcmp(c.forwarded_allow_ips, "127.0.0.1,::1") == 0,
       "default 127.0.0.1,::1");
    ok(cg_config_parse(&c, 3, ok_argv, NULL, err, sizeof(err)) == CG_PARSE_OK,
       "networks and unix: accepted");
    cg_config_free(&c);

    cg_config_init(&c, NULL);
    ok(cg_config_parse(&c, 3, argv, NULL, err, sizeof(err)) == CG_PARSE_ERROR &&
           strcmp(err, "invalid value for '--forwarded-allow-ips': '10.0.0.1/8' has host bits "
                       "set") == 0,
       "bad entry on the command line (got \"%s\")", err);
    cg_config_free(&c);

    cg_config_init(&c, env);
    ok(cg_config_parse(&c, 1, argv + 2, env, err, sizeof(err)) == CG_PARSE_ERROR &&
           strstr(err, "FORWARDED_ALLOW_IPS") &&
           strstr(err, "'localhost' is not an IP address or network"),
       "bad entry in the environment (got \"%s\")", err);
    cg_config_free(&c);
}

int main(void)
{
    test_addresses();
    test_lists();
    test_matching();
    test_forwarded_for();
    test_forwarded_proto();
    test_option();
    return tap_done();
}
