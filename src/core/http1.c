/* HTTP/1.1 request-head parser, chunked decoder and response helpers.
 *
 * The head parser works in two phases. While the head is incomplete, a scan
 * looks only at new bytes for line ends (memchr), enforcing the line-length
 * and field-count limits and the CRLF rule as lines arrive, so an oversized
 * head is refused as soon as it is known to be too big. Once the empty line
 * is seen, one pass over the complete head splits and validates everything.
 * Because every line of a complete head ends in CRLF, the second pass needs
 * no bounds checks in its byte loops: each stops at a CR at the latest. */
#include "http1.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "ascii.h"
#include "hdrtab.h"

/* Character classes. */
enum {
    C_TOKEN = 1,  /* tchar (RFC 9110 5.6.2) */
    C_TARGET = 2, /* allowed in a request target: VCHAR except '#' */
    C_VALUE = 4,  /* allowed in a field value: HTAB, SP, VCHAR, obs-text */
    C_HOST = 8,   /* reg-name / IPv4 bytes of an authority host */
};

static const unsigned char cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    4,  15, 6,  5,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  14, 6,  14, 6,  6,  /* 0x30 */
    6,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  6,  6,  7,  15, /* 0x50 */
    7,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0x80 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0x90 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0xa0 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0xb0 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0xc0 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0xd0 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0xe0 */
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* 0xf0 */
};

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

/* Empty lines tolerated before a request line (RFC 9112 2.2 asks for at least one). */
#define MAX_EMPTY_LINES 16

/* Longest run of chunk extensions accepted per chunk. */
#define MAX_CHUNK_EXT 4096

static const uint64_t ones = 0x0101010101010101ull;
static const uint64_t highs = 0x8080808080808080ull;

static inline uint64_t load8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* High bit set in some byte exactly when some byte of w is below n (n <= 0x80). */
static inline uint64_t has_less(uint64_t w, unsigned n)
{
    return (w - n * ones) & ~w & highs;
}

/* Non-zero exactly when some byte of w equals c. */
static inline uint64_t has_byte(uint64_t w, unsigned char c)
{
    uint64_t x = w ^ (c * ones);
    return (x - ones) & ~x & highs;
}

static inline int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- request head ---------------------------------------------------- */

void cg_http1_parser_init(cg_http1_parser *p)
{
    p->scanned = 0;
    p->line_start = 0;
    p->lines = 0;
    p->error = NULL;
}

static long fail(cg_http1_parser *p, long code, const char *why)
{
    p->error = why;
    return code;
}

/* Checks on a line whose content (CRLF excluded) is at least n bytes long
 * (exact when the line is complete) and starts with byte `first`. Partial and
 * complete lines go through the same checks in the same order, so early and
 * late detection agree. The first byte of a request line must start a method
 * (or be the CR of an empty line), so binary garbage such as a TLS handshake
 * is refused at once instead of at the head timeout. */
static long check_line(cg_http1_parser *p, char first, size_t n, const cg_http1_limits *lim)
{
    if (p->lines == 0) {
        if (first != '\r' && first != '\n' && !IS(first, C_TOKEN))
            return fail(p, CG_HTTP1_BAD_REQUEST, "method is not a token");
        if (n > lim->request_line)
            return fail(p, CG_HTTP1_URI_TOO_LONG, "request line too long");
    } else if (n > 0) {
        if (p->lines > lim->fields)
            return fail(p, CG_HTTP1_FIELDS_TOO_LARGE, "too many header fields");
        if (n > lim->field_size)
            return fail(p, CG_HTTP1_FIELDS_TOO_LARGE, "header field line too long");
    }
    return 0;
}

/* Word-at-a-time scans below flag the bytes that stop them; the lowest flag
 * is always exact (a borrow only runs upward from a flagged byte), so on
 * little-endian machines its index comes from counting trailing zeros. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CG_FIRST_FLAGGED(m) ((size_t)__builtin_ctzll(m) >> 3)
#endif

/* First byte at or after q that may not appear in a request target. */
static inline const char *scan_target(const char *q, const char *end)
{
    for (;;) {
        if (end - q >= 8) {
            uint64_t w = load8(q);
            uint64_t m = has_less(w, 0x21) | (w & highs) | has_byte(w, 0x7f) | has_byte(w, '#');
            if (!m) {
                q += 8;
                continue;
            }
#ifdef CG_FIRST_FLAGGED
            return q + CG_FIRST_FLAGGED(m);
#endif
        }
        for (int k = 0; k < 8; k++, q++)
            if (!IS(*q, C_TARGET))
                return q;
    }
}

