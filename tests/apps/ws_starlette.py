"""Starlette WebSocket endpoints: a WebSocketEndpoint class, a WebSocketRoute
function, a path parameter, a subprotocol, a close with a code."""

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


class Echo(WebSocketEndpoint):
    encoding = None  # text stays text, bytes stay bytes

    async def on_connect(self, websocket: WebSocket):
        proto = websocket.scope["subprotocols"][0] if websocket.scope["subprotocols"] else None
        await websocket.accept(subprotocol=proto)

    async def on_receive(self, websocket: WebSocket, data):
        if isinstance(data, dict):
            if data.get("text") is not None:
                await websocket.send_text(data["text"])
            else:
                await websocket.send_bytes(data["bytes"])
        elif isinstance(data, str):
            await websocket.send_text(data)
        else:
            await websocket.send_bytes(data)

    async def on_disconnect(self, websocket: WebSocket, close_code: int):
        print(f"WSEVENT starlette-disconnect - {{\"code\": {int(close_code)}}}", flush=True)


class JsonEcho(WebSocketEndpoint):
    encoding = "json"

    async def on_receive(self, websocket: WebSocket, data):
        await websocket.send_json({"got": data})


async def room(websocket: WebSocket):
    await websocket.accept()
    name = websocket.path_params["name"]
    try:
        while True:
            text = await websocket.receive_text()
            if text == "close":
                await websocket.close(code=4321, reason="asked to")
                return
            await websocket.send_text(f"{name}: {text}")
    except WebSocketDisconnect as exc:
        print(f"WSEVENT starlette-room-disconnect - {{\"code\": {exc.code}}}", flush=True)


async def reject(websocket: WebSocket):
    await websocket.close(code=1008)


app = Starlette(routes=[
    WebSocketRoute("/ws", Echo),
    WebSocketRoute("/json", JsonEcho),
    WebSocketRoute("/room/{name}", room),
    WebSocketRoute("/reject", reject),
])
