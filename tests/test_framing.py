"""HTTP/1.1 message framing over raw sockets, byte-exact (RFC 9112)."""

import email.utils
import re
import time

import pytest

from helpers import ConnectionClosed, req, seen_paths, unique

HELLO = b"Hello, world!"


# ---------------------------------------------------------------------------
# Persistent connections and pipelining
# ---------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with server.connect() as c:
        for i in range(5):
            r = c.request(req("GET", "/"))
            assert r.status_line == b"HTTP/1.1 200 OK"
            assert r.body == HELLO
            assert not r.has_token("connection", "close")
        body = f"request number {5}".encode()
        r = c.request(req("POST", "/echo", body=body))
        assert r.status == 200 and r.body == body
        assert c.is_open_after(0.2)


def test_pipelined_requests_in_one_write_answered_in_order(server):
    m = unique()
    data = (
        req("POST", "/echo", body=b"first-body")
        + req("GET", f"/scope?{m}")
        + req("GET", "/")
    )
    with server.connect() as c:
        c.send(data)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        assert (r1.status, r1.body) == (200, b"first-body")
        assert r2.status == 200 and r2.json()["query_string"] == m
        assert (r3.status, r3.body) == (200, HELLO)
        assert c.is_open_after(0.2)


def test_pipelined_responses_keep_order_when_first_is_slow(server):
    with server.connect() as c:
        c.send(req("GET", "/slow?t=0.5") + req("GET", "/") + req("POST", "/echo", body=b"third"))
        assert c.read_response().body == b"slow done"
        assert c.read_response().body == HELLO
        assert c.read_response().body == b"third"


def test_pipelined_requests_do_not_share_context_variables(server):
    """Each request runs in its own copy of the server's context, also when
    it is started from the previous request's task (pipelining)."""
    with server.connect() as c:
        c.send(req("GET", "/ctx?set=first") + req("GET", "/ctx?set=second") + req("GET", "/ctx"))
        assert [c.read_response().body for _ in range(3)] == [b"unset"] * 3
        assert c.request(req("GET", "/ctx")).body == b"unset"


def test_pipelined_requests_split_across_writes(server):
    data = req("POST", "/echo", body=b"abc") + req("POST", "/echo", body=b"defgh")
    with server.connect() as c:
        # Cut in the middle of the second request's head, then its body.
        cut1 = len(data) - 12
        c.send(data[:cut1])
        time.sleep(0.05)
        c.send(data[cut1:-3])
        time.sleep(0.05)
        c.send(data[-3:])
        assert c.read_response().body == b"abc"
        assert c.read_response().body == b"defgh"


# A response completed while the next request already waits is held back to
# leave in one write with the next one. It must never wait on more than that:
# each case below would hang (the client times out) if held output were not
# written once the server has nothing more to add to it.


def test_pipelined_response_is_not_held_behind_an_incomplete_next_head(server):
    with server.connect(timeout=2) as c:
        c.send(req("GET", "/") + b"GET /scope HTTP/1.1\r\nHost: x")
        assert c.read_response().body == HELLO
        c.send(b"\r\n\r\n")
        assert c.read_response().json()["path"] == "/scope"


def test_pipelined_response_is_not_held_behind_an_incomplete_next_body(server):
    with server.connect(timeout=2) as c:
        c.send(req("GET", "/") + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nabc")
        assert c.read_response().body == HELLO
        c.send(b"defgh")
        assert c.read_response().body == b"abcdefgh"


@pytest.mark.parametrize("second", ["/slow?t=3", "/hang"])
def test_pipelined_response_is_not_held_while_the_next_app_waits(server, second):
    with server.connect(timeout=1.5) as c:
        c.send(req("GET", "/") + req("GET", second))
        assert c.read_response().body == HELLO


def test_pipelined_responses_then_a_failing_app_then_more(server):
    with server.connect(timeout=2) as c:
        c.send(req("GET", "/") + req("GET", "/raise-after-complete") + req("GET", "/raise-before"))
        assert c.read_response().body == HELLO
        assert c.read_response().body == b"complete"
        r = c.read_response()
        assert r.status == 500 and r.has_token("connection", "close")
        with pytest.raises(ConnectionClosed):
            c.read_response()


def test_pipelined_streaming_response_behind_held_ones(server):
    with server.connect(timeout=2) as c:
        c.send(req("GET", "/") + req("GET", "/") + req("GET", "/stream") + req("GET", "/"))
        assert c.read_response().body == HELLO
        assert c.read_response().body == HELLO
        r = c.read_response()
        assert r.status == 200 and r.has_token("transfer-encoding", "chunked") and r.body
        assert c.read_response().body == HELLO


def test_pipelined_responses_written_before_the_connection_closes(server):
    with server.connect(timeout=2) as c:
        c.send(req("GET", "/") + req("GET", "/", headers=[("Connection", "close")]) + req("GET", "/"))
        assert c.read_response().body == HELLO
        r = c.read_response()
        assert r.body == HELLO and r.has_token("connection", "close")
        with pytest.raises(ConnectionClosed):
            c.read_response()


# ---------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------


def test_content_length_body_delivered(server):
    body = bytes(range(256)) * 40
    with server.connect() as c:
        r = c.request(req("POST", "/echo", body=body))
        assert r.status == 200
        assert r.body == body


def test_content_length_body_sent_in_pieces(server):
    body = b"0123456789" * 1000
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Content-Length", str(len(body)))]))
        for i in range(0, len(body), 3333):
            time.sleep(0.02)
            c.send(body[i:i + 3333])
        r = c.read_response()
        assert r.body == body


def test_content_length_zero_body(server):
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Content-Length", "0")]))
        assert r.status == 200 and r.body == b""
        assert c.request(req("GET", "/")).body == HELLO


def test_identical_duplicate_content_length_accepted(server):
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Content-Length", "5"), ("Content-Length", "5")], body=b"hello"))
        assert r.status_line == b"HTTP/1.1 200 OK"
        assert r.body == b"hello"


def test_chunked_request_body(server):
    raw = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + raw)
        assert r.status == 200
        assert r.body == b"hello, world"
        assert c.request(req("GET", "/")).body == HELLO


