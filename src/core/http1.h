/* HTTP/1.1 request-head parser, chunked body decoder and response helpers
 * (RFC 9112, RFC 9110). Pure functions over caller buffers: nothing here
 * allocates, and every slice returned points into the caller's input. */
#ifndef CG_HTTP1_H
#define CG_HTTP1_H

#include <stddef.h>

#include "fields.h"
#include "slice.h"

/* Results. A negative value below -99 is the HTTP status to answer with,
 * negated; the connection must be closed after that answer. */
enum {
    CG_HTTP1_INCOMPLETE = -1,
    CG_HTTP1_BAD_REQUEST = -400,
    CG_HTTP1_URI_TOO_LONG = -414,
    CG_HTTP1_FIELDS_TOO_LARGE = -431,
    CG_HTTP1_VERSION_NOT_SUPPORTED = -505,
};

typedef struct cg_http1_limits {
    size_t request_line; /* longest request line, CRLF excluded (default 8190) */
    size_t field_size;   /* longest field line "name: value", CRLF excluded (8190) */
    size_t fields;       /* most fields in a head or a trailer section (100) */
} cg_http1_limits;

typedef struct cg_http1_header {
    cg_slice name;  /* as received, case preserved */
    cg_slice value; /* leading and trailing whitespace removed */
    int token;      /* enum cg_hdr_token, or -1 */
} cg_http1_header;

enum cg_http1_target_form {
    CG_TARGET_ORIGIN,    /* "/path?query" */
    CG_TARGET_ABSOLUTE,  /* "http://host/path?query": path and query are used */
    CG_TARGET_AUTHORITY, /* "host:port", CONNECT only */
    CG_TARGET_ASTERISK,  /* "*", OPTIONS only */
};

/* The protocol version of a request; the values of HTTP/1.x are its minor
 * version. */
enum cg_http_version { CG_HTTP_1_0 = 0, CG_HTTP_1_1 = 1, CG_HTTP_2 = 2 };

typedef struct cg_http1_request {
    cg_slice method;
    cg_slice target;          /* the request-target exactly as received */
    cg_slice path;            /* raw (undecoded) path, without query; "/" for an absolute-form
                                 target with an empty path (a static string, the one slice
                                 not in the input); the target itself for "*" and
                                 authority-form */
    cg_slice query;           /* after the first '?', without it; empty when none */
    cg_slice authority;       /* absolute-form: the target's host[:port], which also becomes
                                 the Host field's value (RFC 9112 3.2.2); authority-form:
                                 the target; else empty */
    int target_form;          /* enum cg_http1_target_form */
    int version;              /* enum cg_http_version: HTTP/1.0 or 1.1 from this parser */
    cg_http1_header *headers; /* caller-provided, capacity >= limits.fields */
    size_t num_headers;
    /* Derived by the validation pass: */
    long long content_length;     /* -1 when absent */
    unsigned chunked : 1;         /* Transfer-Encoding: chunked */
    unsigned keep_alive : 1;      /* persistent, per version and Connection */
    unsigned expect_continue : 1; /* Expect: 100-continue */
    unsigned upgrade : 1;         /* Connection has the "upgrade" token and Upgrade is present */
} cg_http1_request;

/* Scan state carried between calls while one head arrives in pieces. */
typedef struct cg_http1_parser {
    size_t scanned;    /* bytes already examined */
    size_t line_start; /* offset where the line being examined starts */
    size_t lines;      /* complete lines seen so far */
    const char *error; /* after a rejection: which rule, for logs and tests (static) */
} cg_http1_parser;

/** Prepares `p` for a new request head. */
void cg_http1_parser_init(cg_http1_parser *p);

/**
 * Parses a request head at buf[0..len). Call again with the same `p` whenever
 * more bytes have been appended to the same (possibly moved) buffer; only new
 * bytes are examined until the head is complete, then the head is parsed and
 * validated once. Empty lines (CRLF) before the request line are skipped.
 *
 * Returns the number of bytes of the head (through the empty line ending it),
 * CG_HTTP1_INCOMPLETE, or a negated status (400, 414, 431, 505) with
 * p->error naming the rule. On success `req` is filled; its slices point
 * into `buf`. `req->headers` must be set by the caller before the call.
 * After a success `p` is ready for the next head (as if initialised); a call
 * with `len` below the bytes already scanned also starts over.
 */
long cg_http1_parse_head(cg_http1_parser *p, const char *buf, size_t len,
                         const cg_http1_limits *lim, cg_http1_request *req);

/* Chunked transfer-coding decoder (RFC 9112 section 7.1). */
enum {
    CG_CHUNKED_ERROR = -400, /* malformed: answer 400 and close */
    CG_CHUNKED_MORE = 0,     /* all input consumed, no data in it, need more */
    CG_CHUNKED_DATA = 1,     /* *data holds body bytes */
    CG_CHUNKED_DONE = 2,     /* last chunk and trailer section complete */
};

