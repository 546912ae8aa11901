#!/usr/bin/env python3
"""WebSocket echo load: `python wsload.py --port P [--connections 64] [--duration 10] [--size 64]`.

Each connection does the opening handshake (no extensions), then sends a
masked text message of `size` bytes, waits for the same message back, and
sends the next, for `duration` seconds. Prints one JSON object: messages,
seconds, rate, p50/p99 round-trip latency in ms, errors. Raw frames over
asyncio (uvloop when installed), so the client spends little per message; its
own CPU is the limit at high rates, which is why the harness also reports the
server's CPU time per message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import sys
import time

PATH = "/ws"


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + mask + masked


def pong_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x8A, 0x80 | len(payload)) + mask + masked


def parse_frame(buf: bytearray):
    """(opcode, payload, frame length) of the server frame at the start of buf, or None."""
    if len(buf) < 2:
        return None
    opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
    offset = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, offset = struct.unpack_from("!H", buf, 2)[0], 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, offset = struct.unpack_from("!Q", buf, 2)[0], 10
    if len(buf) < offset + length:
        return None
    return opcode, bytes(buf[offset:offset + length]), offset + length


class EchoClient(asyncio.Protocol):
    def __init__(self, host: str, port: int, payload: bytes, stop_at: float, stats: dict,
                 done: asyncio.Future):
        self.request = (
            f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.payload, self.frame = payload, masked_text_frame(payload)
        self.stop_at, self.stats, self.done = stop_at, stats, done
        self.buf = bytearray()
        self.open = False
        self.sent_at = 0.0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def send_next(self):
        if time.monotonic() >= self.stop_at:
            self.finish()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)

    def data_received(self, data: bytes):
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.stats["errors"] += 1
                self.finish()
                return
            del self.buf[:end + 4]
            self.open = True
            self.send_next()
        while self.open:
            frame = parse_frame(self.buf)
            if frame is None:
                return
            opcode, payload, size = frame
            del self.buf[:size]
            if opcode == 0x9:
                self.transport.write(pong_frame(payload))
            elif opcode == 0x8:
                self.stats["errors"] += 1
                self.finish()
            elif opcode == 0x1:
                if payload != self.payload:
                    self.stats["errors"] += 1
                self.stats["latencies"].append(time.perf_counter() - self.sent_at)
                self.send_next()

    def finish(self):
        self.open = False
        if not self.done.done():
            self.done.set_result(None)
        self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.stats["errors"] += 1
            self.done.set_result(None)


async def run(port: int, connections: int, duration: float, size: int) -> dict:
    loop = asyncio.get_running_loop()
    payload = b"x" * size
    stats = {"errors": 0, "latencies": []}
    stop_at = time.monotonic() + duration
    done = []
    start = time.perf_counter()
    for _ in range(connections):
        fut = loop.create_future()
        try:
            await loop.create_connection(
                lambda f=fut: EchoClient("127.0.0.1", port, payload, stop_at, stats, f),
                "127.0.0.1", port)
        except OSError:
            stats["errors"] += 1
            continue
        done.append(fut)
    await asyncio.wait_for(asyncio.gather(*done), timeout=duration + 30)
    seconds = time.perf_counter() - start
    lat = sorted(stats["latencies"])
    count = len(lat)
    return {
        "messages": count,
        "seconds": round(seconds, 3),
        "rate": count / seconds if seconds else 0.0,
        "p50_ms": statistics.median(lat) * 1000 if lat else None,
        "p99_ms": lat[min(count - 1, int(count * 0.99))] * 1000 if lat else None,
        "errors": stats["errors"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    runner = uvloop.run if uvloop and hasattr(uvloop, "run") else asyncio.run
    print(json.dumps(runner(run(args.port, args.connections, args.duration, args.size))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
