"""--timeout-request-body-idle: a request body that makes no progress for that
long ends the request: 408 (connection: close) before the response started,
a plain close after; the app's pending receive() gets http.disconnect. A
slow body that keeps coming, or one the app is slow to read, is not cut."""

from __future__ import annotations

import time

from helpers import RawConn, req

APP = '''
import sys

def note(*parts):
    print(*parts, file=sys.stderr, flush=True)

async def read_all(receive):
    body = b""
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            return None
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/start-then-read":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
    body = await read_all(receive)
    if body is None:
        note("APP-GOT-DISCONNECT", scope["path"])
        return
    if scope["path"] == "/start-then-read":
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})
'''

IDLE = 0.5


def start(start_server, tmp_path, loop, *extra):
    (tmp_path / "body_app.py").write_text(APP)
    return start_server("body_app:app", "--timeout-request-body-idle", str(IDLE), *extra, loop=loop,
                        app_dir=tmp_path)


def post_head(path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {length}\r\n\r\n").encode()


def test_stalled_body_gets_408_and_app_gets_disconnect(start_server, tmp_path, loop):
    s = start(start_server, tmp_path, loop)
    mark = s.mark()
    with s.connect(timeout=5) as c:
        c.send(post_head("/read", 100) + b"x" * 10)
        t0 = time.monotonic()
        r = c.read_response()
        took = time.monotonic() - t0
        assert r.status == 408
        assert r.has_token("connection", "close")
        assert IDLE * 0.8 <= took < IDLE + 1.5, f"408 after {took:.2f}s with an idle bound of {IDLE}s"
        c.read_until_close(timeout=2)
    s.wait_for(r"APP-GOT-DISCONNECT /read", since=mark, timeout=3)
    with s.connect() as c:
        assert c.request(req("POST", "/read", body=b"abc")).body == b"3"


def test_stalled_body_after_response_start_closes(start_server, tmp_path, loop):
    s = start(start_server, tmp_path, loop)
    mark = s.mark()
    with s.connect(timeout=5) as c:
        c.send(post_head("/start-then-read", 100) + b"x" * 10)
        head = c.read_head()
        assert head.status == 200
        t0 = time.monotonic()
        c.read_until_close(timeout=IDLE + 3)
        assert time.monotonic() - t0 < IDLE + 1.5
    s.wait_for(r"APP-GOT-DISCONNECT /start-then-read", since=mark, timeout=3)


def test_slow_body_that_keeps_coming_is_not_cut(start_server, tmp_path, loop):
    s = start(start_server, tmp_path, loop)
    with s.connect(timeout=5) as c:
        c.send(post_head("/read", 8))
        for _ in range(8):  # 8 * 0.2 s: longer than the bound, never idle that long
            time.sleep(IDLE * 0.4)
            c.send(b"y")
        r = c.read_response()
        assert r.status == 200 and r.body == b"8"


def test_body_the_app_reads_late_is_not_cut(start_server, tmp_path, loop):
    """Reading paused because the app is behind (its body buffer full) is not
    the client's stall."""
    s = start_server("basic:app", "--timeout-request-body-idle", str(IDLE), loop=loop)
    body = b"z" * (1 << 20)
    with s.connect(timeout=10) as c:
        c.send(post_head("/delayed-read?t=1.5", len(body)))
        c.sock.sendall(body)
        r = c.read_response()
        assert r.status == 200 and len(r.body) == len(body)


def test_a_client_waiting_for_100_continue_is_not_idle(start_server, tmp_path, loop):
    """With Expect: 100-continue the client sends nothing until the app reads:
    the idle clock starts with the 100 Continue, not with the head."""
    s = start_server("basic:app", "--timeout-request-body-idle", str(IDLE), loop=loop)
    with s.connect(timeout=10) as c:
        c.send(b"POST /delayed-read?t=1.5 HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
               b"expect: 100-continue\r\n\r\n")
        interim = c.read_response(allow_interim=True)
        assert interim.status == 100
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"
