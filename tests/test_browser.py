"""A real browser over TLS: headless Chromium (Debian's `chromium`, installed
by `make test-tools`) loads a page from casgi, whose script POSTs a 70,000-byte
body with fetch() and opens a WebSocket; the test reads what the script wrote
from the browser's DOM dump and what the server logged. With HTTP/2 on, ALPN
gives the browser h2 and its WebSocket goes over the same connection (RFC
8441 extended CONNECT); with --no-http2 every exchange is HTTP/1.1."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from h2_util import start_h2
from tls_util import Pki, tool_env

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test-tools)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("browser-pki"))


def browse(url: str, profile) -> list:
    """The lines the page's script wrote, as the browser's DOM has them once
    the page has loaded (the server completes it after the script's work)."""
    # The certificate is the test CA's, which the browser does not know;
    # certificate checking is not what is under test here.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
           f"--user-data-dir={profile}", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=tool_env())
    m = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert m, f"no page in the browser's output: {done.stdout[-2000:]!r} {done.stderr[-2000:]!r}"
    return m.group(1).splitlines()


@needs_chromium
@pytest.mark.parametrize("http2,version", [(True, "2"), (False, "1.1")])
def test_browser_page_fetch_and_websocket(start_server, pki, tmp_path, http2, version):
    args = [] if http2 else ["--no-http2"]
    p = start_h2(start_server, *args, app="browser_app:app", tls=pki)
    mark = p.mark()
    lines = browse(f"https://127.0.0.1:{p.port}/", tmp_path / "profile")
    assert lines == [
        f"fetch 200 http_version={version} scheme=https body=70000",
        f"ws http_version={version}",
        "ws echo ping",
        "ws closed 1000",
    ]
    p.wait_for(re.escape('"WebSocket /ws" [accepted]'), since=mark)
    log = p.output(since=mark)
    assert f'"GET / HTTP/{version}" 200' in log
    assert f'"POST /scope HTTP/{version}" 200' in log
    assert p.alive()
