"""Graceful shutdown, connection limits and connection timeouts."""

import signal
import socket
import time

import pytest

from helpers import clean_env, req


def connect_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return True
    return False


def wait_refused(port: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if connect_refused(port):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"still accepting connections {timeout}s after the signal")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_graceful_shutdown_with_in_flight_request(start_server, tmp_path, loop, sig):
    events = tmp_path / "events.txt"
    env = clean_env({"EVENTS_FILE": str(events)})
    s = start_server("lifespan_app:app", "--lifespan", "on", loop=loop, env=env)

    idle = s.connect()
    assert idle.request(req("GET", "/")).status == 200  # now an idle keep-alive connection

    busy = s.connect(timeout=10)
    busy.send(req("GET", "/slow?2"))
    deadline = time.monotonic() + 5
    while "request /slow" not in events.read_text():
        assert time.monotonic() < deadline, "slow request never reached the app"
        time.sleep(0.02)

    t0 = time.monotonic()
    s.signal(sig)

    # Idle keep-alive connections are closed at once.
    idle.assert_closed(timeout=1.5)
    # The listener is closed: new connections are refused while the request runs.
    refused_after = wait_refused(s.port, 1.5)
    assert refused_after < 1.5
    assert "slow-done" not in events.read_text()

    # The in-flight request completes.
    r = busy.read_response()
    assert r.status == 200
    assert time.monotonic() - t0 >= 1.0
    busy.assert_closed(timeout=3)
    busy.close()
    idle.close()

    assert s.wait(10) == 0
    lines = events.read_text().split("\n")[:-1]
    assert lines[-2:] == ["slow-done", "shutdown"], lines


def test_requests_on_in_flight_connection_end_with_connection_close(start_server, loop):
    s = start_server("basic:app", loop=loop)
    c = s.connect(timeout=10)
    mark = s.mark()
    c.send(req("GET", "/slow?t=1.5&id=inflight"))
    s.wait_for("SLOW-START inflight", since=mark)
    s.signal(signal.SIGINT)
    time.sleep(0.3)
    # A new request on the connection that is still busy: whether it is
    # answered or not, the last response says `connection: close` and the
    # connection then ends.
    c.send(req("GET", "/"))
    responses = [c.read_response()]
    assert responses[0].body == b"slow done"
    while not responses[-1].has_token("connection", "close"):
        assert len(responses) < 2, "no response announced connection: close during shutdown"
        responses.append(c.read_response())
    c.assert_closed(timeout=3)
    c.close()
    assert s.wait(10) == 0


def test_graceful_shutdown_timeout_bounds_a_hanging_request(start_server, loop):
    s = start_server("basic:app", "--timeout-graceful-shutdown", "1", loop=loop)
    c = s.connect(timeout=10)
    mark = s.mark()
    c.send(req("GET", "/hang?id=h1"))
    s.wait_for("HANG-START h1", since=mark)
    t0 = time.monotonic()
    s.signal(signal.SIGINT)
    rc = s.wait(8)
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= 4.0, f"exited {elapsed:.2f}s after SIGINT with --timeout-graceful-shutdown 1"
    assert rc == 0
    c.read_until_close(timeout=2)
    c.close()


def test_lifespan_shutdown_runs_after_graceful_timeout_cancels_requests(start_server, tmp_path, loop):
    events = tmp_path / "events.txt"
    s = start_server("lifespan_app:app", "--timeout-graceful-shutdown", "1", loop=loop,
                     env=clean_env({"EVENTS_FILE": str(events)}))
    c = s.connect(timeout=10)
    c.send(req("GET", "/hang"))
    deadline = time.monotonic() + 5
    while "request /hang" not in events.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.signal(signal.SIGINT)
    assert s.wait(8) == 0
    c.close()
    lines = events.read_text().split()
    assert lines[-1] == "shutdown", lines
    assert "hang-cancelled" in lines, "the request still running at the graceful timeout was not cancelled"


def test_connection_with_partial_head_does_not_delay_shutdown(start_server, loop):
    s = start_server("basic:app", loop=loop)
    c = s.connect()
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Half")
    time.sleep(0.3)
    t0 = time.monotonic()
    s.signal(signal.SIGINT)
    # The server may give the head a short grace to complete, but does not wait
    # for the request-head timeout (30 s) or for ever.
    c.read_until_close(timeout=5)
    assert s.wait(5) == 0
    assert time.monotonic() - t0 < 5
    c.close()