/* First byte at or after q that may not appear in a field value. */
static inline const char *scan_value(const char *q, const char *end)
{
    for (;;) {
        if (end - q >= 8) {
            uint64_t w = load8(q);
            uint64_t m = has_less(w, 0x20) | has_byte(w, 0x7f);
            if (!m) {
                q += 8;
                continue;
            }
#ifdef CG_FIRST_FLAGGED
            q += CG_FIRST_FLAGGED(m);
            if (*q != '\t')
                return q;
            q++;
            continue;
#endif
        }
        for (int k = 0; k < 8; k++, q++)
            if (!IS(*q, C_VALUE))
                return q;
    }
}

/* First byte at or after q that ends a field name: ':', SP, a CTL, DEL or
 * non-ASCII. The bytes before it still need checking for tchar. */
static inline const char *scan_name(const char *q, const char *end)
{
    for (;;) {
        if (end - q >= 8) {
            uint64_t w = load8(q);
            uint64_t m = has_less(w, 0x21) | (w & highs) | has_byte(w, 0x7f) | has_byte(w, ':');
            if (!m) {
                q += 8;
                continue;
            }
#ifdef CG_FIRST_FLAGGED
            return q + CG_FIRST_FLAGGED(m);
#endif
        }
        for (int k = 0; k < 8; k++, q++) {
            unsigned char c = (unsigned char)*q;
            if (c == ':' || c <= 0x20 || c >= 0x7f)
                return q;
        }
    }
}

/* Rule broken at an unexpected byte: a CR not followed by LF is a bare CR. */
static inline const char *why_at(const char *q, const char *otherwise)
{
    return (q[0] == '\r' && q[1] != '\n') ? "bare CR" : otherwise;
}

/* authority-form "host:port": a reg-name or IPv4 host, or an IP literal in
 * brackets (hex digits, ':' and '.'), then 1 to 5 port digits. */
static int authority_ok(const char *s, size_t n)
{
    size_t colon = n;
    while (colon > 0 && s[colon - 1] != ':')
        colon--;
    if (colon < 2 || colon == n || n - colon > 5)
        return 0; /* no host, no port, or a port longer than 5 digits */
    for (size_t i = colon; i < n; i++)
        if (!is_digit(s[i]))
            return 0;
    size_t h = colon - 1;
    if (s[0] == '[') {
        if (h < 3 || s[h - 1] != ']')
            return 0;
        for (size_t i = 1; i + 1 < h; i++)
            if (cg_hexval((unsigned char)s[i]) < 0 && s[i] != ':' && s[i] != '.')
                return 0;
        return 1;
    }
    for (size_t i = 0; i < h; i++)
        if (!IS(s[i], C_HOST))
            return 0;
    return 1;
}

/* Parses "n" or "n, n, ..." (all equal); -1 when malformed, -2 when values differ. */
static long long parse_content_length(const char *s, size_t n)
{
    long long v = -1;
    size_t i = 0;
    for (;;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t start = i;
        long long x = 0;
        for (; i < n && is_digit(s[i]); i++) {
            int d = s[i] - '0';
            if (x > (INT64_MAX - d) / 10)
                return -1;
            x = x * 10 + d;
        }
        if (i == start)
            return -1;
        if (v >= 0 && x != v)
            return -2;
        v = x;
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i == n)
            return v;
        if (s[i] != ',')
            return -1;
        i++;
    }
}

enum { CONN_CLOSE = 1, CONN_KEEP_ALIVE = 2, CONN_UPGRADE = 4 };

/* The Connection options the parser acts on, in one pass over the list. */
static int connection_tokens(const char *v, size_t n)
{
    int found = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t a = i;
        while (i < n && v[i] != ',')
            i++;
        size_t b = i;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (cg_ascii_ieq(v + a, b - a, "close"))
            found |= CONN_CLOSE;
        else if (cg_ascii_ieq(v + a, b - a, "keep-alive"))
            found |= CONN_KEEP_ALIVE;
        else if (cg_ascii_ieq(v + a, b - a, "upgrade"))
            found |= CONN_UPGRADE;
    }
    return found;
}

