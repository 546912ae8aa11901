/* Unit tests for the PROXY protocol header parser: every valid form of
 * versions 1 and 2, every malformed one, the versions a caller accepts, and
 * for each input every prefix (which is what a connection has after any split
 * of the input into reads), each placed against a guard page: a prefix gives
 * CG_PP_INCOMPLETE or the whole input's own result. */
#include "proxyproto.h"
#include "guard.h"
#include "tap.h"

#include <string.h>

/* What an input must give. */
typedef struct want {
    int rc; /* header length, CG_PP_INCOMPLETE or CG_PP_INVALID */
    int version, command, family;
    const char *src, *dst; /* as text; NULL when no address */
    unsigned sport, dport;
    const char *error; /* CG_PP_INVALID's reason */
} want;

static int parse_guarded(const void *in, size_t len, unsigned accept, cg_pp_result *r)
{
    guard g;
    const char *p = guard_put(&g, in, len);
    int rc = cg_pp_parse(p, len, accept, r);
    guard_free(&g);
    return rc;
}

static int same_addr(const cg_proxy_addr *a, const char *text)
{
    char buf[CG_PROXY_ADDR_TEXT];
    if (!text)
        return a->family == 0;
    cg_proxy_addr_format(a, buf, sizeof(buf));
    return strcmp(buf, text) == 0;
}

static int same_result(const cg_pp_result *a, const cg_pp_result *b)
{
    return a->version == b->version && a->command == b->command && a->family == b->family &&
           memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
           memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0 && a->src_port == b->src_port &&
           a->dst_port == b->dst_port && a->error == b->error;
}

/* `name` printable on one TAP line: control and non-ASCII bytes as \xNN. */
static const char *printable(const char *name)
{
    static char out[512];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < sizeof(out); p++) {
        if (*p >= 0x20 && *p < 0x7f)
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", *p);
    }
    out[o] = '\0';
    return out;
}

static void expect(const char *raw_name, const void *in, size_t len, unsigned accept, want w)
{
    const char *name = printable(raw_name);
    cg_pp_result r;
    int rc = parse_guarded(in, len, accept, &r);
    int good = rc == w.rc;
    if (good && rc > 0)
        good = r.version == w.version && r.command == w.command && r.family == w.family &&
               same_addr(&r.src, w.src) && same_addr(&r.dst, w.dst) && r.src_port == w.sport &&
               r.dst_port == w.dport && r.error == NULL;
    else if (good && rc == CG_PP_INVALID)
        good = r.error && w.error && strcmp(r.error, w.error) == 0;
    ok(good, "%s: %d %s (want %d %s)", name, rc, r.error ? r.error : "", w.rc,
       w.error ? w.error : "");

    size_t first_wrong = 0;
    int splits = 1;
    for (size_t k = 0; k < len && splits; k++) {
        cg_pp_result rk;
        int n = parse_guarded(in, k, accept, &rk);
        int same = n == rc && same_result(&rk, &r);
        if (rc > 0 ? (k < (size_t)rc ? n != CG_PP_INCOMPLETE : !same)
                   : (n != CG_PP_INCOMPLETE && !same)) {
            splits = 0;
            first_wrong = k;
        }
    }
    ok(splits, "%s: every prefix incomplete or the same result (first wrong: %zu bytes)", name,
       first_wrong);
}

static void v1(const char *name, const char *line, want w)
{
    expect(name, line, strlen(line), CG_PP_ANY, w);
}

static want tcp(int version, int family, const char *src, unsigned sport, const char *dst,
                unsigned dport, int rc)
{
    return (want){rc, version, CG_PP_PROXY, family, src, dst, sport, dport, NULL};
}

static want bad(const char *why)
{
    return (want){CG_PP_INVALID, 0, 0, 0, NULL, NULL, 0, 0, why};
}

static const want incomplete = {CG_PP_INCOMPLETE, 0, 0, 0, NULL, NULL, 0, 0, NULL};

