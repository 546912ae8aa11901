"""HTTP/2 conformance, frame by frame (RFC 9113, RFC 7541), in the spirit of
h2spec's case list: each test opens a cleartext connection with the preface
(h2c, prior knowledge), sends valid or malformed frames with
h2_util.FrameConn and checks the server's answer on the wire.

Error expectations follow the RFC. A connection error is a GOAWAY with the
code, then the close of the TCP connection (RFC 9113 5.4.1: "After sending
the GOAWAY frame for an error condition, the endpoint MUST close the TCP
connection"). A stream error is an RST_STREAM with the code; where the RFC
lets a stream error be escalated (5.4.2 "an endpoint MAY ... treat a stream
error as a connection error") a GOAWAY with the same code is accepted too and
the test says so. After a stream error the connection must still serve.
"""

from __future__ import annotations

import struct
import time

import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from h2_util import (ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENABLE_PUSH, FLOW_CONTROL_ERROR,
                     FRAME_SIZE_ERROR, GOAWAY, HEADERS, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS,
                     MAX_FRAME_SIZE, NO_ERROR, PADDED, PING, PREFACE, PRIORITY, PRIORITY_FLAG, PROTOCOL_ERROR,
                     REFUSED_STREAM, RST_STREAM, SETTINGS, STREAM_CLOSED, COMPRESSION_ERROR, WINDOW_UPDATE,
                     FrameConn, download_bytes, err_name, raw_frame, req_headers, settings_payload, start_h2)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def conn(h2srv):
    """A started connection (preface and SETTINGS exchanged) to the shared server."""
    c = FrameConn.tcp(h2srv.port)
    c.start()
    yield c
    c.close()


def fresh(server) -> FrameConn:
    c = FrameConn.tcp(server.port)
    c.start()
    return c


def assert_connection_error(c: FrameConn, *codes: int) -> None:
    """GOAWAY with one of `codes`, then the close (5.4.1)."""
    kind, code, _ = c.connection_error()
    assert kind == "goaway", f"the connection closed without a GOAWAY (expected {' or '.join(map(err_name, codes))})"
    assert code in codes, f"GOAWAY {err_name(code)}, expected {' or '.join(map(err_name, codes))}"
    kind, _, _ = c.connection_error(timeout=5)
    assert kind == "closed", "a second GOAWAY instead of the close"


def assert_stream_error(c: FrameConn, sid: int, *codes: int) -> None:
    """RST_STREAM (or, escalated, GOAWAY) with one of `codes`; after an
    RST_STREAM the connection still serves."""
    kind, _ = c.assert_stream_error(sid, *codes, connection_error_ok=True)
    if kind == "rst":
        c.assert_usable()


def hdr_block(c: FrameConn, path: str = "/", method: str = "GET", extra=()) -> bytes:
    return c.encode(req_headers(method, path, extra=extra))


def open_stream(c: FrameConn, path: str = "/hang") -> int:
    """A stream left open (HEADERS without END_STREAM) on an app that waits."""
    sid = c.new_stream_id()
    c.send(raw_frame(HEADERS, END_HEADERS, sid, hdr_block(c, path)))
    return sid


# ----------------------------------------------------------------------------
# 3.4 HTTP/2 connection preface
# ----------------------------------------------------------------------------


def test_3_4_server_preface_is_settings_and_acks_ours(h2srv):
    with FrameConn.tcp(h2srv.port) as c:
        c.send(PREFACE + raw_frame(SETTINGS, 0, 0))
        first = c.read_frame()
        assert isinstance(first, SettingsFrame) and "ACK" not in first.flags, \
            f"the server's first frame is {type(first).__name__}, not SETTINGS"
        c.send(raw_frame(SETTINGS, ACK, 0))
        c.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, what="the ACK of our SETTINGS")
        c.assert_usable()