def test_chunked_request_body_with_extensions_and_trailers(server):
    raw = (
        b"5;name=value\r\nhello\r\n"
        b"1;a;b=\"quoted;str\"\r\n!\r\n"
        b"A ;ext\r\n0123456789\r\n"
        b"0;last=1\r\n"
        b"X-Trailer: one\r\nAnother: two\r\n\r\n"
    )
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + raw + req("GET", "/"))
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"hello!0123456789"
        assert c.read_response().body == HELLO


def test_chunked_transfer_coding_name_is_case_insensitive(server):
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Transfer-Encoding", "Chunked")]) + b"3\r\nabc\r\n0\r\n\r\n")
        assert r.status == 200 and r.body == b"abc"


def test_chunked_body_split_at_every_byte(server):
    raw = b"4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n"
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
            time.sleep(0.003)
        r = c.read_response()
        assert r.body == b"wikipedia"


def test_chunked_hex_size_upper_and_lower_case(server):
    data = b"a" * 0x1F + b"b" * 0x2A
    raw = b"1F\r\n" + b"a" * 0x1F + b"\r\n2a\r\n" + b"b" * 0x2A + b"\r\n0\r\n\r\n"
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + raw)
        assert r.body == data


# ---------------------------------------------------------------------------
# Expect: 100-continue
# ---------------------------------------------------------------------------


def test_100_continue_sent_when_app_reads_body(server):
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "5")]))
        interim = c.read_response(allow_interim=True)
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"
        # The connection goes on normally.
        assert c.request(req("GET", "/")).body == HELLO


def test_100_continue_only_when_app_calls_receive(server):
    with server.connect() as c:
        c.send(req("POST", "/delayed-read?t=1", headers=[("Expect", "100-continue"), ("Content-Length", "3")]))
        # The app sleeps 1 s before its first receive(): nothing may come before.
        assert c.is_open_after(0.6), f"server sent {c.peeked!r} before the app asked for the body"
        interim = c.read_response(allow_interim=True)
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"abc")
        r = c.read_response()
        assert r.body == b"abc"


def test_no_100_continue_when_app_answers_without_reading(server):
    with server.connect() as c:
        c.send(req("POST", "/no-read", headers=[("Expect", "100-continue"), ("Content-Length", "5")]))
        r = c.read_response(allow_interim=True)
        assert r.status_line == b"HTTP/1.1 200 OK", "a 100 Continue was sent although the app never read"
        assert r.body == b"answered without reading"
        assert b"100 Continue" not in c.buf


def test_no_100_continue_for_http10_request(server):
    # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored.
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "4")],
                   version="HTTP/1.0", host=None))
        assert c.is_open_after(0.5), f"server sent {c.peeked!r} to an HTTP/1.0 client"
        c.send(b"body")
        r = c.read_response(allow_interim=True)
        assert r.status == 200 and r.body == b"body"


def test_100_continue_with_chunked_body(server):
    with server.connect() as c:
        c.send(req("POST", "/echo", headers=[("Expect", "100-continue"), ("Transfer-Encoding", "chunked")]))
        interim = c.read_response(allow_interim=True)
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"2\r\nok\r\n0\r\n\r\n")
        assert c.read_response().body == b"ok"


