"""JSON: json.dumps of a small dict on every request, raw ASGI 3.

The same file is served by every server in the benchmark.
"""

import json

MESSAGE = {"message": "Hello, world!", "id": 1, "tags": ["asgi", "bench"], "ok": True}


async def app(scope, receive, send):
    if scope["type"] != "http":
        await lifespan(receive, send)
        return
    body = json.dumps(MESSAGE).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
