"""Plaintext: the 13-byte "Hello, world!" as text/plain, raw ASGI 3.

The same file is served by every server in the benchmark.
"""

BODY = b"Hello, world!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        await lifespan(receive, send)
        return
    await send(START)
    await send(RESPONSE)


async def lifespan(receive, send):
    # Answer lifespan messages so no server logs a warning about them.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
