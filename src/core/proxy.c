/* Trusted proxies: see proxy.h. */
#include "proxy.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hdrtab.h"

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* As cg_proxy_parse_addr, but an IPv4-mapped IPv6 address stays IPv6 and
 * *mapped says it is one. */
static int parse_addr_raw(const char *text, size_t len, cg_proxy_addr *out, int *mapped)
{
    char buf[64];
    *mapped = 0;
    if (len == 0 || len >= sizeof(buf) || memchr(text, '\0', len))
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (memchr(buf, ':', len)) {
        char *zone = strchr(buf, '%');
        if (zone) {
            if (zone[1] == '\0')
                return -1;
            *zone = '\0';
        }
        if (inet_pton(AF_INET6, buf, out->bytes) != 1)
            return -1;
        out->family = 6;
        *mapped = memcmp(out->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
        return 0;
    }
    if (inet_pton(AF_INET, buf, out->bytes) != 1)
        return -1;
    out->family = 4;
    return 0;
}

static void unmap(cg_proxy_addr *a)
{
    memmove(a->bytes, a->bytes + 12, 4);
    memset(a->bytes + 4, 0, 12);
    a->family = 4;
}

int cg_proxy_parse_addr(const char *text, size_t len, cg_proxy_addr *out)
{
    int mapped;
    if (parse_addr_raw(text, len, out, &mapped) < 0)
        return -1;
    if (mapped)
        unmap(out);
    return 0;
}

void cg_proxy_addr_set(cg_proxy_addr *out, int family, const unsigned char *bytes)
{
    memset(out, 0, sizeof(*out));
    out->family = family;
    memcpy(out->bytes, bytes, family == 4 ? 4 : 16);
    if (family == 6 && memcmp(out->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0)
        unmap(out);
}

size_t cg_proxy_addr_format(const cg_proxy_addr *a, char *buf, size_t size)
{
    if (size < CG_PROXY_ADDR_TEXT ||
        !inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->bytes, buf, (socklen_t)size)) {
        if (size)
            buf[0] = '\0';
        return 0;
    }
    return strlen(buf);
}

static unsigned addr_bits(const cg_proxy_addr *a)
{
    return a->family == 4 ? 32 : 128;
}

/* 1 when the first `prefix` bits of a and b are equal. */
static int same_prefix(const unsigned char *a, const unsigned char *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    return ((a[whole] ^ b[whole]) & mask) == 0;
}

/* 1 when every bit of `a` after `prefix` is zero. */
static int host_bits_zero(const cg_proxy_addr *a, unsigned prefix)
{
    cg_proxy_addr masked = *a;
    unsigned bits = addr_bits(a);
    for (unsigned i = prefix; i < bits; i++)
        masked.bytes[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
    return memcmp(masked.bytes, a->bytes, 16) == 0;
}

/* The prefix length written after '/': decimal bits, or for IPv4 a netmask
 * ("255.255.0.0") whose ones are contiguous. Returns 0 or -1. */
static int parse_prefix(const char *text, size_t len, int family, unsigned *prefix)
{
    unsigned max = family == 4 ? 32 : 128, v = 0;
    if (len == 0)
        return -1;
    if (family == 4 && memchr(text, '.', len)) {
        cg_proxy_addr mask;
        int mapped;
        if (parse_addr_raw(text, len, &mask, &mapped) < 0 || mask.family != 4)
            return -1;
        uint32_t m = (uint32_t)mask.bytes[0] << 24 | (uint32_t)mask.bytes[1] << 16 |
                     (uint32_t)mask.bytes[2] << 8 | mask.bytes[3];
        if (m & (~m >> 1))
            return -1; /* a one after a zero: not contiguous */
        for (v = 0; v < 32 && (m & (0x80000000u >> v)); v++)
            ;
        *prefix = v;
        return 0;
    }
    if (len > 3)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(text[i] - '0');
    }
    if (v > max)
        return -1;
    *prefix = v;
    return 0;
}

/* One list entry that is an address or a network. Returns 0 or a CG_PROXY_* code. */
static int parse_net(const char *e, size_t len, cg_proxy_net *net)
{
    const char *slash = memchr(e, '/', len);
    size_t alen = slash ? (size_t)(slash - e) : len;
    int mapped;
    if (parse_addr_raw(e, alen, &net->addr, &mapped) < 0)
        return CG_PROXY_BAD_ENTRY;
    net->prefix = addr_bits(&net->addr);
    if (slash && parse_prefix(slash + 1, len - alen - 1, net->addr.family, &net->prefix) < 0)
        return CG_PROXY_BAD_ENTRY;
    if (!host_bits_zero(&net->addr, net->prefix))
        return CG_PROXY_HOST_BITS;
    /* ::ffff:a.b.c.d/N with N >= 96 is the IPv4 network a.b.c.d/(N-96). */
    if (mapped && net->prefix >= 96) {
        unmap(&net->addr);
        net->prefix -= 96;
    }
    return 0;
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trims spaces and tabs off [*a, *b). */
static void trim(const char **a, const char **b)
{
    while (*a < *b && is_ows(**a))
        (*a)++;
    while (*b > *a && is_ows((*b)[-1]))
        (*b)--;
}

int cg_proxy_trust_parse(cg_proxy_trust *t, const char *list, cg_slice *bad)
{
    const char *p = list ? list : "";
    int rc;
    memset(t, 0, sizeof(*t));
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *a = p, *b = comma ? comma : p + strlen(p);
        trim(&a, &b);
        size_t len = (size_t)(b - a);
        if (len == 1 && *a == '*') {
            t->all = 1;
        } else if (len == 5 && memcmp(a, "unix:", 5) == 0) {
            t->unix_peers = 1;
        } else if (len) {
            cg_proxy_net *nets = realloc(t->nets, (t->n + 1) * sizeof(*nets));
            rc = nets ? 0 : CG_PROXY_NO_MEMORY;
            if (nets) {
                t->nets = nets;
                rc = parse_net(a, len, &t->nets[t->n]);
            }
            if (rc < 0) {
                *bad = (cg_slice){a, len};
                cg_proxy_trust_free(t);
                return rc;
            }
            t->n++;
        }
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

const char *cg_proxy_strerror(int code)
{
    switch (code) {
    case CG_PROXY_HOST_BITS:
        return "has host bits set";
    case CG_PROXY_NO_MEMORY:
        return "out of memory";
    default:
        return "is not an IP address or network";
    }
}

void cg_proxy_trust_free(cg_proxy_trust *t)
{
    free(t->nets);
    memset(t, 0, sizeof(*t));
}

int cg_proxy_trusts_addr(const cg_proxy_trust *t, const cg_proxy_addr *a)
{
    if (t->all)
        return 1;
    for (size_t i = 0; i < t->n; i++) {
        const cg_proxy_net *net = &t->nets[i];
        if (net->addr.family == a->family && same_prefix(net->addr.bytes, a->bytes, net->prefix))
            return 1;
    }
    return 0;
}

int cg_proxy_trusts_host(const cg_proxy_trust *t, const char *host, size_t len)
{
    cg_proxy_addr a;
    if (t->all)
        return 1;
    if (!t->n || cg_proxy_parse_addr(host, len, &a) < 0)
        return 0;
    return cg_proxy_trusts_addr(t, &a);
}

/* A decimal port, 0..65535. Returns 0 or -1. */
static int parse_port(const char *s, size_t len, unsigned *port)
{
    unsigned v = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}

/* Splits one X-Forwarded-For entry into host and port as uvicorn does:
 * "[v6]:port", "[v6]", "v4:port" (one colon), or the whole entry as host
 * with port 0 (a bare IPv6 address, or anything malformed). */
static void split_entry(cg_slice e, cg_slice *host, unsigned *port)
{
    *host = e;
    *port = 0;
    if (e.len && e.base[0] == '[') {
        const char *close = memchr(e.base, ']', e.len);
        if (!close)
            return;
        cg_slice inner = {e.base + 1, (size_t)(close - e.base - 1)};
        const char *rest = close + 1, *end = e.base + e.len;
        if (rest == end) {
            *host = inner;
        } else if (*rest == ':') {
            *host = inner;
            if (parse_port(rest + 1, (size_t)(end - rest - 1), port) < 0)
                *port = 0;
        }
        return;
    }
    const char *colon = memchr(e.base, ':', e.len);
    if (!colon || memchr(colon + 1, ':', e.len - (size_t)(colon + 1 - e.base)))
        return;
    if (parse_port(colon + 1, e.len - (size_t)(colon + 1 - e.base), port) == 0)
        host->len = (size_t)(colon - e.base);
}

static int eq_nocase(cg_slice s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s.base[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != lit[i])
            return 0;
    }
    return 1;
}

static int scheme_of(cg_slice v)
{
    if (eq_nocase(v, "https") || eq_nocase(v, "wss"))
        return CG_PROXY_SCHEME_HTTPS;
    if (eq_nocase(v, "http") || eq_nocase(v, "ws"))
        return CG_PROXY_SCHEME_HTTP;
    return CG_PROXY_SCHEME_NONE;
}

int cg_proxy_read_headers(const cg_proxy_trust *t, const cg_http1_header *headers, size_t n,
                          cg_proxy_forwarded *out)
{
    int has_xff = 0, has_proto = 0;
    cg_slice leftmost = {NULL, 0};
    memset(out, 0, sizeof(*out));
    /* The combined list read from its right end: the lines last to first,
     * each line's entries right to left. */
    for (size_t i = n; i-- > 0;) {
        const cg_http1_header *h = &headers[i];
        if (h->token == CG_HDR_X_FORWARDED_PROTO && !has_proto) {
            has_proto = 1;
            out->scheme = scheme_of(h->value);
        }
        if (h->token != CG_HDR_X_FORWARDED_FOR || out->has_client)
            continue;
        has_xff = 1;
        const char *end = h->value.base + h->value.len;
        while (end > h->value.base && !out->has_client) {
            const char *start = end;
            while (start > h->value.base && start[-1] != ',')
                start--;
            const char *a = start, *b = end;
            end = start > h->value.base ? start - 1 : h->value.base;
            trim(&a, &b);
            if (a == b)
                continue; /* empty list elements are ignored (RFC 9110 5.6.1) */
            leftmost = (cg_slice){a, (size_t)(b - a)};
            split_entry(leftmost, &out->host, &out->port);
            if (!cg_proxy_trusts_host(t, out->host.base, out->host.len))
                out->has_client = 1;
        }
    }
    if (has_xff && !out->has_client && leftmost.len) {
        /* Every hop is a trusted proxy: the left-most is the client. */
        split_entry(leftmost, &out->host, &out->port);
        out->has_client = 1;
    }
    if (out->has_client && out->host.len == 0) {
        out->has_client = 0; /* "[]:80" or ":80": nothing usable */
        out->port = 0;
    }
    if (!out->has_client) {
        out->host = (cg_slice){NULL, 0};
        out->port = 0;
    }
    return out->has_client || out->scheme != CG_PROXY_SCHEME_NONE;
}