static const char slash[] = "/";

/* Splits target t[0..n) at the first '?' into path and query. */
static inline void split_query(cg_http1_request *req, const char *t, size_t n)
{
    const char *qm = memchr(t, '?', n);
    if (qm) {
        req->path = (cg_slice){t, (size_t)(qm - t)};
        req->query = (cg_slice){qm + 1, n - (size_t)(qm - t) - 1};
    } else {
        req->path = (cg_slice){t, n};
        req->query = (cg_slice){t + n, 0};
    }
}

/* Classifies the request target; 0 or the rule it breaks. */
static const char *parse_target(cg_http1_request *req)
{
    const char *t = req->target.base, *m = req->method.base;
    size_t n = req->target.len, mlen = req->method.len;
    if (mlen == 7 && memcmp(m, "CONNECT", 7) == 0) {
        if (!authority_ok(t, n))
            return "CONNECT needs an authority-form target";
        req->target_form = CG_TARGET_AUTHORITY;
        req->authority = req->target;
        req->path = req->target;
        req->query = (cg_slice){t + n, 0};
        return NULL;
    }
    if (t[0] == '/') {
        req->target_form = CG_TARGET_ORIGIN;
        split_query(req, t, n);
        return NULL;
    }
    if (n == 1 && t[0] == '*') {
        if (!(mlen == 7 && memcmp(m, "OPTIONS", 7) == 0))
            return "asterisk-form target needs OPTIONS";
        req->target_form = CG_TARGET_ASTERISK;
        req->path = req->target;
        req->query = (cg_slice){t + n, 0};
        return NULL;
    }
    size_t skip = 0;
    if (n >= 7 && cg_ascii_ieq(t, 7, "http://"))
        skip = 7;
    else if (n >= 8 && cg_ascii_ieq(t, 8, "https://"))
        skip = 8;
    if (!skip)
        return "invalid request target";
    size_t a = skip;
    while (a < n && t[a] != '/' && t[a] != '?') {
        if (t[a] == '@')
            return "userinfo in absolute-form target";
        a++;
    }
    if (a == skip)
        return "absolute-form target without a host";
    req->target_form = CG_TARGET_ABSOLUTE;
    req->authority = (cg_slice){t + skip, a - skip};
    if (a < n && t[a] == '/') {
        split_query(req, t + a, n - a);
    } else {
        req->path = (cg_slice){slash, 1};
        req->query = a < n ? (cg_slice){t + a + 1, n - a - 1} : (cg_slice){t + n, 0};
    }
    return NULL;
}

