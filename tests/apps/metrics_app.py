"""The app of the metrics tests (tests/test_metrics.py).

GET /status/N     answers status N (an empty body)
GET /block?S      blocks the event loop for S seconds (time.sleep), then 200
GET /pid          the worker's pid as text
WS  /ws           accepts, echoes one message, closes
WS  /deny         closes before accepting (403)
"""

import os
import time

from plain_lifespan import lifespan


async def _respond(send, status: int, body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    path = scope["path"]
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if path == "/deny":
            await send({"type": "websocket.close"})
            return
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
            await send({"type": "websocket.close", "code": 1000})
        return
    if path.startswith("/status/"):
        await _respond(send, int(path[len("/status/"):]))
    elif path == "/block":
        time.sleep(float(scope["query_string"] or b"1"))
        await _respond(send, 200, b"unblocked")
    elif path == "/pid":
        await _respond(send, 200, str(os.getpid()).encode())
    else:
        await _respond(send, 404)
