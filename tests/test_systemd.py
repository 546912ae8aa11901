"""systemd integration end to end: socket activation (LISTEN_FDS) through a
launcher written here (the test binds, a child sets LISTEN_PID to its own pid
and execs casgi, as systemd does) and through `systemd-socket-activate` when
it is installed; sd_notify received on a real AF_UNIX datagram socket (READY,
STATUS, RELOADING with MONOTONIC_USEC, STOPPING, WATCHDOG pings at half the
interval, which stop while a worker's event loop is blocked); and the drain
Kubernetes relies on: after SIGTERM a keep-alive connection's next response
says `connection: close`, bounded by --timeout-graceful-shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Optional

import pytest

from helpers import RawConn, free_port, req
from supervisor_util import WORKER_OPTS, SupProc, get, live_children, wait_until

pytestmark = pytest.mark.timeout(60)

# Sets LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES for the inherited sockets (argv[1]:
# their fds, comma-separated) moved to 3, 4, ..., then execs casgi (argv[2:])
# in this very process, so LISTEN_PID is casgi's pid.
LAUNCHER = r"""
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDNAMES"] = ":".join("web%d" % i for i in range(len(fds)))
os.execv(sys.executable, [sys.executable, "-m", "casgi"] + sys.argv[2:])
"""


def tcp_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's notification
    socket: every datagram is kept with its arrival time."""

    def __init__(self, name: Optional[str] = None):
        # An abstract name: no path length limit, nothing to clean up.
        self.name = name or "@casgi-test-%s" % uuid.uuid4().hex
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:] if self.name.startswith("@") else self.name)
        self.sock.settimeout(0.1)
        self.msgs: list = []  # (monotonic time, text)
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.msgs.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def env(self, sups, watchdog_usec: Optional[int] = None, extra: Optional[dict] = None) -> dict:
        e = sups.env({"NOTIFY_SOCKET": self.name})
        if watchdog_usec:
            e["WATCHDOG_USEC"] = str(watchdog_usec)
        if extra:
            e.update(extra)
        return e

    def mark(self) -> int:
        with self._cond:
            return len(self.msgs)

    def wait(self, field: str, since: int = 0, timeout: float = 15.0) -> tuple:
        """Waits for a datagram holding the line `field` (e.g. "READY=1")
        after index `since`; returns (index, time, {name: value})."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.msgs)):
                    t, text = self.msgs[i]
                    if field in text.split("\n"):
                        return i, t, dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {field} within {timeout}s; received: {self.msgs[since:]}")
                self._cond.wait(left)

    def times(self, field: str, since: int = 0) -> list:
        with self._cond:
            return [t for t, text in self.msgs[since:] if field in text.split("\n")]


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


class FdHolder:
    """A plain fd passed where the launcher expects a socket."""

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


def start_activated(sups, socks, *args, env=None) -> SupProc:
    """casgi ARGS started by the launcher with `socks` as fds 3, 4, ...; the
    test's own copies are closed once the child has them."""
    fds = [s.fileno() for s in socks]
    cmd = [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), *args]
    p = SupProc(list(args), env=env if env is not None else sups.env(), cwd=sups.workdir, cmd=cmd,
                pass_fds=fds)
    sups.procs.append(p)
    for s in socks:
        s.close()
    return p


# ----------------------------------------------------------------------------
# Socket activation
# ----------------------------------------------------------------------------


def test_activation_single_process_serves_the_inherited_sockets(sups, tmp_path):
    """A TCP and a Unix socket passed as fds 3 and 4: both are served, the
    running line names them, --port is not bound."""
    sups.copy_app("sup_app.py", "main.py")
    tcp = tcp_listener()
    port = tcp.getsockname()[1]
    path = str(tmp_path / "act.sock")
    uds = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    uds.bind(path)
    uds.listen(16)
    own = free_port()
    p = start_activated(sups, [tcp, uds], "main:app", "--port", str(own))
    p.wait_for(r"casgi running on http://127\.0\.0\.1:%d, unix:%s" % (port, path.replace(".", r"\.")))
    p.wait_for(r"Serving 2 socket\(s\) passed by systemd")
    r = get(port)
    assert r.status == 200 and int(r.header("x-pid")) == p.pid
    with RawConn.unix(path) as c:
        assert c.request(req("GET", "/", headers=[("Connection", "close")])).status == 200
    assert refused(own), "casgi bound --port although it was given sockets"
    p.finish(signal.SIGTERM)


