"""HTTP/2 attacks, each against its own casgi process: rapid reset
(CVE-2023-44487), CONTINUATION flood (2024), HPACK bomb, PING / SETTINGS /
PRIORITY / empty DATA floods (CVE-2019-9512, -9515, -9513, -9518),
MadeYouReset (CVE-2025-8671), zero-window stall (CVE-2019-9517 style),
too many concurrent streams, invalid frames on stream 0 / idle streams,
invalid preface, oversized frames, window overflow.

Every test asserts a bound (what ends the attack, how much memory it may
cost, how many app tasks may run) and that another, well-behaved connection
is served while the attack runs (a Bystander thread) and afterwards.

Bounds used here (casgi's contract, see issue "HTTP/2 on nghttp2"):
- running app tasks of the process stay within the announced
  SETTINGS_MAX_CONCURRENT_STREAMS (100) plus the bystander's one;
- server RSS grows by less than 32 MiB during an attack;
- the bystander's requests never fail and none takes longer than 2 s.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from h2_util import (CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_MAX_CONCURRENT_STREAMS, END_HEADERS,
                     END_STREAM, ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, HEADERS,
                     MAX_CONCURRENT_STREAMS, NO_ERROR, PING, PRIORITY,
                     PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM, SETTINGS, WINDOW_UPDATE, FrameConn, err_name,
                     raw_frame, req_headers, settings_payload, start_h2)
from helpers import BackgroundLoop, RssSampler, assert_rss_growth_below, unique

pytestmark = pytest.mark.timeout(90)

RSS_LIMIT_KIB = 32 * 1024
TASK_BOUND = DEFAULT_MAX_CONCURRENT_STREAMS + 1  # + the bystander's request
BYSTANDER_MAX_LATENCY = 2.0


class Bystander(BackgroundLoop):
    """A well-behaved client on its own connection: one request every 50 ms
    while the attack runs. Records failures and the slowest request."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.failures: list = []
        self.latencies: list = []

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = FrameConn.tcp(self.p.port)
                    conn.start()
                r = conn.request("GET", "/")
                assert r.status == 200 and r.body == b"hello h2", (r.status, r.body[:80])
            except (AssertionError, OSError) as exc:
                self.failures.append(repr(exc)[:300])
                if conn is not None:
                    conn.close()
                conn = None
            self.latencies.append(time.monotonic() - t0)
            self._stop.wait(0.05)
        if conn is not None:
            conn.close()

    def check(self) -> None:
        assert self.latencies, "the bystander made no request"
        assert not self.failures, f"the well-behaved connection failed during the attack: {self.failures[:3]}"
        assert max(self.latencies) < BYSTANDER_MAX_LATENCY, \
            f"a well-behaved request took {max(self.latencies):.2f}s during the attack"


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with `first`'s bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(out + [value])