static void test_v1_valid(void)
{
    const char *l = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    v1("TCP4", l, tcp(1, CG_PP_TCP4, "192.168.0.1", 56324, "192.168.0.11", 443, (int)strlen(l)));
    l = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    v1("TCP4 longest", l,
       tcp(1, CG_PP_TCP4, "255.255.255.255", 65535, "255.255.255.255", 65535, 56));
    l = "PROXY TCP4 0.0.0.0 10.0.0.10 0 0\r\n";
    v1("TCP4 zeros", l, tcp(1, CG_PP_TCP4, "0.0.0.0", 0, "10.0.0.10", 0, (int)strlen(l)));
    l = "PROXY TCP6 2001:db8::1 2001:DB8::2 1 65535\r\n";
    v1("TCP6", l, tcp(1, CG_PP_TCP6, "2001:db8::1", 1, "2001:db8::2", 65535, (int)strlen(l)));
    l = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "65535 65535\r\n";
    v1("TCP6 longest", l,
       tcp(1, CG_PP_TCP6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 104));
    l = "PROXY TCP6 2001:0db8:0000:0000:0000:0000:0000:0001 ::1 80 81\r\n";
    v1("TCP6 four-digit groups", l,
       tcp(1, CG_PP_TCP6, "2001:db8::1", 80, "::1", 81, (int)strlen(l)));
    l = "PROXY TCP6 ::ffff:10.0.0.1 ::ffff:10.0.0.2 5000 80\r\n";
    v1("TCP6 IPv4-mapped is the IPv4 address", l,
       tcp(1, CG_PP_TCP6, "10.0.0.1", 5000, "10.0.0.2", 80, (int)strlen(l)));
    l = "PROXY UNKNOWN\r\n";
    v1("UNKNOWN", l, tcp(1, CG_PP_UNKNOWN, NULL, 0, NULL, 0, 15));
    l = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    v1("UNKNOWN longest (107 bytes)", l, tcp(1, CG_PP_UNKNOWN, NULL, 0, NULL, 0, 107));
    l = "PROXY UNKNOWN whatever \x01\x7f\xff  \r\n";
    v1("UNKNOWN ignores the rest of its line", l,
       tcp(1, CG_PP_UNKNOWN, NULL, 0, NULL, 0, (int)strlen(l)));
    l = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    v1("followed by a request: only the line is consumed", l,
       tcp(1, CG_PP_TCP4, "1.2.3.4", 1, "5.6.7.8", 2, 32));
    l = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n\x16\x03\x01\x02\x00\x01";
    v1("followed by a ClientHello", l, tcp(1, CG_PP_TCP4, "1.2.3.4", 1, "5.6.7.8", 2, 32));
}

