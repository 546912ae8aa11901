"""WebSocket opening handshake, --ws modes, subprotocols, the websocket scope and
the ASGI message flow (accept, close before accept, exceptions, denial
responses, receive/send, disconnect codes, send after disconnect, logs)."""

from __future__ import annotations

import base64
import json
import socket
import struct
import time

import pytest

from helpers import RawConn, assert_server_healthy, req
from ws_util import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WsConn,
    build_frame,
    open_ws,
    raw_handshake,
    upgrade_request,
    wait_event,
    ws_accept_for,
    ws_key,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ws1(ws_shared):
    """The shared server on asyncio only (for checks that do not depend on the transport)."""
    p = ws_shared.get("ws_app:app", "asyncio", ())
    mark = p.mark()
    yield p
    assert_server_healthy(p, mark)


def handshake(p, request: bytes):
    c, r = raw_handshake(p.host, p.port, request)
    return c, r


# -- the opening handshake -------------------------------------------------------

def test_rfc_example_key_gets_the_rfc_accept_value(wss):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    c, r = handshake(wss, upgrade_request("/echo", key=key))
    with c:
        assert r.status == 101, r.raw
        assert r.version == "1.1"
        assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert r.has_token("upgrade", "websocket"), r.raw
        assert r.has_token("connection", "upgrade"), r.raw
        assert r.header("content-length") is None and r.header("transfer-encoding") is None, r.raw
        assert r.header("sec-websocket-protocol") is None, r.raw
        assert c.buf == b"", f"bytes after the 101 head before any frame: {c.buf!r}"


@pytest.mark.parametrize("n", range(5))
def test_random_keys_accept_value(ws1, n):
    key = ws_key()
    c, r = handshake(ws1, upgrade_request("/echo", key=key))
    with c:
        assert r.status == 101, r.raw
        assert r.header("sec-websocket-accept") == ws_accept_for(key)


def test_key_and_version_with_surrounding_whitespace(ws1):
    key = ws_key()
    raw = upgrade_request("/echo", key=key).replace(key.encode(), b"  " + key.encode() + b" \t")
    raw = raw.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version:   13  ")
    c, r = handshake(ws1, raw)
    with c:
        assert r.status == 101, r.raw
        assert r.header("sec-websocket-accept") == ws_accept_for(key)


@pytest.mark.parametrize("extra", [
    {"connection": "keep-alive, Upgrade"},
    {"connection": "upgrade"},
    {"upgrade": "WebSocket"},
])
def test_header_token_forms_accepted(ws1, extra):
    c, r = handshake(ws1, upgrade_request("/echo", **extra))
    with c:
        assert r.status == 101, r.raw


def test_echo_after_handshake_on_the_same_connection(wss):
    with open_ws(wss, "/echo") as ws:
        ws.send_text("hello")
        assert ws.recv_text() == "hello"
        ws.send_binary(b"\x00\x01\xff")
        assert ws.recv_binary() == b"\x00\x01\xff"
        ws.close_handshake(1000)


@pytest.mark.parametrize("version", ["12", "8", "14", "abc"])
def test_unsupported_version_426(ws1, version):
    c, r = handshake(ws1, upgrade_request("/echo", version=version))
    with c:
        assert r.status == 426, r.raw
        assert r.header("sec-websocket-version") == "13", r.raw


def test_unsupported_version_response_is_complete(ws1):
    """The 426 is a complete HTTP response (framed body or connection close)."""
    c = RawConn.tcp(ws1.host, ws1.port)
    with c:
        r = c.request(upgrade_request("/echo", version="7"))
        assert r.status == 426


def test_missing_version_rejected(ws1):
    c = RawConn.tcp(ws1.host, ws1.port)
    with c:
        r = c.request(upgrade_request("/echo", version=None))
        assert r.status in (400, 426), r.raw


def test_first_frame_in_the_same_segment_as_the_handshake(wss):
    """The client's first frame arrives together with the upgrade request."""
    key = ws_key()
    c = RawConn.tcp(wss.host, wss.port)
    with c:
        c.send(upgrade_request("/echo", key=key) + build_frame(OP_TEXT, b"early bird"))
        r = c.read_head()
        assert r.status == 101, r.raw
        ws = WsConn(c, r)
        assert ws.recv_text() == "early bird"