def literal_field(name: bytes, value: bytes) -> bytes:
    """A literal field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def served_afterwards(p) -> None:
    with FrameConn.tcp(p.port) as c:
        c.start()
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"hello h2"


def stats(p, reset: bool = False) -> dict:
    with FrameConn.tcp(p.port) as c:
        c.start()
        r = c.request("GET", "/stats?reset=1" if reset else "/stats")
        return json.loads(r.body)


def attack_conn(p, settings=None) -> FrameConn:
    c = FrameConn.tcp(p.port, timeout=10)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    c.start(settings)
    return c


def drain_until_end(c: FrameConn, timeout: float = 10.0) -> list:
    """Reads (discarding) until the server closes; the GOAWAYs it sent."""
    goaways = []
    deadline = time.monotonic() + timeout
    while not c.eof and time.monotonic() < deadline:
        for f in c.frames_for(min(1.0, max(0.01, deadline - time.monotonic()))):
            if isinstance(f, GoAwayFrame):
                goaways.append(f)
        c.received.clear()
    return goaways


def send_until_closed(c: FrameConn, batches, budget_s: float = 30.0) -> int:
    """Sends each batch of bytes until the server stops taking them (closed,
    or a send blocked for 2 s) or the budget is spent. Returns the number of
    batches sent. Reads nothing meanwhile."""
    c.sock.settimeout(2.0)
    sent = 0
    deadline = time.monotonic() + budget_s
    for batch in batches:
        if time.monotonic() > deadline:
            break
        try:
            c.sock.sendall(batch)
        except (BrokenPipeError, ConnectionResetError):
            break
        except socket.timeout:
            break
        sent += 1
    c.sock.settimeout(c.timeout)
    return sent


# ----------------------------------------------------------------------------
# Rapid reset, MadeYouReset
# ----------------------------------------------------------------------------


def test_rapid_reset(start_server):
    """HEADERS + RST_STREAM, 20000 times as fast as possible, each stream
    for an app that sleeps 3 s without reading: the server caps running app
    tasks and ends the connection with GOAWAY ENHANCE_YOUR_CALM or
    PROTOCOL_ERROR after an excessive rate."""
    p = start_h2(start_server)
    served_afterwards(p)
    stats(p, reset=True)
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        block = c.encode(req_headers("GET", "/sleep?t=3"))

        def batches():
            sid = 1
            while sid < 40000:
                out = []
                for _ in range(100):
                    out.append(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, block)
                               + raw_frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
                    sid += 2
                yield b"".join(out)

        send_until_closed(c, batches())
        goaways = drain_until_end(c)
        c.close()
        mid = stats(p)
    by.check()
    assert goaways, "the connection was not ended with a GOAWAY after 20000 rapid resets"
    assert goaways[-1].error_code in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR), err_name(goaways[-1].error_code)
    assert mid["max_running"] <= TASK_BOUND, f"{mid['max_running']} app tasks ran at once during the rapid reset"
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "during a rapid reset attack")
    served_afterwards(p)


MADE_YOU_RESET = {
    # each provokes a stream error from the server on an open stream
    "window-update-0": lambda sid: raw_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0)),
    "priority-bad-length": lambda sid: raw_frame(PRIORITY, 0, sid, b"\x00\x00\x00\x00"),
    "window-overflow": lambda sid: raw_frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 2**31 - 1)),
    "data-half-closed": lambda sid: raw_frame(DATA, 0, sid, b"x"),
}


@pytest.mark.parametrize("case", list(MADE_YOU_RESET))
def test_made_you_reset(start_server, case):
    """MadeYouReset: requests whose streams the client makes the *server*
    reset with a malformed frame, many times. The server ends the connection
    (a GOAWAY with an error code) and running app tasks stay capped."""
    p = start_h2(start_server)
    stats(p, reset=True)
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        block = c.encode(req_headers("GET", "/sleep?t=3"))
        bad = MADE_YOU_RESET[case]

        def batches():
            sid = 1
            while sid < 40000:
                out = []
                for _ in range(100):
                    out.append(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, block) + bad(sid))
                    sid += 2
                yield b"".join(out)

        send_until_closed(c, batches())
        goaways = drain_until_end(c)
        c.close()
        mid = stats(p)
    by.check()
    assert goaways, f"{case}: 20000 server-side resets and the connection was not ended with a GOAWAY"
    assert goaways[-1].error_code != NO_ERROR, "GOAWAY NO_ERROR for an attack"
    assert mid["max_running"] <= TASK_BOUND, f"{mid['max_running']} app tasks ran at once"
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, f"during MadeYouReset ({case})")
    served_afterwards(p)


# ----------------------------------------------------------------------------
# Header attacks: CONTINUATION flood, HPACK bomb, header list size
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fields", "empty"])
def test_continuation_flood(start_server, kind):
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end
    the block: 16 KiB frames full of fields (up to 64 MiB), or empty frames
    (up to 500000). The server closes the connection with a GOAWAY before
    the end and its memory stays bounded."""
    p = start_h2(start_server)
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        sid = 1
        head = c.encode(req_headers("GET", "/"))
        field = literal_field(b"x-abc", b"a" * 1000)
        if kind == "fields":
            payload = field * 16
            frame = raw_frame(CONTINUATION, 0, sid, payload)
            batches = (frame * 16 for _ in range(256))  # 256 x 16 x 16 KiB = 64 MiB
        else:
            frame = raw_frame(CONTINUATION, 0, sid, b"")
            batches = (frame * 5000 for _ in range(100))
        c.send(raw_frame(HEADERS, END_STREAM, sid, head))
        n = send_until_closed(c, batches)
        goaways = drain_until_end(c)
        c.close()
    by.check()
    total = 256 if kind == "fields" else 100
    assert goaways, f"no GOAWAY after {n} of {total} batches of CONTINUATION frames (closed: {c.eof})"
    assert goaways[-1].error_code != NO_ERROR
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, f"during a CONTINUATION flood ({kind})")
    served_afterwards(p)