/* Parses and validates the complete head buf[0..len). */
static long parse_complete(cg_http1_parser *p, const char *buf, size_t len,
                           const cg_http1_limits *lim, cg_http1_request *req)
{
    const char *q = buf, *end = buf + len;
    (void)lim; /* the scan has enforced the limits */
    /* Every line ends in CRLF, the last one empty (see the file comment). */
    assert(len >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0);
    while (q[0] == '\r' && q[1] == '\n')
        q += 2;

    /* method SP target SP version CRLF */
    const char *m = q;
    while (IS(*q, C_TOKEN))
        q++;
    if (*q != ' ' || q == m) {
        if (*q == ' ' || (q[0] == '\r' && q[1] == '\n'))
            return fail(p, CG_HTTP1_BAD_REQUEST,
                        q == m ? "method is not a token"
                               : "request line is not method SP target SP version");
        return fail(p, CG_HTTP1_BAD_REQUEST, why_at(q, "method is not a token"));
    }
    req->method = (cg_slice){m, (size_t)(q - m)};
    const char *t = ++q;
    q = scan_target(q, end);
    if (*q != ' ' || q == t) {
        if (*q == ' ' || (q[0] == '\r' && q[1] == '\n'))
            return fail(p, CG_HTTP1_BAD_REQUEST, "request line is not method SP target SP version");
        return fail(p, CG_HTTP1_BAD_REQUEST, why_at(q, "invalid byte in request target"));
    }
    req->target = (cg_slice){t, (size_t)(q - t)};
    const char *v = ++q;
    while (*q != '\r')
        q++;
    if (q[1] != '\n')
        return fail(p, CG_HTTP1_BAD_REQUEST, "bare CR");
    if (q - v != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit(v[5]) || v[6] != '.' ||
        !is_digit(v[7])) {
        if (memchr(v, ' ', (size_t)(q - v)))
            return fail(p, CG_HTTP1_BAD_REQUEST, "request line is not method SP target SP version");
        return fail(p, CG_HTTP1_BAD_REQUEST, "malformed HTTP version");
    }
    if (v[5] != '1' || v[7] > '1')
        return fail(p, CG_HTTP1_VERSION_NOT_SUPPORTED, "unsupported HTTP version");
    req->version = v[7] - '0';
    req->authority = (cg_slice){t, 0};
    const char *why = parse_target(req);
    if (why)
        return fail(p, CG_HTTP1_BAD_REQUEST, why);
    q += 2;

    /* field lines */
    size_t nh = 0;
    for (;;) {
        const char *name = q;
        if (*q == '\r') {
            if (q[1] == '\n')
                break;
            return fail(p, CG_HTTP1_BAD_REQUEST, "bare CR");
        }
        if (*q == ' ' || *q == '\t')
            return fail(p, CG_HTTP1_BAD_REQUEST,
                        nh == 0 ? "whitespace before the first field" : "obs-fold");
        q = scan_name(q, end);
        size_t nlen = (size_t)(q - name);
        /* A known name is all tchar: only unknown ones need the byte check. */
        int token = *q == ':' && nlen ? cg_hdr_lookup(name, nlen) : -1;
        if (token < 0)
            for (const char *c = name; c < q; c++)
                if (!IS(*c, C_TOKEN))
                    return fail(p, CG_HTTP1_BAD_REQUEST, "field name is not a token");
        if (*q != ':') {
            if (*q == ' ' || *q == '\t')
                why = "whitespace between field name and colon";
            else if (q[0] == '\r' && q[1] == '\n')
                why = "field line without colon";
            else
                why = why_at(q, "field name is not a token");
            return fail(p, CG_HTTP1_BAD_REQUEST, why);
        }
        if (nlen == 0)
            return fail(p, CG_HTTP1_BAD_REQUEST, "empty field name");
        q++;
        while (*q == ' ' || *q == '\t')
            q++;
        const char *val = q;
        q = scan_value(q, end);
        if (*q != '\r')
            return fail(p, CG_HTTP1_BAD_REQUEST, "control character in field value");
        if (q[1] != '\n')
            return fail(p, CG_HTTP1_BAD_REQUEST, "bare CR");
        const char *ve = q;
        while (ve > val && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        cg_http1_header *h = &req->headers[nh++];
        h->name = (cg_slice){name, nlen};
        h->value = (cg_slice){val, (size_t)(ve - val)};
        h->token = token;
        q += 2;
    }
    req->num_headers = nh;

    /* framing and connection semantics */
    int hosts = 0, te = 0, te_bad = 0, conn = 0, up_hdr = 0, expect = 0;
    size_t host = 0;
    long long cl = -1;
    for (size_t i = 0; i < nh; i++) {
        const cg_http1_header *h = &req->headers[i];
        switch (h->token) {
        case CG_HDR_HOST:
            hosts++;
            host = i;
            break;
        case CG_HDR_CONTENT_LENGTH: {
            long long x = parse_content_length(h->value.base, h->value.len);
            if (x == -1)
                return fail(p, CG_HTTP1_BAD_REQUEST, "invalid Content-Length");
            if (x == -2 || (cl >= 0 && x != cl))
                return fail(p, CG_HTTP1_BAD_REQUEST, "differing Content-Length values");
            cl = x;
            break;
        }
        case CG_HDR_TRANSFER_ENCODING:
            te++;
            te_bad |= !cg_ascii_ieq(h->value.base, h->value.len, "chunked");
            break;
        case CG_HDR_CONNECTION:
            conn |= connection_tokens(h->value.base, h->value.len);
            break;
        case CG_HDR_EXPECT:
            expect |= cg_ascii_ieq(h->value.base, h->value.len, "100-continue");
            break;
        case CG_HDR_UPGRADE:
            up_hdr = 1;
            break;
        default:
            break;
        }
    }
    if (hosts > 1)
        return fail(p, CG_HTTP1_BAD_REQUEST, "more than one Host");
    if (hosts == 0 && req->version == CG_HTTP_1_1)
        return fail(p, CG_HTTP1_BAD_REQUEST, "missing Host");
    if (hosts && req->target_form == CG_TARGET_ABSOLUTE)
        req->headers[host].value = req->authority; /* the target's authority wins */
    if (te) {
        if (req->version == CG_HTTP_1_0)
            return fail(p, CG_HTTP1_BAD_REQUEST, "Transfer-Encoding in HTTP/1.0");
        if (cl >= 0)
            return fail(p, CG_HTTP1_BAD_REQUEST, "both Content-Length and Transfer-Encoding");
        if (te > 1 || te_bad)
            return fail(p, CG_HTTP1_BAD_REQUEST, "Transfer-Encoding other than chunked");
    }
    req->content_length = cl;
    req->chunked = te != 0;
    int close = conn & CONN_CLOSE;
    req->keep_alive = req->version == CG_HTTP_1_1 ? !close : ((conn & CONN_KEEP_ALIVE) && !close);
    req->expect_continue = expect != 0;
    req->upgrade = (conn & CONN_UPGRADE) && up_hdr;
    return (long)len;
}

long cg_http1_parse_head(cg_http1_parser *p, const char *buf, size_t len,
                         const cg_http1_limits *lim, cg_http1_request *req)
{
    if (len < p->scanned) /* a different buffer: start over */
        cg_http1_parser_init(p);
    size_t i = p->scanned;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl)
            break;
        size_t lf = (size_t)(nl - buf);
        int cr = lf > p->line_start && buf[lf - 1] == '\r';
        size_t n = lf - p->line_start - (size_t)cr;
        long r = check_line(p, buf[p->line_start], n, lim);
        if (r)
            return r;
        if (!cr)
            return fail(p, CG_HTTP1_BAD_REQUEST, "bare LF as line end");
        i = lf + 1;
        if (n == 0 && p->lines > 0) {
            /* Complete. Reset so the parser is ready for the next head. */
            cg_http1_parser_init(p);
            return parse_complete(p, buf, i, lim, req);
        }
        if (n == 0 && i / 2 > MAX_EMPTY_LINES)
            return fail(p, CG_HTTP1_BAD_REQUEST, "too many empty lines before the request line");
        if (n > 0)
            p->lines++;
        p->line_start = i;
    }
    p->scanned = len;
    size_t part = len - p->line_start;
    if (part > 0) {
        long r = check_line(p, buf[p->line_start], part - (buf[len - 1] == '\r'), lim);
        if (r)
            return r;
    }
    return CG_HTTP1_INCOMPLETE;
}

