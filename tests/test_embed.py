"""casgi.Config and casgi.Server embedded as uvicorn's users embed uvicorn: in a
thread (server.run()), in a running event loop (await server.serve()), on
pre-bound sockets; stopping with should_exit / force_exit; signals only in the
main thread; casgi.run() from another thread. Real sockets and clients."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
import textwrap
import threading
import time
from typing import Iterator, List

import os
from pathlib import Path

import httpx
import pytest

from helpers import free_port, loop_params


def _import_installed_casgi():
    """`python -m pytest` puts the repository root first on sys.path, where
    casgi/ has no compiled extension: import the installed package."""
    root = str(Path(__file__).resolve().parent.parent)
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if os.path.abspath(p or ".") != root]
    try:
        import casgi
    finally:
        sys.path[:] = saved
    return casgi


casgi = _import_installed_casgi()

pytestmark = pytest.mark.timeout(60)


def make_app(events: List[str]):
    """An app recording its lifespan events; /slow?s=N sleeps N seconds."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                events.append(msg["type"])
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    return
                await send({"type": "websocket.send", "text": "echo:" + msg["text"]})
        body = b"hello"
        if scope["path"] == "/slow":
            await asyncio.sleep(float(scope["query_string"].decode().split("=")[1]))
            body = b"slow done"
            events.append("slow finished")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    return app


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def run_in_loop(kind: str, coro_fn):
    """Runs coro_fn() to the end in a new loop of `kind` ("asyncio" or "uvloop")."""
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


# ---- the fixture uvicorn's users write, with the module name changed --------


class Server(casgi.Server):
    def install_signal_handlers(self):
        pass

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[None]:
        thread = threading.Thread(target=self.run)
        thread.start()
        try:
            while not self.started:
                time.sleep(1e-3)
            yield
        finally:
            self.should_exit = True
            thread.join()


def test_uvicorn_style_fixture():
    events: List[str] = []
    port = free_port()
    config = casgi.Config(app=make_app(events), host="127.0.0.1", port=port, log_level="info")
    server = Server(config=config)
    assert (config.host, config.port) == ("127.0.0.1", port)
    with server.run_in_thread():
        assert server.started
        r = httpx.get(f"http://{config.host}:{config.port}/")
        assert (r.status_code, r.text) == (200, "hello")
        with httpx.Client() as client:
            for _ in range(3):
                assert client.get(f"http://127.0.0.1:{port}/").text == "hello"
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert refused(port)


def test_plain_server_in_thread_port_zero():
    """casgi.Server itself in a thread (no subclass): no signal handlers outside
    the main thread; with port 0 the port comes from server.servers."""
    events: List[str] = []
    # Not necessarily default_int_handler: a process started in the
    # background by a shell without job control (CI) inherits SIGINT ignored.
    sigint_before = signal.getsignal(signal.SIGINT)
    server = casgi.Server(casgi.Config(make_app(events), port=0))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            time.sleep(1e-3)
        port = server.servers[0].sockets[0].getsockname()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "hello"
        assert signal.getsignal(signal.SIGINT) is sigint_before
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


# ---- await server.serve() in a running loop ----------------------------------


@pytest.mark.parametrize("kind", loop_params())
def test_serve_in_running_loop_beside_another_task(kind):
    events: List[str] = []
    sock = bound_socket()
    port = sock.getsockname()[1]

    async def main():
        ticks = []

        async def ticker():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        tick_task = asyncio.ensure_future(ticker())
        server = casgi.Server(casgi.Config(make_app(events), lifespan="on"))
        serve_task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.001)
        before = len(ticks)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/slow?s=0.3")
            assert (r.status_code, r.text) == (200, "slow done")
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "hello"
        during = len(ticks) - before
        assert not serve_task.done()
        server.should_exit = True
        await serve_task
        assert server.should_exit and server.started
        assert not tick_task.done()  # the loop's other task was left alone
        tick_task.cancel()
        return during

    during = run_in_loop(kind, main)
    assert during >= 10, f"the other task ticked {during} times during a 0.3 s request"
    assert events == ["lifespan.startup", "slow finished", "lifespan.shutdown"]
    assert refused(port)


