"""The HTTP/2 options: --http2/--no-http2, --h2-max-concurrent-streams,
--h2-max-header-list-size, --h2-initial-window-size. Their defaults and
--help, the command line, CASGI_* variables and run() keywords, usage errors
(exit 2, one line), and what a supervisor passes its workers.

This suite's build has nghttp2 (`make install` installs libnghttp2-dev), so
--http2 is accepted here; a build without it refusing --http2 is checked by
tests/check_without.sh in `make build-matrix` (its noh2 cell)."""

import signal
import sys
import textwrap

import pytest

from helpers import APPS_DIR, assert_one_line_error, clean_env, req, run_casgi, run_py
from supervisor_util import WORKER_OPTS, live_children, wait_until

H2_OPTIONS = {
    # option: (default, environment variable)
    "--h2-max-concurrent-streams": ("100", "CASGI_H2_MAX_CONCURRENT_STREAMS"),
    "--h2-max-header-list-size": ("65536", "CASGI_H2_MAX_HEADER_LIST_SIZE"),
    "--h2-initial-window-size": ("262144", "CASGI_H2_INITIAL_WINDOW_SIZE"),
}


def help_line(text: str, start: str) -> str:
    lines = [line for line in text.splitlines() if line.strip().startswith(start)]
    assert len(lines) == 1, f"no single --help line for {start!r}:\n{text}"
    return lines[0]


def test_help_names_each_option_its_default_and_variable():
    r = run_casgi("--help")
    assert r.returncode == 0, r.stderr
    line = help_line(r.stdout, "--http2 / --no-http2")
    assert "default: on when casgi was built with nghttp2" in line
    assert line.endswith("[env: CASGI_HTTP2]")
    for option, (default, env) in H2_OPTIONS.items():
        line = help_line(r.stdout, option + " ")
        assert line.endswith(f"[default: {default}; env: {env}]"), line


@pytest.mark.parametrize("args,message", [
    (["--h2-max-concurrent-streams", "0"], "invalid value for '--h2-max-concurrent-streams': 0 is not >= 1"),
    (["--h2-max-concurrent-streams", "2147483648"],
     "invalid value for '--h2-max-concurrent-streams': 2147483648 is not in the range 1..2147483647"),
    (["--h2-max-concurrent-streams", "ten"], "invalid value for '--h2-max-concurrent-streams': 'ten' is not an integer"),
    (["--h2-max-header-list-size", "1023"],
     "invalid value for '--h2-max-header-list-size': 1023 is not in the range 1024..16777216"),
    (["--h2-max-header-list-size=16777217"],
     "invalid value for '--h2-max-header-list-size': 16777217 is not in the range 1024..16777216"),
    (["--h2-initial-window-size", "-1"], "invalid value for '--h2-initial-window-size': -1 is not >= 0"),
    (["--h2-initial-window-size", "2147483648"],
     "invalid value for '--h2-initial-window-size': 2147483648 is not in the range 0..2147483647"),
    (["--h2-initial-window-size", "64k"], "invalid value for '--h2-initial-window-size': '64k' is not an integer"),
    (["--http2=sometimes"], "invalid value for '--http2': 'sometimes' is not a boolean"),
    (["--no-http2=1"], "option '--no-http2' does not take a value"),
    (["--h2-max-concurrent-streams"], "option '--h2-max-concurrent-streams' requires an argument"),
    (["--http-2"], "unknown option '--http-2' (did you mean '--http2'?)"),
], ids=["streams-0", "streams-2^31", "streams-text", "header-list-1023", "header-list-16M+1", "window-negative",
        "window-2^31", "window-text", "http2-not-bool", "no-http2-value", "streams-missing-value", "misspelt"])
