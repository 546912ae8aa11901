"""The app of the HTTP/2 tests (tests/test_h2_*.py). Raw ASGI 3.

Lines the tests wait for go to stderr as ``H2EVENT <kind> <id> <detail>``
(`id` is the query's `id`, or "-").

http:
  /                 200 "hello h2"
  /scope, /scope/*  the request body is read, then the scope as JSON (bytes as
                    latin-1 text, plus "_types" and "_header_types")
  /echo             the request body back, x-body-messages: the number of
                    http.request messages it came in
  /consume          reads the body, answers its length
  /slow-read?t=S    H2EVENT slow-read-start, sleeps S seconds without calling
                    receive(), then reads the body (H2EVENT slow-read-done
                    with its length) and answers its length
  /trailers         with the http.response.trailers extension: 200, body
                    "with trailers", trailers x-checksum: abc and x-count: 2;
                    without it: 200 "no trailers extension"
  /early-hints      with the http.response.early_hint extension: a 103 with
                    two links first, then 200 "after hints"; without it: 200
                    "no early hints extension"
  /download?size=N&seed=S&chunk=C  N pseudo-random bytes (download_chunks),
                    one message per chunk of C bytes (default 65536), made
                    as they are sent; with a content-length
  /stream?n=N       N body messages "part-<i>\n", no content-length
  /reuse?kind=K&size=N  one buffer of N bytes sent 8 times, changed after each
                    send() (bytearray, memoryview of one) or rebuilt (bytes):
                    part i is N bytes of the letter "a" + i
  /raise-before     raises before http.response.start (-> 500)
  /raise-after      starts, sends "partial" with more_body, then raises
  /wait-disconnect  reads the body, then waits on receive(): H2EVENT
                    disconnect with the message type it got
  /hang             H2EVENT hang-start, then waits on receive() until
                    http.disconnect (H2EVENT hang-disconnect), returns
  /sleep?t=S        sleeps S seconds without reading, answers "slept"
  /conn-headers     a response whose headers include the connection-specific
                    ones (connection, keep-alive, transfer-encoding, upgrade,
                    proxy-connection) and x-kept: yes
  /headers?h=n:v    200 with the response headers given (repeatable)
  /stats            {"running": app calls in progress, "max_running": the
                    most at once since the last /stats?reset=1, "started":
                    http calls since then} (this request not counted)
websocket:
  /ws/echo          accept (with the first offered subprotocol), echo
  /ws/scope         accept, send the scope as JSON text, then echo
  /ws/deny          denial response (websocket.http.response): 403 "denied"
"""

import asyncio
import json
import random
import sys
from urllib.parse import parse_qs

STATS = {"running": 0, "max_running": 0, "started": 0}


def download_chunks(size, seed=0, chunk=65536):
    """The body of /download: `size` bytes in pieces of `chunk` from
    random.Random(seed), made one piece at a time (tests import this to
    know what to expect)."""
    rng = random.Random(seed)
    for i in range(0, size, chunk):
        yield rng.randbytes(min(chunk, size - i))


def event(kind, ident, detail=""):
    print(f"H2EVENT {kind} {ident} {detail}", file=sys.stderr, flush=True)


def jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def scope_dump(scope):
    out = {k: jsonable(v) for k, v in scope.items() if k not in ("app", "state")}
    out["_types"] = {k: type(v).__name__ for k, v in scope.items()}
    out["_header_types"] = sorted({type(x).__name__ for h in scope.get("headers", []) for x in h})
    return out


async def read_body(receive):
    """(body, number of http.request messages); body None on disconnect."""
    parts, messages = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None, messages
        messages += 1
        parts.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(parts), messages


