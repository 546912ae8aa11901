"""A Starlette app for the reload tests: the tests rewrite the VERSION line.

GET / answers "VERSION PID" (x-pid header); GET /stream never ends.
The lifespan appends "startup|shutdown PID VERSION" to $SUP_HOOKS.
"""

import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

VERSION = "v0"


def _hook(what: str) -> None:
    path = os.environ.get("SUP_HOOKS")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.getpid()} {VERSION}\n")


@contextlib.asynccontextmanager
async def lifespan(app):
    _hook("startup")
    yield
    _hook("shutdown")


async def homepage(request):
    return PlainTextResponse(f"{VERSION} {os.getpid()}", headers={"x-pid": str(os.getpid())})


async def stream(request):
    async def forever():
        i = 0
        while True:
            yield f"chunk {i}\n"
            i += 1
            await asyncio.sleep(0.1)

    return StreamingResponse(forever(), media_type="text/plain")


app = Starlette(routes=[Route("/", homepage), Route("/stream", stream)], lifespan=lifespan)