def test_3_4_invalid_preface_closes(h2srv):
    """A preface that starts like HTTP/2's but is not: the connection is
    closed. What comes before the close may be a GOAWAY PROTOCOL_ERROR, an
    HTTP/1.1 4xx (the bytes read as an HTTP/1.1 request) or nothing."""
    with FrameConn.tcp(h2srv.port) as c:
        c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + raw_frame(SETTINGS, 0, 0))
        got = b""
        deadline = time.monotonic() + 5
        while not c.eof:
            assert time.monotonic() < deadline, f"the connection is still open after 5s (got {got[:200]!r})"
            try:
                c._fill(deadline)
            except TimeoutError:
                continue
            got, c.buf = got + c.buf, b""
        if got.startswith(b"HTTP/1."):
            assert got[9:10] == b"4" or got[9:12] == b"505", got[:100]
        elif got:
            frames = FrameConn(None)
            frames.buf, frames.eof = got, True
            seen = []
            while True:
                f = frames._read_one(time.monotonic() + 1)
                if f is None:
                    break
                seen.append(f)
            # The server's SETTINGS may have left before it read the preface.
            goaways = [f for f in seen if isinstance(f, GoAwayFrame)]
            assert all(g.error_code == PROTOCOL_ERROR for g in goaways), f"before the close: {seen}"
            assert all(isinstance(f, (SettingsFrame, GoAwayFrame)) for f in seen), f"before the close: {seen}"


def test_3_4_preface_not_followed_by_settings(h2srv):
    """The preface must be followed by SETTINGS (3.4): anything else is a
    connection error PROTOCOL_ERROR."""
    with FrameConn.tcp(h2srv.port) as c:
        c.send(PREFACE + raw_frame(PING, 0, 0, b"12345678"))
        assert_connection_error(c, PROTOCOL_ERROR)


# ----------------------------------------------------------------------------
# 4.1 frame format, 4.2 frame size
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [0, 1], ids=["stream0", "stream1"])
def test_4_1_unknown_frame_type_ignored(conn, stream):
    conn.send(raw_frame(0xFA, 0xFF, stream, b"unknown extension frame"))
    conn.assert_usable()


def test_4_1_undefined_flags_ignored(conn):
    payload = b"flagtest"
    conn.send(raw_frame(PING, 0xFE, 0, payload))  # every flag but ACK
    conn.wait_for(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == payload,
                  what="the PING ACK")
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS | 0x02 | 0x10 | 0x40 | 0x80, sid, hdr_block(conn, "/")))
    r = conn.reply(sid)
    assert r.status == 200 and r.body == b"hello h2"


def test_4_1_reserved_bit_ignored(conn):
    payload = b"reserved"
    conn.send(raw_frame(PING, 0, 0x80000000, payload))
    conn.wait_for(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == payload,
                  what="the PING ACK")
    conn.assert_usable()


def test_4_2_data_larger_than_max_frame_size(conn):
    """16385 bytes of DATA (SETTINGS_MAX_FRAME_SIZE is 16384 by default):
    FRAME_SIZE_ERROR, as a stream or connection error."""
    sid = open_stream(conn, "/consume")
    conn.send(raw_frame(DATA, 0, sid, b"x" * 16385))
    kind, code = conn.stream_error(sid)
    assert kind in ("rst", "goaway") and code == FRAME_SIZE_ERROR, (kind, err_name(code))


def test_4_2_headers_larger_than_max_frame_size(conn):
    """A frame that carries a field block and is too large is a connection
    error (4.2)."""
    sid = conn.new_stream_id()
    block = conn.encode(req_headers("GET", "/", extra=[("x-big", "v" * 17000)]), huffman=False)
    assert len(block) > 16384
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, block))
    assert_connection_error(conn, FRAME_SIZE_ERROR)


