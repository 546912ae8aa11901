"""--reload standby workers end to end: a worker started ahead with the
installed packages imported, released on the next change. Real supervisor
processes, real file edits; the process tree is checked through /proc after
every scenario."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from supervisor_util import (
    RELOAD_OPTS,
    WAITING_RE,
    edit_version,
    wait_until,
    wait_version,
    write_in_place,
)

pytestmark = pytest.mark.timeout(120)

STANDBY_RE = re.compile(r"Standby worker \[(\d+)\] imported (\d+) modules ahead; waiting")
STALE_RE = re.compile(r"Standby worker is out of date \((.*)\); starting afresh")

# The app answers "VERSION HELPER VENDOR": the project's own helper module and
# a package from a site-packages directory of its own (on PYTHONPATH).
APP = '''\
import os

import fakepkg
import helper
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

VERSION = "v0"


async def index(request):
    return PlainTextResponse(f"{VERSION} {helper.VALUE} {fakepkg.VALUE}",
                             headers={"x-pid": str(os.getpid())})


app = Starlette(routes=[Route("/", index)])
'''


def setup_app(sups) -> tuple:
    main = sups.workdir / "main.py"
    main.write_text(APP)
    (sups.workdir / "helper.py").write_text('VALUE = "h0"\n')
    vendor = sups.workdir / "vendor" / "site-packages"
    (vendor / "fakepkg").mkdir(parents=True)
    (vendor / "fakepkg" / "__init__.py").write_text('VALUE = "p0"\n')
    env = sups.env({"PYTHONPATH": str(vendor)})
    return main, vendor / "fakepkg" / "__init__.py", env


def start(sups, *extra, env=None):
    p = sups.casgi("main:app", *RELOAD_OPTS, "--log-level", "debug", *extra, env=env)
    wait_version(p.port, "v0", proc=p)
    return p


def wait_standby(p, since: int = 0) -> tuple:
    """(pid, modules imported ahead) of the next standby that is waiting."""
    m = p.wait_for(STANDBY_RE, since=since, timeout=15)
    return int(m.group(1)), int(m.group(2))


def served_by(p, version: str) -> tuple:
    r = wait_version(p.port, version, proc=p)[0]
    return r.body.decode().split(), int(r.header("x-pid"))


def module_list(pid: int) -> list:
    """The names in the module list file the standby was given."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
    return Path(env[b"CASGI_RELOAD_MODULES"].decode()).read_text().split()


def test_a_reload_is_served_by_the_standby_with_installed_modules_imported_ahead(sups):
    main, _, env = setup_app(sups)
    p = start(sups, env=env)
    since = 0
    for i in range(1, 4):
        standby, imported = wait_standby(p, since=since)
        names = module_list(standby)
        assert imported >= 20 and {"starlette", "starlette.applications", "fakepkg"} <= set(names), names
        # The project's own modules are never imported ahead.
        assert not {"main", "helper"} & set(names), names
        assert standby in p.tracker.standbys()
        mark = p.mark()
        edit_version(main, f"v{i}", rename=i % 2 == 0)
        body, pid = served_by(p, f"v{i}")
        assert pid == standby, f"v{i} served by [{pid}], not by the standby [{standby}]"
        p.wait_for(r"Released standby worker \[%d\]" % standby, since=mark)
        assert STALE_RE.search(p.output(mark)) is None, p.tail(mark)
        since = mark
    # A change to a project module the app imports is served too.
    write_in_place(sups.workdir / "helper.py", 'VALUE = "h1"\n')
    wait_until(lambda: served_by(p, "v3")[0][1] == "h1", 10, "helper.py's change served", proc=p)
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


def test_an_installed_package_changed_after_the_standby_started_is_not_served_stale(sups):
    main, pkg, env = setup_app(sups)
    p = start(sups, env=env)
    standby, _ = wait_standby(p)
    time.sleep(0.05)  # past the kernel's coarse clock tick
    pkg.write_text('VALUE = "p1"\n')  # not watched: a site-packages directory
    time.sleep(0.5)
    assert p.count(r"Detected changes") == 0, p.tail()
    mark = p.mark()
    edit_version(main, "v1")
    body, pid = served_by(p, "v1")
    assert body == ["v1", "h0", "p1"], body
    m = p.wait_for(STALE_RE, since=mark)
    assert "fakepkg/__init__.py' changed" in m.group(1), m.group(0)
    assert pid == standby, "the standby re-executes itself (same process)"
    # The next standby is current again.
    mark = p.mark()
    standby2, _ = wait_standby(p, since=mark)
    edit_version(main, "v2", rename=True)
    body, pid = served_by(p, "v2")
    assert (body, pid) == (["v2", "h0", "p1"], standby2)
    assert STALE_RE.search(p.output(mark)) is None, p.tail(mark)
    p.finish(signal.SIGTERM)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_no_reload_standby(sups, how):
    main, _, env = setup_app(sups)
    if how == "env":
        env["CASGI_RELOAD_STANDBY"] = "0"
        p = start(sups, env=env)
    else:
        p = start(sups, "--no-reload-standby", env=env)
    first = p.started_pids()[0]
    time.sleep(1.5)
    assert p.count(STANDBY_RE) == 0 and p.tracker.standbys() == set(), p.tail()
    edit_version(main, "v1")
    _, pid = served_by(p, "v1")
    assert pid != first
    time.sleep(1.0)
    assert p.count(STANDBY_RE) == 0 and p.tracker.standbys() == set(), p.tail()
    assert p.tracker.workers() == {pid}
    p.finish(signal.SIGTERM)