async def serving(app, sock: socket.socket):
    """A Server for app serving sock in a task of the running loop, started."""
    server = casgi.Server(casgi.Config(app))
    serve_task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.001)
    return server, serve_task


def test_should_exit_lets_in_flight_request_finish_then_lifespan_shutdown():
    events: List[str] = []
    sock = bound_socket()
    port = sock.getsockname()[1]

    async def main():
        server, serve_task = await serving(make_app(events), sock)
        async with httpx.AsyncClient() as client:
            request = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/slow?s=0.5"))
            await asyncio.sleep(0.2)  # the request is in the app now
            assert not request.done()
            server.should_exit = True
            r = await request
        await serve_task
        return r

    r = run_in_loop("asyncio", main)
    assert (r.status_code, r.text) == (200, "slow done")
    assert events == ["lifespan.startup", "slow finished", "lifespan.shutdown"]


def test_force_exit_does_not_wait_for_in_flight_requests():
    events: List[str] = []
    sock = bound_socket()
    port = sock.getsockname()[1]

    async def main():
        server, serve_task = await serving(make_app(events), sock)
        async with httpx.AsyncClient() as client:
            request = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/slow?s=30"))
            await asyncio.sleep(0.2)
            server.should_exit = True
            await asyncio.sleep(0.2)
            assert not serve_task.done()  # waiting for the slow request
            t0 = time.monotonic()
            server.force_exit = True
            await serve_task
            elapsed = time.monotonic() - t0
            with pytest.raises(httpx.HTTPError):
                await request
        return elapsed

    elapsed = run_in_loop("asyncio", main)
    assert elapsed < 5
    assert "slow finished" not in events
    assert events == ["lifespan.startup"]  # as uvicorn: a forced stop skips lifespan shutdown


def test_shutdown_awaits_the_stop():
    events: List[str] = []

    async def main():
        server = casgi.Server(casgi.Config(make_app(events), port=0))
        serve_task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.001)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "hello"
        await server.shutdown()
        assert events == ["lifespan.startup", "lifespan.shutdown"]
        await serve_task
        return port

    port = run_in_loop("asyncio", main)
    assert refused(port)


def test_cancelled_serve_task_stops_the_server():
    """httpx's own test fixture: serve() in a task, cancelled at teardown."""
    events: List[str] = []

    async def main():
        server = casgi.Server(casgi.Config(app=make_app(events), lifespan="off", port=0))
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.0001)
        port = server.servers[0].sockets[0].getsockname()[1]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return port

    port = run_in_loop("asyncio", main)
    assert refused(port)
    assert events == []


def hanging_lifespan_app(phase: str, events: List[str]):
    """An app whose lifespan `phase` ("startup" or "shutdown") never answers."""

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        while True:
            msg = await receive()
            events.append(msg["type"])
            try:
                if msg["type"] == f"lifespan.{phase}":
                    await asyncio.sleep(3600)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return

    return app


@pytest.mark.parametrize("phase", ["startup", "shutdown"])
def test_force_exit_does_not_wait_for_a_hanging_lifespan(phase):
    """uvicorn skips lifespan shutdown on a forced stop; a lifespan startup or
    shutdown that hangs holds neither force_exit nor a cancelled serve()."""
    events: List[str] = []

    async def main():
        server = casgi.Server(casgi.Config(app=hanging_lifespan_app(phase, events), port=0))
        task = asyncio.ensure_future(server.serve())
        want = f"lifespan.{phase}"
        while want not in events:
            await asyncio.sleep(0.001)
            if phase == "shutdown" and server.started and not server.should_exit:
                server.should_exit = True
        await asyncio.sleep(0.1)  # the server waits on the app's answer
        t0 = time.monotonic()
        if phase == "startup":
            task.cancel()  # a test fixture's teardown
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            server.force_exit = True
            await asyncio.wait_for(task, 5)
        await asyncio.sleep(0)  # the cancelled lifespan task runs its cancellation
        return time.monotonic() - t0

    took = run_in_loop("asyncio", main)
    assert took < 2
    assert events[-1] == "cancelled"


