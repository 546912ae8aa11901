"""Streaming both ways with bounded server memory (backpressure)."""

import socket
import threading
import time

import pytest

from helpers import UNDER_SANITIZER, RssSampler, assert_rss_growth_below, req

MiB = 1024 * 1024
SIZE = 200 * MiB
RSS_LIMIT_KIB = 64 * 1024

pytestmark = pytest.mark.timeout(120)


def warm_up(server):
    with server.connect() as c:
        c.request(req("POST", "/consume", body=b"x" * MiB))
        c.request(req("GET", "/download?size=1048576"))


def send_body(sock: socket.socket, total: int, piece: int = MiB, chunked: bool = False) -> None:
    block = b"u" * piece
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        if chunked:
            sock.sendall(b"%x\r\n" % n + block[:n] + b"\r\n")
        else:
            sock.sendall(block[:n])
        sent += n
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def drain_body(conn, resp) -> int:
    """Reads the body of `resp` (content-length or chunked) counting bytes without keeping them."""
    te = resp.header("transfer-encoding")
    total = 0
    if te == "chunked":
        while True:
            line = conn._read_line([])
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while conn._read_line([]) != b"":
                    pass
                return total
            remaining = size + 2
            while remaining:
                if not conn.buf:
                    assert conn._fill(), "connection closed inside a chunk"
                take = min(remaining, len(conn.buf))
                conn.buf = conn.buf[take:]
                remaining -= take
            total += size
    length = int(resp.header("content-length"))
    while total < length:
        if not conn.buf:
            assert conn._fill(), f"connection closed after {total} of {length} bytes"
        take = min(length - total, len(conn.buf))
        conn.buf = conn.buf[take:]
        total += take
    return total


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_200mb_with_bounded_memory(server, chunked):
    warm_up(server)
    base = server.rss_kib()
    with server.connect(timeout=30) as c, RssSampler(server.pid) as rss:
        if chunked:
            c.send(req("POST", "/consume", headers=[("Transfer-Encoding", "chunked")]))
        else:
            c.send(req("POST", "/consume", headers=[("Content-Length", str(SIZE))]))
        send_body(c.sock, SIZE, chunked=chunked)
        r = c.read_response()
    assert r.status == 200
    assert int(r.body) == SIZE
    growth = rss.max_kib - base
    assert_rss_growth_below(growth, RSS_LIMIT_KIB, "during a 200 MiB upload")


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_download_200mb_with_bounded_memory(server, framing):
    warm_up(server)
    base = server.rss_kib()
    cl = "&cl=1" if framing == "content-length" else ""
    with server.connect(timeout=30) as c, RssSampler(server.pid) as rss:
        c.send(req("GET", f"/download?size={SIZE}{cl}"))
        head = c.read_head()
        assert head.status == 200
        got = drain_body(c, head)
        # The connection is still usable afterwards.
        assert c.request(req("GET", "/")).status == 200
    assert got == SIZE
    growth = rss.max_kib - base
    assert_rss_growth_below(growth, RSS_LIMIT_KIB, "during a 200 MiB download")


def test_slow_reader_does_not_make_server_buffer(server):
    warm_up(server)
    base = server.rss_kib()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        with RssSampler(server.pid) as rss:
            sock.sendall(req("GET", f"/download?size={SIZE}"))
            # Read nothing for a while: an app producing 200 MiB as fast as it
            # can must be held back by send() instead of filling memory.
            time.sleep(3)
            stalled = rss.max_kib - base
            # Then read a little, slowly.
            sock.settimeout(5)
            for _ in range(20):
                assert sock.recv(65536)
                time.sleep(0.02)
        assert_rss_growth_below(stalled, RSS_LIMIT_KIB, "behind a stalled reader")
        assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "while a slow reader read")
    finally:
        sock.close()
    # The server is fine afterwards.
    with server.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_unread_request_body_pauses_reading(server):
    warm_up(server)
    base = server.rss_kib()
    c = server.connect(timeout=30)
    errors = []

    def sender():
        try:
            c.sock.sendall(req("POST", "/no-read-slow?t=3", headers=[("Content-Length", str(SIZE))]))
            send_body(c.sock, SIZE)
        except OSError as exc:  # expected once the server stops reading and closes
            errors.append(exc)

    t = threading.Thread(target=sender, daemon=True)
    try:
        with RssSampler(server.pid) as rss:
            t.start()
            server.wait_for(r"NO-READ-SLOW-START")
            time.sleep(2)
            growth = rss.max_kib - base
            assert_rss_growth_below(growth, RSS_LIMIT_KIB, "while the app was not reading the body")
            r = c.read_response()
            assert r.status == 200
            assert r.body == b"answered without reading"
    finally:
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.close()
        t.join(10)
    assert not t.is_alive()


