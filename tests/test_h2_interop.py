"""HTTP/2 interop with real clients: httpx (http2) over TLS with ALPN and
over h2c with prior knowledge, ALPN negotiation itself, curl
(--http2-prior-knowledge, --http2 over TLS), nghttp (GET, POST, over h2c and
TLS) and h2load (a few hundred requests, none failing). The tools come from
Debian (curl, nghttp2-client: `make pytest` installs it when missing); a
test whose tool is not installed is skipped, saying so."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import httpx
import pytest

from h2_util import H2Client, download_bytes, h2_tls_ctx, start_h2
from tls_util import Pki, client_ctx, tls_connect, tool_env
from helpers import req

pytestmark = pytest.mark.timeout(90)

HAVE_NGHTTP = shutil.which("nghttp") is not None
HAVE_H2LOAD = shutil.which("h2load") is not None


def curl_has_http2() -> bool:
    if shutil.which("curl") is None:
        return False
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True, env=tool_env()).stdout
    features = [line for line in out.splitlines() if line.startswith("Features:")]
    return bool(features) and "HTTP2" in features[0].split()


needs_curl_h2 = pytest.mark.skipif(not curl_has_http2(), reason="curl without HTTP2 support (or no curl)")
needs_nghttp = pytest.mark.skipif(not HAVE_NGHTTP, reason="nghttp (nghttp2-client) is not installed")
needs_h2load = pytest.mark.skipif(not HAVE_H2LOAD, reason="h2load (nghttp2-client) is not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("h2-interop-pki"))


@pytest.fixture
def tls_server(start_server, pki):
    return start_h2(start_server, tls=pki)


def run(cmd: list, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=tool_env(), **kw)


# ----------------------------------------------------------------------------
# ALPN
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("offer,selected", [
    (["h2", "http/1.1"], "h2"),
    (["http/1.1", "h2"], "h2"),  # the server's preference: h2 whenever offered
    (["h2"], "h2"),
    (["http/1.1"], "http/1.1"),
])
def test_alpn_selection(tls_server, pki, offer, selected):
    with tls_connect(tls_server.port, client_ctx(pki, alpn=offer)) as c:
        assert c.sock.selected_alpn_protocol() == selected
        if selected == "http/1.1":
            r = c.request(req("GET", "/"))
            assert r.status == 200 and r.body == b"hello h2"
    if selected == "h2":
        with H2Client.tls(tls_server.port, h2_tls_ctx(str(pki.ca_file), offer)) as h:
            r = h.request("GET", "/", scheme="https")
            assert r.status == 200 and r.body == b"hello h2"


def test_alpn_without_http2(start_server, pki):
    """--no-http2: ALPN offers only http/1.1; a client offering h2 first
    gets http/1.1 and is served HTTP/1.1."""
    p = start_h2(start_server, "--no-http2", tls=pki)
    with tls_connect(p.port, client_ctx(pki, alpn=["h2", "http/1.1"])) as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        r = c.request(req("GET", "/"))
        assert r.status == 200 and r.body == b"hello h2"
    with httpx.Client(http2=True, verify=client_ctx(pki), timeout=10) as client:
        r = client.get(f"https://localhost:{p.port}/")
        assert r.http_version == "HTTP/1.1" and r.text == "hello h2"


# ----------------------------------------------------------------------------
# httpx
# ----------------------------------------------------------------------------


def test_httpx_http2_over_tls(tls_server, pki):
    body = random.Random(2).randbytes(1 << 20)
    with httpx.Client(http2=True, verify=client_ctx(pki), timeout=20,
                      base_url=f"https://localhost:{tls_server.port}") as client:
        for _ in range(3):
            r = client.get("/scope")
            assert r.status_code == 200 and r.http_version == "HTTP/2"
            s = r.json()
            assert s["http_version"] == "2" and s["scheme"] == "https"
        r = client.post("/echo", content=body)
        assert r.http_version == "HTTP/2" and r.content == body
        r = client.get("/download?size=1048576&seed=4")
        assert r.content == download_bytes(1 << 20, 4)


def test_httpx_h2c_prior_knowledge(h2srv_loop):
    with httpx.Client(http1=False, http2=True, timeout=20, base_url=f"http://127.0.0.1:{h2srv_loop.port}") as client:
        r = client.get("/scope")
        assert r.http_version == "HTTP/2"
        s = r.json()
        assert s["http_version"] == "2" and s["scheme"] == "http"
        assert s["headers"][0] == ["host", f"127.0.0.1:{h2srv_loop.port}"]
        body = b"z" * 300_000
        r = client.post("/echo", content=body)
        assert r.content == body
        r = client.get("/stream?n=3")
        assert r.text == "part-0\npart-1\npart-2\n"


# ----------------------------------------------------------------------------
# curl
# ----------------------------------------------------------------------------


@needs_curl_h2
def test_curl_http2_prior_knowledge(h2srv, tmp_path):
    url = f"http://127.0.0.1:{h2srv.port}"
    r = run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", url + "/"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello h2\n2 200", r.stdout
    data = tmp_path / "body.bin"
    data.write_bytes(random.Random(9).randbytes(200_000))
    out = tmp_path / "out.bin"
    r = run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", f"@{data}", "-o", str(out),
             "-w", "%{http_version} %{http_code}", url + "/echo"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"2 200"
    assert out.read_bytes() == data.read_bytes()


@needs_curl_h2
def test_curl_http2_over_tls(tls_server, pki, tmp_path):
    url = f"https://localhost:{tls_server.port}"
    out = tmp_path / "dl.bin"
    r = run(["curl", "-sS", "--http2", "--cacert", str(pki.ca_file), "-o", str(out),
             "-w", "%{http_version} %{http_code}", url + "/download?size=1048576&seed=8"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"2 200"
    assert out.read_bytes() == download_bytes(1 << 20, 8)
    r = run(["curl", "-sS", "--http2", "--cacert", str(pki.ca_file), url + "/scope"])
    s = json.loads(r.stdout)
    assert s["http_version"] == "2" and s["scheme"] == "https"


# ----------------------------------------------------------------------------
# nghttp, h2load
# ----------------------------------------------------------------------------


@needs_nghttp
def test_nghttp_get_and_post(h2srv, tmp_path):
    url = f"http://127.0.0.1:{h2srv.port}"
    r = run(["nghttp", "-nv", url + "/"], timeout=30)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    out = r.stdout.decode()
    assert "recv SETTINGS frame" in out and ":status: 200" in out, out[-2000:]
    r = run(["nghttp", url + "/"], timeout=30)
    assert r.stdout == b"hello h2"
    data = tmp_path / "post.bin"
    data.write_bytes(random.Random(12).randbytes(100_000))
    r = run(["nghttp", "-d", str(data), url + "/echo"], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data.read_bytes()


@needs_nghttp
def test_nghttp_over_tls(tls_server):
    r = run(["nghttp", "-v", f"https://localhost:{tls_server.port}/scope"], timeout=30)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert re.search(r"negotiated protocol: h2", out, re.I), out[:2000]
    r = run(["nghttp", f"https://localhost:{tls_server.port}/scope"], timeout=30)
    s = json.loads(r.stdout)
    assert s["scheme"] == "https" and s["http_version"] == "2"


def h2load_summary(out: str) -> dict:
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    assert m, out[-2000:]
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    d = dict(zip(keys, map(int, m.groups())))
    d["2xx"] = int(s.group(1))
    return d


@needs_h2load
@pytest.mark.parametrize("post", [False, True], ids=["get", "post"])
def test_h2load_h2c(h2srv, tmp_path, post):
    path, extra = "/", []
    if post:
        data = tmp_path / "data.bin"
        data.write_bytes(b"p" * 10_000)
        path, extra = "/echo", ["-d", str(data)]
    r = run(["h2load", "-n", "600", "-c", "4", "-m", "10", *extra, f"http://127.0.0.1:{h2srv.port}{path}"],
            timeout=60)
    assert r.returncode == 0, r.stderr
    s = h2load_summary(r.stdout.decode())
    assert s["succeeded"] == s["total"] == 600 and s["failed"] == s["errored"] == s["timeout"] == 0, s
    assert s["2xx"] == 600, s


@needs_h2load
def test_h2load_tls(tls_server):
    r = run(["h2load", "-n", "300", "-c", "3", "-m", "10", f"https://localhost:{tls_server.port}/"], timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "Application protocol: h2" in out, out[-1500:]
    s = h2load_summary(out)
    assert s["succeeded"] == 300 and s["failed"] == s["errored"] == s["timeout"] == 0 and s["2xx"] == 300, s
