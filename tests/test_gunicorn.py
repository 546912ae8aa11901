"""casgi.workers.CasgiWorker under real gunicorn (from PyPI): startup,
requests (keep-alive, request bodies), lifespan, HUP, TERM, gunicorn's worker
timeout (the heartbeat must come from the event loop), boot errors. The
process tree is checked through /proc after every scenario."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest

from helpers import RawConn, free_port, req
from supervisor_util import (
    GUNICORN_BOOT_RE,
    get,
    live_children,
    wait_until,
)

pytest.importorskip("gunicorn")

pytestmark = pytest.mark.timeout(60)

WORKER = "casgi.workers.CasgiWorker"


def gunicorn_cmd(app: str, port: int, *extra: str, worker: str = WORKER) -> list:
    return [sys.executable, "-m", "gunicorn", "-k", worker, app, "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "2", "--log-level", "info", *extra]


def start_gunicorn(sups, *extra: str, workers: int = 2):
    sups.copy_app("sup_app.py", "main.py")
    port = free_port()
    p = sups.start([], cmd=gunicorn_cmd("main:app", port, "-w", str(workers), *extra), wait=False,
                   patterns=(GUNICORN_BOOT_RE,))
    p.wait_for(r"Listening at: http://127\.0\.0\.1:%d" % port, timeout=20)
    p.port = port
    pids = boots(p, workers)
    wait_until(lambda: len(live_children(p.pid)) == workers, 10, f"{workers} gunicorn workers", proc=p)
    wait_serving(p, set(pids))
    return p, pids


def boots(p, n: int, since: int = 0, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(m.group(1)) for _, m in p.timed_matches(GUNICORN_BOOT_RE, since)]
        if len(pids) >= n:
            return pids
        if time.monotonic() > deadline or not p.alive():
            raise AssertionError(f"{len(pids)} of {n} workers booted; output:\n{p.tail(since)}")
        time.sleep(0.05)


def wait_serving(p, want: set, timeout: float = 15.0) -> set:
    """Requests until every worker of `want` answered; returns the pids seen."""
    seen: set = set()
    deadline = time.monotonic() + timeout
    while not want <= seen:
        try:
            r = get(p.port, timeout=5)
            assert r.status == 200, r.status_line
            seen.add(int(r.header("x-pid")))
        except ConnectionRefusedError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"served by {seen}, expected {want}; output:\n{p.tail()}")
        time.sleep(0.01)
    return seen


def test_gunicorn_startup_requests_keepalive_bodies_lifespan(sups):
    p, pids = start_gunicorn(sups)
    assert "Booting worker" in p.stderr
    # Keep-alive: several requests on one connection, one worker.
    with RawConn.tcp("127.0.0.1", p.port) as c:
        got = [c.request(req("GET", "/")) for _ in range(5)]
        assert [r.status for r in got] == [200] * 5
        assert len({r.header("x-pid") for r in got}) == 1
        assert not any(r.has_token("connection", "close") for r in got)
        # A request body, by length and chunked.
        body = bytes(range(256)) * 400
        r = c.request(req("POST", "/echo", body=body))
        assert r.status == 200 and r.body == body
        chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        r = c.request(req("POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=chunked))
        assert r.status == 200 and r.body == b"hello world"
    # HTTP/1.0 without keep-alive is closed after the response.
    with RawConn.tcp("127.0.0.1", p.port) as c:
        r = c.request(req("GET", "/", version="HTTP/1.0"))
        assert r.status == 200
        c.assert_closed(3)
    started = {int(pid) for what, pid, _ in sups.hook_lines() if what == "startup"}
    assert set(pids) <= started, f"lifespan startup did not run in every worker: {started} vs {pids}"
    p.finish(signal.SIGTERM)
    stopped = {int(pid) for what, pid, _ in sups.hook_lines() if what == "shutdown"}
    assert set(pids) <= stopped, f"lifespan shutdown did not run in every worker: {stopped} vs {pids}"


def test_gunicorn_term_clean_exit(sups):
    p, pids = start_gunicorn(sups)
    c = RawConn.tcp("127.0.0.1", p.port)
    assert c.request(req("GET", "/")).status == 200
    t0 = time.monotonic()
    rc = p.finish(signal.SIGTERM, timeout=10)
    assert rc == 0
    assert time.monotonic() - t0 < 2 + 3
    assert re.search(r"Shutting down: Master", p.stderr), p.tail()
    assert "Traceback" not in p.output(), p.tail()
    c.close()


def test_gunicorn_hup_replaces_workers_and_keeps_serving(sups):
    p, pids = start_gunicorn(sups)
    mark = p.mark()
    p.signal(signal.SIGHUP)
    p.wait_for(r"Handling signal: hup", since=mark, timeout=5)
    new = boots(p, 2, since=mark)
    assert not set(new) & set(pids)
    wait_until(lambda: not any(p.tracker.alive(x) for x in pids), 2 + 3, "old workers gone", proc=p)
    wait_until(lambda: live_children(p.pid) == set(new), 5, "only the new workers", proc=p)
    assert wait_serving(p, set(new)) == set(new)
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


def test_gunicorn_timeout_idle_worker_is_not_killed(sups):
    """gunicorn's --timeout watches the heartbeat; an idle worker must keep
    sending it."""
    p, pids = start_gunicorn(sups, "--timeout", "2", workers=1)
    time.sleep(4.5)
    assert "WORKER TIMEOUT" not in p.stderr, p.tail()
    assert live_children(p.pid) == set(pids)
    assert int(get(p.port).header("x-pid")) == pids[0]
    p.finish(signal.SIGTERM)


def assert_blocked_worker_replaced(p, victim: int, mark: int, t0: float, timeout: float) -> float:
    m = p.wait_for(r"WORKER TIMEOUT \(pid:(\d+)\)", since=mark, timeout=timeout + 6)
    took = time.monotonic() - t0
    assert int(m.group(1)) == victim
    new = wait_until(lambda: [x for x in boots(p, 1, since=mark) if x != victim], 10,
                     "a replacement worker booted", proc=p)[0]
    wait_until(lambda: not p.tracker.alive(victim), 5, "blocked worker gone", proc=p)
    assert wait_serving(p, {new}) == {new}
    p.tracker.assert_no_zombies()
    return took


def test_gunicorn_timeout_kills_and_replaces_a_blocked_worker(sups):
    p, pids = start_gunicorn(sups, "--timeout", "2", workers=1)
    time.sleep(2.5)  # the worker has been serving for a while
    mark = p.mark()
    c = RawConn.tcp("127.0.0.1", p.port, timeout=15)
    t0 = time.monotonic()
    c.send(req("GET", "/block"))
    took = assert_blocked_worker_replaced(p, pids[0], mark, t0, 2)
    c.close()
    print(f"\ngunicorn timeout: blocked worker detected after {took:.2f}s")
    p.finish(signal.SIGTERM)


def test_gunicorn_timeout_worker_blocked_by_its_first_request(sups):
    """The first request, waiting in the backlog while the worker boots,
    blocks its loop before any heartbeat: gunicorn's timeout must still fire
    (gunicorn's heartbeat file starts with a wall-clock time that its check
    reads as "fresh" until the worker's first notify())."""
    sups.copy_app("sup_app.py", "main.py")
    port = free_port()
    p = sups.start([], cmd=gunicorn_cmd("main:app", port, "-w", "1", "--timeout", "2"), wait=False,
                   patterns=(GUNICORN_BOOT_RE,))
    p.port = port
    p.wait_for(r"Listening at: http://127\.0\.0\.1:%d" % port, timeout=20)
    c = RawConn.tcp("127.0.0.1", port, timeout=15)
    t0 = time.monotonic()
    c.send(req("GET", "/block"))
    victim = boots(p, 1)[0]
    took = assert_blocked_worker_replaced(p, victim, 0, t0, 2)
    c.close()
    print(f"\ngunicorn timeout, first request blocking: detected after {took:.2f}s")
    p.finish(signal.SIGTERM)


SLOW_IMPORT_APP = """\
import os
import time

try:  # only the first worker to import this is slow
    fd = os.open(os.environ["SLOW_IMPORT_MARK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
except FileExistsError:
    pass
else:
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(2.0)

from main import app  # noqa: E402
"""


def test_gunicorn_term_while_the_worker_loads_the_app_stops_it(sups):
    """gunicorn's signal handlers are live before the worker loads the app; a
    TERM they catch only clears the worker's `alive`. The worker must then
    exit instead of serving until gunicorn gives up on it and kills it."""
    sups.copy_app("sup_app.py", "main.py")
    (sups.workdir / "slow_import.py").write_text(SLOW_IMPORT_APP)
    mark_file = sups.workdir / "slow_import.mark"
    port = free_port()
    p = sups.start([], env=sups.env({"SLOW_IMPORT_MARK": str(mark_file)}),
                   cmd=gunicorn_cmd("slow_import:app", port, "-w", "1"), wait=False,
                   patterns=(GUNICORN_BOOT_RE,))
    p.port = port
    wait_until(lambda: mark_file.exists() and mark_file.read_text(), 20, "the worker importing the app", proc=p)
    victim = int(mark_file.read_text())
    mark = p.mark()
    t0 = time.monotonic()
    os.kill(victim, signal.SIGTERM)
    wait_until(lambda: not p.tracker.alive(victim), 2.0 + 4, "the worker told to exit while loading", proc=p)
    print(f"\nTERM while loading the app: worker gone {time.monotonic() - t0:.2f}s after it")
    assert re.search(r"Worker told to exit while booting \(pid: %d\)" % victim, p.output()), p.tail()
    assert not re.search(r"Started server process \[%d\]" % victim, p.output()), p.tail()
    new = [x for x in boots(p, 1, since=mark) if x != victim]
    assert new, p.tail()
    assert wait_serving(p, set(new)) == set(new)
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


@pytest.mark.parametrize("app", ["casgi_test_no_such_module:app", "main:no_such_attribute"],
                         ids=["missing-module", "missing-attribute"])
def test_gunicorn_boot_error_exit_status(sups, app):
    """The app cannot load: gunicorn exits with its boot-error status, the same
    one its own sync worker gets for the same app."""
    sups.copy_app("sup_app.py", "main.py")
    ref = sups.start([], cmd=gunicorn_cmd(app, free_port(), worker="sync"), wait=False, patterns=(GUNICORN_BOOT_RE,))
    expected = ref.wait(30)
    ref.check_gone()
    assert expected in (3, 4), f"gunicorn's sync worker exited {expected}:\n{ref.tail()}"
    p = sups.start([], cmd=gunicorn_cmd(app, free_port()), wait=False, patterns=(GUNICORN_BOOT_RE,))
    rc = p.wait(30)
    p.check_gone()
    assert rc == expected, f"exit status {rc}, gunicorn's boot-error status here is {expected}:\n{p.tail()}"


def test_gunicorn_max_requests_replaces_workers_without_failed_requests(sups):
    from supervisor_util import LoadClient

    p, pids = start_gunicorn(sups, "--max-requests", "30", "--max-requests-jitter", "5")
    mark = p.mark()
    with LoadClient(p.port) as load:
        boots(p, 3, since=mark, timeout=30)
        time.sleep(0.3)
    print(f"\ngunicorn max-requests: {load.report()}; {len(load.pids)} workers served")
    assert not load.failures, load.report() + "\n" + p.tail()
    assert len(load.pids) >= 4
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


def test_gunicorn_term_with_an_open_stream_workers_exit_within_graceful_timeout(sups):
    """An open response that never ends: the workers must finish (drain,
    lifespan shutdown, exit) within gunicorn's graceful_timeout. gunicorn's
    arbiter waits graceful_timeout, then SIGKILLs what is left, makes one
    non-blocking reap pass and exits: a worker still running at that point is
    killed and left unreaped."""
    p, pids = start_gunicorn(sups)
    conns = []
    for _ in range(4):  # enough that both workers most likely hold one
        c = RawConn.tcp("127.0.0.1", p.port, timeout=10)
        c.send(req("GET", "/stream"))
        assert c.read_head().status == 200
        conns.append(c)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    rc = p.wait(10)
    took = time.monotonic() - t0
    p.check_gone()
    assert rc == 0
    assert took < 2 + 2.5, f"TERM took {took:.2f}s with --graceful-timeout 2"
    stopped = {int(pid) for what, pid, _ in sups.hook_lines() if what == "shutdown"}
    assert set(pids) <= stopped, f"lifespan shutdown did not complete in every worker: {stopped} vs {pids}"
    for c in conns:
        c.read_until_close(timeout=1)
        c.close()


def test_gunicorn_tls_settings_are_served_by_casgi(sups, tmp_path):
    """gunicorn's certfile/keyfile/ca_certs/cert_reqs reach casgi's TLS engine:
    HTTPS with a client certificate required, scheme https, the tls extension."""
    import json
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("client@example.org")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(certfile))
    server.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    sups.copy_app("sup_app.py", "main.py")
    port = free_port()
    p = sups.start([], cmd=gunicorn_cmd("main:app", port, "-w", "1", "--certfile", str(certfile),
                                        "--keyfile", str(keyfile), "--ca-certs", str(cafile),
                                        "--cert-reqs", "2"),
                   wait=False, patterns=(GUNICORN_BOOT_RE,))
    p.wait_for(r"Listening at: https://127\.0\.0\.1:%d" % port, timeout=20)
    boots(p, 1)

    def fetch(with_cert: bool) -> dict:
        ctx = ssl.create_default_context(cafile=str(cafile))
        if with_cert:
            client.configure_cert(ctx)
        import http.client

        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/tls")
            r = conn.getresponse()
            assert r.status == 200
            return json.loads(r.read())
        finally:
            conn.close()

    deadline = time.monotonic() + 15
    while True:
        try:
            got = fetch(True)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert got["scheme"] == "https"
    assert got["tls"]["tls_version"] == 0x0304
    assert got["tls"]["client_cert_chain"] and got["tls"]["client_cert_chain"][0].startswith(
        "-----BEGIN CERTIFICATE-----")
    assert got["tls"]["client_cert_error"] is None
    # cert_reqs 2: a client without a certificate is refused in the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        fetch(False)
    p.finish(signal.SIGTERM)