# ---------------------------------------------------------------------------
# HEAD
# ---------------------------------------------------------------------------


def test_head_keeps_headers_and_sends_no_body(server):
    with server.connect() as c:
        c.send(req("HEAD", "/") + req("GET", "/"))
        r = c.read_response(head=True)
        assert r.status_line == b"HTTP/1.1 200 OK"
        assert r.header("content-length") == str(len(HELLO))
        assert r.header("content-type") == "text/plain"
        # The next bytes must be the GET response: no body bytes after the HEAD head.
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == HELLO


def test_head_on_streamed_response_sends_no_body_bytes(server):
    with server.connect() as c:
        c.send(req("HEAD", "/stream?n=3") + req("GET", "/"))
        r = c.read_response(head=True)
        assert r.status == 200
        r2 = c.read_response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == HELLO


# ---------------------------------------------------------------------------
# HTTP/1.0
# ---------------------------------------------------------------------------


def test_http10_closes_after_response(server):
    with server.connect() as c:
        c.send(req("GET", "/", version="HTTP/1.0", host=None))
        r = c.read_response()
        assert re.fullmatch(rb"HTTP/1\.[01] 200 OK", r.status_line)
        assert r.body == HELLO
        c.assert_closed()


@pytest.mark.parametrize("value", ["keep-alive", "Keep-Alive"])
def test_http10_keep_alive_keeps_connection(server, value):
    with server.connect() as c:
        for _ in range(3):
            r = c.request(req("GET", "/", headers=[("Connection", value)], version="HTTP/1.0", host=None))
            assert r.status == 200 and r.body == HELLO
            assert r.framing == "length"
        assert c.is_open_after(0.2)


def test_http10_keep_alive_response_announces_keep_alive(server):
    # An HTTP/1.0 client only reuses the connection when the response says so.
    with server.connect() as c:
        r = c.request(req("GET", "/", headers=[("Connection", "keep-alive")], version="HTTP/1.0", host=None))
        assert r.has_token("connection", "keep-alive"), r.headers


def test_http10_streamed_body_is_close_delimited_never_chunked(server):
    with server.connect() as c:
        c.send(req("GET", "/stream?n=3", version="HTTP/1.0", host=None))
        r = c.read_response()
        assert r.header("transfer-encoding") is None
        assert b"chunked" not in r.raw.lower()
        assert r.body == b"part0\npart1\npart2\n"
        assert c.eof


def test_http10_keep_alive_streamed_body_not_chunked(server):
    with server.connect() as c:
        c.send(req("GET", "/stream?n=2", headers=[("Connection", "keep-alive")], version="HTTP/1.0", host=None))
        r = c.read_response()
        assert r.header("transfer-encoding") is None
        assert r.body == b"part0\npart1\n"
        if r.framing == "close":
            assert c.eof
            assert not r.has_token("connection", "keep-alive"), "keep-alive announced on a close-delimited body"


def test_http10_request_body_by_content_length(server):
    with server.connect() as c:
        r = c.request(req("POST", "/echo", body=b"ten bytes!", version="HTTP/1.0", host=None))
        assert r.body == b"ten bytes!"


# ---------------------------------------------------------------------------
# Connection: close
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "CLOSE , foo"])
def test_client_connection_close_is_honoured(server, value):
    m = unique("/mark/")
    with server.connect() as c:
        c.send(req("GET", "/", headers=[("Connection", value)]) + req("GET", m))
        r = c.read_response()
        assert r.status == 200 and r.body == HELLO
        assert r.has_token("connection", "close")
        c.assert_closed()
    assert not any(m in s for s in seen_paths(server))


def test_app_connection_close_header_closes_connection(server):
    m = unique("/mark/")
    with server.connect() as c:
        c.send(req("GET", "/conn-close-response") + req("GET", m))
        r = c.read_response()
        assert r.status == 200 and r.body == b"closing"
        assert r.has_token("connection", "close")
        c.assert_closed()
    assert not any(m in s for s in seen_paths(server))


# ---------------------------------------------------------------------------
# Response framing
# ---------------------------------------------------------------------------


def test_app_content_length_is_used(server):
    with server.connect() as c:
        r = c.request(req("GET", "/"))
        assert r.framing == "length"
        assert r.header("content-length") == "13"
        assert r.header("transfer-encoding") is None


def test_streamed_body_without_length_is_chunked(server):
    with server.connect() as c:
        c.send(req("GET", "/stream?n=4") + req("GET", "/"))
        r = c.read_response()
        assert r.header("transfer-encoding") == "chunked"
        assert r.header("content-length") is None
        assert r.body == b"part0\npart1\npart2\npart3\n"
        assert r.raw.endswith(b"0\r\n\r\n")
        assert c.read_response().body == HELLO