@pytest.mark.parametrize("case", ["ping-7", "settings-5", "settings-ack-6", "rst-3", "window-update-3"])
def test_4_2_wrong_length_for_frame_type(conn, case):
    frame = {
        "ping-7": raw_frame(PING, 0, 0, b"1234567"),
        "settings-5": raw_frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"),
        "settings-ack-6": raw_frame(SETTINGS, ACK, 0, settings_payload({MAX_CONCURRENT_STREAMS: 10})),
        "rst-3": None,
        "window-update-3": raw_frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"),
    }[case]
    if case == "rst-3":
        sid = open_stream(conn)
        frame = raw_frame(RST_STREAM, 0, sid, b"\x00\x00\x08")
    conn.send(frame)
    assert_connection_error(conn, FRAME_SIZE_ERROR)


def test_4_2_priority_wrong_length_is_stream_error(conn):
    sid = open_stream(conn)
    conn.send(raw_frame(PRIORITY, 0, sid, b"\x00\x00\x00\x00"))
    assert_stream_error(conn, sid, FRAME_SIZE_ERROR)


# ----------------------------------------------------------------------------
# 4.3 field section compression (RFC 7541)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", [
    b"\x80",  # indexed field with index 0 (RFC 7541 6.1)
    b"\xff\xff\xff\x0f",  # indexed field far beyond the tables
    b"\x82\x86\x84\x41\x8f",  # literal with a string length longer than the block
    b"\x3f\xe1\x3f\x82\x86\x84",  # table size update to 8192, above SETTINGS_HEADER_TABLE_SIZE (6.3)
    b"\x82\x86\x84\x41\x09localhost\x20",  # dynamic table size update after a field (RFC 7541 4.2)
    b"\x82\x86\x84\x41\x83\xff\xff\xff",  # Huffman string with EOS / padding longer than 7 bits (5.2)
], ids=["index-0", "index-too-large", "truncated-string", "table-size-too-large", "size-update-after-field",
        "huffman-eos"])
def test_4_3_invalid_field_block_is_compression_error(conn, block):
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, block))
    assert_connection_error(conn, COMPRESSION_ERROR)


def test_4_3_priority_inside_field_block(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block[:3]) + raw_frame(PRIORITY, 0, sid, b"\x00\x00\x00\x00\x10"))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_4_3_headers_to_another_stream_inside_field_block(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    other = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block[:3])
              + raw_frame(HEADERS, END_STREAM | END_HEADERS, other, b"\x82\x86\x84"))
    assert_connection_error(conn, PROTOCOL_ERROR)


# ----------------------------------------------------------------------------
# 5.1 stream states
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["data", "rst", "window-update", "continuation"])
def test_5_1_frames_on_idle_stream(conn, frame):
    sid = 7  # nothing opened yet
    conn.send({
        "data": raw_frame(DATA, 0, sid, b"x"),
        "rst": raw_frame(RST_STREAM, 0, sid, struct.pack(">I", 8)),
        "window-update": raw_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 100)),
        "continuation": raw_frame(CONTINUATION, END_HEADERS, sid, hdr_block(conn, "/")),
    }[frame])
    assert_connection_error(conn, PROTOCOL_ERROR)


@pytest.mark.parametrize("frame", ["data", "headers"])
def test_5_1_half_closed_remote(conn, frame):
    """After the client's END_STREAM the stream is half-closed (remote):
    DATA or HEADERS on it is a stream error STREAM_CLOSED (a connection error
    of that code too, should the server have closed the stream already)."""
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, hdr_block(conn, "/sleep?t=2")))
    time.sleep(0.2)
    if frame == "data":
        conn.send(raw_frame(DATA, 0, sid, b"more"))
    else:
        conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, hdr_block(conn, "/")))
    assert_stream_error(conn, sid, STREAM_CLOSED)


@pytest.mark.parametrize("frame", ["data", "headers"])
def test_5_1_closed_after_end_stream(conn, frame):
    """Frames on a stream that both sides ended: STREAM_CLOSED (5.1,
    closed: a connection error; a stream error is accepted too)."""
    r = conn.request("GET", "/")
    assert r.status == 200
    sid = r.stream_id
    if frame == "data":
        conn.send(raw_frame(DATA, 0, sid, b"late"))
    else:
        conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, hdr_block(conn, "/")))
    kind, code = conn.stream_error(sid)
    assert kind in ("rst", "goaway") and code == STREAM_CLOSED, (kind, err_name(code))


