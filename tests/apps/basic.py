"""The general-purpose raw ASGI 3 app the end-to-end tests talk to.

Every request for a `/mark/...` path is recorded ("METHOD path?query") so
tests can ask `/seen` whether a request was dispatched. Results that cannot travel in the response
(errors the app caught, disconnect notifications) are printed to stderr as
one line each, prefixed with a tag the tests wait for.
"""

import asyncio
import contextvars
import json
import os
import sys
from urllib.parse import parse_qs

SEEN = []
NOT_CALLABLE = 42
REQUEST_VAR = contextvars.ContextVar("request_var", default="unset")


def note(*parts):
    print(*parts, file=sys.stderr, flush=True)


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


async def read_body(receive):
    """The whole request body and the number of http.request messages it came in."""
    parts = []
    messages = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None, messages
        messages += 1
        parts.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(parts), messages


async def respond(send, status=200, body=b"", headers=None, content_type=b"text/plain"):
    hdrs = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    hdrs += list(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, obj, status=200):
    await respond(send, status, json.dumps(obj).encode(), content_type=b"application/json")


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["from_lifespan"] = "yes"
                scope["state"]["shared_list"] = []
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _scope_dump(scope):
    out = {}
    for key, value in scope.items():
        if key == "state":
            out[key] = {k: _jsonable(v) for k, v in value.items()}
        else:
            out[key] = _jsonable(value)
    out["_types"] = {k: type(v).__name__ for k, v in scope.items()}
    out["_header_types"] = sorted({type(x).__name__ for h in scope.get("headers", []) for x in h})
    return out


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"

    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    qs = parse_qs(scope["query_string"].decode("latin-1"))

    def q(name, default=None):
        return qs.get(name, [default])[0]

    key = scope["method"] + " " + scope["path"]
    if scope["query_string"]:
        key += "?" + scope["query_string"].decode("latin-1")
    if path.startswith("/mark/"):
        # Only marker requests are recorded, so memory stays flat however
        # many other requests the process serves.
        SEEN.append(key)

    if scope["method"] == "CONNECT":
        # The status comes from an x-status request header (default 200).
        status = int(dict(scope["headers"]).get(b"x-status", b"200"))
        await respond(send, status, b"tunnel")

    elif path == "/seen":
        await respond_json(send, SEEN)

    elif path == "/":
        await respond(send, 200, b"Hello, world!")

    elif path == "/echo":
        body, messages = await read_body(receive)
        if body is None:
            return
        await respond(send, 200, body, headers=[(b"x-body-messages", str(messages).encode())])

    elif path == "/consume":
        total = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            total += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        await respond(send, 200, str(total).encode())

    elif path == "/scope" or path.startswith("/scope/"):
        body, _ = await read_body(receive)
        if body is None:
            return
        await respond_json(send, _scope_dump(scope))

    elif path == "/state-mutate":
        scope["state"]["leaked"] = "yes"
        scope["state"]["from_lifespan"] = "changed"
        await respond_json(send, sorted(scope["state"]))

    elif path == "/download":
        size = int(q("size", "0"))
        chunk = int(q("chunk", "65536"))
        headers = [(b"content-type", b"application/octet-stream")]
        if q("cl") == "1":
            headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        block = b"x" * chunk
        sent = 0
        while sent < size:
            n = min(chunk, size - sent)
            await send({"type": "http.response.body", "body": block[:n], "more_body": True})
            sent += n
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if q("id"):
            note("DOWNLOAD-DONE", q("id"))

    elif path == "/loop":
        loop_type = type(asyncio.get_running_loop())
        await respond_json(send, {"module": loop_type.__module__, "name": loop_type.__name__})

    elif path == "/start-only":
        # Starts a response and returns without finishing it.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"begun", "more_body": True})

    elif path == "/minimal":
        # Every optional key left out: no headers, no body, no more_body.
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    elif path == "/headers-as-lists":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [[b"content-length", b"5"], [b"x-list", b"yes"]]})
        await send({"type": "http.response.body", "body": b"lists"})

    elif path == "/headers-shaped":
        # The same two headers and body in the shapes ASGI allows.
        pairs = [(b"content-length", b"6"), (b"x-shape", q("shape").encode())]
        shape = q("shape")
        if shape == "tuple":
            headers = tuple(pairs)
        elif shape == "generator":
            headers = (p for p in pairs)
        elif shape == "buffers":
            headers = [(bytearray(n), memoryview(v)) for n, v in pairs]
        else:
            headers = 42  # not iterable: an application error
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": bytearray(b"shaped")})

    elif path == "/ctx":
        # What this request sees of a context variable, then sets it: a
        # request must never see what another request set.
        seen = REQUEST_VAR.get()
        REQUEST_VAR.set(q("set", "x"))
        await respond(send, 200, seen.encode())

    elif path == "/stream":
        n = int(q("n", "3"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": f"part{i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    elif path == "/stream-empty-parts":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"", b"b", b""):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"c", "more_body": False})

    elif path == "/single":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"single body message", "more_body": False})

    elif path == "/cl-short":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": False})

    elif path == "/cl-long":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"1234567890", "more_body": False})

    elif path == "/cl-long-stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"123", "more_body": True})
        await send({"type": "http.response.body", "body": b"456", "more_body": False})

    elif path == "/cl-short-stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"123", "more_body": True})
        await send({"type": "http.response.body", "body": b"45", "more_body": False})

    elif path == "/status":
        code = int(q("code", "200"))
        headers = [(b"x-status", str(code).encode())]
        if q("cl"):
            headers.append((b"content-length", q("cl").encode()))
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": q("body", "").encode()})

    elif path == "/status-obj":
        status = {"str": "200", "float": 200.0, "bool": True, "big": 2**32 + 200, "none": None}[q("kind")]
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    elif path == "/app-te":
        # The app asks for a transfer-encoding itself (v), body in `parts` messages.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"transfer-encoding", q("v", "chunked").encode())]})
        n = int(q("parts", "1"))
        for i in range(n):
            await send({"type": "http.response.body", "body": b"part%d" % i, "more_body": i < n - 1})

    elif path == "/return-mid-stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    elif path == "/conn-close-response":
        await respond(send, 200, b"closing", headers=[(b"connection", b"close")])

    elif path == "/headers":
        # Response headers as given in the query: h=name:value (repeatable).
        hdrs = []
        for item in qs.get("h", []):
            n, _, v = item.partition(":")
            hdrs.append((n.encode("latin-1"), v.encode("latin-1")))
        await respond(send, 200, b"ok", headers=hdrs)

    elif path == "/bad-header":
        kind = q("kind")
        bad = {
            "name-crlf": (b"x-bad\r\ninjected", b"v"),
            "name-lf": (b"x-bad\ninjected", b"v"),
            "name-nul": (b"x-bad\x00injected", b"v"),
            "value-crlf": (b"x-bad", b"v\r\ninjected: yes"),
            "value-cr": (b"x-bad", b"v\rinjected"),
            "value-lf": (b"x-bad", b"v\ninjected: yes"),
            "value-nul": (b"x-bad", b"v\x00injected"),
            "value-bel": (b"x-bad", b"v\x07injected"),
            "value-esc": (b"x-bad", b"v\x1b[31minjected"),
            "value-vt": (b"x-bad", b"v\x0binjected"),
            "value-del": (b"x-bad", b"v\x7finjected"),
        }[kind]
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2"), bad]})
            await send({"type": "http.response.body", "body": b"ok"})
        except Exception as exc:  # the server may refuse the message by raising
            note("BAD-HEADER-RAISED", kind, type(exc).__name__)
            raise

    elif path == "/raise-before":
        raise RuntimeError("boom-before-start " + q("id", ""))

    elif path == "/raise-after-complete":
        await respond(send, 200, b"complete")
        raise RuntimeError("boom-after-complete " + q("id", ""))

    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom-after-start " + q("id", ""))

    elif path == "/slow":
        note("SLOW-START", q("id", ""))
        await asyncio.sleep(float(q("t", "1")))
        await respond(send, 200, b"slow done")

    elif path == "/hang":
        note("HANG-START", q("id", ""))
        await asyncio.get_running_loop().create_future()

    elif path == "/no-read":
        await respond(send, 200, b"answered without reading")

    elif path == "/no-read-slow":
        note("NO-READ-SLOW-START", q("id", ""))
        await asyncio.sleep(float(q("t", "3")))
        await respond(send, 200, b"answered without reading")

    elif path == "/delayed-read":
        await asyncio.sleep(float(q("t", "1")))
        body, _ = await read_body(receive)
        if body is None:
            return
        await respond(send, 200, body)

    elif path == "/wait-disconnect":
        ident = q("id", "")
        body, _ = await read_body(receive)
        if body is not None:
            msg = await receive()
            note("DISCONNECT-MESSAGE", ident, msg["type"])
        else:
            note("DISCONNECT-MESSAGE", ident, "http.disconnect")
        try:
            again = await asyncio.wait_for(receive(), 2)
            note("DISCONNECT-AGAIN", ident, again["type"])
        except asyncio.TimeoutError:
            note("DISCONNECT-AGAIN", ident, "timeout")
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"too late"})
            note("SEND-AFTER-DISCONNECT", ident, "ok")
        except BaseException as exc:
            note("SEND-AFTER-DISCONNECT", ident, "raised", type(exc).__name__, exc)

    elif path == "/receive-after-complete":
        ident = q("id", "")
        body, _ = await read_body(receive)
        await respond(send, 200, b"done")
        try:
            msg = await asyncio.wait_for(receive(), 3)
            note("AFTER-COMPLETE-RECEIVE", ident, msg["type"])
        except asyncio.TimeoutError:
            note("AFTER-COMPLETE-RECEIVE", ident, "timeout")

    elif path == "/order":
        ident = q("id", "")
        case = q("case")
        result = "no-error"
        if case == "body-before-start":
            try:
                await send({"type": "http.response.body", "body": b"x"})
            except RuntimeError as exc:
                result = "RuntimeError " + str(exc).replace("\n", " ")
            note("ORDER", ident, case, result)
            await respond(send, 200, result.encode())
        elif case == "double-start":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            try:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            except RuntimeError as exc:
                result = "RuntimeError " + str(exc).replace("\n", " ")
            note("ORDER", ident, case, result)
            await send({"type": "http.response.body", "body": b"ok"})
        elif case == "after-complete":
            await respond(send, 200, b"ok")
            try:
                await send({"type": "http.response.body", "body": b"extra"})
            except RuntimeError as exc:
                result = "RuntimeError " + str(exc).replace("\n", " ")
            note("ORDER", ident, case, result)
        elif case == "unknown-type":
            try:
                await send({"type": "http.response.bogus"})
            except RuntimeError as exc:
                result = "RuntimeError " + str(exc).replace("\n", " ")
            note("ORDER", ident, case, result)
            await respond(send, 200, b"ok")

    elif path == "/env":
        await respond_json(send, {"value": os.environ.get(q("name", ""))})

    elif path == "/side-file":
        # Writes a marker into the side directory (proves the app ran).
        side = os.environ.get("CASGI_TEST_SIDE_DIR")
        if side:
            with open(os.path.join(side, q("name", "marker")), "w") as f:
                f.write("ran")
        await respond(send, 200, b"written")

    else:
        await respond(send, 404, b"not found")