def test_hpack_bomb(start_server):
    """A 4000-byte field put into the dynamic table, then referenced 12000
    times in one 16 KiB HEADERS frame (48 MB once decoded): refused by the
    header list size (431 or RST_STREAM), memory bounded, the connection and
    others served."""
    p = start_h2(start_server)
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        sid = c.new_stream_id()
        # The encoder indexes the field (and so knows the table the server has).
        block = c.encode(req_headers("GET", "/") + [(b"x-bomb", b"b" * 4000)], huffman=False)
        block += b"\xbe" * (16384 - len(block))  # indexed field 62: the newest entry, x-bomb
        assert len(block) == 16384
        c.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, block))
        r = c.reply(sid)
        assert r.reset is not None or r.status == 431, (r.status, r.reset)
        c.assert_usable()
        c.close()
    by.check()
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "for an HPACK bomb")
    served_afterwards(p)


def test_hpack_bomb_repeated(start_server):
    """The bomb on 200 streams of one connection: each refused, the memory
    bounded, the server ends the connection or keeps refusing."""
    p = start_h2(start_server)
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        first = c.encode(req_headers("GET", "/") + [(b"x-bomb", b"b" * 4000)], huffman=False)
        out = []
        for i in range(200):
            sid = 1 + 2 * i
            block = first if i == 0 else c.encode(req_headers("GET", "/"), huffman=False)
            block += b"\xbe" * (16384 - len(block))
            out.append(raw_frame(HEADERS, END_STREAM | END_HEADERS, sid, block))
        send_until_closed(c, iter(out))
        frames = c.frames_for(3)
        served = [f for f in frames if f.type == HEADERS and dict(f.decoded).get(b":status") == b"200"]
        assert not served, "a request of 48 MB of fields was served"
        c.close()
    by.check()
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "for 200 HPACK bombs")
    served_afterwards(p)


# ----------------------------------------------------------------------------
# Control frame floods
# ----------------------------------------------------------------------------

FLOODS = {
    "ping": lambda i: raw_frame(PING, 0, 0, struct.pack(">Q", i)),
    "settings": lambda i: raw_frame(SETTINGS, 0, 0, settings_payload({MAX_CONCURRENT_STREAMS: 100})),
    # stream 1 + 2a depends on 1 + 2b with b = 7a + 1 (mod 5000), never a itself
    "priority": lambda i: raw_frame(PRIORITY, 0, 1 + 2 * (i % 5000),
                                    struct.pack(">IB", 1 + 2 * ((i * 7 + 1) % 5000), 16)),
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_control_frame_flood(start_server, kind):
    """200000 PING / SETTINGS / PRIORITY frames, the client reading nothing:
    the server either keeps answering (its answers queued within bounded
    memory: it stops reading while they are not taken) or ends the
    connection with GOAWAY ENHANCE_YOUR_CALM. Never unbounded. (A connection
    without streams is idle for the keep-alive timeout however many control
    frames it sends, and gets GOAWAY NO_ERROR after it: a slow run, as under
    ASan, would end there, so the timeout is set out of the way.)"""
    p = start_h2(start_server, "--timeout-keep-alive", "300")
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        make = FLOODS[kind]
        batches = (b"".join(make(j) for j in range(i * 2000, (i + 1) * 2000)) for i in range(100))
        send_until_closed(c, batches)
        time.sleep(1)
        growth = rss.max_kib - base
        # Now read: either answers (and the connection still works) or a GOAWAY.
        got_goaway = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not c.eof:
            frames = c.frames_for(0.5)
            if not frames:
                break
            for f in frames:
                if isinstance(f, GoAwayFrame):
                    got_goaway = f
            c.received.clear()
        if got_goaway is not None:
            assert got_goaway.error_code == ENHANCE_YOUR_CALM, err_name(got_goaway.error_code)
        else:
            assert not c.eof, "the connection closed without a GOAWAY"
            c.assert_usable()
        c.close()
    by.check()
    assert_rss_growth_below(growth, RSS_LIMIT_KIB, f"during a {kind} flood")
    served_afterwards(p)


def test_empty_data_frame_flood(start_server):
    """500000 empty DATA frames on one open stream (no END_STREAM): bounded
    memory, the server either serves on or ends the connection with GOAWAY
    ENHANCE_YOUR_CALM / PROTOCOL_ERROR."""
    p = start_h2(start_server)
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        sid = c.new_stream_id()
        c.send(c.headers_frame(sid, req_headers("POST", "/consume"), end_stream=False))
        empty = raw_frame(DATA, 0, sid, b"")
        send_until_closed(c, (empty * 5000 for _ in range(100)))
        kind, code = "open", None
        if c.send(raw_frame(DATA, END_STREAM, sid, b"end")):
            # The stream's answer (the app read every empty message), or the end.
            answered = False
            deadline = time.monotonic() + 30
            while kind == "open" and not answered and time.monotonic() < deadline:
                for f in c.frames_for(1):
                    if isinstance(f, GoAwayFrame):
                        kind, code = "goaway", f.error_code
                    elif f.stream_id == sid and "END_STREAM" in f.flags or isinstance(f, RstStreamFrame):
                        answered = True
                if c.eof and kind == "open":
                    kind = "closed"
            assert answered or kind != "open", "no answer on the flooded stream within 30s"
        else:
            kind = "closed"
        if kind == "goaway":
            assert code in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR), err_name(code)
        else:
            assert kind == "open", "the connection closed without a GOAWAY"
            c.assert_usable()
        c.close()
    by.check()
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "during an empty DATA frame flood")
    served_afterwards(p)