def test_bad_value_exits_2_with_one_line(args, message):
    r = run_casgi("basic:app", "--app-dir", str(APPS_DIR), *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert_one_line_error(r.stderr, message)


@pytest.mark.parametrize("env,message", [
    ({"CASGI_H2_MAX_CONCURRENT_STREAMS": "0"}, "invalid value for 'CASGI_H2_MAX_CONCURRENT_STREAMS': 0 is not >= 1"),
    ({"CASGI_H2_MAX_HEADER_LIST_SIZE": "100"},
     "invalid value for 'CASGI_H2_MAX_HEADER_LIST_SIZE': 100 is not in the range 1024..16777216"),
    ({"CASGI_H2_INITIAL_WINDOW_SIZE": "4294967296"},
     "invalid value for 'CASGI_H2_INITIAL_WINDOW_SIZE': 4294967296 is not in the range 0..2147483647"),
    ({"CASGI_HTTP2": "perhaps"}, "invalid value for 'CASGI_HTTP2': 'perhaps' is not a boolean"),
], ids=["streams", "header-list", "window", "http2"])
def test_bad_environment_value_exits_2_naming_the_variable(env, message):
    r = run_casgi("basic:app", "--app-dir", str(APPS_DIR), env=clean_env(env))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert_one_line_error(r.stderr, message)


def test_command_line_value_overrides_a_bad_environment_value(start_server):
    s = start_server("basic:app", "--h2-max-concurrent-streams", "8",
                     env=clean_env({"CASGI_H2_MAX_CONCURRENT_STREAMS": "0"}))
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


@pytest.mark.parametrize("args", [
    ["--http2", "--h2-max-concurrent-streams", "1", "--h2-max-header-list-size", "1024",
     "--h2-initial-window-size", "0"],
    ["--no-http2", "--h2-max-concurrent-streams=2147483647", "--h2-max-header-list-size=16777216",
     "--h2-initial-window-size=2147483647"],
    ["--http2", "false"],
], ids=["http2-lowest", "no-http2-highest", "http2-false"])
def test_accepted_values_start_and_serve(start_server, args):
    s = start_server("basic:app", *args)
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.status == 200 and r.body == b"Hello, world!"
    assert "Error" not in s.output()


@pytest.mark.parametrize("http2", ["1", "0"])
def test_environment_values_start_and_serve(start_server, http2):
    s = start_server("basic:app", env=clean_env({
        "CASGI_HTTP2": http2, "CASGI_H2_MAX_CONCURRENT_STREAMS": "250",
        "CASGI_H2_MAX_HEADER_LIST_SIZE": "131072", "CASGI_H2_INITIAL_WINDOW_SIZE": "65535"}))
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200


def test_run_keywords_start_and_serve(start_server, tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(f"""
        import casgi
        casgi.run("basic:app", port=0, app_dir={str(APPS_DIR)!r}, http2=True,
                  h2_max_concurrent_streams=16, h2_max_header_list_size=32768,
                  h2_initial_window_size=1 << 20)
    """))
    s = start_server.spawn([], cmd=[sys.executable, str(script)])
    s.wait_running()
    with s.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    assert s.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("keywords,message", [
    ("h2_max_concurrent_streams=0", "ValueError: invalid value for '--h2-max-concurrent-streams': 0 is not >= 1"),
    ("h2_max_header_list_size=512",
     "ValueError: invalid value for '--h2-max-header-list-size': 512 is not in the range 1024..16777216"),
    ("h2_initial_window_size=2**31",
     "ValueError: invalid value for '--h2-initial-window-size': 2147483648 is not in the range 0..2147483647"),
    ("h2_initial_window_size=True", "TypeError: run() argument 'h2_initial_window_size' must be int, not bool"),
    ("http2=[]", "TypeError: run() argument 'http2' must be bool, not list"),
    ("http2='sometimes'", "ValueError: invalid value for '--http2': 'sometimes' is not a boolean"),
], ids=["streams-0", "header-list-512", "window-2^31", "window-bool", "http2-list", "http2-text"])
def test_run_keyword_bad_values_raise(keywords, message):
    out = run_py(f"import casgi\ncasgi.run('main:app', {keywords})\n")
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def worker_argv(pid: int) -> list:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def test_supervisor_passes_the_options_to_its_workers(sups):
    """--no-http2 and the values (here from the environment) reach each worker's
    command line; with neither --http2 nor --no-http2 given, neither is passed,
    so each worker resolves the default from its own build."""
    sups.copy_app("sup_app.py", "main.py")
    for given, passed in ((["--no-http2"], ["--no-http2"]), ([], [])):
        p = sups.casgi("main:app", "--workers", "2", *WORKER_OPTS, *given, workers_started=2,
                       env=sups.env({"CASGI_H2_MAX_CONCURRENT_STREAMS": "7",
                                     "CASGI_H2_INITIAL_WINDOW_SIZE": "1048576"}))
        wait_until(lambda: len(live_children(p.pid)) == 2, 5, "two live workers", proc=p)
        for pid in live_children(p.pid):
            argv = worker_argv(pid)
            assert [a for a in argv if a in ("--http2", "--no-http2")] == passed, argv
            for option, value in (("--h2-max-concurrent-streams", "7"), ("--h2-max-header-list-size", "65536"),
                                  ("--h2-initial-window-size", "1048576")):
                assert argv[argv.index(option) + 1] == value, argv
        p.finish(signal.SIGTERM)
