"""A Starlette route returning a small JSON document.

The framework dominates here; the scenario shows how much of the time is the server's.
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request):
    return JSONResponse({"message": "Hello, world!", "id": request.path_params["item_id"]})


app = Starlette(routes=[Route("/items/{item_id:int}", hello)])