# ----------------------------------------------------------------------------
# Stalls and stream limits
# ----------------------------------------------------------------------------


def test_zero_window_stall(start_server):
    """A stream whose window the client never opens (a 64 MiB download):
    the app is held back (it does not finish by buffering the body), memory
    stays bounded, other streams of the connection and other connections are
    served; when the client goes, the app is released."""
    p = start_h2(start_server)
    ident = unique()
    mark = p.mark()
    with Bystander(p) as by, RssSampler(p.pid) as rss:
        base = p.rss_kib()
        c = attack_conn(p)
        c.send_request("GET", f"/download?size={64 << 20}&id={ident}")
        time.sleep(2)
        assert f"H2EVENT download-done {ident}" not in p.output(mark), "the app finished a 64 MiB response " \
            "to a client that opened no window: the server buffered it"
        # Another stream on the same connection still gets its response (the
        # connection window may be used up by the stalled stream: open it).
        c.send_window_update(0, 1 << 24)
        r = c.request("GET", "/")
        assert r.status == 200 and r.body == b"hello h2"
        c.ping()
        growth = rss.max_kib - base
        c.close()
    by.check()
    assert_rss_growth_below(growth, RSS_LIMIT_KIB, "for a stalled 64 MiB response")
    p.wait_for(rf"H2EVENT download-done {ident}", since=mark, timeout=15)
    served_afterwards(p)


def test_too_many_concurrent_streams(start_server):
    """The 101st concurrent stream (the default limit is 100) is refused with
    RST_STREAM REFUSED_STREAM or PROTOCOL_ERROR, or, once the client has
    acknowledged the limit, the connection ends with GOAWAY PROTOCOL_ERROR
    (nghttp2 escalates; RFC 9113 5.4.1 allows it); app tasks stay within the
    limit and other connections are served."""
    p = start_h2(start_server)
    stats(p, reset=True)
    mark = p.mark()
    with Bystander(p) as by:
        c = attack_conn(p)
        limit = c.server_settings.get(MAX_CONCURRENT_STREAMS)
        assert limit == DEFAULT_MAX_CONCURRENT_STREAMS
        sids = []
        out = b""
        for i in range(limit + 20):
            sid = c.new_stream_id()
            sids.append(sid)
            out += raw_frame(HEADERS, END_HEADERS, sid, c.encode(req_headers("POST", f"/hang?id={mark}-{i}")))
        c.send(out)
        refused = {}
        goaway = None
        for f in c.frames_for(2):
            if isinstance(f, RstStreamFrame):
                refused[f.stream_id] = f.error_code
            if isinstance(f, GoAwayFrame):
                goaway = f.error_code
            assert not isinstance(f, GoAwayFrame) or f.error_code in (PROTOCOL_ERROR, REFUSED_STREAM), \
                err_name(f.error_code)
        assert goaway is not None or set(sids[limit:]) <= set(refused), \
            f"streams over the limit not refused: {sorted(refused)}"
        assert all(code in (REFUSED_STREAM, PROTOCOL_ERROR) for code in refused.values()), \
            {k: err_name(v) for k, v in refused.items()}
        running = stats(p)["running"]
        assert running <= limit + 1, f"{running} app tasks for a limit of {limit}"
        if goaway is None:
            for sid in sids[:limit]:
                c.send_rst(sid)
            c.assert_usable()
        c.close()
    by.check()
    served_afterwards(p)


