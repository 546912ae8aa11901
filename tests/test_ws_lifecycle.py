"""Connection lifecycle: server keepalive pings and ping timeout, the bound on
the closing handshake, graceful shutdown and reload with open WebSockets."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from helpers import APPS_DIR, free_port
from ws_util import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsConn, open_ws, rss_bound, wait_event

pytestmark = pytest.mark.timeout(60)


# -- keepalive ---------------------------------------------------------------------

def test_ping_timeout_closes_1011(start_server, loop):
    s = start_server("ws_app:app", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "0.5", loop=loop)
    mark = s.mark()
    with open_ws(s, "/hold?id=pt") as ws:
        t0 = time.monotonic()
        pings, close = [], None
        while time.monotonic() - t0 < 4:
            try:
                f = ws.read_frame(timeout=max(0.0, 4 - (time.monotonic() - t0)))
            except socket.timeout:
                break
            if f.opcode == OP_PING:
                pings.append((time.monotonic() - t0, f.payload))  # never answered
            elif f.opcode == OP_CLOSE:
                close = (time.monotonic() - t0, f)
                break
        assert pings, f"no ping from the server within 4s; frames {ws.received}"
        assert pings[0][0] < 1.5, f"first ping after {pings[0][0]:.2f}s with --ws-ping-interval 0.5"
        assert close is not None, f"no close within 4s although pings went unanswered; frames {ws.received}"
        assert close[1].code == 1011, close[1]
        assert close[0] < 2.5, f"close after {close[0]:.2f}s"
        ws.assert_eof(6)
    ev = wait_event(s, "disconnect", "pt", since=mark)
    assert ev["type"] == "websocket.disconnect"


def read_for(ws, seconds, answer=True):
    """Frames for `seconds` (pings answered when `answer`); returns the ping times."""
    t0 = time.monotonic()
    pings = []
    while time.monotonic() - t0 < seconds:
        try:
            f = ws.read_frame(timeout=0.1)
        except socket.timeout:
            continue
        assert f.opcode != OP_CLOSE, f"closed after {time.monotonic() - t0:.2f}s: {f!r}"
        assert f.opcode == OP_PING, f
        pings.append(time.monotonic() - t0)
        if answer:
            ws.send_frame(OP_PONG, f.payload)
    return pings


def test_answered_pings_keep_the_connection_open(start_server, loop):
    s = start_server("ws_app:app", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "0.5", loop=loop)
    with open_ws(s, "/echo") as ws:
        pings = read_for(ws, 3.5)
        assert len(pings) >= 2, f"pings at {pings} in 3.5s with --ws-ping-interval 0.5"
        ws.send_text("still here")
        assert ws.recv_text() == "still here"
        ws.close_handshake()


def test_sub_second_ping_interval_honoured(start_server):
    s = start_server("ws_app:app", "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.3")
    with open_ws(s, "/echo") as ws:
        pings = read_for(ws, 2.5)
        gaps = [round(b - a, 2) for a, b in zip(pings, pings[1:])]
        assert len(pings) >= 5, (
            f"{len(pings)} pings in 2.5s with --ws-ping-interval 0.3 (at {[round(p, 2) for p in pings]}, gaps {gaps})")


def test_ping_interval_zero_disables_pings(start_server):
    s = start_server("ws_app:app", "--ws-ping-interval", "0", "--ws-ping-timeout", "0.2")
    with open_ws(s, "/echo") as ws:
        assert ws.is_open_after(1.5), f"server sent {ws.raw.peeked!r} with pings disabled"


def test_ping_timeout_zero_never_closes(start_server):
    s = start_server("ws_app:app", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0")
    with open_ws(s, "/echo") as ws:
        pings = read_for(ws, 3.0, answer=False)
        assert len(pings) >= 2, pings
        ws.send_text("alive")
        op, data = ws.read_message(answer_pings=False)
        assert (op, data) == (OP_TEXT, b"alive")


# -- the closing handshake is bounded ---------------------------------------------------

def test_app_close_peer_never_answers_bounded(start_server, loop):
    s = start_server("ws_app:app", loop=loop)
    mark = s.mark()
    with open_ws(s, "/close?code=1000&id=silent", timeout=15) as ws:
        ws.expect_close(1000)
        # never answer the close, never close the socket: the server must drop us
        took = ws.assert_eof(9)
        assert took <= 7.0, f"TCP connection closed {took:.2f}s after the close frame"
    ev = wait_event(s, "disconnect", "silent", since=mark, timeout=10)
    assert ev["type"] == "websocket.disconnect"


def test_app_close_peer_answers_tcp_closed_promptly(start_server, loop):
    s = start_server("ws_app:app", loop=loop)
    mark = s.mark()
    with open_ws(s, "/close?code=4100&reason=done&id=answers") as ws:
        f = ws.expect_close(4100)
        assert f.reason == b"done"
        ws.send_close(4100)
        took = ws.assert_eof(3)
        assert took < 1.0, f"server kept TCP open {took:.2f}s after the closing handshake"
    ev = wait_event(s, "disconnect", "answers", since=mark)
    assert ev["type"] == "websocket.disconnect"


def test_protocol_error_peer_never_answers_bounded(start_server):
    s = start_server("ws_app:app")
    with open_ws(s, "/echo", timeout=15) as ws:
        ws.send_frame(0x3, b"reserved")
        ws.expect_close(1002)
        took = ws.assert_eof(9)
        assert took <= 7.0, f"TCP connection closed {took:.2f}s after the 1002 close frame"


# -- shutdown ----------------------------------------------------------------------------

def answer_shutdown_closes(conns, timeout: float) -> None:
    """Each connection gets the server's 1012 close, answers it, and sees the TCP close."""
    for ws in conns:
        ws.expect_close(1012, timeout=timeout)
        ws.send_close(1012)
        ws.assert_eof(5)
        ws.close_socket()