@pytest.mark.parametrize("frame", ["data", "headers"])
def test_5_1_closed_after_rst_stream(conn, frame):
    """Frames after the client's own RST_STREAM: stream error STREAM_CLOSED.
    (The server may ignore frames for a short while after *it* reset a
    stream; here the client reset it.)"""
    sid = open_stream(conn)
    conn.send_rst(sid)
    time.sleep(0.2)
    if frame == "data":
        conn.send(raw_frame(DATA, 0, sid, b"late"))
    else:
        conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, hdr_block(conn, "/")))
    kind, code = conn.stream_error(sid)
    assert kind in ("rst", "goaway") and code == STREAM_CLOSED, (kind, err_name(code))


def test_5_1_continuation_after_rst_stream(conn):
    sid = open_stream(conn)
    conn.send_rst(sid)
    conn.send(raw_frame(CONTINUATION, END_HEADERS, sid, hdr_block(conn, "/")))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_5_1_priority_on_closed_stream_ok(conn):
    r = conn.request("GET", "/")
    conn.send(raw_frame(PRIORITY, 0, r.stream_id, b"\x00\x00\x00\x00\x10"))
    conn.assert_usable()


def test_5_1_1_even_stream_id_from_client(conn):
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 2, hdr_block(conn, "/")))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_5_1_1_decreasing_stream_id(conn):
    """5.1.1: a new stream id lower than one already opened is a connection
    error PROTOCOL_ERROR. (nghttp2 on its own ignores such a HEADERS when it
    no longer remembers the stream; the RFC and casgi's contract do not.)"""
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 5, hdr_block(conn, "/")))
    assert conn.reply(5).status == 200
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 3, hdr_block(conn, "/")))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_5_1_1_stream_id_skips_allowed(conn):
    """Stream ids need only increase: 1, then 9 (3..7 are closed implicitly)."""
    assert conn.request("GET", "/").status == 200
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 9, hdr_block(conn, "/")))
    assert conn.reply(9).status == 200


def test_5_1_2_concurrent_streams_over_the_limit(start_server):
    """With --h2-max-concurrent-streams 3, the fourth open stream is a stream
    error REFUSED_STREAM or PROTOCOL_ERROR (5.1.2 allows either). Once the
    client has acknowledged the limit, nghttp2 escalates it to a connection
    error PROTOCOL_ERROR, which 5.4.1 allows ("an endpoint MAY choose to
    treat a stream error as a connection error"); a new connection is
    served."""
    s = start_h2(start_server, "--h2-max-concurrent-streams", "3")
    with fresh(s) as c:
        assert c.server_settings.get(MAX_CONCURRENT_STREAMS) == 3, c.server_settings
        sids = [open_stream(c) for _ in range(3)]
        over = open_stream(c)
        kind, code = c.stream_error(over)
        assert kind in ("rst", "goaway") and code in (REFUSED_STREAM, PROTOCOL_ERROR), (kind, err_name(code))
        if kind == "rst":
            for sid in sids:
                c.send_rst(sid)
            c.assert_usable()
    with fresh(s) as c:
        c.assert_usable()


# ----------------------------------------------------------------------------
# 5.4 error handling, 5.5 extending HTTP/2
# ----------------------------------------------------------------------------


def test_5_4_1_connection_error_then_close(conn):
    conn.send(raw_frame(DATA, 0, 0, b"x"))
    kind, code, _ = conn.connection_error()
    assert (kind, code) == ("goaway", PROTOCOL_ERROR), (kind, err_name(code))
    rest = conn.frames_for(3)
    assert conn.eof, f"still open 3s after the GOAWAY; then received {rest}"


def test_5_4_1_goaway_last_stream_id_is_last_processed(conn):
    assert conn.request("GET", "/").status == 200
    assert conn.request("GET", "/").status == 200  # stream 3
    conn.send(raw_frame(DATA, 0, 0, b"x"))
    kind, code, last = conn.connection_error()
    assert kind == "goaway" and code == PROTOCOL_ERROR
    assert last == 3, f"GOAWAY last-stream-id {last}, the last processed stream was 3"


