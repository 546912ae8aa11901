/* The PROXY protocol header: see proxyproto.h. */
#include "proxyproto.h"

#include <string.h>

static const char v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static int invalid(cg_pp_result *out, const char *why)
{
    out->error = why;
    return CG_PP_INVALID;
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static int is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A version 1 port: decimal 0..65535 without leading zeros. */
static int v1_port(const char *s, size_t n, unsigned *port)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}

/* A version 1 address of the line's family: IPv4 as four decimal numbers
 * without leading zeros, IPv6 as hex groups and colons (a trailing dotted
 * IPv4 part allowed, as inet_ntop writes a mapped address); no zone. */
static int v1_addr(const char *s, size_t n, int v6, cg_proxy_addr *out)
{
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.' || is_digit(ch))
            continue;
        if (!v6 || (ch != ':' && !is_hex(ch)))
            return -1;
    }
    if (v6 != (memchr(s, ':', n) != NULL))
        return -1;
    /* No leading zero in a dotted number ("01.2.3.4", "::ffff:1.02.3.4"):
     * C libraries differ in what inet_pton makes of them. The dotted part
     * is what follows the last colon. */
    size_t from = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':')
            from = i + 1;
    if (memchr(s + from, '.', n - from))
        for (size_t i = from; i + 1 < n; i++)
            if (s[i] == '0' && is_digit(s[i + 1]) && (i == from || s[i - 1] == '.'))
                return -1;
    return cg_proxy_parse_addr(s, n, out);
}

