"""A plain ASGI app for the supervisor tests (--workers, --reload, gunicorn).

GET /            "VERSION PID" with an x-pid header
GET /stream      a chunked response that never ends (a chunk every 0.1 s)
GET /hang        a request that is never answered (an idle WebSocket's stand-in)
GET /block?S     blocks the event loop for S seconds, 60 by default
                 (blocking_handler_in_event_loop)
GET /slow?S      answers after S seconds (asyncio.sleep)
GET /env         the names in os.environ (JSON)
POST /echo       the request body back
WS /ws           sends "VERSION PID", then echoes text messages until closed

Lifespan startup/shutdown append "startup|shutdown PID VERSION" to $SUP_HOOKS.
$SUP_SLOW_SHUTDOWN=S: lifespan shutdown takes S seconds.
$SUP_CRASH_AFTER=S: the process exits (status 1) S seconds after startup;
with $SUP_CRASH_LOCK=PATH, the one worker holding an flock on PATH does not.
"""

import asyncio
import fcntl
import json
import os
import time

VERSION = "v0"

_lock_fd = None


def _hook(what: str) -> None:
    path = os.environ.get("SUP_HOOKS")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.getpid()} {VERSION}\n")


def _maybe_crash() -> None:
    global _lock_fd
    after = os.environ.get("SUP_CRASH_AFTER")
    if not after:
        return
    lock = os.environ.get("SUP_CRASH_LOCK")
    if lock:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _lock_fd = fd  # the stable worker keeps it for its whole life
            return
        except OSError:
            os.close(fd)
    asyncio.get_running_loop().call_later(float(after), os._exit, 1)


def blocking_handler_in_event_loop(seconds: float = 60) -> None:
    time.sleep(seconds)


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        m = await receive()
        if m["type"] != "http.request":
            return body
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                _hook("startup")
                _maybe_crash()
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                _hook("shutdown")
                await asyncio.sleep(float(os.environ.get("SUP_SLOW_SHUTDOWN") or 0))
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        m = await receive()
        if m["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f"{VERSION} {os.getpid()}"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text") or ""})
    if scope["type"] != "http":
        return
    path = scope["path"]
    pid = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"x-pid", pid)]
    if path == "/block":
        blocking_handler_in_event_loop(float(scope["query_string"] or b"60"))
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        i = 0
        while True:
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            i += 1
            await asyncio.sleep(0.1)
    elif path == "/hang":
        await asyncio.sleep(3600)
    elif path == "/slow":
        await asyncio.sleep(float(scope["query_string"] or b"0.1"))
    elif path == "/tls":
        tls = scope.get("extensions", {}).get("tls")
        body = json.dumps({"scheme": scope["scheme"], "tls": tls}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    elif path == "/env":
        body = json.dumps(sorted(os.environ)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    elif path == "/echo":
        body = await _read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": f"{VERSION} {os.getpid()}".encode()})
