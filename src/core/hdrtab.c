/* Known header names: lookup by length bucket, then a first/last byte check,
 * then an 8-bytes-at-a-time case-insensitive compare. */
#include "hdrtab.h"

#include <stdint.h>
#include <string.h>

#define N(tok, s) [tok] = CG_SLICE_LIT(s)

const cg_slice cg_hdr_names[CG_HDR__COUNT] = {
    N(CG_HDR_HOST, "host"),
    N(CG_HDR_CONTENT_LENGTH, "content-length"),
    N(CG_HDR_TRANSFER_ENCODING, "transfer-encoding"),
    N(CG_HDR_CONNECTION, "connection"),
    N(CG_HDR_EXPECT, "expect"),
    N(CG_HDR_UPGRADE, "upgrade"),
    N(CG_HDR_ACCEPT, "accept"),
    N(CG_HDR_ACCEPT_CHARSET, "accept-charset"),
    N(CG_HDR_ACCEPT_ENCODING, "accept-encoding"),
    N(CG_HDR_ACCEPT_LANGUAGE, "accept-language"),
    N(CG_HDR_ACCESS_CONTROL_REQUEST_HEADERS, "access-control-request-headers"),
    N(CG_HDR_ACCESS_CONTROL_REQUEST_METHOD, "access-control-request-method"),
    N(CG_HDR_AUTHORIZATION, "authorization"),
    N(CG_HDR_CACHE_CONTROL, "cache-control"),
    N(CG_HDR_CONTENT_ENCODING, "content-encoding"),
    N(CG_HDR_CONTENT_TYPE, "content-type"),
    N(CG_HDR_COOKIE, "cookie"),
    N(CG_HDR_DNT, "dnt"),
    N(CG_HDR_FORWARDED, "forwarded"),
    N(CG_HDR_IF_MATCH, "if-match"),
    N(CG_HDR_IF_MODIFIED_SINCE, "if-modified-since"),
    N(CG_HDR_IF_NONE_MATCH, "if-none-match"),
    N(CG_HDR_IF_RANGE, "if-range"),
    N(CG_HDR_IF_UNMODIFIED_SINCE, "if-unmodified-since"),
    N(CG_HDR_KEEP_ALIVE, "keep-alive"),
    N(CG_HDR_ORIGIN, "origin"),
    N(CG_HDR_PRAGMA, "pragma"),
    N(CG_HDR_PRIORITY, "priority"),
    N(CG_HDR_RANGE, "range"),
    N(CG_HDR_REFERER, "referer"),
    N(CG_HDR_SEC_CH_UA, "sec-ch-ua"),
    N(CG_HDR_SEC_CH_UA_MOBILE, "sec-ch-ua-mobile"),
    N(CG_HDR_SEC_CH_UA_PLATFORM, "sec-ch-ua-platform"),
    N(CG_HDR_SEC_FETCH_DEST, "sec-fetch-dest"),
    N(CG_HDR_SEC_FETCH_MODE, "sec-fetch-mode"),
    N(CG_HDR_SEC_FETCH_SITE, "sec-fetch-site"),
    N(CG_HDR_SEC_FETCH_USER, "sec-fetch-user"),
    N(CG_HDR_SEC_WEBSOCKET_EXTENSIONS, "sec-websocket-extensions"),
    N(CG_HDR_SEC_WEBSOCKET_KEY, "sec-websocket-key"),
    N(CG_HDR_SEC_WEBSOCKET_PROTOCOL, "sec-websocket-protocol"),
    N(CG_HDR_SEC_WEBSOCKET_VERSION, "sec-websocket-version"),
    N(CG_HDR_TE, "te"),
    N(CG_HDR_TRAILER, "trailer"),
    N(CG_HDR_UPGRADE_INSECURE_REQUESTS, "upgrade-insecure-requests"),
    N(CG_HDR_USER_AGENT, "user-agent"),
    N(CG_HDR_VIA, "via"),
    N(CG_HDR_X_FORWARDED_FOR, "x-forwarded-for"),
    N(CG_HDR_X_FORWARDED_HOST, "x-forwarded-host"),
    N(CG_HDR_X_FORWARDED_PROTO, "x-forwarded-proto"),
    N(CG_HDR_X_REAL_IP, "x-real-ip"),
    N(CG_HDR_X_REQUEST_ID, "x-request-id"),
    N(CG_HDR_X_REQUESTED_WITH, "x-requested-with"),
};

#undef N

/* Longest known name ("access-control-request-headers"). */
#define CG_HDR_MAX_LEN 30

/* Tokens plus one, grouped by name length; 0 ends a group (and fills the
 * lengths no known name has). The unit tests check every name is found. */
