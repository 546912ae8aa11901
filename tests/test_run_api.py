"""casgi.run() from a Python script, with an import string or an app object."""

import signal
import sys
import textwrap

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
