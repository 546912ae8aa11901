"""The lifespan protocol: startup/shutdown with state, and the three modes."""

import signal

import pytest

from helpers import clean_env, req


def lifespan_env(tmp_path, mode="ok"):
    events = tmp_path / "events.txt"
    return clean_env({"LIFESPAN_MODE": mode, "EVENTS_FILE": str(events)}), events


def events_of(path):
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_startup_and_shutdown_with_state(start_server, tmp_path, loop, mode):
    env, events = lifespan_env(tmp_path)
    s = start_server("lifespan_app:app", "--lifespan", mode, loop=loop, env=env)
    assert events_of(events) == ["startup"]
    out = s.output()
    assert "Waiting for application startup." in out
    assert "Application startup complete." in out
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.json()["state"] == {"db": "connected", "counter": 0}
    assert s.stop(signal.SIGINT) == 0
    assert events_of(events) == ["startup", "request /", "shutdown"]


def test_startup_logged_before_running_line(start_server, tmp_path, loop):
    env, _ = lifespan_env(tmp_path)
    s = start_server("lifespan_app:app", "--lifespan", "on", loop=loop, env=env)
    out = s.output()
    assert out.index("Application startup complete.") < out.index("casgi running on")


def test_lifespan_on_startup_failed_exits_3(start_server, tmp_path, loop):
    env, events = lifespan_env(tmp_path, "fail")
    s = start_server("lifespan_app:app", "--lifespan", "on", loop=loop, env=env, wait=False)
    assert s.wait(15) == 3
    out = s.output()
    assert "startup-failed-marker" in out
    assert "casgi running on" not in out


def test_lifespan_on_startup_raises_exits_3(start_server, tmp_path, loop):
    env, _ = lifespan_env(tmp_path, "raise-startup")
    s = start_server("lifespan_app:app", "--lifespan", "on", loop=loop, env=env, wait=False)
    assert s.wait(15) == 3
    out = s.output()
    assert "startup-raised-marker" in out
    assert "casgi running on" not in out


def test_lifespan_auto_startup_failed_exits_3(start_server, tmp_path, loop):
    # An app that answers lifespan.startup.failed does support lifespan.
    env, _ = lifespan_env(tmp_path, "fail")
    s = start_server("lifespan_app:app", "--lifespan", "auto", loop=loop, env=env, wait=False)
    assert s.wait(15) == 3


UNSUPPORTED_LINES = [
    "INFO:     Waiting for application startup.",
    "INFO:     ASGI 'lifespan' protocol appears unsupported.",
    "INFO:     Application startup complete.",
]


def test_lifespan_auto_unsupported_app_is_served_with_uvicorns_info_lines(start_server, tmp_path, loop):
    env, _ = lifespan_env(tmp_path, "unsupported")
    s = start_server("lifespan_app:app", "--lifespan", "auto", loop=loop, env=env)
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.status == 200
    assert s.stop() == 0
    out = s.output()
    # What uvicorn prints: INFO, not a warning, and startup completes.
    lines = out.splitlines()
    start = lines.index(UNSUPPORTED_LINES[0])
    assert lines[start:start + 3] == UNSUPPORTED_LINES, out
    assert not [line for line in lines if line.startswith("WARNING")], out
    # The exception itself is only shown at debug level.
    assert "lifespan-unsupported-marker" not in out
    assert "Traceback" not in out


def test_lifespan_auto_unsupported_exception_shown_at_debug(start_server, tmp_path, loop):
    env, _ = lifespan_env(tmp_path, "unsupported")
    s = start_server("lifespan_app:app", "--lifespan", "auto", "--log-level", "debug", loop=loop, env=env)
    s.wait_for("lifespan-unsupported-marker")


def test_lifespan_on_unsupported_app_exits_3(start_server, tmp_path, loop):
    env, _ = lifespan_env(tmp_path, "unsupported")
    s = start_server("lifespan_app:app", "--lifespan", "on", loop=loop, env=env, wait=False)
    assert s.wait(15) == 3


def test_lifespan_off_never_calls_lifespan(start_server, tmp_path, loop):
    env, events = lifespan_env(tmp_path)
    s = start_server("lifespan_app:app", "--lifespan", "off", loop=loop, env=env)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    assert s.stop() == 0
    assert events_of(events) == ["request /"]
    assert "Waiting for application startup." not in s.output()


def test_django_without_lifespan_logs_what_uvicorn_logs(start_server, loop):
    pytest.importorskip("django")
    s = start_server("django_app:application", loop=loop)
    lines = s.output().splitlines()
    start = lines.index(UNSUPPORTED_LINES[0])
    assert lines[start:start + 3] == UNSUPPORTED_LINES, s.output()
    assert not [line for line in lines if line.startswith("WARNING")], s.output()
