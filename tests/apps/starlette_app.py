"""A Starlette application: JSON routes, path parameters, request bodies."""

import asyncio
import sys

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


async def index(request: Request):
    return PlainTextResponse("starlette ok")


async def item(request: Request):
    return JSONResponse({"item_id": request.path_params["item_id"], "q": request.query_params.get("q")})


async def echo_json(request: Request):
    data = await request.json()
    return JSONResponse({"received": data, "method": request.method})


async def stream(request: Request):
    async def gen():
        for i in range(5):
            yield f"line {i}\n"

    return StreamingResponse(gen(), media_type="text/plain")


async def headers(request: Request):
    return JSONResponse({"x-custom": request.headers.get("x-custom"), "client": list(request.client or [])})


async def with_background(request: Request):
    async def slow_task():
        await asyncio.sleep(2)

    return PlainTextResponse("sent before the task", background=BackgroundTask(slow_task))


async def infinite(request: Request):
    async def gen():
        try:
            i = 0
            while True:
                yield f"tick {i}\n"
                i += 1
                await asyncio.sleep(0.05)
        finally:
            print("INFINITE-STOPPED", flush=True, file=sys.stderr)

    return StreamingResponse(gen(), media_type="text/plain")


app = Starlette(routes=[
    Route("/", index),
    Route("/items/{item_id:int}", item),
    Route("/echo", echo_json, methods=["POST"]),
    Route("/stream", stream),
    Route("/headers", headers),
    Route("/background", with_background),
    Route("/infinite", infinite),
])
