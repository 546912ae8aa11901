"""ASGI over HTTP/2: the settings the server announces and its options, one
scope per stream, request and response bodies with flow control, trailers,
early hints, resets and app errors per stream, WebSockets over HTTP/2 (RFC
8441), graceful shutdown with GOAWAY, and a subset of the HTTP/1.1 semantics
tests (test_scope.py, test_receive_send.py, test_streaming.py) run over an
httpx HTTP/2 client against the general-purpose app (tests/apps/basic.py).

Connections are cleartext with the preface (h2c) unless a test says TLS.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import struct
import time
from urllib.parse import unquote

import httpx
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame, WindowUpdateFrame

from h2_util import (DATA, DEFAULT_INITIAL_WINDOW_SIZE, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HEADER_LIST_SIZE,
                     END_STREAM, ENABLE_CONNECT_PROTOCOL, INITIAL_WINDOW_SIZE, INTERNAL_ERROR,
                     MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, NO_ERROR, PREFACE, REFUSED_STREAM,
                     SETTINGS,
                     FrameConn, H2Client, H2WebSocket, download_bytes, err_name, h2_tls_ctx, raw_frame, req_headers,
                     start_h2)
from helpers import RssSampler, assert_rss_growth_below, unique
from ws_util import OP_BINARY, OP_CLOSE, OP_TEXT, RSV1, Deflate, Inflate, build_frame, close_payload, parse_extensions

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


def frame_conn(p) -> FrameConn:
    c = FrameConn.tcp(p.port)
    c.start()
    return c


def scope_of(c: H2Client, path: str = "/scope", **kw) -> dict:
    r = c.request("GET", path, **kw)
    assert r.status == 200, (r.status, r.body[:200])
    return json.loads(r.body)


def header_list_size(headers: list) -> int:
    """SETTINGS_MAX_HEADER_LIST_SIZE's measure (RFC 9113 6.5.2): name + value + 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in headers)


# ----------------------------------------------------------------------------
# Settings and options
# ----------------------------------------------------------------------------


def test_default_settings_announced(h2srv):
    with frame_conn(h2srv) as c:
        s = c.server_settings
    assert s.get(MAX_CONCURRENT_STREAMS) == DEFAULT_MAX_CONCURRENT_STREAMS, s
    assert s.get(MAX_HEADER_LIST_SIZE) == DEFAULT_MAX_HEADER_LIST_SIZE, s
    assert s.get(INITIAL_WINDOW_SIZE) == DEFAULT_INITIAL_WINDOW_SIZE, s
    assert s.get(ENABLE_CONNECT_PROTOCOL) == 1, s


def test_settings_from_options(start_server):
    p = start_h2(start_server, "--h2-max-concurrent-streams", "7", "--h2-max-header-list-size", "8192",
                 "--h2-initial-window-size", "100000")
    with frame_conn(p) as c:
        s = c.server_settings
        assert (s.get(MAX_CONCURRENT_STREAMS), s.get(MAX_HEADER_LIST_SIZE), s.get(INITIAL_WINDOW_SIZE)) == \
            (7, 8192, 100000), s
        c.assert_usable()


def test_no_connect_protocol_without_websockets(start_server):
    p = start_h2(start_server, "--ws", "none")
    with frame_conn(p) as c:
        assert c.server_settings.get(ENABLE_CONNECT_PROTOCOL, 0) == 0, c.server_settings
        c.assert_usable()


def test_no_http2_refuses_the_preface(start_server):
    """--no-http2: the preface is not served as HTTP/2 (no SETTINGS frame):
    an HTTP/1.1 4xx/505 and the close, or just the close. HTTP/1.1 works."""
    p = start_h2(start_server, "--no-http2")
    with FrameConn.tcp(p.port) as c:
        c.send(PREFACE + raw_frame(SETTINGS, 0, 0))
        got = b""
        deadline = time.monotonic() + 5
        while not c.eof:
            assert time.monotonic() < deadline, f"still open 5s after the preface (got {got[:200]!r})"
            try:
                c._fill(deadline)
            except TimeoutError:
                continue
            got, c.buf = got + c.buf, b""
    assert got == b"" or got.startswith(b"HTTP/1.1 4") or got.startswith(b"HTTP/1.1 505"), got[:200]
    with httpx.Client(timeout=5) as client:
        r = client.get(f"http://127.0.0.1:{p.port}/")
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"


