"""A Quart app: JSON route, raw body echo and a WebSocket echo."""
from quart import Quart, request, websocket
app = Quart(__name__)
@app.route("/")
async def index():
    return {"hello": "quart", "q": request.args.get("q")}
@app.route("/echo", methods=["POST"])
async def echo():
    return await request.get_data()
@app.websocket("/ws")
async def ws():
    while True:
        data = await websocket.receive()
        await websocket.send(data)