def test_upgrade_after_a_keep_alive_request(wss):
    c = RawConn.tcp(wss.host, wss.port)
    with c:
        assert c.request(req("GET", "/first")).status == 200
        c.send(upgrade_request("/echo"))
        r = c.read_head()
        assert r.status == 101, r.raw
        ws = WsConn(c, r)
        ws.send_text("after http")
        assert ws.recv_text() == "after http"


@pytest.mark.parametrize("key", [
    "abc",
    base64.b64encode(b"x" * 15).decode(),
    base64.b64encode(b"x" * 17).decode(),
    "!!!!!!!!!!!!!!!!!!!!!!==",
    "dGhlIHNhbXBsZSBub25jZQ",  # padding missing
    "",
])
def test_bad_key_400(ws1, key):
    c = RawConn.tcp(ws1.host, ws1.port)
    with c:
        c.send(upgrade_request("/echo", key=key) if key else upgrade_request("/echo", key=False))
        r = c.read_response()
        assert r.status == 400, (key, r.raw)


def test_two_keys_400(ws1):
    """Two Sec-WebSocket-Key fields, even equal ones, are not one key."""
    mark = ws1.mark()
    key = ws_key()
    for second in (key, ws_key()):
        c = RawConn.tcp(ws1.host, ws1.port)
        with c:
            c.send(upgrade_request("/echo?id=twokeys", key=key, extra=[f"Sec-WebSocket-Key: {second}"]))
            r = c.read_response()
            assert r.status == 400, r.raw
            c.assert_closed()
    assert "WSEVENT accepted twokeys" not in ws1.output(mark)


def test_bad_key_does_not_reach_the_app(ws1):
    mark = ws1.mark()
    c = RawConn.tcp(ws1.host, ws1.port)
    with c:
        c.send(upgrade_request("/echo?id=badkey", key="abc"))
        assert c.read_response().status == 400
    with open_ws(ws1, "/echo?id=goodkey") as ws:
        wait_event(ws1, "accepted", "goodkey", since=mark)
        ws.close_handshake()
    assert "WSEVENT accepted badkey" not in ws1.output(mark)


def test_ws_none_serves_upgrade_as_http(start_server, loop):
    s = start_server("ws_app:app", "--ws", "none", loop=loop)
    c = RawConn.tcp(s.host, s.port)
    with c:
        r = c.request(upgrade_request("/plain?q=1"))
        assert r.status == 200, r.raw
        data = r.json()
        assert data["type"] == "http"
        assert data["path"] == "/plain"
        names = [n for n, _ in data["headers"]]
        assert "upgrade" in names and "sec-websocket-key" in names
        # the connection is still a plain HTTP connection
        r2 = c.request(req("GET", "/again"))
        assert r2.status == 200 and r2.json()["path"] == "/again"


@pytest.mark.parametrize("mode", ["auto", "casgi"])
def test_ws_modes_upgrade(start_server, mode):
    s = start_server("ws_app:app", "--ws", mode)
    with open_ws(s, "/echo") as ws:
        ws.send_text("m")
        assert ws.recv_text() == "m"


def test_plain_http_still_served_by_the_ws_app(ws1):
    c = RawConn.tcp(ws1.host, ws1.port)
    with c:
        r = c.request(req("GET", "/x"))
        assert r.status == 200 and r.json()["type"] == "http"


# -- subprotocols and accept headers ---------------------------------------------

def test_subprotocol_negotiation_and_extra_headers(wss):
    with open_ws(wss, "/subproto", subprotocols=["chat", "superchat"]) as ws:
        r = ws.response
        assert r.header("sec-websocket-protocol") == "chat", r.raw
        assert r.header("x-extra") == "yes", r.raw
        assert r.header("x-second") == "2", r.raw
        assert json.loads(ws.recv_text()) == ["chat", "superchat"]
        ws.close_handshake()


