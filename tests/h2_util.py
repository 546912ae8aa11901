"""HTTP/2 clients for the end-to-end tests, over raw sockets.

- ``raw_frame``: the bytes of any frame (type, flags, stream id, payload),
  malformed ones included (a length that lies, reserved bits, stream 0).
- ``FrameConn``: a frame-level client. It sends the preface, frames built with
  hyperframe or ``raw_frame``, header blocks from its own HPACK encoder, and
  reads the server's frames one at a time (hyperframe objects; header blocks
  decoded, CONTINUATIONs joined). Everything it read is kept in ``received``.
  ``connection_error`` / ``stream_error`` read until the server's GOAWAY,
  RST_STREAM or close; ``ping`` proves the connection still answers.
- ``H2Client``: the h2 library's client state machine (``client_side=True``)
  over a socket: requests, request bodies sent within the server's windows,
  responses collected per stream (interim responses, headers, data, trailers,
  resets), the WINDOW_UPDATEs the server sent, GOAWAY.
- ``start_h2``: a casgi process for these tests (plain or TLS), and
  ``h2_tls_ctx``: a client context offering ALPN h2.
Every read has a deadline: a server that says nothing fails the test instead
of hanging it.
"""

from __future__ import annotations

import importlib.util
import os
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

from helpers import APPS_DIR, CasgiProcess, SocketClient

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# Flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 section 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD
ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM", 0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}

# Settings (RFC 9113 section 6.5.2, RFC 8441)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

# casgi's defaults (the option table): what the server announces unless told otherwise.
DEFAULT_MAX_CONCURRENT_STREAMS = 100
DEFAULT_MAX_HEADER_LIST_SIZE = 65536
DEFAULT_INITIAL_WINDOW_SIZE = 262144

APP = "h2_app:app"
READ_TIMEOUT = 5.0


