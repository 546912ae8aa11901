/* The seam between an ASGI cycle and the protocol carrying it: one request
 * and its response on HTTP/1.1 (h1.c), one stream on HTTP/2. The ASGI code
 * (asgi_http.c, asgi_ws.c) reads the request's facts from cg_stream_info and
 * writes only through cg_stream_ops: it never formats wire bytes and never
 * touches a connection. */
#ifndef CASGI_STREAM_H
#define CASGI_STREAM_H

#include "casgi.h"

#include "fields.h"

typedef struct cg_stream cg_stream;

/* Lines of its own the server adds to a response head (cg_resp_head.defaults),
 * each as configured (--no-server-header, --no-date-header, --header). */
enum {
    CG_HEAD_SERVER = 1, /* server: casgi (the app set no server header) */
    CG_HEAD_DATE = 2,   /* date (the app set no date header) */
    CG_HEAD_EXTRA = 4,  /* the --header lines */
};

/* A response head in protocol-neutral form. */
typedef struct cg_resp_head {
    int status;
    const cg_fields *fields; /* validated, in the app's order, without transfer-encoding and
                              * connection; content-length among them when length >= 0 */
    unsigned defaults;       /* CG_HEAD_* */
    long long length;        /* the app's content-length, or -1 */
    unsigned no_body : 1;    /* a HEAD request, 204 or 304: no body on the wire */
    unsigned chunked : 1;    /* the app asked for transfer-encoding: chunked */
    unsigned close : 1;      /* the app asked for connection: close */
    unsigned upgrade : 1;    /* 101 to a WebSocket: the head as is, then the new protocol */
    unsigned trailers : 1;   /* the body ends with trailers (send_trailers), where offered */
} cg_resp_head;

typedef struct cg_stream_ops {
    /** Sends the response head when `head` is not NULL, then the body bytes
     * data[0..len); `obj`, when not NULL, is a bytes-like object holding
     * exactly those bytes, which may be written without a copy; `more`: more
     * body follows. The protocol frames the body. 0, or -1 with an exception. */
    int (*send)(cg_stream *s, const cg_resp_head *head, const char *data, size_t len, PyObject *obj,
                int more);
    /** Sends an interim response (100 Continue; 103 Early Hints with their
     * link fields), before the head. 0 or -1. */
    int (*send_informational)(cg_stream *s, int status, const cg_fields *fields);
    /** Sends the trailers ending a body whose head had `trailers` (after its
     * last send). 0 or -1. */
    int (*send_trailers)(cg_stream *s, const cg_fields *fields);
    /** Nothing of a response was sent: answers `status` with its reason as
     * the body and ends the stream (on HTTP/1.1, the connection). */
    void (*fail)(cg_stream *s, int status);
    /** The response cannot be completed: ends the stream with an error that
     * no client takes for a complete response (HTTP/1.1: a reset). */
    void (*abort)(cg_stream *s);
    /** The response is complete. `reusable` 0: the connection must not carry
     * another request. The stream is released: the cycle is detached. */
    void (*finish)(cg_stream *s, int reusable);
    /** Ends the stream after what was sent (a WebSocket's close). */
    void (*close)(cg_stream *s);
    /** 1 while writing is paused: send() returns an awaitable of poll_drain. */
    int (*write_blocked)(cg_stream *s);
    /** Polls for the end of write backpressure (a cg_poll_fn body). */
    PyObject *(*poll_drain)(cg_stream *s, PyObject **fut);
    /** The app took input: reading may resume, input that waited is fed. */
    void (*consumed)(cg_stream *s);
    /** Input must wait (the app is behind): reading pauses. */
    void (*pause)(cg_stream *s);
    /** An app step ended: output held back for the batch may go. */
    void (*settle)(cg_stream *s);
    /** Sends `count` body bytes of the file `fd` from `offset` itself,
     * without copying them through the process (sendfile), after the head
     * when `head` is not NULL; `more` as for send. Returns 1 when it took
     * them (poll_file then says when they are out; fd stays open until
     * then), 0 when this stream does not (TLS, HTTP/2, a small file: the
     * caller reads the file and sends its bytes), -1 with an exception.
     * NULL: never. */
    int (*send_file)(cg_stream *s, const cg_resp_head *head, int fd, long long offset,
                     long long count, int more);
    /** Polls the send_file taken (a cg_poll_fn body): None once every byte
     * is out, *sent then the file's bytes written; NULL with *fut to wait
     * on; or NULL with an exception when it never will be (*sent the bytes
     * that were: a ConnectionError when the peer went away, RuntimeError
     * when the file was shorter than its response). */
    PyObject *(*poll_file)(cg_stream *s, PyObject **fut, long long *sent);
} cg_stream_ops;

/* What the ASGI scope and the log lines need to know of where a request came
 * from. Objects are borrowed from the connection (alive while the stream is). */
typedef struct cg_stream_info {
    PyObject *client;        /* scope["client"]: (host, port) or None */
    PyObject *server;        /* scope["server"] */
    PyObject *scheme;        /* "http" or "https" (interned), before proxy headers */
    PyObject *tls;           /* the connection's ASGI "tls" extension dict, or NULL */
    const char *client_text; /* "host:port" for log lines, NUL-terminated */
    size_t client_len;
    unsigned trusted_proxy : 1; /* X-Forwarded-* from this peer are believed */
} cg_stream_info;

struct cg_stream {
    const cg_stream_ops *ops;
    PyObject *owner; /* the object that keeps the stream alive (its connection): whoever keeps a
                      * cg_stream pointer holds a reference to it */
    cg_stream_info info;
};

#endif
