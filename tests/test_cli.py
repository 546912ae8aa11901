"""The command line: help, version, usage errors, startup failures, environment,
listening on a port, a Unix socket or an inherited file descriptor, app loading."""

import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import (
    APPS_DIR,
    HTTP_RUNNING_RE,
    RawConn,
    assert_one_line_error,
    clean_env,
    free_port,
    req,
    run_casgi,
)

OPTIONS = [
    "--factory", "--app-dir", "--host", "--port", "--uds", "--fd", "--backlog", "--loop", "--lifespan",
    "--root-path", "--log-level", "--access-log", "--use-colors", "--log-config", "--timeout-keep-alive",
    "--timeout-graceful-shutdown", "--limit-concurrency", "--limit-max-requests", "--server-header",
    "--date-header", "--header", "--env-file", "--version", "--help", "--limit-request-line",
    "--limit-request-field-size", "--limit-request-fields", "--timeout-request-header",
]


def installed_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import casgi; print(casgi.__version__)"],
                         capture_output=True, text=True, timeout=20, cwd=tempfile.gettempdir())
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def assert_startup_error(stderr: str, *needles: str) -> None:
    """A clear one-line error naming the problem, no traceback; other lines
    (if any) are ordinary INFO log lines."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if not line.startswith("INFO:")]
    assert len(error_lines) == 1, f"expected one error line, got:\n{stderr}"
    for n in needles:
        assert n in error_lines[0], f"{n!r} not named in {error_lines[0]!r}"


# ---------------------------------------------------------------------------
# --help / --version
# ---------------------------------------------------------------------------


def test_help_lists_every_option():
    r = run_casgi("--help")
    assert r.returncode == 0, r.stderr
    missing = [o for o in OPTIONS if o not in r.stdout]
    assert not missing, f"--help does not mention {missing}"
    assert "--no-access-log" in r.stdout or "[no-]access-log" in r.stdout
    assert "APP" in r.stdout


def test_version_prints_the_package_version():
    r = run_casgi("--version")
    assert r.returncode == 0, r.stderr
    assert installed_version() in r.stdout
    assert "casgi" in r.stdout.lower()


def test_console_script_installed_next_to_python():
    script = Path(sys.executable).parent / "casgi"
    if not script.exists():
        pytest.skip("no console script beside this interpreter (casgi not installed in this environment)")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and installed_version() in r.stdout


# ---------------------------------------------------------------------------
# Usage errors: exit 2, one line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["basic:app", "--prot", "8000"], "--prot"),
    (["basic:app", "--port", "abc"], "abc"),
    (["basic:app", "--port", "70000"], "70000"),
    (["basic:app", "--loop", "tornado"], "tornado"),
    (["basic:app", "--lifespan", "maybe"], "maybe"),
    (["basic:app", "--log-level", "loud"], "loud"),
    (["basic:app", "--timeout-keep-alive", "soon"], "soon"),
    (["basic:app", "--limit-concurrency", "many"], "many"),
    (["basic:app", "--header", "no-colon-here"], "no-colon-here"),
    (["basic:app", "--port"], "--port"),
    (["basic:app", "other:app"], "other:app"),
], ids=["unknown-option", "port-not-int", "port-out-of-range", "bad-loop", "bad-lifespan", "bad-log-level",
        "bad-float", "bad-int", "header-without-colon", "missing-value", "two-apps"])
def test_usage_error_exits_2_with_one_line(args, needle):
    r = run_casgi(*args, "--app-dir", str(APPS_DIR))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert_one_line_error(r.stderr, needle)


def test_missing_app_argument_exits_2():
    r = run_casgi()
    assert r.returncode == 2
    assert_one_line_error(r.stderr)


def test_bad_env_value_exits_2():
    r = run_casgi("basic:app", "--app-dir", str(APPS_DIR), env=clean_env({"CASGI_PORT": "not-a-port"}))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert_one_line_error(r.stderr, "not-a-port")


# ---------------------------------------------------------------------------
# Startup failures: exit 3
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("app,needles", [
    ("casgi_no_such_module_xyz:app", ["casgi_no_such_module_xyz"]),
    ("basic:no_such_attribute", ["no_such_attribute"]),
    ("basic:app.no_such_attr", ["no_such_attr"]),
    ("basic", ["basic"]),
    ("basic:NOT_CALLABLE", ["callable"]),
], ids=["missing-module", "missing-attribute", "missing-dotted-attribute", "no-colon", "not-callable"])
def test_bad_app_import_string_exits_3_without_traceback(app, needles):
    r = run_casgi(app, "--app-dir", str(APPS_DIR))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert_startup_error(r.stderr, *needles)


def test_module_raising_on_import_shows_traceback_exits_3():
    r = run_casgi("raises_on_import:app", "--app-dir", str(APPS_DIR))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Traceback (most recent call last)" in r.stderr
    assert "ValueError: import-time-failure-marker" in r.stderr
    assert "raises_on_import.py" in r.stderr


def test_module_importing_a_missing_module_shows_traceback_exits_3():
    r = run_casgi("imports_missing:app", "--app-dir", str(APPS_DIR))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Traceback (most recent call last)" in r.stderr
    assert "casgi_test_module_that_does_not_exist" in r.stderr


def test_port_in_use_exits_3():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        r = run_casgi("basic:app", "--app-dir", str(APPS_DIR), "--port", str(port))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert re.search(r"(?i)address already in use|in use", r.stderr), r.stderr


def test_app_dir_defaults_to_cwd(start_server):
    s = start_server("basic:app", app_dir=None, cwd=APPS_DIR)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_app_not_found_outside_app_dir(tmp_path):
    r = run_casgi("basic:app", cwd=tmp_path)
    assert r.returncode == 3
    assert_startup_error(r.stderr, "basic")


def test_dotted_attribute_app(start_server, tmp_path):
    (tmp_path / "nested_app.py").write_text(
        "import basic\n"
        "class Holder:\n"
        "    pass\n"
        "holder = Holder()\n"
        "holder.inner = Holder()\n"
        "holder.inner.app = basic.app\n"
    )
    s = start_server("nested_app:holder.inner.app", app_dir=tmp_path,
                     env=clean_env({"PYTHONPATH": str(APPS_DIR)}))
    with s.connect() as c:
        assert c.request(req("GET", "/")).body == b"Hello, world!"


# ---------------------------------------------------------------------------
# Listening
# ---------------------------------------------------------------------------


def test_port_0_logs_the_real_port(start_server):
    s = start_server("basic:app")
    line = s.wait_for(HTTP_RUNNING_RE).string
    assert line.rstrip("\n") == f"INFO:     casgi running on http://127.0.0.1:{s.port} (Press CTRL+C to quit)"
    assert s.port != 0
    assert f"Started server process [{s.pid}]" in s.output()
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_env_port_used_when_no_option(start_server):
    port = free_port()
    s = start_server("basic:app", port=None, env=clean_env({"CASGI_PORT": str(port)}))
    assert s.port == port
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_command_line_wins_over_env(start_server):
    env_port, cli_port = free_port(), free_port()
    s = start_server("basic:app", port=str(cli_port), env=clean_env({"CASGI_PORT": str(env_port)}))
    assert s.port == cli_port


def test_env_root_path(start_server):
    s = start_server("basic:app", env=clean_env({"CASGI_ROOT_PATH": "/mounted"}))
    with s.connect() as c:
        assert c.request(req("GET", "/scope")).json()["root_path"] == "/mounted"


def test_env_file_visible_to_app(start_server, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text(
        "# settings\n"
        "CASGI_TEST_PLAIN=hello from env file\n"
        "export CASGI_TEST_EXPORTED=exported\n"
        "CASGI_TEST_QUOTED=\"with # hash\"\n"
        "\n"
    )
    s = start_server("basic:app", "--env-file", str(env_file))
    with s.connect() as c:
        assert c.request(req("GET", "/env?name=CASGI_TEST_PLAIN")).json()["value"] == "hello from env file"
        assert c.request(req("GET", "/env?name=CASGI_TEST_EXPORTED")).json()["value"] == "exported"
        assert c.request(req("GET", "/env?name=CASGI_TEST_QUOTED")).json()["value"] == "with # hash"


def test_missing_env_file_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.env")
    r = run_casgi("basic:app", "--app-dir", str(APPS_DIR), "--env-file", missing, "--port", "0")
    assert r.returncode != 0
    assert missing in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_uds(start_server, tmp_path, loop_name):
    if loop_name == "uvloop":
        pytest.importorskip("uvloop")
    path = str(tmp_path / "s.sock")
    s = start_server("basic:app", "--uds", path, port=None, loop=loop_name)
    assert path in s.where or path in s.output()
    with RawConn.unix(path) as c:
        r = c.request(req("GET", "/"))
        assert r.body == b"Hello, world!"
    assert s.stop() == 0


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_fd(start_server, loop_name):
    if loop_name == "uvloop":
        pytest.importorskip("uvloop")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    try:
        s = start_server("basic:app", "--fd", str(fd), port=None, loop=loop_name, pass_fds=[fd])
    finally:
        sock.close()  # the server holds its own copy
    with RawConn.tcp("127.0.0.1", port) as c:
        r = c.request(req("GET", "/scope"))
    assert r.status == 200
    assert r.json()["server"][1] == port
    assert s.stop() == 0


def test_ipv6_host(start_server):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    s = start_server("basic:app", "--host", "::1", wait=False)
    m = s.wait_for(r"casgi running on http://\[::1\]:(\d+)")
    port = int(m.group(1))
    sock = socket.create_connection(("::1", port), timeout=5)
    with RawConn(sock) as c:
        r = c.request(req("GET", "/scope"))
    assert r.json()["client"][0] == "::1"


# ---------------------------------------------------------------------------
# Kinds of application
# ---------------------------------------------------------------------------


def test_factory(start_server, loop):
    s = start_server("factory_app:create_app", "--factory", loop=loop)
    with s.connect() as c:
        assert c.request(req("GET", "/")).body == b"from factory, calls=1"
        assert c.request(req("GET", "/")).body == b"from factory, calls=1"


def test_asgi2_app_served(start_server, loop):
    s = start_server("asgi2_app:app", loop=loop)
    with s.connect() as c:
        r = c.request(req("GET", "/two"))
    assert r.status == 200 and r.body == b"asgi2 /two"


@pytest.mark.parametrize("loop_name,expected", [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")])
def test_loop_option_selects_the_event_loop(start_server, loop_name, expected):
    if expected == "uvloop":
        pytest.importorskip("uvloop")
    s = start_server("basic:app", loop=loop_name)
    with s.connect() as c:
        info = c.request(req("GET", "/loop")).json()
    assert info["module"].split(".")[0] == expected, info


def test_backlog_option_accepted(start_server):
    s = start_server("basic:app", "--backlog", "16")
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_env_file_loaded_before_app_import(start_server, tmp_path):
    (tmp_path / "env_at_import.py").write_text(
        "import os\n"
        "AT_IMPORT = os.environ.get('CASGI_TEST_AT_IMPORT', 'missing')\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    body = AT_IMPORT.encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200,\n"
        "                'headers': [(b'content-length', str(len(body)).encode())]})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n"
    )
    env_file = tmp_path / ".env"
    env_file.write_text("CASGI_TEST_AT_IMPORT=seen at import\n")
    s = start_server("env_at_import:app", "--env-file", str(env_file), "--lifespan", "off", app_dir=tmp_path)
    with s.connect() as c:
        assert c.request(req("GET", "/")).body == b"seen at import"


def test_equals_form_of_options(start_server):
    s = start_server("basic:app", "--port=0", "--header=X-Eq: equals", "--root-path=/eq", port=None)
    with s.connect() as c:
        r = c.request(req("GET", "/scope"))
    assert r.header("x-eq") == "equals"
    assert r.json()["root_path"] == "/eq"


@pytest.mark.parametrize("header", ["X-A: b\r\nInjected: yes", "X-A: b\nInjected: yes", "X A: b",
                                    "X\r\nInjected: b"])
def test_header_option_with_bad_bytes_never_reaches_the_wire(start_server, header):
    s = start_server("basic:app", "--header", header, wait=False)
    m = s.wait_for(r"casgi running on|Error", timeout=20)
    if "Error" in m.group(0):
        # Refused at startup: one line (the bad bytes escaped), exit 2.
        assert s.wait(10) == 2
        assert_one_line_error(s.stderr, "--header")
        return
    s.wait_running()
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert b"Injected" not in r.raw


# ---------------------------------------------------------------------------
# uvicorn's implementation options: accepted, one INFO line each
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("args,line", [
    (["--http", "h11"], "--http h11: casgi's own HTTP/1.1 implementation serves it."),
    (["--http", "httptools"], "--http httptools: casgi's own HTTP/1.1 implementation serves it."),
    (["--ws", "websockets"], "--ws websockets: casgi's own WebSocket implementation serves it."),
    (["--ws", "wsproto"], "--ws wsproto: casgi's own WebSocket implementation serves it."),
    (["--ws", "websockets-sansio"], "--ws websockets-sansio: casgi's own WebSocket implementation serves it."),
    (["--interface", "asgi3"], "--interface asgi3: the application is called as ASGI 3 without detection."),
    (["--h11-max-incomplete-event-size", "16384"],
     "--h11-max-incomplete-event-size 16384: casgi's own HTTP/1.1 parser serves it"),
    (["--reset-contextvars"], "--reset-contextvars: casgi's behaviour already"),
], ids=["http-h11", "http-httptools", "ws-websockets", "ws-wsproto", "ws-sansio", "interface-asgi3", "h11-max",
        "reset-contextvars"])
def test_uvicorn_implementation_options_accepted_with_one_info_line(start_server, args, line):
    s = start_server("basic:app", *args)
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    notes = [x for x in s.output().splitlines() if x.startswith("INFO:     --")]
    assert len(notes) == 1 and notes[0].startswith("INFO:     " + line), s.output()


def test_uvicorn_implementation_options_silent_when_not_set(start_server):
    s = start_server("basic:app", "--http", "auto", "--ws", "auto", "--interface", "auto")
    assert not [x for x in s.output().splitlines() if x.startswith("INFO:     --")], s.output()


def test_uvicorn_websocket_implementation_names_serve_websockets(start_server):
    from websockets.sync.client import connect

    s = start_server("ws_app:app", "--ws", "wsproto")
    with connect(s.url.replace("http", "ws") + "/echo") as ws:
        ws.send("hello")
        assert ws.recv() == "hello"


@pytest.mark.parametrize("args,needle", [
    (["--http", "zttp2"], "zttp2"),
    (["--ws", "autobahn"], "autobahn"),
    (["--interface", "asgi4"], "asgi4"),
    (["--h11-max-incomplete-event-size", "0"], "0"),
])
def test_uvicorn_implementation_options_validated(args, needle):
    r = run_casgi("basic:app", *args, "--app-dir", str(APPS_DIR))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert_one_line_error(r.stderr, needle)


def test_interface_asgi2_forces_the_adapter(start_server):
    s = start_server("asgi2_undetectable:app", "--interface", "asgi2")
    assert "INFO:     --interface asgi2: casgi's ASGI 2 adapter serves the application." in s.output()
    with s.connect() as c:
        r = c.request(req("GET", "/two"))
    assert (r.status, r.body) == (200, b"asgi2 /two")


def test_h11_max_incomplete_event_size_bounds_the_head(start_server, loop):
    s = start_server("basic:app", "--h11-max-incomplete-event-size", "1024", loop=loop)
    with s.connect() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 1200)
        r = c.read_response()
    assert r.status == 431
    # A complete head of the same size is still served.
    with s.connect() as c:
        r = c.request(req("GET", "/", headers=[("X-Big", "a" * 1200)]))
    assert r.status == 200