/* The fields of a version 1 line, between "PROXY " and the CRLF. */
static int v1_fields(const char *p, size_t n, cg_pp_result *out)
{
    static const char unknown[] = "UNKNOWN";
    const size_t ulen = sizeof(unknown) - 1;
    if (n >= ulen && memcmp(p, unknown, ulen) == 0 && (n == ulen || p[ulen] == ' ')) {
        out->family = CG_PP_UNKNOWN; /* the rest of the line is ignored */
        return 0;
    }
    /* proto SP src SP dst SP sport SP dport, exactly one space between. */
    const char *f[5];
    size_t flen[5], k = 0;
    const char *start = p, *end = p + n;
    for (const char *q = p;; q++) {
        if (q == end || *q == ' ') {
            if (k == 5 || q == start)
                return invalid(out, "malformed v1 line");
            f[k] = start;
            flen[k++] = (size_t)(q - start);
            if (q == end)
                break;
            start = q + 1;
        }
    }
    if (k != 5)
        return invalid(out, "malformed v1 line");
    int v6;
    if (flen[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        v6 = 0;
    else if (flen[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        v6 = 1;
    else
        return invalid(out, "unknown v1 protocol");
    if (v1_addr(f[1], flen[1], v6, &out->src) < 0 || v1_addr(f[2], flen[2], v6, &out->dst) < 0)
        return invalid(out, "bad v1 address");
    if (v1_port(f[3], flen[3], &out->src_port) < 0 || v1_port(f[4], flen[4], &out->dst_port) < 0)
        return invalid(out, "bad v1 port");
    out->family = v6 ? CG_PP_TCP6 : CG_PP_TCP4;
    return 0;
}

static int parse_v1(const char *buf, size_t len, cg_pp_result *out)
{
    size_t sig = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
    if (memcmp(buf, v1_sig, sig) != 0)
        return invalid(out, "no PROXY protocol header");
    if (len < sizeof(v1_sig))
        return CG_PP_INCOMPLETE;
    /* The CRLF, within CG_PP_V1_MAX bytes; a CR or LF alone ends nothing. */
    size_t lim = len < CG_PP_V1_MAX ? len : CG_PP_V1_MAX;
    for (size_t i = sizeof(v1_sig); i < lim; i++) {
        if (buf[i] == '\n')
            return invalid(out, "LF without CR in v1 line");
        if (buf[i] != '\r')
            continue;
        if (i + 1 >= CG_PP_V1_MAX)
            return invalid(out, "v1 line too long");
        if (i + 1 >= len)
            return CG_PP_INCOMPLETE;
        if (buf[i + 1] != '\n')
            return invalid(out, "CR without LF in v1 line");
        out->version = 1;
        out->command = CG_PP_PROXY;
        int rc = v1_fields(buf + sizeof(v1_sig), i - sizeof(v1_sig), out);
        return rc < 0 ? rc : (int)(i + 2);
    }
    return len >= CG_PP_V1_MAX ? invalid(out, "v1 line too long") : CG_PP_INCOMPLETE;
}

/* The TLVs after the addresses: type, 16-bit length, value; they must fill
 * the rest of the block exactly. */
static int v2_tlvs_ok(const unsigned char *p, size_t n)
{
    while (n) {
        if (n < 3)
            return 0;
        size_t vlen = (size_t)p[1] << 8 | p[2];
        if (vlen > n - 3)
            return 0;
        p += 3 + vlen;
        n -= 3 + vlen;
    }
    return 1;
}

static int parse_v2(const char *buf, size_t len, cg_pp_result *out)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t sig = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(b, v2_sig, sig) != 0)
        return invalid(out, "no PROXY protocol header");
    if (len <= 12)
        return CG_PP_INCOMPLETE;
    if (b[12] >> 4 != 2)
        return invalid(out, "unsupported v2 version");
    unsigned cmd = b[12] & 0x0f;
    if (cmd > 1)
        return invalid(out, "unknown v2 command");
    if (len <= 13)
        return CG_PP_INCOMPLETE;
    /* LOCAL: the family and addresses are ignored, whatever they say. */
    unsigned fam = b[13] >> 4, proto = b[13] & 0x0f;
    if (cmd == 1 && (fam > 3 || proto > 2))
        return invalid(out, "unknown v2 address family or protocol");
    if (len < 16)
        return CG_PP_INCOMPLETE;
    size_t block = (size_t)b[14] << 8 | b[15];
    if (block > CG_PP_V2_MAX_BLOCK)
        return invalid(out, "v2 header too long");
    /* Addresses are present for a known family with a known protocol. */
    static const size_t addr_len[4] = {0, 12, 36, 216};
    size_t alen = cmd == 1 && proto != 0 ? addr_len[fam] : 0;
    if (block < alen)
        return invalid(out, "v2 address block too short");
    if (len < 16 + block)
        return CG_PP_INCOMPLETE;
    out->version = 2;
    out->command = cmd == 1 ? CG_PP_PROXY : CG_PP_LOCAL;
    out->family = CG_PP_UNKNOWN;
    if (alen && !v2_tlvs_ok(b + 16 + alen, block - alen))
        return invalid(out, "malformed v2 TLV");
    const unsigned char *a = b + 16;
    if (alen && fam == 3) {
        out->family = CG_PP_UNIX;
    } else if (alen && proto == 1) { /* TCP; UDP on a stream makes no sense: unknown */
        int v = fam == 1 ? 4 : 6;
        size_t w = fam == 1 ? 4 : 16;
        cg_proxy_addr_set(&out->src, v, a);
        cg_proxy_addr_set(&out->dst, v, a + w);
        out->src_port = (unsigned)a[2 * w] << 8 | a[2 * w + 1];
        out->dst_port = (unsigned)a[2 * w + 2] << 8 | a[2 * w + 3];
        out->family = fam == 1 ? CG_PP_TCP4 : CG_PP_TCP6;
    }
    return (int)(16 + block);
}

int cg_pp_parse(const char *buf, size_t len, unsigned accept, cg_pp_result *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return accept & CG_PP_ANY ? CG_PP_INCOMPLETE : invalid(out, "no PROXY protocol header");
    int rc;
    if ((accept & CG_PP_V1) && buf[0] == v1_sig[0])
        rc = parse_v1(buf, len, out);
    else if ((accept & CG_PP_V2) && (unsigned char)buf[0] == v2_sig[0])
        rc = parse_v2(buf, len, out);
    else
        rc = invalid(out, "no PROXY protocol header");
    if (rc < 0) {
        /* Nothing but the reason survives a failure. */
        const char *why = out->error;
        memset(out, 0, sizeof(*out));
        out->error = rc == CG_PP_INVALID ? why : NULL;
    }
    return rc;
}
