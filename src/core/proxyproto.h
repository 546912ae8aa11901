/* The PROXY protocol (HAProxy's doc/proxy-protocol.txt), versions 1 (a text
 * line) and 2 (binary): the header an L4 balancer sends first on a connection
 * to announce the original client and destination. A pure function over
 * (buf, len): nothing here allocates, and the result does not point into the
 * input. */
#ifndef CG_PROXYPROTO_H
#define CG_PROXYPROTO_H

#include <stddef.h>

#include "proxy.h"

/* The versions accepted, a bitmask; --proxy-protocol's choices (off, v1, v2,
 * any) in that order are these values. */
enum { CG_PP_OFF = 0, CG_PP_V1 = 1, CG_PP_V2 = 2, CG_PP_ANY = 3 };

/* cg_pp_parse's results other than a header's length. */
enum { CG_PP_INCOMPLETE = -1, CG_PP_INVALID = -2 };

/* The longest version 1 line, CRLF included. */
#define CG_PP_V1_MAX 107
/* The most bytes of addresses and TLVs a version 2 header may announce. */
#define CG_PP_V2_MAX_BLOCK 8192

enum cg_pp_command {
    CG_PP_LOCAL, /* the sender's own connection (a health check): use the real peer */
    CG_PP_PROXY, /* relayed: the family says whether addresses were announced */
};

enum cg_pp_family {
    CG_PP_UNKNOWN, /* no usable address (v1 UNKNOWN, v2 AF_UNSPEC or UDP): use the real peer */
    CG_PP_TCP4,    /* src and dst are set */
    CG_PP_TCP6,    /* src and dst are set (an IPv4-mapped address as its IPv4 address) */
    CG_PP_UNIX,    /* v2 AF_UNIX: the client was on a Unix socket and has no address */
};

typedef struct cg_pp_result {
    int version;                 /* 1 or 2 */
    int command;                 /* enum cg_pp_command; always CG_PP_PROXY in version 1 */
    int family;                  /* enum cg_pp_family; CG_PP_UNKNOWN for LOCAL */
    cg_proxy_addr src, dst;      /* TCP4 and TCP6 only, else zero */
    unsigned src_port, dst_port; /* TCP4 and TCP6 only, else 0 */
    const char *error;           /* after CG_PP_INVALID: why, a static string */
} cg_pp_result;

/**
 * Parses the PROXY protocol header at the start of buf[0..len), accepting the
 * versions in `accept` (CG_PP_V1 | CG_PP_V2). Returns the header's length
 * (> 0; the bytes after it are the connection's own), CG_PP_INCOMPLETE when
 * more bytes are needed, or CG_PP_INVALID with out->error set. A prefix of an
 * input gives either CG_PP_INCOMPLETE or the input's own result, so a
 * malformed header is refused at the first byte that shows it; version 1's
 * fields are checked once the line's CRLF has arrived (at most
 * CG_PP_V1_MAX bytes). Version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n"
 * with canonical addresses and ports (no leading zeros), single spaces, or
 * "PROXY UNKNOWN" and anything up to CRLF. Version 2: the 12-byte signature,
 * version 2, command LOCAL or PROXY, a known family and protocol, at most
 * CG_PP_V2_MAX_BLOCK bytes of addresses and TLVs; the TLVs after the
 * addresses must be well-formed and are skipped.
 */
int cg_pp_parse(const char *buf, size_t len, unsigned accept, cg_pp_result *out);

#endif
