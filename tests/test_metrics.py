"""--metrics-port: the Prometheus exposition of a real server, parsed with
prometheus_client's own text parser, after real requests of every kind.

- A single process: HTTP/1.0, HTTP/1.1 (statuses of every class), HTTP/2
  (h2c), a WebSocket session and a refused handshake, parser rejections (431,
  400) over raw sockets; exact counts, gauges back to zero.
- TLS: handshakes completed and failed, HTTP/2 over TLS.
- /metrics answers while the app's loop is blocked (time.sleep in the app):
  it is served outside the loop.
- --workers 2: counts aggregated over the workers; a worker killed with
  SIGKILL is replaced, its counts stay (no counter goes backwards) and
  worker_restarts_total{cause="crash"} is 1.
- A metrics port in use is a clear startup error (exit 3), in both modes.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from h2_util import FrameConn
from helpers import RawConn, free_port, loop_params, run_casgi, APPS_DIR
from tls_util import Pki

APP = "metrics_app:app"


def scrape(port: int, timeout: float = 5.0) -> dict:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def req_count(m: dict, proto: str, cls: str) -> float:
    return m[("casgi_requests_total", (("protocol", proto), ("status", cls)))]


def value(m: dict, name: str, **labels) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def wait_value(port: int, name: str, want: float, timeout: float = 5.0, **labels) -> dict:
    """Scrapes until `name` has the value `want` (a gauge settling); returns the scrape."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(port)
        if value(m, name, **labels) == want:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} is {value(m, name, **labels)}, not {want}")
        time.sleep(0.05)


def counters(m: dict) -> dict:
    """The samples that never go down (every one but the gauges)."""
    gauges = {"casgi_connections_open", "casgi_requests_active", "casgi_websocket_sessions_active",
              "casgi_workers"}
    return {k: v for k, v in m.items() if k[0] not in gauges}


def raw_exchange(port: int, data: bytes) -> int:
    """Sends `data` on a new connection; returns the response's status."""
    with RawConn.tcp("127.0.0.1", port) as c:
        c.send(data)
        return c.read_response().status


def h2_get(port: int, path: str) -> int:
    with FrameConn.tcp(port) as c:
        c.start()
        sid = c.send_request("GET", path)
        return c.reply(sid).status


# ----------------------------------------------------------------------------
# A single process
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", loop_params())
def test_single_process_counts_every_kind_of_request(start_server, loop):
    mport = free_port()
    p = start_server(APP, "--metrics-port", str(mport), loop=loop)
    p.wait_for(rf"Metrics on http://127\.0\.0\.1:{mport}/metrics")
    before = scrape(mport)
    assert all(v == 0 for k, v in before.items() if k[0] != "casgi_workers"), before
    assert value(before, "casgi_workers") == 1

    with httpx.Client(base_url=p.url) as client:  # one keep-alive connection
        for status in (200, 200, 204, 404, 418, 500, 302):
            assert client.get(f"/status/{status}").status_code == status
    assert raw_exchange(p.port, b"GET /status/201 HTTP/1.0\r\n\r\n") == 201
    big = b"x-big: " + b"a" * 9000 + b"\r\n"
    assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n") == 431
    assert raw_exchange(p.port, b"GET / HTTP/1.1\r\nhost: x\r\nbad field: 1\r\n\r\n") == 400
    assert h2_get(p.port, "/status/200") == 200
    with ws_connect(f"ws://127.0.0.1:{p.port}/ws") as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
    with pytest.raises(Exception):
        with ws_connect(f"ws://127.0.0.1:{p.port}/deny"):
            pass

    m = wait_value(mport, "casgi_connections_open", 0)
    assert req_count(m, "http/1.1", "2xx") == 3
    assert req_count(m, "http/1.1", "3xx") == 1
    assert req_count(m, "http/1.1", "4xx") == 2
    assert req_count(m, "http/1.1", "5xx") == 1
    assert req_count(m, "http/1.1", "1xx") == 0
    assert req_count(m, "http/1.0", "2xx") == 1
    assert req_count(m, "h2", "2xx") == 1
    assert req_count(m, "websocket", "1xx") == 1
    assert req_count(m, "websocket", "4xx") == 1
    total = sum(v for k, v in m.items() if k[0] == "casgi_requests_total")
    assert total == 11
    # Every HTTP request is timed (WebSocket handshakes are not); they were quick.
    assert value(m, "casgi_request_duration_seconds_count") == 9
    assert value(m, "casgi_request_duration_seconds_bucket", le="+Inf") == 9
    assert value(m, "casgi_request_duration_seconds_bucket", le="1.0") == 9
    assert 0 < value(m, "casgi_request_duration_seconds_sum") < 9
    assert value(m, "casgi_rejections_total", status="431") == 1
    assert value(m, "casgi_rejections_total", status="400") == 1
    assert sum(v for k, v in m.items() if k[0] == "casgi_rejections_total") == 2
    # httpx's one connection, HTTP/1.0, 431, 400, h2c and two WebSockets.
    assert value(m, "casgi_connections_total") == 7
    assert value(m, "casgi_websocket_sessions_total") == 1
    assert value(m, "casgi_websocket_sessions_active") == 0
    assert value(m, "casgi_requests_active") == 0
    assert value(m, "casgi_received_bytes_total") > 9000
    assert value(m, "casgi_sent_bytes_total") > 0
    assert value(m, "casgi_tls_handshakes_total") == 0
    assert sum(v for k, v in m.items() if k[0] == "casgi_worker_restarts_total") == 0

    # Other paths and methods; the scrapes themselves are not counted.
    assert httpx.get(f"http://127.0.0.1:{mport}/other").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{mport}/metrics").status_code == 405
    again = scrape(mport)
    assert counters(again) == counters(m)