/* ---- chunked decoder ------------------------------------------------- */

enum {
    S_SIZE0,   /* first hex digit of a chunk size */
    S_SIZE,    /* further hex digits */
    S_BWS,     /* whitespace after the size, before ';' */
    S_EXT,     /* extensions, ignored up to CR */
    S_SIZE_LF, /* LF ending the size line */
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TR_START, /* start of a trailer line, or the final CRLF */
    S_TR_NAME,
    S_TR_VALUE,
    S_TR_LF,
    S_END_LF,
    S_DONE,
    S_ERROR,
};

void cg_http1_chunked_init(cg_http1_chunked *d, const cg_http1_limits *lim)
{
    d->state = S_SIZE0;
    d->remaining = 0;
    d->line_len = 0;
    d->trailers = 0;
    d->lim = *lim;
    d->error = NULL;
}

int cg_http1_chunked_decode(cg_http1_chunked *d, const char *buf, size_t len, size_t *consumed,
                            cg_slice *data)
{
    const char *why;
    size_t i = 0;
    data->base = buf;
    data->len = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        int x;
        switch (d->state) {
        case S_SIZE0:
            if ((x = cg_hexval(c)) < 0) {
                why = c == '\n' ? "bare LF" : "chunk size is not hex digits";
                goto error;
            }
            d->remaining = (unsigned)x;
            d->line_len = 1;
            d->state = S_SIZE;
            break;
        case S_SIZE:
            if ((x = cg_hexval(c)) >= 0) {
                if (++d->line_len > 16 || d->remaining > (unsigned long long)(INT64_MAX - x) / 16) {
                    why = "chunk size overflows";
                    goto error;
                }
                d->remaining = d->remaining * 16 + (unsigned)x;
                break;
            }
            d->line_len = 0;
            if (c == '\r') {
                d->state = S_SIZE_LF;
            } else if (c == ';') {
                d->line_len = 1;
                d->state = S_EXT;
            } else if (c == ' ' || c == '\t') {
                d->line_len = 1;
                d->state = S_BWS;
            } else {
                why = c == '\n' ? "bare LF" : "chunk size is not hex digits";
                goto error;
            }
            break;
        case S_BWS:
            if (++d->line_len > MAX_CHUNK_EXT) {
                why = "chunk extensions too long";
                goto error;
            }
            if (c == ';') {
                d->state = S_EXT;
            } else if (c != ' ' && c != '\t') {
                why = c == '\n' ? "bare LF" : "whitespace after chunk size";
                goto error;
            }
            break;
        case S_EXT:
            if (c == '\r') {
                d->state = S_SIZE_LF;
                break;
            }
            if (++d->line_len > MAX_CHUNK_EXT) {
                why = "chunk extensions too long";
                goto error;
            }
            if (!IS(c, C_VALUE)) {
                why = c == '\n' ? "bare LF" : "control character in chunk extension";
                goto error;
            }
            break;
        case S_SIZE_LF:
            if (c != '\n') {
                why = "bare CR";
                goto error;
            }
            d->line_len = 0;
            if (d->remaining == 0) {
                d->trailers = 0;
                d->state = S_TR_START;
            } else {
                d->state = S_DATA;
            }
            break;
        case S_DATA: {
            size_t n = len - i;
            if (n > d->remaining)
                n = (size_t)d->remaining;
            data->base = buf + i;
            data->len = n;
            d->remaining -= n;
            if (d->remaining == 0)
                d->state = S_DATA_CR;
            *consumed = i + n;
            return CG_CHUNKED_DATA;
        }
        case S_DATA_CR:
            if (c != '\r') {
                why = "chunk data not followed by CRLF";
                goto error;
            }
            d->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (c != '\n') {
                why = "chunk data not followed by CRLF";
                goto error;
            }
            d->state = S_SIZE0;
            break;
        case S_TR_START:
            if (c == '\r') {
                d->state = S_END_LF;
                break;
            }
            if (!IS(c, C_TOKEN)) {
                if (c == ' ' || c == '\t')
                    why = "obs-fold";
                else if (c == ':')
                    why = "empty field name";
                else
                    why = c == '\n' ? "bare LF" : "field name is not a token";
                goto error;
            }
            if (++d->trailers > d->lim.fields) {
                why = "too many trailer fields";
                goto error;
            }
            d->line_len = 1;
            d->state = S_TR_NAME;
            goto check_len;
        case S_TR_NAME:
            if (c == ':') {
                d->state = S_TR_VALUE;
            } else if (!IS(c, C_TOKEN)) {
                if (c == ' ' || c == '\t')
                    why = "whitespace between field name and colon";
                else if (c == '\r' || c == '\n')
                    why = "field line without colon";
                else
                    why = "field name is not a token";
                goto error;
            }
            d->line_len++;
            goto check_len;
        case S_TR_VALUE:
            if (c == '\r') {
                d->state = S_TR_LF;
                break;
            }
            if (!IS(c, C_VALUE)) {
                why = c == '\n' ? "bare LF" : "control character in field value";
                goto error;
            }
            d->line_len++;
            goto check_len;
        case S_TR_LF:
            if (c != '\n') {
                why = "bare CR";
                goto error;
            }
            d->state = S_TR_START;
            break;
        case S_END_LF:
            if (c != '\n') {
                why = "bare CR";
                goto error;
            }
            d->state = S_DONE;
            *consumed = i + 1;
            return CG_CHUNKED_DONE;
        case S_DONE:
            *consumed = 0;
            return CG_CHUNKED_DONE;
        default:
            *consumed = 0;
            return CG_CHUNKED_ERROR;
        }
        continue;
    check_len:
        if (d->line_len > d->lim.field_size) {
            why = "trailer field line too long";
            goto error;
        }
    }
    *consumed = i;
    if (d->state == S_DONE)
        return CG_CHUNKED_DONE;
    if (d->state == S_ERROR)
        return CG_CHUNKED_ERROR;
    return CG_CHUNKED_MORE;
