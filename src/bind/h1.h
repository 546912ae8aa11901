/* HTTP/1.1 on a connection (h1.c): parsing, body framing, pipelining,
 * keep-alive, 100-continue, the WebSocket upgrade, error responses. One
 * request is served at a time; its cg_stream carries the ASGI cycle. */
#ifndef CASGI_H1_H
#define CASGI_H1_H

#include "conn.h"

/** The protocol table for HTTP/1.1 connections. */
extern const cg_proto_ops cg_h1_proto;

#endif
