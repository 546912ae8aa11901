"""The app of tests/test_pathsend.py: files sent with the
http.response.pathsend and http.response.zerocopysend extensions. Raw ASGI 3,
and one Starlette FileResponse.

  /ext                    the names in scope["extensions"], one a line
  /path?p=PATH            200, then a pathsend of PATH; with ct=T a
                          content-type; with cl=N a content-length N; with
                          catch=1 an exception of send() is answered 404 with
                          "<ExceptionType>: <message>" (nothing of the first
                          response reached the wire), else it propagates
  /path-twice?p=PATH      a pathsend, then a body message: what send() raised
                          goes to stderr as PSEVENT second <ExceptionType>
  /zc?p=PATH              200, then a zerocopysend of the open file PATH:
                          offset=O and count=C when given, seek=S moves the
                          file's position first; more=1 sends "<tail>" as a
                          last body message after it; cl=N a content-length N;
                          PSEVENT zc-pos <position after> when it is done
  /starlette?p=PATH       Starlette's FileResponse(PATH)
  /fds                    the number of descriptors the process has open
  /hello                  200 "hello"
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qs

from starlette.responses import FileResponse


def _q(scope) -> dict:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


async def _text(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _start(q: dict) -> dict:
    headers = [(b"content-type", q.get("ct", "application/octet-stream").encode())]
    if "cl" in q:
        headers.append((b"content-length", q["cl"].encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, q = scope["path"], _q(scope)
    if path == "/ext":
        await _text(send, 200, "".join(f"{name}\n" for name in sorted(scope.get("extensions") or {})))
    elif path == "/path":
        await send(_start(q))
        try:
            await send({"type": "http.response.pathsend", "path": q["p"]})
        except Exception as e:
            if q.get("catch") != "1":
                raise
            await _text(send, 404, f"{type(e).__name__}: {e}")
    elif path == "/path-twice":
        await send(_start(q))
        await send({"type": "http.response.pathsend", "path": q["p"]})
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except Exception as e:
            print(f"PSEVENT second {type(e).__name__}", file=sys.stderr, flush=True)
    elif path == "/zc":
        with open(q["p"], "rb") as f:
            if "seek" in q:
                f.seek(int(q["seek"]))
            msg = {"type": "http.response.zerocopysend", "file": f, "more_body": q.get("more") == "1"}
            for key in ("offset", "count"):
                if key in q:
                    msg[key] = int(q[key])
            await send(_start(q))
            await send(msg)
            print(f"PSEVENT zc-pos {os.lseek(f.fileno(), 0, os.SEEK_CUR)}", file=sys.stderr, flush=True)
            if q.get("more") == "1":
                await send({"type": "http.response.body", "body": b"<tail>"})
    elif path == "/starlette":
        await FileResponse(q["p"])(scope, receive, send)
    elif path == "/fds":
        await _text(send, 200, str(len(os.listdir("/proc/self/fd"))))
    else:
        await _text(send, 200, "hello")