def test_graceful_timeout_bounds_a_response_stuck_on_a_stalled_reader(start_server, loop):
    s = start_server("basic:app", "--timeout-graceful-shutdown", "1", loop=loop)
    sock = socket.create_connection(("127.0.0.1", s.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        sock.sendall(req("GET", f"/download?size={500 * 1024 * 1024}"))
        sock.settimeout(5)
        assert sock.recv(1024)
        time.sleep(0.5)  # the app is now blocked in send()
        t0 = time.monotonic()
        s.signal(signal.SIGINT)
        assert s.wait(8) == 0
        assert time.monotonic() - t0 < 4
    finally:
        sock.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_signal_forces_exit(start_server, loop, sig):
    s = start_server("basic:app", loop=loop)
    c = s.connect(timeout=10)
    mark = s.mark()
    c.send(req("GET", "/hang?id=h2"))
    s.wait_for("HANG-START h2", since=mark)
    s.signal(sig)
    time.sleep(1.0)
    assert s.alive(), "the server did not wait for the in-flight request"
    t0 = time.monotonic()
    s.signal(sig)
    s.wait(5)
    assert time.monotonic() - t0 < 3
    # The connection is aborted, not left open.
    c.read_until_close(timeout=1)
    c.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_right_after_running_line_shuts_down_cleanly(start_server, tmp_path, loop, sig):
    """Once the server says it is running, a signal means a graceful shutdown
    (lifespan shutdown included), never the default signal action."""
    events = tmp_path / "events.txt"
    s = start_server("lifespan_app:app", loop=loop, env=clean_env({"EVENTS_FILE": str(events)}))
    t0 = time.monotonic()
    assert s.stop(sig, timeout=5) == 0
    assert time.monotonic() - t0 < 3
    assert events.read_text().split() == ["startup", "shutdown"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_idle_server_shuts_down_on_signal(start_server, loop, sig):
    s = start_server("basic:app", loop=loop)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    time.sleep(0.3)
    t0 = time.monotonic()
    assert s.stop(sig, timeout=5) == 0
    assert time.monotonic() - t0 < 3


# ---------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------


def test_limit_concurrency_answers_503_beyond_limit(start_server, loop):
    s = start_server("basic:app", "--limit-concurrency", "2", loop=loop)
    mark = s.mark()
    a = s.connect(timeout=10)
    b = s.connect(timeout=10)
    try:
        a.send(req("GET", "/slow?t=2&id=a"))
        s.wait_for("SLOW-START a", since=mark)
        b.send(req("GET", "/slow?t=2&id=b"))
        s.wait_for("SLOW-START b", since=mark)
        with s.connect() as c:
            t0 = time.monotonic()
            r = c.request(req("GET", "/"))
            assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
            assert time.monotonic() - t0 < 1.0, "503 was not immediate"
        assert a.read_response().body == b"slow done"
        assert b.read_response().body == b"slow done"
    finally:
        a.close()
        b.close()
    time.sleep(0.2)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_limit_concurrency_counts_requests_not_idle_connections(start_server, loop):
    """Idle keep-alive connections do not use up --limit-concurrency: with two
    of them open (limit 2) a new request is served, while a request in
    progress still counts."""
    s = start_server("basic:app", "--limit-concurrency", "2", "--timeout-keep-alive", "30", loop=loop)
    idle = [s.connect(timeout=10) for _ in range(2)]
    try:
        for c in idle:
            assert c.request(req("GET", "/")).status == 200
        mark = s.mark()
        with s.connect(timeout=10) as busy, s.connect(timeout=10) as c:
            busy.send(req("GET", "/slow?t=1&id=s1"))
            s.wait_for("SLOW-START s1", since=mark)
            assert c.request(req("GET", "/")).status == 200
            assert busy.read_response().body == b"slow done"
    finally:
        for c in idle:
            c.close()


def test_limit_concurrency_closes_the_longest_idle_connection_first(start_server, loop):
    s = start_server("basic:app", "--limit-concurrency", "2", "--timeout-keep-alive", "30", loop=loop)
    a = s.connect(timeout=10)
    b = s.connect(timeout=10)
    try:
        assert b.request(req("GET", "/")).status == 200
        time.sleep(0.05)
        assert a.request(req("GET", "/")).status == 200  # b has been idle longer
        with s.connect(timeout=10) as c:
            assert c.request(req("GET", "/")).status == 200
            t0 = time.monotonic()
            b.read_until_close(timeout=3)
            assert time.monotonic() - t0 < 1.0, "the longest idle connection was not closed"
            assert a.request(req("GET", "/")).status == 200, "the other idle connection was closed"
    finally:
        a.close()
        b.close()


def test_limit_max_requests_exits_after_n_requests(start_server, loop):
    s = start_server("basic:app", "--limit-max-requests", "3", loop=loop)
    for _ in range(3):
        with s.connect() as c:
            r = c.request(req("GET", "/"))
            assert r.status == 200
    assert s.wait(10) == 0


def test_limit_max_requests_counts_keep_alive_requests(start_server, loop):
    s = start_server("basic:app", "--limit-max-requests", "2", loop=loop)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
        assert c.request(req("GET", "/")).status == 200
    assert s.wait(10) == 0


# ---------------------------------------------------------------------------
# Keep-alive timeout
# ---------------------------------------------------------------------------


def test_idle_keep_alive_connection_closed_after_timeout(start_server, loop):
    s = start_server("basic:app", "--timeout-keep-alive", "1", loop=loop)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
        t0 = time.monotonic()
        c.assert_closed(timeout=4)
        elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed <= 2.5, elapsed


def test_keep_alive_timeout_not_applied_while_request_runs(start_server, loop):
    s = start_server("basic:app", "--timeout-keep-alive", "1", loop=loop)
    with s.connect() as c:
        r = c.request(req("GET", "/slow?t=2"))
        assert r.status == 200 and r.body == b"slow done"