def test_two_servers_in_one_loop():
    events_a: List[str] = []
    events_b: List[str] = []
    sock_a, sock_b = bound_socket(), bound_socket()
    port_a, port_b = sock_a.getsockname()[1], sock_b.getsockname()[1]
    assert port_a != port_b

    async def main():
        a = casgi.Server(casgi.Config(make_app(events_a)))
        b = casgi.Server(casgi.Config(make_app(events_b)))
        tasks = [asyncio.ensure_future(a.serve(sockets=[sock_a])),
                 asyncio.ensure_future(b.serve(sockets=[sock_b]))]
        while not (a.started and b.started):
            await asyncio.sleep(0.001)
        async with httpx.AsyncClient() as client:
            ra, rb = await asyncio.gather(client.get(f"http://127.0.0.1:{port_a}/slow?s=0.2"),
                                          client.get(f"http://127.0.0.1:{port_b}/"))
            assert (ra.text, rb.text) == ("slow done", "hello")
            a.should_exit = True
            await tasks[0]
            assert not tasks[1].done()
            assert (await client.get(f"http://127.0.0.1:{port_b}/")).text == "hello"
        b.should_exit = True
        await tasks[1]

    run_in_loop("asyncio", main)
    assert refused(port_a) and refused(port_b)
    assert events_a == ["lifespan.startup", "slow finished", "lifespan.shutdown"]
    assert events_b == ["lifespan.startup", "lifespan.shutdown"]


def test_websocket_through_embedded_server():
    from websockets.sync.client import connect

    events: List[str] = []
    port = free_port()
    server = Server(casgi.Config(make_app(events), port=port))
    with server.run_in_thread():
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send("one")
            assert ws.recv(timeout=5) == "echo:one"
            ws.send("two")
            assert ws.recv(timeout=5) == "echo:two"


def test_startup_failure_returns_with_started_false():
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def main():
        server = casgi.Server(casgi.Config(app, port=0))
        await server.serve()
        return server.started

    assert run_in_loop("asyncio", main) is False


def test_bind_failure_returns_with_started_false():
    taken = bound_socket()
    taken.listen()
    server = casgi.Server(casgi.Config(make_app([]), port=taken.getsockname()[1]))
    server.run()
    assert not server.started
    taken.close()


@pytest.mark.parametrize("kind", loop_params())
def test_a_socket_that_cannot_be_served_fails_the_start_and_closes_the_others(kind):
    good = bound_socket()
    port = good.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    server = casgi.Server(casgi.Config(make_app([]), loop=kind))
    server.run(sockets=[good, udp])
    assert not server.started
    assert refused(port)  # the listener that did start is not left accepting
    udp.close()


# ---- Config ------------------------------------------------------------------


def test_config_rejects_a_bad_option_at_once():
    app = make_app([])
    with pytest.raises(TypeError, match=r"Config\(\) got an unexpected keyword argument 'prot'"):
        casgi.Config(app, prot=8000)
    with pytest.raises(ValueError, match="invalid value for '--port': 'abc' is not an integer"):
        casgi.Config(app, port="abc")
    with pytest.raises(ValueError, match="--timeout-keep-alive"):
        casgi.Config(app, timeout_keep_alive=-1)
    with pytest.raises(TypeError, match=r"Config\(\) argument 'backlog' must be int"):
        casgi.Config(app, backlog=[1])


def test_config_takes_uvicorns_argument_types():
    app = make_app([])
    config = casgi.Config(app, log_level=10, forwarded_allow_ips=["10.0.0.1", "10.0.0.0/8"],
                          log_config=None, workers=4, reload=False)
    assert config.app is app
    assert config.log_level == "debug"
    assert config.forwarded_allow_ips == "10.0.0.1,10.0.0.0/8"
    assert config.log_config == ""
    assert config.workers == 4  # accepted, and ignored by Server as by uvicorn's
    assert (config.host, config.port, config.lifespan, config.loop) == ("127.0.0.1", 8000, "auto", "auto")
    assert config.limit_concurrency is None and config.timeout_graceful_shutdown is None
    assert config.timeout_keep_alive == 5.0 and config.is_ssl is False and config.loaded is False
    assert casgi.Config(app, log_level="warning").log_level == "warning"