typedef struct cg_http1_chunked {
    int state;
    unsigned long long remaining; /* bytes left in the current chunk */
    size_t line_len;              /* bytes of the size/extension or trailer line so far */
    size_t trailers;              /* trailer fields seen */
    cg_http1_limits lim;
    const char *error; /* after CG_CHUNKED_ERROR: which rule (static) */
} cg_http1_chunked;

/** Prepares `d` for a new chunked body; the limits bound trailer lines. */
void cg_http1_chunked_init(cg_http1_chunked *d, const cg_http1_limits *lim);

/**
 * Decodes from buf[0..len). Sets *consumed to the bytes used. With
 * CG_CHUNKED_DATA, *data is a slice of buf holding body bytes and *consumed
 * ends right after them; call again with the rest. Chunk extensions are
 * ignored (at most 4 KiB per chunk), trailers are read and discarded.
 * CG_CHUNKED_DONE leaves bytes after the body unconsumed.
 */
int cg_http1_chunked_decode(cg_http1_chunked *d, const char *buf, size_t len, size_t *consumed,
                            cg_slice *data);

/** Reason phrase of a status code ("OK", "Not Found"), or "" when unknown. */
const char *cg_http1_reason(int status);

/** 1 when `name` is a non-empty token and `value` only has HTAB, SP, VCHAR
 * and obs-text (no control byte: 0x00-0x1F except HTAB, 0x7F); else 0. */
int cg_http1_valid_field(const char *name, size_t name_len, const char *value, size_t value_len);

/** 1 when the header value contains the lower-case `token` as one
 * comma-separated element (ASCII case-insensitive, surrounding whitespace
 * ignored), e.g. "close" in "keep-alive, Close". */
int cg_http1_has_token(const char *value, size_t len, const char *token);

/** Percent-decodes in[0..len) into out (capacity >= len); an invalid escape is
 * copied unchanged. Returns the decoded length. `out` may equal `in`. */
size_t cg_http1_percent_decode(const char *in, size_t len, char *out);

/** Formats the IMF-fixdate of `t` (seconds since the epoch) into out[29+1]:
 * "Sun, 06 Nov 1994 08:49:37 GMT". Returns 29. */
size_t cg_http1_format_date(long long t, char *out);

/* ---- response head serializer ---------------------------------------- */

/* The framing line the head carries. */
enum cg_http1_framing {
    CG_FRAME_NONE,    /* no framing line: the body is empty by rule (HEAD, 204, 304) or the
                         app's content-length is among the fields already */
    CG_FRAME_LENGTH,  /* "content-length: <length>" added */
    CG_FRAME_CHUNKED, /* "transfer-encoding: chunked" added */
    CG_FRAME_CLOSE,   /* none added: the body ends when the connection closes (HTTP/1.0) */
};

/* The connection line the head carries. */
enum cg_http1_conn_hdr { CG_CONN_NONE, CG_CONN_CLOSE, CG_CONN_KEEP_ALIVE };

/* What a response head says. Nothing here is validated: the fields and the
 * defaults are written exactly as given. */
typedef struct cg_http1_response {
    int status;              /* 100..599; the reason phrase is cg_http1_reason(status) */
    const cg_fields *fields; /* the app's headers, in order, written as given ("name: value");
                                NULL for none */
    const char *defaults;    /* prebuilt lines "name: value\r\n" (server, date, extra headers),
                                may be NULL */
    size_t defaults_len;
    int framing;               /* enum cg_http1_framing */
    unsigned long long length; /* CG_FRAME_LENGTH: the content-length value */
    int connection;            /* enum cg_http1_conn_hdr */
} cg_http1_response;

/** Exact size of the head cg_http1_write_head writes. */
size_t cg_http1_head_size(const cg_http1_response *r);

/**
 * Writes the head at out (capacity >= cg_http1_head_size(r)); returns the
 * bytes written. Layout: "HTTP/1.1 <status> <reason>\r\n" (an unknown status
 * has an empty reason), each field "name: value\r\n" in order, the defaults
 * as given, the framing line (content-length or transfer-encoding), the
 * connection line, then "\r\n".
 */
size_t cg_http1_write_head(char *out, const cg_http1_response *r);

/** Longest chunk-size line: 16 hex digits and CRLF. */
#define CG_HTTP1_CHUNK_PREFIX_MAX 18

/** Writes a chunk-size line "<hex>\r\n" for a chunk of n bytes (n > 0) at out
 * (capacity >= CG_HTTP1_CHUNK_PREFIX_MAX); returns its length. */
size_t cg_http1_chunk_prefix(char *out, unsigned long long n);

/** Digits of v in `base` (10, or 16 in lower case) written at out (capacity
 * >= 20), no terminating NUL; returns the length. Hot-path replacement for
 * snprintf. */
size_t cg_format_uint(char *out, unsigned long long v, unsigned base);

#endif