def test_5_4_2_stream_error_keeps_connection(conn):
    sid = conn.send_request("GET", "/", extra=[("connection", "keep-alive")])
    conn.assert_stream_error(sid, PROTOCOL_ERROR)
    conn.assert_usable()


def test_5_5_unknown_setting_ignored(conn):
    conn.send(raw_frame(SETTINGS, 0, 0, settings_payload({0xFF: 1, 0x5A5A: 12345})))
    conn.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags, what="the SETTINGS ACK")
    conn.assert_usable()


def test_5_5_extension_frame_inside_field_block(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block[:3]) + raw_frame(0xFA, 0, sid, b"ext")
              + raw_frame(CONTINUATION, END_HEADERS, sid, block[3:]))
    assert_connection_error(conn, PROTOCOL_ERROR)


# ----------------------------------------------------------------------------
# 6.1 DATA, 6.2 HEADERS, 6.3 PRIORITY, 6.4 RST_STREAM
# ----------------------------------------------------------------------------


def test_6_1_data_on_stream_0(conn):
    conn.send(raw_frame(DATA, 0, 0, b"x"))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_1_data_with_padding(conn):
    """A padded DATA frame delivers its data without the padding."""
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_HEADERS, sid, hdr_block(conn, "/echo", "POST")))
    conn.send(raw_frame(DATA, PADDED | END_STREAM, sid, bytes([10]) + b"padded-data" + b"\x00" * 10))
    r = conn.reply(sid)
    assert r.status == 200 and r.body == b"padded-data"


def test_6_1_data_pad_length_too_large(conn):
    sid = open_stream(conn, "/echo")
    conn.send(raw_frame(DATA, PADDED | END_STREAM, sid, bytes([20]) + b"short"))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_2_headers_on_stream_0(conn):
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 0, hdr_block(conn, "/")))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_2_headers_with_padding_and_priority(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    payload = bytes([4]) + b"\x00\x00\x00\x00" + bytes([15]) + block + b"\x00" * 4
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG, sid, payload))
    r = conn.reply(sid)
    assert r.status == 200 and r.body == b"hello h2"


def test_6_2_headers_pad_length_too_large(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS | PADDED, sid, bytes([len(block) + 5]) + block))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_2_headers_depending_on_itself(conn):
    sid = conn.new_stream_id()
    payload = struct.pack(">IB", sid, 15) + hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, sid, payload))
    assert_stream_error(conn, sid, PROTOCOL_ERROR)


def test_6_2_headers_followed_by_other_frame(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block) + raw_frame(DATA, 0, sid, b"x"))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_3_priority_on_stream_0(conn):
    conn.send(raw_frame(PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"))
    assert_connection_error(conn, PROTOCOL_ERROR)


@pytest.mark.parametrize("where", ["idle", "open", "half-closed"])
def test_6_3_priority_on_any_stream_ok(conn, where):
    if where == "idle":
        sid = 101
    elif where == "open":
        sid = open_stream(conn)
    else:
        sid = conn.new_stream_id()
        conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, hdr_block(conn, "/sleep?t=0.5")))
    conn.send(raw_frame(PRIORITY, 0, sid, b"\x00\x00\x00\x00\x20"))
    conn.ping()
    if where == "half-closed":
        assert conn.reply(sid).status == 200
    if where != "idle":
        conn.assert_usable()


def test_6_3_priority_depending_on_itself(conn):
    sid = open_stream(conn)
    conn.send(raw_frame(PRIORITY, 0, sid, struct.pack(">IB", sid, 15)))
    assert_stream_error(conn, sid, PROTOCOL_ERROR)


