/* An HTTP/2 server connection (RFC 9113) on nghttp2, without Python.
 *
 * Bytes in (cg_h2_recv) become events for the layer above (cg_h2_events):
 * a request head per stream, already in the same neutral form the HTTP/1
 * parser produces (pseudo-headers checked by nghttp2, :authority as the
 * first host field, cookie fields joined), its body, its end, the stream's
 * close. Responses go back through cg_h2_submit_head/cg_h2_write; frames
 * come out through cg_h2_send. Request bodies are flow-controlled by the
 * reader: the window reopens only as the layer above reports the bytes its
 * app took (cg_h2_consume).
 *
 * Abuse is bounded here, whatever nghttp2's version: a stream whose head
 * exceeds the header-list or field limits is answered 431; "glitches"
 * (streams the client resets before their response completes, refused
 * streams, invalid frames, empty DATA frames) are counted in a token bucket
 * and the connection ends with ENHANCE_YOUR_CALM when it runs dry. */
#ifndef CG_H2_H
#define CG_H2_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cg_build.h"
#include "fields.h"
#include "http1.h"

typedef struct cg_h2 cg_h2;

typedef struct cg_h2_config {
    uint32_t max_concurrent_streams;      /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t max_header_list_size;        /* SETTINGS_MAX_HEADER_LIST_SIZE, enforced */
    uint32_t initial_window_size;         /* SETTINGS_INITIAL_WINDOW_SIZE (request bodies) */
    uint32_t connection_window_size;      /* the connection's receive window */
    unsigned enable_connect_protocol : 1; /* RFC 8441: WebSockets over HTTP/2 */
    uint32_t glitch_burst;                /* glitches allowed at once */
    uint32_t glitch_rate;                 /* and then per second */
} cg_h2_config;

/** The defaults: 100 streams, 64 KiB header lists, 256 KiB stream windows,
 * 1 MiB connection window, 1000 glitches then 330 a second. */
void cg_h2_config_default(cg_h2_config *cfg);

/* What a request head carries beyond cg_http1_request. */
typedef struct cg_h2_request {
    cg_http1_request head;    /* version CG_HTTP_2; slices valid during on_request */
    cg_slice protocol;        /* :protocol of an extended CONNECT (RFC 8441), else empty */
    unsigned end_stream : 1;  /* no body follows (no on_body_end comes) */
    unsigned te_trailers : 1; /* te: trailers: the client accepts trailers */
} cg_h2_request;

/* Events for the layer above. `ctx` is the one given to cg_h2_new; `stream`
 * the pointer on_request returned for that stream. No event is delivered
 * for a stream after on_close. Events arrive during cg_h2_recv, cg_h2_send
 * and cg_h2_free; the layer above may submit frames from them. */
typedef struct cg_h2_events {
    /** A request head on stream `id`. Returns the stream's pointer, or NULL
     * to refuse it (RST_STREAM REFUSED_STREAM, counted as a glitch). The
     * stream may be answered from inside this call. */
    void *(*on_request)(void *ctx, int32_t id, const cg_h2_request *req);
    /** Body bytes of a stream (valid during the call). */
    void (*on_body)(void *ctx, void *stream, const char *data, size_t len);
    /** The request body is complete (END_STREAM). */
    void (*on_body_end)(void *ctx, void *stream);
    /** Output queued for the stream fell to `queued` bytes (send progress). */
    void (*on_drained)(void *ctx, void *stream, size_t queued);
    /** The stream is closed: `error_code` 0 after a complete exchange, else
     * the RST_STREAM (or GOAWAY) code; on the connection's end, CANCEL.
     * `unsent`: body bytes queued for it that were never framed (dropped). */
    void (*on_close)(void *ctx, void *stream, uint32_t error_code, size_t unsent);
    /** Optional (NULL: none): a request head over a limit was answered here
     * with `status` (431, 414); the stream never reaches on_request. */
    void (*on_refused)(void *ctx, int status);
    /** The session keeps the bytes of `owner` (see cg_h2_write) until the
     * matching release. Both may be NULL when no write passes an owner. */
    void (*retain)(void *ctx, void *owner);
    void (*release)(void *ctx, void *owner);
} cg_h2_events;

/* HTTP/2 error codes (RFC 9113 section 7) used by callers. */
enum {
    CG_H2_NO_ERROR = 0x0,
    CG_H2_PROTOCOL_ERROR = 0x1,
    CG_H2_INTERNAL_ERROR = 0x2,
    CG_H2_REFUSED_STREAM = 0x7,
    CG_H2_CANCEL = 0x8,
    CG_H2_ENHANCE_YOUR_CALM = 0xb,
};