def test_gunicorn_settings_casgi_refuses_stop_gunicorn_with_the_reason(sups, tmp_path):
    """A setting casgi refuses as an option (here --cert-reqs 2 without
    --ca-certs; likewise h2 in http_protocols on a build without nghttp2) is a
    boot error: gunicorn stops with its boot-error status and the one-line
    reason, instead of starting a new worker for each one that fails."""
    from gunicorn.arbiter import Arbiter

    trustme = pytest.importorskip("trustme")
    server = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(certfile))
    server.private_key_pem.write_to_path(str(keyfile))
    sups.copy_app("sup_app.py", "main.py")
    # One worker: gunicorn 27's arbiter itself fails (exit 1) when a second
    # worker's boot error arrives while it halts for the first.
    p = sups.start([], cmd=gunicorn_cmd("main:app", free_port(), "-w", "1", "--certfile", str(certfile),
                                        "--keyfile", str(keyfile), "--cert-reqs", "2"),
                   wait=False, patterns=(GUNICORN_BOOT_RE,))
    rc = p.wait(30)
    p.check_gone()
    assert rc == Arbiter.WORKER_BOOT_ERROR, f"exit status {rc}:\n{p.tail()}"
    assert "option '--ssl-cert-reqs 2' requires '--ssl-ca-certs'" in p.stderr, p.tail()
    assert "Traceback" not in p.stderr, p.tail()
    boots_seen = len(p.timed_matches(GUNICORN_BOOT_RE, 0))
    assert boots_seen == 1, f"{boots_seen} workers started:\n{p.tail()}"