def test_a_standby_that_dies_is_not_restarted_until_the_next_reload(sups):
    main, _, env = setup_app(sups)
    p = start(sups, env=env)
    standby, _ = wait_standby(p)
    mark = p.mark()
    os.kill(standby, signal.SIGKILL)
    p.wait_for(r"Standby worker \[%d\] exited \(signal 9\)" % standby, since=mark)
    time.sleep(1.0)
    assert p.tracker.standbys() == set(), "a standby that died is restarted at once"
    assert WAITING_RE.search(p.output(mark)) is None, "the serving worker is fine: no waiting"
    edit_version(main, "v1")
    _, pid = served_by(p, "v1")
    assert pid != standby
    # Once the fresh worker is up, a standby is kept again.
    new_standby, _ = wait_standby(p, since=mark)
    edit_version(main, "v2", rename=True)
    assert served_by(p, "v2")[1] == new_standby
    p.tracker.assert_no_zombies()
    p.finish(signal.SIGTERM)


def test_broken_code_then_fix_is_served_by_a_standby(sups):
    """While the app cannot load, a standby still waits; the fix releases it."""
    main, _, env = setup_app(sups)
    p = start(sups, env=env)
    wait_standby(p)
    mark = p.mark()
    main.write_text(APP.replace("VERSION = ", "VERSION == "))
    p.wait_for(WAITING_RE, since=mark, timeout=10)
    standby, _ = wait_standby(p, since=mark)
    assert p.tracker.workers() == set(), "nothing serves broken code"
    main.write_text(APP.replace('"v0"', '"v1"'))
    assert served_by(p, "v1")[1] == standby
    p.finish(signal.SIGTERM)


ENV_APP = '''\
import os

VERSION = "v0"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    extra = ""
    if os.path.exists("use_newpkg"):
        import newpkg
        extra = newpkg.VALUE
    body = f"{VERSION} {os.environ.get('SB_VALUE', '-')} {extra}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def test_a_changed_env_file_is_not_served_stale(sups):
    main = sups.workdir / "main.py"
    main.write_text(ENV_APP)
    (sups.workdir / "app.env").write_text("SB_VALUE=one\n")
    p = start(sups, "--env-file", "app.env")
    assert served_by(p, "v0")[0][1] == "one"
    standby, _ = wait_standby(p)
    (sups.workdir / "app.env").write_text("SB_VALUE=two\n")  # not a watched file
    mark = p.mark()
    edit_version(main, "v1")
    body, pid = served_by(p, "v1")
    assert body[1] == "two", body
    assert "app.env' changed" in p.wait_for(STALE_RE, since=mark).group(1)
    assert pid == standby
    p.finish(signal.SIGTERM)


def test_a_package_installed_while_the_standby_waits_is_importable(sups):
    main = sups.workdir / "main.py"
    main.write_text(ENV_APP)
    vendor = sups.workdir / "vendor" / "site-packages"
    vendor.mkdir(parents=True)
    p = start(sups, env=sups.env({"PYTHONPATH": str(vendor)}))
    standby, _ = wait_standby(p)
    time.sleep(0.05)
    (vendor / "newpkg").mkdir()  # "pip install newpkg": the directory changes
    (vendor / "newpkg" / "__init__.py").write_text('VALUE = "fresh"\n')
    (sups.workdir / "use_newpkg").write_text("")
    mark = p.mark()
    edit_version(main, "v1")
    body, pid = served_by(p, "v1")
    assert body[2:] == ["fresh"], body
    assert "site-packages/' changed" in p.wait_for(STALE_RE, since=mark).group(1)
    assert pid == standby
    p.finish(signal.SIGTERM)
