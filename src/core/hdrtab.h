/* Known request/response header names mapped to small integer tokens, so the
 * bindings can reuse one pre-built lower-case `bytes` per known name and the
 * parser can recognise the fields that steer framing without string compares. */
#ifndef CG_HDRTAB_H
#define CG_HDRTAB_H

#include <stddef.h>

#include "slice.h"

/* The first six tokens steer the parser's validation; their values are fixed.
 * The rest are common names for which the bindings keep cached bytes. */
enum cg_hdr_token {
    CG_HDR_HOST = 0,
    CG_HDR_CONTENT_LENGTH,
    CG_HDR_TRANSFER_ENCODING,
    CG_HDR_CONNECTION,
    CG_HDR_EXPECT,
    CG_HDR_UPGRADE,
    CG_HDR_ACCEPT,
    CG_HDR_ACCEPT_CHARSET,
    CG_HDR_ACCEPT_ENCODING,
    CG_HDR_ACCEPT_LANGUAGE,
    CG_HDR_ACCESS_CONTROL_REQUEST_HEADERS,
    CG_HDR_ACCESS_CONTROL_REQUEST_METHOD,
    CG_HDR_AUTHORIZATION,
    CG_HDR_CACHE_CONTROL,
    CG_HDR_CONTENT_ENCODING,
    CG_HDR_CONTENT_TYPE,
    CG_HDR_COOKIE,
    CG_HDR_DNT,
    CG_HDR_FORWARDED,
    CG_HDR_IF_MATCH,
    CG_HDR_IF_MODIFIED_SINCE,
    CG_HDR_IF_NONE_MATCH,
    CG_HDR_IF_RANGE,
    CG_HDR_IF_UNMODIFIED_SINCE,
    CG_HDR_KEEP_ALIVE,
    CG_HDR_ORIGIN,
    CG_HDR_PRAGMA,
    CG_HDR_PRIORITY,
    CG_HDR_RANGE,
    CG_HDR_REFERER,
    CG_HDR_SEC_CH_UA,
    CG_HDR_SEC_CH_UA_MOBILE,
    CG_HDR_SEC_CH_UA_PLATFORM,
    CG_HDR_SEC_FETCH_DEST,
    CG_HDR_SEC_FETCH_MODE,
    CG_HDR_SEC_FETCH_SITE,
    CG_HDR_SEC_FETCH_USER,
    CG_HDR_SEC_WEBSOCKET_EXTENSIONS,
    CG_HDR_SEC_WEBSOCKET_KEY,
    CG_HDR_SEC_WEBSOCKET_PROTOCOL,
    CG_HDR_SEC_WEBSOCKET_VERSION,
    CG_HDR_TE,
    CG_HDR_TRAILER,
    CG_HDR_UPGRADE_INSECURE_REQUESTS,
    CG_HDR_USER_AGENT,
    CG_HDR_VIA,
    CG_HDR_X_FORWARDED_FOR,
    CG_HDR_X_FORWARDED_HOST,
    CG_HDR_X_FORWARDED_PROTO,
    CG_HDR_X_REAL_IP,
    CG_HDR_X_REQUEST_ID,
    CG_HDR_X_REQUESTED_WITH,
    CG_HDR__COUNT
};

/** Lower-case canonical name of each token, indexed by token. */
extern const cg_slice cg_hdr_names[CG_HDR__COUNT];

/** Token of a header name (ASCII case-insensitive), or -1 when unknown. */
int cg_hdr_lookup(const char *name, size_t len);

/** Writes the ASCII lower-case form of src[0..n) to dst (may alias src). */
void cg_ascii_lower(char *dst, const char *src, size_t n);

#endif
