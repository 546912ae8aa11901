#!/usr/bin/env python3
"""Idle keep-alive memory across rounds, in one server process.

    python bench/idle_rounds.py PORT CONNECTIONS SERVER_PID

Opens CONNECTIONS connections that each send one request and then stay idle,
waits 2.5 s (casgi releases an idle connection's read buffer after two ticks),
prints the server's RSS growth per connection, closes them all, and repeats
three times. A server that keeps memory from closed connections shows the
per-connection figure growing from round to round.
"""

import socket
import sys
import time

from procstat import rss_kib


def main() -> None:
    port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    base = rss_kib([pid])
    for r in range(3):
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        for s in socks:
            s.recv(4096)
        time.sleep(2.5)
        now = rss_kib([pid])
        print(f"round {r}: {n} idle, {(now - base) / n:.2f} KiB each (RSS {now} KiB)", flush=True)
        for s in socks:
            s.close()
        time.sleep(1.0)


if __name__ == "__main__":
    main()
