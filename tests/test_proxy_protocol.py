"""--proxy-protocol off|v1|v2|any: HAProxy's PROXY protocol header, first on
every connection, from peers --forwarded-allow-ips trusts.

Raw sockets send byte-exact v1 and v2 headers, then HTTP/1.1, WebSocket,
TLS and HTTP/2: the announced source is scope["client"] (and the access
log's client) for every request of the connection, the announced
destination scope["server"]; LOCAL and UNKNOWN keep the real peer. Every
refusal (an untrusted peer, no header, a malformed, truncated or late one)
closes the connection without a byte and without the app. Then real HAProxy
in front with send-proxy and send-proxy-v2."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest

from helpers import (RawConn, assert_one_line_error, clean_env, free_port, req, run_casgi, run_py,
                     wait_listening)
from h2_util import H2Client, h2_tls_ctx, start_h2
from tls_util import Pki, client_ctx
from ws_util import WsConn, ws_key, ws_accept_for

APP = "h2_app:app"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT, CPORT, DEST, DPORT = "203.0.113.9", 5555, "198.51.100.1", 443


def v1(src=CLIENT, sport=CPORT, dst=DEST, dport=DPORT) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src=CLIENT, sport=CPORT, dst=DEST, dport=DPORT, command=1, tlvs=b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    block = a.packed + b.packed + struct.pack(">HH", sport, dport) + tlvs
    fam = 0x11 if a.version == 4 else 0x21
    return SIG + bytes([0x20 | command, fam]) + struct.pack(">H", len(block)) + block


def v2_raw(ver_cmd: int, fam: int, block: bytes) -> bytes:
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(block)) + block


def start(start_server, *args, mode="any", loop="asyncio", **kw):
    return start_server(APP, "--proxy-protocol", mode, *args, loop=loop, **kw)


def scope_get(raw: RawConn, path="/scope", headers=None) -> dict:
    r = raw.request(req("GET", path, headers=headers))
    assert r.status == 200, r.status_line
    return r.json()


def refused(raw: RawConn, timeout: float = 5.0) -> None:
    """The server closes the connection without sending a byte."""
    try:
        data = raw.read_until_close(timeout)
    except OSError:
        data = b""
    assert data == b"", f"a refused connection got bytes: {data[:200]!r}"


def access_lines(s, n: int, timeout: float = 5.0) -> list:
    """The first `n` access lines of requests, once they are all logged."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [x for x in s.output().splitlines() if '"GET /' in x]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) == n, lines
            return lines
        time.sleep(0.02)


def refusals(s) -> list:
    return [line for line in s.output().splitlines() if "PROXY protocol: connection from" in line]