def _load_app_module():
    spec = importlib.util.spec_from_file_location("h2_app_for_tests", APPS_DIR / "h2_app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def download_bytes(size: int, seed: int = 0, chunk: int = 65536) -> bytes:
    """What the test app's /download?size=&seed=&chunk= sends."""
    return b"".join(_load_app_module().download_chunks(size, seed, chunk))


def err_name(code: Optional[int]) -> str:
    if code is None:
        return "None"
    return ERROR_NAMES.get(code, hex(code))


def raw_frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"", length: Optional[int] = None) -> bytes:
    """One frame's bytes. `length` puts another length in the header than the
    payload's; the top bit of the stream id (reserved) is kept as given."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id & 0xFFFFFFFF) + payload


def settings_payload(settings: dict) -> bytes:
    return b"".join(struct.pack(">HI", k, v & 0xFFFFFFFF) for k, v in settings.items())


def req_headers(method: str = "GET", path: str = "/", authority: str = "localhost", scheme: str = "http",
                extra: Iterable = ()) -> list:
    """The pseudo-headers of a request, then `extra` ((name, value) str or bytes)."""
    out = [(b":method", method.encode()), (b":scheme", scheme.encode()), (b":authority", authority.encode()),
           (b":path", path.encode())]
    for n, v in extra:
        out.append((n.encode() if isinstance(n, str) else n, v.encode() if isinstance(v, str) else v))
    return out


class ConnectionEnded(AssertionError):
    """The server closed the connection while a test still expected frames."""


@dataclass
class Reply:
    """What one stream received, read frame by frame."""

    stream_id: int
    informational: list = field(default_factory=list)  # [headers] of each 1xx
    headers: Optional[list] = None  # [(name bytes, value bytes)] of the final response
    data: list = field(default_factory=list)  # payload of each DATA frame
    trailers: Optional[list] = None
    reset: Optional[int] = None  # RST_STREAM error code
    ended: bool = False

    @property
    def status(self) -> Optional[int]:
        return int(self.header(":status")) if self.headers is not None else None

    @property
    def body(self) -> bytes:
        return b"".join(self.data)

    def header(self, name: str) -> Optional[str]:
        values = [v.decode("latin-1") for n, v in (self.headers or []) if n == name.encode()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def names(self) -> list:
        return [n.decode("latin-1") for n, _ in self.headers or []]


# ----------------------------------------------------------------------------
# Frame-level client
# ----------------------------------------------------------------------------


class FrameConn(SocketClient):
    """A socket speaking HTTP/2 frame by frame (see the module's docstring)."""

    def __init__(self, sock, timeout: float = READ_TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.received: list = []
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 30)
        self.decoder.max_allowed_table_size = 1 << 20
        self.server_settings: dict = {}
        self.next_stream_id = 1

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1", timeout: float = READ_TIMEOUT) -> "FrameConn":
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s, timeout)

    @classmethod
    def tls(cls, port: int, ctx: ssl.SSLContext, timeout: float = READ_TIMEOUT) -> "FrameConn":
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        return cls(s, timeout)

    # -- sending ------------------------------------------------------------
    def send(self, data: bytes) -> bool:
        """Sends bytes; False when the server has already closed (reset, broken pipe)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return False

    def send_frame(self, *frames) -> bool:
        return self.send(b"".join(f if isinstance(f, (bytes, bytearray)) else f.serialize() for f in frames))

    def new_stream_id(self) -> int:
        sid = self.next_stream_id
        self.next_stream_id += 2
        return sid

    def encode(self, headers: list, huffman: bool = True) -> bytes:
        return self.encoder.encode(headers, huffman=huffman)

    def headers_frame(self, stream_id: int, headers: list, end_stream: bool = True,
                      end_headers: bool = True) -> bytes:
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return raw_frame(HEADERS, flags, stream_id, self.encode(headers))

    def send_headers(self, stream_id: int, headers: list, end_stream: bool = True) -> bool:
        return self.send(self.headers_frame(stream_id, headers, end_stream))

    def send_block(self, stream_id: int, block: bytes, end_stream: bool = True, piece: int = 16384) -> bool:
        """A field block of any size: HEADERS, then CONTINUATIONs of `piece` bytes."""
        parts = [block[i:i + piece] for i in range(0, len(block), piece)] or [b""]
        out = [raw_frame(HEADERS, (END_STREAM if end_stream else 0) | (END_HEADERS if len(parts) == 1 else 0),
                         stream_id, parts[0])]
        for i, part in enumerate(parts[1:], 2):
            out.append(raw_frame(CONTINUATION, END_HEADERS if i == len(parts) else 0, stream_id, part))
        return self.send(b"".join(out))

    def send_request(self, method: str = "GET", path: str = "/", extra: Iterable = (), body: Optional[bytes] = None,
                     stream_id: Optional[int] = None) -> int:
        sid = stream_id if stream_id is not None else self.new_stream_id()
        out = self.headers_frame(sid, req_headers(method, path, extra=extra), end_stream=body is None)
        if body is not None:
            out += raw_frame(DATA, END_STREAM, sid, body)
        self.send(out)
        return sid

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        return self.send(raw_frame(DATA, END_STREAM if end_stream else 0, stream_id, data))

    def send_settings(self, settings: Optional[dict] = None) -> bool:
        return self.send(raw_frame(SETTINGS, 0, 0, settings_payload(settings or {})))

    def send_window_update(self, stream_id: int, increment: int) -> bool:
        return self.send(raw_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment)))

    def send_rst(self, stream_id: int, code: int = CANCEL) -> bool:
        return self.send(raw_frame(RST_STREAM, 0, stream_id, struct.pack(">I", code)))

    def start(self, settings: Optional[dict] = None, preface: bytes = PREFACE) -> dict:
        """Preface and SETTINGS; waits for the server's SETTINGS and acks them.
        Returns the server's settings."""
        self.send(preface + raw_frame(SETTINGS, 0, 0, settings_payload(settings or {})))
        self.wait_for(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags, what="the server's SETTINGS")
        self.send(raw_frame(SETTINGS, ACK, 0))
        return self.server_settings

    # -- reading ------------------------------------------------------------
    def _fill(self, deadline: float) -> bool:
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_one(self, deadline: float) -> Optional[Frame]:
        while len(self.buf) < 9:
            if not self._fill(deadline):
                return None
        frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        while len(self.buf) < 9 + length:
            if not self._fill(deadline):
                return None
        body, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
        frame.raw_length = length
        frame.raw_payload = body
        try:
            frame.parse_body(memoryview(body))
        except HyperframeError as exc:
            raise AssertionError(f"the server sent a malformed {type(frame).__name__}: {exc} ({body[:64]!r})")
        self.received.append(frame)
        return frame

    def read_frame(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame (header blocks decoded into `frame.decoded`), or None
        at EOF. Raises AssertionError when nothing arrives within `timeout`."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        try:
            f = self._read_one(deadline)
            if f is None:
                return None
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                self.server_settings.update(f.settings)
            if isinstance(f, HeadersFrame) or f.type == PUSH_PROMISE:
                block = f.data
                last = f
                while "END_HEADERS" not in last.flags:
                    last = self._read_one(deadline)
                    if last is None:
                        return None
                    assert isinstance(last, ContinuationFrame), \
                        f"{type(last).__name__} inside a header block (RFC 9113 6.10)"
                    block += last.data
                f.decoded = self.decoder.decode(block, raw=True)
            return f
        except TimeoutError:
            raise AssertionError(f"no frame from the server within {t}s (received so far: "
                                 f"{describe(self.received[-8:])})") from None

    def wait_for(self, pred: Callable[[Frame], bool], timeout: Optional[float] = None,
                 what: str = "a frame") -> Frame:
        """Reads until a frame matching `pred`; fails on EOF or timeout."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f is None:
                raise ConnectionEnded(f"the connection closed while waiting for {what}; received: "
                                      f"{describe(self.received[-8:])}")
            if pred(f):
                return f

    def frames_for(self, seconds: float) -> list:
        """Every frame that arrives within `seconds` (stops early at EOF)."""
        out = []
        deadline = time.monotonic() + seconds
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                f = self.read_frame(remaining)
            except AssertionError as exc:
                if "no frame from the server" in str(exc):
                    break
                raise
            if f is None:
                break
            out.append(f)
        return out

    def connection_error(self, timeout: Optional[float] = None) -> tuple:
        """Reads until the server ends the connection. Returns ("goaway", code,
        last_stream_id) when a GOAWAY came (then also waits briefly for the
        close), or ("closed", None, None) for a close without GOAWAY. Fails
        when the connection stays open past `timeout`."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the connection is still open after {t}s and no GOAWAY came; received: "
                                     f"{describe(self.received[-8:])}")
            try:
                f = self.read_frame(remaining)
            except AssertionError as exc:
                if "no frame from the server" in str(exc):
                    continue
                raise
            if f is None:
                return ("closed", None, None)
            if isinstance(f, GoAwayFrame):
                return ("goaway", f.error_code, f.last_stream_id)

    def assert_goaway(self, *codes: int, allow_close: bool = False, timeout: Optional[float] = None) -> tuple:
        kind, code, last = self.connection_error(timeout)
        if kind == "closed":
            assert allow_close, (f"the connection closed without a GOAWAY (expected one with "
                                 f"{' or '.join(map(err_name, codes))})")
            return kind, code, last
        assert code in codes, f"GOAWAY {err_name(code)}, expected {' or '.join(map(err_name, codes))}"
        return kind, code, last

    def stream_error(self, stream_id: int, timeout: Optional[float] = None) -> tuple:
        """Reads until RST_STREAM on `stream_id` (("rst", code)), a GOAWAY
        (("goaway", code)) or the close (("closed", None))."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f is None:
                return ("closed", None)
            if isinstance(f, RstStreamFrame) and f.stream_id == stream_id:
                return ("rst", f.error_code)
            if isinstance(f, GoAwayFrame):
                return ("goaway", f.error_code)

    def assert_stream_error(self, stream_id: int, *codes: int, connection_error_ok: bool = False,
                            timeout: Optional[float] = None) -> tuple:
        """RST_STREAM with one of `codes`. A stream error may be escalated to a
        connection error (RFC 9113 5.4.2): accepted with connection_error_ok
        when the GOAWAY carries one of `codes`."""
        kind, code = self.stream_error(stream_id, timeout)
        if kind == "rst":
            assert code in codes, f"RST_STREAM {err_name(code)}, expected {' or '.join(map(err_name, codes))}"
        elif kind == "goaway" and connection_error_ok:
            assert code in codes, f"GOAWAY {err_name(code)}, expected {' or '.join(map(err_name, codes))}"
        else:
            raise AssertionError(f"expected RST_STREAM {' or '.join(map(err_name, codes))} on stream {stream_id}, "
                                 f"got {kind} {err_name(code)}")
        return kind, code

    def ping(self, timeout: Optional[float] = None) -> None:
        """Sends a PING and waits for its ACK with the same payload: the
        connection is alive and the server reads it."""
        payload = os.urandom(8)
        assert self.send(raw_frame(PING, 0, 0, payload)), "the server closed the connection"
        self.wait_for(lambda f: isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == payload,
                      timeout, what="the PING ACK")

    def reply(self, stream_id: int, timeout: Optional[float] = None, window_updates: bool = True) -> Reply:
        """Reads frames until `stream_id` ends (END_STREAM or RST_STREAM).
        With window_updates, the received DATA is given back to the server's
        windows (connection and stream) as it arrives. A GOAWAY or the
        close before the end fails."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        r = Reply(stream_id)
        while not r.ended:
            f = self.read_frame(max(0.001, deadline - time.monotonic()))
            if f is None:
                raise ConnectionEnded(f"the connection closed before stream {stream_id} ended; received: "
                                      f"{describe(self.received[-8:])}")
            if isinstance(f, GoAwayFrame) and f.error_code != NO_ERROR:
                raise AssertionError(f"GOAWAY {err_name(f.error_code)} before stream {stream_id} ended "
                                     f"({f.additional_data!r})")
            if f.stream_id != stream_id:
                continue
            if isinstance(f, HeadersFrame):
                status = dict(f.decoded).get(b":status")
                if r.headers is None and status is not None and status.startswith(b"1"):
                    r.informational.append(f.decoded)
                elif r.headers is None:
                    r.headers = f.decoded
                else:
                    r.trailers = f.decoded
                if "END_STREAM" in f.flags:
                    r.ended = True
            elif isinstance(f, DataFrame):
                r.data.append(f.data)
                if window_updates and f.flow_controlled_length:
                    self.send(raw_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", f.flow_controlled_length)))
                    if "END_STREAM" not in f.flags:
                        self.send(raw_frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", f.flow_controlled_length)))
                if "END_STREAM" in f.flags:
                    r.ended = True
            elif isinstance(f, RstStreamFrame):
                r.reset = f.error_code
                r.ended = True
        return r

    def request(self, method: str = "GET", path: str = "/", extra: Iterable = (), body: Optional[bytes] = None,
                timeout: Optional[float] = None) -> Reply:
        return self.reply(self.send_request(method, path, extra, body), timeout)

    def assert_usable(self, path: str = "/") -> None:
        """The connection answers a PING and serves a new request."""
        self.ping()
        r = self.request("GET", path)
        assert r.status == 200 and r.reset is None, (r.status, r.reset)


def describe(frames: Iterable) -> str:
    out = []
    for f in frames:
        name = type(f).__name__.replace("Frame", "")
        extra = ""
        if isinstance(f, (GoAwayFrame, RstStreamFrame)):
            extra = " " + err_name(f.error_code)
        elif isinstance(f, HeadersFrame) and getattr(f, "decoded", None):
            extra = " " + dict(f.decoded).get(b":status", b"?").decode()
        out.append(f"{name}[{f.stream_id}]{extra}")
    return ", ".join(out) or "nothing"


def is_rst(stream_id: int) -> Callable[[Frame], bool]:
    return lambda f: isinstance(f, RstStreamFrame) and f.stream_id == stream_id


# ----------------------------------------------------------------------------
# Client on the h2 state machine
# ----------------------------------------------------------------------------


@dataclass
class Stream:
    stream_id: int
    informational: list = field(default_factory=list)
    headers: Optional[list] = None
    data: bytearray = field(default_factory=bytearray)
    data_frames: list = field(default_factory=list)  # length of each DATA frame's data
    trailers: Optional[list] = None
    reset: Optional[int] = None
    ended: bool = False
    window_updates: list = field(default_factory=list)  # increments the server granted this stream

    @property
    def status(self) -> Optional[int]:
        return int(dict(self.headers)[b":status"]) if self.headers is not None else None

    @property
    def body(self) -> bytes:
        return bytes(self.data)

    def header(self, name: str) -> Optional[str]:
        values = [v.decode("latin-1") for n, v in (self.headers or []) if n == name.encode()]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None


class H2Client(SocketClient):
    """The h2 library's client over a socket; see the module's docstring.
    With auto_window (the default) received DATA is acknowledged at once,
    so the server's sends are limited only by the windows given at start."""

    def __init__(self, sock, timeout: float = 10.0, settings: Optional[dict] = None, auto_window: bool = True):
        self.sock = sock
        self.timeout = timeout
        self.auto_window = auto_window
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=False,
                                        normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0, **(settings or {})})
        self.streams: dict = {}
        self.events: list = []
        self.conn_window_updates: list = []
        self.goaway: Optional[h2.events.ConnectionTerminated] = None
        self.closed = False
        self.remote_settings_seen = False
        self.conn.initiate_connection()
        self._flush()
        self.pump_until(lambda: self.remote_settings_seen, what="the server's SETTINGS")

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1", **kw) -> "H2Client":
        s = socket.create_connection((host, port), timeout=kw.get("timeout", 10.0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s, **kw)

    @classmethod
    def tls(cls, port: int, ctx: ssl.SSLContext, **kw) -> "H2Client":
        raw = socket.create_connection(("127.0.0.1", port), timeout=kw.get("timeout", 10.0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        assert s.selected_alpn_protocol() == "h2", f"ALPN selected {s.selected_alpn_protocol()!r}"
        return cls(s, **kw)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True

    @property
    def remote_settings(self) -> dict:
        return {int(k): v for k, v in self.conn.remote_settings.items()}

    def stream(self, sid: int) -> Stream:
        return self.streams.setdefault(sid, Stream(sid))

    def pump(self, timeout: float) -> bool:
        """Reads what arrives within `timeout` once and handles it. False when
        nothing came (timeout) or the connection is closed."""
        if self.closed:
            return False
        r, _, _ = select.select([self.sock], [], [], timeout) if not self._pending() else ([self.sock], [], [])
        if not r:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        except ssl.SSLWantReadError:
            return True
        if not data:
            self.closed = True
            return False
        events = self.conn.receive_data(data)
        for ev in events:
            self._handle(ev)
        self._flush()
        return True

    def _pending(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _handle(self, ev) -> None:
        self.events.append(ev)
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self.stream(ev.stream_id).informational.append(ev.headers)
        elif isinstance(ev, h2.events.ResponseReceived):
            self.stream(ev.stream_id).headers = ev.headers
        elif isinstance(ev, h2.events.TrailersReceived):
            self.stream(ev.stream_id).trailers = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            st = self.stream(ev.stream_id)
            st.data += ev.data
            st.data_frames.append(len(ev.data))
            if self.auto_window and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.stream(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            st = self.stream(ev.stream_id)
            st.reset = ev.error_code
            st.ended = True
        elif isinstance(ev, h2.events.WindowUpdated):
            if ev.stream_id:
                self.stream(ev.stream_id).window_updates.append(ev.delta)
            else:
                self.conn_window_updates.append(ev.delta)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def pump_until(self, cond: Callable[[], bool], timeout: Optional[float] = None, what: str = "it") -> None:
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while not cond():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"waited {t}s for {what}")
            if not self.pump(min(remaining, 0.2)) and self.closed and not cond():
                raise ConnectionEnded(f"the connection closed while waiting for {what} (GOAWAY: {self.goaway})")

    def pump_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self.pump(max(0.001, deadline - time.monotonic()))

    # -- requests -------------------------------------------------------------
    def send_request(self, method: str = "GET", path: str = "/", headers: Iterable = (), body: Optional[bytes] = None,
                     end_stream: Optional[bool] = None, authority: str = "localhost", scheme: str = "http") -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = req_headers(method, path, authority, scheme, headers)
        if end_stream is None:
            end_stream = body is None
        self.conn.send_headers(sid, hdrs, end_stream=end_stream)
        self.stream(sid)
        self._flush()
        if body is not None:
            self.send_body(sid, body, end_stream=True)
        return sid

    def send_body(self, sid: int, body: bytes, end_stream: bool = True, timeout: Optional[float] = None) -> None:
        """Sends `body` on `sid` within the server's windows, waiting for
        WINDOW_UPDATEs as needed."""
        view = memoryview(body)
        t = self.timeout if timeout is None else timeout
        while True:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window == 0 and len(view):
                self.pump_until(lambda: self.conn.local_flow_control_window(sid) > 0 or self.stream(sid).ended,
                                t, what=f"a WINDOW_UPDATE for stream {sid}")
                if self.stream(sid).ended:
                    return
                continue
            chunk, view = view[:window], view[window:]
            last = not len(view)
            self.conn.send_data(sid, bytes(chunk), end_stream=end_stream and last)
            self._flush()
            if last:
                return

    def response(self, sid: int, timeout: Optional[float] = None) -> Stream:
        self.pump_until(lambda: self.stream(sid).ended, timeout, what=f"the end of stream {sid}")
        return self.stream(sid)

    def request(self, method: str = "GET", path: str = "/", headers: Iterable = (), body: Optional[bytes] = None,
                timeout: Optional[float] = None, **kw) -> Stream:
        return self.response(self.send_request(method, path, headers, body, **kw), timeout)

    def reset(self, sid: int, code: int = CANCEL) -> None:
        self.conn.reset_stream(sid, code)
        self._flush()

    def ping(self, timeout: Optional[float] = None) -> None:
        payload = os.urandom(8)
        n = len(self.events)
        self.conn.ping(payload)
        self._flush()
        self.pump_until(lambda: any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == payload
                                    for e in self.events[n:]), timeout, what="the PING ACK")


# ----------------------------------------------------------------------------
# Servers and TLS
# ----------------------------------------------------------------------------


def h2_tls_ctx(cafile: str, alpn: Optional[list] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(alpn if alpn is not None else ["h2"])
    return ctx


def start_h2(starter, *args: str, loop: str = "asyncio", app: str = APP, tls=None, env=None) -> CasgiProcess:
    """A casgi process serving the h2 test app (`starter` is the start_server
    fixture or anything with its signature). `tls`: a tls_util.Pki whose
    server certificate it serves."""
    extra = list(args)
    if tls is not None:
        extra += ["--ssl-certfile", str(tls.server.chain), "--ssl-keyfile", str(tls.server.key)]
    p = starter(app, *extra, loop=loop, env=env)
    if tls is not None:
        from tls_util import tls_where
        tls_where(p)
    return p


# ----------------------------------------------------------------------------
# WebSockets over HTTP/2 (RFC 8441)
# ----------------------------------------------------------------------------


class H2WebSocket:
    """A WebSocket on one stream of a FrameConn: extended CONNECT, then
    WebSocket frames (ws_util.build_frame) inside DATA frames."""

    def __init__(self, conn: FrameConn, path: str = "/ws/echo", extensions: Optional[str] = None,
                 subprotocols: Optional[list] = None, scheme: str = "http", extra: Iterable = ()):
        self.conn = conn
        self.sid = conn.new_stream_id()
        hdrs = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", scheme.encode()),
                (b":path", path.encode()), (b":authority", b"localhost"), (b"sec-websocket-version", b"13")]
        if extensions:
            hdrs.append((b"sec-websocket-extensions", extensions.encode()))
        if subprotocols:
            hdrs.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        hdrs += [(n.encode(), v.encode()) for n, v in extra]
        conn.send(conn.headers_frame(self.sid, hdrs, end_stream=False))
        self.response = conn.wait_for(lambda f: isinstance(f, (HeadersFrame, RstStreamFrame, GoAwayFrame))
                                      and f.stream_id in (self.sid, 0), what="the extended CONNECT response")
        self.buf = b""
        self.ended = False

    @property
    def status(self) -> Optional[int]:
        if not isinstance(self.response, HeadersFrame):
            return None
        return int(dict(self.response.decoded)[b":status"])

    def header(self, name: str) -> Optional[str]:
        v = dict(self.response.decoded).get(name.encode())
        return v.decode("latin-1") if v is not None else None

    def send_ws(self, ws_frame: bytes, end_stream: bool = False) -> bool:
        """Sends WebSocket bytes in DATA frames of at most 16384 bytes (the
        default SETTINGS_MAX_FRAME_SIZE; small messages stay within the
        initial windows, so no flow control is done here)."""
        parts = [ws_frame[i:i + 16384] for i in range(0, len(ws_frame), 16384)] or [b""]
        return self.conn.send(b"".join(
            raw_frame(DATA, END_STREAM if end_stream and i == len(parts) - 1 else 0, self.sid, part)
            for i, part in enumerate(parts)))

    def recv_ws(self, timeout: Optional[float] = None) -> tuple:
        """The next WebSocket frame from the server: (fin, rsv, opcode, payload).
        Server frames must be unmasked."""
        t = self.conn.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            f = self.conn.wait_for(lambda f: f.stream_id == self.sid, max(0.01, deadline - time.monotonic()),
                                   what="a WebSocket frame")
            if isinstance(f, DataFrame):
                self.buf += f.data
                if f.flow_controlled_length:
                    self.conn.send_window_update(0, f.flow_controlled_length)
                    self.conn.send_window_update(self.sid, f.flow_controlled_length)
                if "END_STREAM" in f.flags:
                    self.ended = True
            elif isinstance(f, RstStreamFrame):
                raise AssertionError(f"RST_STREAM {err_name(f.error_code)} on the WebSocket stream")

    def _parse(self) -> Optional[tuple]:
        b = self.buf
        if len(b) < 2:
            return None
        fin, rsv, opcode = bool(b[0] & 0x80), (b[0] >> 4) & 0x7, b[0] & 0xF
        assert not b[1] & 0x80, "a masked frame from the server"
        n, pos = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < pos + n:
            return None
        self.buf = b[pos + n:]
        return fin, rsv, opcode, b[pos:pos + n]
