"""Limits and compression: --ws-max-size (9), permessage-deflate negotiation and
compressed traffic both ways (12/13), a compression bomb, backpressure from
an app that does not receive (--ws-max-queue)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from helpers import RssSampler, assert_server_healthy, loop_params
from ws_util import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    RSV1,
    Deflate,
    Inflate,
    build_frame,
    compress_once,
    open_ws,
    parse_extensions,
    rss_bound,
    wait_event,
)

pytestmark = pytest.mark.timeout(60)

MAX = 65536


@pytest.fixture(params=loop_params())
def small(request, ws_shared):
    """Echo server with --ws-max-size 65536."""
    p = ws_shared.get("ws_app:app", request.param, ("--ws-max-size", str(MAX)))
    mark = p.mark()
    yield p
    assert_server_healthy(p, mark)


def pmd_open(p, path="/echo", offer="permessage-deflate; client_max_window_bits", **kw):
    ws = open_ws(p, path, extensions=offer, **kw)
    assert ws.deflate_params is not None, f"permessage-deflate not negotiated: {ws.response.raw!r}"
    return ws


# -- 9 limits ----------------------------------------------------------------------

@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_9_message_of_max_size_ok(small, op):
    with open_ws(small, "/echo") as ws:
        payload = b"m" * MAX
        ws.send_frame(op, payload)
        got_op, got = ws.read_message(timeout=10)
        assert got_op == op and got == payload


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_9_message_of_max_size_plus_one_is_1009(small, op):
    with open_ws(small, "/echo") as ws:
        ws.send_frame(op, b"m" * (MAX + 1))
        ws.fail_with(1009)


def test_9_oversized_frame_rejected_from_its_header(small):
    """The header declares 1 GiB; nothing of the payload is sent: 1009 comes at once."""
    with open_ws(small, "/echo") as ws:
        ws.send_raw(build_frame(OP_BINARY, b"", declared_len=1 << 30)[:14])
        ws.expect_close(1009, timeout=2)


def test_9_fragmented_message_over_limit_is_1009(small):
    with open_ws(small, "/echo") as ws:
        chunk = b"f" * 4096
        n = MAX // len(chunk)
        for i in range(n):
            ws.try_send_frame(OP_BINARY if i == 0 else OP_CONT, chunk, fin=False)
        ws.try_send_frame(OP_CONT, b"!", fin=False)  # one byte past the limit, message not finished
        ws.expect_close(1009, timeout=3)


def test_9_fragmented_message_of_exactly_max_size(small):
    with open_ws(small, "/echo") as ws:
        chunk = b"g" * 1024
        n = MAX // len(chunk)
        for i in range(n):
            ws.send_frame(OP_BINARY if i == 0 else OP_CONT, chunk, fin=i == n - 1)
        assert ws.recv_binary(timeout=10) == chunk * n


def test_9_many_small_frames(wss):
    with open_ws(wss, "/echo") as ws:
        n = 5000
        data = b"".join(build_frame(OP_TEXT if i == 0 else OP_CONT, b"ab", fin=i == n - 1) for i in range(n))
        ws.send_raw(data)
        assert ws.recv_text(timeout=10) == "ab" * n


def test_9_many_small_messages_pipelined(wss):
    with open_ws(wss, "/echo") as ws:
        n = 5000
        sender = threading.Thread(target=ws.send_raw,
                                  args=(b"".join(build_frame(OP_BINARY, i.to_bytes(4, "big")) for i in range(n)),))
        sender.start()
        for i in range(n):
            assert ws.recv_binary(timeout=10) == i.to_bytes(4, "big")
        sender.join(10)
        ws.close_handshake()


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_9_large_messages_default_limit(wss, size):
    with open_ws(wss, "/echo", timeout=20) as ws:
        payload = os.urandom(size)
        sender = threading.Thread(target=ws.send_binary, args=(payload,))
        sender.start()
        assert ws.recv_binary(timeout=20) == payload
        sender.join(10)


def test_9_default_max_size_is_16_mib(wss):
    with open_ws(wss, "/echo") as ws:
        ws.send_raw(build_frame(OP_BINARY, b"", declared_len=16 * 1024 * 1024 + 1)[:14])
        ws.expect_close(1009, timeout=2)


def test_9_large_server_message_to_client(wss):
    with open_ws(wss, "/bigsend?n=3000000", timeout=10) as ws:
        data = ws.recv_binary(timeout=10)
        assert len(data) == 3000000
        assert data[:256] == bytes(range(256))


def test_server_send_backpressure_client_not_reading(start_server, loop):
    """The app sends 64 MiB while the client reads nothing for 2 s: send()
    waits on the transport instead of buffering everything in the server."""
    s = start_server("ws_app:app", loop=loop)
    mark = s.mark()
    n, size = 1024, 65536
    with open_ws(s, f"/flood?n={n}&size={size}&id=sbp", timeout=30) as ws:
        ws.raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        wait_event(s, "accepted", "sbp", since=mark)
        base = s.rss_kib()
        with RssSampler(s.pid, 0.01) as rss:
            time.sleep(2.0)
            grew_stalled = rss.max_kib - base
            assert "WSEVENT flood-done sbp" not in s.output(mark), "64 MiB sent to a client that read nothing"
            got = 0
            while True:
                op, data = ws.read_message(timeout=20)
                if op == OP_TEXT:
                    assert data.startswith(b"DONE"), data[:40]
                    break
                assert len(data) == size
                got += 1
        assert got == n
        assert grew_stalled < rss_bound(24 * 1024), f"server RSS grew by {grew_stalled} KiB while the client did not read"
        ws.close_handshake()


# -- 12/13 compression ---------------------------------------------------------------

def test_12_deflate_negotiated_default_offer(wss):
    with open_ws(wss, "/echo", extensions="permessage-deflate") as ws:
        exts = parse_extensions(ws.response.header("sec-websocket-extensions"))
        assert [n for n, _ in exts] == ["permessage-deflate"], ws.response.raw
        params = exts[0][1]
        # only parameters the client allowed may appear in the answer
        assert "client_max_window_bits" not in params, params
        assert set(params) <= {"server_no_context_takeover", "client_no_context_takeover",
                               "server_max_window_bits"}, params


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_12_compressed_echo_both_ways(wss, op):
    ws = pmd_open(wss)
    with ws:
        p = ws.deflate_params
        d = Deflate(no_context_takeover="client_no_context_takeover" in p)
        inf = Inflate(no_context_takeover="server_no_context_takeover" in p,
                      wbits=int(p.get("server_max_window_bits", 15) or 15))
        for i in range(5):
            payload = (f"message {i} " * 200).encode()
            ws.send_compressed(op, payload, d)
            f_count = len(ws.received)
            got_op, got = ws.read_message(inflate=inf)
            assert got_op == op and got == payload
            first = ws.received[f_count]
            assert first.rsv & RSV1, f"server echo of a compressible message not compressed: {first!r}"
            assert len(first.payload) < len(payload) // 4
        ws.close_handshake()


def test_12_large_compressed_server_message(wss):
    with pmd_open(wss, "/bigsend?n=3000000", timeout=10) as ws:
        n = len(ws.received)
        op, data = ws.read_message(inflate=Inflate(), timeout=10)
        assert op == OP_BINARY and len(data) == 3000000
        assert data[:512] == bytes(range(256)) * 2
        assert ws.received[n].rsv & RSV1


@pytest.mark.parametrize("payload", [b"\x00", None], ids=["zero-byte-block", "zlib-empty"])
@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_12_empty_compressed_message(wss, op, payload):
    """RFC 7692 7.2.3.6: an empty message compressed (one 0x00 byte, or what
    zlib makes of b''). (A compressed message with no payload at all is not a
    valid deflate stream once 00 00 ff ff is appended: not tested.)"""
    with pmd_open(wss) as ws:
        if payload is None:
            payload = Deflate().compress(b"")
        ws.send_frame(op, payload, rsv=RSV1)
        assert ws.read_message(inflate=Inflate()) == (op, b"")
        ws.send_compressed(op, b"after empty", Deflate())
        assert ws.read_message(inflate=Inflate(no_context_takeover=True)) == (op, b"after empty")


@pytest.mark.parametrize("offer", ["permessage-deflate; client_no_context_takeover", "permessage-deflate"])
def test_12_client_flushes_with_bfinal_blocks(wss, offer):
    """RFC 7692 7.2.3.3: a client may end each message with a BFINAL block
    (zlib's Z_FINISH) instead of an empty stored block."""
    import zlib

    with pmd_open(wss, offer=offer) as ws:
        inf = Inflate(no_context_takeover="server_no_context_takeover" in ws.deflate_params)
        for i in range(3):
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            msg = b"final block message %d " % i * 20
            ws.send_frame(OP_BINARY, c.compress(msg) + c.flush(), rsv=RSV1)
            assert ws.read_message(inflate=inf) == (OP_BINARY, msg)


def test_12_compressed_message_with_empty_first_fragment(wss):
    with pmd_open(wss) as ws:
        comp = Deflate().compress(b"fragment after an empty one")
        ws.send_frame(OP_TEXT, b"", fin=False, rsv=RSV1)
        ws.send_frame(OP_CONT, comp, fin=True)
        assert ws.read_message(inflate=Inflate()) == (OP_TEXT, b"fragment after an empty one")


def test_12_uncompressed_message_on_a_deflate_connection(wss):
    with pmd_open(wss) as ws:
        ws.send_text("plain")  # RSV1 clear: not compressed, still valid
        inf = Inflate()
        assert ws.read_message(inflate=inf) == (OP_TEXT, b"plain")


def test_12_compressed_fragmented_message(wss):
    with pmd_open(wss) as ws:
        payload = b"fragmented compressed " * 500
        comp = Deflate().compress(payload)
        a, b, c = comp[:10], comp[10:30], comp[30:]
        ws.send_frame(OP_TEXT, a, fin=False, rsv=RSV1)
        ws.send_frame(OP_PING, b"between")
        ws.send_frame(OP_CONT, b, fin=False)
        ws.send_frame(OP_CONT, c, fin=True)
        op, got = ws.read_message(inflate=Inflate())
        assert (op, got) == (OP_TEXT, payload)


def test_12_rsv1_on_continuation_is_1002(wss):
    with pmd_open(wss) as ws:
        comp = Deflate().compress(b"x" * 100)
        ws.send_frame(OP_TEXT, comp[:3], fin=False, rsv=RSV1)
        ws.send_frame(OP_CONT, comp[3:], fin=True, rsv=RSV1)
        ws.fail_with(1002)


def test_12_rsv1_on_control_frame_is_1002(wss):
    with pmd_open(wss) as ws:
        ws.send_frame(OP_PING, b"x", rsv=RSV1)
        ws.fail_with(1002)


def test_12_compressed_invalid_utf8_is_1007(wss):
    with pmd_open(wss) as ws:
        ws.send_compressed(OP_TEXT, b"valid then \xed\xa0\x80 invalid", Deflate())
        ws.fail_with(1007)


def test_12_corrupt_deflate_data_closes(wss):
    with pmd_open(wss) as ws:
        ws.send_frame(OP_BINARY, b"\xff\xff\xff\xff\xff\xff", rsv=RSV1)
        while True:
            f = ws.read_frame()
            if f.opcode == 0x8:
                break
        assert f.code in (1002, 1007), f  # a corrupt stream is invalid payload data
        ws.assert_eof()


@pytest.mark.parametrize("args", [("--ws-per-message-deflate", "false"), ("--no-ws-per-message-deflate",)],
                         ids=["uvicorn-form", "negated-flag"])
def test_12_deflate_disabled_by_option(start_server, args):
    """uvicorn spells it `--ws-per-message-deflate false` (click type=bool)."""
    s = start_server("ws_app:app", *args)
    with open_ws(s, "/echo", extensions="permessage-deflate; client_max_window_bits") as ws:
        assert ws.response.header("sec-websocket-extensions") is None, ws.response.raw
        ws.send_frame(OP_TEXT, Deflate().compress(b"hello"), rsv=RSV1)
        ws.fail_with(1002)


def test_12_unknown_extension_ignored(wss):
    with open_ws(wss, "/echo", extensions="x-webkit-deflate-frame, foo; bar=1") as ws:
        assert ws.response.header("sec-websocket-extensions") is None, ws.response.raw
        ws.send_text("ok")
        assert ws.recv_text() == "ok"


def test_12_malformed_offer_skipped_next_offer_accepted(wss):
    offer = "permessage-deflate; unknown_param=1, permessage-deflate; server_no_context_takeover"
    with open_ws(wss, "/echo", extensions=offer) as ws:
        exts = parse_extensions(ws.response.header("sec-websocket-extensions"))
        assert len(exts) == 1 and exts[0][0] == "permessage-deflate", ws.response.raw
        assert "unknown_param" not in exts[0][1]
        assert exts[0][1].get("server_no_context_takeover") is True, ws.response.raw


def test_12_only_malformed_offers_no_extension(wss):
    offer = "permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits=16"
    with open_ws(wss, "/echo", extensions=offer) as ws:
        assert ws.response.header("sec-websocket-extensions") is None, ws.response.raw


@pytest.mark.parametrize("offer", [
    "permessage-deflate",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
])
def test_13_many_mixed_messages_round_trip(wss, offer):
    """200 messages of random sizes and content, text and binary, some
    fragmented, some sent uncompressed, over one context."""
    import random

    rnd = random.Random(1234)
    words = [b"alpha", b"beta", b"gamma", b"\xce\xb4\xce\xad\xce\xbb\xcf\x84\xce\xb1", b"epsilon", b" "]
    with pmd_open(wss, offer=offer) as ws:
        p = ws.deflate_params
        cmwb = p.get("client_max_window_bits")
        d = Deflate(no_context_takeover="client_no_context_takeover" in p,
                    wbits=15 if cmwb in (None, True) else max(9, int(cmwb)))
        inf = Inflate(no_context_takeover="server_no_context_takeover" in p)
        for i in range(200):
            n = rnd.choice([0, 1, 10, 100, 1000, 5000, 20000])
            if i % 3 == 0:
                payload = bytes(rnd.getrandbits(8) for _ in range(min(n, 2000)))
                op = OP_BINARY
            else:
                payload = b"".join(rnd.choice(words) for _ in range(n // 5))
                op = OP_TEXT
            mode = i % 4
            if mode == 3:
                ws.send_frame(op, payload)  # uncompressed on a deflate connection
            elif mode == 2 and len(payload) > 10:
                comp = d.compress(payload)
                cut = len(comp) // 2
                ws.send_frame(op, comp[:cut], fin=False, rsv=RSV1)
                ws.send_frame(OP_CONT, comp[cut:], fin=True)
            else:
                ws.send_compressed(op, payload, d)
            assert ws.read_message(inflate=inf, timeout=10) == (op, payload), f"message {i}"
        ws.close_handshake()


def test_13_server_no_context_takeover(wss):
    with pmd_open(wss, offer="permessage-deflate; server_no_context_takeover") as ws:
        assert ws.deflate_params.get("server_no_context_takeover") is True, ws.response.raw
        payload = b"the same message every time " * 50
        frames = []
        for _ in range(3):
            ws.send_binary(payload)
            n = len(ws.received)
            assert ws.read_message(inflate=Inflate(no_context_takeover=True)) == (OP_BINARY, payload)
            frames.append(ws.received[n].payload)
        # each message compressed from an empty window: identical bytes
        assert frames[0] == frames[1] == frames[2]


def test_13_context_takeover_by_default(wss):
    with pmd_open(wss, offer="permessage-deflate") as ws:
        if ws.deflate_params.get("server_no_context_takeover"):
            pytest.fail("server_no_context_takeover answered without being offered: " + repr(ws.response.raw))
        payload = b"the same message every time " * 50
        inf = Inflate()
        sizes = []
        for _ in range(3):
            ws.send_binary(payload)
            n = len(ws.received)
            assert ws.read_message(inflate=inf) == (OP_BINARY, payload)
            sizes.append(len(ws.received[n].payload))
        assert sizes[1] < sizes[0], f"the second message did not use the shared window: {sizes}"


def test_13_client_no_context_takeover(wss):
    with pmd_open(wss, offer="permessage-deflate; client_no_context_takeover") as ws:
        d = Deflate(no_context_takeover=True)
        inf = Inflate(no_context_takeover="server_no_context_takeover" in ws.deflate_params)
        for i in range(4):
            payload = b"abcabcabc" * 100 + bytes([i])
            ws.send_compressed(OP_BINARY, payload, d)
            assert ws.read_message(inflate=inf) == (OP_BINARY, payload)


def test_13_client_context_takeover_used_by_client(wss):
    """The client keeps its window across messages (the default): the server
    must keep its decompression context."""
    with pmd_open(wss, offer="permessage-deflate") as ws:
        assert "client_no_context_takeover" not in ws.deflate_params, ws.response.raw
        d = Deflate()
        inf = Inflate(no_context_takeover="server_no_context_takeover" in ws.deflate_params)
        for i in range(4):
            payload = b"shared window " * 40
            ws.send_compressed(OP_TEXT, payload, d)
            assert ws.read_message(inflate=inf) == (OP_TEXT, payload)


@pytest.mark.parametrize("bits", [8, 9, 10, 12])
def test_13_server_max_window_bits(wss, bits):
    with pmd_open(wss, offer=f"permessage-deflate; server_max_window_bits={bits}") as ws:
        got = ws.deflate_params.get("server_max_window_bits")
        assert got is not None and got is not True and int(got) <= bits, ws.response.raw
        inf = Inflate(wbits=int(got))
        payload = os.urandom(600) * 20  # repeats at distance 600 (fits every window tested)
        ws.send_binary(payload)
        assert ws.read_message(inflate=inf) == (OP_BINARY, payload)


@pytest.mark.parametrize("bits", [8, 9, 11, 15])
def test_13_client_max_window_bits(wss, bits):
    with pmd_open(wss, offer=f"permessage-deflate; client_max_window_bits={bits}") as ws:
        got = ws.deflate_params.get("client_max_window_bits")
        wbits = bits if got in (None, True) else int(got)
        assert wbits <= bits, ws.response.raw
        d = Deflate(wbits=max(wbits, 9))
        payload = b"window bits " * 300
        ws.send_compressed(OP_BINARY, payload, d)
        assert ws.read_message(inflate=Inflate()) == (OP_BINARY, payload)


# -- compression and limits -------------------------------------------------------------

def test_9_compressed_limit_counts_decompressed_bytes(small):
    with pmd_open(small) as ws:
        d = Deflate()
        ok = b"\x00" * MAX
        ws.send_compressed(OP_BINARY, ok, d)
        assert ws.read_message(inflate=Inflate(), timeout=10) == (OP_BINARY, ok)
    with pmd_open(small) as ws:
        over = b"\x00" * (MAX + 1)
        comp = Deflate().compress(over)
        assert len(comp) < MAX // 100
        ws.send_frame(OP_BINARY, comp, rsv=RSV1)
        ws.fail_with(1009)


def test_9_compression_bomb_1009_quickly_with_bounded_memory(start_server, loop):
    s = start_server("ws_app:app", "--ws-max-size", "1048576", loop=loop)
    bomb = compress_once(b"\x00" * (20 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    with pmd_open(s) as ws:
        # warm up the connection path so the baseline includes its buffers
        ws.send_text("warm")
        assert ws.read_message(inflate=Inflate()) == (OP_TEXT, b"warm")
        base = s.rss_kib()
        with RssSampler(s.pid, 0.005) as rss:
            t0 = time.monotonic()
            ws.send_frame(OP_BINARY, bomb, rsv=RSV1)
            ws.expect_close(1009, timeout=3)
            took = time.monotonic() - t0
            time.sleep(0.1)
        assert took < 1.5, f"1009 took {took:.2f}s"
        grew = rss.max_kib - base
        assert grew < rss_bound(12 * 1024), f"server RSS grew by {grew} KiB while decompressing a bomb"


def test_9_compression_bomb_in_fragments(small):
    bomb = compress_once(b"\x00" * (4 * 1024 * 1024))
    with pmd_open(small) as ws:
        parts = [bomb[i:i + 512] for i in range(0, len(bomb), 512)]
        for i, part in enumerate(parts):
            if not ws.try_send_frame(OP_BINARY if i == 0 else OP_CONT, part, fin=False, rsv=RSV1 if i == 0 else 0):
                break
        ws.expect_close(1009, timeout=3)


# -- backpressure ------------------------------------------------------------------------

class Flooder(threading.Thread):
    def __init__(self, sock: socket.socket, frames: list):
        super().__init__(daemon=True)
        self.sock = sock
        self.frames = frames
        self.sent = 0
        self.error = None

    def run(self):
        try:
            for f in self.frames:
                self.sock.sendall(f)
                self.sent += 1
        except OSError as e:  # pragma: no cover - reported by the test
            self.error = e


def test_backpressure_app_not_receiving(start_server, loop):
    s = start_server("ws_app:app", "--ws-max-queue", "4", loop=loop)
    msg = 64 * 1024
    n = 640  # 40 MiB
    mark = s.mark()
    ws = open_ws(s, "/noreceive?sleep=2.5&id=bp", timeout=30)
    with ws:
        wait_event(s, "accepted", "bp", since=mark)
        base = s.rss_kib()
        frame = build_frame(OP_BINARY, b"\x5a" * msg, mask_key=b"\x00\x00\x00\x00")
        ws.raw.sock.settimeout(30)
        flood = Flooder(ws.raw.sock, [frame] * n + [build_frame(OP_TEXT, b"END")])
        with RssSampler(s.pid, 0.01) as rss:
            flood.start()
            time.sleep(1.8)
            sent_while_paused = flood.sent
            grew_paused = rss.max_kib - base
            flood.join(30)
        assert flood.error is None, flood.error
        assert sent_while_paused < n // 2, (
            f"{sent_while_paused} of {n} 64 KiB messages accepted while the app was not receiving")
        assert grew_paused < rss_bound(24 * 1024), f"server RSS grew by {grew_paused} KiB while the app did not receive"
        result = json.loads(ws.recv_text(timeout=20))
        assert result == {"count": n, "bytes": n * msg}
        assert rss.max_kib - base < rss_bound(32 * 1024)
        ws.close_handshake()


def test_ping_flood_without_reading_pongs_bounded(start_server, loop):
    """A client sends pings and never reads the pongs: the server stops reading
    when its output backs up instead of buffering pongs without limit."""
    s = start_server("ws_app:app", loop=loop)
    with open_ws(s, "/echo", timeout=30) as ws:
        ws.raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        ping = build_frame(OP_PING, b"p" * 125, mask_key=b"\x00\x00\x00\x00")
        batch = ping * 512  # 67 KB per write
        n = 600  # ~40 MB of pings -> ~38 MB of pongs
        base = s.rss_kib()
        flood = Flooder(ws.raw.sock, [batch] * n)
        with RssSampler(s.pid, 0.01) as rss:
            flood.start()
            flood.join(4)
            sent = flood.sent
        grew = rss.max_kib - base
        assert grew < rss_bound(24 * 1024), (
            f"server RSS grew by {grew} KiB answering pings nobody reads "
            f"({sent * len(batch) / 1e6:.1f} MB of pings taken in 4s)")
        assert sent < n, "all 40 MB of pings were taken while no pong was read"
        assert s.alive()


def test_echo_flood_without_reading_bounded(start_server, loop):
    """The client sends 64 KiB messages to the echo app and reads nothing: the
    echoes back up, the app's send() waits, its queue fills, reading pauses."""
    s = start_server("ws_app:app", "--ws-max-queue", "8", loop=loop)
    with open_ws(s, "/echo", timeout=30) as ws:
        ws.raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        frame = build_frame(OP_BINARY, b"m" * 65536, mask_key=b"\x00\x00\x00\x00")
        n = 600  # 39 MB
        base = s.rss_kib()
        flood = Flooder(ws.raw.sock, [frame] * n)
        with RssSampler(s.pid, 0.01) as rss:
            flood.start()
            flood.join(3)
            sent = flood.sent
        grew = rss.max_kib - base
        assert sent < n, "all 39 MB were taken although no echo was read"
        assert grew < rss_bound(24 * 1024), f"server RSS grew by {grew} KiB ({sent} messages taken)"
        # reading resumes: every message taken so far is echoed
        got = 0
        while got < sent:
            assert len(ws.recv_binary(timeout=10)) == 65536
            got += 1


@pytest.mark.parametrize("args,size", [(("--ws-max-queue", "1"), 100), (("--ws-max-size", "1000"), 1000)],
                         ids=["queue-1", "bytes-cap"])
def test_tight_queue_limits_no_stall(start_server, loop, args, size):
    """With a queue of one message, or a byte cap met by every message, a
    pipelined stream still flows: reading resumes as the app receives."""
    s = start_server("ws_app:app", *args, loop=loop)
    with open_ws(s, "/echo", timeout=20) as ws:
        n = 500
        msgs = [bytes([i % 256]) * size for i in range(n)]
        sender = threading.Thread(target=ws.send_raw, args=(b"".join(build_frame(OP_BINARY, m) for m in msgs),))
        sender.start()
        for i in range(n):
            assert ws.recv_binary(timeout=10) == msgs[i], f"message {i}"
        sender.join(10)
        # non-ASCII text: the byte cap counts UTF-8 bytes consistently
        for _ in range(200):
            ws.send_text("é" * (size // 2))
        for _ in range(200):
            assert ws.recv_text(timeout=10) == "é" * (size // 2)
        ws.close_handshake()


def test_backpressure_pings_still_answered_while_app_busy(start_server):
    """Reading pauses for messages, but a client ping sent before the queue fills is answered."""
    s = start_server("ws_app:app", "--ws-max-queue", "4")
    with open_ws(s, "/noreceive?sleep=1.5") as ws:
        ws.send_frame(OP_PING, b"early")
        f = ws.read_frame(timeout=1)
        assert f.opcode == 0xA and f.payload == b"early"