def test_sigterm_closes_open_websockets_1012(start_server, loop):
    s = start_server("ws_app:app", "--timeout-graceful-shutdown", "5", loop=loop)
    mark = s.mark()
    conns = [open_ws(s, f"/hold?id=sd{i}", timeout=10) for i in range(3)]
    for i in range(3):
        wait_event(s, "accepted", f"sd{i}", since=mark)
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    answer_shutdown_closes(conns, timeout=5)
    for i in range(3):
        ev = wait_event(s, "disconnect", f"sd{i}", since=mark)
        assert ev["type"] == "websocket.disconnect"
        assert ev["code"] == 1012, ev
    assert s.wait(10) == 0
    assert time.monotonic() - t0 < 5.0


def test_sigterm_peer_never_answers_close_exit_within_bound(start_server, loop):
    s = start_server("ws_app:app", "--timeout-graceful-shutdown", "2", loop=loop)
    mark = s.mark()
    ws = open_ws(s, "/hold?id=mute", timeout=15)
    with ws:
        wait_event(s, "accepted", "mute", since=mark)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        ws.expect_close(1012, timeout=5)
        # no answer; the server must still exit within the graceful bound
        assert s.wait(10) == 0
        took = time.monotonic() - t0
        assert took < 4.0, f"server exited {took:.2f}s after SIGTERM with --timeout-graceful-shutdown 2"
        ws.assert_eof(2)


def test_sigterm_app_not_receiving_exit_within_bound(start_server):
    s = start_server("ws_app:app", "--timeout-graceful-shutdown", "1")
    mark = s.mark()
    with open_ws(s, "/noreceive?sleep=60&id=busy", timeout=10) as ws:
        wait_event(s, "accepted", "busy", since=mark)
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        ws.expect_close(1012, timeout=5)
        ws.send_close(1012)
        rc = s.wait(10)
        took = time.monotonic() - t0
        assert rc == 0
        assert took < 3.5, f"server exited {took:.2f}s after SIGTERM with --timeout-graceful-shutdown 1"


