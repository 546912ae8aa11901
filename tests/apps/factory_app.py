"""An application factory for --factory."""

CALLS = []


def create_app():
    CALLS.append(1)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"from factory, calls={len(CALLS)}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app