# ----------------------------------------------------------------------------
# Invalid frames: the error, and the others are served
# ----------------------------------------------------------------------------

BAD = {
    "data-on-stream-0": (lambda c: raw_frame(DATA, 0, 0, b"x"), (PROTOCOL_ERROR,)),
    "headers-on-stream-0": (lambda c: raw_frame(HEADERS, END_STREAM | END_HEADERS, 0,
                                                c.encode(req_headers("GET", "/"))), (PROTOCOL_ERROR,)),
    "data-on-idle-stream": (lambda c: raw_frame(DATA, 0, 5, b"x"), (PROTOCOL_ERROR,)),
    "window-update-on-idle-stream": (lambda c: raw_frame(WINDOW_UPDATE, 0, 5, struct.pack(">I", 10)),
                                     (PROTOCOL_ERROR,)),
    "rst-on-idle-stream": (lambda c: raw_frame(RST_STREAM, 0, 5, struct.pack(">I", CANCEL)), (PROTOCOL_ERROR,)),
    "even-stream-id": (lambda c: raw_frame(HEADERS, END_STREAM | END_HEADERS, 2,
                                           c.encode(req_headers("GET", "/"))), (PROTOCOL_ERROR,)),
    "oversized-frame": (lambda c: raw_frame(PING, 0, 0, b"x" * 20000), (FRAME_SIZE_ERROR,)),
    "oversized-length-field": (lambda c: c.headers_frame(1, req_headers("POST", "/consume"), end_stream=False)
                               + raw_frame(DATA, 0, 1, b"", length=(1 << 24) - 1), (FRAME_SIZE_ERROR,)),
    "connection-window-overflow": (lambda c: raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)),
                                   (FLOW_CONTROL_ERROR,)),
    "invalid-hpack": (lambda c: raw_frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x80"), (COMPRESSION_ERROR,)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_frame_ends_only_its_connection(h2srv, case):
    make, codes = BAD[case]
    with Bystander(h2srv) as by:
        c = attack_conn(h2srv)
        c.send(make(c))
        kind, code, _ = c.connection_error()
        assert kind == "goaway" and code in codes, f"{case}: {kind} {err_name(code)}"
        assert c.connection_error()[0] == "closed"
        c.close()
    by.check()
    served_afterwards(h2srv)


def test_invalid_preface_ends_only_its_connection(h2srv):
    with Bystander(h2srv) as by:
        for junk in (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"\x00" * 24, b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n"):
            c = FrameConn.tcp(h2srv.port)
            c.send(junk + raw_frame(SETTINGS, 0, 0))
            deadline = time.monotonic() + 5
            while not c.eof:
                assert time.monotonic() < deadline, f"{junk!r}: the connection is still open after 5s"
                try:
                    c._fill(deadline)
                except TimeoutError:
                    continue
                c.buf = b""
            c.close()
    by.check()
    served_afterwards(h2srv)


def test_many_connections_with_bad_frames_leave_memory_bounded(start_server):
    """1000 connections, each ended by a protocol error: the server gives
    their memory back."""
    p = start_h2(start_server)
    for _ in range(100):
        with FrameConn.tcp(p.port) as c:
            c.start()
            c.send(raw_frame(DATA, 0, 0, b"x"))
            c.connection_error()
    base = p.rss_kib()
    for _ in range(1000):
        with FrameConn.tcp(p.port) as c:
            c.start()
            c.send(c.headers_frame(1, req_headers("GET", "/"), end_stream=False) + raw_frame(DATA, 0, 0, b"x"))
            c.connection_error()
    assert_rss_growth_below(p.rss_kib() - base, 8 * 1024, "over 1000 connections ended by protocol errors")
    served_afterwards(p)