async def respond(send, body, status=200, headers=(), content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *headers]})
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
    path = scope["path"]
    m = await receive()
    assert m["type"] == "websocket.connect", m
    if path == "/ws/deny":
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")]})
            await send({"type": "websocket.http.response.body", "body": b"denied"})
        else:
            await send({"type": "websocket.close"})
        return
    accept = {"type": "websocket.accept"}
    if scope.get("subprotocols"):
        accept["subprotocol"] = scope["subprotocols"][0]
    await send(accept)
    if path == "/ws/scope":
        await send({"type": "websocket.send", "text": json.dumps(scope_dump(scope))})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        if m.get("text") is not None:
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
    if path == "/stats":
        qs = parse_qs(scope["query_string"].decode())
        snapshot = dict(STATS)
        if qs.get("reset"):
            STATS["max_running"] = STATS["running"]
            STATS["started"] = 0
        await respond(send, json.dumps(snapshot).encode(), content_type=b"application/json")
        return
    STATS["running"] += 1
    STATS["started"] += 1
    STATS["max_running"] = max(STATS["max_running"], STATS["running"])
    try:
        await http(scope, receive, send, path)
    finally:
        STATS["running"] -= 1


async def http(scope, receive, send, path):
    qs = parse_qs(scope["query_string"].decode("latin-1"))

    def q(name, default=None):
        return qs.get(name, [default])[0]

    ident = q("id", "-")
    extensions = scope.get("extensions") or {}

    if path == "/":
        await respond(send, b"hello h2")

    elif path == "/scope" or path.startswith("/scope/"):
        body, _ = await read_body(receive)
        if body is None:
            return
        await respond(send, json.dumps(scope_dump(scope)).encode(), content_type=b"application/json")

    elif path == "/echo":
        body, messages = await read_body(receive)
        if body is None:
            return
        await respond(send, body, headers=[(b"x-body-messages", str(messages).encode())],
                      content_type=b"application/octet-stream")

    elif path == "/consume":
        body, _ = await read_body(receive)
        if body is None:
            return
        await respond(send, str(len(body)).encode())

    elif path == "/slow-read":
        event("slow-read-start", ident)
        await asyncio.sleep(float(q("t", "2")))
        body, _ = await read_body(receive)
        if body is None:
            event("slow-read-done", ident, "disconnect")
            return
        event("slow-read-done", ident, len(body))
        await respond(send, str(len(body)).encode())

    elif path == "/trailers":
        await read_body(receive)
        if "http.response.trailers" not in extensions:
            await respond(send, b"no trailers extension")
            return
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"with ", "more_body": True})
        await send({"type": "http.response.body", "body": b"trailers", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc"), (b"x-count", b"2")],
                    "more_trailers": False})

    elif path == "/early-hints":
        await read_body(receive)
        if "http.response.early_hint" not in extensions:
            await respond(send, b"no early hints extension")
            return
        await send({"type": "http.response.early_hint",
                    "links": [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]})
        await respond(send, b"after hints")

    elif path == "/download":
        size = int(q("size", "0"))
        chunk = int(q("chunk", "65536"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(size).encode())]})
        for piece in download_chunks(size, int(q("seed", "0")), chunk):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        event("download-done", ident, size)

    elif path == "/reuse":
        size, kind = int(q("size", "65536")), q("kind", "bytes")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        buf = bytearray(size)
        for i in range(8):
            buf[:] = bytes([97 + i]) * size
            body = bytes(buf) if kind == "bytes" else buf if kind == "bytearray" else memoryview(buf)
            await send({"type": "http.response.body", "body": body, "more_body": i < 7})

    elif path == "/stream":
        n = int(q("n", "3"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"part-{i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})

    elif path == "/raise-before":
        raise RuntimeError("h2 boom before start " + ident)

    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        raise RuntimeError("h2 boom after start " + ident)

    elif path == "/wait-disconnect":
        body, _ = await read_body(receive)
        if body is None:
            event("disconnect", ident, "http.disconnect")
            return
        msg = await receive()
        event("disconnect", ident, msg["type"])

    elif path == "/hang":
        event("hang-start", ident)
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                event("hang-disconnect", ident)
                return

    elif path == "/sleep":
        await asyncio.sleep(float(q("t", "1")))
        await respond(send, b"slept")

    elif path == "/conn-headers":
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"proxy-connection", b"keep-alive"),
            (b"x-kept", b"yes")]})
        await send({"type": "http.response.body", "body": b"conn headers"})

    elif path == "/headers":
        await read_body(receive)
        hdrs = []
        for item in qs.get("h", []):
            n, _, v = item.partition(":")
            hdrs.append((n.encode("latin-1"), v.encode("latin-1")))
        await respond(send, b"ok", headers=hdrs)

    else:
        await read_body(receive)
        await respond(send, b"not found", status=404)