def test_empty_body_messages_do_not_end_chunked_body(server):
    with server.connect() as c:
        c.send(req("GET", "/stream-empty-parts") + req("GET", "/"))
        r = c.read_response()
        assert r.body == b"abc"
        assert all(r.chunks), f"zero-length chunk inside the body: {r.chunks}"
        assert c.read_response().body == HELLO


def test_single_body_message_without_length_is_framed_correctly(server):
    with server.connect() as c:
        c.send(req("GET", "/single") + req("GET", "/"))
        r = c.read_response()
        assert r.framing in ("chunked", "length")
        if r.framing == "length":
            assert r.header("content-length") == str(len(b"single body message"))
        assert r.body == b"single body message"
        assert c.read_response().body == HELLO


def test_large_streamed_body_chunked_exactly(server):
    size = 1_000_003
    with server.connect() as c:
        r = c.request(req("GET", f"/download?size={size}&chunk=65521"))
        assert r.framing == "chunked"
        assert len(r.body) == size and r.body == b"x" * size


@pytest.mark.parametrize("path", ["/cl-short", "/cl-long"])
def test_body_length_mismatch_closes_connection_and_logs(server, path):
    mark = server.mark()
    with server.connect() as c:
        c.send(req("GET", path) + req("GET", "/"))
        if path == "/cl-short":
            # 10 declared, 5 sent: the client must see the connection end, not wait.
            with pytest.raises(ConnectionClosed) as exc:
                c.read_response()
            assert exc.value.partial.endswith(b"\r\n\r\n12345"), exc.value.partial
        else:
            # 5 declared, 10 produced: never more than 5 body bytes on the wire.
            r = c.read_response()
            assert r.body == b"12345"
            c.assert_closed()
    server.wait_for(r"^ERROR", since=mark)
    time.sleep(0.3)
    errors = [line for line in server.lines(mark) if line.startswith("ERROR")]
    assert len(errors) == 1, errors


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_for_204_and_304(server, code):
    with server.connect() as c:
        c.send(req("GET", f"/status?code={code}") + req("GET", "/"))
        r = c.read_response()
        assert r.status == code
        assert r.header("transfer-encoding") is None
        if code == 204:
            assert r.header("content-length") in (None, "0")
        # The next response must start right after the head.
        r2 = c.read_response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == HELLO


def test_204_body_bytes_from_app_not_sent(server):
    with server.connect() as c:
        c.send(req("GET", "/status?code=204&body=should-not-appear") + req("GET", "/"))
        r = c.read_response()
        assert r.status == 204
        r2 = c.read_response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == HELLO
    assert b"should-not-appear" not in r.raw + r2.raw


# ---------------------------------------------------------------------------
# Default and extra headers
# ---------------------------------------------------------------------------

IMF_FIXDATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT")


def test_default_date_and_server_headers(server):
    with server.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.header("server") == "casgi"
    date = r.header("date")
    assert date and IMF_FIXDATE.fullmatch(date), date
    sent = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(sent - time.time()) < 3


def test_date_header_is_refreshed(server):
    with server.connect() as c:
        d1 = c.request(req("GET", "/")).header("date")
        time.sleep(2.1)
        d2 = c.request(req("GET", "/")).header("date")
    assert d1 != d2


def test_no_date_and_no_server_header(start_server, loop):
    s = start_server("basic:app", "--no-date-header", "--no-server-header", loop=loop)
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.status == 200
    assert r.header("date") is None
    assert r.header("server") is None


def test_extra_headers_option_strips_value_whitespace(start_server, loop):
    s = start_server("basic:app", "--header", "X-A:   b c  ", "--header", "X-Other:two", loop=loop)
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.header("x-a") == "b c"
    assert r.header("x-other") == "two"
    assert b"b c  " not in r.raw


@pytest.mark.parametrize("target", ["/", "/raise-before"], ids=["app-response", "500-app-exception"])
def test_extra_headers_on_app_and_500_responses(start_server, loop, target):
    """--header adds its header to the responses of requests the app handled,
    the server's own 500 included (as uvicorn does)."""
    s = start_server("basic:app", "--header", "X-Every: yes", loop=loop)
    with s.connect() as c:
        r = c.request(req("GET", target))
    assert r.header("server") == "casgi"
    assert r.header("x-every") == "yes", r.status_line


def test_app_headers_sent_with_raw_values(server):
    with server.connect() as c:
        r = c.request(req("GET", "/headers?h=X-Mixed:AbC%20dEf&h=set-cookie:a=1&h=set-cookie:b=2"))
    assert r.header("x-mixed") == "AbC dEf"
    assert r.header_all("set-cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize("kind", ["name-crlf", "name-lf", "name-nul", "value-crlf", "value-cr", "value-lf", "value-nul",
                                  "value-bel", "value-esc", "value-vt", "value-del"])
