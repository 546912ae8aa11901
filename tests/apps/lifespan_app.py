"""A raw ASGI app with lifespan, driven by environment variables.

LIFESPAN_MODE: "ok" (default), "fail" (sends lifespan.startup.failed),
"raise-startup" (raises while handling lifespan.startup), "unsupported"
(raises as soon as it is called with a lifespan scope).
EVENTS_FILE: a file the app appends one line per event to ("startup",
"request PATH", "slow-done", "shutdown"), so tests can check the order.
"""

import asyncio
import json
import os


def event(text):
    path = os.environ.get("EVENTS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


async def app(scope, receive, send):
    mode = os.environ.get("LIFESPAN_MODE", "ok")
    if scope["type"] == "lifespan":
        if mode == "unsupported":
            raise RuntimeError("lifespan-unsupported-marker: this app only speaks http")
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                if mode == "fail":
                    await send({"type": "lifespan.startup.failed", "message": "startup-failed-marker"})
                    return
                if mode == "raise-startup":
                    raise RuntimeError("startup-raised-marker")
                scope["state"]["db"] = "connected"
                scope["state"]["counter"] = 0
                event("startup")
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                event("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
        return

    assert scope["type"] == "http"
    event("request " + scope["path"])
    if scope["path"] == "/hang":
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            event("hang-cancelled")
            raise
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"].decode() or "2"))
        event("slow-done")
    state = scope.get("state")
    body = json.dumps({"state": None if state is None else dict(state)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