#define T(tok) ((tok) + 1)
static const unsigned char by_len[CG_HDR_MAX_LEN + 1][7] = {
    [2] = {T(CG_HDR_TE)},
    [3] = {T(CG_HDR_DNT), T(CG_HDR_VIA)},
    [4] = {T(CG_HDR_HOST)},
    [5] = {T(CG_HDR_RANGE)},
    [6] = {T(CG_HDR_ACCEPT), T(CG_HDR_COOKIE), T(CG_HDR_EXPECT), T(CG_HDR_ORIGIN),
           T(CG_HDR_PRAGMA)},
    [7] = {T(CG_HDR_UPGRADE), T(CG_HDR_REFERER), T(CG_HDR_TRAILER)},
    [8] = {T(CG_HDR_IF_MATCH), T(CG_HDR_IF_RANGE), T(CG_HDR_PRIORITY)},
    [9] = {T(CG_HDR_FORWARDED), T(CG_HDR_SEC_CH_UA), T(CG_HDR_X_REAL_IP)},
    [10] = {T(CG_HDR_CONNECTION), T(CG_HDR_USER_AGENT), T(CG_HDR_KEEP_ALIVE)},
    [12] = {T(CG_HDR_CONTENT_TYPE), T(CG_HDR_X_REQUEST_ID)},
    [13] = {T(CG_HDR_AUTHORIZATION), T(CG_HDR_CACHE_CONTROL), T(CG_HDR_IF_NONE_MATCH)},
    [14] = {T(CG_HDR_CONTENT_LENGTH), T(CG_HDR_ACCEPT_CHARSET), T(CG_HDR_SEC_FETCH_DEST),
            T(CG_HDR_SEC_FETCH_MODE), T(CG_HDR_SEC_FETCH_SITE), T(CG_HDR_SEC_FETCH_USER)},
    [15] = {T(CG_HDR_ACCEPT_ENCODING), T(CG_HDR_ACCEPT_LANGUAGE), T(CG_HDR_X_FORWARDED_FOR)},
    [16] = {T(CG_HDR_CONTENT_ENCODING), T(CG_HDR_SEC_CH_UA_MOBILE), T(CG_HDR_X_FORWARDED_HOST),
            T(CG_HDR_X_REQUESTED_WITH)},
    [17] = {T(CG_HDR_TRANSFER_ENCODING), T(CG_HDR_IF_MODIFIED_SINCE), T(CG_HDR_SEC_WEBSOCKET_KEY),
            T(CG_HDR_X_FORWARDED_PROTO)},
    [18] = {T(CG_HDR_SEC_CH_UA_PLATFORM)},
    [19] = {T(CG_HDR_IF_UNMODIFIED_SINCE)},
    [21] = {T(CG_HDR_SEC_WEBSOCKET_VERSION)},
    [22] = {T(CG_HDR_SEC_WEBSOCKET_PROTOCOL)},
    [24] = {T(CG_HDR_SEC_WEBSOCKET_EXTENSIONS)},
    [25] = {T(CG_HDR_UPGRADE_INSECURE_REQUESTS)},
    [29] = {T(CG_HDR_ACCESS_CONTROL_REQUEST_METHOD)},
    [30] = {T(CG_HDR_ACCESS_CONTROL_REQUEST_HEADERS)},
};

static inline unsigned char lower1(unsigned char c)
{
    return (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

static inline uint64_t load8(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* ASCII lower-case of 8 bytes at once; bytes >= 0x80 are left alone. */
static inline uint64_t lower8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t h = w & (0x7f * ones);
    uint64_t ge_a = h + (0x80 - 'A') * ones; /* high bit set when byte >= 'A' */
    uint64_t gt_z = h + (0x7f - 'Z') * ones; /* high bit set when byte > 'Z' */
    uint64_t upper = (ge_a ^ gt_z) & ~w & (0x80 * ones);
    return w | (upper >> 2);
}

/* 1 when s[0..n) equals the lower-case `lc` ignoring ASCII case. */
static inline int ci_equal(const char *s, const char *lc, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (lower8(load8(s + i)) != load8(lc + i))
            return 0;
    if (n >= 8) {
        /* The tail as one overlapping word. */
        return i == n || lower8(load8(s + n - 8)) == load8(lc + n - 8);
    }
    for (; i < n; i++)
        if (lower1((unsigned char)s[i]) != (unsigned char)lc[i])
            return 0;
    return 1;
}

int cg_hdr_lookup(const char *name, size_t len)
{
    if (len < 2 || len > CG_HDR_MAX_LEN)
        return -1;
    unsigned char first = lower1((unsigned char)name[0]);
    unsigned char last = lower1((unsigned char)name[len - 1]);
    const unsigned char *t = by_len[len];
    for (size_t i = 0; i < sizeof by_len[0] && t[i]; i++) {
        const char *lc = cg_hdr_names[t[i] - 1].base;
        if ((unsigned char)lc[0] == first && (unsigned char)lc[len - 1] == last &&
            ci_equal(name, lc, len))
            return t[i] - 1;
    }
    return -1;
}

void cg_ascii_lower(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = lower8(load8(src + i));
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = (char)lower1((unsigned char)src[i]);
}
