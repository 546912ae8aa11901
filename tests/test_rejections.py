"""The strict parser: every rejection answers with its status, `connection: close`,
closes, and never serves the request pipelined behind the bad one."""

import socket
import time

import pytest

from helpers import req, seen_paths, unique

STATUS_400 = [b"HTTP/1.1 400 Bad Request"]
STATUS_414 = [b"HTTP/1.1 414 URI Too Long", b"HTTP/1.1 414 Request-URI Too Long"]
STATUS_431 = [b"HTTP/1.1 431 Request Header Fields Too Large"]
STATUS_505 = [b"HTTP/1.1 505 HTTP Version Not Supported"]


def assert_rejected(server, bad: bytes, status_lines: list) -> None:
    """Sends `bad` and, in the same write, a valid request for a unique path;
    asserts the rejection and that the valid request was never dispatched."""
    marker = unique("/mark/")
    with server.connect() as c:
        c.send(bad + req("GET", marker))
        r = c.read_response()
        assert r.status_line in status_lines, f"got {r.status_line!r} for {bad[:120]!r}"
        assert r.has_token("connection", "close"), f"no connection: close in {r.headers}"
        c.assert_closed()
    assert not any(marker in s for s in seen_paths(server)), "the request after the rejected one was served"


def assert_accepted(server, data: bytes, body: bytes = None) -> None:
    with server.connect() as c:
        r = c.request(data)
        assert r.status_line == b"HTTP/1.1 200 OK", r.status_line
        if body is not None:
            assert r.body == body


# ---------------------------------------------------------------------------
# 400: framing headers
# ---------------------------------------------------------------------------

