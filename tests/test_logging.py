"""Logging: access lines, levels, --log-config (JSON, YAML, INI), log injection."""

import json
import re
import time

import pytest

from helpers import clean_env, free_port, req


def access_line_re(port: int, request_line: str, status: str) -> "re.Pattern":
    return re.compile(
        r"^INFO:     127\.0\.0\.1:" + str(port) + " - " + re.escape(f'"{request_line}" {status}') + r"$"
    )


def test_access_log_line_shape(server):
    mark = server.mark()
    with server.connect() as c:
        c.request(req("GET", "/?q=1&r"))
        port = c.local_port
    server.wait_for(access_line_re(port, "GET /?q=1&r HTTP/1.1", "200 OK"), since=mark)


def test_access_log_http10_and_404(server):
    mark = server.mark()
    with server.connect() as c:
        c.request(req("POST", "/no/such/page", body=b"x", version="HTTP/1.0", host=None))
        port = c.local_port
    server.wait_for(access_line_re(port, "POST /no/such/page HTTP/1.0", "404 Not Found"), since=mark)


def test_access_log_for_500(server):
    mark = server.mark()
    with server.connect() as c:
        c.request(req("GET", "/raise-before"))
        port = c.local_port
    server.wait_for(access_line_re(port, "GET /raise-before HTTP/1.1", "500 Internal Server Error"), since=mark)


def test_control_characters_escaped_in_access_log(server):
    mark = server.mark()
    with server.connect() as c:
        r = c.request(req("GET", "/log%1b[31mred%0d%0aINJECTED%00x?a=%0aINJECTED2"))
        port = c.local_port
    assert r.status == 404
    m = server.wait_for(rf"127\.0\.0\.1:{port} - ", since=mark)
    time.sleep(0.2)
    out = server.output(mark)
    assert "\x1b" not in out
    assert "\x00" not in out
    assert not re.search(r"^INJECTED", out, re.M), out
    assert "\r" not in m.string.rstrip("\n")


