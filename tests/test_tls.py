"""TLS end to end: real casgi processes with --ssl-* options, real TLS clients
(Python's ssl module, `openssl s_client`, curl, httpx, websockets).

Certificates come from tls_util.Pki (trustme): a root CA, an intermediate, a
server chain for localhost (leaf, intermediate) and client certificates. The
clients trust the root only, so every successful verification also shows that
the server sent its intermediate.

Servers shared by this module's tests (one per event loop, started on first
use and checked after every test: alive, no crash, nothing logged at WARNING
or above):
  main      --ssl-certfile/--ssl-keyfile, --timeout-handshake 1, --log-level
            debug (so every handshake failure has a line to wait for)
  optional  plus --ssl-ca-certs root --ssl-cert-reqs 1
  required  plus --ssl-ca-certs root --ssl-cert-reqs 2
  plain     no TLS (the tls extension must be absent)
Encrypted keys, startup errors, rotation, shutdown, --workers, --reload, the
gunicorn worker, --uds and --fd use processes of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from helpers import (APPS_DIR, BackgroundLoop, CasgiProcess, RawConn, assert_rss_growth_below, assert_server_healthy,
                     casgi_args, clean_env, free_port,
                     loop_params, read_rss_kib, req)
from supervisor_util import GUNICORN_BOOT_RE, RELOAD_OPTS, WORKER_OPTS
from tls_util import (
    HAVE_CURL,
    HAVE_OPENSSL,
    TLS13_SUITES,
    BioSock,
    Pki,
    client_ctx,
    client_hello,
    openssl_rsa_key_cert,
    pem_to_der,
    run_openssl,
    subject_rfc4514,
    tls_connect,
    tls_where,
    tool_env,
)

APP = "tls_app:app"
MIB = 1 << 20
HANDSHAKE_TIMEOUT = 1.0

needs_openssl = pytest.mark.skipif(not HAVE_OPENSSL, reason="the openssl command is not installed")
needs_curl = pytest.mark.skipif(not HAVE_CURL, reason="curl is not installed")

# Log lines of the TLS handshake failures (conn.c): the first of each cause
# at INFO, later ones at DEBUG.
FAIL_LINE_RE = re.compile(r"^(?P<level>[A-Z]+):\s+TLS handshake failed: (?P<cause>.+?) \((?P<client>[^ :]+:\d+)")
BAD_LEVEL_RE = re.compile(r"^(WARNING|ERROR|CRITICAL):|Traceback")


# ----------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki, *extra: str) -> list:
    return ["--ssl-certfile", str(pki.server.chain), "--ssl-keyfile", str(pki.server.key), *extra]


def start_tls(args: list, loop: str = "asyncio", env: Optional[dict] = None, cwd: Optional[Path] = None,
              port: Optional[str] = "0", pass_fds=(), https: bool = True) -> CasgiProcess:
    p = CasgiProcess(casgi_args(APP, *args, loop=loop, port=port), env=env or clean_env(), cwd=cwd,
                     pass_fds=pass_fds)
    try:
        p.wait_running()
        if https:
            tls_where(p)
    except BaseException:
        p.kill()
        raise
    return p


class Shared:
    """The module's shared servers, keyed by (kind, loop)."""

    def __init__(self, pki: Pki, tmp: Path):
        self.pki = pki
        self.tmp = tmp
        self.procs: dict = {}

    def get(self, kind: str, loop: str) -> CasgiProcess:
        p = self.procs.get((kind, loop))
        if p is not None and p.alive():
            return p
        ca = ["--ssl-ca-certs", str(self.pki.ca_file)]
        args = {
            "main": tls_args(self.pki, "--timeout-handshake", str(HANDSHAKE_TIMEOUT), "--log-level", "debug"),
            "optional": tls_args(self.pki, *ca, "--ssl-cert-reqs", "1", "--log-level", "debug"),
            "required": tls_args(self.pki, *ca, "--ssl-cert-reqs", "2", "--log-level", "debug"),
            "plain": [],
        }[kind]
        p = start_tls(args, loop=loop, cwd=self.tmp, https=kind != "plain")
        self.procs[(kind, loop)] = p
        return p

    def close(self) -> None:
        for p in self.procs.values():
            p.kill()


@pytest.fixture(scope="module")
def shared(pki, tmp_path_factory):
    s = Shared(pki, tmp_path_factory.mktemp("tls-shared"))
    yield s
    s.close()


def _use(shared: Shared, kind: str, loop: str):
    p = shared.get(kind, loop)
    mark = p.mark()
    yield p
    assert_server_healthy(p, mark)
    bad = [line for line in p.lines(mark) if BAD_LEVEL_RE.search(line)]
    assert not bad, "the server logged at WARNING or above:\n" + "".join(bad)


@pytest.fixture(params=loop_params())
def main(request, shared):
    yield from _use(shared, "main", request.param)


@pytest.fixture(params=loop_params())
def optional(request, shared):
    yield from _use(shared, "optional", request.param)


@pytest.fixture(params=loop_params())
def required(request, shared):
    yield from _use(shared, "required", request.param)


@pytest.fixture
def plain(shared):
    yield from _use(shared, "plain", "asyncio")


@pytest.fixture
def procs():
    """Dedicated servers of one test, killed at its end (crashes fail it)."""
    started: list = []
    yield started
    crashes = [c for c in (p.crash_report() for p in started) if c]
    for p in started:
        p.kill()
    if crashes:
        pytest.fail("\n\n".join(crashes))


# ----------------------------------------------------------------------------
# Small clients
# ----------------------------------------------------------------------------


def get(c: RawConn, path: str = "/", **kw):
    r = c.request(req("GET", path, **kw))
    assert r.status == 200, r.status_line
    return r


def tls_ext(c: RawConn) -> dict:
    scope = get(c, "/scope").json()
    assert scope["scheme"] == "https"
    return scope["extensions"]["tls"]


def suite_id(ctx: ssl.SSLContext, name: str) -> int:
    """The IANA id of a cipher suite by its OpenSSL name, as the client's
    OpenSSL knows it (get_ciphers' id is 0x0300XXXX)."""
    ids = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}
    return ids[name]


def read_big(c: RawConn):
    """A response with a large content-length body, read into a bytearray
    (RawConn's bytes concatenation would copy quadratically)."""
    resp = c.read_head()
    n = int(resp.header("content-length"))
    body = bytearray(c.buf[:n])
    c.buf = c.buf[n:]
    while len(body) < n:
        chunk = c.sock.recv(min(n - len(body), 1 << 20))
        assert chunk, f"connection closed after {len(body)} of {n} body bytes"
        body += chunk
    assert len(body) == n, f"{len(body) - n} bytes after the body"
    resp.body = bytes(body)
    return resp


def wait_closed(sock: socket.socket, timeout: float) -> tuple:
    """Reads until EOF or reset; returns (bytes received, seconds it took)."""
    t0 = time.monotonic()
    got = b""
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s (received {got[:100]!r})")
        if not data:
            break
        got += data
    return got, time.monotonic() - t0