def test_6_4_rst_stream_on_stream_0(conn):
    conn.send(raw_frame(RST_STREAM, 0, 0, struct.pack(">I", 8)))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_4_rst_stream_ends_only_that_stream(conn):
    a = open_stream(conn)
    b = conn.send_request("GET", "/sleep?t=0.3")
    conn.send_rst(a)
    r = conn.reply(b)
    assert r.status == 200 and r.body == b"slept"


# ----------------------------------------------------------------------------
# 6.5 SETTINGS
# ----------------------------------------------------------------------------


def test_6_5_settings_acked(conn):
    conn.send(raw_frame(SETTINGS, 0, 0, settings_payload({MAX_CONCURRENT_STREAMS: 50})))
    conn.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags and not f.raw_payload,
                  what="an empty SETTINGS ACK")


def test_6_5_settings_on_stream(conn):
    conn.send(raw_frame(SETTINGS, 0, 1, b""))
    assert_connection_error(conn, PROTOCOL_ERROR)


@pytest.mark.parametrize("setting,value,code", [
    (ENABLE_PUSH, 2, PROTOCOL_ERROR),
    (INITIAL_WINDOW_SIZE, 2**31, FLOW_CONTROL_ERROR),
    (MAX_FRAME_SIZE, 16383, PROTOCOL_ERROR),
    (MAX_FRAME_SIZE, 2**24, PROTOCOL_ERROR),
], ids=["enable-push-2", "initial-window-2^31", "max-frame-size-16383", "max-frame-size-2^24"])
def test_6_5_2_invalid_setting_values(conn, setting, value, code):
    conn.send(raw_frame(SETTINGS, 0, 0, settings_payload({setting: value})))
    assert_connection_error(conn, code)


def test_6_5_3_initial_window_size_applies_to_open_streams(h2srv):
    """The client starts with an initial window of 0: the response's DATA
    waits. A SETTINGS raising INITIAL_WINDOW_SIZE (and no WINDOW_UPDATE for
    the stream) lets exactly that much through (6.9.2)."""
    with FrameConn.tcp(h2srv.port) as c:
        c.start({INITIAL_WINDOW_SIZE: 0})
        sid = c.send_request("GET", "/download?size=100&seed=3")
        head = c.wait_for(lambda f: isinstance(f, HeadersFrame) and f.stream_id == sid, what="the response HEADERS")
        assert dict(head.decoded)[b":status"] == b"200"
        early = [f for f in c.frames_for(0.5) if isinstance(f, DataFrame) and f.stream_id == sid]
        assert not early or all(len(f.data) == 0 for f in early), f"DATA beyond a window of 0: {early}"
        c.send(raw_frame(SETTINGS, 0, 0, settings_payload({INITIAL_WINDOW_SIZE: 60})))
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 60:
            f = c.wait_for(lambda f: isinstance(f, DataFrame) and f.stream_id == sid,
                           timeout=max(0.01, deadline - time.monotonic()), what="DATA after the SETTINGS")
            got += f.data
        assert len(got) == 60
        more = [f for f in c.frames_for(0.5) if isinstance(f, DataFrame) and f.stream_id == sid and f.data]
        assert not more, "DATA beyond the new window of 60"
        c.send_window_update(sid, 40)
        while len(got) < 100:
            got += c.wait_for(lambda f: isinstance(f, DataFrame) and f.stream_id == sid, what="the rest").data
        assert got == download_bytes(100, 3)


# ----------------------------------------------------------------------------
# 6.7 PING, 6.8 GOAWAY, 6.9 WINDOW_UPDATE
# ----------------------------------------------------------------------------


def test_6_7_ping_acked_with_same_payload(conn):
    conn.send(raw_frame(PING, 0, 0, b"\x00\x01\x02\x03\xfc\xfd\xfe\xff"))
    f = conn.wait_for(lambda f: isinstance(f, PingFrame), what="the PING ACK")
    assert "ACK" in f.flags and f.opaque_data == b"\x00\x01\x02\x03\xfc\xfd\xfe\xff"


