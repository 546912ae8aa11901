"""The WebSocket test app: behaviour chosen by the path, parameters in the query.

Events the tests wait for are printed as ``WSEVENT <kind> <tag> <json>`` lines
(`tag` is the query's `id`, or "-").

Paths:
  /echo            accept, echo every message (text as text, bytes as bytes)
  /scope           accept, send the scope as JSON, then echo
  /events          accept, send every received message back as JSON
  /subproto        accept with the first offered subprotocol (or ?proto=) and
                   the extra headers x-extra: yes, x-second: 2
  /close-before    close before accepting (-> 403)
  /raise-before    raise before accepting (-> 500)
  /raise-after     accept, raise on the first message (-> close 1011)
  /return-before   return without accepting (-> 500)
  /deny            denial response: 418, headers, body in two parts
  /close?code=&reason=  accept, close with that code and reason, then wait
                   for websocket.disconnect
  /disconnect      accept, receive until websocket.disconnect, report it
  /send-after-disconnect  accept, wait for websocket.disconnect, then send:
                   reports whether it raised and the exception's type
  /noreceive?sleep=  accept, sleep, then receive until "END" and report the
                   message count and byte total (backpressure)
  /bigsend?n=&kind=  accept, send one message of n bytes ('x' or bytes 0..255)
  /hold            accept, receive until disconnect (reporting it)
  /version         accept, send the module's VERSION
  /slow-accept?delay=  wait, then accept (the client may be gone): reports
                   what accept() did and what receive() returns next; with
                   &echo=1 echoes after accepting
  /flood?n=&size=  accept, send n binary messages of size bytes, then "DONE"
                   and the seconds send() took in total
http scope: 200 with {"type": "http", "path": ..., "headers": ...} as JSON.
"""

import asyncio
import json
from urllib.parse import parse_qs

VERSION = "ws-v0"


def event(kind, tag, data):
    print(f"WSEVENT {kind} {tag} {json.dumps(data)}", flush=True)


def scope_json(scope):
    def conv(v):
        if isinstance(v, bytes):
            return v.decode("latin-1")
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return repr(v)

    out = {}
    for k, v in scope.items():
        if k == "state":
            out["state"] = {"type": type(v).__name__, "keys": sorted(v) if isinstance(v, dict) else None,
                            "value": v.get("started") if isinstance(v, dict) else None}
        elif k == "app":
            continue
        else:
            out[k] = conv(v)
    out["_types"] = {k: type(v).__name__ for k, v in scope.items()}
    if isinstance(scope.get("headers"), list) and scope["headers"]:
        out["_header_types"] = [type(scope["headers"][0]).__name__, type(scope["headers"][0][0]).__name__,
                                type(scope["headers"][0][1]).__name__]
    return out


