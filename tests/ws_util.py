"""A raw-socket WebSocket client for the conformance tests, and the shared servers.

- ``ws_key`` / ``ws_accept_for``: the handshake key and RFC 6455 accept value.
- ``build_frame``: a client frame with any FIN/RSV bits, opcode, length
  encoding (7, 16 or 64 bits, minimal or not), mask or no mask.
- ``WsConn``: performs the opening handshake on a ``RawConn`` (from helpers),
  then sends frames and reads server frames strictly (server frames must be
  unmasked, RSV bits only as negotiated, control frames at most 125 bytes).
  ``expect_close(code)`` reads until the server's close frame and asserts its
  code; ``assert_eof`` checks that the server closes the TCP connection.
- ``Deflate``/``Inflate``: permessage-deflate helpers (raw deflate, the
  0x00 0x00 0xff 0xff tail removed / appended).
- ``SharedWs``: one process per app, event loop and option set, shared by the
  tests of a module (the ``ws_shared`` and ``wss`` fixtures in conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional

from helpers import CasgiProcess, RawConn, Response, casgi_args, clean_env

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Under AddressSanitizer (tests/asan.sh preloads libasan) freed memory sits in
# a quarantine instead of being reused, so RSS says nothing about what the
# server holds: memory bounds are checked in normal runs only.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_bound(kib: int) -> float:
    """A bound on RSS growth in KiB (no bound under ASan, see UNDER_ASAN)."""
    return float("inf") if UNDER_ASAN else kib

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPNAMES = {0: "CONT", 1: "TEXT", 2: "BINARY", 8: "CLOSE", 9: "PING", 10: "PONG"}

RSV1, RSV2, RSV3 = 0x4, 0x2, 0x1  # as passed in `rsv` (bits 6..4 of the first byte)


def ws_key(raw: Optional[bytes] = None) -> str:
    return base64.b64encode(raw if raw is not None else os.urandom(16)).decode()


def ws_accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def build_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True,
                mask_key: Optional[bytes] = None, length_bits: Optional[int] = None,
                declared_len: Optional[int] = None) -> bytes:
    """One client frame. `length_bits` forces the 7-, 16- or 64-bit length form
    (None = minimal); `declared_len` puts another length in the header than the
    payload's (for truncated or oversized frames)."""
    n = len(payload) if declared_len is None else declared_len
    b0 = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if length_bits is None:
        length_bits = 7 if n <= 125 else 16 if n <= 0xFFFF else 64
    if length_bits == 7:
        assert n <= 125
        head = bytes([b0, mbit | n])
    elif length_bits == 16:
        assert n <= 0xFFFF
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    elif length_bits == 64:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    else:
        raise ValueError(length_bits)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + mask_bytes(payload, key)


def close_payload(code: Optional[int] = None, reason: bytes = b"") -> bytes:
    if code is None:
        return reason
    return struct.pack("!H", code) + reason


# -- permessage-deflate ----------------------------------------------------------

class Deflate:
    """Client-side message compressor (RFC 7692 section 7.2.1)."""

    def __init__(self, no_context_takeover: bool = False, wbits: int = 15):
        self.no_context_takeover = no_context_takeover
        self.wbits = wbits
        self._c = None

    def compress(self, data: bytes) -> bytes:
        if self._c is None or self.no_context_takeover:
            self._c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.wbits)
        out = self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


class Inflate:
    """Client-side decompressor for the server's messages."""

    def __init__(self, no_context_takeover: bool = False, wbits: int = 15):
        self.no_context_takeover = no_context_takeover
        self.wbits = wbits
        self._d = None

    def decompress(self, data: bytes) -> bytes:
        if self._d is None or self.no_context_takeover:
            self._d = zlib.decompressobj(-self.wbits)
        return self._d.decompress(data + b"\x00\x00\xff\xff")


