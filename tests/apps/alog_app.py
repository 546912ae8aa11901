"""The access log format tests' app (ASGI) and its WSGI twin for gunicorn's
own sync worker: the same status, headers and body for the same path.

- ``/`` and any other path: 200, content-type text/plain, x-served-by casgi,
  the body "hello" (404 with "missing" for ``/missing``);
- ``/partial``: 200, "partial" with more to come, then waits for the
  client to go away;
- ``/big``: 200, 200,000 bytes in one send, then waits for the client to go.
"""

BIG = 200_000


def _answer(path):
    if path == "/missing":
        return 404, b"missing"
    return 200, b"hello"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path in ("/partial", "/big"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        body = b"partial" if path == "/partial" else b"x" * BIG
        await send({"type": "http.response.body", "body": body, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    status, body = _answer(path)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"x-served-by", b"casgi"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    status, body = _answer(environ["PATH_INFO"])
    start_response("%d %s" % (status, "OK" if status == 200 else "Not Found"),
                   [("Content-Type", "text/plain"), ("X-Served-By", "casgi"),
                    ("Content-Length", str(len(body)))])
    return [body]