error:
    d->state = S_ERROR;
    d->error = why;
    *consumed = i;
    return CG_CHUNKED_ERROR;
}

/* ---- response helpers ------------------------------------------------ */

const char *cg_http1_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 102:
        return "Processing";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 207:
        return "Multi-Status";
    case 208:
        return "Already Reported";
    case 226:
        return "IM Used";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 418:
        return "I'm a Teapot";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 423:
        return "Locked";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 506:
        return "Variant Also Negotiates";
    case 507:
        return "Insufficient Storage";
    case 508:
        return "Loop Detected";
    case 510:
        return "Not Extended";
    case 511:
        return "Network Authentication Required";
    default:
        return "";
    }
}

int cg_http1_valid_field(const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_len == 0)
        return 0;
    for (size_t i = 0; i < name_len; i++)
        if (!IS(name[i], C_TOKEN))
            return 0;
    size_t i = 0;
    /* Eight bytes at a time while none is a control byte or DEL (a word with
     * HTAB, or with an invalid byte, is judged byte by byte). */
    for (; i + 8 <= value_len; i += 8) {
        uint64_t w = load8(value + i);
        if (has_less(w, 0x20) | has_byte(w, 0x7f))
            break;
    }
    for (; i < value_len; i++)
        if (!IS(value[i], C_VALUE))
            return 0;
    return 1;
}