def test_subprotocols_from_several_header_lines(ws1):
    with open_ws(ws1, "/subproto?proto=b", headers=[("Sec-WebSocket-Protocol", "a, b"),
                                                    ("Sec-WebSocket-Protocol", "c")]) as ws:
        assert ws.response.header("sec-websocket-protocol") == "b", ws.response.raw
        assert json.loads(ws.recv_text()) == ["a", "b", "c"]


def test_no_subprotocol_offered(ws1):
    with open_ws(ws1, "/subproto") as ws:
        assert ws.response.header("sec-websocket-protocol") is None, ws.response.raw
        assert ws.response.header("x-extra") == "yes"
        assert json.loads(ws.recv_text()) == []


# -- scope -------------------------------------------------------------------------

def get_scope(p, path, **kw):
    ws = open_ws(p, path, **kw)
    with ws:
        scope = json.loads(ws.recv_text())
        scope["_local_port"] = ws.raw.local_port
        ws.close_handshake()
    return scope, ws


def test_scope_fields(wss):
    scope, ws = get_scope(wss, "/scope/x%20y?a=1&b=%20", subprotocols=["p1", "p2"],
                          headers=[("X-Custom", "Value 1")])
    local_port = scope["_local_port"]
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"] == "2.4"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope/x y"
    assert scope["raw_path"] == "/scope/x%20y"
    assert scope["_types"]["raw_path"] == "bytes"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["_types"]["query_string"] == "bytes"
    assert scope["root_path"] == ""
    assert scope["client"] == ["127.0.0.1", local_port]
    assert scope["server"] == ["127.0.0.1", wss.port]
    assert scope["subprotocols"] == ["p1", "p2"]
    assert scope["_types"]["subprotocols"] == "list"
    headers = scope["headers"]
    assert scope["_header_types"][1:] == ["bytes", "bytes"]
    names = [n for n, _ in headers]
    assert all(n == n.lower() for n in names), names
    assert ["x-custom", "Value 1"] in headers
    assert ["upgrade", "websocket"] in headers
    assert ["sec-websocket-version", "13"] in headers
    assert "sec-websocket-key" in names
    assert scope["extensions"].get("websocket.http.response") == {}
    assert scope["state"]["type"] == "dict"
    assert scope["state"]["value"] == "yes", "lifespan state not copied into the websocket scope"


def test_scope_wss_behind_trusted_proxy(ws1):
    scope, _ = get_scope(ws1, "/scope", headers=[("X-Forwarded-Proto", "https"),
                                                 ("X-Forwarded-For", "10.1.2.3")])
    assert scope["scheme"] == "wss"
    assert scope["client"][0] == "10.1.2.3"


def test_scope_x_forwarded_proto_wss(ws1):
    """uvicorn's proxy-header handling takes ws/wss as well as http/https."""
    scope, _ = get_scope(ws1, "/scope", headers=[("X-Forwarded-Proto", "wss")])
    assert scope["scheme"] == "wss"


def test_scope_untrusted_proxy_headers_ignored(start_server):
    s = start_server("ws_app:app", "--forwarded-allow-ips", "10.9.9.9")
    scope, _ = get_scope(s, "/scope", headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "10.1.2.3")])
    assert scope["scheme"] == "ws"
    assert scope["client"][0] == "127.0.0.1"


def test_scope_root_path_matches_http_scope(start_server):
    s = start_server("ws_app:app", "--root-path", "/api")
    scope, _ = get_scope(s, "/scope?z=1")
    c = RawConn.tcp(s.host, s.port)
    with c:
        h = c.request(req("GET", "/scope?z=1")).json()
    assert scope["root_path"] == "/api" == h["root_path"]
    assert scope["path"] == h["path"]
    assert scope["raw_path"] == h["raw_path"]


# -- ASGI flow ---------------------------------------------------------------------

def test_close_before_accept_is_403(wss):
    mark = wss.mark()
    c = RawConn.tcp(wss.host, wss.port)
    with c:
        r = c.request(upgrade_request("/close-before"))
        assert r.status == 403, r.raw
    wss.wait_for(r'127\.0\.0\.1:\d+ - "WebSocket /close-before" 403', since=mark)