def test_request_body_streamed_as_it_arrives(server):
    """The app sees the first part of the body before the client sent the rest."""
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        c.send(b"5\r\nfirst\r\n")
        time.sleep(0.3)
        c.send(b"6\r\nsecond\r\n0\r\n\r\n")
        r = c.read_response()
    assert r.body == b"firstsecond"
    assert int(r.header("x-body-messages")) >= 2


def test_client_leaving_mid_download_releases_the_app(server):
    """send() waiting for the transport to drain must not wait forever once the
    client is gone: the app finishes (its sends are dropped)."""
    ident = f"dl{time.monotonic_ns()}"
    mark = server.mark()
    base = server.rss_kib()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    with RssSampler(server.pid) as rss:
        sock.sendall(req("GET", f"/download?size={SIZE}&id={ident}"))
        sock.settimeout(5)
        assert sock.recv(65536)
        time.sleep(0.5)
        sock.close()
        server.wait_for(rf"DOWNLOAD-DONE {ident}", since=mark, timeout=20)
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "after the client left a download")
    assert "Traceback" not in server.output(mark)


def test_pipelined_large_uploads(server):
    size = 20 * MiB
    with server.connect(timeout=30) as c:
        c.send(req("POST", "/consume", headers=[("Content-Length", str(size))]))
        send_body(c.sock, size)
        c.send(req("POST", "/consume", headers=[("Transfer-Encoding", "chunked")]))
        send_body(c.sock, size + 1, chunked=True)
        c.send(req("GET", "/"))
        assert int(c.read_response().body) == size
        assert int(c.read_response().body) == size + 1
        assert c.read_response().body == b"Hello, world!"


def _pipelined_batch(conn, n: int) -> None:
    batch = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            batch.append(req("GET", "/"))
        elif kind == 1:
            batch.append(req("POST", "/echo", body=b"e" * (i % 50 + 1)))
        else:
            batch.append(req("GET", f"/scope/x%20{i}?q={i}", headers=[("X-I", str(i))]))
    conn.send(b"".join(batch))
    for _ in range(n):
        assert conn.read_response().status == 200


@pytest.mark.skipif(UNDER_SANITIZER, reason="RSS is meaningless with ASan's quarantine")
def test_memory_stable_over_many_requests(server):
    """Per-request objects are released: after a warm-up, 21000 more requests
    leave the server's RSS nearly where it was."""
    with server.connect(timeout=30) as c:
        for _ in range(30):
            _pipelined_batch(c, 100)
        base = server.rss_kib()
        for _ in range(210):
            _pipelined_batch(c, 100)
        growth = server.rss_kib() - base
    assert_rss_growth_below(growth, 4 * 1024, "over 21000 requests")


@pytest.mark.skipif(UNDER_SANITIZER, reason="RSS is meaningless with ASan's quarantine")
def test_memory_stable_over_many_connections(server):
    def one_connection():
        with server.connect() as c:
            assert c.request(req("POST", "/echo", body=b"connection")).status == 200

    for _ in range(500):
        one_connection()
    base = server.rss_kib()
    for _ in range(4000):
        one_connection()
    growth = server.rss_kib() - base
    assert_rss_growth_below(growth, 4 * 1024, "over 4000 connections")


def test_pipelined_large_responses_to_a_stalled_reader_stay_bounded(server):
    """Responses to pipelined requests are produced one at a time: a client
    that pipelines 300 MiB of downloads and does not read cannot make the
    server hold them."""
    n, size = 300, MiB
    warm_up(server)
    base = server.rss_kib()
    with server.connect(timeout=30) as c, RssSampler(server.pid) as rss:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(b"".join(req("GET", f"/download?size={size}&cl=1") for _ in range(n)))
        time.sleep(2.5)
        stalled = rss.max_kib - base
        for _ in range(n):
            head = c.read_head()
            assert head.status == 200
            assert drain_body(c, head) == size
    assert_rss_growth_below(stalled, RSS_LIMIT_KIB, "for pipelined downloads to a stalled reader")
    assert_rss_growth_below(rss.max_kib - base, RSS_LIMIT_KIB, "for pipelined downloads")