def test_invalid_response_header_gives_500_and_never_reaches_wire(server, kind):
    mark = server.mark()
    with server.connect() as c:
        c.send(req("GET", f"/bad-header?kind={kind}"))
        r = c.read_response()
        raw = r.raw
        try:
            raw += c.read_until_close(timeout=1.0)
        except AssertionError:
            pass  # the connection may stay open: only the bytes matter
    assert r.status_line == b"HTTP/1.1 500 Internal Server Error"
    assert b"injected" not in raw
    assert b"x-bad" not in raw.lower()
    server.wait_for(r"^ERROR", since=mark)


# ---------------------------------------------------------------------------
# Application errors
# ---------------------------------------------------------------------------


def test_exception_before_start_gives_500_and_traceback(server):
    ident = unique()
    mark = server.mark()
    with server.connect() as c:
        r = c.request(req("GET", f"/raise-before?id={ident}"))
    assert r.status_line == b"HTTP/1.1 500 Internal Server Error"
    assert r.body == b"Internal Server Error"
    server.wait_for(f"RuntimeError: boom-before-start {ident}", since=mark)
    assert "Traceback (most recent call last)" in server.output(mark)


def test_exception_after_start_closes_connection(server):
    ident = unique()
    mark = server.mark()
    with server.connect() as c:
        c.send(req("GET", f"/raise-after?id={ident}") + req("GET", "/"))
        with pytest.raises(ConnectionClosed) as exc:
            c.read_response()
        # The head and the partial body were sent; the body is never terminated.
        partial = exc.value.partial
        assert partial.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"partial" in partial
        assert not partial.endswith(b"0\r\n\r\n")
        assert c.eof
    server.wait_for(f"RuntimeError: boom-after-start {ident}", since=mark)


def test_server_keeps_serving_after_app_errors(server):
    with server.connect() as c:
        c.request(req("GET", "/raise-before"))
    with server.connect() as c:
        assert c.request(req("GET", "/")).body == HELLO


# ---------------------------------------------------------------------------
# Final status, framing decided by the server, CONNECT
# ---------------------------------------------------------------------------


def _assert_app_error_500(server, request: bytes, mark: int, message: str) -> None:
    """The app's http.response.start is refused: 500 and close, nothing of the
    app's head on the wire, and the error logged once."""
    with server.connect() as c:
        c.send(request + req("GET", "/"))
        r = c.read_response()
        rest = c.read_until_close()
    assert r.status_line == b"HTTP/1.1 500 Internal Server Error", r.raw
    assert r.has_token("connection", "close")
    assert rest == b"", rest  # the pipelined request is not answered on this connection
    server.wait_for(message, since=mark)
    time.sleep(0.2)
    out = server.output(mark)
    assert out.count("Exception in ASGI application") == 1, out


@pytest.mark.parametrize("code", [100, 101, 103, 199, 600, 999, 99, 0, -200])
def test_final_status_outside_200_599_is_an_app_error(server, code):
    """A 1xx sent as the final status would make the client read the real
    answer as the next request's (h11 refuses it too); 1xx is no final status."""
    _assert_app_error_500(server, req("GET", f"/status?code={code}"), server.mark(),
                          re.escape(f"invalid HTTP status {code}"))


@pytest.mark.parametrize("kind", ["str", "float", "bool", "big", "none"])
def test_final_status_not_an_int_is_an_app_error(server, kind):
    _assert_app_error_500(server, req("GET", f"/status-obj?kind={kind}"), server.mark(), "invalid HTTP status")


@pytest.mark.parametrize("extra,message", [
    ("transfer-encoding:chunked", "both content-length and transfer-encoding"),
    ("content-length:3", "conflicting content-length values 2 and 3"),
    ("content-length:x", "invalid content-length"),
])
def test_contradicting_framing_headers_are_an_app_error(server, extra, message):
    """/headers adds content-length: 2 itself; one framing, decided by the server."""
    _assert_app_error_500(server, req("GET", f"/headers?h={extra}"), server.mark(), message)


