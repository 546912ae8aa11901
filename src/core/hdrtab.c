/* Known header names: lookup by length bucket, then a first/last byte check,
 * then an 8-bytes-at-a-time case-insensitive compare. */
#include "hdrtab.h"

#include <stdint.h>
#include <string.h>

#include "ascii.h"

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

/* Perfect hash of the known names: HASH() of each lower-case name is unique,
 * and slot_of[HASH] holds its token plus one (0: no name). The unit tests
 * check every name is found; adding a name may need new shift amounts. */
#define HASH(len, c0, cl, cl2)                                                                     \
    (((len) + ((unsigned)(c0) << 2) + ((unsigned)(cl) << 7) + (cl2)) & 255)
#define T(tok) ((tok) + 1)
static const unsigned char slot_of[256] = {
    [0] = T(CG_HDR_AUTHORIZATION),
    [1] = T(CG_HDR_DNT),
    [5] = T(CG_HDR_CONNECTION),
    [6] = T(CG_HDR_FORWARDED),
    [8] = T(CG_HDR_CACHE_CONTROL),
    [14] = T(CG_HDR_CONTENT_LENGTH),
    [15] = T(CG_HDR_IF_MATCH),
    [16] = T(CG_HDR_ACCESS_CONTROL_REQUEST_METHOD),
    [20] = T(CG_HDR_IF_NONE_MATCH),
    [23] = T(CG_HDR_HOST),
    [43] = T(CG_HDR_ORIGIN),
    [52] = T(CG_HDR_REFERER),
    [60] = T(CG_HDR_TRAILER),
    [63] = T(CG_HDR_SEC_FETCH_USER),
    [76] = T(CG_HDR_USER_AGENT),
    [77] = T(CG_HDR_SEC_FETCH_DEST),
    [80] = T(CG_HDR_SEC_WEBSOCKET_VERSION),
    [81] = T(CG_HDR_SEC_WEBSOCKET_PROTOCOL),
    [82] = T(CG_HDR_X_REAL_IP),
    [85] = T(CG_HDR_X_REQUEST_ID),
    [94] = T(CG_HDR_X_FORWARDED_FOR),
    [99] = T(CG_HDR_X_FORWARDED_HOST),
    [100] = T(CG_HDR_X_REQUESTED_WITH),
    [122] = T(CG_HDR_ACCEPT_LANGUAGE),
    [123] = T(CG_HDR_COOKIE),
    [129] = T(CG_HDR_ACCEPT_ENCODING),
    [136] = T(CG_HDR_CONTENT_TYPE),
    [138] = T(CG_HDR_CONTENT_ENCODING),
    [147] = T(CG_HDR_IF_RANGE),
    [148] = T(CG_HDR_ACCESS_CONTROL_REQUEST_HEADERS),
    [152] = T(CG_HDR_IF_MODIFIED_SINCE),
    [154] = T(CG_HDR_IF_UNMODIFIED_SINCE),
    [172] = T(CG_HDR_KEEP_ALIVE),
    [179] = T(CG_HDR_PRAGMA),
    [180] = T(CG_HDR_RANGE),
    [188] = T(CG_HDR_PRIORITY),
    [190] = T(CG_HDR_SEC_FETCH_MODE),
    [191] = T(CG_HDR_UPGRADE),
    [194] = T(CG_HDR_SEC_WEBSOCKET_KEY),
    [196] = T(CG_HDR_VIA),
    [198] = T(CG_HDR_TE),
    [200] = T(CG_HDR_SEC_CH_UA_MOBILE),
    [202] = T(CG_HDR_SEC_CH_UA),
    [206] = T(CG_HDR_SEC_FETCH_SITE),
    [207] = T(CG_HDR_TRANSFER_ENCODING),
    [208] = T(CG_HDR_SEC_CH_UA_PLATFORM),
    [210] = T(CG_HDR_SEC_WEBSOCKET_EXTENSIONS),
    [225] = T(CG_HDR_UPGRADE_INSECURE_REQUESTS),
    [229] = T(CG_HDR_X_FORWARDED_PROTO),
    [247] = T(CG_HDR_ACCEPT_CHARSET),
    [250] = T(CG_HDR_ACCEPT),
    [253] = T(CG_HDR_EXPECT),
};

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

static inline uint32_t load4(const char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* The same for 4 bytes. */
static inline uint32_t lower4(uint32_t w)
{
    const uint32_t ones = 0x01010101u;
    uint32_t h = w & (0x7f * ones);
    uint32_t upper = ((h + (0x80 - 'A') * ones) ^ (h + (0x7f - 'Z') * ones)) & ~w & (0x80 * ones);
    return w | (upper >> 2);
}

/* 1 when s[0..n) equals the lower-case `lc` ignoring ASCII case; whole words,
 * the tail as one overlapping word. */
static inline int ci_equal(const char *s, const char *lc, size_t n)
{
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8)
            if (lower8(load8(s + i)) != load8(lc + i))
                return 0;
        return lower8(load8(s + n - 8)) == load8(lc + n - 8);
    }
    if (n >= 4)
        return lower4(load4(s)) == load4(lc) && lower4(load4(s + n - 4)) == load4(lc + n - 4);
    for (size_t i = 0; i < n; i++)
        if (cg_ascii_lower1((unsigned char)s[i]) != (unsigned char)lc[i])
            return 0;
    return 1;
}

int cg_hdr_lookup(const char *name, size_t len)
{
    if (len < 2 || len > CG_HDR_MAX_LEN)
        return -1;
    /* Known names are lower-case letters and '-', on which | 0x20 is the
     * identity; other bytes may collide, and the compare below sorts that out. */
    unsigned char c0 = (unsigned char)name[0] | 0x20;
    unsigned char cl = (unsigned char)name[len - 1] | 0x20;
    unsigned char cl2 = (unsigned char)name[len - 2] | 0x20;
    unsigned slot = slot_of[HASH(len, c0, cl, cl2)];
    if (!slot)
        return -1;
    const cg_slice *s = &cg_hdr_names[slot - 1];
    if (s->len != len || !ci_equal(name, s->base, len))
        return -1;
    return (int)slot - 1;
}

void cg_ascii_lower(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = lower8(load8(src + i));
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = (char)cg_ascii_lower1((unsigned char)src[i]);
}
