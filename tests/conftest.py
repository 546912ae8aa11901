"""Fixtures of the end-to-end tests; the machinery they use is in helpers.py,
supervisor_util.py and ws_util.py.

- ``server``: the general-purpose app on each event loop, shared between tests;
- ``start_server``: dedicated processes with custom options;
- ``loop``: the event loop parameter;
- ``sups``: supervisors (``--reload``, ``--workers``), every process reaped;
- ``ws_shared`` / ``wss``: WebSocket servers shared by one module's tests;
- ``h2srv`` / ``h2srv_loop``: the HTTP/2 test app (tests/apps/h2_app.py)
  with the default options, shared: on asyncio / on each event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

import pytest

from helpers import APPS_DIR, CasgiProcess, assert_server_healthy, casgi_args, clean_env, loop_params
from supervisor_util import Sups, set_subreaper
from ws_util import SharedWs


# ----------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------


@pytest.fixture(params=loop_params())
def loop(request) -> str:
    return request.param


class ServerStarter:
    """Starts dedicated servers for one test and reaps them afterwards."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list = []

    def spawn(self, args: list, env: Optional[dict] = None, cwd: Optional[Path] = None,
              pass_fds: Iterable[int] = (), cmd: Optional[list] = None) -> CasgiProcess:
        """Starts a process without waiting for readiness."""
        p = CasgiProcess(args, env=env if env is not None else clean_env(), cwd=cwd or self.tmp_path,
                         pass_fds=pass_fds, cmd=cmd)
        self.procs.append(p)
        return p

    def __call__(self, app: str = "basic:app", *args: str, loop: Optional[str] = "asyncio",
                 env: Optional[dict] = None, port: Optional[str] = "0", app_dir: Optional[Path] = APPS_DIR,
                 cwd: Optional[Path] = None, pass_fds: Iterable[int] = (), wait: bool = True) -> CasgiProcess:
        p = self.spawn(casgi_args(app, *args, loop=loop, port=port, app_dir=app_dir), env=env, cwd=cwd,
                       pass_fds=pass_fds)
        if wait:
            p.wait_running()
        return p

    def cleanup(self) -> list:
        """Reaps every process; returns a description of each that crashed."""
        crashes = []
        for p in self.procs:
            crash = p.crash_report()
            p.kill()
            if crash:
                crashes.append(crash)
        return crashes


@pytest.fixture
def start_server(tmp_path):
    starter = ServerStarter(tmp_path)
    yield starter
    crashes = starter.cleanup()
    if crashes:
        pytest.fail("\n\n".join(crashes))


class _SharedServers:
    def __init__(self, tmp_root: Path):
        self.tmp_root = tmp_root
        self.servers: dict = {}

    def get(self, key: tuple, factory: Callable[[], CasgiProcess]) -> CasgiProcess:
        p = self.servers.get(key)
        if p is None or not p.alive():
            p = factory()
            self.servers[key] = p
        return p

    def close(self) -> None:
        for p in self.servers.values():
            p.kill()


@pytest.fixture(scope="session")
def _shared_servers(tmp_path_factory):
    shared = _SharedServers(tmp_path_factory.mktemp("shared"))
    yield shared
    shared.close()


@pytest.fixture(scope="session")
def side_dir(tmp_path_factory) -> Path:
    """A directory the shared server's app may write side-channel files into."""
    return tmp_path_factory.mktemp("side")


@pytest.fixture(params=loop_params())
def server(request, _shared_servers, side_dir) -> CasgiProcess:
    """The general-purpose app (tests/apps/basic.py), one process per event loop
    shared between tests. A test after which the process is dead fails."""
    loop_name = request.param

    def factory() -> CasgiProcess:
        env = clean_env({"CASGI_TEST_SIDE_DIR": str(side_dir)})
        p = CasgiProcess(casgi_args("basic:app", loop=loop_name), env=env, cwd=_shared_servers.tmp_root)
        p.wait_running()
        return p

    p = _shared_servers.get(("basic", loop_name), factory)
    mark = p.mark()
    yield p
    assert_server_healthy(p, mark)


def _shared_h2(shared: "_SharedServers", loop_name: str):
    def factory() -> CasgiProcess:
        p = CasgiProcess(casgi_args("h2_app:app", loop=loop_name), cwd=shared.tmp_root)
        p.wait_running()
        return p

    p = shared.get(("h2_app", loop_name), factory)
    mark = p.mark()
    yield p
    assert_server_healthy(p, mark)


@pytest.fixture
def h2srv(_shared_servers) -> CasgiProcess:
    """The HTTP/2 test app on asyncio, default options, shared between tests."""
    yield from _shared_h2(_shared_servers, "asyncio")


@pytest.fixture(params=loop_params())
def h2srv_loop(request, _shared_servers) -> CasgiProcess:
    """The HTTP/2 test app on each event loop, default options, shared."""
    yield from _shared_h2(_shared_servers, request.param)


@pytest.fixture
def sups(tmp_path):
    """Starts supervisors for one test; at the end every process of every tree
    must be gone (the test process is a subreaper meanwhile, see above)."""
    set_subreaper(True)
    s = Sups(tmp_path)
    try:
        yield s
    finally:
        problems = s.cleanup()
        set_subreaper(False)
    if problems:
        pytest.fail("\n\n".join(problems))


# WebSocket servers shared by the tests of one module


@pytest.fixture(scope="module")
def ws_shared(tmp_path_factory):
    """Servers shared by the tests of one module, started on first use."""
    s = SharedWs(tmp_path_factory.mktemp("ws"))
    yield s
    s.close()


@pytest.fixture(params=loop_params())
def wss(request, ws_shared):
    """The shared echo server, on each event loop; checked after each test."""
    p = ws_shared.get("ws_app:app", request.param, ())
    mark = p.mark()
    yield p
    assert_server_healthy(p, mark)