def gunicorn_has_http2_settings() -> bool:
    import gunicorn.config

    return any(s.name == "http_protocols" for s in gunicorn.config.KNOWN_SETTINGS)


@pytest.mark.skipif(not gunicorn_has_http2_settings(), reason="gunicorn < 25 has no HTTP/2 settings")
@pytest.mark.parametrize("args,want", [
    ([], {"http2": False, "h2_max_concurrent_streams": 100, "h2_max_header_list_size": 65536,
          "h2_initial_window_size": 65535}),
    (["--http-protocols", "h2,h1", "--http2-max-concurrent-streams", "7",
      "--http2-max-header-list-size", "0", "--http2-initial-window-size", "1048576"],
     {"http2": True, "h2_max_concurrent_streams": 7, "h2_max_header_list_size": 16777216,
      "h2_initial_window_size": 1048576}),
    (["--http-protocols", "h1,h2", "--http2-max-concurrent-streams", "4294967296",
      "--http2-max-header-list-size", "100", "--http2-initial-window-size", "0"],
     {"http2": True, "h2_max_concurrent_streams": 2147483647, "h2_max_header_list_size": 1024,
      "h2_initial_window_size": 0}),
], ids=["gunicorn-default-h1", "h2-first", "h2-second-and-limits"])
def test_gunicorn_http_protocols_map_onto_http2_options(sups, args, want):
    """gunicorn's http_protocols and http2_* settings reach casgi as --http2 /
    --no-http2 and the --h2-* options, and casgi takes them (the worker serves)."""
    import json

    if "--http-protocols" in args:
        # gunicorn refuses h2 in http_protocols unless its own h2 dependency is installed.
        pytest.importorskip("h2")
    sups.copy_app("sup_app.py", "main.py")
    sups.copy_app("options_worker.py")
    record = sups.workdir / "worker_options.json"
    port = free_port()
    p = sups.start([], env=sups.env({"CASGI_TEST_WORKER_OPTIONS": str(record)}),
                   cmd=gunicorn_cmd("main:app", port, "-w", "1", *args,
                                    worker="options_worker.OptionsRecordingWorker"),
                   wait=False, patterns=(GUNICORN_BOOT_RE,))
    p.wait_for(r"Listening at: http://127\.0\.0\.1:%d" % port, timeout=20)
    p.port = port
    pids = boots(p, 1)
    wait_serving(p, set(pids))
    passed = json.loads(record.read_text())
    assert {k: passed.get(k) for k in want} == want, passed
    p.finish(signal.SIGTERM)


@pytest.mark.skipif(not gunicorn_has_http2_settings(), reason="gunicorn < 25 has no HTTP/2 settings")
@pytest.mark.parametrize("protocols,h2", [("h2,h1", True), (None, False)])
def test_gunicorn_worker_serves_http2(sups, protocols, h2):
    """Under gunicorn with h2 in --http-protocols, the casgi worker serves h2c
    (prior knowledge) beside HTTP/1.1 on gunicorn's socket; with gunicorn's
    default (h1) the HTTP/2 preface is not served as HTTP/2."""
    import httpx

    pytest.importorskip("h2")
    extra = ("--http-protocols", protocols) if protocols else ()
    p, _ = start_gunicorn(sups, *extra, workers=1)
    url = f"http://127.0.0.1:{p.port}/"
    with httpx.Client(timeout=5) as client:
        r = client.get(url)
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        if h2:
            r = client.get(url)
            assert r.status_code == 200 and r.http_version == "HTTP/2"
        else:
            with pytest.raises(httpx.HTTPError):
                client.get(url)
    p.finish(signal.SIGTERM)
