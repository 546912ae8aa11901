/* The protocols a connection serves (cg_proto_ops tables, conn.h):
 * HTTP/1.1 (h1.c): parsing, body framing, pipelining, keep-alive,
 * 100-continue, the WebSocket upgrade, error responses, one request at a
 * time; HTTP/2 (h2.c, on core/h2.c): one ASGI cycle per stream. */
#ifndef CASGI_PROTOCOLS_H
#define CASGI_PROTOCOLS_H

#include "conn.h"
#include "stream.h"

/** HTTP/1.1; it hands a cleartext connection that opens with the HTTP/2
 * preface to the server's h2c protocol (prior knowledge) when there is one. */
extern const cg_proto_ops cg_h1_proto;
/** HTTP/2 (h2 by ALPN, h2c by prior knowledge); NULL-free only in builds
 * with nghttp2 (CG_HAVE_NGHTTP2). */
extern const cg_proto_ops cg_h2_proto;

/** Sets up a stream of connection c served by `ops`: the connection owns it,
 * and its info is the connection's (client, server, scheme, TLS). */
static inline void cg_proto_stream_init(cg_stream *s, cg_conn *c, const cg_stream_ops *ops)
{
    cg_state *st = c->server->st;
    s->ops = ops;
    s->owner = (PyObject *)c;
    s->info.client = c->client;
    s->info.server = c->sockname;
    s->info.scheme = cg_conn_is_tls(c) ? st->s_https : st->s_http;
    s->info.tls = c->tls_info;
    s->info.client_text = c->client_text;
    s->info.client_len = c->client_len;
    s->info.trusted_proxy = c->trusted_proxy;
}

#endif