def test_gauges_while_a_websocket_is_open(start_server):
    mport = free_port()
    p = start_server(APP, "--metrics-port", str(mport))
    with ws_connect(f"ws://127.0.0.1:{p.port}/ws") as ws:
        m = scrape(mport)
        assert value(m, "casgi_websocket_sessions_active") == 1
        assert value(m, "casgi_connections_open") == 1
        assert value(m, "casgi_requests_active") == 1  # the session's app runs
        ws.send("bye")
        assert ws.recv() == "bye"
    m = wait_value(mport, "casgi_websocket_sessions_active", 0)
    wait_value(mport, "casgi_connections_open", 0)
    wait_value(mport, "casgi_requests_active", 0)


def test_metrics_answer_while_the_app_blocks_its_loop(start_server):
    mport = free_port()
    p = start_server(APP, "--metrics-port", str(mport))
    done = {}

    def blocked():
        done["status"] = httpx.get(f"{p.url}/block?3", timeout=20).status_code

    t = threading.Thread(target=blocked)
    t.start()
    try:
        time.sleep(0.7)  # the request is in, the loop sleeps in the app
        with httpx.Client(base_url=p.url, timeout=0.5) as c:
            with pytest.raises(httpx.TimeoutException):
                c.get("/status/200")  # the app's loop does not answer ...
        t0 = time.monotonic()
        m = scrape(mport, timeout=1.0)  # ... the metrics thread does
        assert time.monotonic() - t0 < 1.0
        assert "status" not in done
        assert value(m, "casgi_connections_open") >= 1
        assert req_count(m, "http/1.1", "2xx") == 0
    finally:
        t.join(20)
    assert done["status"] == 200
    m = scrape(mport)
    # The blocked request took its 3 s (the one that timed out on the client
    # may have been served after it, quickly).
    assert (value(m, "casgi_request_duration_seconds_bucket", le="5.0")
            - value(m, "casgi_request_duration_seconds_bucket", le="2.5")) == 1


# ----------------------------------------------------------------------------
# TLS
# ----------------------------------------------------------------------------


