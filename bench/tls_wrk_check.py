#!/usr/bin/env python3
"""What wrk negotiates over TLS, and whether it resumes sessions.

    python bench/tls_wrk_check.py

A small TLS server (Python's ssl, threads, on 127.0.0.1) answers every request
with what it saw on that connection: TLS version, cipher suite, the ALPN
protocol the client chose (the server offers h2 and http/1.1) and whether the
handshake resumed a session. wrk is run three ways for a second each: keep-alive
(as in tls-plaintext), one request per connection (`Connection: close`), and
the same with bench/tls_noresume.c preloaded (as in tls-handshake). Prints, for
each, the connections the server accepted, how many resumed, and the versions,
suites and ALPN results seen. Uses the bench venv for the certificate
(bench/run.py once first) and cc for the shim.
"""

from __future__ import annotations

import collections
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

import run
import wrk


class Probe:
    def __init__(self, files):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(files.cert, files.key)
        self.context.set_alpn_protocols(["h2", "http/1.1"])
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.reset()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.connections, self.resumed = 0, 0
            self.seen = collections.Counter()

    def _accept(self):
        while True:
            sock, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        try:
            conn = self.context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            sock.close()
            return
        with self.lock:
            self.connections += 1
            self.resumed += conn.session_reused
            self.seen[(conn.version(), conn.cipher()[0], conn.selected_alpn_protocol())] += 1
        data = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                while b"\r\n\r\n" in data:
                    head, data = data.split(b"\r\n\r\n", 1)
                    close = b"connection: close" in head.lower()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                 + (b"Connection: close\r\n" if close else b"") + b"\r\nok")
                    if close:
                        return
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()


def main() -> int:
    if not run.build_noresume():
        sys.exit("no C compiler for bench/tls_noresume.c")
    with tempfile.TemporaryDirectory(prefix="casgi-tlscheck-") as workdir:
        probe = Probe(run.make_certificates(workdir))
        url = f"https://127.0.0.1:{probe.port}/"
        cases = [
            ("keep-alive, 4 connections", wrk.command(url, 4, 1, None, 1)),
            ("Connection: close, 4 connections",
             wrk.command(url, 4, 1, None, 1, headers=("Connection: close",))),
            ("Connection: close, tls_noresume.so",
             wrk.command(url, 4, 1, None, 1, headers=("Connection: close",),
                         preload=run.NORESUME)),
        ]
        for title, argv in cases:
            probe.reset()
            result = wrk.run(argv, 1)
            with probe.lock:
                seen = ", ".join(f"{v} {c} ALPN {a} x{n}" for (v, c, a), n in probe.seen.items())
                print(f"{title}: {result.requests} requests, {probe.connections} connections, "
                      f"{probe.resumed} resumed; {seen}")
    return 0


if __name__ == "__main__":
    os.sched_setaffinity(0, {1})
    sys.exit(main())
