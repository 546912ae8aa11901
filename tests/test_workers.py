"""--workers N end to end: respawn, crash-loop backoff, boot failure, the
event-loop health check, rolling restart under load, TTIN/TTOU,
max-requests retirement, WEB_CONCURRENCY. The process tree is checked
through /proc after every scenario."""

from __future__ import annotations

import os
import signal
import time

import pytest

from helpers import RawConn, req
from supervisor_util import (
    DIED_RE,
    WORKER_OPTS,
    LoadClient,
    get,
    live_children,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def start_workers(sups, n, *extra, env=None):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", "--workers", str(n), *WORKER_OPTS, *extra, env=env, workers_started=n)
    p.wait_for(r"Started parent process \[%d\]" % p.pid)
    wait_until(lambda: len(live_children(p.pid)) == n, 5, f"{n} live workers", proc=p)
    return p


def pids_serving(port, want: set, timeout: float = 10.0) -> set:
    """Sends requests until every pid of `want` answered (or the time is up)."""
    seen: set = set()
    deadline = time.monotonic() + timeout
    while not want <= seen and time.monotonic() < deadline:
        r = get(port)
        assert r.status == 200
        seen.add(int(r.header("x-pid")))
    return seen


def test_three_workers_all_serve(sups):
    p = start_workers(sups, 3)
    started = set(p.started_pids())
    assert len(started) == 3
    assert live_children(p.pid) == started
    seen = pids_serving(p.port, started)
    assert seen == started, f"served by {seen}; workers {started}"
    p.finish(signal.SIGTERM)


def test_web_concurrency_gives_two_workers(sups):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", *WORKER_OPTS, env=sups.env({"WEB_CONCURRENCY": "2"}), workers_started=2)
    p.wait_for(r"Started parent process \[%d\]" % p.pid)
    wait_until(lambda: len(live_children(p.pid)) == 2, 5, "two live workers", proc=p)
    time.sleep(0.5)
    assert len(p.started_pids()) == 2
    assert pids_serving(p.port, set(p.started_pids())) == set(p.started_pids())
    p.finish(signal.SIGTERM)


def test_killed_worker_is_replaced(sups):
    p = start_workers(sups, 2)
    a, b = p.started_pids()
    for victim in (a, b):
        mark = p.mark()
        os.kill(victim, signal.SIGKILL)
        m = p.wait_for(DIED_RE, since=mark, timeout=5)
        assert int(m.group(1)) == victim and m.group(2) == "signal 9", m.group(0)
        new = p.wait_started(1, since=mark, timeout=10)[0]
        wait_until(lambda: len(live_children(p.pid)) == 2, 5, "two live workers again", proc=p)
        p.tracker.assert_no_zombies()
        assert not p.tracker.alive(victim)
        assert new in live_children(p.pid)
    workers = live_children(p.pid)
    assert pids_serving(p.port, workers) == workers
    # An exit status is logged too.
    mark = p.mark()
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGTERM)  # a worker that stops by itself, not asked by the supervisor
    m = p.wait_for(DIED_RE, since=mark, timeout=5)
    assert int(m.group(1)) == victim and m.group(2) == "exit status 0", m.group(0)
    p.wait_started(1, since=mark, timeout=10)
    p.finish(signal.SIGTERM)


def test_crash_loop_backoff_grows(sups):
    """One worker of two exits 0.2 s after each start (the other holds a lock
    and stays): the spacing between its deaths must grow."""
    env = sups.env({"SUP_CRASH_AFTER": "0.2", "SUP_CRASH_LOCK": str(sups.workdir / "stable.lock")})
    sups.copy_app("sup_app.py", "main.py")
    p = sups.casgi("main:app", "--workers", "2", *WORKER_OPTS, env=env, workers_started=2)
    deaths = wait_until(lambda: (lambda d: d if len(d) >= 6 else None)(p.timed_matches(DIED_RE)), 30,
                        "six deaths of the crashing worker", interval=0.05, proc=p)
    times = [t for t, _ in deaths[:6]]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    print(f"\ngaps between deaths: {gaps}")
    assert all(m.group(2) == "exit status 1" for _, m in deaths)
    # Backoff doubling (0.1 s, 0.2, 0.4, 0.8, ...) on top of a constant life time.
    assert gaps[-1] - gaps[0] >= 1.0, f"restart spacing does not grow: {gaps}"
    for g0, g1 in zip(gaps, gaps[1:]):
        assert g1 >= g0 - 0.15, f"restart spacing shrank: {gaps}"
    # The stable worker kept serving throughout.
    r = get(p.port)
    assert r.status == 200
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