async def lifespan(scope, receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["started"] = "yes"
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def msg_json(m):
    d = {"type": m["type"], "keys": sorted(m)}
    if m.get("bytes") is not None:
        d["bytes"] = m["bytes"].hex()
    else:
        d["bytes"] = None
    d["text"] = m.get("text")
    if "code" in m:
        d["code"] = m["code"]
    if "reason" in m:
        d["reason"] = m["reason"]
    return d


async def echo_loop(receive, send, tag="-"):
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            event("disconnect", tag, {"code": m.get("code"), "reason": m.get("reason")})
            return
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def http(scope, receive, send):
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    data = json.dumps({"type": "http", "path": scope["path"], "scheme": scope["scheme"],
                       "root_path": scope.get("root_path"), "raw_path": scope["raw_path"].decode("latin-1"),
                       "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]}
                      ).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "http":
        return await http(scope, receive, send)
    assert scope["type"] == "websocket"
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    tag = q.get("id", "-")
    path = scope["path"]
    if scope.get("root_path") and path.startswith(scope["root_path"]):
        path = path[len(scope["root_path"]):] or "/"

    first = await receive()
    if first["type"] != "websocket.connect":
        event("error", tag, {"first": first["type"]})
        return

    if path == "/close-before":
        await send({"type": "websocket.close"})
        return
    if path == "/raise-before":
        raise RuntimeError("raised before accept")
    if path == "/return-before":
        return
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain"), (b"x-deny", b"1")]})
        await send({"type": "websocket.http.response.body", "body": b"not ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"a teapot"})
        return
    if path == "/slow-accept":
        await asyncio.sleep(float(q.get("delay", "0.5")))
        try:
            await send({"type": "websocket.accept"})
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            res = {"raised": type(exc).__name__, "oserror": isinstance(exc, OSError)}
        else:
            res = {"raised": None}
            if q.get("echo"):
                event("accepted", tag, {"path": path})
                return await echo_loop(receive, send, tag)
        try:
            m = await asyncio.wait_for(receive(), 5)
            res["next"] = msg_json(m)
        except BaseException as exc:  # noqa: BLE001
            res["next"] = {"raised": type(exc).__name__}
        event("slow-accept", tag, res)
        return
    if path == "/subproto":
        proto = q.get("proto") or (scope["subprotocols"][0] if scope["subprotocols"] else None)
        msg = {"type": "websocket.accept", "headers": [(b"x-extra", b"yes"), (b"x-second", b"2")]}
        if proto is not None:
            msg["subprotocol"] = proto
        await send(msg)
        await send({"type": "websocket.send", "text": json.dumps(scope["subprotocols"])})
        return await echo_loop(receive, send, tag)

    await send({"type": "websocket.accept"})
    event("accepted", tag, {"path": path})

    if path == "/echo":
        return await echo_loop(receive, send, tag)
    if path == "/scope" or path.startswith("/scope/"):
        await send({"type": "websocket.send", "text": json.dumps(scope_json(scope))})
        return await echo_loop(receive, send, tag)
    if path == "/version":
        await send({"type": "websocket.send", "text": VERSION})
        return await echo_loop(receive, send, tag)
    if path == "/events":
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                event("disconnect", tag, msg_json(m))
                return
            await send({"type": "websocket.send", "text": json.dumps(msg_json(m))})
    if path == "/raise-after":
        await receive()
        raise RuntimeError("raised after accept")
    if path == "/close":
        code = int(q.get("code", "1000"))
        await send({"type": "websocket.close", "code": code, "reason": q.get("reason", "")})
        event("closed", tag, {"code": code})
        m = await asyncio.wait_for(receive(), 30)
        event("disconnect", tag, msg_json(m))
        return
    if path in ("/disconnect", "/hold"):
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                event("disconnect", tag, msg_json(m))
                return
    if path == "/send-after-disconnect":
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                break
        event("disconnect", tag, msg_json(m))
        try:
            await asyncio.wait_for(send({"type": "websocket.send", "text": "too late"}), 5)
        except asyncio.TimeoutError:
            event("send-after", tag, {"raised": "timeout"})
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            event("send-after", tag, {"raised": type(exc).__name__, "oserror": isinstance(exc, OSError),
                                      "mro": [c.__name__ for c in type(exc).__mro__]})
        else:
            event("send-after", tag, {"raised": None})
        return
    if path == "/noreceive":
        await asyncio.sleep(float(q.get("sleep", "2")))
        count = total = 0
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                event("disconnect", tag, msg_json(m))
                return
            if m.get("text") == "END":
                await send({"type": "websocket.send", "text": json.dumps({"count": count, "bytes": total})})
                continue
            count += 1
            total += len(m["bytes"] if m.get("bytes") is not None else m["text"].encode())
    if path == "/flood":
        import time
        n, size = int(q.get("n", "100")), int(q.get("size", "65536"))
        block = b"\xa5" * size
        t0 = time.monotonic()
        for _ in range(n):
            await send({"type": "websocket.send", "bytes": block})
        await send({"type": "websocket.send", "text": "DONE %.3f" % (time.monotonic() - t0)})
        event("flood-done", tag, {"seconds": time.monotonic() - t0})
        return await echo_loop(receive, send, tag)
    if path == "/bigsend":
        n = int(q.get("n", "0"))
        if q.get("kind") == "text":
            await send({"type": "websocket.send", "text": "x" * n})
        else:
            await send({"type": "websocket.send", "bytes": bytes(range(256)) * (n // 256) + bytes(n % 256)})
        return await echo_loop(receive, send, tag)
    await send({"type": "websocket.close", "code": 4404, "reason": "no such path"})
