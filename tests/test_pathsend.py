"""http.response.pathsend and http.response.zerocopysend (tests/apps/pathsend_app.py):
files sent byte-exact over HTTP/1.1 (sendfile on cleartext, through the TLS
engine on TLS) and HTTP/2 (h2c and h2 over TLS), with their content-length;
HEAD; errors raised by send() before anything is sent, the connection going
on; a client leaving mid-file leaves no descriptor open; Starlette's
FileResponse, which uses pathsend when the scope offers it."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import (UNDER_SANITIZER, CasgiProcess, RawConn, RssSampler, casgi_args, clean_env,
                     loop_params)
from h2_util import H2Client, h2_tls_ctx
from tls_util import Pki, client_ctx, tls_connect, tls_where

APP = "pathsend_app:app"
LARGE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("pathsend-files")
    out = {"dir": d}
    for name, size in (("empty", 0), ("small", 1000), ("medium", 300 * 1024), ("large", LARGE)):
        data = os.urandom(size)
        (d / f"{name}.bin").write_bytes(data)
        out[name] = (d / f"{name}.bin", data)
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pathsend-pki"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, pki):
    """Shared servers by (kind, loop): kind "plain" (HTTP/1.1 and h2c) or "tls"."""
    procs: dict = {}
    cwd = tmp_path_factory.mktemp("pathsend-cwd")  # not the source tree: the installed casgi

    def get(kind: str, loop: str = "asyncio") -> CasgiProcess:
        key = (kind, loop)
        if key not in procs:
            args = ["--ssl-certfile", str(pki.server.chain), "--ssl-keyfile", str(pki.server.key)] if kind == "tls" else []
            p = CasgiProcess(casgi_args(APP, *args, loop=loop), env=clean_env(), cwd=cwd)
            p.wait_running()
            if kind == "tls":
                tls_where(p)
            procs[key] = p
        return procs[key]

    yield get
    crashes = [c for c in (p.crash_report() for p in procs.values()) if c]
    for p in procs.values():
        p.kill()
    assert not crashes, "\n\n".join(crashes)


def q(path: Path) -> str:
    return quote(str(path), safe="/")


def get(c: RawConn, target: str, method: str = "GET", version: str = "1.1"):
    c.send(f"{method} {target} HTTP/{version}\r\nHost: x\r\n\r\n".encode())
    if method == "HEAD":
        return c.read_response(head=True)
    head = c.read_head()
    cl = head.header_all("content-length")
    if head.header("transfer-encoding") or len(cl) != 1:
        c.buf = head.raw + c.buf  # read_response reads it again, as it is
        return c.read_response()
    # A large body in a bytearray: RawConn's buffer copies itself per read,
    # and TLS reads come a record (16 KiB) at a time.
    want = int(cl[0])
    body = bytearray(c.buf[:want])
    c.buf = c.buf[want:]
    while len(body) < want:
        chunk = c.sock.recv(min(1 << 20, want - len(body)))
        assert chunk, f"connection closed after {len(body)} of {want} body bytes"
        body += chunk
    head.framing, head.body = "length", bytes(body)
    return head


def fds(p: CasgiProcess, connect) -> int:
    with connect() as c:
        r = get(c, "/fds")
        assert r.status == 200
        return int(r.body)


def wait_fds(p: CasgiProcess, connect, want: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    n = fds(p, connect)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = fds(p, connect)
    assert n == want, f"{n} descriptors open, {want} before"


# ----------------------------------------------------------------------------
# HTTP/1.1 cleartext
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", loop_params())
def test_extensions_offered(servers, loop):
    p = servers("plain", loop)
    with p.connect() as c:
        r = get(c, "/ext")
    assert r.body.decode().split() == ["http.response.pathsend", "http.response.zerocopysend"]


@pytest.mark.parametrize("loop", loop_params())
def test_files_byte_exact_with_content_length(servers, files, loop):
    p = servers("plain", loop)
    with p.connect(timeout=30) as c:
        for name in ("small", "empty", "medium", "large", "small"):
            path, data = files[name]
            r = get(c, f"/path?p={q(path)}&ct=application/x-test")
            assert r.status == 200, r.status_line
            assert r.framing == "length"
            assert r.header("content-length") == str(len(data))
            assert r.header("content-type") == "application/x-test"
            assert r.body == data, name
        assert get(c, "/hello").body == b"hello"  # keep-alive goes on


def test_http10_gets_content_length(servers, files):
    p = servers("plain")
    path, data = files["medium"]
    with p.connect() as c:
        c.send(f"GET /path?p={q(path)} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
        r = c.read_response()
        assert (r.status, r.header("content-length"), r.body == data) == (200, str(len(data)), True)
        assert get(c, "/hello", version="1.0").body == b"hello"


def test_app_content_length_that_matches(servers, files):
    p = servers("plain")
    path, data = files["medium"]
    with p.connect() as c:
        r = get(c, f"/path?p={q(path)}&cl={len(data)}")
        assert r.header_all("content-length") == [str(len(data))]
        assert r.body == data


@pytest.mark.parametrize("cl_delta", [-1, 1])
def test_app_content_length_that_does_not_match_raises_before_sending(servers, files, cl_delta):
    p = servers("plain")
    path, data = files["medium"]
    with p.connect() as c:
        r = get(c, f"/path?p={q(path)}&cl={len(data) + cl_delta}&catch=1")
        assert r.status == 404
        assert r.body.startswith(b"RuntimeError: http.response.pathsend: the file's"), r.body
        assert get(c, "/hello").body == b"hello"


@pytest.mark.parametrize("loop", loop_params())
def test_head_has_the_length_and_no_body(servers, files, loop):
    p = servers("plain", loop)
    path, data = files["large"]
    with p.connect() as c:
        r = get(c, f"/path?p={q(path)}", method="HEAD")
        assert (r.status, r.header("content-length"), r.body) == (200, str(len(data)), b"")
        assert get(c, "/hello").body == b"hello"  # nothing of the file came after the head


def error_paths(files) -> list:
    d: Path = files["dir"]
    fifo = d / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    return [
        (d / "missing.bin", "FileNotFoundError"),
        (d, "IsADirectoryError"),
        (files["small"][0] / "below", "NotADirectoryError"),
        (fifo, "OSError: [Errno 22] Not a regular file"),
    ]


@pytest.mark.parametrize("loop", loop_params())
def test_errors_raise_from_send_and_the_connection_goes_on(servers, files, loop):
    p = servers("plain", loop)
    with p.connect() as c:
        for path, err in error_paths(files):
            r = get(c, f"/path?p={q(path)}&catch=1")
            assert r.status == 404, (path, r.status_line)
            assert r.body.decode().startswith(err), (path, r.body)
            assert str(path) in r.body.decode()
            assert get(c, "/hello").body == b"hello"


def test_unreadable_file_raises_permission_error(servers, files, tmp_path):
    p = servers("plain")
    if os.geteuid() == 0:
        f = Path("/proc/sys/vm/drop_caches")  # write-only, even for root
        if not f.exists():
            pytest.skip("root reads any file, and there is no /proc/sys/vm/drop_caches")
    else:
        f = tmp_path / "secret.bin"
        f.write_bytes(b"secret")
        f.chmod(0)
    with p.connect() as c:
        r = get(c, f"/path?p={q(f)}&catch=1")
        assert r.status == 404 and r.body.startswith(b"PermissionError"), r.body
        assert get(c, "/hello").body == b"hello"


def test_uncaught_error_is_a_500_with_nothing_of_the_file(servers, files):
    p = servers("plain")
    mark = p.mark()
    with p.connect() as c:
        r = get(c, f"/path?p={q(files['dir'] / 'missing.bin')}")
        assert r.status == 500
        assert b"content-type: application/octet-stream" not in r.raw.lower()
    p.wait_for("FileNotFoundError", since=mark)


def test_message_after_pathsend_is_refused(servers, files):
    p = servers("plain")
    mark = p.mark()
    path, data = files["small"]
    with p.connect() as c:
        r = get(c, f"/path-twice?p={q(path)}")
        assert r.body == data
        assert get(c, "/hello").body == b"hello"
    p.wait_for("PSEVENT second RuntimeError", since=mark)


def test_relative_path_is_from_the_working_directory(start_server, files):
    p = start_server(APP, cwd=files["dir"])
    with p.connect() as c:
        r = get(c, "/path?p=small.bin")
    assert r.body == files["small"][1]


@pytest.mark.parametrize("loop", loop_params())
def test_client_leaving_mid_file_leaves_no_descriptor(servers, files, loop):
    p = servers("plain", loop)
    path, _ = files["large"]

    def connect():
        return p.connect()

    before = fds(p, connect)
    for _ in range(3):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # the server waits for room
        s.connect((p.host, p.port))
        s.sendall(f"GET /path?p={q(path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 300_000:
            got += len(s.recv(65536))
        time.sleep(0.2)  # the file is mid-transfer, waiting for the client
        # The connection, the file (the app's and the transfer's own duplicate),
        # and the socket's duplicate sendfile writes through.
        assert fds(p, connect) == before + 4
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        wait_fds(p, connect, before)
    with p.connect() as c:
        assert get(c, "/hello").body == b"hello"


@pytest.mark.parametrize("loop", loop_params())
def test_client_leaving_mid_file_is_logged_once_unfinished(start_server, files, loop):
    """The sendfile path learns the client left from a failed write: send()
    returns (as for a body sent in chunks), and the request is logged once,
    with its status and the bytes that did leave, not as a whole file."""
    p = start_server(APP, "--access-log-format", "PSLOG %(s)s %(B)s %(U)s", loop=loop)
    path, _ = files["large"]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect((p.host, p.port))
    s.sendall(f"GET /path?p={q(path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = 0
    while got < 300_000:
        got += len(s.recv(65536))
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    m = p.wait_for(r"^PSLOG (\d+) (\d+) /path$", timeout=10)
    assert m.group(1) == "200"
    assert got <= int(m.group(2)) < LARGE
    with p.connect() as c:
        assert get(c, "/hello").body == b"hello"
    p.wait_for(r"^PSLOG 200 5 /hello$")
    assert len([line for line in p.lines() if line.startswith("PSLOG") and "/path" in line]) == 1
    assert "Traceback" not in p.output()


# ----------------------------------------------------------------------------
# zerocopysend
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", loop_params())
def test_zerocopysend_offset_count_more_body(servers, files, loop):
    p = servers("plain", loop)
    small, sdata = files["small"]
    large, ldata = files["large"]
    mark = p.mark()
    with p.connect(timeout=30) as c:
        r = get(c, f"/zc?p={q(small)}&offset=10&count=20")
        assert (r.framing, r.body) == ("length", sdata[10:30])
        r = get(c, f"/zc?p={q(small)}&offset=10&count=20&more=1")
        assert (r.framing, r.body) == ("chunked", sdata[10:30] + b"<tail>")
        r = get(c, f"/zc?p={q(large)}&offset=12345&count=5000000")
        assert (r.framing, r.header("content-length"), r.body == ldata[12345:5012345]) == ("length", "5000000", True)
        r = get(c, f"/zc?p={q(large)}&offset=3&count=5000000&more=1")
        assert (r.framing, r.body == ldata[3:5000003] + b"<tail>") == ("chunked", True)
        r = get(c, f"/zc?p={q(large)}&seek=7")  # from the file's position to its end
        assert r.body == ldata[7:]
        r = get(c, f"/zc?p={q(small)}&seek=100&count=50&cl=50")
        assert r.body == sdata[100:150]
        r = get(c, f"/zc?p={q(small)}&offset=990&count=20")  # past the end: refused before sending
        assert r.status == 500
    # Without an offset the file's position moves past what was sent.
    p.wait_for(f"PSEVENT zc-pos {len(ldata)}", since=mark)
    p.wait_for("PSEVENT zc-pos 150", since=mark)


# ----------------------------------------------------------------------------
# Starlette
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", loop_params())
def test_starlette_file_response(servers, files, loop):
    p = servers("plain", loop)
    path, data = files["large"]
    with p.connect(timeout=30) as c:
        r = get(c, f"/starlette?p={q(path)}")
        assert (r.status, r.header("content-length"), r.body == data) == (200, str(len(data)), True)
        r = get(c, f"/starlette?p={q(path)}", method="HEAD")
        assert (r.status, r.header("content-length"), r.body) == (200, str(len(data)), b"")
        assert get(c, "/hello").body == b"hello"


# ----------------------------------------------------------------------------
# TLS: the file goes through the TLS engine in bounded chunks
# ----------------------------------------------------------------------------


def test_tls_files_byte_exact(servers, files, pki):
    p = servers("tls")
    ctx = client_ctx(pki, alpn=["http/1.1"])
    with tls_connect(p.port, ctx, timeout=30) as c:
        for name in ("small", "medium", "large"):
            path, data = files[name]
            r = get(c, f"/path?p={q(path)}")
            assert (r.status, r.framing, r.header("content-length")) == (200, "length", str(len(data)))
            assert r.body == data, name
        r = get(c, f"/path?p={q(files['large'][0])}", method="HEAD")
        assert (r.header("content-length"), r.body) == (str(LARGE), b"")
        r = get(c, f"/zc?p={q(files['large'][0])}&offset=5&count=1000000&more=1")
        assert r.body == files["large"][1][5:1000005] + b"<tail>"
        r = get(c, f"/path?p={q(files['dir'] / 'missing.bin')}&catch=1")
        assert r.status == 404
        assert get(c, "/hello").body == b"hello"


@pytest.mark.skipif(UNDER_SANITIZER, reason="RSS is meaningless with ASan's quarantine")
def test_tls_large_file_memory_is_bounded(servers, files, pki):
    p = servers("tls")
    path, data = files["large"]
    ctx = client_ctx(pki, alpn=["http/1.1"])
    with tls_connect(p.port, ctx, timeout=30) as c:
        get(c, "/hello")
        base = p.rss_kib()
        with RssSampler(p.proc.pid) as rss:
            c.send(f"GET /path?p={q(path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = c.read_head()
            assert head.header("content-length") == str(len(data))
            got, c.buf = len(c.buf), b""
            while got < len(data):  # slow at first: the server must wait, not buffer
                chunk = c.sock.recv(65536)
                assert chunk, f"connection closed after {got} bytes"
                got += len(chunk)
                if got < 8 * 1024 * 1024:
                    time.sleep(0.002)
    assert rss.max_kib - base < 16 * 1024, f"RSS grew by {rss.max_kib - base} KiB for a {LARGE >> 20} MiB file"


def test_tls_client_leaving_mid_file_leaves_no_descriptor(servers, files, pki):
    p = servers("tls")
    ctx = client_ctx(pki, alpn=["http/1.1"])

    def connect():
        return tls_connect(p.port, ctx)

    before = fds(p, connect)
    c = tls_connect(p.port, ctx)
    c.send(f"GET /path?p={q(files['large'][0])} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    c.read_head()
    c.sock.close()
    wait_fds(p, connect, before)


# ----------------------------------------------------------------------------
# HTTP/2: DATA frames from file chunks, flow-controlled
# ----------------------------------------------------------------------------


def h2_clients(servers, pki):
    plain = servers("plain")
    tls = servers("tls")
    return [
        ("h2c", lambda **kw: H2Client.tcp(plain.port, **kw), plain),
        ("h2-tls", lambda **kw: H2Client.tls(tls.port, h2_tls_ctx(str(pki.ca_file)), **kw), tls),
    ]


@pytest.mark.parametrize("kind", ["h2c", "h2-tls"])
def test_h2_files_byte_exact(servers, files, pki, kind):
    _, connect, p = next(x for x in h2_clients(servers, pki) if x[0] == kind)
    with connect(timeout=60) as c:
        s = c.request("GET", "/ext")
        names = s.body.decode().split()
        assert "http.response.pathsend" in names and "http.response.zerocopysend" in names
        for name in ("small", "empty", "medium", "large"):
            path, data = files[name]
            s = c.request("GET", f"/path?p={q(path)}", timeout=60)
            assert (s.status, s.header("content-length")) == (200, str(len(data)))
            assert s.body == data, name
        s = c.request("HEAD", f"/path?p={q(files['large'][0])}")
        assert (s.status, s.header("content-length"), s.body) == (200, str(LARGE), b"")
        s = c.request("GET", f"/zc?p={q(files['large'][0])}&offset=9&count=700000&more=1")
        assert s.body == files["large"][1][9:700009] + b"<tail>"
        s = c.request("GET", f"/path?p={q(files['dir'] / 'missing.bin')}&catch=1")
        assert (s.status, s.body[:17]) == (404, b"FileNotFoundError")
        s = c.request("GET", f"/starlette?p={q(files['medium'][0])}")
        assert s.body == files["medium"][1]
        assert c.request("GET", "/hello").body == b"hello"


@pytest.mark.parametrize("kind", ["h2c", "h2-tls"])
def test_h2_reset_mid_file_leaves_no_descriptor(servers, files, pki, kind):
    _, connect, p = next(x for x in h2_clients(servers, pki) if x[0] == kind)

    def connect_h1():
        if kind == "h2c":
            return p.connect()
        return tls_connect(p.port, client_ctx(pki, alpn=["http/1.1"]))

    before = fds(p, connect_h1)
    with connect(auto_window=False) as c:  # the stream's window stays shut after 64 KiB
        # The connection's window wide open: what the reset stream took of it
        # must not keep the next response from being sent.
        c.conn.increment_flow_control_window(1 << 24)
        c._flush()
        sid = c.send_request("GET", f"/path?p={q(files['large'][0])}")
        c.pump_until(lambda: len(c.stream(sid).data) > 0, what="the first DATA")
        time.sleep(0.2)
        assert fds(p, connect_h1) == before + 2  # this connection and the file
        c.reset(sid)
        assert c.request("GET", "/hello").body == b"hello"
        wait_fds(p, connect_h1, before + 1)
    wait_fds(p, connect_h1, before)