def compress_once(data: bytes, wbits: int = 15, level: int = 9) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def parse_extensions(value: Optional[str]) -> list:
    """Sec-WebSocket-Extensions -> [(name, {param: value or True})]."""
    out = []
    if not value:
        return out
    for ext in value.split(","):
        parts = [p.strip() for p in ext.split(";")]
        params = {}
        for p in parts[1:]:
            if not p:
                continue
            k, sep, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"') if sep else True
        out.append((parts[0].lower(), params))
    return out


# -- frames from the server ------------------------------------------------------

@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def code(self) -> Optional[int]:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def reason(self) -> bytes:
        return self.payload[2:]

    def __repr__(self) -> str:
        p = self.payload if len(self.payload) <= 64 else self.payload[:64] + b"..."
        return (f"Frame({OPNAMES.get(self.opcode, hex(self.opcode))}, fin={int(self.fin)}, "
                f"rsv={self.rsv:03b}, len={len(self.payload)}, {p!r})")


class WsEOF(AssertionError):
    """The server closed the TCP connection where a frame was expected."""


class WsConn:
    """A WebSocket client connection over a RawConn (handshake done by `open`)."""

    def __init__(self, raw: RawConn, response: Response, deflate_params: Optional[dict] = None):
        self.raw = raw
        self.response = response
        self.deflate_params = deflate_params  # negotiated params, or None
        self.received: list = []  # every frame read, for failure messages
        self.sent_log: list = []  # descriptions of the frames sent

    # -- opening ---------------------------------------------------------------
    @classmethod
    def open(cls, host: str, port: int, path: str = "/", headers: Iterable = (), key: Optional[str] = None,
             subprotocols: Optional[list] = None, extensions: Optional[str] = None,
             timeout: float = 5.0, expect_status: Optional[int] = 101) -> "WsConn":
        raw = RawConn.tcp(host, port, timeout=timeout)
        try:
            key = key or ws_key()
            lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
            if subprotocols:
                lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
            if extensions is not None:
                lines.append("Sec-WebSocket-Extensions: " + extensions)
            for h in headers:
                lines.append(h if isinstance(h, str) else f"{h[0]}: {h[1]}")
            raw.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            resp = raw.read_head()
            if expect_status is not None:
                assert resp.status == expect_status, (
                    f"handshake for {path}: expected {expect_status}, got {resp.status_line!r}\n{resp.raw!r}")
            params = None
            if resp.status == 101:
                assert resp.header("sec-websocket-accept") == ws_accept_for(key), resp.raw
                assert resp.has_token("upgrade", "websocket"), resp.raw
                assert resp.has_token("connection", "upgrade"), resp.raw
                exts = parse_extensions(resp.header("sec-websocket-extensions"))
                for name, p in exts:
                    if name == "permessage-deflate":
                        params = p
            return cls(raw, resp, params)
        except BaseException:
            raw.close()
            raise

    def close_socket(self) -> None:
        self.raw.close()

    def __enter__(self) -> "WsConn":
        return self

    def __exit__(self, *exc) -> None:
        self.raw.close()

    # -- sending ---------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.raw.send(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.sent_log.append(f"{OPNAMES.get(opcode, hex(opcode))} len={len(payload)} {kw or ''}")
        self.raw.send(build_frame(opcode, payload, **kw))

    def send_batch(self, *frames) -> None:
        """Several frames in one write: (opcode, payload[, kwargs]) tuples. A
        server failing at one of them may close before later writes would
        arrive; one write keeps the test independent of that timing."""
        data = []
        for fr in frames:
            op, payload = fr[0], fr[1]
            kw = fr[2] if len(fr) > 2 else {}
            self.sent_log.append(f"{OPNAMES.get(op, hex(op))} len={len(payload)} {kw or ''}")
            data.append(build_frame(op, payload, **kw))
        self.raw.send(b"".join(data))

    def try_send_frame(self, opcode: int, payload: bytes = b"", **kw) -> bool:
        """send_frame that tolerates the server having closed already (a server
        failing fast may close while the client is still sending)."""
        try:
            self.send_frame(opcode, payload, **kw)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send_text(self, text, **kw) -> None:
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text, **kw)

    def send_binary(self, data: bytes, **kw) -> None:
        self.send_frame(OP_BINARY, data, **kw)

    def send_close(self, code: Optional[int] = 1000, reason: bytes = b"") -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def send_compressed(self, opcode: int, data: bytes, deflate: Deflate) -> None:
        self.send_frame(opcode, deflate.compress(data), rsv=RSV1)

    # -- reading ---------------------------------------------------------------
    def _need(self, n: int, deadline: float) -> bytes:
        raw = self.raw
        while len(raw.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout(f"timed out waiting for {n} bytes (have {len(raw.buf)})")
            try:
                if not raw._fill(timeout=remaining):
                    raise WsEOF(f"connection closed by the server after frames {self.received[-5:]} "
                                f"(partial: {raw.buf[:100]!r})")
            except socket.timeout:
                continue
        data, raw.buf = raw.buf[:n], raw.buf[n:]
        return data

    def read_frame(self, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        h = self._need(2, deadline)
        b0, b1 = h[0], h[1]
        assert not (b1 & 0x80), f"server frame is masked: {h!r}"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8, deadline))[0]
            assert n < (1 << 63), "64-bit length with the top bit set"
        payload = self._need(n, deadline) if n else b""
        f = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload)
        self.received.append(f)
        assert f.opcode in OPNAMES, f"server sent reserved opcode {f!r}"
        if f.opcode >= 8:
            assert f.fin and len(f.payload) <= 125, f"invalid control frame from the server {f!r}"
        allowed_rsv = RSV1 if self.deflate_params is not None and f.opcode in (OP_TEXT, OP_BINARY) else 0
        assert f.rsv & ~allowed_rsv == 0, f"server frame with RSV bits not negotiated: {f!r}"
        return f

    def read_message(self, timeout: float = 5.0, inflate: Optional[Inflate] = None,
                     answer_pings: bool = True) -> tuple:
        """(opcode, payload) of the next data message (fragments joined,
        decompressed with `inflate` when RSV1 is set). Pings are answered."""
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"expected a message, got close {f.code} {f.reason!r}; "
                                     f"frames: {self.received[-5:]}")
            if first is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), f"continuation without a start: {f!r}"
                first = f
            else:
                assert f.opcode == OP_CONT, f"new data frame inside a fragmented message: {f!r}"
            parts.append(f.payload)
            if f.fin:
                break
        data = b"".join(parts)
        if first.rsv & RSV1:
            assert inflate is not None, "compressed message received without an inflater"
            data = inflate.decompress(data)
        if first.opcode == OP_TEXT:
            data.decode("utf-8")  # must be valid
        return first.opcode, data

    def recv_text(self, timeout: float = 5.0, inflate: Optional[Inflate] = None) -> str:
        op, data = self.read_message(timeout, inflate)
        assert op == OP_TEXT, f"expected text, got binary {data[:80]!r}"
        return data.decode()

    def recv_binary(self, timeout: float = 5.0, inflate: Optional[Inflate] = None) -> bytes:
        op, data = self.read_message(timeout, inflate)
        assert op == OP_BINARY, f"expected binary, got text {data[:80]!r}"
        return data

    def recv_json(self, timeout: float = 5.0):
        return json.loads(self.recv_text(timeout))

    def expect_close(self, code: Optional[int], timeout: float = 5.0, allow_data: bool = True,
                     context: str = "") -> Frame:
        """Reads frames until the server's close frame; asserts its code (None:
        a close without a code). Data frames before it are tolerated with
        `allow_data` (echoes of earlier valid messages). Pings are answered."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                f = self.read_frame(max(0.0, remaining))
            except socket.timeout:
                raise AssertionError(
                    f"{context}no close frame from the server within {timeout}s (expected code {code}); "
                    f"sent: {self.sent_log[-6:]}; received: {self.received[-5:]}")
            except WsEOF as e:
                raise AssertionError(
                    f"{context}the server closed TCP without a close frame (expected code {code}); "
                    f"sent: {self.sent_log[-6:]}; {e}")
            if f.opcode == OP_CLOSE:
                assert f.code == code, (
                    f"{context}expected close code {code}, got {f.code} reason {f.reason!r}; "
                    f"sent: {self.sent_log[-6:]}; received before: {self.received[-6:-1]}")
                assert len(f.payload) != 1
                f.reason.decode("utf-8")
                return f
            if f.opcode == OP_PING:
                self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            assert allow_data, f"{context}unexpected data frame before close: {f!r}"

    def assert_eof(self, timeout: float = 5.0) -> float:
        """The server closes the TCP connection (nothing but EOF arrives) within
        `timeout`; returns how long it took."""
        t0 = time.monotonic()
        rest = self.raw.read_until_close(timeout)
        assert rest == b"", f"bytes after the close frame: {rest[:200]!r}"
        return time.monotonic() - t0

    def fail_with(self, code: int, timeout: float = 5.0, context: str = "") -> Frame:
        """The server fails the connection with `code`: a close frame carrying it,
        then (after our close reply) the end of the TCP connection."""
        f = self.expect_close(code, timeout, context=context)
        try:
            self.send_close(code)
        except OSError:
            pass  # the server may already have closed the socket
        self.assert_eof(5.0)
        return f

    def close_handshake(self, code: int = 1000, reason: bytes = b"", timeout: float = 5.0) -> Frame:
        """A normal client-initiated close: the server echoes the code and
        closes TCP."""
        self.send_close(code, reason)
        f = self.expect_close(code, timeout)
        self.assert_eof(timeout)
        return f

    def is_open_after(self, wait: float) -> bool:
        return self.raw.is_open_after(wait)


def raw_handshake(host: str, port: int, request: bytes, timeout: float = 5.0) -> tuple:
    """Sends `request` verbatim and reads the response head. (RawConn, Response)."""
    c = RawConn.tcp(host, port, timeout=timeout)
    c.send(request)
    return c, c.read_head()


def upgrade_request(path: str = "/", key: Optional[str] = None, version: str = "13", extra: Iterable = (),
                    host: str = "t", connection: str = "Upgrade", upgrade: str = "websocket",
                    method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not False:
        lines.append(f"Sec-WebSocket-Key: {key or ws_key()}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- servers ---------------------------------------------------------------------

def start_ws(start_server, app: str = "ws_app:app", *args: str, loop: str = "asyncio", **kw) -> CasgiProcess:
    return start_server(app, *args, loop=loop, **kw)


class SharedWs:
    """Server processes shared by the tests of a module (keyed by loop and args)."""

    def __init__(self, tmp_root):
        self.tmp_root = tmp_root
        self.procs: dict = {}

    def get(self, app: str, loop: str, args: tuple) -> CasgiProcess:
        key = (app, loop, args)
        p = self.procs.get(key)
        if p is None or not p.alive():
            p = CasgiProcess(casgi_args(app, *args, loop=loop), env=clean_env(), cwd=self.tmp_root)
            p.wait_running()
            self.procs[key] = p
        return p

    def close(self) -> None:
        for p in self.procs.values():
            p.kill()


def open_ws(p: CasgiProcess, path: str = "/echo", **kw) -> WsConn:
    return WsConn.open(p.host or "127.0.0.1", p.port, path, **kw)


def wait_event(p: CasgiProcess, kind: str, tag: str, since: int = 0, timeout: float = 5.0) -> dict:
    """Waits for the app's `WSEVENT <kind> <tag> <json>` line; returns the JSON."""
    m = p.wait_for(r"WSEVENT " + kind + " " + tag + r" (\{.*\})$", since=since, timeout=timeout)
    return json.loads(m.group(1))


def readable_within(sock: socket.socket, wait: float) -> bool:
    r, _, _ = select.select([sock], [], [], wait)
    return bool(r)