def failure_lines(p: CasgiProcess, since: int = 0) -> list:
    """[(level, cause, client)] of the handshake failure lines."""
    out = []
    for line in p.lines(since):
        m = FAIL_LINE_RE.search(line)
        if m:
            out.append((m.group("level"), m.group("cause"), m.group("client")))
    return out


def wait_failure(p: CasgiProcess, port: int, since: int, timeout: float = 5.0) -> str:
    """Waits for the handshake failure line of the client at local `port`; returns its cause."""
    m = p.wait_for(re.compile(r"TLS handshake failed: (.+?) \(127\.0\.0\.1:" + str(port) + r"[:)]"),
                   since=since, timeout=timeout)
    return m.group(1)


def assert_info_once_per_cause(p: CasgiProcess) -> None:
    counts: dict = {}
    for level, cause, _ in failure_lines(p):
        assert level in ("INFO", "DEBUG"), f"handshake failure logged at {level}: {cause}"
        if level == "INFO":
            counts[cause] = counts.get(cause, 0) + 1
    again = {c: n for c, n in counts.items() if n > 1}
    assert not again, f"causes logged at INFO more than once: {again}"


# ----------------------------------------------------------------------------
# Handshake, ALPN, interop with other clients
# ----------------------------------------------------------------------------


def test_running_line_and_alpn(main, pki):
    """ALPN: HTTP/2 when the client offers it (the server's preference), else
    HTTP/1.1."""
    assert main.where.startswith("https://127.0.0.1:")
    with tls_connect(main.port, client_ctx(pki, alpn=["http/1.1", "h2"])) as c:
        assert c.sock.selected_alpn_protocol() == "h2"
    ctx = client_ctx(pki, alpn=["http/1.1"])
    with tls_connect(main.port, ctx) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.sock.version() == "TLSv1.3"
        assert c.sock.getpeercert(binary_form=True) == pki.server.leaf_der
        r = get(c, "/")
        assert r.body == b"hello"


def test_no_http2_alpn_offers_http11_only(pki, procs, tmp_path):
    """--no-http2: a client offering h2 and http/1.1 gets HTTP/1.1; one
    offering only h2 gets no ALPN at all (not a no_application_protocol
    alert, though RFC 7301 3.2 says a server supporting none of the offered
    protocols SHALL send one, as uvicorn does not), and is served HTTP/1.1
    if it speaks it anyway."""
    p = start_tls(tls_args(pki, "--no-http2"), cwd=tmp_path)
    procs.append(p)
    with tls_connect(p.port, client_ctx(pki, alpn=["h2", "http/1.1"])) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert get(c, "/").body == b"hello"
    with tls_connect(p.port, client_ctx(pki, alpn=["h2"])) as c:
        assert c.sock.selected_alpn_protocol() is None
        assert get(c, "/").body == b"hello"