def test_repeated_equal_content_length_written_once(server):
    with server.connect() as c:
        c.send(req("GET", "/headers?h=Content-Length:2") + req("GET", "/"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"ok"
        assert [n.lower() for n, _ in r.raw_headers].count(b"content-length") == 1, r.raw
        assert c.read_response().body == HELLO


@pytest.mark.parametrize("value", ["gzip", "gzip, chunked", "identity"])
def test_app_transfer_coding_other_than_chunked_is_an_app_error(server, value):
    _assert_app_error_500(server, req("GET", f"/app-te?v={value.replace(' ', '%20')}"), server.mark(),
                          "unsupported transfer-encoding")


@pytest.mark.parametrize("parts", [1, 3])
def test_app_transfer_encoding_chunked_is_a_request_for_chunked_framing(server, parts):
    """On HTTP/1.1 the server writes one transfer-encoding line and frames the
    chunks itself."""
    with server.connect() as c:
        c.send(req("GET", f"/app-te?v=Chunked&parts={parts}") + req("GET", "/"))
        r = c.read_response()
        assert r.framing == "chunked" and r.body == b"".join(b"part%d" % i for i in range(parts))
        assert r.header_all("transfer-encoding") == ["chunked"], r.raw
        assert c.read_response().body == HELLO


@pytest.mark.parametrize("parts", [1, 3])
def test_app_transfer_encoding_chunked_on_http10_is_not_chunked(server, parts):
    """HTTP/1.0 has no chunked coding: the body is sent as is."""
    with server.connect() as c:
        c.send(req("GET", f"/app-te?v=chunked&parts={parts}", version="HTTP/1.0"))
        r = c.read_response()
    assert r.header("transfer-encoding") is None, r.raw
    assert r.body == b"".join(b"part%d" % i for i in range(parts)), r.raw


def test_connect_answered_2xx_is_an_app_error(server):
    """The server cannot open a tunnel: a 2xx to CONNECT is refused."""
    mark = server.mark()
    request = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    _assert_app_error_500(server, request, mark, "answer to CONNECT would open a tunnel")


def test_connect_answered_with_an_error_status_is_sent(server):
    with server.connect() as c:
        r = c.request(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nX-Status: 403\r\n\r\n")
    assert r.status == 403 and r.body == b"tunnel"


# ---------------------------------------------------------------------------
# A response that cannot be completed ends with a reset, never a FIN
# ---------------------------------------------------------------------------


def _read_to_end(c) -> tuple:
    """Reads until the connection ends: (bytes, "reset" or "eof")."""
    data = c.buf
    c.sock.settimeout(5)
    while True:
        try:
            more = c.sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not more:
            return data, "eof"
        data += more


@pytest.mark.parametrize("path", ["/raise-after", "/return-mid-stream"])
@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_unfinished_response_ends_with_a_reset(server, path, version):
    """On HTTP/1.0 the body ends with the connection: a FIN after an app error
    would make the truncated body look complete (nginx's HTTP/1.0 upstream
    caches it as a 200). Every unfinished response ends with a reset."""
    with server.connect() as c:
        c.send(req("GET", path, version=version))
        data, how = _read_to_end(c)
    assert how == "reset", data
    assert not data or data.startswith(b"HTTP/1.1 200 OK\r\n"), data


def test_body_shorter_than_content_length_ends_with_a_reset(server):
    with server.connect() as c:
        c.send(req("GET", "/cl-short-stream"))
        data, how = _read_to_end(c)
    assert how == "reset", data


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_complete_streamed_response_ends_normally(server, version):
    """A close-delimited body the app completed ends with a FIN."""
    with server.connect() as c:
        c.send(req("GET", "/stream", version=version, headers=[("Connection", "close")]))
        data, how = _read_to_end(c)
    assert how == "eof", data
    assert b"part2\n" in data


# ---------------------------------------------------------------------------
# Unread request bodies never become requests
# ---------------------------------------------------------------------------


def _assert_unread_body_not_parsed(server, first: bytes, marker: str) -> None:
    """`first` carries a body the app never reads; the body is itself a request
    for `marker`. After the response, the connection either carries on with
    the next real request or is closed, and `marker` is never served."""
    with server.connect() as c:
        c.send(first + req("GET", "/"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"answered without reading"
        try:
            nxt = c.read_response()
        except ConnectionClosed as exc:
            assert exc.partial == b"", exc.partial
        else:
            assert nxt.status_line == b"HTTP/1.1 200 OK" and nxt.body == HELLO
    assert not any(marker in s for s in seen_paths(server)), "the unread body was parsed as a request"


def test_unread_content_length_body_is_skipped_or_connection_closed(server):
    marker = unique("/mark/")
    smuggled = req("GET", marker)
    first = req("POST", "/no-read", headers=[("Content-Length", str(len(smuggled)))]) + smuggled
    _assert_unread_body_not_parsed(server, first, marker)


def test_unread_chunked_body_is_skipped_or_connection_closed(server):
    marker = unique("/mark/")
    smuggled = req("GET", marker)
    first = (req("POST", "/no-read", headers=[("Transfer-Encoding", "chunked")])
             + b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n")
    _assert_unread_body_not_parsed(server, first, marker)


def test_unread_large_body_is_skipped_or_connection_closed(server):
    marker = unique("/mark/")
    smuggled = req("GET", marker)
    body = b"p" * 300_000 + smuggled
    first = req("POST", "/no-read", headers=[("Content-Length", str(len(body)))]) + body
    _assert_unread_body_not_parsed(server, first, marker)


def test_body_sent_after_expect_without_100_is_not_parsed_as_request(server):
    marker = unique("/mark/")
    smuggled = req("GET", marker)
    with server.connect() as c:
        c.send(req("POST", "/no-read", headers=[("Expect", "100-continue"), ("Content-Length", str(len(smuggled)))]))
        r = c.read_response()
        assert r.status == 200
        # The client sends the body anyway (it may: RFC 9110 10.1.1), then a request.
        try:
            c.send(smuggled + req("GET", "/"))
            nxt = c.read_response()
        except (ConnectionClosed, BrokenPipeError, ConnectionResetError):
            pass
        else:
            assert nxt.status_line == b"HTTP/1.1 200 OK" and nxt.body == HELLO
    assert not any(marker in s for s in seen_paths(server))


def test_hundred_pipelined_requests_answered_in_order(server):
    bodies = [f"request {i:03d}".encode() * (i % 7 + 1) for i in range(100)]
    with server.connect() as c:
        c.send(b"".join(req("POST", "/echo", body=b) for b in bodies))
        for b in bodies:
            assert c.read_response().body == b


def test_valid_then_rejected_then_valid_in_one_write(server):
    marker = unique("/mark/")
    with server.connect() as c:
        c.send(req("POST", "/echo", body=b"first") + b"GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n" + req("GET", marker))
        assert c.read_response().body == b"first"
        r = c.read_response()
        assert r.status_line == b"HTTP/1.1 400 Bad Request"
        assert r.has_token("connection", "close")
        c.assert_closed()
    assert not any(marker in s for s in seen_paths(server))


def test_304_with_content_length_sends_no_body(server):
    with server.connect() as c:
        c.send(req("GET", "/status?code=304&cl=100") + req("GET", "/"))
        r = c.read_response()
        assert r.status == 304
        assert r.header("content-length") in (None, "100")
        r2 = c.read_response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == HELLO


def test_head_with_declared_length_and_no_body_from_app(server):
    mark = server.mark()
    with server.connect() as c:
        c.send(req("HEAD", "/status?code=200&cl=13") + req("GET", "/"))
        r = c.read_response(head=True)
        assert r.status == 200 and r.header("content-length") == "13"
        r2 = c.read_response()
        assert r2.status_line == b"HTTP/1.1 200 OK" and r2.body == HELLO
    time.sleep(0.2)
    assert not [line for line in server.lines(mark) if line.startswith("ERROR")]


def test_request_after_rejection_on_keep_alive_connection_not_served(server):
    marker = unique("/mark/")
    with server.connect() as c:
        assert c.request(req("GET", "/")).body == HELLO
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx" + req("GET", marker))
        r = c.read_response()
        assert r.status_line == b"HTTP/1.1 400 Bad Request"
        c.assert_closed()
    assert not any(marker in s for s in seen_paths(server))


def test_minimal_messages_without_optional_keys(server):
    with server.connect() as c:
        c.send(req("GET", "/minimal") + req("GET", "/"))
        r = c.read_response()
        assert r.status_line == b"HTTP/1.1 200 OK"
        assert r.body == b""
        assert c.read_response().body == HELLO


def test_response_headers_given_as_lists(server):
    with server.connect() as c:
        r = c.request(req("GET", "/headers-as-lists"))
    assert r.body == b"lists" and r.header("x-list") == "yes"


@pytest.mark.parametrize("shape", ["tuple", "generator", "buffers"])
def test_response_headers_in_other_shapes(server, shape):
    with server.connect() as c:
        r = c.request(req("GET", f"/headers-shaped?shape={shape}"))
    assert r.status == 200 and r.body == b"shaped" and r.header("x-shape") == shape


def test_response_headers_not_iterable_is_an_app_error(server):
    with server.connect() as c:
        r = c.request(req("GET", "/headers-shaped?shape=none"))
    assert r.status == 500


def test_many_tiny_chunks(server):
    n = 20000
    raw = b"".join(b"1\r\n%c\r\n" % (97 + i % 26) for i in range(n)) + b"0\r\n\r\n"
    with server.connect(timeout=20) as c:
        r = c.request(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + raw)
    assert r.body == bytes(97 + i % 26 for i in range(n))


def test_chunk_size_with_leading_zeros(server):
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + b"0005\r\nhello\r\n000\r\n\r\n")
    assert r.body == b"hello"


def test_content_length_with_leading_zeros_accepted(server):
    with server.connect() as c:
        r = c.request(req("POST", "/echo", headers=[("Content-Length", "005")]) + b"hello" + req("GET", "/"))
        assert r.body == b"hello"
        assert c.read_response().body == HELLO


def test_100_continue_for_pipelined_request_comes_after_previous_response(server):
    """The interim response of a pipelined request may not be written in the
    middle of (or before) the response to the request ahead of it."""
    with server.connect() as c:
        c.send(req("GET", "/slow?t=0.5")
               + req("POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "5")]))
        first = c.read_response(allow_interim=True)
        assert first.status_line == b"HTTP/1.1 200 OK" and first.body == b"slow done"
        interim = c.read_response(allow_interim=True)
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"later")
        assert c.read_response().body == b"later"


def test_exception_after_complete_response_keeps_response_intact(server):
    ident = unique()
    mark = server.mark()
    with server.connect() as c:
        c.send(req("GET", f"/raise-after-complete?id={ident}") + req("GET", "/"))
        r = c.read_response()
        assert r.status_line == b"HTTP/1.1 200 OK" and r.body == b"complete"
        # The connection may go on or be closed, but never carries garbage.
        try:
            nxt = c.read_response()
        except ConnectionClosed as exc:
            assert exc.partial == b""
        else:
            assert nxt.body == HELLO
    server.wait_for(f"RuntimeError: boom-after-complete {ident}", since=mark)


@pytest.mark.parametrize("path", ["/cl-long-stream", "/cl-short-stream"])
def test_streamed_body_length_mismatch_closes_connection(server, path):
    mark = server.mark()
    with server.connect() as c:
        c.send(req("GET", path) + req("GET", "/"))
        head = c.read_head()
        declared = int(head.header("content-length"))
        rest = c.read_until_close(timeout=5)
    # Never more than the declared length on the wire, and never the next response.
    assert len(rest) <= declared, rest
    assert b"HTTP/1.1" not in rest
    if path == "/cl-short-stream":
        assert len(rest) < declared
    server.wait_for(r"^ERROR", since=mark)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_pipelines_with_random_segmentation(server, seed):
    """Seeded mixes of requests (Content-Length and chunked bodies, extensions,
    trailers, varied headers) pipelined on one connection and written in random
    pieces: every response matches its request, in order."""
    import random

    rnd = random.Random(seed)
    stream = b""
    expected = []
    for i in range(150):
        body = bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 7, 100, 5000, 70000])))
        headers = [(f"X-R{j}", "v" * rnd.randrange(0, 200)) for j in range(rnd.randrange(0, 12))]
        kind = rnd.choice(["cl", "chunked", "get", "head"])
        if kind == "cl":
            stream += req("POST", f"/echo?i={i}", headers=headers + [("Content-Length", str(len(body)))]) + body
            expected.append(("echo", body))
        elif kind == "chunked":
            pieces, pos = [], 0
            while pos < len(body):
                n = rnd.randrange(1, 9000)
                ext = b";e=%d" % n if rnd.random() < 0.3 else b""
                pieces.append(b"%x%s\r\n%s\r\n" % (len(body[pos:pos + n]), ext, body[pos:pos + n]))
                pos += n
            trailer = b"X-Trailer: t\r\n" if rnd.random() < 0.5 else b""
            stream += (req("POST", f"/echo?i={i}", headers=headers + [("Transfer-Encoding", "chunked")])
                       + b"".join(pieces) + b"0\r\n" + trailer + b"\r\n")
            expected.append(("echo", body))
        elif kind == "get":
            stream += req("GET", "/", headers=headers)
            expected.append(("get", HELLO))
        else:
            stream += req("HEAD", "/", headers=headers)
            expected.append(("head", b""))

    results = []
    errors = []

    def reader(conn):
        try:
            for kind, body in expected:
                r = conn.read_response(head=(kind == "head"))
                results.append((r.status, r.body))
        except AssertionError as exc:
            errors.append(exc)

    with server.connect(timeout=20) as c:
        import threading

        t = threading.Thread(target=reader, args=(c,), daemon=True)
        t.start()
        pos = 0
        while pos < len(stream):
            n = rnd.choice([1, 2, 3, 17, 100, 1000, 4096, 65536])
            c.sock.sendall(stream[pos:pos + n])
            pos += n
        t.join(30)
        assert not t.is_alive(), f"only {len(results)} of {len(expected)} responses arrived"
    assert not errors, f"after {len(results)} responses: {errors[0]}"
    assert len(results) == len(expected)
    for i, ((kind, body), (status, got)) in enumerate(zip(expected, results)):
        assert status == 200, (i, kind, status)
        assert got == body, (i, kind, len(got), len(body))