static void test_v1_invalid(void)
{
    static const struct {
        const char *line, *why;
    } cases[] = {
        {"GET / HTTP/1.1\r\n", "no PROXY protocol header"},
        {"POST / HTTP/1.1\r\n", "no PROXY protocol header"},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "no PROXY protocol header"},
        {"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"},
        {"PROXY\r\n", "no PROXY protocol header"},
        {"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR in v1 line"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR without LF in v1 line"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "CR without LF in v1 line"},
        {"PROXY UNKNOWN\n", "LF without CR in v1 line"},
        {"PROXY UNKNOWN junk\nmore\r\n", "LF without CR in v1 line"},
        {"PROXY \r\n", "malformed v1 line"},
        {"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed v1 line"},
        {"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed v1 line"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "malformed v1 line"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed v1 line"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed v1 line"},
        {"PROXY TCP4\r\n", "malformed v1 line"},
        {"PROXY UNKNOWNX\r\n", "malformed v1 line"},
        {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown v1 protocol"},
        {"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown v1 protocol"},
        {"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown v1 protocol"},
        {"PROXY unknown\r\n", "malformed v1 line"},
        {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 1.2.3.4 host 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 [::1] ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 1::2::3 ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 ::ffff:1.02.3.4 ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 12345::1 ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP6 ::g ::1 1 2\r\n", "bad v1 address"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad v1 port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "bad v1 port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad v1 port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", "bad v1 port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad v1 port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad v1 port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n", "bad v1 port"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        v1(cases[i].line, cases[i].line, bad(cases[i].why));

    /* NUL bytes are bytes: the line is not a C string. */
    static const char nul[] = "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n";
    expect("NUL in an address", nul, sizeof(nul) - 1, CG_PP_ANY, bad("bad v1 address"));

    /* The CRLF must be within 107 bytes. */
    char l[300];
    memset(l, 'x', sizeof(l));
    memcpy(l, "PROXY UNKNOWN ", 14);
    expect("no CRLF in 107 bytes", l, 107, CG_PP_ANY, bad("v1 line too long"));
    expect("no CRLF in 106 bytes yet", l, 106, CG_PP_ANY, incomplete);
    expect("long garbage", l, sizeof(l), CG_PP_ANY, bad("v1 line too long"));
    memcpy(l + 106, "\r\n", 2);
    expect("108-byte line", l, 108, CG_PP_ANY, bad("v1 line too long"));
    memcpy(l + 105, "\r\n", 2);
    expect("107-byte line", l, 107, CG_PP_ANY, tcp(1, CG_PP_UNKNOWN, NULL, 0, NULL, 0, 107));

    v1("truncated line", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", incomplete);
    v1("truncated before its LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", incomplete);
    v1("nothing yet", "", incomplete);
}

/* A version 2 header: signature, version/command, family/protocol, the
 * announced block length, and `n` bytes of block. */
static size_t v2(unsigned char *out, unsigned vc, unsigned fp, size_t announced, const void *block,
                 size_t n)
{
    static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                          0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    memcpy(out, sig, 12);
    out[12] = (unsigned char)vc;
    out[13] = (unsigned char)fp;
    out[14] = (unsigned char)(announced >> 8);
    out[15] = (unsigned char)announced;
    if (n)
        memcpy(out + 16, block, n);
    return 16 + n;
}

static const unsigned char tcp4_block[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0x01, 0xbb};

static unsigned char tcp6_block[36];

static void test_v2_valid(void)
{
    unsigned char b[16 + CG_PP_V2_MAX_BLOCK + 64], block[CG_PP_V2_MAX_BLOCK];
    size_t n;

    n = v2(b, 0x21, 0x11, 12, tcp4_block, 12);
    expect("v2 TCP4", b, n, CG_PP_ANY,
           tcp(2, CG_PP_TCP4, "192.0.2.1", 1234, "198.51.100.2", 443, 28));
    expect("v2 TCP4, v2 only", b, n, CG_PP_V2,
           tcp(2, CG_PP_TCP4, "192.0.2.1", 1234, "198.51.100.2", 443, 28));

    memset(tcp6_block, 0, sizeof(tcp6_block));
    tcp6_block[0] = 0x20, tcp6_block[1] = 0x01, tcp6_block[2] = 0x0d, tcp6_block[3] = 0xb8;
    tcp6_block[15] = 1;
    tcp6_block[16] = 0x20, tcp6_block[17] = 0x01, tcp6_block[18] = 0x0d, tcp6_block[19] = 0xb8;
    tcp6_block[31] = 2;
    tcp6_block[32] = 0xff, tcp6_block[33] = 0xff, tcp6_block[34] = 0, tcp6_block[35] = 80;
    n = v2(b, 0x21, 0x21, 36, tcp6_block, 36);
    expect("v2 TCP6", b, n, CG_PP_ANY,
           tcp(2, CG_PP_TCP6, "2001:db8::1", 65535, "2001:db8::2", 80, 52));

    unsigned char mapped[36] = {0};
    mapped[10] = mapped[11] = 0xff;
    mapped[12] = 10, mapped[15] = 7;
    mapped[26] = mapped[27] = 0xff;
    mapped[28] = 10, mapped[31] = 8;
    mapped[33] = 1, mapped[35] = 2;
    n = v2(b, 0x21, 0x21, 36, mapped, 36);
    expect("v2 TCP6 IPv4-mapped is the IPv4 address", b, n, CG_PP_ANY,
           tcp(2, CG_PP_TCP6, "10.0.0.7", 1, "10.0.0.8", 2, 52));

    /* TLVs after the addresses are skipped: ALPN "h2", an empty NOOP, an
     * AWS-style vendor TLV, SSL with a version sub-TLV. */
    static const unsigned char tlvs[] = {0x01, 0x00, 0x02, 'h',  '2',  0x04, 0x00, 0x00, 0xea, 0x00,
                                         0x04, 0x01, 'v',  'p',  'c',  0x20, 0x00, 0x0b, 0x01, 0x00,
                                         0x00, 0x00, 0x00, 0x21, 0x00, 0x03, 'T',  'L',  'S'};
    memcpy(block, tcp4_block, 12);
    memcpy(block + 12, tlvs, sizeof(tlvs));
    n = v2(b, 0x21, 0x11, 12 + sizeof(tlvs), block, 12 + sizeof(tlvs));
    expect("v2 TCP4 with TLVs", b, n, CG_PP_ANY,
           tcp(2, CG_PP_TCP4, "192.0.2.1", 1234, "198.51.100.2", 443, (int)n));

    /* The largest block: one NOOP TLV filling it. */
    memcpy(block, tcp4_block, 12);
    size_t v = CG_PP_V2_MAX_BLOCK - 12 - 3;
    block[12] = 0x04, block[13] = (unsigned char)(v >> 8), block[14] = (unsigned char)v;
    memset(block + 15, 0, v);
    n = v2(b, 0x21, 0x11, CG_PP_V2_MAX_BLOCK, block, CG_PP_V2_MAX_BLOCK);
    expect("v2 largest block", b, n, CG_PP_ANY,
           tcp(2, CG_PP_TCP4, "192.0.2.1", 1234, "198.51.100.2", 443, (int)n));

    want local = {16, 2, CG_PP_LOCAL, CG_PP_UNKNOWN, NULL, NULL, 0, 0, NULL};
    n = v2(b, 0x20, 0x00, 0, NULL, 0);
    expect("v2 LOCAL", b, n, CG_PP_ANY, local);
    n = v2(b, 0x20, 0x11, 12, tcp4_block, 12);
    local.rc = 28;
    expect("v2 LOCAL with addresses: ignored", b, n, CG_PP_ANY, local);
    n = v2(b, 0x20, 0xff, 5, "\xff\xff\xff\xff\xff", 5);
    local.rc = 21;
    expect("v2 LOCAL ignores its family byte and block", b, n, CG_PP_ANY, local);

    want unknown = {16, 2, CG_PP_PROXY, CG_PP_UNKNOWN, NULL, NULL, 0, 0, NULL};
    n = v2(b, 0x21, 0x00, 0, NULL, 0);
    expect("v2 PROXY UNSPEC", b, n, CG_PP_ANY, unknown);
    n = v2(b, 0x21, 0x00, 7, "1234567", 7);
    unknown.rc = 23;
    expect("v2 PROXY UNSPEC with bytes: skipped", b, n, CG_PP_ANY, unknown);
    n = v2(b, 0x21, 0x10, 3, "abc", 3);
    unknown.rc = 19;
    expect("v2 PROXY AF_INET with protocol UNSPEC", b, n, CG_PP_ANY, unknown);
    n = v2(b, 0x21, 0x12, 12, tcp4_block, 12);
    unknown.rc = 28;
    expect("v2 PROXY UDP over IPv4 is unknown", b, n, CG_PP_ANY, unknown);
    n = v2(b, 0x21, 0x22, 36, tcp6_block, 36);
    unknown.rc = 52;
    expect("v2 PROXY UDP over IPv6 is unknown", b, n, CG_PP_ANY, unknown);

    memset(block, 0, 216);
    memcpy(block, "/run/client.sock", 16);
    want unix_fam = {232, 2, CG_PP_PROXY, CG_PP_UNIX, NULL, NULL, 0, 0, NULL};
    n = v2(b, 0x21, 0x31, 216, block, 216);
    expect("v2 PROXY AF_UNIX stream", b, n, CG_PP_ANY, unix_fam);
    n = v2(b, 0x21, 0x32, 216, block, 216);
    expect("v2 PROXY AF_UNIX datagram", b, n, CG_PP_ANY, unix_fam);

    n = v2(b, 0x21, 0x11, 12, tcp4_block, 12);
    memcpy(b + n, "GET / HTTP/1.1\r\n\r\n", 18);
    expect("v2 followed by a request: only the header is consumed", b, n + 18, CG_PP_ANY,
           tcp(2, CG_PP_TCP4, "192.0.2.1", 1234, "198.51.100.2", 443, 28));
}

static void test_v2_invalid(void)
{
    unsigned char b[16 + CG_PP_V2_MAX_BLOCK + 64], block[64];
    size_t n;

    for (size_t i = 0; i < 12; i++) {
        char name[64];
        n = v2(b, 0x21, 0x11, 12, tcp4_block, 12);
        b[i] ^= 0x20;
        snprintf(name, sizeof(name), "v2 signature byte %zu wrong", i);
        expect(name, b, n, CG_PP_ANY, bad("no PROXY protocol header"));
    }
    n = v2(b, 0x11, 0x11, 12, tcp4_block, 12);
    expect("v2 version 1 in the binary form", b, n, CG_PP_ANY, bad("unsupported v2 version"));
    n = v2(b, 0x31, 0x11, 12, tcp4_block, 12);
    expect("v2 version 3", b, n, CG_PP_ANY, bad("unsupported v2 version"));
    n = v2(b, 0x22, 0x11, 12, tcp4_block, 12);
    expect("v2 command 2", b, n, CG_PP_ANY, bad("unknown v2 command"));
    n = v2(b, 0x2f, 0x11, 12, tcp4_block, 12);
    expect("v2 command 15", b, n, CG_PP_ANY, bad("unknown v2 command"));
    n = v2(b, 0x21, 0x41, 12, tcp4_block, 12);
    expect("v2 family 4", b, n, CG_PP_ANY, bad("unknown v2 address family or protocol"));
    n = v2(b, 0x21, 0x13, 12, tcp4_block, 12);
    expect("v2 protocol 3", b, n, CG_PP_ANY, bad("unknown v2 address family or protocol"));
    n = v2(b, 0x21, 0x11, CG_PP_V2_MAX_BLOCK + 1, tcp4_block, 12);
    expect("v2 block over the limit", b, n, CG_PP_ANY, bad("v2 header too long"));
    n = v2(b, 0x21, 0x11, 0xffff, tcp4_block, 12);
    expect("v2 block 65535", b, n, CG_PP_ANY, bad("v2 header too long"));
    n = v2(b, 0x21, 0x11, 11, tcp4_block, 11);
    expect("v2 TCP4 block of 11", b, n, CG_PP_ANY, bad("v2 address block too short"));
    n = v2(b, 0x21, 0x21, 35, tcp6_block, 35);
    expect("v2 TCP6 block of 35", b, n, CG_PP_ANY, bad("v2 address block too short"));
    n = v2(b, 0x21, 0x22, 0, NULL, 0);
    expect("v2 UDP6 block of 0", b, n, CG_PP_ANY, bad("v2 address block too short"));
    memset(block, 0, sizeof(block));
    n = v2(b, 0x21, 0x31, 40, block, 40);
    expect("v2 AF_UNIX block of 40", b, n, CG_PP_ANY, bad("v2 address block too short"));

    memcpy(block, tcp4_block, 12);
    memcpy(block + 12, "\x01\x00", 2);
    n = v2(b, 0x21, 0x11, 14, block, 14);
    expect("v2 TLV cut in its header", b, n, CG_PP_ANY, bad("malformed v2 TLV"));
    memcpy(block + 12, "\x01\x00\x05h2", 5);
    n = v2(b, 0x21, 0x11, 17, block, 17);
    expect("v2 TLV longer than the block", b, n, CG_PP_ANY, bad("malformed v2 TLV"));
    memcpy(block + 12, "\x01\x00\x02h2\x00", 6);
    n = v2(b, 0x21, 0x11, 18, block, 18);
    expect("v2 one stray byte after the TLVs", b, n, CG_PP_ANY, bad("malformed v2 TLV"));

    n = v2(b, 0x21, 0x11, 12, tcp4_block, 8);
    expect("v2 truncated addresses", b, n, CG_PP_ANY, incomplete);
    expect("v2 truncated header", b, 15, CG_PP_ANY, incomplete);
}

static void test_accept(void)
{
    unsigned char b[64];
    size_t n = v2(b, 0x21, 0x11, 12, tcp4_block, 12);
    const char *l = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    expect("v2 header where only v1 is accepted", b, n, CG_PP_V1, bad("no PROXY protocol header"));
    expect("v1 header where only v2 is accepted", l, strlen(l), CG_PP_V2,
           bad("no PROXY protocol header"));
    expect("v1 header, v1 only", l, strlen(l), CG_PP_V1,
           tcp(1, CG_PP_TCP4, "1.2.3.4", 1, "5.6.7.8", 2, 32));
    expect("nothing accepted: v1", l, strlen(l), CG_PP_OFF, bad("no PROXY protocol header"));
    expect("nothing accepted: v2", b, n, CG_PP_OFF, bad("no PROXY protocol header"));
    cg_pp_result r;
    ok(cg_pp_parse("", 0, CG_PP_OFF, &r) == CG_PP_INVALID, "nothing accepted, nothing read");
    ok(cg_pp_parse("", 0, CG_PP_V2, &r) == CG_PP_INCOMPLETE && r.error == NULL,
       "empty input is incomplete");
}

static void test_format(void)
{
    cg_proxy_addr a;
    char buf[CG_PROXY_ADDR_TEXT];
    static const unsigned char v4[4] = {10, 1, 2, 3};
    cg_proxy_addr_set(&a, 4, v4);
    ok(cg_proxy_addr_format(&a, buf, sizeof(buf)) == 8 && strcmp(buf, "10.1.2.3") == 0,
       "IPv4 as text");
    cg_proxy_addr_set(&a, 6, tcp6_block);
    ok(cg_proxy_addr_format(&a, buf, sizeof(buf)) == 11 && strcmp(buf, "2001:db8::1") == 0,
       "IPv6 as text");
    ok(cg_proxy_addr_format(&a, buf, 10) == 0 && buf[0] == '\0', "too small a buffer");
}

int main(void)
{
    test_v1_valid();
    test_v1_invalid();
    test_v2_valid();
    test_v2_invalid();
    test_accept();
    test_format();
    return tap_done();
}