def test_tls_handshakes_and_http2_over_tls(start_server, tmp_path):
    pki = Pki(tmp_path / "pki")
    mport = free_port()
    p = start_server(APP, "--metrics-port", str(mport), "--ssl-certfile", str(pki.server.chain),
                     "--ssl-keyfile", str(pki.server.key))
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with httpx.Client(verify=ctx, http2=True) as c:
        r = c.get(f"https://127.0.0.1:{p.port}/status/200")
        assert r.status_code == 200 and r.http_version == "HTTP/2"
    with httpx.Client(verify=ctx, http2=False) as c:
        assert c.get(f"https://127.0.0.1:{p.port}/status/404").status_code == 404
    # Cleartext HTTP to the TLS port: a failed handshake.
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    m = wait_value(mport, "casgi_connections_open", 0)
    assert value(m, "casgi_tls_handshakes_total") == 2
    assert value(m, "casgi_tls_handshake_failures_total") == 1
    assert req_count(m, "h2", "2xx") == 1
    assert req_count(m, "http/1.1", "4xx") == 1
    assert value(m, "casgi_connections_total") == 3


# ----------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------


def get_close(port: int, path: str) -> httpx.Response:
    """One request on a connection of its own (the workers share them out)."""
    with httpx.Client(timeout=10, headers={"connection": "close"}) as c:
        return c.get(f"http://127.0.0.1:{port}{path}")


def test_workers_aggregate_and_survive_a_worker_crash(sups):
    sups.copy_app("metrics_app.py")
    mport = free_port()
    p = sups.casgi(APP, "--workers", "2", env=sups.env({"CASGI_METRICS_PORT": str(mport)}),
                   workers_started=2)
    p.wait_for(rf"Metrics on http://127\.0\.0\.1:{mport}/metrics")
    port = p.port
    wait_value(mport, "casgi_workers", 2)
    pids = set()
    for _ in range(12):
        r = get_close(port, "/pid")
        assert r.status_code == 200
        pids.add(int(r.text))
    for _ in range(4):
        assert get_close(port, "/status/503").status_code == 503
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\nbad field: 1\r\n\r\n") == 400
    m1 = wait_value(mport, "casgi_connections_open", 0)
    assert req_count(m1, "http/1.1", "2xx") == 12
    assert req_count(m1, "http/1.1", "5xx") == 4
    assert value(m1, "casgi_rejections_total", status="400") == 1
    assert value(m1, "casgi_connections_total") == 17

    # SIGKILL one worker; it is replaced and nothing it counted is lost.
    victim = next(iter(pids))
    mark = p.mark()
    os.kill(victim, signal.SIGKILL)
    p.wait_for(rf"Child process \[{victim}\] died", since=mark, timeout=10)
    deadline = time.monotonic() + 20
    while True:
        m2 = scrape(mport)
        if value(m2, "casgi_workers") == 2 and get_close(port, "/pid").status_code == 200:
            break
        assert time.monotonic() < deadline, "the worker was not replaced"
        time.sleep(0.1)
    m2 = scrape(mport)
    assert value(m2, "casgi_worker_restarts_total", cause="crash") == 1
    assert sum(v for k, v in m2.items() if k[0] == "casgi_worker_restarts_total") == 1
    for k, v in counters(m1).items():
        assert m2[k] >= v, f"{k} went from {v} to {m2[k]}"
    assert req_count(m2, "http/1.1", "5xx") == 4
    assert value(m2, "casgi_rejections_total", status="400") == 1
    # The /pid requests of the readiness loop above: at least one more.
    assert req_count(m2, "http/1.1", "2xx") >= 13

    n = req_count(m2, "http/1.1", "2xx")
    for _ in range(6):
        assert get_close(port, "/status/200").status_code == 200
    m3 = wait_value(mport, "casgi_connections_open", 0)
    assert req_count(m3, "http/1.1", "2xx") == n + 6
    p.finish()


# ----------------------------------------------------------------------------
# Startup errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_port_in_use_is_a_startup_error(workers):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_casgi(APP, "--app-dir", str(APPS_DIR), "--port", "0", "--workers", workers,
                      "--metrics-port", str(port))
    assert r.returncode == 3, r.stderr
    assert (f"[Errno 98] Address already in use: error while attempting to bind the metrics "
            f"server on ('127.0.0.1', {port})") in r.stderr
    assert "Traceback" not in r.stderr


def test_no_metrics_without_the_port(start_server):
    p = start_server(APP)
    assert "Metrics on" not in p.output()
