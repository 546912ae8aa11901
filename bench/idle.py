"""Many idle keep-alive connections: each sends one request, reads the whole
answer, then stays open doing nothing."""

from __future__ import annotations

import asyncio

BATCH = 256  # connections being opened at the same time
OPEN_DEADLINE = 60.0  # seconds to open them all; the rest count as failed


async def _open_one(port: int, request: bytes, expect: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        received = b""
        while not received.endswith(expect):
            chunk = await asyncio.wait_for(reader.read(65536), timeout=10)
            if not chunk:
                raise ConnectionError("closed by the server")
            received += chunk
    except BaseException:
        writer.close()
        raise
    return writer


async def _open_all(port: int, count: int, request: bytes, expect: bytes):
    limit = asyncio.Semaphore(BATCH)

    async def guarded():
        async with limit:
            return await _open_one(port, request, expect)

    tasks = [asyncio.ensure_future(guarded()) for _ in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=OPEN_DEADLINE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    writers = [t.result() for t in done if t.exception() is None]
    failures = [t.exception() for t in done if t.exception() is not None]
    failures += [TimeoutError(f"not open after {OPEN_DEADLINE} s")] * len(pending)
    return writers, failures


async def _hold(port: int, count: int, request: bytes, expect: bytes, on_open):
    writers, failures = await _open_all(port, count, request, expect)
    await asyncio.sleep(1.0)  # let the server settle after the burst
    try:
        return on_open(len(writers), failures)
    finally:
        for w in writers:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


def hold_connections(port: int, count: int, path: str, expect: bytes, on_open):
    """Opens `count` connections, calls on_open(opened, failures) while they are
    all open and idle, closes them, and returns what on_open returned."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    return asyncio.run(_hold(port, count, request, expect, on_open))