# ----------------------------------------------------------------------------
# Accepted headers
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("header,client,server", [
    (v1(), [CLIENT, CPORT], [DEST, DPORT]),
    (v1("2001:db8::7", 65535, "2001:db8::1", 8443), ["2001:db8::7", 65535], ["2001:db8::1", 8443]),
    (v1("::ffff:192.0.2.5", 1, "::ffff:192.0.2.6", 2), ["192.0.2.5", 1], ["192.0.2.6", 2]),
    (v2(), [CLIENT, CPORT], [DEST, DPORT]),
    (v2("2001:db8::7", 40000, "2001:db8::1", 443), ["2001:db8::7", 40000], ["2001:db8::1", 443]),
    # TLVs (ALPN, NOOP, an AWS VPC endpoint id) are skipped.
    (v2(tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x00" + b"\xea\x00\x05\x01vpce"), [CLIENT, CPORT], [DEST, DPORT]),
], ids=["v1-tcp4", "v1-tcp6", "v1-mapped", "v2-tcp4", "v2-tcp6", "v2-tlvs"])
def test_announced_client_and_server(start_server, loop, header, client, server):
    """Header and request in one write: the request is served with the
    announced addresses, and the access line names the announced client."""
    s = start(start_server, loop=loop)
    with s.connect() as raw:
        raw.send(header + req("GET", "/scope/one-write"))
        r = raw.read_response()
        assert r.status == 200, r.status_line
        scope = r.json()
    assert scope["client"] == client
    assert scope["server"] == server
    s.wait_for(r"INFO:\s+" + re.escape(f'{client[0]}:{client[1]} - "GET /scope/one-write HTTP/1.1" 200'))
    assert refusals(s) == []


def test_versions_and_modes(start_server):
    """v1 takes only the text form, v2 only the binary one; any takes both."""
    s1 = start(start_server, mode="v1")
    s2 = start(start_server, mode="v2")
    for s, good, bad in ((s1, v1(), v2()), (s2, v2(), v1())):
        with s.connect() as raw:
            raw.send(good)
            assert scope_get(raw)["client"] == [CLIENT, CPORT]
        with s.connect() as raw:
            raw.send(bad + req("GET", "/scope/wrong-version"))
            refused(raw)
        assert "wrong-version" not in s.output()


def test_header_split_across_writes(start_server, loop):
    """The header arriving a few bytes at a time, the request after it."""
    s = start(start_server, loop=loop)
    for header in (v1(), v2()):
        with s.connect() as raw:
            for i in range(0, len(header), 5):
                raw.send(header[i:i + 5])
                time.sleep(0.01)
            time.sleep(0.05)
            assert scope_get(raw)["client"] == [CLIENT, CPORT]
        with s.connect() as raw:
            # Cut inside the header, the rest together with the request.
            raw.send(header[:7])
            time.sleep(0.05)
            raw.send(header[7:] + req("GET", "/scope"))
            assert raw.read_response().json()["client"] == [CLIENT, CPORT]


def test_keep_alive_and_pipelining_keep_the_announced_client(start_server, loop):
    s = start(start_server, loop=loop)
    with s.connect() as raw:
        raw.send(v1() + req("GET", "/scope/a") + req("GET", "/scope/b"))
        for _ in range(2):
            assert raw.read_response().json()["client"] == [CLIENT, CPORT]
        for _ in range(3):
            scope = scope_get(raw)
            assert scope["client"] == [CLIENT, CPORT] and scope["server"] == [DEST, DPORT]
    lines = access_lines(s, 5)
    assert all(f"{CLIENT}:{CPORT} - " in x for x in lines), lines


@pytest.mark.parametrize("header", [
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    v2(command=0),  # LOCAL: a balancer's health check (its addresses are ignored)
    v2_raw(0x20, 0x00, b""),
    v2_raw(0x21, 0x00, b""),  # PROXY, AF_UNSPEC
    v2_raw(0x21, 0x12, bytes(12)),  # UDP over IPv4
], ids=["v1-unknown", "v1-unknown-addresses", "v2-local-addresses", "v2-local", "v2-unspec", "v2-udp"])
def test_local_and_unknown_keep_the_real_peer(start_server, header):
    s = start(start_server)
    with s.connect() as raw:
        raw.send(header)
        scope = scope_get(raw)
        assert scope["client"] == ["127.0.0.1", raw.local_port]
        assert scope["server"] == ["127.0.0.1", s.port]


def test_v2_unix_client_has_no_address(start_server):
    s = start(start_server)
    with s.connect() as raw:
        raw.send(v2_raw(0x21, 0x31, b"/run/client.sock".ljust(216, b"\0")))
        assert scope_get(raw)["client"] is None


# ----------------------------------------------------------------------------
# Refusals: closed, nothing sent, the app never called
# ----------------------------------------------------------------------------


BAD_HEADERS = {
    "none": b"",
    "lowercase": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "lf-only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "double-space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "leading-zero": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "family-mismatch": b"PROXY TCP4 ::1 ::1 1 2\r\n",
    "port-range": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "v1-too-long": b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n",
    "v2-version": v2_raw(0x11, 0x11, bytes(12)),
    "v2-command": v2_raw(0x22, 0x11, bytes(12)),
    "v2-family": v2_raw(0x21, 0x41, bytes(12)),
    "v2-short-block": v2_raw(0x21, 0x21, bytes(12)),
    "v2-bad-tlv": v2_raw(0x21, 0x11, bytes(12) + b"\x01\x00\x09h2"),
    "v2-too-long": SIG + b"\x21\x11\xff\xff" + bytes(12),
    "v2-signature": SIG[:11] + b"\x0b" + b"\x21\x11\x00\x0c" + bytes(12),
}


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_malformed_header_closes_unanswered(start_server, loop, name):
    """A pipelined request after a bad header (or none) is never served."""
    s = start(start_server, loop=loop)
    with s.connect() as raw:
        raw.send(BAD_HEADERS[name] + req("GET", f"/scope/after-{name}"))
        refused(raw)
    s.wait_for(r"INFO:\s+PROXY protocol: connection from 127\.0\.0\.1:\d+ refused: ")
    assert f"after-{name}" not in s.output()
    # The server goes on serving good connections.
    with s.connect() as raw:
        raw.send(v1())
        assert scope_get(raw)["client"] == [CLIENT, CPORT]


def test_first_refusal_at_info_then_debug(start_server):
    s = start(start_server, "--log-level", "debug")
    for _ in range(3):
        with s.connect() as raw:
            raw.send(b"GET / HTTP/1.1\r\n\r\n")
            refused(raw)
    time.sleep(0.2)
    lines = refusals(s)
    assert len(lines) == 3, lines
    assert lines[0].startswith("INFO:") and "no PROXY protocol header" in lines[0]
    assert "further refusals are logged at debug level" in lines[0]
    assert all(x.startswith("DEBUG:") for x in lines[1:]), lines


@pytest.mark.parametrize("sent", [b"", b"PROXY TCP4 203.0.113", v2()[:20]], ids=["nothing", "v1-part", "v2-part"])
def test_header_not_complete_in_time_closes(start_server, loop, sent):
    s = start(start_server, "--timeout-request-header", "0.5", loop=loop)
    with s.connect() as raw:
        t0 = time.monotonic()
        raw.send(sent)
        refused(raw, timeout=5)
        took = time.monotonic() - t0
    assert 0.4 < took < 4, took


def test_untrusted_peer_is_closed(start_server, loop):
    """A peer outside --forwarded-allow-ips is closed at once, header or not."""
    s = start(start_server, "--forwarded-allow-ips", "10.0.0.0/8", loop=loop)
    with s.connect() as raw:
        refused(raw, timeout=2)
    with s.connect() as raw:
        try:
            raw.send(v1() + req("GET", "/scope/untrusted"))
        except OSError:
            pass
        refused(raw)
    assert "untrusted" not in s.output()
    assert any("not in --forwarded-allow-ips" in x for x in refusals(s)), s.tail()


def test_trust_list_applies_with_no_proxy_headers(start_server):
    """--no-proxy-headers: the list still says who may send the header, and
    X-Forwarded-For is not read even from a trusted announced source."""
    s = start(start_server, "--no-proxy-headers", "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8")
    with s.connect() as raw:
        raw.send(v1("10.1.2.3", 1000))
        scope = scope_get(raw, headers=[("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "https")])
        assert scope["client"] == ["10.1.2.3", 1000] and scope["scheme"] == "http"
    s2 = start(start_server, "--no-proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8")
    with s2.connect() as raw:
        refused(raw, timeout=2)


def test_unix_socket_peers_need_unix_in_the_list(start_server, tmp_path):
    path = str(tmp_path / "pp.sock")
    s = start(start_server, "--uds", path, "--forwarded-allow-ips", "unix:", port=None)
    with RawConn.unix(path) as raw:
        raw.send(v2())
        assert scope_get(raw)["client"] == [CLIENT, CPORT]
    path2 = str(tmp_path / "pp2.sock")
    start(start_server, "--uds", path2, port=None)  # the default list has no "unix:"
    with RawConn.unix(path2) as raw:
        raw.send(v2() + req("GET", "/scope"))
        refused(raw)


# ----------------------------------------------------------------------------
# X-Forwarded-For behind the PROXY protocol
# ----------------------------------------------------------------------------


def test_forwarded_headers_are_checked_against_the_announced_source(start_server, loop):
    """The announced source is the peer for --forwarded-allow-ips: a client
    behind an L4 balancer cannot forge X-Forwarded-For (the balancer being
    trusted to send the header makes its clients no more trusted), while an
    L7 proxy behind the balancer whose address is trusted is believed."""
    s = start(start_server, "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8", loop=loop)
    forged = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")]
    with s.connect() as raw:
        raw.send(v1())
        scope = scope_get(raw, headers=forged)
        assert scope["client"] == [CLIENT, CPORT] and scope["scheme"] == "http"
    with s.connect() as raw:
        raw.send(v2("10.1.2.3", 4000))
        scope = scope_get(raw, headers=[("X-Forwarded-For", "198.51.100.7, 10.9.9.9"),
                                        ("X-Forwarded-Proto", "https")])
        assert scope["client"] == ["198.51.100.7", 0] and scope["scheme"] == "https"
    s.wait_for(r'INFO:\s+198\.51\.100\.7:0 - "GET /scope HTTP/1\.1" 200')
    # LOCAL: the real peer (127.0.0.1, trusted) stays the one checked.
    with s.connect() as raw:
        raw.send(v2(command=0))
        assert scope_get(raw, headers=forged)["client"] == ["6.6.6.6", 0]


# ----------------------------------------------------------------------------
# WebSocket, TLS, HTTP/2
# ----------------------------------------------------------------------------


def ws_after_header(s, header: bytes) -> WsConn:
    raw = s.connect()
    key = ws_key()
    raw.send(header + (f"GET /ws/scope HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    resp = raw.read_head()
    assert resp.status == 101 and resp.header("sec-websocket-accept") == ws_accept_for(key), resp.raw
    return WsConn(raw, resp)


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_websocket(start_server, loop, header):
    s = start(start_server, loop=loop)
    with ws_after_header(s, header) as ws:
        _, payload = ws.read_message()
        scope = json.loads(payload)
        assert scope["type"] == "websocket"
        assert scope["client"] == [CLIENT, CPORT] and scope["server"] == [DEST, DPORT]
        ws.send_text("hi")
        assert ws.read_message()[1] == b"hi"
    s.wait_for(rf"{CLIENT}:{CPORT} - \"WebSocket /ws/scope\"")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_tls_header_before_the_handshake(start_server, pki, loop):
    s = start_h2(start_server, "--proxy-protocol", "any", loop=loop, tls=pki)
    for header in (v1(), v2()):
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        raw.sendall(header)
        tls = client_ctx(pki, alpn=["http/1.1"]).wrap_socket(raw, server_hostname="localhost")
        with RawConn(tls) as conn:
            scope = scope_get(conn)
            assert scope["client"] == [CLIENT, CPORT] and scope["scheme"] == "https"
            assert "tls" in scope["extensions"]
    # Without the header, the ClientHello is refused: no alert, nothing.
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    with pytest.raises((ssl.SSLError, OSError)):
        client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
    raw.close()
    s.wait_for("refused: no PROXY protocol header")


def test_tls_header_and_client_hello_in_one_write(start_server, pki):
    """The header and the ClientHello in one segment, the request right
    after the handshake: the bytes after the header go to the TLS engine."""
    s = start_h2(start_server, "--proxy-protocol", "v2", tls=pki)
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki, alpn=["http/1.1"]).wrap_bio(inc, out, server_hostname="localhost")
    first = True
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            data = out.read()
            raw.sendall((v2() if first else b"") + data)
            first = False
            got = raw.recv(65536)
            assert got, "closed during the handshake"
            inc.write(got)
    obj.write(req("GET", "/scope"))
    raw.sendall(out.read())
    body = b""
    while b"}" not in body:
        got = raw.recv(65536)
        assert got
        inc.write(got)
        try:
            body += obj.read(65536)
        except ssl.SSLWantReadError:
            pass
    scope = json.loads(body.split(b"\r\n\r\n", 1)[1])
    assert scope["client"] == [CLIENT, CPORT] and scope["scheme"] == "https"
    raw.close()


def test_http2_cleartext(start_server, loop):
    s = start(start_server, loop=loop)
    for header in (v1(), v2()):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sock.sendall(header)
        with H2Client(sock) as c:
            for _ in range(2):  # every stream of the connection
                st = c.request("GET", "/scope")
                assert st.status == 200
                scope = json.loads(bytes(st.data))
                assert scope["http_version"] == "2"
                assert scope["client"] == [CLIENT, CPORT] and scope["server"] == [DEST, DPORT]
    s.wait_for(rf'{CLIENT}:{CPORT} - "GET /scope HTTP/2" 200')


def test_http2_over_tls(start_server, pki):
    s = start_h2(start_server, "--proxy-protocol", "v1", tls=pki)
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    raw.sendall(v1("2001:db8::9", 7, "2001:db8::1", 443))
    tls = h2_tls_ctx(str(pki.ca_file)).wrap_socket(raw, server_hostname="localhost")
    assert tls.selected_alpn_protocol() == "h2"
    with H2Client(tls) as c:
        st = c.request("GET", "/scope")
        scope = json.loads(bytes(st.data))
        assert scope["client"] == ["2001:db8::9", 7] and scope["scheme"] == "https"


# ----------------------------------------------------------------------------
# Options: environment, usage errors, gunicorn
# ----------------------------------------------------------------------------


def test_environment_variable(start_server):
    s = start_server(APP, env=clean_env({"CASGI_PROXY_PROTOCOL": "v2"}))
    with s.connect() as raw:
        raw.send(v2())
        assert scope_get(raw)["client"] == [CLIENT, CPORT]
    with s.connect() as raw:
        raw.send(v1() + req("GET", "/scope"))
        refused(raw)


def test_workers(start_server):
    """--workers: each worker gets the option from the supervisor."""
    s = start(start_server, "--workers", "2", mode="v1")
    for _ in range(4):
        with s.connect() as raw:
            raw.send(v1())
            assert scope_get(raw)["client"] == [CLIENT, CPORT]
        with s.connect() as raw:
            raw.send(v2() + req("GET", "/scope"))
            refused(raw)


def test_bad_value_is_a_usage_error():
    r = run_casgi("h2_app:app", "--proxy-protocol", "v3")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "--proxy-protocol", "v3")


@pytest.mark.parametrize("value,want", [
    (False, "off"), (None, "off"), (True, "any"), ("off", "off"), ("auto", "any"), ("v1", "v1"), ("v2", "v2"),
])
def test_gunicorn_proxy_protocol_mapping(value, want):
    """gunicorn's proxy_protocol (a boolean before 24.1, which spoke v1 only;
    off/v1/v2/auto since) and the lists: with the PROXY protocol on,
    proxy_allow_ips and "unix:" (gunicorn lets Unix socket peers send it)
    join forwarded_allow_ips, casgi's one list."""
    pytest.importorskip("gunicorn")
    code = f"""
import json
from types import SimpleNamespace
from casgi.workers import CasgiWorker
cfg = SimpleNamespace(proxy_protocol={value!r}, forwarded_allow_ips=["127.0.0.1", "::1"],
                      proxy_allow_ips=["127.0.0.1", "10.0.0.0/8"])
print(json.dumps(CasgiWorker._proxy_options(SimpleNamespace(cfg=cfg))))
"""
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    trusted = "127.0.0.1,::1" if want == "off" else "127.0.0.1,::1,10.0.0.0/8,unix:"
    assert json.loads(r.stdout) == {"proxy_protocol": want, "forwarded_allow_ips": trusted}


def test_gunicorn_serves_the_proxy_protocol(sups):
    """Real gunicorn with --proxy-protocol v2: the worker requires the header."""
    pytest.importorskip("gunicorn")
    import gunicorn.config

    if not any(s.name == "proxy_protocol" for s in gunicorn.config.KNOWN_SETTINGS):
        pytest.skip("this gunicorn has no proxy_protocol setting")
    from supervisor_util import GUNICORN_BOOT_RE

    sups.copy_app("h2_app.py", "main.py")
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-k", "casgi.workers.CasgiWorker", "main:app",
           "-b", f"127.0.0.1:{port}", "-w", "1", "--graceful-timeout", "2",
           "--proxy-protocol", "v2", "--access-logfile", "-"]
    p = sups.start([], cmd=cmd, wait=False, patterns=(GUNICORN_BOOT_RE,))
    p.wait_for(GUNICORN_BOOT_RE, timeout=20)
    deadline = time.monotonic() + 15
    while True:
        try:
            with RawConn.tcp("127.0.0.1", port) as raw:
                raw.send(v2() + req("GET", "/scope"))
                scope = raw.read_response().json()
                break
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert scope["client"] == [CLIENT, CPORT]
    with RawConn.tcp("127.0.0.1", port) as raw:
        raw.send(req("GET", "/scope/no-header"))
        refused(raw)
    assert "no-header" not in p.output()
    p.finish()


# ----------------------------------------------------------------------------
# HAProxy in front
# ----------------------------------------------------------------------------


def find_haproxy():
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture
def haproxy_to(tmp_path):
    """Starts HAProxy (TCP mode) forwarding a free port to casgi's with the
    given server options; yields a function returning the frontend port."""
    exe = find_haproxy()
    if not exe:
        pytest.skip("haproxy is not installed (make test-tools installs it)")
    procs = []

    def run(backend_port: int, server_opts: str) -> int:
        port = free_port()
        cfg = tmp_path / f"haproxy-{port}.cfg"
        cfg.write_text(f"""
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server casgi 127.0.0.1:{backend_port} {server_opts} check inter 200ms check-send-proxy
""")
        p = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(p)
        wait_listening(port, p, "haproxy",
                       details=lambda: p.stdout.read().decode(errors="replace") if p.poll() is not None else "")
        return port

    yield run
    for p in procs:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front(start_server, haproxy_to, loop, send):
    """HTTP and WebSocket through HAProxy: the client casgi reports is this
    test's own socket (its port, not HAProxy's outgoing one), the server
    HAProxy's frontend; HAProxy's health checks (PROXY header, then close;
    LOCAL in v2) are no refusals."""
    s = start(start_server, mode="v1" if send == "send-proxy" else "v2", loop=loop)
    front = haproxy_to(s.port, send)
    for _ in range(2):
        with RawConn.tcp("127.0.0.1", front) as raw:
            for _ in range(2):
                scope = scope_get(raw)
                assert scope["client"] == ["127.0.0.1", raw.local_port]
                assert scope["server"] == ["127.0.0.1", front]
    raw = RawConn.tcp("127.0.0.1", front)
    key = ws_key()
    raw.send((f"GET /ws/scope HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    resp = raw.read_head()
    assert resp.status == 101, resp.raw
    with WsConn(raw, resp) as ws:
        scope = json.loads(ws.read_message()[1])
        assert scope["client"] == ["127.0.0.1", raw.local_port] and scope["server"] == ["127.0.0.1", front]
        ws.send_text("through haproxy")
        assert ws.read_message()[1] == b"through haproxy"
    time.sleep(0.6)  # a few health checks
    assert refusals(s) == [], refusals(s)
