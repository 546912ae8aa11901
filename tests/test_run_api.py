"""casgi.run() from a Python script, with an import string or an app object."""

import json
import re
import signal
import sys
import textwrap
import time

from helpers import APPS_DIR, req


def spawn_script(start_server, tmp_path, source: str):
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(source))
    return start_server.spawn([], cmd=[sys.executable, str(script)])


def test_run_with_import_string(start_server, tmp_path, loop):
    s = spawn_script(start_server, tmp_path, f"""
        import casgi
        casgi.run("basic:app", port=0, loop={loop!r}, app_dir={str(APPS_DIR)!r})
    """)
    s.wait_running()
    with s.connect() as c:
        assert c.request(req("GET", "/")).body == b"Hello, world!"
    assert s.stop(signal.SIGINT) == 0


def test_run_with_app_object(start_server, tmp_path, loop):
    s = spawn_script(start_server, tmp_path, f"""
        import casgi

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    kind = msg["type"].rsplit(".", 1)[-1]
                    await send({{"type": msg["type"] + ".complete"}})
                    if kind == "shutdown":
                        return
            await send({{"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"6")]}})
            await send({{"type": "http.response.body", "body": b"object"}})

        if __name__ == "__main__":
            casgi.run(app, port=0, loop={loop!r}, header=["X-Run: yes"], server_header=False,
                      access_log=False, timeout_keep_alive=2.5, limit_request_fields=50)
    """)
    s.wait_running()
    with s.connect() as c:
        r = c.request(req("GET", "/"))
        port = c.local_port
    assert r.body == b"object"
    assert r.header("x-run") == "yes"
    assert r.header("server") is None
    assert s.stop(signal.SIGINT) == 0
    assert f"127.0.0.1:{port}" not in s.output()


def test_run_with_unknown_keyword_raises(tmp_path):
    import subprocess
    script = tmp_path / "bad.py"
    script.write_text(textwrap.dedent("""
        import casgi
        async def app(scope, receive, send):
            pass
        try:
            casgi.run(app, prot=8000)
        except (TypeError, ValueError) as exc:
            print("RAISED", type(exc).__name__, exc)
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20, cwd=str(tmp_path))
    assert "RAISED" in r.stdout, (r.stdout, r.stderr)
    assert "prot" in r.stdout


def test_run_startup_failure_exits_3(tmp_path):
    import subprocess
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(f"""
        import casgi
        casgi.run("casgi_no_such_module_xyz:app", port=0, app_dir={str(APPS_DIR)!r})
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20, cwd=str(tmp_path))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "casgi_no_such_module_xyz" in r.stderr


# ---------------------------------------------------------------------------
# uvicorn.run()'s argument types
# ---------------------------------------------------------------------------

def test_run_log_config_dict_log_level_int_and_forwarded_list(start_server, tmp_path):
    log_file = tmp_path / "out.log"
    s = spawn_script(start_server, tmp_path, f"""
        import casgi
        fmt = "DICT|%(name)s|%(levelprefix)s %(message)s"
        config = {{
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {{
                "default": {{"()": "uvicorn.logging.DefaultFormatter", "fmt": fmt}},
                "access": {{"()": "uvicorn.logging.AccessFormatter",
                            "fmt": 'DICT|%(name)s|%(client_addr)s - "%(request_line)s" %(status_code)s'}},
            }},
            "handlers": {{
                "file": {{"class": "logging.FileHandler", "filename": {str(log_file)!r}, "formatter": "access"}},
                "console": {{"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                             "formatter": "default"}},
            }},
            "loggers": {{
                "uvicorn.error": {{"handlers": ["console"], "level": "INFO", "propagate": False}},
                "uvicorn.access": {{"handlers": ["file"], "level": "INFO", "propagate": False}},
            }},
        }}
        casgi.run("basic:app", port=0, app_dir={str(APPS_DIR)!r}, log_config=config, log_level=5,
                  forwarded_allow_ips=["10.9.9.9", "127.0.0.1"])
    """)
    s.wait_running()
    assert re.search(r"^DICT\|uvicorn\.error\|INFO:     casgi running on", s.output(), re.M), s.output()
    with s.connect() as c:
        r = c.request(req("GET", "/scope", headers=[("X-Forwarded-For", "203.0.113.7")]))
        port = c.local_port
    # The list of trusted proxies holds 127.0.0.1: the forwarded address is the client.
    assert r.json()["client"][0] == "203.0.113.7", r.body
    # log_level=5 is trace: connection lines on uvicorn.error.
    s.wait_for(rf"^DICT\|uvicorn\.error\|TRACE:    127\.0\.0\.1:{port} - HTTP connection made")
    assert s.stop(signal.SIGINT) == 0
    # The access line names the forwarded client, as uvicorn's does.
    assert re.search(r'^DICT\|uvicorn\.access\|203\.0\.113\.7:0 - "GET /scope HTTP/1\.1" 200 OK$',
                     log_file.read_text(), re.M), log_file.read_text()


def test_run_log_config_none_leaves_the_apps_logging(start_server, tmp_path):
    log_file = tmp_path / "root.log"
    s = spawn_script(start_server, tmp_path, f"""
        import logging
        import casgi
        logging.basicConfig(filename={str(log_file)!r}, level=logging.INFO,
                            format="ROOT|%(name)s|%(levelname)s|%(message)s")
        casgi.run("basic:app", port=0, app_dir={str(APPS_DIR)!r}, log_config=None)
    """)
    deadline = time.monotonic() + 20
    while "casgi running on" not in (log_file.read_text() if log_file.exists() else ""):
        assert time.monotonic() < deadline and s.alive(), s.output()
        time.sleep(0.05)
    assert s.stop(signal.SIGINT) == 0
    text = log_file.read_text()
    assert re.search(r"^ROOT\|casgi\.error\|INFO\|casgi running on http://127\.0\.0\.1:\d+", text, re.M), text
    # casgi's default handlers were not installed.
    assert "casgi running on" not in s.output()


def test_run_log_config_path_like(start_server, tmp_path):
    cfg = tmp_path / "log.json"
    cfg.write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "PATH|%(name)s|%(message)s"}},
        "handlers": {"h": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "f"}},
        "loggers": {"casgi": {"handlers": ["h"], "level": "INFO", "propagate": False}},
    }))
    s = spawn_script(start_server, tmp_path, f"""
        import pathlib
        import casgi
        casgi.run("basic:app", port=0, app_dir={str(APPS_DIR)!r}, log_config=pathlib.Path({str(cfg)!r}),
                  log_level="INFO")
    """)
    s.wait_running()
    assert re.search(r"^PATH\|casgi\.error\|casgi running on", s.output(), re.M), s.output()
    assert s.stop(signal.SIGINT) == 0


def test_run_log_config_dict_not_json_names_the_fix(tmp_path):
    import subprocess
    script = tmp_path / "bad.py"
    script.write_text("import casgi, sys\n"
                      "casgi.run('basic:app', log_config={'version': 1, 'handlers': {'h': {'stream': sys.stderr}}})\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "log_config" in r.stderr and "JSON" in r.stderr and "log_config=None" in r.stderr