def test_raw_control_bytes_in_target_never_reach_log(server):
    mark = server.mark()
    with server.connect() as c:
        c.send(b"GET /raw\x1b[31mred\x7f HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            c.read_response()
        except AssertionError:
            pass
    time.sleep(0.3)
    out = server.output(mark)
    assert "\x1b" not in out and "\x7f" not in out


def test_no_access_log(start_server, loop):
    s = start_server("basic:app", "--no-access-log", loop=loop)
    mark = s.mark()
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
        port = c.local_port
    # An error still reaches the error log, so logging as such works.
    with s.connect() as c:
        c.request(req("GET", "/raise-before"))
    s.wait_for("boom-before-start", since=mark)
    assert f"127.0.0.1:{port}" not in s.output(mark)
    assert '"GET / HTTP/1.1"' not in s.output(mark)


def test_access_log_off_by_env(start_server):
    s = start_server("basic:app", env=clean_env({"CASGI_ACCESS_LOG": "false"}))
    mark = s.mark()
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    with s.connect() as c:
        c.request(req("GET", "/raise-before"))
    s.wait_for("boom-before-start", since=mark)
    assert '"GET / HTTP/1.1"' not in s.output(mark)


def test_access_log_option_wins_over_env(start_server):
    s = start_server("basic:app", "--access-log", env=clean_env({"CASGI_ACCESS_LOG": "false"}))
    mark = s.mark()
    with s.connect() as c:
        c.request(req("GET", "/"))
    s.wait_for('"GET / HTTP/1.1" 200', since=mark)


def test_log_level_warning_hides_info(start_server):
    port = free_port()
    s = start_server("basic:app", "--log-level", "warning", port=str(port), wait=False)
    s.wait_port("127.0.0.1", port)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    assert s.stop() == 0
    info = [line for line in s.output().splitlines() if line.startswith("INFO")]
    assert info == [], info


def test_log_level_error_still_shows_app_errors(start_server):
    port = free_port()
    s = start_server("basic:app", "--log-level", "error", port=str(port), wait=False)
    s.wait_port("127.0.0.1", port)
    with s.connect() as c:
        c.request(req("GET", "/raise-before"))
    s.wait_for(r"^ERROR")
    assert "casgi running on" not in s.output()


def test_log_level_trace_accepted(start_server):
    s = start_server("basic:app", "--log-level", "trace")
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_startup_messages(start_server):
    s = start_server("basic:app")
    out = s.output()
    assert f"INFO:     Started server process [{s.pid}]" in out
    assert "INFO:     Waiting for application startup." in out
    assert "INFO:     Application startup complete." in out


def test_no_colors_when_not_a_tty(start_server):
    s = start_server("basic:app")
    with s.connect() as c:
        c.request(req("GET", "/"))
    time.sleep(0.2)
    assert "\x1b[" not in s.output()


def test_use_colors_forces_colors(start_server):
    s = start_server("basic:app", "--use-colors")
    assert "\x1b[" in s.output()


# ---------------------------------------------------------------------------
# --log-config
# ---------------------------------------------------------------------------

FORMAT = "CFG|%(name)s|%(levelname)s|%(message)s"


def dict_config(log_file) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"f": {"format": FORMAT}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_file), "formatter": "f"},
            "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "f"},
        },
        "loggers": {
            "casgi.error": {"handlers": ["file", "console"], "level": "INFO", "propagate": False},
            "casgi.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }


def check_config_log(s, log_file) -> None:
    with s.connect() as c:
        assert c.request(req("GET", "/cfg?x=1")).status == 404
        port = c.local_port
    assert s.stop() == 0
    text = log_file.read_text()
    assert re.search(r"^CFG\|casgi\.error\|INFO\|.*casgi running on http://127\.0\.0\.1:\d+", text, re.M), text
    assert re.search(
        r'^CFG\|casgi\.access\|INFO\|127\.0\.0\.1:' + str(port) + r' - "GET /cfg\?x=1 HTTP/1\.1" 404', text, re.M
    ), text
    # The access logger has only the file handler: no access line on the console.
    assert "casgi.access" not in s.output()


def test_log_config_json(start_server, tmp_path):
    log_file = tmp_path / "out.log"
    cfg = tmp_path / "logging.json"
    cfg.write_text(json.dumps(dict_config(log_file)))
    s = start_server("basic:app", "--log-config", str(cfg))
    check_config_log(s, log_file)


def test_log_config_yaml(start_server, tmp_path):
    yaml = pytest.importorskip("yaml")
    log_file = tmp_path / "out.log"
    cfg = tmp_path / "logging.yaml"
    cfg.write_text(yaml.safe_dump(dict_config(log_file)))
    s = start_server("basic:app", "--log-config", str(cfg))
    check_config_log(s, log_file)


def test_log_config_ini(start_server, tmp_path):
    log_file = tmp_path / "out.log"
    cfg = tmp_path / "logging.ini"
    cfg.write_text(f"""
[loggers]
keys=root,error,access

[handlers]
keys=file,console

[formatters]
keys=f

[logger_root]
level=WARNING
handlers=

[logger_error]
level=INFO
handlers=file,console
qualname=casgi.error
propagate=0

[logger_access]
level=INFO
handlers=file
qualname=casgi.access
propagate=0

[handler_file]
class=FileHandler
formatter=f
args=({str(log_file)!r},)

[handler_console]
class=StreamHandler
formatter=f
args=(sys.stderr,)

[formatter_f]
format={FORMAT}
""")
    s = start_server("basic:app", "--log-config", str(cfg))
    check_config_log(s, log_file)


def test_colors_by_default_on_a_terminal(tmp_path):
    """On a TTY the default format colours the level name, as uvicorn does."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys

    from helpers import APPS_DIR

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "casgi", "basic:app", "--port", "0", "--app-dir", str(APPS_DIR)],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=clean_env(), cwd=str(tmp_path),
        start_new_session=True,
    )
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 20
        while b"running on" not in out and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        assert b"running on" in out, out
        text = out.decode("utf-8", "replace")
        assert re.search(r"\x1b\[[0-9;]*mINFO\x1b\[0m", text), repr(text)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


# ---------------------------------------------------------------------------
# A --log-config written for uvicorn
# ---------------------------------------------------------------------------

UV_DEFAULT_FMT = "UV|%(name)s|%(levelprefix)s %(message)s"
UV_ACCESS_FMT = 'UV|%(name)s|%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'


def uvicorn_env(tmp_path) -> dict:
    """An environment where `import uvicorn` fails, as on a machine without it."""
    blocker = tmp_path / "no_uvicorn" / "uvicorn"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('uvicorn is not installed here')\n")
    return clean_env({"PYTHONPATH": str(blocker.parent)})


def uvicorn_dict_config(log_file) -> dict:
    """uvicorn's own LOGGING_CONFIG shape, its formatter class names included,
    with both handlers writing to one file."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": UV_DEFAULT_FMT, "use_colors": None},
            "access": {"()": "uvicorn.logging.AccessFormatter", "fmt": UV_ACCESS_FMT},
        },
        "handlers": {
            "default": {"formatter": "default", "class": "logging.FileHandler", "filename": str(log_file)},
            "access": {"formatter": "access", "class": "logging.FileHandler", "filename": str(log_file)},
            "console": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default", "console"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def check_uvicorn_log(s, log_file, root: str = "") -> None:
    with s.connect() as c:
        assert c.request(req("GET", "/cfg?x=1")).status == 404
        port = c.local_port
    assert s.stop() == 0
    text = log_file.read_text()
    assert re.search(r"^UV\|uvicorn\.error\|INFO:     casgi running on http://127\.0\.0\.1:\d+", text, re.M), text
    assert re.search(
        r'^UV\|uvicorn\.access\|INFO:     127\.0\.0\.1:' + str(port)
        + r' - "GET ' + re.escape(root) + r'/cfg\?x=1 HTTP/1\.1" 404 Not Found$', text, re.M
    ), text
    # The configured handlers got the lines, not casgi's default ones.
    running = [line for line in s.output().splitlines() if "casgi running on" in line]
    assert running and all(line.startswith("UV|uvicorn.error|INFO:") for line in running), s.output()


def test_uvicorn_log_config_json_without_uvicorn(start_server, tmp_path):
    log_file = tmp_path / "out.log"
    cfg = tmp_path / "uvicorn-logging.json"
    cfg.write_text(json.dumps(uvicorn_dict_config(log_file)))
    s = start_server("basic:app", "--log-config", str(cfg), env=uvicorn_env(tmp_path))
    check_uvicorn_log(s, log_file)


def test_uvicorn_log_config_ini_without_uvicorn(start_server, tmp_path):
    log_file = tmp_path / "out.log"
    cfg = tmp_path / "uvicorn-logging.ini"
    cfg.write_text(f"""
[loggers]
keys=root,uvicorn,error,access

[handlers]
keys=default,access,console

[formatters]
keys=default,access

[logger_root]
level=WARNING
handlers=

[logger_uvicorn]
level=INFO
handlers=default,console
qualname=uvicorn
propagate=0

[logger_error]
level=INFO
handlers=
qualname=uvicorn.error
propagate=1

[logger_access]
level=INFO
handlers=access
qualname=uvicorn.access
propagate=0

[handler_default]
class=FileHandler
formatter=default
args=({str(log_file)!r},)

[handler_access]
class=FileHandler
formatter=access
args=({str(log_file)!r},)

[handler_console]
class=StreamHandler
formatter=default
args=(sys.stderr,)

[formatter_default]
class=uvicorn.logging.DefaultFormatter
format={UV_DEFAULT_FMT}

[formatter_access]
class=uvicorn.logging.AccessFormatter
format={UV_ACCESS_FMT}
""")
    s = start_server("basic:app", "--log-config", str(cfg), env=uvicorn_env(tmp_path))
    check_uvicorn_log(s, log_file)


def test_uvicorn_log_config_with_log_level_and_root_path(start_server, tmp_path):
    """--log-level applies to the uvicorn loggers the config named, and the
    access line shows the full path (root path included)."""
    log_file = tmp_path / "out.log"
    cfg = tmp_path / "uvicorn-logging.json"
    cfg.write_text(json.dumps(uvicorn_dict_config(log_file)))
    s = start_server("basic:app", "--log-config", str(cfg), "--log-level", "trace", "--root-path", "/api",
                     env=uvicorn_env(tmp_path))
    check_uvicorn_log(s, log_file, root="/api")
    assert re.search(r"^UV\|uvicorn\.error\|TRACE:    127\.0\.0\.1:\d+ - HTTP connection made$",
                     log_file.read_text(), re.M)


def test_uvicorn_formatter_casgi_lacks_names_the_fix(start_server, tmp_path):
    cfg = tmp_path / "uvicorn-logging.json"
    conf = uvicorn_dict_config(tmp_path / "out.log")
    conf["formatters"]["default"]["()"] = "uvicorn.logging.NoSuchFormatter"
    cfg.write_text(json.dumps(conf))
    s = start_server("basic:app", "--log-config", str(cfg), env=uvicorn_env(tmp_path), wait=False)
    assert s.wait(15) == 3
    err = [line for line in s.output().splitlines() if line.startswith("Error:")]
    assert len(err) == 1, s.output()
    assert "uvicorn.logging.NoSuchFormatter" in err[0] or "uvicorn" in err[0]
    assert "casgi.logging provides" in err[0] and "DefaultFormatter" in err[0]


# ---------------------------------------------------------------------------
# --root-path in access lines, trace lines
# ---------------------------------------------------------------------------

def test_access_log_shows_root_path(start_server, loop):
    s = start_server("basic:app", "--root-path", "/api", loop=loop)
    mark = s.mark()
    with s.connect() as c:
        c.request(req("GET", "/x?q=1"))
        port = c.local_port
    s.wait_for(access_line_re(port, "GET /api/x?q=1 HTTP/1.1", "404 Not Found"), since=mark)


TRACE_HTTP = [
    r"TRACE:    127\.0\.0\.1:{port} - HTTP connection made",
    r"TRACE:    127\.0\.0\.1:{port} - ASGI \[\d+\] Started scope=\{{'type': 'http', .*'headers': '<\.\.\.>'",
    r"TRACE:    127\.0\.0\.1:{port} - ASGI \[\d+\] Send \{{'type': 'http\.response\.start', 'status': 200, "
    r"'headers': '<\.\.\.>'",
    r"TRACE:    127\.0\.0\.1:{port} - ASGI \[\d+\] Send \{{'type': 'http\.response\.body', 'body': '<13 bytes>'",
    r"TRACE:    127\.0\.0\.1:{port} - ASGI \[\d+\] Completed",
    r"TRACE:    127\.0\.0\.1:{port} - HTTP connection lost",
]


def test_trace_logs_connections_and_asgi_messages(start_server, loop):
    s = start_server("basic:app", "--log-level", "trace", loop=loop)
    assert re.search(r"^TRACE:    ASGI \[1\] Started scope=\{'type': 'lifespan'", s.output(), re.M), s.output()
    mark = s.mark()
    with s.connect() as c:
        assert c.request(req("GET", "/")).body == b"Hello, world!"
        port = c.local_port
    s.wait_for(rf"127\.0\.0\.1:{port} - HTTP connection lost", since=mark)
    lines = s.output(mark).splitlines()
    at = 0
    for pattern in TRACE_HTTP:
        rx = re.compile("^" + pattern.format(port=port))
        found = [i for i, line in enumerate(lines) if i >= at and rx.search(line)]
        assert found, (pattern, lines)
        at = found[0] + 1


def test_trace_logs_websocket_lines(start_server, loop):
    from websockets.sync.client import connect

    s = start_server("ws_app:app", "--log-level", "trace", loop=loop)
    mark = s.mark()
    with connect(s.url.replace("http", "ws") + "/echo") as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        port = ws.socket.getsockname()[1]
    m = s.wait_for(rf"127\.0\.0\.1:{port} - WebSocket connection lost", since=mark)
    out = s.output(mark)
    for what in ("HTTP connection made", "Upgrading to WebSocket", "WebSocket connection made"):
        assert f"TRACE:    127.0.0.1:{port} - {what}" in out, out
    assert re.search(rf"127\.0\.0\.1:{port} - ASGI \[\d+\] Receive \{{'type': 'websocket\.receive', "
                     r"'text': '<2 chars>'\}", out), out
    assert f"127.0.0.1:{port} - HTTP connection lost" not in out
    assert m


@pytest.mark.parametrize("level", ["debug", "info"])
def test_no_trace_lines_above_trace(start_server, level):
    s = start_server("basic:app", "--log-level", level)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
        port = c.local_port
    assert s.stop() == 0
    out = s.output()
    assert "TRACE" not in out and "connection made" not in out and "ASGI [" not in out
    assert f'127.0.0.1:{port} - "GET / HTTP/1.1" 200 OK' in out
