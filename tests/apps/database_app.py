"""The pattern casgi was started for: a Starlette app whose startup and
shutdown hooks connect and disconnect a database object.

The database is a small fake with async connect()/disconnect() that write
marker files into $DB_MARKER_DIR, so a test can see both hooks ran.
"""

import asyncio
import contextlib
import inspect
import os

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


class Database:
    def __init__(self, marker_dir):
        self.marker_dir = marker_dir
        self.connected = False
        self.rows = {"1": "first", "2": "second"}

    def _mark(self, name):
        with open(os.path.join(self.marker_dir, name), "w") as f:
            f.write(str(os.getpid()))

    async def connect(self):
        await asyncio.sleep(0.01)
        self.connected = True
        self._mark("connected")

    async def disconnect(self):
        await asyncio.sleep(0.01)
        self.connected = False
        self._mark("disconnected")

    async def fetch(self, key):
        if not self.connected:
            raise RuntimeError("database is not connected")
        return self.rows.get(key)


database = Database(os.environ.get("DB_MARKER_DIR", "."))


async def row(request):
    value = await database.fetch(request.path_params["key"])
    return JSONResponse({"key": request.path_params["key"], "value": value, "connected": database.connected})


routes = [Route("/rows/{key}", row)]

if "on_startup" in inspect.signature(Starlette.__init__).parameters:
    app = Starlette(routes=routes, on_startup=[database.connect], on_shutdown=[database.disconnect])
else:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await database.connect()
        yield
        await database.disconnect()

    app = Starlette(routes=routes, lifespan=lifespan)
