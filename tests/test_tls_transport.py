"""TLS at the transport, seen in the records on the wire: a client built on
ssl.MemoryBIO over a raw socket counts the TLS records the server sends.
Pipelined responses to one read leave as one record (the held-output batching
works under TLS), and a large body goes out in full-size records."""

from __future__ import annotations

import socket
import ssl
import struct

import pytest

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls-transport")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return d


class RecordClient:
    """TLS over a socket with the records visible: every byte the server
    sends is split into records (type, length) before it is decrypted."""

    def __init__(self, port: int, cafile: str):
        ctx = ssl.create_default_context(cafile=cafile)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.raw = b""  # received bytes not yet split into records
        self.records: list = []
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._recv()
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _recv(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.raw += data
        while len(self.raw) >= 5:
            rtype, _, length = struct.unpack("!BHH", self.raw[:5])
            if len(self.raw) < 5 + length:
                break
            self.records.append((rtype, length))
            self.incoming.write(self.raw[: 5 + length])
            self.raw = self.raw[5 + length :]
        return True

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def read_until(self, marker: bytes, count: int, size: int = 0) -> bytes:
        """Plaintext until `marker` has been seen `count` times and at least
        `size` bytes arrived (or the connection ended)."""
        out = b""
        while out.count(marker) < count or len(out) < size:
            try:
                out += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                break
            if not self._recv():
                break
        return out

    def close(self) -> None:
        self.sock.close()


def request(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipelined_responses_leave_as_one_run_of_records(start_server, certs, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    s = start_server("basic:app", "--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile",
                     str(certs / "key.pem"), loop=loop)
    c = RecordClient(s.port, str(certs / "ca.pem"))
    try:
        # The first response also flushes the session tickets out of the way.
        c.send(request())
        first = c.read_until(b"Hello, world!", 1)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        before = len(c.records)
        c.send(request() * 3)
        got = c.read_until(b"Hello, world!", 3)
        assert got.count(b"HTTP/1.1 200 OK\r\n") == 3
        new = c.records[before:]
        # Three small responses to one read: one write, one record.
        assert [t for t, _ in new] == [23], f"records for 3 pipelined responses: {new}"
    finally:
        c.close()


def test_a_large_body_arrives_whole_in_full_size_records(start_server, certs):
    s = start_server("basic:app", "--ssl-certfile", str(certs / "cert.pem"), "--ssl-keyfile",
                     str(certs / "key.pem"))
    c = RecordClient(s.port, str(certs / "ca.pem"))
    try:
        c.send(request())  # the session tickets come with the first response
        assert c.read_until(b"Hello, world!", 1).startswith(b"HTTP/1.1 200 OK\r\n")
        size = 1 << 20
        c.send(request(f"/download?size={size}&chunk={size}&cl=1"))
        before = len(c.records)
        got = c.read_until(b"\r\n\r\n", 1, size)
        head, _, body = got.partition(b"\r\n\r\n")
        assert b"content-length: %d" % size in head
        assert body == b"x" * size
        lengths = [n for _, n in c.records[before:]]
        # The head, then 1 MiB in full records (16 KiB of plaintext each): no
        # small records in between.
        assert len(lengths) <= size // 16384 + 2, lengths
        assert all(n == lengths[1] for n in lengths[1:-1]) and lengths[1] > 16384, lengths
    finally:
        c.close()