@pytest.mark.parametrize("app", ["casgi_test_no_such_module:app", "main:no_such_attribute"])
def test_boot_failure_stops_the_server_with_exit_3(sups, app):
    sups.copy_app("sup_app.py", "main.py")
    p = sups.start([app, "--port", "0", "--workers", "2", *WORKER_OPTS], wait=False)
    rc = p.wait(15)
    p.check_gone()
    assert rc == 3, f"exit status {rc}:\n{p.tail()}"
    assert "failed to boot" in p.stderr or "cannot be loaded" in p.stderr, p.tail()


def test_blocked_event_loop_is_detected_dumped_and_replaced(sups):
    p = start_workers(sups, 2)
    before = set(p.started_pids())
    mark = p.mark()
    c = RawConn.tcp("127.0.0.1", p.port, timeout=15)
    t0 = time.monotonic()
    c.send(req("GET", "/block"))
    m = p.wait_for(r"Worker \[(\d+)\] is not responding", since=mark, timeout=3 + 3)
    detected = time.monotonic() - t0
    stuck = int(m.group(1))
    assert stuck in before
    assert detected < 3 + 1.5, f"detected after {detected:.2f}s with --timeout-worker-healthcheck 3"
    # Its Python stack, naming the blocking handler, is in the log.
    p.wait_for(r"blocking_handler_in_event_loop", since=mark, timeout=3)
    wait_until(lambda: not p.tracker.alive(stuck), 3, f"stuck worker [{stuck}] killed", proc=p)
    new = p.wait_started(1, since=mark, timeout=10)
    wait_until(lambda: len(live_children(p.pid)) == 2, 5, "two live workers again", proc=p)
    p.tracker.assert_no_zombies()
    c.read_until_close(timeout=3)
    c.close()
    assert pids_serving(p.port, live_children(p.pid)) == live_children(p.pid)
    print(f"\nblocked loop detected after {detected:.2f}s; replacement {new}")
    p.finish(signal.SIGTERM)


def test_sighup_rolling_restart_under_load_no_failed_request(sups):
    p = start_workers(sups, 2)
    old = set(p.started_pids())
    mark = p.mark()
    with LoadClient(p.port) as l1, LoadClient(p.port) as l2:
        time.sleep(0.3)
        p.signal(signal.SIGHUP)
        p.wait_for(r"Rolling restart done", since=mark, timeout=20)
        new = set(p.started_pids(mark))
        time.sleep(0.5)
    wait_until(lambda: not any(p.tracker.alive(x) for x in old), 5, "old workers gone", proc=p)
    assert len(new) == 2 and not new & old
    assert live_children(p.pid) == new
    report = f"client 1: {l1.report()}; client 2: {l2.report()}"
    print(f"\nrolling restart under load: {report}")
    assert not l1.failures and not l2.failures, report + "\n" + p.tail()
    assert new <= set(l1.pids) | set(l2.pids), "the new workers did not serve"
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


def test_ttin_ttou_change_the_number_of_workers(sups):
    p = start_workers(sups, 2)
    p.signal(signal.SIGTTIN)
    wait_until(lambda: len(live_children(p.pid)) == 3, 10, "three workers after SIGTTIN", proc=p)
    three = live_children(p.pid)
    assert pids_serving(p.port, three) == three
    for want in (2, 1):
        p.signal(signal.SIGTTOU)
        wait_until(lambda: len(live_children(p.pid)) == want, 8, f"{want} worker(s) after SIGTTOU", proc=p)
    mark = p.mark()
    p.signal(signal.SIGTTOU)
    p.wait_for(r"SIGTTOU", since=mark, timeout=3)
    time.sleep(1.0)
    assert len(live_children(p.pid)) == 1, "SIGTTOU went below one worker"
    p.tracker.assert_no_zombies()
    assert get(p.port).status == 200
    p.finish(signal.SIGTERM)