/* cg_h2_submit_head flags. */
enum {
    CG_H2_END_STREAM = 1, /* no body follows the head */
    CG_H2_TRAILERS = 2,   /* the body ends with trailers (cg_h2_trailers) */
};

/* The preface every HTTP/2 client sends first (RFC 9113 section 3.4). */
#define CG_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define CG_H2_PREFACE_LEN 24

/** 1 when buf[0..len) is the whole preface or all of it so far (more bytes
 * may complete it), 0 when it cannot be the preface. */
int cg_h2_preface_prefix(const char *buf, size_t len);

#if CG_HAVE_NGHTTP2

/** A server session; its SETTINGS are queued. `lim` bounds header fields as
 * for HTTP/1 (count and size of one field). NULL when memory is short. */
cg_h2 *cg_h2_new(const cg_h2_config *cfg, const cg_http1_limits *lim, const cg_h2_events *ev,
                 void *ctx);
/** Closes every open stream (on_close with CANCEL) and frees the session. */
void cg_h2_free(cg_h2 *h);

/** Processes received bytes. Returns 0, or -1 when the connection must end
 * (the GOAWAY saying why is queued: send it, then close). A connection error
 * nghttp2 answers itself (a malformed frame) returns 0: its GOAWAY is queued
 * all the same, and cg_h2_done turns 1 once it is sent. */
int cg_h2_recv(cg_h2 *h, const char *data, size_t len);
/** Appends the frames ready to go to `out` (at most about `max` bytes, so a
 * slow reader bounds what is buffered). 0, or -1 when the session failed. */
int cg_h2_send(cg_h2 *h, cg_buf *out, size_t max);
/** 1 while frames wait to be sent. */
int cg_h2_want_write(const cg_h2 *h);
/** 1 when the session is over: GOAWAY exchanged or a fatal error, and
 * nothing left to send. */
int cg_h2_done(const cg_h2 *h);

/** Sends a response head (or, with a 1xx status, an interim head) on a
 * stream: `fields` (the app's, validated; connection-specific ones are
 * dropped, names lowercased) then `lines`, "name: value\r\n" lines of the
 * server's own. flags: CG_H2_*. 0, or -1 (the stream is gone or memory is
 * short). */
int cg_h2_submit_head(cg_h2 *h, int32_t id, int status, const cg_fields *fields, const char *lines,
                      size_t lines_len, unsigned flags);
/* Writes of at least this many bytes with an owner are not copied. */
#define CG_H2_BORROW_MIN 4096

/** Queues body bytes; `end`: the body is complete. 0 or -1. Bytes are
 * copied, unless `owner` is given and there are at least CG_H2_BORROW_MIN
 * of them: then the session points at them, retains `owner` through the
 * events and releases it once they are framed or dropped, and the caller
 * leaves them unchanged until then. */
int cg_h2_write(cg_h2 *h, int32_t id, const char *data, size_t len, void *owner, int end);
/** The trailers ending a body sent with CG_H2_TRAILERS. 0 or -1. */
int cg_h2_trailers(cg_h2 *h, int32_t id, const cg_fields *fields);
/** Body bytes queued on the stream and not yet framed. */
size_t cg_h2_queued(const cg_h2 *h, int32_t id);
/** Resets a stream with `error_code`. */
void cg_h2_reset(cg_h2 *h, int32_t id, uint32_t error_code);
/** `n` body bytes of the stream were taken by the app: its window and the
 * connection's reopen by that much. */
void cg_h2_consume(cg_h2 *h, int32_t id, size_t n);
/** The server stops: streams the layer above refuses from now on (on_request
 * returning NULL) are not glitches. */
void cg_h2_drain(cg_h2 *h);
/** Graceful end: GOAWAY (NO_ERROR) naming the last stream processed; open
 * streams finish; no new ones start, even before the GOAWAY is sent. */
void cg_h2_goaway(cg_h2 *h);
/** Ends the connection now with GOAWAY `error_code`. */
void cg_h2_terminate(cg_h2 *h, uint32_t error_code);
/** The connection is idle: memory kept for the next request is given back
 * (the frame buffer's pages, the scratch of the last head). */
void cg_h2_shrink(cg_h2 *h);
/** Streams open (a request head received, not closed). */
size_t cg_h2_open_streams(const cg_h2 *h);
/** 1 once the connection ended with an error (a GOAWAY saying so is queued). */
int cg_h2_failed(const cg_h2 *h);
/** After cg_h2_recv returned -1: why, for a debug line (static). */
const char *cg_h2_error(const cg_h2 *h);

#endif
#endif