def test_exception_before_accept_is_500(wss):
    mark = wss.mark()
    c = RawConn.tcp(wss.host, wss.port)
    with c:
        r = c.request(upgrade_request("/raise-before"))
        assert r.status == 500, r.raw
    wss.wait_for("raised before accept", since=mark)
    wss.wait_for(r'"WebSocket /raise-before" 500', since=mark)


def test_return_without_accept_is_500(ws1):
    c = RawConn.tcp(ws1.host, ws1.port)
    with c:
        r = c.request(upgrade_request("/return-before"))
        assert r.status == 500, r.raw


def test_exception_after_accept_closes_1011(wss):
    mark = wss.mark()
    with open_ws(wss, "/raise-after") as ws:
        ws.send_text("boom")
        ws.fail_with(1011)
    wss.wait_for("raised after accept", since=mark)


def test_denial_response(wss):
    c = RawConn.tcp(wss.host, wss.port)
    with c:
        c.send(upgrade_request("/deny"))
        r = c.read_response()
        assert r.status == 418, r.raw
        assert r.header("x-deny") == "1"
        assert r.header("content-type") == "text/plain"
        assert r.body == b"not a teapot"
        assert r.header("sec-websocket-accept") is None
        assert not r.has_token("upgrade", "websocket")


def test_receive_message_shapes(wss):
    with open_ws(wss, "/events") as ws:
        ws.send_text("héllo")
        m = ws.recv_json()
        assert m["type"] == "websocket.receive"
        assert m["text"] == "héllo" and m["bytes"] is None, m
        ws.send_binary(b"\x00\xff")
        m = ws.recv_json()
        assert m["bytes"] == "00ff" and m["text"] is None, m
        ws.send_text("")
        m = ws.recv_json()
        assert m["text"] == "" and m["bytes"] is None, m
        ws.send_binary(b"")
        m = ws.recv_json()
        assert m["bytes"] == "" and m["text"] is None, m
        ws.close_handshake()


def test_disconnect_with_code_and_reason(wss):
    mark = wss.mark()
    with open_ws(wss, "/disconnect?id=cr") as ws:
        wait_event(wss, "accepted", "cr", since=mark)
        f = ws.close_handshake(1000, "bye now".encode())
        assert f.code == 1000
    ev = wait_event(wss, "disconnect", "cr", since=mark)
    assert ev["type"] == "websocket.disconnect"
    assert ev["code"] == 1000
    assert ev["reason"] == "bye now"


def test_disconnect_custom_code(ws1):
    mark = ws1.mark()
    with open_ws(ws1, "/disconnect?id=c4000") as ws:
        wait_event(ws1, "accepted", "c4000", since=mark)
        ws.close_handshake(4000, "é".encode())
    ev = wait_event(ws1, "disconnect", "c4000", since=mark)
    assert ev["code"] == 4000 and ev["reason"] == "é"


def test_disconnect_without_code_is_1005(wss):
    mark = wss.mark()
    with open_ws(wss, "/disconnect?id=nocode") as ws:
        wait_event(wss, "accepted", "nocode", since=mark)
        ws.send_close(None)
        while ws.read_frame().opcode != OP_CLOSE:
            pass
        ws.assert_eof()
    ev = wait_event(wss, "disconnect", "nocode", since=mark)
    assert ev["code"] == 1005, ev


def test_close_without_code_answered_without_code_or_1000(ws1):
    with open_ws(ws1, "/echo") as ws:
        ws.send_close(None)
        while True:
            f = ws.read_frame()
            if f.opcode == OP_CLOSE:
                break
        assert f.code in (None, 1000), f
        ws.assert_eof()


def test_tcp_drop_is_1006(wss):
    mark = wss.mark()
    ws = open_ws(wss, "/disconnect?id=drop")
    wait_event(wss, "accepted", "drop", since=mark)
    ws.close_socket()
    ev = wait_event(wss, "disconnect", "drop", since=mark)
    assert ev["code"] == 1006, ev