def test_6_7_ping_ack_not_answered(conn):
    conn.send(raw_frame(PING, ACK, 0, b"ackackac"))
    conn.send(raw_frame(PING, 0, 0, b"realping"))
    f = conn.wait_for(lambda f: isinstance(f, PingFrame), what="a PING")
    assert f.opaque_data == b"realping", "the server answered a PING ACK"


def test_6_7_ping_on_stream(conn):
    conn.send(raw_frame(PING, 0, 1, b"12345678"))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_8_goaway_on_stream(conn):
    conn.send(raw_frame(GOAWAY, 0, 1, struct.pack(">II", 0, NO_ERROR)))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_8_client_goaway_in_flight_stream_completes(conn):
    sid = conn.send_request("GET", "/sleep?t=0.5")
    conn.send(raw_frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))
    r = conn.reply(sid)
    assert r.status == 200 and r.body == b"slept"


def test_6_9_window_update_zero_on_connection(conn):
    conn.send(raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_9_window_update_zero_on_stream(conn):
    sid = open_stream(conn)
    conn.send(raw_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0)))
    assert_stream_error(conn, sid, PROTOCOL_ERROR)


def test_6_9_1_connection_window_overflow(conn):
    conn.send(raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)))
    assert_connection_error(conn, FLOW_CONTROL_ERROR)


def test_6_9_1_stream_window_overflow(conn):
    sid = open_stream(conn)
    conn.send(raw_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 2**31 - 1)))
    assert_stream_error(conn, sid, FLOW_CONTROL_ERROR)


def test_6_9_window_update_on_half_closed_stream_ok(conn):
    sid = conn.send_request("GET", "/sleep?t=0.3")
    conn.send_window_update(sid, 1000)
    r = conn.reply(sid)
    assert r.status == 200 and r.body == b"slept"


# ----------------------------------------------------------------------------
# 6.10 CONTINUATION
# ----------------------------------------------------------------------------


def test_6_10_field_block_over_continuations(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/scope", extra=[(f"x-c{i}", "v" * 40) for i in range(30)])
    parts = [block[i:i + 100] for i in range(0, len(block), 100)]
    out = raw_frame(HEADERS, END_STREAM, sid, parts[0])
    for i, p in enumerate(parts[1:], 1):
        out += raw_frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, sid, p)
    conn.send(out)
    r = conn.reply(sid)
    assert r.status == 200
    import json
    headers = json.loads(r.body)["headers"]
    assert [h for h in headers if h[0].startswith("x-c")] == [[f"x-c{i}", "v" * 40] for i in range(30)]


def test_6_10_continuation_after_end_headers(conn):
    r = conn.request("GET", "/")
    conn.send(raw_frame(CONTINUATION, END_HEADERS, r.stream_id, b"\x82"))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_10_continuation_on_stream_0(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block[:3]) + raw_frame(CONTINUATION, END_HEADERS, 0, block[3:]))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_10_continuation_on_other_stream(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block[:3])
              + raw_frame(CONTINUATION, END_HEADERS, sid + 2, block[3:]))
    assert_connection_error(conn, PROTOCOL_ERROR)


def test_6_10_ping_inside_field_block(conn):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/")
    conn.send(raw_frame(HEADERS, END_STREAM, sid, block[:3]) + raw_frame(PING, 0, 0, b"12345678")
              + raw_frame(CONTINUATION, END_HEADERS, sid, block[3:]))
    assert_connection_error(conn, PROTOCOL_ERROR)


# ----------------------------------------------------------------------------
# 8.1 HTTP message framing, 8.2 fields, 8.3 pseudo-header fields
# ----------------------------------------------------------------------------

PSEUDO = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]