def test_config_attribute_changed_before_serving_is_used():
    config = casgi.Config(make_app([]))
    config.port = free_port()
    server = Server(config)
    with server.run_in_thread():
        assert httpx.get(f"http://127.0.0.1:{config.port}/").text == "hello"
    assert config.loaded


# ---- threads and signals (separate processes) ----------------------------------


def spawn_script(start_server, tmp_path, source: str):
    script = tmp_path / "embed.py"
    script.write_text(textwrap.dedent(source))
    return start_server.spawn([], cmd=[sys.executable, "-u", str(script)])


def wait_line(proc, needle: str, timeout: float = 15) -> None:
    proc.wait_for(re.escape(needle), timeout=timeout)


APP_SRC = """
    import asyncio, os, signal, sys, threading, time
    import casgi

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                print("app:", msg["type"], flush=True)
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
"""


def test_run_from_a_thread_that_is_not_main(start_server, tmp_path):
    port = free_port()
    p = spawn_script(start_server, tmp_path, APP_SRC + f"""
    def serve():
        casgi.run(app, port={port}, limit_max_requests=1)
        print("run returned", flush=True)

    sigint_before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=serve)
    t.start()
    t.join()
    print("sigint handler unchanged:", signal.getsignal(signal.SIGINT) is sigint_before)
    """)
    wait_line(p, "casgi running on")
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"
    assert p.proc.wait(20) == 0
    out = p.output()
    assert "app: lifespan.shutdown" in out and "run returned" in out
    assert "sigint handler unchanged: True" in out


def test_sigint_to_a_process_serving_in_a_thread_reaches_its_own_handler(start_server, tmp_path):
    port = free_port()
    p = spawn_script(start_server, tmp_path, APP_SRC + f"""
    got = threading.Event()

    def own_handler(signum, frame):
        print("own handler", signum, flush=True)
        got.set()

    signal.signal(signal.SIGINT, own_handler)
    server = casgi.Server(casgi.Config(app, port={port}))
    t = threading.Thread(target=server.run)
    t.start()
    while not server.started:
        time.sleep(0.001)
    print("handler kept:", signal.getsignal(signal.SIGINT) is own_handler, flush=True)
    got.wait(30)
    time.sleep(0.3)
    print("still serving:", server.started and not server.should_exit, flush=True)
    while not os.path.exists({str(tmp_path / "stop")!r}):
        time.sleep(0.01)
    server.should_exit = True
    t.join()
    print("stopped", flush=True)
    """)
    wait_line(p, "handler kept:")
    assert "handler kept: True" in p.output()
    p.proc.send_signal(signal.SIGINT)
    wait_line(p, "still serving:")
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"
    (tmp_path / "stop").touch()
    assert p.proc.wait(20) == 0
    out = p.output()
    assert f"own handler {int(signal.SIGINT)}" in out
    assert "still serving: True" in out and "stopped" in out
    assert "app: lifespan.shutdown" in out


@pytest.mark.parametrize("kind", loop_params())
def test_serve_in_main_thread_handles_sigterm_then_gives_it_back(start_server, tmp_path, kind):
    """In the main thread serve() handles SIGTERM (graceful stop, lifespan
    shutdown), then puts the previous handler back and raises the signal
    again, as uvicorn does."""
    port = free_port()
    p = spawn_script(start_server, tmp_path, APP_SRC + f"""
    def previous(signum, frame):
        print("previous handler got", signum, flush=True)

    signal.signal(signal.SIGTERM, previous)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        server = casgi.Server(casgi.Config(app, port={port}))
        await server.serve()
        print("serve returned; other task alive:", not t.done(), ticks > 0, flush=True)
        print("handler restored:", signal.getsignal(signal.SIGTERM) is previous, flush=True)
        t.cancel()

    if {kind!r} == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    """)
    wait_line(p, "casgi running on")
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(20) == 0
    out = p.output()
    assert "app: lifespan.shutdown" in out
    assert "serve returned; other task alive: True True" in out
    assert "handler restored: True" in out
    assert f"previous handler got {int(signal.SIGTERM)}" in out
    assert out.index("app: lifespan.shutdown") < out.index("previous handler got")