def test_tcp_reset_is_1006(ws1):
    mark = ws1.mark()
    ws = open_ws(ws1, "/disconnect?id=rst")
    wait_event(ws1, "accepted", "rst", since=mark)
    ws.raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close_socket()
    ev = wait_event(ws1, "disconnect", "rst", since=mark)
    assert ev["code"] == 1006, ev


def test_send_after_disconnect_raises_oserror(wss):
    mark = wss.mark()
    with open_ws(wss, "/send-after-disconnect?id=sad") as ws:
        wait_event(wss, "accepted", "sad", since=mark)
        ws.close_handshake(1001)
    ev = wait_event(wss, "send-after", "sad", since=mark, timeout=8)
    assert ev["raised"] not in (None, "timeout"), ev
    assert ev["oserror"] is True, ev


def test_send_after_tcp_drop_raises_oserror(ws1):
    mark = ws1.mark()
    ws = open_ws(ws1, "/send-after-disconnect?id=sad2")
    wait_event(ws1, "accepted", "sad2", since=mark)
    ws.close_socket()
    ev = wait_event(ws1, "send-after", "sad2", since=mark, timeout=8)
    assert ev["raised"] not in (None, "timeout"), ev
    assert ev["oserror"] is True, ev


def test_app_close_with_code_and_reason(wss):
    mark = wss.mark()
    with open_ws(wss, "/close?code=4001&reason=gone%20away&id=ac") as ws:
        f = ws.expect_close(4001)
        assert f.reason == b"gone away"
        ws.send_close(4001)
        ws.assert_eof(3)
    ev = wait_event(wss, "disconnect", "ac", since=mark)
    assert ev["type"] == "websocket.disconnect"


VALID_CODES = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 5000])
def test_app_close_with_a_code_that_must_not_be_sent(ws1, code):
    """RFC 6455 7.4.1: 1005, 1006 and 1015 (and codes outside the registry
    ranges) never go on the wire; the close frame carries no code or a valid one."""
    with open_ws(ws1, f"/close?code={code}") as ws:
        while True:
            f = ws.read_frame()
            if f.opcode == OP_CLOSE:
                break
        assert f.code is None or f.code in VALID_CODES, f"close frame on the wire with code {f.code}: {f!r}"


