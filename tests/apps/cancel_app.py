"""Apps that cancel their own receive() and send() calls, the way real
libraries do: asyncio.wait_for, anyio cancel scopes, Starlette's
request.is_disconnected(), sse-starlette's task group. Each route answers with
what it saw, so a lost or duplicated message shows in the response."""

import asyncio
import os

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

WAIT = float(os.environ.get("CANCEL_APP_WAIT", "0.2"))


async def ws_wait_for(websocket: WebSocket):
    """Echoes each text message with the number of receive timeouts so far
    (each timeout also printed, for tests to wait on)."""
    await websocket.accept()
    timeouts = 0
    while True:
        try:
            text = await asyncio.wait_for(websocket.receive_text(), WAIT)
        except asyncio.TimeoutError:
            timeouts += 1
            print(f"WS-RECEIVE-TIMEOUTS {timeouts}", flush=True)
            continue
        except WebSocketDisconnect:
            return
        await websocket.send_text(f"{text} after {timeouts} timeouts")


async def ws_anyio(websocket: WebSocket):
    """The same with an anyio cancel scope instead of wait_for."""
    await websocket.accept()
    timeouts = 0
    while True:
        with anyio.move_on_after(WAIT) as scope:
            try:
                text = await websocket.receive_text()
            except WebSocketDisconnect:
                return
        if scope.cancelled_caught:
            timeouts += 1
            print(f"WS-RECEIVE-TIMEOUTS {timeouts}", flush=True)
            continue
        await websocket.send_text(f"{text} after {timeouts} timeouts")


async def stream_is_disconnected(request: Request):
    """A StreamingResponse whose generator asks is_disconnected() per chunk."""
    n = int(request.query_params.get("n", "20"))

    async def chunks():
        i = 0
        try:
            for i in range(n):
                if await request.is_disconnected():
                    print(f"STREAM-SAW-DISCONNECT {i}", flush=True)
                    return
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0.005)
        finally:
            print(f"STREAM-ENDED {i}", flush=True)

    return StreamingResponse(chunks(), media_type="text/plain")


async def sse(request: Request):
    n = int(request.query_params.get("n", "10"))
    gap = float(request.query_params.get("gap", "0.02"))

    async def events():
        # As the usual examples do: stop early when the client is gone.
        for i in range(n):
            if await request.is_disconnected():
                print(f"SSE-SAW-DISCONNECT {i}", flush=True)
                return
            yield {"event": "tick", "data": str(i)}
            await asyncio.sleep(gap)

    return EventSourceResponse(events(), ping=1)


async def sse_forever(request: Request):
    async def events():
        i = 0
        try:
            while True:
                yield {"data": str(i)}
                i += 1
                await asyncio.sleep(0.05)
        finally:
            print("SSE-FOREVER-ENDED", flush=True)

    return EventSourceResponse(events(), ping=1)


async def body_timeout_app(scope, receive, send):
    """Reads the body after a receive() that timed out (wait_for) or was
    cancelled by an anyio scope (?anyio), then echoes it."""
    timeouts = 0
    first = None
    if b"anyio" in scope["query_string"]:
        with anyio.move_on_after(WAIT) as cs:
            first = await receive()
        timeouts += cs.cancelled_caught
    else:
        try:
            first = await asyncio.wait_for(receive(), WAIT)
        except asyncio.TimeoutError:
            timeouts += 1
    body = b""
    msg = first
    while True:
        if msg is None:
            msg = await receive()
        if msg["type"] != "http.request":
            print(f"BODY-TIMEOUT-GOT {msg['type']}", flush=True)
            return
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
        msg = None
    out = b"timeouts=%d body=%s" % (timeouts, body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


async def two_receives_app(scope, receive, send):
    """Two receive() calls at once, from two tasks: one waits plainly, the
    other with a short wait_for that keeps timing out. Every body piece
    reaches exactly one of them, in order, whatever the cancellations."""
    got = []
    done = asyncio.Event()

    async def plain():
        while not done.is_set():
            msg = await receive()
            got.append(msg.get("body", b""))
            if not msg.get("more_body"):
                done.set()

    async def impatient():
        while not done.is_set():
            try:
                msg = await asyncio.wait_for(receive(), 0.01)
            except asyncio.TimeoutError:
                continue
            got.append(msg.get("body", b""))
            if not msg.get("more_body"):
                done.set()

    tasks = [asyncio.ensure_future(plain()), asyncio.ensure_future(impatient())]
    await asyncio.wait_for(done.wait(), 10)
    for t in tasks:
        t.cancel()
    out = b"".join(got)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(out))]})
    await send({"type": "http.response.body", "body": out})


async def send_timeout_app(scope, receive, send):
    """Streams numbered blocks to a client that does not read at first; each
    send() is bounded by wait_for, so some are cancelled while they wait for
    the transport to drain. Every block was written all the same: the client
    must get every block, whole and in order, in valid chunked framing."""
    blocks = int(dict(p.split("=") for p in scope["query_string"].decode().split("&"))["blocks"])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    timeouts = 0
    for i in range(blocks):
        block = (b"%08d" % i) * 8192  # 64 KiB
        try:
            await asyncio.wait_for(send({"type": "http.response.body", "body": block,
                                         "more_body": True}), 0.01)
        except asyncio.TimeoutError:
            timeouts += 1
    print(f"SEND-TIMEOUTS {timeouts}", flush=True)
    await send({"type": "http.response.body", "body": b""})


async def background_task_app(scope, receive, send):
    """Starts a task of its own that outlives the request; at shutdown it must
    be cancelled (its except/finally run), never destroyed pending."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def background():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("BACKGROUND-CANCELLED", flush=True)
            raise
        finally:
            await asyncio.sleep(0.05)  # clean-up that itself waits
            print("BACKGROUND-FINALLY", flush=True)

    async def stuck():
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)
            print("REQUEST-FINALLY", flush=True)

    async def stubborn():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("STUBBORN-IGNORED-CANCEL", flush=True)

    if scope["path"] == "/stubborn":
        background_task_app.tasks.append(asyncio.ensure_future(stubborn()))
    else:
        background_task_app.tasks.append(asyncio.ensure_future(background()))
    if scope["path"] == "/stuck":
        await stuck()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"7")]})
    await send({"type": "http.response.body", "body": b"started"})


background_task_app.tasks = []

app = Starlette(routes=[
    WebSocketRoute("/ws-wait-for", ws_wait_for),
    WebSocketRoute("/ws-anyio", ws_anyio),
    Route("/stream-is-disconnected", stream_is_disconnected),
    Route("/sse", sse),
    Route("/sse-forever", sse_forever),
    Mount("/body-timeout", app=body_timeout_app),
    Mount("/two-receives", app=two_receives_app),
    Mount("/send-timeout", app=send_timeout_app),
])


async def lifespan_wait_for_app(scope, receive, send):
    """Waits for lifespan.shutdown with a receive() that keeps timing out."""
    if scope["type"] == "lifespan":
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        timeouts = 0
        while True:
            try:
                msg = await asyncio.wait_for(receive(), 0.05)
            except asyncio.TimeoutError:
                timeouts += 1
                continue
            print(f"LIFESPAN-GOT {msg['type']} after {timeouts} timeouts", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
