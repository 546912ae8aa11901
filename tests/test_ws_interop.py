"""Interop with the `websockets` and `wsproto` client libraries (compression on
and off) and with Starlette and FastAPI WebSocket endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import pytest

from helpers import RawConn, loop_params, req
from helpers import assert_server_healthy
from ws_util import upgrade_request, wait_event

websockets = pytest.importorskip("websockets")
wsproto = pytest.importorskip("wsproto")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402
from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import (  # noqa: E402
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def _shared(request, shared, app):
    p = shared.get(app, request.param, ())
    mark = p.mark()
    return p, mark


@pytest.fixture(params=loop_params())
def wss(request, ws_shared):
    p, mark = _shared(request, ws_shared, "ws_app:app")
    yield p
    assert_server_healthy(p, mark)


@pytest.fixture(params=loop_params())
def star(request, ws_shared):
    p, mark = _shared(request, ws_shared, "ws_starlette:app")
    yield p
    assert_server_healthy(p, mark)


@pytest.fixture(params=loop_params())
def fast(request, ws_shared):
    p, mark = _shared(request, ws_shared, "ws_fastapi:app")
    yield p
    assert_server_healthy(p, mark)


def url(p, path):
    return f"ws://127.0.0.1:{p.port}{path}"


def wconnect(p, path, **kw):
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("proxy", None)
    kw.setdefault("max_size", 32 * 1024 * 1024)
    return connect(url(p, path), **kw)


# -- websockets --------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
def test_websockets_echo(wss, compression):
    with wconnect(wss, "/echo", compression=compression) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions")
        if compression:
            assert ext is not None and ext.startswith("permessage-deflate"), ext
        else:
            assert ext is None, ext
        for msg in ["hello", "héllo wörld \U0001F600", "", "x" * 70000]:
            ws.send(msg)
            assert ws.recv(timeout=5) == msg
        for msg in [b"\x00\x01", b"", os.urandom(100000), b"z" * 300000]:
            ws.send(msg)
            assert ws.recv(timeout=5) == msg
        ws.ping(b"lib ping").wait(5)
        ws.close(1000, "done")
    assert ws.close_code == 1000  # the server's answer echoes the code


@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
def test_websockets_fragmented_send(wss, compression):
    with wconnect(wss, "/echo", compression=compression) as ws:
        ws.send(["frag", "mented ", "text"])
        assert ws.recv(timeout=5) == "fragmented text"
        ws.send([b"a" * 1000, b"b" * 1000])
        assert ws.recv(timeout=5) == b"a" * 1000 + b"b" * 1000


def test_websockets_big_compressed_message(wss):
    payload = ("0123456789abcdef" * 65536).encode()  # 1 MiB, very compressible
    with wconnect(wss, "/echo", compression="deflate") as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload


def test_websockets_no_context_takeover_offers(wss):
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    for kw in ({"server_no_context_takeover": True}, {"client_no_context_takeover": True},
               {"server_no_context_takeover": True, "client_no_context_takeover": True},
               {"server_max_window_bits": 10, "client_max_window_bits": 10}):
        factory = ClientPerMessageDeflateFactory(**kw)
        with wconnect(wss, "/echo", compression=None, extensions=[factory]) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ext.startswith("permessage-deflate"), (kw, ext)
            if kw.get("server_no_context_takeover"):
                assert "server_no_context_takeover" in ext, (kw, ext)
            for i in range(5):
                msg = f"message {i} " * 100
                ws.send(msg)
                assert ws.recv(timeout=5) == msg
                ws.send(msg.encode())
                assert ws.recv(timeout=5) == msg.encode()


def test_websockets_subprotocol(wss):
    with wconnect(wss, "/subproto", subprotocols=["chat", "other"]) as ws:
        assert ws.subprotocol == "chat"
        assert json.loads(ws.recv(timeout=5)) == ["chat", "other"]


def test_websockets_server_close_code(wss):
    with wconnect(wss, "/close?code=4002&reason=bye") as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 4002
    assert ws.close_reason == "bye"


def test_websockets_rejected_handshake(wss):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as ei:
        wconnect(wss, "/close-before")
    assert ei.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as ei:
        wconnect(wss, "/deny")
    assert ei.value.response.status_code == 418
    assert ei.value.response.body == b"not a teapot"


def test_websockets_asyncio_client_many_concurrent(wss):
    from websockets.asyncio.client import connect as aconnect

    async def one(i):
        async with aconnect(url(wss, "/echo"), proxy=None, open_timeout=5) as ws:
            for j in range(20):
                await ws.send(f"{i}:{j}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"{i}:{j}"
        return i

    async def main():
        return await asyncio.gather(*(one(i) for i in range(30)))

    assert sorted(asyncio.run(asyncio.wait_for(main(), 30))) == list(range(30))


# -- wsproto -----------------------------------------------------------------------

class WsprotoClient:
    def __init__(self, p, path, extensions=(), subprotocols=()):
        self.sock = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.events = []
        self.sock.sendall(self.conn.send(Request(host=f"127.0.0.1:{p.port}", target=path,
                                                 extensions=list(extensions), subprotocols=list(subprotocols))))

    def next_event(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.conn.events():
                self.events.append(ev)
            if self.events:
                return self.events.pop(0)
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no wsproto event in time"
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            self.conn.receive_data(data or None)

    def send(self, event):
        self.sock.sendall(self.conn.send(event))

    def message(self, timeout=5.0):
        parts = []
        while True:
            ev = self.next_event(timeout)
            if isinstance(ev, Ping):
                self.send(ev.response())
                continue
            assert isinstance(ev, (TextMessage, BytesMessage)), ev
            parts.append(ev.data)
            if ev.message_finished:
                return "".join(parts) if isinstance(ev, TextMessage) else b"".join(parts)


@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "plain"])
def test_wsproto_echo_and_close(wss, deflate):
    c = WsprotoClient(wss, "/echo", extensions=[PerMessageDeflate()] if deflate else [])
    try:
        ev = c.next_event()
        assert isinstance(ev, AcceptConnection), ev
        names = [e.name for e in ev.extensions]
        assert names == (["permessage-deflate"] if deflate else []), names
        for msg in ["wsproto", "ünïcödé", "y" * 100000]:
            c.send(TextMessage(data=msg))
            assert c.message() == msg
        for msg in [b"\x00" * 10, os.urandom(70000)]:
            c.send(BytesMessage(data=msg))
            assert c.message() == msg
        c.send(Ping(payload=b"wsp"))
        ev = c.next_event()
        assert isinstance(ev, Pong) and ev.payload == b"wsp", ev
        c.send(CloseConnection(code=1001, reason="leaving"))
        ev = c.next_event()
        assert isinstance(ev, CloseConnection) and ev.code == 1001, ev
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b"", "server did not close TCP after the closing handshake"
    finally:
        c.sock.close()


def test_wsproto_rejection(wss):
    c = WsprotoClient(wss, "/deny")
    try:
        ev = c.next_event()
        assert isinstance(ev, RejectConnection), ev
        assert ev.status_code == 418
        assert ev.has_body
        body = b""
        while True:
            ev = c.next_event()
            assert isinstance(ev, RejectData), ev
            body += ev.data
            if ev.body_finished:
                break
        assert body == b"not a teapot"
    finally:
        c.sock.close()


# -- Starlette ---------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
def test_starlette_endpoint_echo(star, compression):
    mark = star.mark()
    with wconnect(star, "/ws", compression=compression) as ws:
        ws.send("text")
        assert ws.recv(timeout=5) == "text"
        ws.send(b"bytes")
        assert ws.recv(timeout=5) == b"bytes"
        ws.close(1000)
    ev = wait_event(star, "starlette-disconnect", "-", since=mark)
    assert ev["code"] == 1000


def test_starlette_subprotocol(star):
    with wconnect(star, "/ws", subprotocols=["graphql-ws"]) as ws:
        assert ws.subprotocol == "graphql-ws"


def test_starlette_json_endpoint(star):
    with wconnect(star, "/json") as ws:
        ws.send(json.dumps({"a": [1, 2]}))
        assert json.loads(ws.recv(timeout=5)) == {"got": {"a": [1, 2]}}


def test_starlette_route_path_params_and_app_close(star):
    with wconnect(star, "/room/lobby") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "lobby: hi"
        ws.send("close")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 4321
    assert ws.close_reason == "asked to"


def test_starlette_route_client_disconnect(star):
    mark = star.mark()
    with wconnect(star, "/room/x") as ws:
        ws.send("a")
        ws.recv(timeout=5)
        ws.close(4005)
    ev = wait_event(star, "starlette-room-disconnect", "-", since=mark)
    assert ev["code"] == 4005


def test_starlette_close_before_accept_is_403(star):
    c = RawConn.tcp(star.host, star.port)
    with c:
        assert c.request(upgrade_request("/reject")).status == 403


def test_starlette_unknown_websocket_route_is_403(star):
    c = RawConn.tcp(star.host, star.port)
    with c:
        assert c.request(upgrade_request("/no/such/route")).status == 403


# -- FastAPI -----------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflate", "plain"])
def test_fastapi_echo(fast, compression):
    mark = fast.mark()
    with wconnect(fast, "/ws", compression=compression) as ws:
        for m in ["one", b"two", "three" * 1000]:
            ws.send(m)
            assert ws.recv(timeout=5) == m
        ws.close(1000, "fin")
    ev = wait_event(fast, "fastapi-disconnect", "-", since=mark)
    assert ev["code"] == 1000


def test_fastapi_params_and_json(fast):
    with wconnect(fast, "/items/42?q=find") as ws:
        assert json.loads(ws.recv(timeout=5)) == {"item_id": 42, "q": "find"}
        ws.send(json.dumps({"k": "v"}))
        assert json.loads(ws.recv(timeout=5)) == {"echo": {"k": "v"}}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.close_code == 1000


def test_fastapi_dependency_rejects_with_403(fast):
    c = RawConn.tcp(fast.host, fast.port)
    with c:
        assert c.request(upgrade_request("/private")).status == 403
    with wconnect(fast, "/private?token=secret") as ws:
        assert ws.recv(timeout=5) == "welcome"


def test_fastapi_http_route_alongside(fast):
    c = RawConn.tcp(fast.host, fast.port)
    with c:
        r = c.request(req("GET", "/"))
        assert r.status == 200 and r.json() == {"ok": True}