def test_app_close_long_reason_truncated_to_valid_utf8(ws1):
    reason = "%C3%A9" * 100  # 200 bytes of "é"
    with open_ws(ws1, f"/close?code=4000&reason={reason}") as ws:
        f = ws.expect_close(4000)
        assert len(f.payload) <= 125
        assert f.reason.decode("utf-8") == "é" * (len(f.reason) // 2)
        assert len(f.reason) >= 100, f"reason cut to {len(f.reason)} bytes"


def test_protocol_error_reported_to_app_as_disconnect(wss):
    mark = wss.mark()
    with open_ws(wss, "/disconnect?id=perr") as ws:
        wait_event(wss, "accepted", "perr", since=mark)
        ws.send_frame(0x3, b"reserved")
        ws.fail_with(1002)
    ev = wait_event(wss, "disconnect", "perr", since=mark)
    assert ev["type"] == "websocket.disconnect"


def test_client_gone_before_accept(wss):
    """The client drops the connection while the app has not accepted yet: the
    app's accept() raises an OSError subclass (ASGI: send() on a closed
    connection) or is ignored, and receive() returns websocket.disconnect."""
    mark = wss.mark()
    c = RawConn.tcp(wss.host, wss.port)
    c.send(upgrade_request("/slow-accept?delay=0.5&id=gone"))
    time.sleep(0.1)
    c.close()
    ev = wait_event(wss, "slow-accept", "gone", since=mark)
    assert ev["raised"] is None or ev["oserror"] is True, ev
    assert ev["next"].get("type") == "websocket.disconnect", ev
    assert ev["next"].get("code") == 1006, ev


def test_frames_sent_before_the_app_accepts_wait_for_it(wss):
    """Frames pipelined behind the upgrade request while the app takes its
    time to accept are delivered, in order, once it has accepted."""
    key = ws_key()
    c = RawConn.tcp(wss.host, wss.port)
    with c:
        c.send(upgrade_request("/slow-accept?delay=0.4&echo=1", key=key)
               + build_frame(OP_TEXT, b"one") + build_frame(OP_BINARY, b"two")
               + build_frame(0x9, b"ping before accept") + build_frame(OP_TEXT, b"three"))
        r = c.read_head()
        assert r.status == 101, r.raw
        ws = WsConn(c, r)
        got = [ws.read_message(), ws.read_message(), ws.read_message()]
        assert got == [(OP_TEXT, b"one"), (OP_BINARY, b"two"), (OP_TEXT, b"three")]
        assert any(f.opcode == 0xA and f.payload == b"ping before accept" for f in ws.received), ws.received


def test_flood_before_accept_bounded(start_server, loop):
    """A client that streams frames while the app has not accepted cannot make
    the server buffer without limit."""
    from helpers import RssSampler
    from ws_util import rss_bound

    s = start_server("ws_app:app", "--ws-max-size", "1048576", loop=loop)
    c = RawConn.tcp(s.host, s.port, timeout=10)
    with c:
        c.send(upgrade_request("/slow-accept?delay=3&echo=1"))
        frame = build_frame(0x2, b"f" * 65536, mask_key=b"\x00\x00\x00\x00")
        base = s.rss_kib()
        c.sock.setblocking(False)
        sent = 0
        with RssSampler(s.pid, 0.01) as rss:
            t0 = time.monotonic()
            pending = b""
            while time.monotonic() - t0 < 2.0 and sent < 64 * 1024 * 1024:
                if not pending:
                    pending = frame * 16
                try:
                    k = c.sock.send(pending)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                sent += k
                pending = pending[k:]
        assert sent < 64 * 1024 * 1024, "64 MiB taken before the app accepted"
        grew = rss.max_kib - base
        assert grew < rss_bound(24 * 1024), f"server RSS grew by {grew} KiB before accept ({sent} bytes sent)"


def test_slow_accept_then_echo(ws1):
    with open_ws(ws1, "/slow-accept?delay=0.3") as ws:
        # the app reports after its next receive(); a close answers it
        ws.close_handshake(1000)


def test_accept_log_line(wss):
    mark = wss.mark()
    with open_ws(wss, "/echo?id=log1") as ws:
        ws.send_text("x")
        ws.recv_text()
        port = ws.raw.local_port
        ws.close_handshake()
    wss.wait_for(r'127\.0\.0\.1:' + str(port) + r' - "WebSocket /echo\?id=log1" \[accepted\]', since=mark)


SLOW_RECEIVER_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.sleep(0.5)  # the first 9 messages arrive and queue
    for _ in range(8):
        await receive()
    await send({"type": "websocket.send", "text": "took 8"})
    await asyncio.sleep(3)  # receives nothing meanwhile
    while (await receive())["type"] != "websocket.disconnect":
        pass
"""


def test_queue_counts_text_in_bytes_both_ways(start_server, loop, tmp_path):
    """The queue's byte count (--ws-max-size) adds and removes the same UTF-8
    size, so non-ASCII text does not pause reading early. Messages of 300
    bytes (100 code points) against a 3000-byte cap: 9 queue, the app takes 8,
    4 more arrive: 1500 bytes are queued, so the ping behind them is read and
    answered (counting code points out, 3100 would be counted and reading
    would stay paused)."""
    (tmp_path / "slow_receiver.py").write_text(SLOW_RECEIVER_APP)
    s = start_server("slow_receiver:app", "--ws-max-size", "3000", loop=loop, app_dir=tmp_path)
    text = "\u20ac" * 100
    with open_ws(s, "/") as ws:
        ws.send_batch(*[(OP_TEXT, text.encode())] * 9)
        assert ws.recv_text(timeout=5) == "took 8"
        ws.send_batch(*[(OP_TEXT, text.encode())] * 4, (OP_PING, b"still-reading"))
        f = ws.read_frame(timeout=1.5)
        assert f.opcode == OP_PONG and f.payload == b"still-reading"