BODY_FRAMING_400 = {
    "content-length-and-transfer-encoding": [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
    "content-lengths-differ": [("Content-Length", "5"), ("Content-Length", "6")],
    "content-length-list-differs": [("Content-Length", "5, 6")],
    "content-length-plus-sign": [("Content-Length", "+5")],
    "content-length-minus-sign": [("Content-Length", "-5")],
    "content-length-space-inside": [("Content-Length", "5 5")],
    "content-length-hex": [("Content-Length", "0x5")],
    "content-length-letters": [("Content-Length", "abc")],
    "content-length-empty": [("Content-Length", "")],
    "content-length-decimal-point": [("Content-Length", "5.0")],
    "content-length-overflow": [("Content-Length", "99999999999999999999999999")],
    "content-length-overflow-2^64": [("Content-Length", "18446744073709551621")],
    "transfer-encoding-gzip": [("Transfer-Encoding", "gzip")],
    "transfer-encoding-chunked-not-last": [("Transfer-Encoding", "chunked, gzip")],
    "transfer-encoding-gzip-then-chunked": [("Transfer-Encoding", "gzip, chunked")],
    "transfer-encoding-identity": [("Transfer-Encoding", "identity")],
    "transfer-encoding-unknown": [("Transfer-Encoding", "xchunked")],
    "transfer-encoding-two-fields": [("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")],
}


@pytest.mark.parametrize("headers", list(BODY_FRAMING_400.values()), ids=list(BODY_FRAMING_400))
def test_bad_body_framing_headers_rejected(server, headers):
    # Five body bytes that are also a complete chunked body: whichever header a
    # lenient parser believed, the next request would be well delimited.
    bad = req("POST", "/echo", headers=headers) + b"0\r\n\r\n"
    assert_rejected(server, bad, STATUS_400)


def test_transfer_encoding_in_http10_rejected(server):
    bad = req("POST", "/echo", headers=[("Connection", "keep-alive"), ("Transfer-Encoding", "chunked")],
              version="HTTP/1.0") + b"0\r\n\r\n"
    assert_rejected(server, bad, STATUS_400)


def test_content_length_with_surrounding_whitespace_accepted(server):
    assert_accepted(server, req("POST", "/echo", headers=[b"Content-Length:   5  "]) + b"hello", b"hello")


# ---------------------------------------------------------------------------
# 400: header field syntax
# ---------------------------------------------------------------------------

HEAD_400 = {
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n",
    "tab-before-colon": b"GET / HTTP/1.1\r\nHost: t\r\nX-A\t: b\r\n\r\n",
    "space-before-colon-host": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n  folded\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n\tfolded\r\n\r\n",
    "bare-cr-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\rc\r\n\r\n",
    "bare-cr-before-crlf": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\r\n\r\n",
    "bare-cr-in-request-line": b"GET /\r HTTP/1.1\r\nHost: t\r\n\r\n",
    "bare-cr-in-name": b"GET / HTTP/1.1\r\nHost: t\r\nX\rA: b\r\n\r\n",
    "bare-lf-after-request-line": b"GET / HTTP/1.1\nHost: t\r\n\r\n",
    "bare-lf-after-field": b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n",
    "bare-lf-end-of-head": b"GET / HTTP/1.1\r\nHost: t\r\n\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "ctl-0x01-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n",
    "escape-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x1b[31mb\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",
    "empty-field-name": b"GET / HTTP/1.1\r\nHost: t\r\n: value\r\n\r\n",
    "space-in-field-name": b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n",
    "separator-in-field-name": b"GET / HTTP/1.1\r\nHost: t\r\nX(A): b\r\n\r\n",
    "slash-in-field-name": b"GET / HTTP/1.1\r\nHost: t\r\nX/A: b\r\n\r\n",
    "non-ascii-field-name": b"GET / HTTP/1.1\r\nHost: t\r\nX\xe9: b\r\n\r\n",
    "nul-in-field-name": b"GET / HTTP/1.1\r\nHost: t\r\nX\x00A: b\r\n\r\n",
    "field-without-colon": b"GET / HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
    "whitespace-line-before-first-field": b"GET / HTTP/1.1\r\n X-A: b\r\nHost: t\r\n\r\n",
    "tab-line-before-first-field": b"GET / HTTP/1.1\r\n\tX-A: b\r\nHost: t\r\n\r\n",
    "missing-host-http11": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two-host-fields": b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
    "two-host-fields-same-value": b"GET / HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("bad", list(HEAD_400.values()), ids=list(HEAD_400))
def test_bad_header_syntax_rejected(server, bad):
    assert_rejected(server, bad, STATUS_400)


def test_valid_unusual_fields_accepted(server):
    # HTAB and obs-text in values, every tchar in a name, an empty value.
    data = (b"GET / HTTP/1.1\r\nHost: t\r\nX-Tab: a\tb\r\nX-Obs: caf\xc3\xa9\r\n"
            b"!#$%&'*+-.^_`|~09azAZ: v\r\nX-Empty:\r\n\r\n")
    assert_accepted(server, data, b"Hello, world!")


def test_http10_without_host_accepted(server):
    with server.connect() as c:
        r = c.request(b"GET / HTTP/1.0\r\n\r\n")
        assert r.status == 200 and r.body == b"Hello, world!"


# ---------------------------------------------------------------------------
# 400: request line
# ---------------------------------------------------------------------------

REQUEST_LINE_400 = {
    "method-with-separator": b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "method-with-at": b"GE@T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "method-with-ctl": b"GE\x01T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "method-non-ascii": b"G\xc3\x89T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "empty-method": b" / HTTP/1.1\r\nHost: t\r\n\r\n",
    "asterisk-with-get": b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
    "authority-form-with-get": b"GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n",
    "authority-form-with-post": b"POST example.com:443 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    "relative-target": b"GET foo/bar HTTP/1.1\r\nHost: t\r\n\r\n",
    "target-with-nul": b"GET /a\x00b HTTP/1.1\r\nHost: t\r\n\r\n",
    "target-with-del": b"GET /a\x7fb HTTP/1.1\r\nHost: t\r\n\r\n",
    "target-with-escape": b"GET /a\x1b[31mb HTTP/1.1\r\nHost: t\r\n\r\n",
    "version-lowercase": b"GET / http/1.1\r\nHost: t\r\n\r\n",
    "version-no-minor": b"GET / HTTP/1\r\nHost: t\r\n\r\n",
    "version-no-dot": b"GET / HTTP/11\r\nHost: t\r\n\r\n",
    "version-letters": b"GET / HTTP/a.b\r\nHost: t\r\n\r\n",
    "version-trailing-garbage": b"GET / HTTP/1.1x\r\nHost: t\r\n\r\n",
    "version-trailing-space": b"GET / HTTP/1.1 \r\nHost: t\r\n\r\n",
    "version-wrong-name": b"GET / HTTX/1.1\r\nHost: t\r\n\r\n",
    "version-two-digit-major": b"GET / HTTP/10.1\r\nHost: t\r\n\r\n",
    "version-missing": b"GET /\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("bad", list(REQUEST_LINE_400.values()), ids=list(REQUEST_LINE_400))
def test_bad_request_line_rejected(server, bad):
    assert_rejected(server, bad, STATUS_400)


def test_options_asterisk_accepted(server):
    with server.connect() as c:
        r = c.request(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
        # The app answers 404 for an unknown path: the point is that the
        # request reached it instead of being rejected by the parser.
        assert r.status in (200, 404), r.status_line
        assert not r.has_token("connection", "close")


def test_absolute_form_target_accepted(server):
    with server.connect() as c:
        r = c.request(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert r.status == 200 and r.body == b"Hello, world!"


def test_absolute_form_authority_wins_over_host(server):
    """RFC 9112 3.2.2: with an absolute-form target the server ignores Host
    and uses the target's authority: the scope's host header carries it."""
    with server.connect() as c:
        r = c.request(b"GET http://example.com:8080/scope HTTP/1.1\r\nX-A: 1\r\nHost: other.test\r\n\r\n")
    assert r.status == 200
    headers = r.json()["headers"]
    assert headers == [["x-a", "1"], ["host", "example.com:8080"]], headers


def test_extension_method_token_accepted(server):
    with server.connect() as c:
        r = c.request(b"PURGE-X.1 / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert r.status == 200


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/1.2", b"HTTP/0.9"])
def test_unsupported_version_gets_505(server, version):
    assert_rejected(server, b"GET / " + version + b"\r\nHost: t\r\n\r\n", STATUS_505)


# ---------------------------------------------------------------------------
# 400: chunked body
# ---------------------------------------------------------------------------

CHUNKED_400 = {
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-negative": b"-1\r\nh\r\n0\r\n\r\n",
    "size-0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "size-leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
    "size-overflow": b"10000000000000000\r\nhello\r\n0\r\n\r\n",
    "size-overflow-long": b"fffffffffffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "data-not-followed-by-crlf": b"3\r\nabcXY0\r\n\r\n",
    "data-followed-by-lf": b"3\r\nabc\n0\r\n\r\n",
    "size-line-bare-lf": b"3\nabc\r\n0\r\n\r\n",
    "extension-over-4-kib": b"3;" + b"e" * 5000 + b"\r\nabc\r\n0\r\n\r\n",
    "extension-over-4-kib-last-chunk": b"3\r\nabc\r\n0;" + b"x=" + b"y" * 5000 + b"\r\n\r\n",
    "trailer-without-colon": b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
    "trailer-with-nul": b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n",
    "trailer-obs-fold": b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n",
    "trailer-bare-lf": b"3\r\nabc\r\n0\r\nX-T: a\n\r\n",
}


@pytest.mark.parametrize("body", list(CHUNKED_400.values()), ids=list(CHUNKED_400))
def test_bad_chunked_body_rejected(server, body):
    bad = req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + body
    assert_rejected(server, bad, STATUS_400)


def test_chunk_extension_under_limit_accepted(server):
    body = b"3;" + b"e=" + b"v" * 1000 + b"\r\nabc\r\n0\r\n\r\n"
    assert_accepted(server, req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + body, b"abc")


# ---------------------------------------------------------------------------
# 414 / 431: size limits
# ---------------------------------------------------------------------------


def test_long_request_line_gets_414(server):
    assert_rejected(server, req("GET", "/" + "a" * 9000), STATUS_414)


def test_request_line_under_default_limit_accepted(server):
    with server.connect() as c:
        r = c.request(req("GET", "/seen?" + "a" * 7000))
        assert r.status == 200


def test_long_field_gets_431(server):
    assert_rejected(server, req("GET", "/", headers=[("X-Big", "v" * 9000)]), STATUS_431)


def test_long_field_name_gets_431(server):
    assert_rejected(server, req("GET", "/", headers=[("X-" + "n" * 9000, "v")]), STATUS_431)


def test_empty_host_accepted(server):
    # RFC 9110 7.2: a Host field with an empty value is valid.
    assert_accepted(server, b"GET / HTTP/1.1\r\nHost:\r\n\r\n", b"Hello, world!")


def test_field_under_default_limit_accepted(server):
    assert_accepted(server, req("GET", "/", headers=[("X-Big", "v" * 7000)]), b"Hello, world!")


def test_too_many_fields_gets_431(server):
    headers = [(f"X-F{i}", "v") for i in range(100)]  # plus Host: 101 fields
    assert_rejected(server, req("GET", "/", headers=headers), STATUS_431)


def test_one_hundred_fields_accepted(server):
    headers = [(f"X-F{i}", "v") for i in range(99)]  # plus Host: 100 fields
    assert_accepted(server, req("GET", "/", headers=headers), b"Hello, world!")


@pytest.fixture
def limited(start_server, loop):
    return start_server("basic:app", "--limit-request-line", "200", "--limit-request-field-size", "200",
                        "--limit-request-fields", "10", loop=loop)


def test_custom_request_line_limit(limited):
    assert_accepted(limited, req("GET", "/seen?" + "a" * 100))
    assert_rejected(limited, req("GET", "/seen?" + "a" * 300), STATUS_414)


def test_custom_field_size_limit(limited):
    assert_accepted(limited, req("GET", "/", headers=[("X-Big", "v" * 100)]))
    assert_rejected(limited, req("GET", "/", headers=[("X-Big", "v" * 300)]), STATUS_431)


def test_custom_field_count_limit(limited):
    assert_accepted(limited, req("GET", "/", headers=[(f"X-F{i}", "v") for i in range(9)]))
    assert_rejected(limited, req("GET", "/", headers=[(f"X-F{i}", "v") for i in range(10)]), STATUS_431)


# ---------------------------------------------------------------------------
# Request-head timeout
# ---------------------------------------------------------------------------


@pytest.fixture
def head_timeout_server(start_server, loop):
    return start_server("basic:app", "--timeout-request-header", "1", loop=loop)


def _assert_timeout_answer(data: bytes) -> None:
    if data:
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"\r\nconnection: close" in head


def test_incomplete_head_is_cut_after_timeout(head_timeout_server):
    with head_timeout_server.connect() as c:
        start = time.monotonic()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        data = c.read_until_close(timeout=4)
        elapsed = time.monotonic() - start
    assert 0.7 <= elapsed <= 2.5, elapsed
    _assert_timeout_answer(data)


def test_slowloris_is_cut_counting_from_first_byte(head_timeout_server):
    s = head_timeout_server
    with s.connect() as c:
        head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 100
        start = time.monotonic()
        closed_at = None
        received = b""
        for i in range(len(head)):
            try:
                c.sock.send(head[i:i + 1])
            except OSError:
                closed_at = time.monotonic()
                break
            c.sock.settimeout(0.3)
            try:
                chunk = c.sock.recv(4096)
            except socket.timeout:
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                closed_at = time.monotonic()
                break
            if chunk:
                received += chunk
            if time.monotonic() - start > 5:
                break
        assert closed_at is not None, "a client sending one byte every 0.3 s was never cut off"
    elapsed = closed_at - start
    assert 0.7 <= elapsed <= 2.5, f"cut after {elapsed:.2f}s with --timeout-request-header 1"
    _assert_timeout_answer(received)


def test_complete_head_within_timeout_served(head_timeout_server):
    with head_timeout_server.connect() as c:
        c.send(b"GET / HTTP/1.1\r\n")
        time.sleep(0.5)
        c.send(b"Host: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        # The deadline applies per request head: a second request on the same
        # connection, sent more than a second after the first, is served.
        time.sleep(0.6)
        c.send(b"GET / HTTP/1.1\r\n")
        time.sleep(0.5)
        c.send(b"Host: t\r\n\r\n")
        assert c.read_response().status == 200


def test_pipelined_marker_after_valid_request_is_served(server):
    """Control for assert_rejected: the same pipelined marker request behind a
    valid request is served and recorded, so its absence above means something."""
    marker = unique("/mark/")
    with server.connect() as c:
        c.send(req("GET", "/") + req("GET", marker))
        assert c.read_response().status == 200
        assert c.read_response().status == 404
    assert any(marker in s for s in seen_paths(server))


# ---------------------------------------------------------------------------
# Other protocols on the HTTP/1.1 port
# ---------------------------------------------------------------------------


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_http2_preface_rejected_without_http2(start_server, loop):
    # --no-http2: "PRI * HTTP/2.0" is an HTTP/1 request line that both the
    # target rule (400) and the version rule (505) refuse.
    server = start_server("basic:app", "--no-http2", loop=loop)
    assert_rejected(server, H2_PREFACE, STATUS_400 + STATUS_505)


def test_http2_preface_then_http11_is_a_connection_error(server):
    """With HTTP/2 on, the preface makes the connection HTTP/2 (prior
    knowledge): the server's SETTINGS frame comes first; HTTP/1.1 bytes after
    the preface are not the SETTINGS frame a client must send, so the
    connection ends with GOAWAY PROTOCOL_ERROR and the request is never
    served."""
    marker = unique("/mark/")
    with server.connect() as c:
        c.send(H2_PREFACE + req("GET", marker))
        data = c.read_until_close(5.0)
    frames = []  # (type, payload) of each frame received
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[9:9 + n]))
        data = data[9 + n:]
    assert frames and frames[0][0] == 0x4, f"no SETTINGS frame first: {frames}"
    goaways = [payload for kind, payload in frames if kind == 0x7]
    assert goaways, f"no GOAWAY frame: {frames}"
    assert int.from_bytes(goaways[0][4:8], "big") == 0x1, f"not PROTOCOL_ERROR: {goaways[0]!r}"
    assert not any(marker in s for s in seen_paths(server)), "the HTTP/1.1 request was served"


def test_tls_client_hello_rejected(server):
    hello = bytes.fromhex("16 03 01 02 00 01 00 01 fc 03 03") + bytes(range(32)) + b"\x00\x02\x13\x01\x01\x00"
    marker = unique("/mark/")
    with server.connect() as c:
        c.send(hello + b"\r\n\r\n" + req("GET", marker))
        r = c.read_response()
        assert r.status_line == b"HTTP/1.1 400 Bad Request"
        c.assert_closed()
    assert not any(marker in s for s in seen_paths(server))


def test_binary_garbage_rejected(server):
    assert_rejected(server, bytes(range(256)) + b"\r\n\r\n", STATUS_400)


def test_h2c_upgrade_request_served_as_http11(server):
    with server.connect() as c:
        r = c.request(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        assert r.status_line == b"HTTP/1.1 200 OK"
        assert r.body == b"Hello, world!"


def test_head_timeout_does_not_apply_to_a_slow_body(start_server, loop):
    s = start_server("basic:app", "--timeout-request-header", "1", "--timeout-keep-alive", "1", loop=loop)
    body = b"0123456789"
    with s.connect() as c:
        c.send(req("POST", "/echo", headers=[("Content-Length", str(len(body)))]))
        for i in range(len(body)):
            time.sleep(0.25)
            c.send(body[i:i + 1])
        r = c.read_response()
    assert r.status == 200 and r.body == body


def test_mutated_requests_never_hang_or_crash(server):
    """Seeded single-byte mutations of valid requests: whatever the server
    decides, it answers with HTTP/1.1 responses or closes, promptly, and keeps
    serving."""
    import random

    rnd = random.Random(20261123)
    seeds = [
        req("GET", "/?a=b", headers=[("X-A", "b"), ("Accept", "*/*")]),
        req("POST", "/echo", headers=[("Content-Length", "5")]) + b"hello",
        req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + b"5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
        req("GET", "/", version="HTTP/1.0", host=None, headers=[("Connection", "keep-alive")]),
    ]
    for _ in range(1500):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.choice([1, 1, 2, 3])):
            pos = rnd.randrange(len(data))
            op = rnd.random()
            if op < 0.5:
                data[pos] = rnd.choice(b"\x00\r\n \t:;,/\x7f\xff0aZ")
            elif op < 0.75:
                del data[pos]
            else:
                data.insert(pos, rnd.randrange(256))
        with server.connect() as c:
            c.send(bytes(data))
            c.sock.shutdown(socket.SHUT_WR)
            rest = c.read_until_close(timeout=5)
        assert rest == b"" or rest.startswith(b"HTTP/1.1 "), (bytes(data), rest[:200])
    with server.connect() as c:
        assert c.request(req("GET", "/")).status == 200