MALFORMED = {
    "uppercase-name": PSEUDO + [(b"X-Upper", b"v")],
    "connection": PSEUDO + [(b"connection", b"keep-alive")],
    "keep-alive": PSEUDO + [(b"keep-alive", b"timeout=5")],
    "proxy-connection": PSEUDO + [(b"proxy-connection", b"keep-alive")],
    "transfer-encoding": PSEUDO + [(b"transfer-encoding", b"chunked")],
    "upgrade": PSEUDO + [(b"upgrade", b"websocket")],
    "te-gzip": PSEUDO + [(b"te", b"gzip")],
    "name-with-space": PSEUDO + [(b"x bad", b"v")],
    "name-with-colon": PSEUDO + [(b"x:bad", b"v")],
    "value-with-nul": PSEUDO + [(b"x-bad", b"a\x00b")],
    "value-with-lf": PSEUDO + [(b"x-bad", b"a\nb")],
    "value-with-cr": PSEUDO + [(b"x-bad", b"a\rb")],
    "unknown-pseudo": PSEUDO + [(b":foo", b"bar")],
    "response-pseudo": PSEUDO + [(b":status", b"200")],
    "pseudo-after-regular": PSEUDO[:3] + [(b"x-a", b"1"), (b":path", b"/")],
    "duplicate-path": PSEUDO + [(b":path", b"/")],
    "duplicate-method": PSEUDO[:1] + [(b":method", b"POST")] + PSEUDO[1:],
    "duplicate-scheme": PSEUDO[:2] + [(b":scheme", b"https")] + PSEUDO[2:],
    "missing-method": PSEUDO[1:],
    "missing-scheme": PSEUDO[:1] + PSEUDO[2:],
    "missing-path": PSEUDO[:3],
    "empty-path": PSEUDO[:3] + [(b":path", b"")],
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_8_malformed_request_is_stream_error(conn, case):
    """A malformed request (8.1.1, 8.2, 8.3): RST_STREAM PROTOCOL_ERROR, and
    the connection serves the next request."""
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, conn.encode(MALFORMED[case], huffman=False)))
    kind, code = conn.stream_error(sid)
    assert (kind, code) == ("rst", PROTOCOL_ERROR), f"{case}: {kind} {err_name(code)}"
    conn.assert_usable()


def test_8_2_te_trailers_allowed(conn):
    r = conn.request("GET", "/", extra=[("te", "trailers")])
    assert r.status == 200 and r.body == b"hello h2"


@pytest.mark.parametrize("declared,sent", [(5, b"abc"), (2, b"abc")], ids=["shorter", "longer"])
def test_8_1_1_content_length_mismatch(conn, declared, sent):
    sid = conn.new_stream_id()
    block = hdr_block(conn, "/echo", "POST", extra=[("content-length", str(declared))])
    conn.send(raw_frame(HEADERS, END_HEADERS, sid, block) + raw_frame(DATA, END_STREAM, sid, sent))
    kind, code = conn.stream_error(sid)
    assert (kind, code) == ("rst", PROTOCOL_ERROR), (kind, err_name(code))
    conn.assert_usable()


def test_8_1_request_trailers_delivered(conn):
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_HEADERS, sid, hdr_block(conn, "/echo", "POST"))
              + raw_frame(DATA, 0, sid, b"body")
              + raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, conn.encode([(b"x-trailer", b"t")])))
    r = conn.reply(sid)
    assert r.status == 200 and r.body == b"body"


def test_8_1_trailers_without_end_stream(conn):
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_HEADERS, sid, hdr_block(conn, "/echo", "POST"))
              + raw_frame(DATA, 0, sid, b"body")
              + raw_frame(HEADERS, END_HEADERS, sid, conn.encode([(b"x-trailer", b"t")])))
    kind, code = conn.stream_error(sid)
    assert kind in ("rst", "goaway") and code == PROTOCOL_ERROR, (kind, err_name(code))


def test_8_3_pseudo_header_in_trailers(conn):
    sid = conn.new_stream_id()
    conn.send(raw_frame(HEADERS, END_HEADERS, sid, hdr_block(conn, "/echo", "POST"))
              + raw_frame(DATA, 0, sid, b"body")
              + raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, conn.encode([(b":path", b"/x")])))
    kind, code = conn.stream_error(sid)
    assert (kind, code) == ("rst", PROTOCOL_ERROR), (kind, err_name(code))
    conn.assert_usable()