int cg_http1_has_token(const char *value, size_t len, const char *token)
{
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && value[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (value[a] == ' ' || value[a] == '\t'))
            a++;
        while (b > a && (value[b - 1] == ' ' || value[b - 1] == '\t'))
            b--;
        if (cg_ascii_ieq(value + a, b - a, token))
            return 1;
        i = j + 1;
    }
    return 0;
}

size_t cg_http1_percent_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (in[i] == '%' && i + 2 < len && (hi = cg_hexval((unsigned char)in[i + 1])) >= 0 &&
            (lo = cg_hexval((unsigned char)in[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static inline void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

size_t cg_http1_format_date(long long t, char *out)
{
    static const char wdays[] = "ThuFriSatSunMonTueWed"; /* 1970-01-01 was a Thursday */
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    /* IMF-fixdate has a four-digit year: clamp to 1970-01-01 .. 9999-12-31. */
    if (t < 0)
        t = 0;
    if (t > 253402300799LL)
        t = 253402300799LL;
    long long days = t / 86400;
    unsigned secs = (unsigned)(t % 86400);
    /* Civil date from days since the epoch (proleptic Gregorian calendar). */
    long long z = days + 719468;
    long long era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned mday = doy - (153 * mp + 2) / 5 + 1;
    unsigned mon = mp < 10 ? mp + 3 : mp - 9;
    unsigned year = (unsigned)(yoe + era * 400) + (mon <= 2);
    memcpy(out, wdays + 3 * (days % 7), 3);
    out[3] = ',';
    out[4] = ' ';
    put2(out + 5, mday);
    out[7] = ' ';
    memcpy(out + 8, months + 3 * (mon - 1), 3);
    out[11] = ' ';
    put2(out + 12, year / 100);
    put2(out + 14, year % 100);
    out[16] = ' ';
    put2(out + 17, secs / 3600);
    out[19] = ':';
    put2(out + 20, secs / 60 % 60);
    out[22] = ':';
    put2(out + 23, secs % 60);
    memcpy(out + 25, " GMT", 5); /* with the terminating NUL */
    return 29;
}

/* ---- response head serializer ---------------------------------------- */

static const char digits2[] = "00010203040506070809"
                              "10111213141516171819"
                              "20212223242526272829"
                              "30313233343536373839"
                              "40414243444546474849"
                              "50515253545556575859"
                              "60616263646566676869"
                              "70717273747576777879"
                              "80818283848586878889"
                              "90919293949596979899";

static inline size_t dec_digits(unsigned long long v)
{
    size_t n = 1;
    for (;;) {
        if (v < 10)
            return n;
        if (v < 100)
            return n + 1;
        if (v < 1000)
            return n + 2;
        if (v < 10000)
            return n + 3;
        v /= 10000;
        n += 4;
    }
}

static inline size_t hex_digits(unsigned long long v)
{
    size_t n = 1;
    while (v >>= 4)
        n++;
    return n;
}

/* Writes the decimal digits of v ending right before `end`. */
static inline void put_dec(char *end, unsigned long long v)
{
    while (v >= 100) {
        end -= 2;
        memcpy(end, digits2 + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        end -= 2;
        memcpy(end, digits2 + 2 * v, 2);
    } else {
        *--end = (char)('0' + v);
    }
}

size_t cg_format_uint(char *out, unsigned long long v, unsigned base)
{
    size_t n;
    if (base == 16) {
        n = hex_digits(v);
        for (size_t i = n; i > 0; i--) {
            out[i - 1] = "0123456789abcdef"[v & 15];
            v >>= 4;
        }
    } else {
        n = dec_digits(v);
        put_dec(out + n, v);
    }
    return n;
}

size_t cg_http1_chunk_prefix(char *out, unsigned long long n)
{
    size_t len = cg_format_uint(out, n, 16);
    out[len] = '\r';
    out[len + 1] = '\n';
    return len + 2;
}

#define FRAME_LENGTH_NAME "content-length: "
#define FRAME_CHUNKED_LINE "transfer-encoding: chunked\r\n"
#define CONN_CLOSE_LINE "connection: close\r\n"
#define CONN_KEEP_ALIVE_LINE "connection: keep-alive\r\n"
#define LITLEN(s) (sizeof(s) - 1)

static inline char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static inline char *put_crlf(char *p)
{
    p[0] = '\r';
    p[1] = '\n';
    return p + 2;
}

size_t cg_http1_head_size(const cg_http1_response *r)
{
    /* "HTTP/1.1 " status " " reason CRLF */
    size_t n = 9 + dec_digits((unsigned)r->status) + 1 + strlen(cg_http1_reason(r->status)) + 2;
    if (r->fields)
        n += cg_fields_bytes(r->fields) + 4 * r->fields->n; /* ": " and CRLF each */
    n += r->defaults_len;
    if (r->framing == CG_FRAME_LENGTH)
        n += LITLEN(FRAME_LENGTH_NAME) + dec_digits(r->length) + 2;
    else if (r->framing == CG_FRAME_CHUNKED)
        n += LITLEN(FRAME_CHUNKED_LINE);
    if (r->connection == CG_CONN_CLOSE)
        n += LITLEN(CONN_CLOSE_LINE);
    else if (r->connection == CG_CONN_KEEP_ALIVE)
        n += LITLEN(CONN_KEEP_ALIVE_LINE);
    return n + 2;
}

size_t cg_http1_write_head(char *out, const cg_http1_response *r)
{
    const char *reason = cg_http1_reason(r->status);
    char *p = put(out, "HTTP/1.1 ", 9);
    p += cg_format_uint(p, (unsigned)r->status, 10);
    *p++ = ' ';
    p = put_crlf(put(p, reason, strlen(reason)));
    if (r->fields) {
        size_t pos = 0;
        cg_field f;
        while (cg_fields_next(r->fields, &pos, &f)) {
            p = put(p, f.name, f.name_len);
            *p++ = ':';
            *p++ = ' ';
            p = put_crlf(put(p, f.value, f.value_len));
        }
    }
    if (r->defaults_len)
        p = put(p, r->defaults, r->defaults_len);
    if (r->framing == CG_FRAME_LENGTH) {
        p = put(p, FRAME_LENGTH_NAME, LITLEN(FRAME_LENGTH_NAME));
        p = put_crlf(p + cg_format_uint(p, r->length, 10));
    } else if (r->framing == CG_FRAME_CHUNKED) {
        p = put(p, FRAME_CHUNKED_LINE, LITLEN(FRAME_CHUNKED_LINE));
    }
    if (r->connection == CG_CONN_CLOSE)
        p = put(p, CONN_CLOSE_LINE, LITLEN(CONN_CLOSE_LINE));
    else if (r->connection == CG_CONN_KEEP_ALIVE)
        p = put(p, CONN_KEEP_ALIVE_LINE, LITLEN(CONN_KEEP_ALIVE_LINE));
    p = put_crlf(p);
    return (size_t)(p - out);
}
