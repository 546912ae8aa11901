/* Trusted proxies: the --forwarded-allow-ips list (addresses, CIDR networks,
 * "*", "unix:"), address matching, and the client and scheme a trusted proxy
 * reports in X-Forwarded-For / X-Forwarded-Proto, with the semantics of
 * uvicorn's ProxyHeadersMiddleware. Pure functions over text; nothing here
 * allocates except cg_proxy_trust_parse. */
#ifndef CG_PROXY_H
#define CG_PROXY_H

#include <stddef.h>

#include "http1.h"
#include "slice.h"

/* An IPv4 (family 4, bytes[0..4)) or IPv6 (family 6) address. An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d) is stored as the IPv4 address it maps, so a
 * dual-stack socket's peers match IPv4 entries. */
typedef struct cg_proxy_addr {
    int family;
    unsigned char bytes[16];
} cg_proxy_addr;

typedef struct cg_proxy_net {
    cg_proxy_addr addr; /* host bits zero */
    unsigned prefix;    /* 0..32 or 0..128 */
} cg_proxy_net;

/* The parsed list. All zero trusts nothing. */
typedef struct cg_proxy_trust {
    int all;            /* "*": every peer and every hop */
    int unix_peers;     /* "unix:": peers on a Unix socket (they have no address) */
    cg_proxy_net *nets; /* owned (malloc); single addresses are /32 or /128 */
    size_t n;
} cg_proxy_trust;

/* What the trusted proxy's headers say. */
typedef struct cg_proxy_forwarded {
    int has_client; /* X-Forwarded-For gave a client: host and port are set */
    cg_slice host;  /* into the header value: an address or whatever the proxy wrote */
    unsigned port;  /* 0 when the entry had none */
    int scheme;     /* enum cg_proxy_scheme */
} cg_proxy_forwarded;

enum cg_proxy_scheme { CG_PROXY_SCHEME_NONE, CG_PROXY_SCHEME_HTTP, CG_PROXY_SCHEME_HTTPS };

/** Parses an IPv4 or IPv6 address (an IPv6 zone, "%eth0", is ignored).
 * Returns 0, or -1 when `text` is not an address. */
int cg_proxy_parse_addr(const char *text, size_t len, cg_proxy_addr *out);

/** Sets `out` from an address in network byte order: 4 bytes (family 4) or
 * 16 (family 6), an IPv4-mapped IPv6 address stored as its IPv4 address. */
void cg_proxy_addr_set(cg_proxy_addr *out, int family, const unsigned char *bytes);

/* Room for any address as text, NUL included (INET6_ADDRSTRLEN). */
#define CG_PROXY_ADDR_TEXT 46

/** Writes `a` as text ("10.0.0.1", "2001:db8::1") into buf, NUL-terminated;
 * `size` must be at least CG_PROXY_ADDR_TEXT. Returns the text's length. */
size_t cg_proxy_addr_format(const cg_proxy_addr *a, char *buf, size_t size);

enum {
    CG_PROXY_BAD_ENTRY = -1, /* neither "*", "unix:", an address nor a network */
    CG_PROXY_HOST_BITS = -2, /* a network with bits set after its prefix */
    CG_PROXY_NO_MEMORY = -3,
};

/** Parses a comma-separated --forwarded-allow-ips list into `t` (entries
 * trimmed, empty ones skipped): "*", "unix:", an address, or a network as
 * ADDRESS/PREFIX (or IPv4 ADDRESS/NETMASK) without host bits. Returns 0, or a
 * negative CG_PROXY_* code with `t` zeroed and *bad the offending entry
 * (trimmed, pointing into `list`). */
int cg_proxy_trust_parse(cg_proxy_trust *t, const char *list, cg_slice *bad);

/** What a CG_PROXY_* code says about an entry: "is not an IP address or
 * network", "has host bits set", "out of memory". */
const char *cg_proxy_strerror(int code);

/** Frees what cg_proxy_trust_parse allocated and zeroes `t`. */
void cg_proxy_trust_free(cg_proxy_trust *t);

/** 1 when `a` lies in one of the trusted networks (or "*" was given). */
int cg_proxy_trusts_addr(const cg_proxy_trust *t, const cg_proxy_addr *a);

/** 1 when the text host (an address, as a peer or an X-Forwarded-For entry
 * gives it) is trusted; text that is no address is trusted only under "*". */
int cg_proxy_trusts_host(const cg_proxy_trust *t, const char *host, size_t len);

/**
 * Reads X-Forwarded-For and X-Forwarded-Proto among the `n` parsed headers of a
 * request that came from a trusted proxy. Every X-Forwarded-For line is one
 * part of a single list (RFC 9110 field combination, in the order received);
 * walking it from the right, the first entry whose host is not trusted is the
 * client, and when every entry is trusted the left-most one is. An entry is
 * "host", "host:port" (IPv4) or "[host]:port" (IPv6). The last X-Forwarded-Proto
 * line decides the scheme: "http"/"ws" or "https"/"wss" (any case), anything
 * else none. Returns 1 when either header gave something, else 0; costs one
 * pass over the header tokens when neither is present.
 */
int cg_proxy_read_headers(const cg_proxy_trust *t, const cg_http1_header *headers, size_t n,
                          cg_proxy_forwarded *out);

#endif
