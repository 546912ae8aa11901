"""The app of bench/pathsend.py: the file named by $PATHSEND_FILE.

  /            200, then http.response.pathsend (the server sends the file)
  /starlette   Starlette's FileResponse (which uses pathsend when the scope
               offers it, and streams the file through the app otherwise)
  /stream      Starlette's FileResponse with pathsend hidden from it: the file
               read and sent by the app in Starlette's 64 KiB chunks
"""

import os

from starlette.responses import FileResponse

PATH = os.environ.get("PATHSEND_FILE", "/dev/null")
# The spec leaves the content-length to the app (granian sends a body
# without one chunked).
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/octet-stream"),
                     (b"content-length", str(os.path.getsize(PATH)).encode())]}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/starlette":
        await FileResponse(PATH)(scope, receive, send)
    elif scope["path"] == "/stream":
        ext = {k: v for k, v in (scope.get("extensions") or {}).items() if k != "http.response.pathsend"}
        await FileResponse(PATH)({**scope, "extensions": ext}, receive, send)
    else:
        await send(START)
        await send({"type": "http.response.pathsend", "path": PATH})
