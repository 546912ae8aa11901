"""A small HTTP/2 client on the `h2` package, for the harness's own requests.

The readiness check of an HTTP/2 scenario, the idle connections of
`idle-h2c` (bench/idle.py) and the counted requests of bench/callgrind.py use
it: h2c with prior knowledge (the connection preface first, no Upgrade) or TLS
offering only `h2` by ALPN. `Exchange` is the protocol without I/O, driven by
a blocking socket here (`Connection`) and by asyncio in idle.py.

`h2` is installed in .bench-venv; the harness's own Python may lack it, so
`use_venv` makes the venv's copy (pure Python) importable.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys

PREFACE_REPLY_LIMIT = 200  # bytes of a non-HTTP/2 answer quoted in an error


class NotHttp2(RuntimeError):
    """The server did not speak HTTP/2: it answered the preface with HTTP/1.x,
    did not negotiate h2 by ALPN, or broke the protocol."""


def use_venv(python: str) -> None:
    """Makes `h2` importable from the virtual environment of `python` when the
    running interpreter has none of its own."""
    try:
        import h2  # noqa: F401
        return
    except ImportError:
        pass
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([python, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
    if purelib not in sys.path:
        sys.path.append(purelib)


class Exchange:
    """One client HTTP/2 connection without I/O: bytes out, bytes in, responses.

    Received data is acknowledged at once (WINDOW_UPDATE), so a 1 MiB answer
    never stalls on the 64 KiB default window; SETTINGS and PING are answered by
    `h2` itself."""

    def __init__(self, authority: str, scheme: str = "http"):
        import h2.config
        import h2.connection

        self.authority, self.scheme = authority, scheme
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.responses: dict = {}  # stream id -> {"status", "body", "done"}
        self.first_bytes = b""  # the start of what the server sent, for error messages

    def request(self, method: str, path: str, body: bytes = b"", headers: tuple = ()) -> int:
        """Queues a request; returns its stream id. The body must fit in the
        server's initial flow-control window (every bench body does)."""
        stream = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", self.scheme), (":authority", self.authority),
                  (":path", path), *headers]
        if body:
            fields.append(("content-length", str(len(body))))
        self.conn.send_headers(stream, fields, end_stream=not body)
        if body:
            if len(body) > self.conn.local_flow_control_window(stream):
                raise NotHttp2(f"request body of {len(body)} bytes exceeds the server's "
                               "flow-control window")
            size = self.conn.max_outbound_frame_size
            for start in range(0, len(body), size):
                chunk = body[start:start + size]
                self.conn.send_data(stream, chunk, end_stream=start + size >= len(body))
        self.responses[stream] = {"status": None, "body": bytearray(), "done": False}
        return stream

    def outgoing(self) -> bytes:
        return self.conn.data_to_send()

    def receive(self, data: bytes) -> None:
        """Feeds bytes from the server; raises NotHttp2 on anything but HTTP/2."""
        import h2.events
        import h2.exceptions

        if len(self.first_bytes) < PREFACE_REPLY_LIMIT:
            self.first_bytes += data[:PREFACE_REPLY_LIMIT - len(self.first_bytes)]
        if self.first_bytes.startswith(b"HTTP/"):
            line = self.first_bytes.split(b"\r\n", 1)[0].decode("latin-1")
            raise NotHttp2(f"answered the HTTP/2 preface with HTTP/1: {line!r}")
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            raise NotHttp2(f"not HTTP/2 ({type(exc).__name__}: {exc}; first bytes "
                           f"{self.first_bytes[:40]!r})") from None
        for event in events:
            response = self.responses.get(getattr(event, "stream_id", None))
            if isinstance(event, h2.events.ResponseReceived) and response is not None:
                response["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                if response is not None:
                    response["body"] += event.data
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and response is not None:
                response["done"] = True
            elif isinstance(event, h2.events.StreamReset):
                raise NotHttp2(f"stream {event.stream_id} reset by the server "
                               f"(error {event.error_code!r})")
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise NotHttp2(f"GOAWAY from the server (error {event.error_code!r})")

    def done(self, stream: int) -> bool:
        return self.responses[stream]["done"]

    def take(self, stream: int) -> tuple:
        """(status, body) of a finished stream, forgotten afterwards."""
        response = self.responses.pop(stream)
        return response["status"], bytes(response["body"])


def client_context(ca_file: str) -> ssl.SSLContext:
    """TLS 1.3, the server verified against `ca_file`, `h2` the only ALPN offer."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    return context


class Connection:
    """A blocking HTTP/2 connection: h2c with prior knowledge, or TLS with ALPN h2
    when given a context from `client_context`."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.session = None
        try:
            if tls:
                self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
                alpn = self.sock.selected_alpn_protocol()
                if alpn != "h2":
                    raise NotHttp2(f"negotiated {alpn or 'no protocol'} by ALPN, not h2")
                name, version, _ = self.sock.cipher()
                self.session = f"{version} {name}"
            self.exchange = Exchange(f"127.0.0.1:{port}", "https" if tls else "http")
            self.sock.sendall(self.exchange.outgoing())
        except BaseException:
            self.sock.close()
            raise

    def request(self, method: str, path: str, body: bytes = b"", headers: tuple = ()) -> tuple:
        """Sends one request and waits for its whole answer: (status, body)."""
        stream = self.exchange.request(method, path, body, headers)
        self.sock.sendall(self.exchange.outgoing())
        while not self.exchange.done(stream):
            data = self.sock.recv(262144)
            if not data:  # an OSError: a server still starting may do that, so retried
                raise ConnectionError("connection closed by the server"
                               + (f" after {self.exchange.first_bytes[:40]!r}"
                                  if self.exchange.first_bytes else " without a word"))
            self.exchange.receive(data)
            out = self.exchange.outgoing()
            if out:
                self.sock.sendall(out)
        return self.exchange.take(stream)

    def close(self) -> None:
        self.sock.close()


def request_once(port: int, method: str, path: str, body: bytes = b"", headers: tuple = (),
                 tls: ssl.SSLContext | None = None, timeout: float = 5) -> tuple:
    """One request on a new connection: (status, body, TLS session or None)."""
    conn = Connection(port, tls, timeout)
    try:
        status, answer = conn.request(method, path, body, headers)
        return status, answer, conn.session
    finally:
        conn.close()