def test_max_requests_retires_workers_without_failed_requests(sups):
    p = start_workers(sups, 2, "--limit-max-requests", "20", "--limit-max-requests-jitter", "10")
    mark = p.mark()
    with LoadClient(p.port) as load:
        wait_until(lambda: len(p.started_pids(mark)) >= 6, 30, "six replacement workers", proc=p)
        time.sleep(0.3)
    print(f"\nmax-requests: {load.report()}; {len(load.pids)} workers served")
    assert not load.failures, load.report() + "\n" + p.tail()
    retired = [int(m.group(1)) for _, m in p.timed_matches(r"Worker \[(\d+)\] is retiring", mark)]
    assert len(retired) >= 6, p.tail(mark)
    # A retiring worker serves until its replacement is ready, then it is stopped.
    wait_until(lambda: len(live_children(p.pid)) == 2, 5, "two workers", proc=p)
    wait_until(lambda: not any(p.tracker.alive(x) for x in retired), 4, "retired workers gone", proc=p)
    assert not set(retired) & live_children(p.pid)
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


def test_sighup_roll_with_a_broken_replacement_keeps_the_old_workers(sups):
    p = start_workers(sups, 2)
    old = set(p.started_pids())
    main = sups.workdir / "main.py"
    good = main.read_text()
    main.write_text("def broken(:\n" + good)
    mark = p.mark()
    p.signal(signal.SIGHUP)
    p.wait_for(r"Rolling restart aborted", since=mark, timeout=15)
    time.sleep(0.3)
    assert p.alive()
    assert live_children(p.pid) == old, "the old workers must keep serving"
    assert pids_serving(p.port, old) == old
    p.tracker.assert_no_zombies()
    main.write_text(good.replace('VERSION = "v0"', 'VERSION = "v1"'))
    mark = p.mark()
    p.signal(signal.SIGHUP)
    p.wait_for(r"Rolling restart done", since=mark, timeout=20)
    new = set(p.started_pids(mark))
    wait_until(lambda: live_children(p.pid) == new, 5, "only the new workers", proc=p)
    assert get(p.port).body.startswith(b"v1 ")
    p.finish(signal.SIGTERM)


def test_stop_is_bounded_when_workers_do_not_stop(sups):
    """Lifespan shutdown that takes 60 s: SIGTERM still ends within the bound,
    with exit status 0."""
    p = start_workers(sups, 2, env=sups.env({"SUP_SLOW_SHUTDOWN": "60"}))
    t0 = time.monotonic()
    rc = p.finish(signal.SIGTERM, timeout=2 + 4)
    assert rc == 0
    assert time.monotonic() - t0 < 2 + 2.5


STARTUP_HANG_APP = '''
import asyncio, os, signal
from main import app as inner

def _first_worker():
    try:
        os.close(os.open(os.environ["HANG_FLAG"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False

async def app(scope, receive, send):
    if scope["type"] == "lifespan" and _first_worker():
        if os.environ["HANG_HOW"] == "sigstop":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            await asyncio.Event().wait()  # lifespan startup never completes
    await inner(scope, receive, send)
'''


@pytest.mark.parametrize("how", ["lifespan-hang", "sigstop"])
def test_worker_not_ready_in_time_is_replaced(sups, how):
    """The first worker hangs in lifespan startup (or stops itself) before it
    reports ready: after --timeout-worker-startup it is killed, logged and
    replaced, and every worker then serves."""
    sups.copy_app("sup_app.py", "main.py")
    (sups.workdir / "hang.py").write_text(STARTUP_HANG_APP)
    env = sups.env({"HANG_FLAG": str(sups.workdir / "hung.flag"), "HANG_HOW": how})
    p = sups.casgi("hang:app", "--workers", "2", *WORKER_OPTS, "--timeout-worker-startup", "1",
                   env=env, workers_started=2)
    m = p.wait_for(r"ERROR.*Worker \[(\d+)\] was not ready within 1 s", timeout=5)
    hung = int(m.group(1))
    assert hung in p.started_pids()
    wait_until(lambda: not p.tracker.alive(hung), 5, f"worker [{hung}] killed", proc=p)
    wait_until(lambda: len(live_children(p.pid)) == 2, 5, "two live workers again", proc=p)
    p.tracker.assert_no_zombies()
    workers = live_children(p.pid)
    assert hung not in workers
    assert pids_serving(p.port, workers) == workers
    p.finish(signal.SIGTERM)