def test_activation_with_workers(sups):
    sups.copy_app("sup_app.py", "main.py")
    tcp = tcp_listener()
    port = tcp.getsockname()[1]
    own = free_port()
    p = start_activated(sups, [tcp], "main:app", "--workers", "2", "--port", str(own), *WORKER_OPTS)
    p.wait_running()
    assert p.port == port, p.tail()
    workers = set(p.wait_started(2))
    wait_until(lambda: live_children(p.pid) == workers, 5, "two live workers", proc=p)
    seen: set = set()
    deadline = time.monotonic() + 10
    while seen != workers and time.monotonic() < deadline:
        r = get(port)
        assert r.status == 200
        seen.add(int(r.header("x-pid")))
    assert seen == workers, f"served by {seen}; workers {workers}"
    assert refused(own), "casgi bound --port although it was given a socket"
    # Each worker was handed the socket as systemd hands it: LISTEN_PID its own.
    for w in workers:
        with open(f"/proc/{w}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        assert env.get(b"LISTEN_PID") == str(w).encode() and env.get(b"LISTEN_FDS") == b"1"
        assert env.get(b"LISTEN_FDNAMES") == b"web0"
    # A rolling restart keeps serving the same socket.
    mark = len(p.lines())
    p.signal(signal.SIGHUP)
    p.wait_for("Rolling restart done", since=mark, timeout=20)
    assert get(port).status == 200
    p.finish(signal.SIGTERM)


def test_activation_with_reload(sups):
    sups.copy_app("sup_app.py", "main.py")
    tcp = tcp_listener()
    port = tcp.getsockname()[1]
    p = start_activated(sups, [tcp], "main:app", "--reload", "--reload-delay", "0.05",
                        "--timeout-graceful-shutdown", "2")
    p.wait_running()
    first = p.wait_started(1)[0]
    r = get(port)
    assert r.status == 200 and int(r.header("x-pid")) == first
    p.signal(signal.SIGHUP)
    wait_until(lambda: (lambda r: r.status == 200 and int(r.header("x-pid")) != first)(get(port)), 15,
               "a new worker serving after SIGHUP", proc=p)
    p.finish(signal.SIGTERM)


def test_activation_variables_for_another_process_are_ignored(sups):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", env=sups.env({"LISTEN_PID": "1", "LISTEN_FDS": "1"}), workers_started=0)
    assert p.port and get(p.port).status == 200
    assert "socket activation" not in p.output()
    p.finish(signal.SIGTERM)


@pytest.mark.parametrize("kind", ["bound", "udp", "pipe"])
def test_activation_refuses_what_is_not_a_listening_stream_socket(sups, kind):
    sups.copy_app("sup_app.py", "main.py")
    if kind == "bound":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        objs, want = [s], "fd 3 is not listening"
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        objs, want = [s], "fd 3 is not a stream socket"
    else:
        r, w = os.pipe()
        os.close(w)
        objs, want = [FdHolder(r)], "fd 3 is not a socket"
    p = start_activated(sups, objs, "main:app", "--port", "0")
    assert p.wait(10) == 3, p.tail()
    assert want in p.output(), p.tail()
    p.check_gone()


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="systemd-socket-activate not installed")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_socket_activate(sups, notify, workers):
    """systemd's own launcher: it listens, and starts casgi (with LISTEN_*)
    when the first connection arrives; that connection is served."""
    sups.copy_app("sup_app.py", "main.py")
    port = free_port()
    env = notify.env(sups)
    cmd = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}"]
    # It passes on only the variables named (under tests/asan.sh, casgi's
    # sanitized extension needs libasan preloaded and the sanitizer options).
    for name in ("PATH", "HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "NOTIFY_SOCKET",
                 "LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if name in env:
            cmd += ["-E", name]
    cmd += [sys.executable, "-m", "casgi", "main:app", "--workers", workers, *WORKER_OPTS]
    p = sups.start([], env=env, cmd=cmd, wait=False)
    wait_until(lambda: "Listening on" in p.output(), 10, "systemd-socket-activate listening", proc=p)
    r = get(port, timeout=20)
    assert r.status == 200
    p.wait_running()
    assert p.port == port
    _, _, ready = notify.wait("READY=1")
    assert ready["STATUS"].startswith(f"Serving on http://127.0.0.1:{port}"), ready
    p.finish(signal.SIGTERM)
    notify.wait("STOPPING=1")


# ----------------------------------------------------------------------------
# sd_notify
# ----------------------------------------------------------------------------


def check_cadence(times: list, period: float, what: str) -> None:
    assert len(times) >= 3, f"{len(times)} {what}"
    gaps = [b - a for a, b in zip(times, times[1:])]
    # A loaded machine delays a ping, never makes one early.
    assert min(gaps) >= period * 0.8, f"{what} too often: {gaps}"
    assert sorted(gaps)[len(gaps) // 2] <= period * 1.5, f"{what} too rare: {gaps}"


def test_notify_single_process(sups, notify):
    sups.copy_app("sup_app.py", "main.py")
    # WatchdogSec=1: a ping every 0.5 s, from the event loop's ticker.
    p = sups.casgi("main:app", env=notify.env(sups, watchdog_usec=1_000_000), workers_started=0)
    _, t_ready, ready = notify.wait("READY=1")
    assert ready["STATUS"] == f"Serving on http://127.0.0.1:{p.port}", ready
    assert get(p.port).status == 200
    time.sleep(2.2)
    check_cadence([t for t in notify.times("WATCHDOG=1") if t > t_ready], 0.5, "watchdog pings")

    # A blocked event loop sends no ping.
    with RawConn.tcp("127.0.0.1", p.port, timeout=10) as c:
        c.send(req("GET", "/block?2"))
        t0 = time.monotonic()
        assert c.read_response().status == 200
    during = [t for t in notify.times("WATCHDOG=1") if t0 + 0.3 < t < t0 + 1.9]
    assert not during, f"pinged while the loop was blocked: {[round(t - t0, 2) for t in during]}"
    m = notify.mark()
    notify.wait("WATCHDOG=1", since=m, timeout=2)

    # SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 again.
    m = notify.mark()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    p.signal(signal.SIGHUP)
    i, _, reloading = notify.wait("RELOADING=1", since=m)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after, reloading
    notify.wait("READY=1", since=i + 1)
    assert p.alive() and get(p.port).status == 200

    m = notify.mark()
    p.signal(signal.SIGTERM)
    _, _, stopping = notify.wait("STOPPING=1", since=m)
    assert stopping.get("STATUS") == "Stopping"
    assert p.wait(10) == 0
    p.check_gone()


def test_notify_socket_path_and_no_leak_to_the_app(sups, tmp_path):
    """A path (not abstract) socket; the variables are gone from the
    process's environment once read, so the app's subprocesses never
    notify in the service's name."""
    d = tmp_path if len(str(tmp_path)) < 80 else None
    path = os.path.join(str(d) if d else "/tmp", "n-%s.sock" % uuid.uuid4().hex[:8])
    n = Notify(path)
    try:
        sups.copy_app("sup_app.py", "main.py")
        env = n.env(sups, watchdog_usec=10_000_000)
        p = sups.casgi("main:app", env=env, workers_started=0)
        n.wait("READY=1")
        r = get(p.port, "/env")
        assert r.status == 200
        seen = r.json()
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            assert name not in seen, f"{name} left in os.environ"
        p.finish(signal.SIGTERM)
    finally:
        n.close()
        if os.path.exists(path):
            os.unlink(path)


def test_notify_workers(sups, notify):
    sups.copy_app("sup_app.py", "main.py")
    env = notify.env(sups)
    p = sups.casgi("main:app", "--workers", "2", *WORKER_OPTS, env=env, workers_started=0)
    _, _, ready = notify.wait("READY=1")
    assert ready["STATUS"] == f"Serving on http://127.0.0.1:{p.port} (2 workers)", ready
    # READY=1 came once both workers serve: both answer right away.
    workers = live_children(p.pid)
    assert len(workers) == 2 and workers <= set(p.started_pids())
    assert len(notify.times("READY=1")) == 1

    m = notify.mark()
    mark = len(p.lines())
    p.signal(signal.SIGHUP)
    i, _, reloading = notify.wait("RELOADING=1", since=m)
    assert reloading.get("STATUS") == "Reloading" and int(reloading["MONOTONIC_USEC"]) > 0
    notify.wait("READY=1", since=i + 1, timeout=20)
    # The supervisor logs the end of the roll, then says READY=1 (the log
    # line may reach the test a little later than the datagram).
    p.wait_for("Rolling restart done", since=mark, timeout=2)
    assert len(notify.times("READY=1", since=m)) == 1
    new = set(p.started_pids(since=mark))
    assert len(new) == 2 and not (new & workers)
    assert all(p.tracker.alive(w) for w in new), "READY=1 while a new worker was not up"
    wait_until(lambda: live_children(p.pid) == new, 5, "the old workers gone", proc=p)

    m = notify.mark()
    p.signal(signal.SIGTERM)
    notify.wait("STOPPING=1", since=m)
    assert p.wait(10) == 0
    p.check_gone()


def test_watchdog_workers_stops_while_a_worker_loop_is_stuck(sups, notify):
    """WatchdogSec=2: the supervisor pings every second while every worker's
    loop beats; a worker blocked in a time.sleep (the health check is far
    off, so it is not replaced) stops the pings until it beats again."""
    sups.copy_app("sup_app.py", "main.py")
    env = notify.env(sups, watchdog_usec=2_000_000)
    p = sups.casgi("main:app", "--workers", "2", "--timeout-graceful-shutdown", "2",
                   "--timeout-worker-healthcheck", "30", env=env, workers_started=0)
    _, t_ready, _ = notify.wait("READY=1")
    time.sleep(3.5)
    check_cadence([t for t in notify.times("WATCHDOG=1") if t > t_ready], 1.0, "watchdog pings")

    mark = len(p.lines())
    c = RawConn.tcp("127.0.0.1", p.port, timeout=15)
    c.send(b"GET /block?5 HTTP/1.1\r\nhost: x\r\n\r\n")
    t0 = time.monotonic()
    assert c.read_response().status == 200
    t_end = time.monotonic()
    c.close()
    pings = notify.times("WATCHDOG=1")
    # The loop stops at t0: pings go on until its heartbeat is 2 s old
    # (at most t0 + 3), then none until it is free again (t_end).
    gap = [t for t in pings if t0 + 3.2 < t < t_end - 0.1]
    assert not gap, f"pinged while a worker was stuck: {[round(t - t0, 2) for t in gap]}"
    p.wait_for(r"sent no heartbeat for .* not pinging the systemd watchdog", since=mark, timeout=1)
    p.wait_for("Every worker's heartbeat is fresh", since=mark, timeout=5)
    assert any(t > t_end for t in pings) or notify.wait("WATCHDOG=1", since=notify.mark(), timeout=2)
    assert p.count(r"is not responding") == 0, "the worker was replaced: the test proves nothing"
    p.finish(signal.SIGTERM)


# ----------------------------------------------------------------------------
# Drain (Kubernetes: SIGTERM, then connections close as they finish)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drain_connection_close_on_next_response(sups, workers):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", "--workers", workers, *WORKER_OPTS, workers_started=int(workers))
    idle = RawConn.tcp("127.0.0.1", p.port)
    assert idle.request(req("GET", "/")).status == 200  # now idle, kept alive
    busy = RawConn.tcp("127.0.0.1", p.port, timeout=10)
    r = busy.request(req("GET", "/"))
    assert r.status == 200 and not r.has_token("connection", "close")
    busy.send(req("GET", "/slow?1.5"))
    time.sleep(0.5)
    p.signal(signal.SIGTERM)
    idle.assert_closed(timeout=1.5)
    r = busy.read_response()
    assert r.status == 200
    assert r.has_token("connection", "close"), f"in-flight response without connection: close: {r.headers}"
    busy.assert_closed(timeout=3)
    busy.close()
    idle.close()
    assert p.wait(10) == 0
    p.check_gone()


def test_sigterm_drain_is_bounded_by_timeout_graceful_shutdown(sups):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", "--workers", "2", "--timeout-graceful-shutdown", "1",
                   "--timeout-worker-healthcheck", "30", workers_started=2)
    conns = []
    for _ in range(2):
        c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
        c.send(req("GET", "/hang"))
        conns.append(c)
    time.sleep(0.5)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait(10) == 0
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= 3.5, f"stopped {elapsed:.2f}s after SIGTERM with --timeout-graceful-shutdown 1"
    for c in conns:
        c.read_until_close(timeout=2)
        c.close()
    p.check_gone()