def test_header_list_within_the_limit_served(h2srv):
    """About 60 KB of fields (under the 64 KiB default) arrive in HEADERS and
    CONTINUATIONs and are served."""
    with frame_conn(h2srv) as c:
        extra = [(f"x-field-{i}".encode(), b"v" * 1900) for i in range(30)]
        hdrs = req_headers("GET", "/scope", extra=extra)
        assert header_list_size(hdrs) < DEFAULT_MAX_HEADER_LIST_SIZE
        sid = c.new_stream_id()
        c.send_block(sid, c.encode(hdrs, huffman=False))
        r = c.reply(sid)
        assert r.status == 200
        got = [h for h in json.loads(r.body)["headers"] if h[0].startswith("x-field-")]
        assert got == [[f"x-field-{i}", "v" * 1900] for i in range(30)]


@pytest.mark.parametrize("limit", [None, 4096], ids=["default", "option-4096"])
def test_header_list_over_the_limit_refused(start_server, h2srv, limit):
    """A header list over SETTINGS_MAX_HEADER_LIST_SIZE: the stream gets a
    431 or an RST_STREAM (casgi's choice is open; either is accepted), and
    the connection serves on."""
    if limit is None:
        p, limit = h2srv, DEFAULT_MAX_HEADER_LIST_SIZE
    else:
        p = start_h2(start_server, "--h2-max-header-list-size", str(limit))
    with frame_conn(p) as c:
        n = limit // 1000 + 2
        extra = [(f"x-field-{i}".encode(), b"v" * 1000) for i in range(n)]
        hdrs = req_headers("GET", "/scope", extra=extra)
        assert header_list_size(hdrs) > limit
        sid = c.new_stream_id()
        c.send_block(sid, c.encode(hdrs, huffman=False))
        r = c.reply(sid)
        assert r.reset is not None or r.status == 431, (r.status, r.reset, r.body[:100])
        c.assert_usable()


# ----------------------------------------------------------------------------
# The scope
# ----------------------------------------------------------------------------


def test_scope_fields(h2srv_loop):
    with H2Client.tcp(h2srv_loop.port) as c:
        s = scope_of(c, "/scope?a=1&b=%20")
        client_port = c.sock.getsockname()[1]
    assert s["type"] == "http"
    assert s["asgi"]["version"] == "3.0" and s["asgi"]["spec_version"].startswith("2.")
    assert s["http_version"] == "2"
    assert s["scheme"] == "http"
    assert s["method"] == "GET"
    assert s["path"] == "/scope" and s["raw_path"] == "/scope" and s["query_string"] == "a=1&b=%20"
    assert s["root_path"] == ""
    assert s["server"] == ["127.0.0.1", h2srv_loop.port]
    assert s["client"] == ["127.0.0.1", client_port]
    types = s["_types"]
    assert (types["path"], types["raw_path"], types["query_string"]) == ("str", "bytes", "bytes")
    assert s["_header_types"] == ["bytes"]


