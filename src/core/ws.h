/* WebSocket protocol (RFC 6455) and permessage-deflate (RFC 7692): handshake
 * helpers, a server-side frame reader that assembles messages, and frame
 * writing. Pure C plus zlib; no Python. The reader owns its message buffer;
 * slices it returns stay valid until the next cg_ws_read call. */
#ifndef CG_WS_H
#define CG_WS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "slice.h"

enum cg_ws_opcode {
    CG_WS_OP_CONT = 0x0,
    CG_WS_OP_TEXT = 0x1,
    CG_WS_OP_BINARY = 0x2,
    CG_WS_OP_CLOSE = 0x8,
    CG_WS_OP_PING = 0x9,
    CG_WS_OP_PONG = 0xA,
};

/* Close codes used by the server. */
enum {
    CG_WS_CLOSE_NORMAL = 1000,
    CG_WS_CLOSE_GOING_AWAY = 1001,
    CG_WS_CLOSE_PROTOCOL_ERROR = 1002,
    CG_WS_CLOSE_NO_STATUS = 1005, /* reported to the app, never sent */
    CG_WS_CLOSE_ABNORMAL = 1006,  /* reported to the app, never sent */
    CG_WS_CLOSE_INVALID_DATA = 1007,
    CG_WS_CLOSE_TOO_BIG = 1009,
    CG_WS_CLOSE_INTERNAL_ERROR = 1011,
    CG_WS_CLOSE_SERVICE_RESTART = 1012,
};

/* ---- handshake ---------------------------------------------------------- */

/** 1 when `key` (Sec-WebSocket-Key, surrounding whitespace already trimmed)
 * is valid base64 of exactly 16 bytes, else 0. */
int cg_ws_valid_key(const char *key, size_t len);

/** Writes the Sec-WebSocket-Accept value for `key` (base64 of SHA-1 of key +
 * the RFC 6455 GUID) to out, NUL-terminated. Returns 28. */
size_t cg_ws_accept(const char *key, size_t len, char out[29]);

/** SHA-1 of data (exposed for tests). */
void cg_sha1(const void *data, size_t len, unsigned char out[20]);

/* Negotiated permessage-deflate parameters. */
typedef struct cg_ws_deflate_params {
    int enabled;
    int server_no_context_takeover;
    int client_no_context_takeover;
    int server_max_window_bits; /* 8..15; 15 when not negotiated (8 is used as 9 by zlib) */
    int client_max_window_bits; /* 8..15 */
} cg_ws_deflate_params;

/**
 * Chooses permessage-deflate from the client's Sec-WebSocket-Extensions
 * value(s) `offer` (all header values joined with ", "): the first acceptable
 * permessage-deflate offer wins; unknown or malformed parameters make that
 * offer unacceptable (RFC 7692 section 5). On success fills `p` and writes the
 * response extension value ("permessage-deflate; server_no_context_takeover;
 * client_max_window_bits=15" etc.) to out (NUL-terminated) and returns its
 * length; returns 0 when no offer is acceptable (p->enabled = 0), or -1 when
 * out is too small.
 */
int cg_ws_negotiate_deflate(const char *offer, size_t len, cg_ws_deflate_params *p, char *out,
                            size_t outlen);

/* ---- reading (client -> server frames) ---------------------------------- */

enum cg_ws_event_type {
    CG_WS_EV_NONE = 0, /* all input consumed, need more */
    CG_WS_EV_TEXT,     /* a complete text message (valid UTF-8) in ev->data */
    CG_WS_EV_BINARY,   /* a complete binary message in ev->data */
    CG_WS_EV_PING,     /* ev->data: payload to echo in a pong */
    CG_WS_EV_PONG,     /* ev->data: payload */
    CG_WS_EV_CLOSE,    /* ev->code (1005 when the frame had no code), ev->data = reason */
    CG_WS_EV_ERROR,    /* protocol violation: close with ev->code (1002, 1007, 1009) */
};

typedef struct cg_ws_event {
    int type;          /* enum cg_ws_event_type */
    int code;          /* CLOSE / ERROR */
    cg_slice data;     /* valid until the next cg_ws_read or cg_ws_reader_free */
    const char *error; /* ERROR: which rule (static), for logs and tests */
} cg_ws_event;

typedef struct cg_ws_reader cg_ws_reader;

/**
 * A reader for one connection. `max_size`: the largest message accepted
 * (after decompression; larger -> ERROR 1009, detected as soon as the
 * declared or produced size exceeds it, without allocating it). `deflate`:
 * the negotiated parameters (NULL or !enabled: RSV1 is a protocol error).
 * Returns NULL when out of memory.
 */
cg_ws_reader *cg_ws_reader_new(size_t max_size, const cg_ws_deflate_params *deflate);
void cg_ws_reader_free(cg_ws_reader *r);

/**
 * Consumes bytes of buf[0..len) and stops at the first event, setting
 * *consumed. Enforces: client frames masked; RSV bits only as negotiated
 * (RSV1 on the first frame of a compressed message); known opcodes; control
 * frames <= 125 bytes and FIN set; continuation only inside a fragmented
 * message and a new data frame not inside one; 64-bit lengths with the top bit
 * set rejected; text validated as UTF-8 incrementally across fragments (and
 * across the decompressed stream), failing at the first invalid byte (1007);
 * close payload: none, or a valid code (1000-1003, 1007-1014, 3000-4999) with
 * a UTF-8 reason, length 1 is an error. Control frames may arrive between
 * fragments and are returned as their own events. Decompression is streamed
 * and stops as soon as the output exceeds max_size. Work per call is
 * O(consumed bytes + produced bytes). After ERROR the reader must not be used.
 */
int cg_ws_read(cg_ws_reader *r, const char *buf, size_t len, size_t *consumed, cg_ws_event *ev);

/* ---- writing (server -> client frames) ---------------------------------- */

/** Writes an unmasked frame header for a payload of `len` bytes into out
 * (at most 10 bytes). Returns the header length. */
size_t cg_ws_frame_header(unsigned char out[10], int fin, int rsv1, int opcode, uint64_t len);

/** Appends a complete close frame (code and reason, reason truncated to fit
 * 125 bytes on a UTF-8 boundary; code 0 = empty payload) to out. 0 or -1. */
int cg_ws_close_frame(cg_buf *out, int code, const char *reason, size_t reason_len);

typedef struct cg_ws_deflater cg_ws_deflater;

/** A compressor for server messages per the negotiated parameters (uses
 * server_max_window_bits and server_no_context_takeover). NULL on failure. */
cg_ws_deflater *cg_ws_deflater_new(const cg_ws_deflate_params *p);
void cg_ws_deflater_free(cg_ws_deflater *d);

/** Appends one complete message frame to out: header + payload, compressed
 * (RSV1 set) when `d` is non-NULL. Returns 0 or -1 (out of memory or zlib
 * error). */
int cg_ws_write_message(cg_buf *out, cg_ws_deflater *d, int opcode, const char *data, size_t len);

/* ---- UTF-8 -------------------------------------------------------------- */

/* Incremental UTF-8 validation state (0 = at a character boundary). */
typedef struct cg_utf8 {
    uint32_t state;
} cg_utf8;

/** Feeds bytes; returns 1 while valid so far, 0 at the first invalid byte. */
int cg_utf8_feed(cg_utf8 *u, const unsigned char *p, size_t len);
/** 1 when the input so far ends at a character boundary. */
static inline int cg_utf8_complete(const cg_utf8 *u)
{
    return u->state == 0;
}

#endif
