"""The page a real browser loads in tests/test_browser.py. Its script POSTs a
body to /scope, which answers with the request's HTTP version; opens a
WebSocket to /ws, which first says which HTTP version carried the handshake
and then echoes; closes it; and writes every result into <pre id="out">.

The page itself stays incomplete until the script has POSTed /done: the
browser dumps its DOM once the document has loaded, so the dump always holds
everything the script wrote."""

import asyncio
import json

from plain_lifespan import lifespan

HEAD = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>casgi</title></head>
<body><pre id="out"></pre>
<script>
const out = document.getElementById("out");
const say = (line) => { out.textContent += line + "\\n"; };
(async () => {
  const r = await fetch("/scope", {method: "POST", body: "x".repeat(70000)});
  const s = await r.json();
  say("fetch " + r.status + " http_version=" + s.http_version + " scheme=" + s.scheme +
      " body=" + s.body_length);
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  const closed = new Promise((resolve) => { ws.onclose = (e) => resolve(e.code); });
  ws.onerror = () => say("ws error");
  await new Promise((resolve) => {
    ws.onmessage = (e) => {
      say("ws " + e.data);
      if (e.data.startsWith("echo ")) { resolve(); } else { ws.send("ping"); }
    };
  });
  ws.close(1000);
  say("ws closed " + await closed);
})().catch((e) => say("error " + e)).finally(() => fetch("/done", {method: "POST"}));
</script>
"""
TAIL = b"</body></html>\n"

# Set by POST /done; the page being served waits for it (a fresh event per page).
done = asyncio.Event()


async def read_body(receive) -> int:
    length = 0
    while True:
        message = await receive()
        length += len(message.get("body", b""))
        if not message.get("more_body"):
            return length


async def app(scope, receive, send):
    global done
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "http_version=" + scope["http_version"]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo " + message.get("text", "")})
    length = await read_body(receive)
    path, status = scope["path"], 200
    if path == "/scope":
        body = json.dumps({"http_version": scope["http_version"], "scheme": scope["scheme"],
                           "body_length": length}).encode()
        ctype = b"application/json"
    elif path == "/done":
        done.set()
        body, ctype = b"", b"text/plain"
    elif path == "/":
        done = asyncio.Event()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": HEAD, "more_body": True})
        await asyncio.wait_for(done.wait(), 60)
        await send({"type": "http.response.body", "body": TAIL})
        return
    else:
        body, ctype, status = b"not found", b"text/plain", 404
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})
