"""A cancelled receive() or send() is harmless: it loses no message, disturbs
no other call, and the next call gets the next message. Driven with the
libraries that cancel in everyday code (asyncio.wait_for, anyio cancel scopes,
Starlette's is_disconnected(), sse-starlette), on both event loops."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from helpers import RawConn, req

WAIT = 0.2  # the app's receive timeout (CANCEL_APP_WAIT)


@pytest.fixture
def app(start_server, loop):
    return start_server("cancel_app:app", loop=loop)


def ws_url(p, path: str) -> str:
    return p.url.replace("http://", "ws://") + path


@pytest.mark.parametrize("path", ["/ws-wait-for", "/ws-anyio"])
def test_a_websocket_receive_that_timed_out_leaves_the_session_working(app, path):
    with ws_connect(ws_url(app, path), open_timeout=5) as ws:
        for i in range(3):
            # Two more receive() calls time out (however slow the machine) before the message.
            app.wait_for(rf"^WS-RECEIVE-TIMEOUTS {2 * (i + 1)}$", timeout=30)
            ws.send(f"m{i}")
            reply = ws.recv(timeout=5)
            text, _, rest = reply.partition(" after ")
            assert text == f"m{i}", reply
            assert int(rest.split()[0]) >= 2 * (i + 1), reply
        # Messages sent back to back after the timeouts are all there, in order.
        for i in range(20):
            ws.send(f"burst{i}")
        got = [ws.recv(timeout=5).partition(" after ")[0] for _ in range(20)]
        assert got == [f"burst{i}" for i in range(20)]
    assert "Traceback" not in app.output()


@pytest.mark.parametrize("query", ["", "?anyio"])
def test_a_body_read_that_timed_out_loses_nothing(app, query):
    with app.connect() as c:
        c.send(req("POST", "/body-timeout/" + query, headers=[("Content-Length", "10")]))
        time.sleep(2.5 * WAIT)
        c.send(b"01234")
        time.sleep(0.05)
        c.send(b"56789")
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"timeouts=1 body=0123456789"
        # The connection is still usable for the next request.
        c.send(req("POST", "/body-timeout/" + query, body=b"again"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"timeouts=0 body=again"


def test_two_concurrent_receive_calls_share_the_body_without_loss(app):
    pieces = [b"alpha-", b"beta-", b"gamma-", b"delta"]
    with app.connect() as c:
        c.send(req("POST", "/two-receives/", headers=[("Transfer-Encoding", "chunked")]))
        for p in pieces:
            time.sleep(0.05)
            c.send(b"%x\r\n%s\r\n" % (len(p), p))
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"".join(pieces)
        assert c.request(req("GET", "/sse?n=1")).status == 200


def test_streaming_response_that_asks_is_disconnected_streams_every_chunk(app):
    with httpx.Client(timeout=10, trust_env=False) as client:
        for _ in range(3):
            r = client.get(app.url + "/stream-is-disconnected?n=40")
            assert r.status_code == 200
            assert r.text == "".join(f"chunk {i}\n" for i in range(40))
    assert "STREAM-SAW-DISCONNECT" not in app.output()


def test_a_stream_the_client_abandons_is_logged(app):
    mark = app.mark()
    with app.connect() as c:
        c.send(req("GET", "/stream-is-disconnected?n=100000"))
        assert c.read_head().status == 200
    app.wait_for(r'"GET /stream-is-disconnected\?n=100000 HTTP/1.1" 200', since=mark, timeout=5)


def test_streaming_response_ends_when_its_client_left(app):
    mark = app.mark()
    with app.connect() as c:
        c.send(req("GET", "/stream-is-disconnected?n=100000"))
        c.read_head()
    app.wait_for(r"STREAM-ENDED \d+", since=mark, timeout=5)


def test_sse_starlette_stream_delivers_every_event_and_ends_cleanly(app):
    with httpx.Client(timeout=10, trust_env=False) as client:
        with client.stream("GET", app.url + "/sse?n=30&gap=0.01") as r:
            assert r.status_code == 200
            data = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert data == [str(i) for i in range(30)]
    out = app.output()
    assert "SSE-SAW-DISCONNECT" not in out
    assert "Traceback" not in out and "without completing" not in out


def test_a_send_cancelled_while_waiting_to_drain_keeps_the_framing_whole(app):
    blocks = 256  # 16 MiB: far more than the socket buffers hold while the client waits
    mark = app.mark()
    with app.connect(timeout=20) as c:
        c.send(req("GET", f"/send-timeout/?blocks={blocks}"))
        m = app.wait_for(r"SEND-TIMEOUTS (\d+)", since=mark, timeout=20)
        assert int(m.group(1)) > 0, "no send() was cancelled: the test did not test anything"
        r = c.read_response()
    assert r.status == 200
    assert r.body == b"".join((b"%08d" % i) * 8192 for i in range(blocks))


def test_pending_tasks_are_cancelled_at_shutdown_never_destroyed(start_server, loop):
    p = start_server("cancel_app:background_task_app", "--timeout-graceful-shutdown", "1", loop=loop)
    with p.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    stuck = p.connect()
    stuck.send(req("GET", "/stuck"))
    time.sleep(0.2)
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    stuck.close()
    out = p.output()
    assert out.count("BACKGROUND-CANCELLED") == 2, out
    assert out.count("BACKGROUND-FINALLY") == 2, out
    assert "REQUEST-FINALLY" in out, out
    assert "destroyed but it is pending" not in out, out


def test_a_task_that_ignores_cancellation_delays_the_exit_boundedly(start_server, loop):
    p = start_server("cancel_app:background_task_app", "--timeout-graceful-shutdown", "1", loop=loop)
    with p.connect() as c:
        assert c.request(req("GET", "/stubborn")).status == 200
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    p.wait_for(r"STUBBORN-IGNORED-CANCEL", timeout=1)
    p.wait_for(r"1 task\(s\) still running 1000 ms after being cancelled at shutdown", timeout=1)


def test_ctrl_c_ends_open_sse_streams_within_the_graceful_timeout(start_server, loop):
    p = start_server("cancel_app:app", "--timeout-graceful-shutdown", "30", loop=loop)
    with httpx.Client(timeout=10, trust_env=False) as client:
        with client.stream("GET", p.url + "/sse-forever") as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data:")) == "data: 0"
            t0 = time.monotonic()
            p.signal(signal.SIGINT)
            try:
                for _ in lines:
                    pass
            except httpx.TransportError:
                pass  # cut with a reset: it cannot be taken for a finished one
            # The stream ends within a second, long before the graceful timeout.
            assert time.monotonic() - t0 < 3
    assert p.wait(timeout=10) == 0
    out = p.output()
    assert "SSE-FOREVER-ENDED" in out
    assert "Traceback" not in out, out


def test_a_lifespan_receive_that_timed_out_still_gets_shutdown(start_server, loop):
    p = start_server("cancel_app:lifespan_wait_for_app", loop=loop)
    time.sleep(0.3)
    with p.connect() as c:
        assert c.request(req("GET", "/")).status == 204
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    m = p.wait_for(r"LIFESPAN-GOT (\S+) after (\d+) timeouts", timeout=1)
    assert m.group(1) == "lifespan.shutdown" and int(m.group(2)) >= 2, p.output()
    assert "Traceback" not in p.output()


def test_a_finite_stream_in_flight_at_shutdown_is_finished(start_server, loop):
    """Only server-sent event streams hear http.disconnect at shutdown; any
    other stream (an export, a download) gets to finish."""
    p = start_server("cancel_app:app", "--timeout-graceful-shutdown", "30", loop=loop)
    with p.connect(timeout=10) as c:
        c.send(req("GET", "/stream-is-disconnected?n=150"))
        time.sleep(0.2)
        p.signal(signal.SIGTERM)
        r = c.read_response()
    assert r.status == 200
    assert r.body == b"".join(b"chunk %d\n" % i for i in range(150))
    assert p.wait(timeout=10) == 0
