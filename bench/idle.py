"""Many idle keep-alive connections: each sends one request, reads the whole
answer, then stays open doing nothing. Over TLS when given the CA file: each
connection then makes a full handshake first (Python's ssl offers a session
only when handed one) and offers no ALPN, so the server speaks HTTP/1.1.
With `http2`, in cleartext: each connection sends the HTTP/2 preface with its
SETTINGS (prior knowledge), acknowledges the server's, completes one GET on
stream 1 (bench/h2client.py), then stays open."""

from __future__ import annotations

import asyncio
import ssl

BATCH = 256  # connections being opened at the same time
OPEN_DEADLINE = 60.0  # seconds to open them all; the rest count as failed


async def _open_one(port: int, request, expect: bytes, tls: ssl.SSLContext | None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   ssl_handshake_timeout=30 if tls else None)
    try:
        if isinstance(request, bytes):
            await _http1(reader, writer, request, expect)
        else:
            await _http2(reader, writer, port, request, expect)
    except BaseException:
        writer.close()
        raise
    return writer


async def _read(reader) -> bytes:
    chunk = await asyncio.wait_for(reader.read(65536), timeout=10)
    if not chunk:
        raise ConnectionError("closed by the server")
    return chunk


async def _http1(reader, writer, request: bytes, expect: bytes) -> None:
    writer.write(request)
    received = b""
    while not received.endswith(expect):
        received += await _read(reader)


async def _http2(reader, writer, port: int, path: str, expect: bytes) -> None:
    import h2client

    exchange = h2client.Exchange(f"127.0.0.1:{port}")
    stream = exchange.request("GET", path)
    writer.write(exchange.outgoing())
    while not exchange.done(stream):
        exchange.receive(await _read(reader))
        writer.write(exchange.outgoing())  # SETTINGS ACK, WINDOW_UPDATE
    status, body = exchange.take(stream)
    if status != 200 or not body.endswith(expect):
        raise ConnectionError(f"answered {status} with {len(body)} bytes")


async def _open_all(port: int, count: int, request, expect: bytes, tls):
    limit = asyncio.Semaphore(BATCH)

    async def guarded():
        async with limit:
            return await _open_one(port, request, expect, tls)

    tasks = [asyncio.ensure_future(guarded()) for _ in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=OPEN_DEADLINE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    writers = [t.result() for t in done if t.exception() is None]
    failures = [t.exception() for t in done if t.exception() is not None]
    failures += [TimeoutError(f"not open after {OPEN_DEADLINE} s")] * len(pending)
    return writers, failures


async def _hold(port: int, count: int, request, expect: bytes, on_open, tls):
    writers, failures = await _open_all(port, count, request, expect, tls)
    await asyncio.sleep(1.0)  # let the server settle after the burst
    try:
        return on_open(len(writers), failures)
    finally:
        for w in writers:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def client_context(ca_file: str) -> ssl.SSLContext:
    """A TLS client context that verifies the server against `ca_file` and
    allows TLS 1.3 only."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def hold_connections(port: int, count: int, path: str, expect: bytes, on_open,
                     ca_file: str | None = None, http2: bool = False):
    """Opens `count` connections (over TLS 1.3 when `ca_file` is given: the CA
    that signed the server's certificate; h2c with prior knowledge when `http2`),
    calls on_open(opened, failures) while they are all open and idle, closes
    them, and returns what on_open returned."""
    if http2 and ca_file:
        raise ValueError("idle HTTP/2 connections are h2c only")
    # HTTP/1.1: the request's bytes; HTTP/2: its path, for an h2client.Exchange.
    request = path if http2 else \
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    tls = client_context(ca_file) if ca_file else None
    return asyncio.run(_hold(port, count, request, expect, on_open, tls))