def test_reload_closes_websocket_1012_and_new_code_serves(start_server, tmp_path, loop):
    appdir = tmp_path / "app"
    appdir.mkdir()
    src = (APPS_DIR / "ws_app.py").read_text()
    main = appdir / "main.py"
    main.write_text(src.replace('VERSION = "ws-v0"', 'VERSION = "ws-v1"'))
    port = free_port()
    s = start_server("main:app", "--reload", "--reload-dir", str(appdir), "--reload-delay", "0.05",
                     "--timeout-graceful-shutdown", "2", loop=loop, port=str(port), app_dir=appdir,
                     cwd=appdir, wait=False)
    s.wait_port("127.0.0.1", port)
    deadline = time.monotonic() + 15
    while True:
        try:
            ws = WsConn.open("127.0.0.1", port, "/version")
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with ws:
        assert ws.recv_text() == "ws-v1"
        time.sleep(0.3)  # let the watcher settle past its first scan
        main.write_text(src.replace('VERSION = "ws-v0"', 'VERSION = "ws-v2"'))
        ws.expect_close(1012, timeout=10)
        ws.send_close(1012)
        ws.assert_eof(5)
    deadline = time.monotonic() + 15
    version = None
    while time.monotonic() < deadline:
        try:
            with WsConn.open("127.0.0.1", port, "/version", timeout=3) as ws2:
                version = ws2.recv_text()
                ws2.close_handshake()
            if version == "ws-v2":
                break
        except (AssertionError, OSError):
            pass
        time.sleep(0.1)
    assert version == "ws-v2", f"after the edit the server still serves {version!r}"
    assert s.stop(signal.SIGTERM, 10) == 0


# -- no leaks --------------------------------------------------------------------------

def fd_count(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def test_no_fd_or_memory_leak_over_many_sessions(start_server, loop):
    """300 sessions ended every way (clean close, TCP drop, protocol error,
    app close, denial, 403): descriptors return to the baseline and memory
    stays flat."""
    from helpers import RawConn
    from ws_util import upgrade_request

    s = start_server("ws_app:app", loop=loop)

    def round_of_sessions():
        with open_ws(s, "/echo") as ws:
            ws.send_text("x" * 1000)
            ws.recv_text()
            ws.close_handshake()
        ws = open_ws(s, "/echo")
        ws.send_binary(b"y" * 5000)
        ws.close_socket()
        with open_ws(s, "/echo") as ws:
            ws.send_frame(0x3, b"bad")
            ws.fail_with(1002)
        with open_ws(s, "/close?code=1000") as ws:
            ws.expect_close(1000)
            ws.send_close(1000)
            ws.assert_eof()
        for path in ("/deny", "/close-before"):
            c = RawConn.tcp(s.host, s.port)
            with c:
                c.request(upgrade_request(path))

    for _ in range(10):
        round_of_sessions()
    time.sleep(0.5)
    fds0, rss0 = fd_count(s.pid), s.rss_kib()
    for _ in range(50):
        round_of_sessions()
    deadline = time.monotonic() + 5
    while fd_count(s.pid) > fds0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fd_count(s.pid) <= fds0, f"descriptors: {fds0} before, {fd_count(s.pid)} after 300 sessions"
    grew = s.rss_kib() - rss0
    assert grew < rss_bound(4096), f"RSS grew by {grew} KiB over 300 sessions"


def test_workers_sigterm_closes_websockets_1012(start_server):
    port = free_port()
    s = start_server("ws_app:app", "--workers", "2", "--timeout-graceful-shutdown", "3", port=str(port),
                     wait=False)
    s.wait_port("127.0.0.1", port)
    mark = s.mark()
    conns = []
    deadline = time.monotonic() + 15
    while len(conns) < 4:
        try:
            conns.append(WsConn.open("127.0.0.1", port, f"/hold?id=w{len(conns)}", timeout=10))
        except (AssertionError, OSError):
            assert time.monotonic() < deadline, s.tail()
            time.sleep(0.1)
    for i in range(4):
        wait_event(s, "accepted", f"w{i}", since=mark)
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    answer_shutdown_closes(conns, timeout=6)
    assert s.wait(15) == 0
    assert time.monotonic() - t0 < 8