def test_no_sni(main, pki):
    """A client connecting by address sends no server name; it gets the
    certificate, which names 127.0.0.1 too."""
    raw = socket.create_connection(("127.0.0.1", main.port), timeout=5)
    with RawConn(client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")) as c:
        assert c.sock.getpeercert(binary_form=True) == pki.server.leaf_der
        assert get(c, "/").body == b"hello"


def test_alpn_h2_only_and_no_alpn(main, pki):
    """A client offering only "h2" gets it; one offering no ALPN at all is
    served HTTP/1.1."""
    with tls_connect(main.port, client_ctx(pki, alpn=["h2"])) as c:
        assert c.sock.selected_alpn_protocol() == "h2"
    with tls_connect(main.port, client_ctx(pki)) as c:
        assert c.sock.selected_alpn_protocol() is None
        assert get(c, "/").body == b"hello"


@needs_openssl
def test_openssl_s_client(main, pki):
    r = run_openssl("s_client", "-connect", f"127.0.0.1:{main.port}", "-servername", "localhost",
                    "-CAfile", str(pki.ca_file), "-verify_return_error", "-alpn", "http/1.1", "-ign_eof",
                    stdin=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, out + r.stderr.decode("latin-1")
    assert "Verify return code: 0 (ok)" in out, out
    assert "ALPN protocol: http/1.1" in out, out
    assert re.search(r"New, TLSv1\.3, Cipher is TLS_", out), out
    # The server sends its chain: leaf (depth 0) and intermediate (depth 1).
    assert re.search(r"^ 1 s:.*Testing CA", out, re.M), out
    assert "HTTP/1.1 200 OK\r\n" in out, out
    assert "\r\n\r\nhello" in out, out


@needs_openssl
@pytest.mark.parametrize("flags,suite,version", [
    (["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"], 0x1303, 0x0304),
    (["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"], 0x1301, 0x0304),
    (["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"], 0xCCA9, 0x0303),
], ids=["tls13-chacha20", "tls13-aes128", "tls12-chacha20"])
def test_tls_extension_via_openssl(main, pki, flags, suite, version):
    """The suite the openssl client was limited to is the scope's cipher_suite."""
    r = run_openssl("s_client", "-connect", f"127.0.0.1:{main.port}", "-servername", "localhost",
                    "-CAfile", str(pki.ca_file), "-verify_return_error", "-ign_eof", "-quiet", *flags,
                    stdin=b"GET /scope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    out = r.stdout.decode("latin-1")
    assert r.returncode == 0, out + r.stderr.decode("latin-1")
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK"), out
    tls = json.loads(body)["extensions"]["tls"]
    assert (tls["cipher_suite"], tls["tls_version"]) == (suite, version), tls


@needs_curl
@pytest.mark.parametrize("flag,version", [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl(main, pki, tmp_path, flag, version):
    """300 KB echoed byte-exact over HTTP/1.1 and over HTTP/2 (ALPN)."""
    data = random.Random(3).randbytes(300_000)
    (tmp_path / "in.bin").write_bytes(data)
    base = ["curl", "-sS", "--max-time", "20", "--resolve", f"localhost:{main.port}:127.0.0.1"]
    url = f"https://localhost:{main.port}/echo"
    r = subprocess.run(base + [flag, "--cacert", str(pki.ca_file), "-o", str(tmp_path / "out.bin"), "-w",
                               "%{http_code} %{http_version} %{ssl_verify_result}", "--data-binary",
                               f"@{tmp_path / 'in.bin'}", url], capture_output=True, timeout=30, env=tool_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == f"200 {version} 0"
    assert (tmp_path / "out.bin").read_bytes() == data
    # Without the CA the certificate does not verify (curl's exit status 60).
    r = subprocess.run(base + [url.replace("/echo", "/")], capture_output=True, timeout=30, env=tool_env())
    assert r.returncode == 60, (r.returncode, r.stderr)


def test_httpx(main, pki):
    with httpx.Client(verify=client_ctx(pki), timeout=10) as client:
        for _ in range(3):  # one pooled connection, keep-alive
            r = client.get(f"https://localhost:{main.port}/scope")
            assert r.status_code == 200
            assert r.http_version == "HTTP/1.1"
            scope = r.json()
            assert scope["scheme"] == "https"
            assert scope["extensions"]["tls"]["server_cert"] == pki.server.leaf_pem
        r = client.post(f"https://localhost:{main.port}/echo", content=b"x" * 100_000)
        assert r.content == b"x" * 100_000
    with httpx.Client(timeout=10) as client:  # the system's CAs: our CA is unknown
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(f"https://localhost:{main.port}/")


# ----------------------------------------------------------------------------
# The tls extension
# ----------------------------------------------------------------------------


TLS_KEYS = {"server_cert", "client_cert_chain", "client_cert_name", "client_cert_error", "tls_version",
            "cipher_suite"}


def test_tls_extension_tls13(main, pki):
    ctx = client_ctx(pki)
    with tls_connect(main.port, ctx) as c:
        name, proto, _ = c.sock.cipher()
        assert proto == "TLSv1.3"
        scope = get(c, "/scope").json()
        assert scope["scheme"] == "https"
        assert list(scope["extensions"]) == ["tls", "http.response.pathsend",
                                             "http.response.zerocopysend"]
        tls = scope["extensions"]["tls"]
        assert set(tls) == TLS_KEYS
        assert tls == {
            "server_cert": pki.server.leaf_pem,
            "client_cert_chain": [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": TLS13_SUITES[name],
        }
        assert tls["cipher_suite"] == suite_id(ctx, name)
        # The same extension in every request of the connection.
        assert get(c, "/scope").json()["extensions"]["tls"] == tls
        # Each request gets its own copies: what an app changes stays in its scope.
        changed = get(c, "/mutate-scope").json()["extensions"]
        assert changed["tls"]["tls_version"] == 0 and "added" in changed
        assert get(c, "/scope").json()["extensions"] == {
            "tls": tls, "http.response.pathsend": {}, "http.response.zerocopysend": {}}


@pytest.mark.parametrize("cipher,suite", [
    ("ECDHE-ECDSA-AES256-GCM-SHA384", 0xC02C),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02B),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA9),
])
def test_tls_extension_tls12(main, pki, cipher, suite):
    ctx = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    with tls_connect(main.port, ctx) as c:
        assert c.sock.version() == "TLSv1.2"
        assert c.sock.cipher()[0] == cipher
        tls = tls_ext(c)
        assert tls["tls_version"] == 0x0303
        assert tls["cipher_suite"] == suite == suite_id(ctx, cipher)
        assert tls["server_cert"] == pki.server.leaf_pem


def test_no_tls_extension_on_cleartext(plain):
    assert plain.where.startswith("http://")
    with RawConn.tcp("127.0.0.1", plain.port) as c:
        scope = get(c, "/scope").json()
    assert scope["scheme"] == "http"
    assert "tls" not in (scope["extensions"] or {})


# ----------------------------------------------------------------------------
# Client certificates
# ----------------------------------------------------------------------------


def test_mtls_required_without_cert(required, pki):
    # TLS 1.3: the client finishes its side of the handshake before the server
    # has seen its (empty) Certificate; the refusal is the alert read next.
    mark = required.mark()
    c = tls_connect(required.port, client_ctx(pki))
    port = c.local_port
    with c, pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        c.sock.recv(100)
    assert wait_failure(required, port, mark) == "client certificate required"
    # TLS 1.2: the handshake itself fails.
    raw = socket.create_connection(("127.0.0.1", required.port), timeout=5)
    port = raw.getsockname()[1]
    with raw, pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2).wrap_socket(raw, server_hostname="localhost")
    assert wait_failure(required, port, mark) == "client certificate required"


def expected_chain(cert) -> list:
    return [pem_to_der(p) for p in cert.chain_pems]


def test_mtls_required_with_cert(required, pki):
    with tls_connect(required.port, client_ctx(pki, cert=pki.client)) as c:
        tls = tls_ext(c)
    assert len(pki.client.chain_pems) == 2  # leaf, intermediate
    assert tls["client_cert_chain"] == pki.client.chain_pems  # leaf first, exact PEM text
    assert [pem_to_der(p) for p in tls["client_cert_chain"]] == expected_chain(pki.client)
    assert tls["client_cert_name"] == subject_rfc4514(pki.client.leaf_pem.encode())
    assert tls["client_cert_name"].startswith("CN=alice,") and "O=Example Org" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304


@pytest.mark.parametrize("version", [None, ssl.TLSVersion.TLSv1_2], ids=["tls13", "tls12"])
def test_mtls_resumed_session_keeps_identity(required, pki, version):
    """A resumed session carries no certificate messages: the client
    certificate, its name and its verification result come from the session.
    (Its chain does not: OpenSSL keeps only the peer's own certificate in a
    session, so a resumed connection reports the chain as that one alone.)"""
    ctx = client_ctx(pki, cert=pki.client, max_version=version)
    with tls_connect(required.port, ctx) as c:
        first = tls_ext(c)
        session = c.sock.session
    with tls_connect(required.port, ctx, session=session) as c:
        assert c.sock.session_reused
        again = tls_ext(c)
    assert first["client_cert_chain"] == pki.client.chain_pems
    assert again["client_cert_chain"][:1] == [pki.client.leaf_pem]
    for key in ("client_cert_name", "client_cert_error", "tls_version", "cipher_suite", "server_cert"):
        assert again[key] == first[key], key


def test_mtls_required_unknown_ca_refused(required, pki):
    mark = required.mark()
    c = tls_connect(required.port, client_ctx(pki, cert=pki.stranger))
    port = c.local_port
    with c, pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
        c.sock.recv(100)
    assert wait_failure(required, port, mark) == "bad certificate"


def test_mtls_optional(optional, pki):
    # Without a certificate: served, nothing about a client certificate.
    with tls_connect(optional.port, client_ctx(pki)) as c:
        tls = tls_ext(c)
    assert (tls["client_cert_chain"], tls["client_cert_name"], tls["client_cert_error"]) == ([], None, None)
    # A good certificate: verified.
    with tls_connect(optional.port, client_ctx(pki, cert=pki.client)) as c:
        tls = tls_ext(c)
    assert tls["client_cert_chain"] == pki.client.chain_pems
    assert tls["client_cert_name"] == subject_rfc4514(pki.client.leaf_pem.encode())
    assert tls["client_cert_error"] is None
    # A certificate from an unknown CA: served, and the app is told why it did not verify.
    with tls_connect(optional.port, client_ctx(pki, cert=pki.stranger)) as c:
        tls = tls_ext(c)
        assert get(c, "/").body == b"hello"
    assert tls["client_cert_chain"] == pki.stranger.chain_pems
    assert tls["client_cert_name"] == subject_rfc4514(pki.stranger.leaf_pem.encode())
    assert tls["client_cert_name"].startswith("CN=mallory,")
    # OpenSSL's text for an unknown issuer of the only certificate sent.
    assert tls["client_cert_error"] == "unable to verify the first certificate"


# ----------------------------------------------------------------------------
# Protocol versions
# ----------------------------------------------------------------------------


def test_tls10_tls11_refused(main, pki):
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        mark = main.mark()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = client_ctx(pki)
            ctx.minimum_version = version
            ctx.maximum_version = version
        # Security level 0 lets this OpenSSL offer the old versions at all;
        # the alert it gets back is the server's refusal.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        raw = socket.create_connection(("127.0.0.1", main.port), timeout=5)
        port = raw.getsockname()[1]
        with raw, pytest.raises(ssl.SSLError) as err:
            ctx.wrap_socket(raw, server_hostname="localhost")
        if "NO_PROTOCOLS_AVAILABLE" in str(err.value):
            pytest.skip(f"this OpenSSL cannot offer {version.name} at all ({err.value})")
        assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(err.value), err.value  # the server's alert
        assert wait_failure(main, port, mark) == "unsupported protocol version"
    if HAVE_OPENSSL:
        for flag in ("-tls1", "-tls1_1"):
            mark = main.mark()
            r = run_openssl("s_client", "-connect", f"127.0.0.1:{main.port}", flag, "-cipher",
                            "DEFAULT:@SECLEVEL=0", stdin=b"")
            out = (r.stdout + r.stderr).decode("latin-1")
            if "no protocols available" in out:
                pytest.skip(f"this openssl command cannot offer {flag}: {out.strip()[-200:]}")
            assert r.returncode != 0, out
            assert "alert protocol version" in out, out
            assert "Cipher is (NONE)" in out, out
            main.wait_for(r"TLS handshake failed: unsupported protocol version", since=mark)


class SClient:
    """An interactive `openssl s_client`: stdin lines are its commands ("k":
    TLS 1.3 KeyUpdate, "K": KeyUpdate asking the peer to update too, "R":
    renegotiate) or data; stdout is collected by a thread."""

    def __init__(self, port: int, pki: Pki, *flags: str):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-CAfile",
             str(pki.ca_file), *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=tool_env())
        self.out = b""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            with self._cond:
                self.out += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, needle: bytes, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.out.count(needle) < count:
                left = deadline - time.monotonic()
                assert left > 0 and (self.proc.poll() is None or self._thread.is_alive()), \
                    f"{needle!r} x{count} not in s_client's output:\n{self.out.decode('latin-1')[-2000:]}"
                self._cond.wait(min(left, 0.1))

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._thread.join(5)
        return self.proc.returncode


@needs_openssl
def test_key_update_and_renegotiation(main, pki):
    mark = main.mark()
    # TLS 1.3 KeyUpdate from the client, with and without update_requested:
    # the connection goes on under the new keys.
    s = SClient(main.port, pki, "-tls1_3")
    try:
        s.wait_for(b"Verify return code: 0 (ok)")
        for n, cmd in enumerate((b"k\n", b"K\n", b"k\n"), start=1):
            s.write(cmd)
            s.wait_for(b"KEYUPDATE", n)
            s.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            s.wait_for(b"hello", n)
    finally:
        s.close()
    # TLS 1.2 renegotiation is refused; the server stays healthy.
    s = SClient(main.port, pki, "-tls1_2")
    try:
        s.wait_for(b"Verify return code: 0 (ok)")
        s.write(b"R\n")
        s.wait_for(b"no renegotiation")
    finally:
        s.close()
    with tls_connect(main.port, client_ctx(pki)) as c:
        assert get(c, "/").body == b"hello"
    assert_info_once_per_cause(main)
    assert not [line for line in main.lines(mark) if BAD_LEVEL_RE.search(line)]


def test_ssl_version_and_ciphers_options(pki, procs, tmp_path):
    """--ssl-version 5 (Python's PROTOCOL_TLSv1_2) serves TLS 1.2 only, and
    --ssl-ciphers is the TLS 1.2 cipher list."""
    cipher = "ECDHE-ECDSA-AES128-GCM-SHA256"
    p = start_tls(tls_args(pki, "--ssl-version", "5", "--ssl-ciphers", cipher, "--log-level", "debug"),
                  cwd=tmp_path)
    procs.append(p)
    with tls_connect(p.port, client_ctx(pki)) as c:
        assert (c.sock.version(), c.sock.cipher()[0]) == ("TLSv1.2", cipher)
        tls = tls_ext(c)
        assert (tls["tls_version"], tls["cipher_suite"]) == (0x0303, 0xC02B)
    only13 = client_ctx(pki)
    only13.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        tls_connect(p.port, only13)
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        tls_connect(p.port, client_ctx(pki, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"))
    p.wait_for(r"TLS handshake failed: unsupported protocol version")
    p.wait_for(r"TLS handshake failed: handshake failure \(.*no shared cipher")
    assert p.stop(signal.SIGTERM) == 0


# ----------------------------------------------------------------------------
# Encrypted keys and startup errors
# ----------------------------------------------------------------------------

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def rsa(pki) -> dict:
    if not HAVE_OPENSSL:
        pytest.skip("the openssl command is not installed")
    return openssl_rsa_key_cert(pki, "rsa", PASSWORD)


@pytest.mark.parametrize("kind,workers,via", [
    ("pkcs1", False, "cli"), ("pkcs8", False, "cli"), ("pkcs8", True, "env"), ("pkcs1", True, "cli"),
], ids=["pkcs1", "pkcs8", "pkcs8-workers-env", "pkcs1-workers-cli"])
def test_encrypted_key_serves(pki, rsa, sups, kind, workers, via):
    args = ["--ssl-certfile", str(rsa["cert"]), "--ssl-keyfile", str(rsa[kind])]
    env = clean_env()
    if workers:
        args += ["--workers", "2", *WORKER_OPTS]
    if via == "env":
        env["CASGI_SSL_KEYFILE_PASSWORD"] = PASSWORD
    else:
        args += ["--ssl-keyfile-password", PASSWORD]
    p = sups.start(casgi_args(APP, *args), env=env)
    tls_where(p)
    if workers:
        wait_workers_ready(p)
    cert_der = pem_to_der(rsa["cert"].read_text())
    with tls_connect(p.port, client_ctx(pki)) as c:
        assert c.sock.getpeercert(binary_form=True) == cert_der
        assert get(c, "/").body == b"hello"
        assert tls_ext(c)["server_cert"] == rsa["cert"].read_text()
    if workers:
        # Every local user can read a process's command line (ps): the
        # password must not be put on the workers' (the supervisor's is the
        # user's own choice).
        pids = [int(x) for x in re.findall(r"Started server process \[(\d+)\]", p.output())]
        assert len(pids) == 2, p.tail()
        for pid in pids + ([p.pid] if via == "env" else []):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            assert PASSWORD.encode() not in cmdline, (pid, cmdline.split(b"\0"))
    p.finish(signal.SIGTERM)


def _bad_cases(pki: Pki, rsa: dict, tmp: Path) -> dict:
    garbage = tmp / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    missing = tmp / "missing.pem"
    cert, key = str(rsa["cert"]), str(rsa["pkcs1"])
    return {
        # name: (args, the file the line must name, the cause)
        "wrong-password-pkcs1": (["--ssl-certfile", cert, "--ssl-keyfile", key, "--ssl-keyfile-password", "nope"],
                                 f"ssl-keyfile {key}", "wrong password"),
        "wrong-password-pkcs8": (["--ssl-certfile", cert, "--ssl-keyfile", str(rsa["pkcs8"]),
                                  "--ssl-keyfile-password", "nope"], f"ssl-keyfile {rsa['pkcs8']}",
                                 "wrong password"),
        "no-password": (["--ssl-certfile", cert, "--ssl-keyfile", key], f"ssl-keyfile {key}",
                        "no password was given"),
        "missing-key": (["--ssl-certfile", cert, "--ssl-keyfile", str(missing)], f"ssl-keyfile {missing}",
                        "No such file or directory"),
        "missing-cert": (["--ssl-certfile", str(missing), "--ssl-keyfile", key], f"ssl-certfile {missing}",
                         "No such file or directory"),
        "garbage-cert": (["--ssl-certfile", str(garbage), "--ssl-keyfile", str(pki.server.key)],
                         f"ssl-certfile {garbage}", "no PEM certificate"),
        "mismatched-key": (["--ssl-certfile", cert, "--ssl-keyfile", str(pki.server.key)],
                           f"ssl-keyfile {pki.server.key}", f"does not match the certificate in {cert}"),
        "bad-ca": (tls_args(pki, "--ssl-ca-certs", str(garbage), "--ssl-cert-reqs", "2"),
                   f"ssl-ca-certs {garbage}", "no PEM certificate"),
        "missing-ca": (tls_args(pki, "--ssl-ca-certs", str(missing), "--ssl-cert-reqs", "1"),
                       f"ssl-ca-certs {missing}", "No such file or directory"),
    }


BAD_CASES = ["wrong-password-pkcs1", "wrong-password-pkcs8", "no-password", "missing-key", "missing-cert",
             "garbage-cert", "mismatched-key", "bad-ca", "missing-ca"]


@pytest.mark.parametrize("mode", ["single", "workers2", "reload"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_exit_3(pki, rsa, tmp_path, case, mode):
    args, names, cause = _bad_cases(pki, rsa, tmp_path)[case]
    args = args + {"single": [], "workers2": ["--workers", "2"], "reload": ["--reload"]}[mode]
    r = subprocess.run([sys.executable, "-m", "casgi", *casgi_args(APP, *args)], capture_output=True,
                       text=True, timeout=30, env=clean_env(), cwd=tmp_path, stdin=subprocess.DEVNULL)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 3, lines
    # One line, nothing served, no worker started, no traceback.
    assert len(lines) == 1, lines
    assert lines[0].startswith("ERROR:    Error: " + names + ": "), lines
    assert cause in lines[0], lines


# ----------------------------------------------------------------------------
# Bodies, keep-alive, pipelining
# ----------------------------------------------------------------------------


def test_8mib_both_ways(main, pki):
    up = random.Random(11).randbytes(8 * MIB)
    with tls_connect(main.port, client_ctx(pki), timeout=30) as c:
        c.send(req("POST", "/echo", body=up))
        r = read_big(c)
        assert r.status == 200
        assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(up).hexdigest()
        assert r.body == up
        c.send(req("GET", f"/download?size={8 * MIB}&seed=12"))
        r = read_big(c)
        expected = random.Random(12).randbytes(8 * MIB)
        assert len(r.body) == len(expected)
        assert r.body == expected
        # The connection is still good after both.
        assert get(c, "/").body == b"hello"


def test_slow_reader_bounded_memory(main, pki):
    """A client that does not read: the app's send() waits (the transport
    is above its high-water mark) instead of the server encrypting and
    buffering the whole 64 MiB."""
    base = read_rss_kib(main.pid)
    with tls_connect(main.port, client_ctx(pki), timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(req("GET", "/big-stream?n=64"))
        time.sleep(1.0)
        assert_rss_growth_below(read_rss_kib(main.pid) - base, 24 * 1024, "with a client not reading")
        r = read_big(c)
        assert len(r.body) == 64 * MIB
        assert r.body[:512] == bytes(range(256)) * 2 and r.body[-256:] == bytes(range(256))
        assert get(c, "/").body == b"hello"


def test_concurrent_connections(main, pki):
    """Many connections at once, handshakes and requests interleaved (the
    server encrypts every connection's output through one scratch buffer)."""
    ctx = client_ctx(pki)
    errors: list = []

    def client(i: int) -> None:
        rng = random.Random(i)
        try:
            with tls_connect(main.port, ctx, timeout=20) as c:
                for j in range(3):
                    body = rng.randbytes(rng.randrange(0, 100_000))
                    c.send(req("POST", "/echo", body=body) + req("GET", f"/download?size={len(body)}&seed={j}"))
                    assert read_big(c).body == body
                    assert read_big(c).body == random.Random(j).randbytes(len(body))
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]


def test_keepalive_and_pipelining(main, pki):
    with tls_connect(main.port, client_ctx(pki)) as c:
        me = list(c.sock.getsockname()[:2])
        for i in range(5):  # keep-alive: one connection, one request at a time
            scope = get(c, f"/scope?i={i}").json()
            assert scope["client"] == me
        # Pipelining: 20 requests in one TLS write (one record, under 16 KiB).
        reqs = []
        for i in range(20):
            if i % 2:
                reqs.append(req("POST", "/echo", body=f"body-{i}-".encode() * (i + 1)))
            else:
                reqs.append(req("GET", f"/download?size={100 + i}&seed={i}"))
        batch = b"".join(reqs)
        assert len(batch) < 16384
        c.send(batch)
        for i in range(20):
            r = c.read_response()
            assert r.status == 200
            if i % 2:
                assert r.body == f"body-{i}-".encode() * (i + 1)
            else:
                assert r.body == random.Random(i).randbytes(100 + i)
        # A pipelined batch larger than one record, with a large body in the middle.
        big = random.Random(99).randbytes(200_000)
        c.send(req("GET", "/") + req("POST", "/echo", body=big) + req("GET", "/scope"))
        assert c.read_response().body == b"hello"
        assert read_big(c).body == big
        assert c.read_response().json()["client"] == me
        # A request in one-byte records.
        for byte in req("POST", "/echo", body=b"tiny records"):
            c.sock.sendall(bytes([byte]))
        assert c.read_response().body == b"tiny records"
        # 100-continue: the interim response, then the body.
        c.send(req("POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "5")]))
        assert c.read_response(allow_interim=True).status == 100
        c.send(b"12345")
        assert c.read_response().body == b"12345"
        # Connection: close ends with the server's close_notify (a ragged EOF
        # raises ssl.SSLEOFError here).
        r = c.request(req("GET", "/", headers=[("Connection", "close")]))
        assert r.body == b"hello" and r.has_token("connection", "close")
        c.assert_closed()


def test_http10_body_ends_with_close_notify(main, pki):
    """A body delimited by the close (HTTP/1.0, no content-length) is
    complete only when the server's close_notify says so."""
    with tls_connect(main.port, client_ctx(pki)) as c:
        r = c.request(req("GET", "/stream?n=500", version="HTTP/1.0"))
        assert r.framing == "close"
        assert r.body == b"".join(f"part-{i}\n".encode() for i in range(500))
    with tls_connect(main.port, client_ctx(pki)) as c:  # HTTP/1.1: chunked
        r = c.request(req("GET", "/stream?n=500"))
        assert r.framing == "chunked"
        assert r.body == b"".join(f"part-{i}\n".encode() for i in range(500))


def test_ciphertext_in_small_pieces(main, pki):
    """The handshake and the records of a request reach the server one byte
    per send, and a record left half-sent while the connection is idle for
    more than two ticks (when the server gives back an idle connection's
    buffers) is completed later."""
    ctx = client_ctx(pki)
    bio = BioSock(main.port, ctx, byte_delay=0.0005)
    with RawConn(bio) as c:
        assert get(c, "/").body == b"hello"
        records = bio.encrypt(req("POST", "/echo", body=b"split ciphertext"))
        bio.send_raw(records, byte_delay=0.0005)
        assert c.read_response().body == b"split ciphertext"
        records = bio.encrypt(req("POST", "/echo", body=b"across the idle ticks"))
        bio.send_raw(records[:20])
        time.sleep(2.3)
        bio.send_raw(records[20:])
        assert c.read_response().body == b"across the idle ticks"
        # Two requests whose records are cut in the middle of each.
        both = bio.encrypt(req("GET", "/")) + bio.encrypt(req("POST", "/echo", body=b"second"))
        for i in range(0, len(both), 7):
            bio.send_raw(both[i:i + 7])
        assert c.read_response().body == b"hello"
        assert c.read_response().body == b"second"


# ----------------------------------------------------------------------------
# Slow handshakes and garbage
# ----------------------------------------------------------------------------


def test_slow_handshake_closed_others_served(main, pki):
    mark = main.mark()
    hello = client_hello(["http/1.1"])
    idle = tls_connect(main.port, client_ctx(pki))  # used again after the wait
    assert get(idle, "/").body == b"hello"
    idle_since = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", main.port), timeout=5)
    half = socket.create_connection(("127.0.0.1", main.port), timeout=5)
    t0 = time.monotonic()
    half.sendall(hello[: len(hello) // 2])
    ports = [silent.getsockname()[1], half.getsockname()[1]]
    # Others are served meanwhile, on new connections.
    for _ in range(3):
        with tls_connect(main.port, client_ctx(pki)) as c:
            assert get(c, "/").body == b"hello"
    served = time.monotonic() - t0
    results = {}

    def watch(name, s):
        results[name] = wait_closed(s, 6.0)

    threads = [threading.Thread(target=watch, args=(n, s)) for n, s in (("silent", silent), ("half", half))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    silent.close()
    half.close()
    for name in ("silent", "half"):
        got, _ = results[name]
        assert got == b"", (name, got[:100])
    for name, (_, waited) in results.items():
        closed_after = served + waited
        # The deadline is checked by the server's once-a-second ticker.
        assert HANDSHAKE_TIMEOUT * 0.9 <= closed_after <= HANDSHAKE_TIMEOUT + 3.0, (name, closed_after)
    assert served < HANDSHAKE_TIMEOUT, f"the other clients took {served:.2f}s"
    for port in ports:
        main.wait_for(r"127\.0\.0\.1:" + str(port) + r" - TLS handshake not completed in time", since=mark)
    # A keep-alive connection idle for more than two ticks (its buffers given
    # back) serves again, a large body too.
    time.sleep(max(0.0, idle_since + 2.3 - time.monotonic()))
    with idle:
        assert get(idle, "/").body == b"hello"
        big = random.Random(4).randbytes(MIB)
        idle.send(req("POST", "/echo", body=big))
        assert read_big(idle).body == big


def _rst_close(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_garbage_keeps_server_healthy(main, pki):
    mark = main.mark()
    rng = random.Random(1234)
    hello = client_hello(["http/1.1"])
    cases = {
        "cleartext": req("GET", "/", headers=[("Connection", "close")]),
        "random": rng.randbytes(3000),
        "record-garbage": b"\x16\x03\x01\x02\x00" + rng.randbytes(512),
        "hello-then-garbage": hello + b"\x17\x03\x03\x00\x20" + rng.randbytes(32),
    }
    expect = {"cleartext": "not TLS (plaintext HTTP?)"}
    for _round in range(3):
        for name, data in cases.items():
            s = socket.create_connection(("127.0.0.1", main.port), timeout=5)
            port = s.getsockname()[1]
            s.sendall(data)
            got, waited = wait_closed(s, 5.0)
            s.close()
            assert not got.startswith(b"HTTP/"), (name, got[:100])
            # Closed at once on the error, not by the handshake deadline.
            cause = wait_failure(main, port, mark)
            if name in expect:
                assert cause == expect[name]
            assert waited < HANDSHAKE_TIMEOUT, (name, waited, cause)
        # Resets mid-handshake: after half a ClientHello, and after a whole
        # one (the server has answered it and writes to a reset socket).
        for part in (hello[:50], hello):
            s = socket.create_connection(("127.0.0.1", main.port), timeout=5)
            s.sendall(part)
            if part is hello:
                s.recv(1)  # the server's first flight is on its way
            _rst_close(s)
        with tls_connect(main.port, client_ctx(pki)) as c:
            assert get(c, "/").body == b"hello"
    # At most one INFO line per cause, the rest at DEBUG; nothing above INFO
    # (checked by the fixture).
    assert_info_once_per_cause(main)
    infos = [cause for level, cause, _ in failure_lines(main) if level == "INFO"]
    assert "not TLS (plaintext HTTP?)" in infos
    debug = [cause for level, cause, _ in failure_lines(main, mark) if level == "DEBUG"]
    assert debug.count("not TLS (plaintext HTTP?)") >= 2


# ----------------------------------------------------------------------------
# WebSocket over TLS
# ----------------------------------------------------------------------------


def test_websocket_wss(main, pki):
    ctx = client_ctx(pki)
    with ws_connect(f"wss://127.0.0.1:{main.port}/ws", ssl=ctx, server_hostname="localhost",
                    open_timeout=5, close_timeout=2) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        blob = random.Random(5).randbytes(512 * 1024)  # the client takes up to 1 MiB
        ws.send(blob)
        assert ws.recv(timeout=10) == blob
        ws.send("scope")
        scope = json.loads(ws.recv(timeout=5))
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "wss"
    assert set(scope["extensions"]) == {"tls", "websocket.http.response"}
    tls = scope["extensions"]["tls"]
    assert set(tls) == TLS_KEYS
    assert tls["server_cert"] == pki.server.leaf_pem
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in TLS13_SUITES.values()
    assert tls["client_cert_chain"] == []


# ----------------------------------------------------------------------------
# The access log
# ----------------------------------------------------------------------------


def access_re(port: int, request_line: str, status: str = "200 OK") -> re.Pattern:
    return re.compile(r"^INFO:     127\.0\.0\.1:" + str(port) + " - " + re.escape(f'"{request_line}" {status}') + "$")


def test_access_log(main, plain, pki):
    mark = main.mark()
    with tls_connect(main.port, client_ctx(pki)) as c:
        get(c, "/scope?tls=1")
        c.request(req("POST", "/echo", body=b"abc"))
        port = c.local_port
    main.wait_for(access_re(port, "GET /scope?tls=1 HTTP/1.1"), since=mark)
    main.wait_for(access_re(port, "POST /echo HTTP/1.1"), since=mark)
    # The same shape as for cleartext.
    pmark = plain.mark()
    with RawConn.tcp("127.0.0.1", plain.port) as c:
        get(c, "/scope?tls=0")
        pport = c.local_port
    plain.wait_for(access_re(pport, "GET /scope?tls=0 HTTP/1.1"), since=pmark)


# ----------------------------------------------------------------------------
# Certificate rotation (SIGHUP)
# ----------------------------------------------------------------------------


def install(cert, chain_path: Path, key_path: Path) -> None:
    """Replaces the server's files as a deployment tool would (write, rename)."""
    for src, dst in ((cert.key, key_path), (cert.chain, chain_path)):
        tmp = dst.with_name(dst.name + ".new")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


class TlsLoad(BackgroundLoop):
    """New TLS connections, one request each, without pause from a thread;
    records which certificate each handshake got and every failure."""

    def __init__(self, port: int, ctx: ssl.SSLContext):
        super().__init__()
        self.port, self.ctx = port, ctx
        self.ok = 0
        self.certs: dict = {}
        self.failures: list = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with tls_connect(self.port, self.ctx, timeout=10) as c:
                    der = c.sock.getpeercert(binary_form=True)
                    r = c.request(req("GET", "/", headers=[("Connection", "close")]))
                    if r.status != 200 or r.body != b"hello":
                        raise AssertionError(f"{r.status_line!r} {r.body[:50]!r}")
                self.ok += 1
                self.certs[der] = self.certs.get(der, 0) + 1
            except Exception as e:  # noqa: BLE001 - every failure is the result
                self.failures.append(f"{type(e).__name__}: {e}")

    def wait_for_cert(self, der: bytes, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.certs.get(der, 0) < 3:
            assert time.monotonic() < deadline, f"the new certificate not served within {timeout}s: {self.report()}"
            time.sleep(0.02)

    def report(self) -> str:
        return f"{self.ok} ok, {len(self.failures)} failed: {self.failures[:5]}"


def peer_der(port: int, ctx: ssl.SSLContext) -> tuple:
    """(certificate DER, the scope's server_cert) of a new connection."""
    with tls_connect(port, ctx) as c:
        return c.sock.getpeercert(binary_form=True), tls_ext(c)["server_cert"]


@pytest.mark.parametrize("loop", loop_params())
def test_sighup_rotation(pki, procs, tmp_path, loop):
    certs = {n: pki.server_cert(f"rot{n}") for n in "ABCDE"}
    chain_path, key_path = tmp_path / "chain.pem", tmp_path / "key.pem"
    install(certs["A"], chain_path, key_path)
    p = start_tls(["--ssl-certfile", str(chain_path), "--ssl-keyfile", str(key_path)], loop=loop, cwd=tmp_path)
    procs.append(p)
    ctx = client_ctx(pki)

    def reload(expect: str = "TLS certificate and key reloaded") -> None:
        mark = p.mark()
        p.signal(signal.SIGHUP)
        p.wait_for(r"Received SIGHUP; " + expect, since=mark)

    old = tls_connect(p.port, ctx)
    with old:
        assert old.sock.getpeercert(binary_form=True) == certs["A"].leaf_der
        assert tls_ext(old)["server_cert"] == certs["A"].leaf_pem
        with TlsLoad(p.port, ctx) as load:
            load.wait_for_cert(certs["A"].leaf_der)
            install(certs["B"], chain_path, key_path)
            reload()
            load.wait_for_cert(certs["B"].leaf_der)
            assert peer_der(p.port, ctx) == (certs["B"].leaf_der, certs["B"].leaf_pem)
            # The connection opened before keeps its certificate and keeps working.
            assert tls_ext(old)["server_cert"] == certs["A"].leaf_pem
            assert get(old, "/").body == b"hello"
            # Broken replacements: an ERROR line, the current certificate stays.
            (chain_path).write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
            reload(r"the TLS certificate was not reloaded: ssl-certfile " + re.escape(str(chain_path)) + ": ")
            shutil.copyfile(certs["C"].chain, chain_path)  # a certificate without its key
            reload(r"the TLS certificate was not reloaded: ssl-keyfile " + re.escape(str(key_path))
                   + ": the private key does not match")
            assert p.alive()
            time.sleep(0.2)
            assert peer_der(p.port, ctx) == (certs["B"].leaf_der, certs["B"].leaf_pem)
        assert not load.failures, load.report()
        assert load.ok > 10, load.report()
        assert set(load.certs) == {certs["A"].leaf_der, certs["B"].leaf_der}, load.report()
        assert get(old, "/").body == b"hello"
    errors = [line for line in p.lines() if line.startswith("ERROR:")]
    assert len(errors) == 2, errors
    # Two reloads with no connection in between, then more: every new
    # connection reports the certificate it got.
    install(certs["C"], chain_path, key_path)
    reload()
    install(certs["D"], chain_path, key_path)
    reload()
    assert peer_der(p.port, ctx) == (certs["D"].leaf_der, certs["D"].leaf_pem)
    install(certs["E"], chain_path, key_path)
    reload()
    assert peer_der(p.port, ctx) == (certs["E"].leaf_der, certs["E"].leaf_pem)
    assert p.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("loop", loop_params())
def test_shutdown_with_tls_connections(pki, procs, tmp_path, loop):
    """SIGTERM: an idle keep-alive connection gets close_notify, a handshake
    that never completes does not hold the exit until --timeout-handshake."""
    p = start_tls(tls_args(pki, "--timeout-handshake", "30"), loop=loop, cwd=tmp_path)
    procs.append(p)
    idle = tls_connect(p.port, client_ctx(pki))
    assert get(idle, "/").body == b"hello"
    silent = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    half = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    half.sendall(client_hello()[:40])
    time.sleep(0.1)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    with idle:
        idle.assert_closed()  # close_notify: no SSLEOFError
    for s in (silent, half):
        with s:
            got, _ = wait_closed(s, 10.0)
            assert got == b""
    assert p.wait(10) == 0
    assert time.monotonic() - t0 < 5.0, p.tail()


# ----------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------


def wait_workers_ready(p: CasgiProcess, n: int = 2, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while p.output().count("Application startup complete") < n:
        assert time.monotonic() < deadline, f"{n} workers not ready within {timeout}s:\n{p.tail()}"
        assert p.alive(), p.tail()
        time.sleep(0.05)


def start_workers(sups, *extra: str):
    p = sups.start(casgi_args(APP, "--workers", "2", *WORKER_OPTS, *extra, loop=None))
    tls_where(p)
    wait_workers_ready(p)
    return p


def test_workers_session_resumption(pki, sups):
    p = start_workers(sups, *tls_args(pki))
    workers = {int(x) for x in re.findall(r"Started server process \[(\d+)\]", p.output())}
    assert len(workers) == 2, p.tail()
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(pki, max_version=version)
        with tls_connect(p.port, ctx) as c:
            first = int(get(c, "/pid").body)
            assert not c.sock.session_reused
            session = c.sock.session  # a session ticket, issued by worker `first`
            assert session is not None and session.has_ticket
        served = []
        for _ in range(40):
            with tls_connect(p.port, ctx, session=session) as c:
                pid = int(get(c, "/pid").body)
                served.append((pid, c.sock.session_reused))
            if len(served) >= 8 and {pid for pid, _ in served} == workers:
                break
        print(f"{version.name}: ticket issued by worker {first}; resumed connections served by: "
              f"{[pid for pid, _ in served]}")
        assert all(reused for _, reused in served), (version, served)
        assert {pid for pid, _ in served} == workers, f"every connection landed on one worker: {served}"
        assert any(pid != first for pid, _ in served)
    p.finish(signal.SIGTERM)


def test_workers_sighup_rotation(pki, sups, tmp_path):
    certs = {n: pki.server_cert(f"wrk{n}") for n in "AB"}
    chain_path, key_path = tmp_path / "chain.pem", tmp_path / "key.pem"
    install(certs["A"], chain_path, key_path)
    p = start_workers(sups, "--ssl-certfile", str(chain_path), "--ssl-keyfile", str(key_path))
    ctx = client_ctx(pki)
    with TlsLoad(p.port, ctx) as load:
        load.wait_for_cert(certs["A"].leaf_der)
        install(certs["B"], chain_path, key_path)
        p.signal(signal.SIGHUP)
        load.wait_for_cert(certs["B"].leaf_der, timeout=30)
        # Both new workers serve B: the old ones are gone.
        deadline = time.monotonic() + 30
        while True:
            seen = [peer_der(p.port, ctx)[0] for _ in range(10)]
            if all(d == certs["B"].leaf_der for d in seen):
                break
            assert time.monotonic() < deadline, "a worker still serves the old certificate"
            time.sleep(0.1)
        # A broken replacement: the first new worker cannot load it, the
        # rolling restart stops there and the workers serving B stay.
        mark = p.mark()
        chain_path.write_text("not a certificate\n")
        p.signal(signal.SIGHUP)
        p.wait_for(r"^ERROR:    Error: ssl-certfile " + re.escape(str(chain_path)) + ": no PEM certificate",
                   since=mark, timeout=20)
        p.wait_for(r"Rolling restart aborted", since=mark, timeout=20)
        ok = load.ok
        time.sleep(0.3)
        assert load.ok > ok
        assert peer_der(p.port, ctx)[0] == certs["B"].leaf_der
    assert not load.failures, load.report()
    assert load.ok > 10, load.report()
    p.finish(signal.SIGTERM)


def test_reload_serves_tls(pki, sups):
    p = sups.start(casgi_args(APP, *RELOAD_OPTS, *tls_args(pki)))
    tls_where(p)
    wait_workers_ready(p, 1)
    with tls_connect(p.port, client_ctx(pki)) as c:
        first = int(get(c, "/pid").body)
        assert tls_ext(c)["server_cert"] == pki.server.leaf_pem
    mark = p.mark()
    (sups.workdir / "touched.py").write_text("x = 1\n")
    p.wait_for(r"Started server process", since=mark, timeout=20)
    deadline = time.monotonic() + 20
    while True:  # the new worker serves TLS too
        with tls_connect(p.port, client_ctx(pki)) as c:
            if int(get(c, "/pid").body) != first:
                break
        assert time.monotonic() < deadline, p.tail()
        time.sleep(0.05)
    p.finish(signal.SIGTERM)


# ----------------------------------------------------------------------------
# The gunicorn worker
# ----------------------------------------------------------------------------


def test_gunicorn_worker_tls(pki, sups, tmp_path):
    """gunicorn's certfile, keyfile, ca_certs, cert_reqs and ciphers reach
    casgi's TLS: gunicorn says https://, so the worker must not serve
    cleartext."""
    pytest.importorskip("gunicorn")
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-k", "casgi.workers.CasgiWorker", "--pythonpath", str(APPS_DIR),
           APP, "-b", f"127.0.0.1:{port}", "-w", "1", "--graceful-timeout", "2", "--log-level", "info",
           "--certfile", str(pki.server.chain), "--keyfile", str(pki.server.key),
           "--ca-certs", str(pki.ca_file), "--cert-reqs", "1",
           "--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]
    p = sups.start([], cmd=cmd, wait=False, patterns=(GUNICORN_BOOT_RE,))
    p.wait_for(r"Listening at: https://127\.0\.0\.1:%d" % port, timeout=20)
    p.wait_for(r"Application startup complete", timeout=20)
    with tls_connect(port, client_ctx(pki, cert=pki.client)) as c:
        assert c.sock.getpeercert(binary_form=True) == pki.server.leaf_der
        tls = tls_ext(c)
        assert tls["client_cert_chain"] == pki.client.chain_pems  # ca_certs and cert_reqs
        assert tls["client_cert_error"] is None
    # ciphers: the TLS 1.2 list.
    ctx = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
    with tls_connect(port, ctx) as c:
        assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        assert tls_ext(c)["cipher_suite"] == 0xC02C
    # Cleartext is not served on the https port.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    with s:
        s.sendall(req("GET", "/"))
        got, _ = wait_closed(s, 5.0)
    assert not got.startswith(b"HTTP/"), got[:100]
    p.finish(signal.SIGTERM)


# ----------------------------------------------------------------------------
# --uds and --fd
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", loop_params())
def test_uds(pki, procs, tmp_path, loop):
    path = str(tmp_path / "s.sock")
    p = CasgiProcess(casgi_args(APP, "--uds", path, *tls_args(pki), loop=loop, port=None), cwd=tmp_path)
    procs.append(p)
    p.wait_running()
    assert path in p.where or path in p.output()
    ctx = client_ctx(pki)
    for _ in range(2):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(5)
        raw.connect(path)
        with RawConn(ctx.wrap_socket(raw, server_hostname="localhost")) as c:
            assert c.sock.getpeercert(binary_form=True) == pki.server.leaf_der
            scope = get(c, "/scope").json()
            assert scope["scheme"] == "https"
            assert scope["extensions"]["tls"]["server_cert"] == pki.server.leaf_pem
            assert scope["extensions"]["tls"]["tls_version"] == 0x0304
            big = random.Random(8).randbytes(MIB)
            c.send(req("POST", "/echo", body=big))
            assert read_big(c).body == big
    assert p.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("loop", loop_params())
def test_fd(pki, procs, tmp_path, loop):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    os.set_inheritable(sock.fileno(), True)
    try:
        p = CasgiProcess(casgi_args(APP, "--fd", str(sock.fileno()), *tls_args(pki), loop=loop, port=None),
                         cwd=tmp_path, pass_fds=[sock.fileno()])
        procs.append(p)
        p.wait_running()
    finally:
        sock.close()
    with tls_connect(port, client_ctx(pki)) as c:
        scope = get(c, "/scope").json()
    assert scope["scheme"] == "https"
    assert scope["server"][1] == port
    assert scope["extensions"]["tls"]["server_cert"] == pki.server.leaf_pem
    assert p.stop(signal.SIGTERM) == 0
