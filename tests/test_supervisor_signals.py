"""Signals to the supervisor, in reload mode and in workers mode: Ctrl-C to the
whole process group, SIGTERM / SIGQUIT / SIGKILL to the supervisor alone,
SIGHUP. Every scenario ends with the whole process tree gone (no process
alive, no zombie) and the supervisor reaped by the test."""

from __future__ import annotations

import os
import signal
import time

import pytest

from helpers import RawConn, req
from supervisor_util import (
    RELOAD_OPTS,
    WORKER_OPTS,
    get,
    live_children,
    wait_until,
    wait_version,
)

pytestmark = pytest.mark.timeout(60)

MODES = {
    "reload": (RELOAD_OPTS, 1),
    "workers": (["--workers", "2", *WORKER_OPTS], 2),
    "reload-workers": ([*RELOAD_OPTS, "--workers", "2"], 2),
}


def start(sups, mode):
    opts, n = MODES[mode]
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", *opts, workers_started=n)
    wait_until(lambda: len(p.tracker.workers()) == n, 5, f"{n} live workers", proc=p)
    if "--reload" in opts:
        # Every scenario also stops the standby worker.
        wait_until(lambda: len(p.tracker.standbys()) == 1, 10, "a standby worker", proc=p)
    assert get(p.port).status == 200
    return p, p.started_pids()


def assert_graceful(sups, pids):
    hooks = sups.hook_lines()
    for pid in pids:
        entries = [w for w, hp, _ in hooks if int(hp) == pid]
        assert entries == ["startup", "shutdown"], f"worker [{pid}] hooks: {entries}"


@pytest.mark.parametrize("mode", list(MODES))
def test_ctrl_c_to_the_group_stops_gracefully_exit_0(sups, mode):
    p, pids = start(sups, mode)
    t0 = time.monotonic()
    rc = p.finish(signal.SIGINT, group=True, timeout=8)
    assert rc == 0
    assert time.monotonic() - t0 < 2 + 3, "stop took longer than the graceful bound"
    assert_graceful(sups, pids)
    assert "Traceback" not in p.output(), p.tail()


def test_ctrl_c_to_the_group_lets_requests_in_flight_finish(sups):
    """A Ctrl-C to the group reaches a worker twice, its own SIGINT and the
    SIGTERM its supervisor forwards, in either order: neither order forces,
    so a request in flight is answered and lifespan shutdown runs."""
    p, pids = start(sups, "workers")
    conns = []
    for _ in range(4):  # both workers, whichever takes which
        c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
        c.send(req("GET", "/slow?1"))
        conns.append(c)
    time.sleep(0.3)
    os.killpg(p.pid, signal.SIGINT)
    for c in conns:
        r = c.read_response()
        assert r.status == 200, r.status
        c.close()
    assert p.wait(8) == 0
    p.check_gone()
    assert_graceful(sups, pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("mode", list(MODES))
def test_signal_to_the_supervisor_alone_stops_gracefully_exit_0(sups, mode, sig):
    p, pids = start(sups, mode)
    p.finish(sig, timeout=8)
    assert_graceful(sups, pids)


def test_graceful_stop_is_bounded_with_an_open_stream(sups):
    """A response that never ends does not hold the stop beyond the bound."""
    p, pids = start(sups, "workers")
    conns = []
    for _ in range(2):
        c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
        c.send(req("GET", "/stream"))
        assert c.read_head().status == 200
        conns.append(c)
    t0 = time.monotonic()
    p.finish(signal.SIGTERM, timeout=8)
    took = time.monotonic() - t0
    assert took < 2 + 2.5, f"stopping took {took:.2f}s with --timeout-graceful-shutdown 2"
    for c in conns:
        c.read_until_close(timeout=1)
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_signal_forces(sups, sig):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", "--workers", "2", "--timeout-graceful-shutdown", "30", workers_started=2)
    c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
    c.send(req("GET", "/hang"))
    time.sleep(0.3)
    p.signal(sig)
    time.sleep(0.5)
    assert p.alive(), "the first signal with a request open must wait (graceful)"
    t0 = time.monotonic()
    p.signal(sig)
    p.wait(5)
    assert time.monotonic() - t0 < 3
    p.check_gone()
    c.close()


def test_sigterm_to_the_whole_group_stays_graceful(sups):
    """systemd's default KillMode sends SIGTERM to every process of the unit:
    each worker gets it from there and again from its supervisor. That is one
    stop, not a forced one: the request in flight is answered."""
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", "--workers", "2", "--timeout-graceful-shutdown", "30", workers_started=2)
    c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
    c.send(req("GET", "/slow?1.5"))
    time.sleep(0.3)
    workers = p.tracker.workers()
    assert len(workers) == 2, workers
    for pid in [p.pid, *workers]:
        os.kill(pid, signal.SIGTERM)
    r = c.read_response()
    assert r.status == 200
    assert p.wait(10) == 0
    p.check_gone()
    c.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_sigquit_stops_at_once(sups, mode):
    p, pids = start(sups, mode)
    c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
    c.send(req("GET", "/hang"))
    time.sleep(0.3)
    t0 = time.monotonic()
    p.signal(signal.SIGQUIT)
    p.wait(5)
    assert time.monotonic() - t0 < 1.5, "SIGQUIT must not wait for a graceful shutdown"
    p.check_gone()
    c.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_sigkill_to_the_supervisor_takes_the_workers_down_within_2s(sups, mode):
    p, pids = start(sups, mode)
    workers = p.tracker.workers()
    assert workers and set(pids) <= workers
    workers |= p.tracker.standbys()
    port = p.port
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    wait_until(lambda: not any(p.tracker.alive(w) for w in workers), 2.0,
               f"workers {sorted(workers)} gone after the supervisor was SIGKILLed", proc=p)
    took = time.monotonic() - t0
    p.check_gone(orphans_expected=True)
    # Nobody serves on the port any more.
    with pytest.raises(ConnectionRefusedError):
        get(port, timeout=2)
    print(f"\nworkers gone {took:.3f}s after SIGKILL to the supervisor")


def test_sighup_in_reload_mode_restarts_now_every_time(sups):
    p, pids = start(sups, "reload")
    prev = pids[0]
    for i in range(4):
        mark = p.mark()
        p.signal(signal.SIGHUP)
        p.wait_for(r"Received SIGHUP\. Reloading", since=mark, timeout=3)
        new = p.wait_started(1, since=mark, timeout=10)[0]
        assert new != prev
        wait_until(lambda: not p.tracker.alive(prev), 4, f"old worker [{prev}] gone", proc=p)
        r = wait_version(p.port, "v0", proc=p)[0]
        assert int(r.header("x-pid")) == new
        wait_until(lambda: {c for c in live_children(p.pid) if not p.tracker.standby(c)} == {new},
                   2, f"only worker [{new}] (and a standby)", proc=p)
        p.tracker.assert_no_zombies()
        prev = new
    p.finish(signal.SIGTERM)
    assert_graceful(sups, p.started_pids())
