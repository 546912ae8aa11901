"""FastAPI WebSocket endpoints: echo, a path/query parameter, a dependency that
rejects, and an HTTP route next to them."""

from fastapi import Depends, FastAPI, WebSocket, WebSocketDisconnect, WebSocketException, status

app = FastAPI()


@app.get("/")
async def index():
    return {"ok": True}


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                print(f"WSEVENT fastapi-disconnect - {{\"code\": {message.get('code')}}}", flush=True)
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:  # pragma: no cover
        return


@app.websocket("/items/{item_id}")
async def item(websocket: WebSocket, item_id: int, q: str = "none"):
    await websocket.accept()
    await websocket.send_json({"item_id": item_id, "q": q})
    data = await websocket.receive_json()
    await websocket.send_json({"echo": data})
    await websocket.close()


def require_token(websocket: WebSocket):
    if websocket.query_params.get("token") != "secret":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
    return "ok"


@app.websocket("/private")
async def private(websocket: WebSocket, token: str = Depends(require_token)):
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close()
