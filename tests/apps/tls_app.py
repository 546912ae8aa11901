"""The app of the TLS tests (tests/test_tls.py).

http:
  /             200 "hello"
  /pid          the worker's pid
  /scope        JSON: scheme, http_version, client, server, the extensions
                (with "tls" when present) and the pid
  /mutate-scope  changes scope["extensions"] (a key added, the tls dict
                altered), then answers as /scope
  /echo         the request body back (application/octet-stream)
  /download?size=N&seed=S  N pseudo-random bytes (random.Random(S).randbytes)
  /stream?n=N   N body messages "part-<i>\n", no content-length (chunked, or
                delimited by the close on HTTP/1.0)
  /big-stream?n=N  N body messages of 1 MiB each (bytes 0..255 repeated)
websocket (any path): accept, then echo; the text "scope" is answered with
the scope JSON instead.
"""

import json
import os
import random
from urllib.parse import parse_qs


def scope_json(scope):
    return json.dumps({
        "type": scope["type"],
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "client": scope.get("client"),
        "server": scope.get("server"),
        "extensions": scope.get("extensions"),
        "pid": os.getpid(),
    }).encode()


async def read_body(receive):
    parts = []
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            return None
        parts.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(parts)


async def respond(send, body, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket(scope, receive, send):
    m = await receive()
    assert m["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        if m.get("text") == "scope":
            await send({"type": "websocket.send", "text": scope_json(scope).decode()})
        elif m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"]
    body = await read_body(receive)
    if body is None:
        return
    if path == "/pid":
        await respond(send, str(os.getpid()).encode())
    elif path == "/scope":
        await respond(send, scope_json(scope), b"application/json")
    elif path == "/mutate-scope":
        scope["extensions"]["added"] = {}
        scope["extensions"]["tls"]["tls_version"] = 0
        await respond(send, scope_json(scope), b"application/json")
    elif path == "/echo":
        await respond(send, body, b"application/octet-stream")
    elif path == "/download":
        qs = parse_qs(scope["query_string"].decode())
        size, seed = int(qs["size"][0]), int(qs.get("seed", ["0"])[0])
        await respond(send, random.Random(seed).randbytes(size), b"application/octet-stream")
    elif path == "/stream":
        n = int(parse_qs(scope["query_string"].decode())["n"][0])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"part-{i}\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/big-stream":
        n = int(parse_qs(scope["query_string"].decode())["n"][0])
        chunk = bytes(range(256)) * 4096
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(n * len(chunk)).encode())]})
        for _ in range(n):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await respond(send, b"hello")