def test_scope_headers_host_first_no_pseudo(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        s = scope_of(c, "/scope", headers=[("x-one", "1"), ("x-dup", "a"), ("x-dup", "b"), ("accept", "*/*")],
                     authority="example.test:8443")
    headers = s["headers"]
    assert headers[0] == ["host", "example.test:8443"], headers
    assert [h for h in headers if h[0] == "host"] == [["host", "example.test:8443"]]
    assert not [h for h in headers if h[0].startswith(":")], headers
    assert headers[1:] == [["x-one", "1"], ["x-dup", "a"], ["x-dup", "b"], ["accept", "*/*"]]


def test_scope_cookies_joined(h2srv):
    """Cookie fields may be split over several header fields (RFC 9113
    8.2.3); the app gets one cookie header joined with "; "."""
    with H2Client.tcp(h2srv.port) as c:
        s = scope_of(c, "/scope", headers=[("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2"), ("cookie", "c=3")])
    cookies = [h for h in s["headers"] if h[0] == "cookie"]
    assert cookies == [["cookie", "a=1; b=2; c=3"]], s["headers"]


def test_scope_scheme_from_transport_not_pseudo_header(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        s = scope_of(c, "/scope", scheme="https")
    assert s["scheme"] == "http"


@pytest.mark.parametrize("raw", ["/scope/caf%C3%A9%20x%2Fy", "/scope/a+b", "/scope/%FF%C3", "/scope/../x/./y",
                                 "/scope//double", "/scope/%E2%82%AC"])
def test_scope_path_decoding(h2srv, raw):
    with H2Client.tcp(h2srv.port) as c:
        s = scope_of(c, raw + "?q=%20a&b")
    assert s["raw_path"] == raw
    assert s["path"] == unquote(raw)
    assert s["query_string"] == "q=%20a&b"


def test_scope_extensions(h2srv):
    """http.response.trailers only when the request said te: trailers;
    http.response.early_hint always."""
    with H2Client.tcp(h2srv.port) as c:
        plain = scope_of(c, "/scope")["extensions"]
        te = scope_of(c, "/scope", headers=[("te", "trailers")])["extensions"]
    assert "http.response.trailers" not in plain, plain
    assert "http.response.trailers" in te, te
    assert "http.response.early_hint" in plain and "http.response.early_hint" in te


def test_scope_one_per_stream(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        sids = [c.send_request("GET", f"/scope?n={i}", headers=[("x-n", str(i))]) for i in range(5)]
        for i, sid in enumerate(sids):
            s = json.loads(c.response(sid).body)
            assert s["query_string"] == f"n={i}"
            assert [h for h in s["headers"] if h[0] == "x-n"] == [["x-n", str(i)]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tls_util import Pki
    return Pki(tmp_path_factory.mktemp("h2-pki"))


def test_scope_over_tls(start_server, pki):
    p = start_h2(start_server, tls=pki)
    with H2Client.tls(p.port, h2_tls_ctx(str(pki.ca_file), ["h2", "http/1.1"])) as c:
        s = scope_of(c, "/scope", scheme="http")
    assert s["http_version"] == "2"
    assert s["scheme"] == "https"  # from the transport, though :scheme said http
    assert "tls" in s["extensions"]


# ----------------------------------------------------------------------------
# Responses
# ----------------------------------------------------------------------------


def test_connection_specific_response_headers_not_sent(h2srv):
    with frame_conn(h2srv) as c:
        r = c.request("GET", "/conn-headers")
    assert r.status == 200 and r.body == b"conn headers"
    names = r.names()
    for bad in ("connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"):
        assert bad not in names, f"{bad} sent over HTTP/2: {r.headers}"
    assert r.header("x-kept") == "yes"


def test_trailers_frame(h2srv_loop):
    """Trailers: HEADERS with END_STREAM after the DATA (whose last frame
    does not end the stream)."""
    with frame_conn(h2srv_loop) as c:
        sid = c.send_request("GET", "/trailers", extra=[("te", "trailers")])
        r = c.reply(sid)
        assert r.status == 200 and r.body == b"with trailers"
        assert r.trailers == [(b"x-checksum", b"abc"), (b"x-count", b"2")], r.trailers
        frames = [f for f in c.received if f.stream_id == sid]
        assert isinstance(frames[-1], HeadersFrame) and "END_STREAM" in frames[-1].flags
        assert not any("END_STREAM" in f.flags for f in frames if isinstance(f, DataFrame))
        assert not any(n.startswith(b":") for n, _ in r.trailers)


def test_no_trailers_without_te(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        r = c.request("GET", "/trailers")
    assert r.status == 200 and r.body == b"no trailers extension" and r.trailers is None


def test_early_hints(h2srv_loop):
    with frame_conn(h2srv_loop) as c:
        r = c.request("GET", "/early-hints")
    assert len(r.informational) == 1, r.informational
    hint = r.informational[0]
    assert hint[0] == (b":status", b"103")
    assert [v for n, v in hint if n == b"link"] == [b"</style.css>; rel=preload; as=style",
                                                    b"</app.js>; rel=preload; as=script"]
    assert r.status == 200 and r.body == b"after hints"


def test_download_1mib_byte_exact(h2srv_loop):
    with H2Client.tcp(h2srv_loop.port) as c:
        r = c.request("GET", "/download?size=1048576&seed=7")
        assert r.status == 200 and r.header("content-length") == "1048576"
        assert r.body == download_bytes(MIB, 7)
        assert max(r.data_frames) <= c.conn.max_inbound_frame_size


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
@pytest.mark.parametrize("size", [100, 5000, 200_000])
def test_body_buffer_changed_after_send(h2srv, kind, size):
    """Bytes objects are framed from the app's own memory; a bytearray or
    memoryview the app changes after send() returns still arrives as it was
    when sent (it is copied), large or small, within or beyond the windows."""
    with H2Client.tcp(h2srv.port) as c:
        r = c.request("GET", f"/reuse?kind={kind}&size={size}")
    assert r.status == 200
    assert r.body == b"".join(bytes([97 + i]) * size for i in range(8))


def test_connection_idle_then_used_again(start_server):
    """An idle connection gives its session memory back at the server's tick
    (the frame buffer's pages, the head scratch: a trace line says so);
    requests after that, with heads and bodies of every size, are served as
    before."""
    p = start_h2(start_server, "--log-level", "trace")
    with H2Client.tcp(p.port) as c:
        assert c.request("GET", "/").body == b"hello h2"
        for size in (10, 70_000):
            mark = p.mark()
            p.wait_for(r"HTTP/2 connection idle: session memory given back", since=mark, timeout=5)
            long_value = "v" * 3000
            r = c.request("GET", f"/download?size={size}&seed=3",
                          headers=[("x-long", long_value)])
            assert r.status == 200 and r.body == download_bytes(size, 3)
            r = c.request("GET", "/headers?h=x-big:" + "w" * 7000)
            assert r.status == 200 and r.header("x-big") == "w" * 7000


def test_streamed_response_without_content_length(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        r = c.request("GET", "/stream?n=5")
    assert r.status == 200 and r.body == b"".join(f"part-{i}\n".encode() for i in range(5))


def test_upload_echo_1mib(h2srv_loop):
    body = random.Random(11).randbytes(MIB)
    with H2Client.tcp(h2srv_loop.port) as c:
        r = c.request("POST", "/echo", body=body)
    assert r.status == 200 and r.body == body
    assert int(r.header("x-body-messages")) >= 2


def test_request_body_streamed_as_it_arrives(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        sid = c.send_request("POST", "/echo", end_stream=False)
        c.send_body(sid, b"first", end_stream=False)
        time.sleep(0.3)
        c.send_body(sid, b"second", end_stream=True)
        r = c.response(sid)
    assert r.body == b"firstsecond"
    assert int(r.header("x-body-messages")) >= 2


def test_many_streams_run_concurrently(h2srv_loop):
    """50 streams of an app that sleeps 0.5 s: together well under 50 x 0.5 s."""
    with H2Client.tcp(h2srv_loop.port) as c:
        t0 = time.monotonic()
        sids = [c.send_request("GET", "/sleep?t=0.5") for _ in range(50)]
        for sid in sids:
            r = c.response(sid)
            assert r.status == 200 and r.body == b"slept"
        assert time.monotonic() - t0 < 5


def test_slow_stream_does_not_delay_another(h2srv):
    with H2Client.tcp(h2srv.port) as c:
        slow = c.send_request("GET", "/sleep?t=2")
        fast = c.send_request("GET", "/")
        c.pump_until(lambda: c.stream(fast).ended, 1.5, what="the fast stream")
        assert not c.stream(slow).ended
        assert c.response(slow).body == b"slept"


# ----------------------------------------------------------------------------
# Errors and resets, per stream
# ----------------------------------------------------------------------------


def test_app_error_before_start_gives_500(h2srv_loop):
    with H2Client.tcp(h2srv_loop.port) as c:
        r = c.request("GET", "/raise-before?id=" + unique())
        assert r.status == 500 and r.reset is None
        assert c.request("GET", "/").status == 200


def test_app_error_after_start_resets_only_its_stream(h2srv_loop):
    with H2Client.tcp(h2srv_loop.port) as c:
        other = c.send_request("GET", "/sleep?t=0.5")
        bad = c.send_request("GET", "/raise-after?id=" + unique())
        r = c.response(bad)
        assert r.status == 200 and r.reset == INTERNAL_ERROR, (r.reset, r.ended)
        assert r.body in (b"", b"partial")
        o = c.response(other)
        assert o.status == 200 and o.body == b"slept"
        assert c.request("GET", "/").status == 200
        assert c.goaway is None


def test_client_reset_gives_disconnect_to_that_stream_only(h2srv_loop):
    ident = unique()
    mark = h2srv_loop.mark()
    with H2Client.tcp(h2srv_loop.port) as c:
        other = c.send_request("GET", "/sleep?t=0.6")
        sid = c.send_request("POST", f"/hang?id={ident}", end_stream=False)
        h2srv_loop.wait_for(rf"H2EVENT hang-start {ident}", since=mark)
        c.reset(sid)
        h2srv_loop.wait_for(rf"H2EVENT hang-disconnect {ident}", since=mark)
        o = c.response(other)
        assert o.status == 200 and o.body == b"slept"
        c.ping()


def test_client_reset_after_body_gives_disconnect(h2srv):
    ident = unique()
    mark = h2srv.mark()
    with H2Client.tcp(h2srv.port) as c:
        sid = c.send_request("POST", f"/wait-disconnect?id={ident}", body=b"abc")
        time.sleep(0.3)
        c.reset(sid)
        m = h2srv.wait_for(rf"H2EVENT disconnect {ident} (\S+)", since=mark)
        assert m.group(1) == "http.disconnect"
        assert c.request("GET", "/").status == 200


def test_content_length_mismatch_is_stream_error(h2srv):
    with frame_conn(h2srv) as c:
        sid = c.new_stream_id()
        c.send(c.headers_frame(sid, req_headers("POST", "/echo", extra=[("content-length", "10")]), end_stream=False)
               + raw_frame(DATA, END_STREAM, sid, b"short"))
        r = c.reply(sid)
        assert r.reset is not None and r.status is None, (r.status, r.reset)
        c.assert_usable()


# ----------------------------------------------------------------------------
# Flow control
# ----------------------------------------------------------------------------


def test_request_window_opens_only_as_the_app_reads(h2srv):
    """The app sleeps 3 s before it reads. The client sends as much as the
    windows allow: no WINDOW_UPDATE for the stream arrives meanwhile (the
    server does not read ahead for a slow app). Once the app reads, updates
    come and the whole 1 MiB arrives."""
    ident = unique()
    size = MIB
    mark = h2srv.mark()
    with frame_conn(h2srv) as c:
        stream_window = c.server_settings.get(INITIAL_WINDOW_SIZE, 65535)
        conn_window = 65535
        sid = c.new_stream_id()
        c.send(c.headers_frame(sid, req_headers("POST", f"/slow-read?t=3&id={ident}"), end_stream=False))
        h2srv.wait_for(rf"H2EVENT slow-read-start {ident}", since=mark)
        t_start = time.monotonic()
        sent = 0
        stream_updates_while_sleeping = []

        def absorb(frames):
            nonlocal conn_window, stream_window
            for f in frames:
                if isinstance(f, WindowUpdateFrame):
                    if f.stream_id == 0:
                        conn_window += f.window_increment
                    elif f.stream_id == sid:
                        stream_window += f.window_increment
                        if time.monotonic() - t_start < 2.5:
                            stream_updates_while_sleeping.append(f.window_increment)
                elif isinstance(f, (RstStreamFrame, GoAwayFrame)) and f.stream_id in (0, sid):
                    raise AssertionError(f"{type(f).__name__} {err_name(f.error_code)} during the upload")

        while sent < size:
            n = min(16384, size - sent, conn_window, stream_window)
            if n <= 0:
                if time.monotonic() - t_start < 2.5:
                    absorb(c.frames_for(0.1))
                    continue
                absorb(c.frames_for(0.2))
                assert time.monotonic() - t_start < 20, f"stuck at {sent} bytes after the app started reading"
                continue
            c.send(raw_frame(DATA, END_STREAM if sent + n == size else 0, sid, b"u" * n))
            sent += n
            conn_window -= n
            stream_window -= n
            absorb(c.frames_for(0.0005) if sent % (16384 * 8) == 0 else [])
        assert not stream_updates_while_sleeping, \
            f"WINDOW_UPDATEs for the stream while the app slept: {stream_updates_while_sleeping}"
        r = c.reply(sid, timeout=20)
        assert r.status == 200 and r.body == str(size).encode()


def test_request_sender_stuck_at_initial_window_while_app_sleeps(h2srv):
    """Seen from the client: after initial-window bytes it can send no more
    while the app sleeps (nothing it receives grants more for the stream);
    when the app reads, the body completes."""
    ident = unique()
    mark = h2srv.mark()
    with frame_conn(h2srv) as c:
        window = c.server_settings.get(INITIAL_WINDOW_SIZE, 65535)
        sid = c.new_stream_id()
        c.send(c.headers_frame(sid, req_headers("POST", f"/slow-read?t=2.5&id={ident}"), end_stream=False))
        h2srv.wait_for(rf"H2EVENT slow-read-start {ident}", since=mark)
        conn_grants = [f.window_increment for f in c.frames_for(0.3)
                       if isinstance(f, WindowUpdateFrame) and f.stream_id == 0]
        allowed = min(window, 65535 + sum(conn_grants))
        for i in range(0, allowed, 16384):
            c.send(raw_frame(DATA, 0, sid, b"w" * min(16384, allowed - i)))
        frames = c.frames_for(1.5)
        granted = [f.window_increment for f in frames if isinstance(f, WindowUpdateFrame) and f.stream_id == sid]
        assert not granted, f"the stream's window grew by {granted} while the app slept"
        assert f"slow-read-done {ident}" not in h2srv.output(mark)
        c.send(raw_frame(DATA, END_STREAM, sid, b""))
        r = c.reply(sid, timeout=10)
        assert r.status == 200 and r.body == str(allowed).encode()


def test_response_respects_client_window(h2srv):
    """A client window of 1000: DATA frames add up to at most 1000 until it
    sends WINDOW_UPDATE, then the next 1000 come."""
    with FrameConn.tcp(h2srv.port) as c:
        c.start({INITIAL_WINDOW_SIZE: 1000, MAX_FRAME_SIZE: 16384})
        sid = c.send_request("GET", "/download?size=5000&seed=5")
        got = b""
        for round_ in range(5):
            frames = c.frames_for(0.6)
            data = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == sid]
            chunk = b"".join(f.data for f in data)
            assert len(chunk) == 1000, f"round {round_}: {len(chunk)} bytes for a window of 1000"
            assert all(len(f.data) <= 1000 for f in data)
            got += chunk
            c.send_window_update(sid, 1000)
        c.frames_for(0.3)
        assert got == download_bytes(5000, 5)
        ours = [f for f in c.received if f.stream_id == sid]
        assert "END_STREAM" in ours[-1].flags, ours[-3:]


def test_response_data_frames_within_max_frame_size(h2srv):
    with FrameConn.tcp(h2srv.port) as c:
        c.start({INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.send_window_update(0, 2**31 - 1 - 65535)
        r = c.reply(c.send_request("GET", "/download?size=300000&seed=1&chunk=300000"), window_updates=False)
        assert r.body == download_bytes(300000, 1, 300000)
        sizes = [len(f.data) for f in c.received if isinstance(f, DataFrame)]
        assert max(sizes) <= 16384, max(sizes)


# ----------------------------------------------------------------------------
# WebSockets over HTTP/2 (RFC 8441)
# ----------------------------------------------------------------------------


def test_ws_extended_connect_echo(h2srv_loop):
    with frame_conn(h2srv_loop) as c:
        assert c.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
        ws = H2WebSocket(c, "/ws/echo")
        assert ws.status == 200, c.received[-3:]
        assert "END_STREAM" not in ws.response.flags
        ws.send_ws(build_frame(OP_TEXT, "héllo h2".encode()))
        fin, rsv, op, payload = ws.recv_ws()
        assert (fin, rsv, op, payload) == (True, 0, OP_TEXT, "héllo h2".encode())
        blob = bytes(range(256)) * 300
        ws.send_ws(build_frame(OP_BINARY, blob))
        assert ws.recv_ws() == (True, 0, OP_BINARY, blob)
        ws.send_ws(build_frame(OP_CLOSE, close_payload(1000)))
        fin, _, op, payload = ws.recv_ws()
        assert op == OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1000
        c.assert_usable()


def test_ws_scope_over_h2(h2srv):
    with frame_conn(h2srv) as c:
        ws = H2WebSocket(c, "/ws/scope?x=1", subprotocols=["chat", "other"])
        assert ws.status == 200
        assert ws.header("sec-websocket-protocol") == "chat"
        _, _, op, payload = ws.recv_ws()
        s = json.loads(payload)
    assert s["type"] == "websocket"
    assert s["http_version"] == "2"
    assert s["scheme"] == "ws"
    assert s["path"] == "/ws/scope" and s["query_string"] == "x=1"
    assert s["subprotocols"] == ["chat", "other"]
    assert s["headers"][0] == ["host", "localhost"]
    assert not [h for h in s["headers"] if h[0].startswith(":")]
    assert "websocket.http.response" in s["extensions"]


def test_ws_permessage_deflate_over_h2(h2srv):
    with frame_conn(h2srv) as c:
        ws = H2WebSocket(c, "/ws/echo", extensions="permessage-deflate; client_max_window_bits")
        assert ws.status == 200
        exts = parse_extensions(ws.header("sec-websocket-extensions"))
        assert exts and exts[0][0] == "permessage-deflate", exts
        text = "compress me " * 100
        ws.send_ws(build_frame(OP_TEXT, Deflate().compress(text.encode()), rsv=RSV1))
        fin, rsv, op, payload = ws.recv_ws()
        assert op == OP_TEXT and rsv & RSV1
        assert Inflate().decompress(payload).decode() == text


def test_ws_denial_response_over_h2(h2srv):
    with frame_conn(h2srv) as c:
        ws = H2WebSocket(c, "/ws/deny")
        assert ws.status == 403
        r = c.reply(ws.sid)
        assert b"".join(r.data) == b"denied"
        c.assert_usable()


# ----------------------------------------------------------------------------
# Graceful shutdown and --limit-max-requests
# ----------------------------------------------------------------------------


def test_sigterm_goaway_in_flight_stream_completes(start_server, loop):
    p = start_h2(start_server, loop=loop)
    with frame_conn(p) as c:
        assert c.request("GET", "/").status == 200  # stream 1
        sid = c.send_request("GET", "/sleep?t=1.5")  # stream 3, in flight
        time.sleep(0.3)
        p.signal(signal.SIGTERM)
        r = c.reply(sid, timeout=10)
        assert r.status == 200 and r.body == b"slept"
        kind, code, last = c.connection_error(timeout=10)
        goaways = [f for f in c.received if isinstance(f, GoAwayFrame)]
        assert goaways, f"no GOAWAY before the close: {c.received}"
        assert all(g.error_code == NO_ERROR for g in goaways), [err_name(g.error_code) for g in goaways]
        assert goaways[-1].last_stream_id == sid, [g.last_stream_id for g in goaways]
        frames = c.frames_for(5)
        assert c.eof, f"the connection stayed open after the GOAWAY: {frames}"
    assert p.wait(10) == 0


def test_sigterm_refuses_new_streams(start_server):
    """After SIGTERM a stream the client opens is refused (RST_STREAM
    REFUSED_STREAM: safe to retry elsewhere) and never served; the stream in
    flight completes; then the GOAWAY names it, and the connection closes.
    (The GOAWAY waits for the streams in flight: python-h2, httpx's HTTP/2,
    ends every stream when a GOAWAY arrives.)"""
    p = start_h2(start_server)
    with frame_conn(p) as c:
        busy = c.send_request("GET", "/sleep?t=1.5")
        time.sleep(0.3)
        p.signal(signal.SIGTERM)
        time.sleep(0.3)
        late = c.send_request("GET", "/")
        kind, code = c.stream_error(late)
        assert (kind, code) == ("rst", REFUSED_STREAM), (kind, err_name(code))
        assert not any(isinstance(f, GoAwayFrame) for f in c.received), "GOAWAY before the stream in flight ended"
        r = c.reply(busy, timeout=10)
        assert r.status == 200
        late_frames = [f for f in c.received + c.frames_for(1) if f.stream_id == late]
        assert not any(isinstance(f, HeadersFrame) for f in late_frames), "a stream after SIGTERM was served"
        goaways = [f for f in c.received if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[-1].error_code == NO_ERROR and goaways[-1].last_stream_id >= busy, \
            [(err_name(g.error_code), g.last_stream_id) for g in goaways]


def test_limit_max_requests_counts_streams(start_server):
    p = start_h2(start_server, "--limit-max-requests", "3")
    with frame_conn(p) as c:
        for _ in range(3):
            assert c.request("GET", "/").status == 200
        kind, code, last = c.connection_error(timeout=10)
        assert kind == "goaway" and code == NO_ERROR and last == 5, (kind, err_name(code), last)
    assert p.wait(10) == 0


# ----------------------------------------------------------------------------
# Features of HTTP/1.1 that work the same on HTTP/2
# ----------------------------------------------------------------------------


def test_access_log_line(start_server):
    """The access log line as on HTTP/1.1, the version written HTTP/2."""
    p = start_h2(start_server)
    mark = p.mark()
    with frame_conn(p) as c:
        assert c.request("GET", "/scope?x=1").status == 200
        port = c.sock.getsockname()[1]
    p.wait_for(rf'127\.0\.0\.1:{port} - "GET /scope\?x=1 HTTP/2" 200', since=mark)


def test_limit_concurrency_counts_streams(start_server):
    """--limit-concurrency 2: with two streams running, a third (on the same
    connection) is answered 503 at once; afterwards streams are served."""
    p = start_h2(start_server, "--limit-concurrency", "2")
    with H2Client.tcp(p.port) as c:
        a = c.send_request("GET", "/sleep?t=1.5")
        b = c.send_request("GET", "/sleep?t=1.5")
        time.sleep(0.3)
        t0 = time.monotonic()
        r = c.request("GET", "/")
        assert r.status == 503, r.status
        assert time.monotonic() - t0 < 1.0, "the 503 was not immediate"
        assert c.response(a).body == b"slept" and c.response(b).body == b"slept"
        assert c.request("GET", "/").status == 200


def test_proxy_headers(h2srv):
    """X-Forwarded-For / -Proto from a trusted peer (127.0.0.1 by default)
    set client and scheme, as on HTTP/1.1."""
    with H2Client.tcp(h2srv.port) as c:
        s = scope_of(c, "/scope", headers=[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")])
    assert s["client"] == ["203.0.113.7", 0]
    assert s["scheme"] == "https"


# ----------------------------------------------------------------------------
# HTTP/1.1 semantics over HTTP/2 (httpx, h2c) on the general-purpose app
# ----------------------------------------------------------------------------


@pytest.fixture
def hx(server):
    """An httpx client speaking h2c to the general-purpose app; its first
    request proves the connection is HTTP/2."""
    with httpx.Client(http1=False, http2=True, timeout=10, base_url=f"http://127.0.0.1:{server.port}") as client:
        r = client.get("/")
        assert r.http_version == "HTTP/2" and r.content == b"Hello, world!"
        yield client


def test_httpx_h2c_scope(hx):
    r = hx.get("/scope/x%20y?z=1")
    assert r.http_version == "HTTP/2"
    s = r.json()
    assert s["http_version"] == "2" and s["path"] == "/scope/x y" and s["query_string"] == "z=1"
    assert s["state"]["from_lifespan"] == "yes"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CUSTOM"])
def test_httpx_h2c_method(hx, method):
    assert hx.request(method, "/scope").json()["method"] == method


def test_httpx_h2c_echo_and_body_messages(hx):
    body = b"a" * 100_000
    r = hx.post("/echo", content=body)
    assert r.content == body and int(r.headers["x-body-messages"]) >= 1


def test_httpx_h2c_streaming_and_empty_parts(hx):
    assert hx.get("/stream?n=4").content == b"part0\npart1\npart2\npart3\n"
    assert hx.get("/stream-empty-parts").content == b"abc"


@pytest.mark.parametrize("case", ["body-before-start", "double-start", "after-complete", "unknown-type"])
def test_httpx_h2c_messages_out_of_order_raise(server, hx, case):
    ident = unique()
    mark = server.mark()
    hx.get(f"/order?case={case}&id={ident}")
    m = server.wait_for(rf"ORDER {ident} {case} (.*)", since=mark, timeout=5)
    assert m.group(1).startswith("RuntimeError"), m.group(1)


def test_httpx_h2c_receive_after_complete_gives_disconnect(server, hx):
    ident = unique()
    mark = server.mark()
    r = hx.post(f"/receive-after-complete?id={ident}", content=b"x")
    assert r.content == b"done"
    m = server.wait_for(rf"AFTER-COMPLETE-RECEIVE {ident} (\S+)", since=mark, timeout=5)
    assert m.group(1) == "http.disconnect"


def test_httpx_h2c_status_and_headers(hx):
    r = hx.get("/status?code=418&body=teapot")
    assert r.status_code == 418 and r.text == "teapot" and r.headers["x-status"] == "418"
    r = hx.get("/status?code=204")
    assert r.status_code == 204 and r.content == b""
    r = hx.get("/headers", params=[("h", "x-a:1"), ("h", "x-b:2")])
    assert r.headers["x-a"] == "1" and r.headers["x-b"] == "2"


def test_httpx_h2c_start_only_does_not_hang(hx):
    """The app returns after a partial body: the stream ends (reset or not),
    the client is not left waiting."""
    try:
        r = hx.get("/start-only")
    except httpx.RemoteProtocolError:
        return
    assert r.content == b"begun"


def test_httpx_h2c_concurrent_requests(server):
    """20 requests in flight at once share one HTTP/2 connection (httpx's
    async client: its threaded one can send a HEADERS frame with a lower
    stream id than one it already sent, a connection error by RFC 9113
    5.1.1 that the server answers with GOAWAY PROTOCOL_ERROR)."""
    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10,
                                     base_url=f"http://127.0.0.1:{server.port}") as client:
            rs = await asyncio.gather(*(client.post("/echo", content=f"body-{i}".encode()) for i in range(20)))
            for i, r in enumerate(rs):
                assert r.content == f"body-{i}".encode() and r.http_version == "HTTP/2"

    asyncio.run(main())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_h2_large_transfer_bounded_memory(server, direction):
    """64 MiB up or down one stream: the server's RSS stays within 64 MiB
    of where it was (flow control bounds what it holds)."""
    size = 64 * MIB
    with H2Client.tcp(server.port, timeout=60) as c:
        c.request("POST", "/consume", body=b"w" * MIB)  # warm up
        base = server.rss_kib()
        with RssSampler(server.pid) as rss:
            if direction == "upload":
                r = c.request("POST", "/consume", body=b"u" * size, timeout=90)
                assert r.body == str(size).encode()
            else:
                r = c.request("GET", f"/download?size={size}&cl=1", timeout=90)
                assert len(r.data) == size
    assert_rss_growth_below(rss.max_kib - base, 64 * 1024, f"during a 64 MiB HTTP/2 {direction}")
