"""--access-log-format (gunicorn's atoms) and --access-log-json: every atom
against real requests, byte-exact; parity with gunicorn's own sync worker
for the same requests; JSON lines; the forwarded client; HTTP/2 and TLS;
responses the client abandons (HTTP/1.1 close, HTTP/2 reset) still logged
with their status and the bytes that left; the record a user's logging
configuration receives; the gunicorn worker's access_log_format."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import sys
import time

import pytest

from h2_util import H2Client, h2_tls_ctx
from helpers import RawConn, clean_env, free_port, req, run_casgi

pytestmark = pytest.mark.timeout(60)

APP = "alog_app:app"
# Every atom whose value does not depend on the time or the process.
STABLE = ('%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s '
          '%({x-req-id}i)s %({X-Req-Id}i)s %({x-served-by}o)s %({content-length}o)s %({missing}i)s '
          '%(zz)s 100%%')
TIMED = "%(t)s %(T)s %(M)s %(D)s %(L)s %(p)s %(T)d"
DATE_RE = r"\[\d\d/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"

HEADERS = [("Referer", "https://example.com/from"), ("User-Agent", 'curl/8 "q"'),
           ("X-Req-Id", "r-1"), ("Authorization", "Basic YnJrMHY6")]


def access_line(p, mark: int, pattern: str = r".", timeout: float = 5.0) -> str:
    """The first stdout line after `mark` matching `pattern`, without its newline."""
    m = p.wait_for(pattern, since=mark, stream="stdout", timeout=timeout)
    return m.string.rstrip("\n")


def test_every_atom_byte_exact(start_server):
    p = start_server(APP, "--access-log-format", STABLE)
    mark = p.mark()
    with p.connect() as c:
        r = c.request(req("GET", "/a%20b/c?x=1&y=%22", headers=HEADERS))
        assert r.status == 200 and r.body == b"hello"
    assert access_line(p, mark) == (
        '127.0.0.1 - brk0v "GET /a%20b/c?x=1&y=%22 HTTP/1.1" 200 5 5 "https://example.com/from" '
        '"curl/8 \\"q\\"" GET /a b/c x=1&y=%22 HTTP/1.1 r-1 r-1 casgi 5 - - 100%')
    # Without the optional headers, a 404, HTTP/1.0.
    mark = p.mark()
    with p.connect() as c:
        r = c.request(req("POST", "/missing", body=b"abc", version="HTTP/1.0", host=None))
        assert r.status == 404
    assert access_line(p, mark) == (
        '127.0.0.1 - - "POST /missing HTTP/1.0" 404 7 7 "-" "-" POST /missing  HTTP/1.0 - - casgi 7 - - 100%')


def test_timed_atoms_and_pid(start_server):
    p = start_server(APP, "--access-log-format", TIMED)
    mark = p.mark()
    with p.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    line = access_line(p, mark)
    m = re.fullmatch(DATE_RE + r" (\d+) (\d+) (\d+) (\d+)\.(\d{6}) <(\d+)> (\d+)", line)
    assert m, line
    secs, ms, us, whole, frac, pid, secs_d = (int(x) for x in m.groups()[1:])
    assert int(pid) == p.pid
    assert secs == whole == secs_d == 0 and ms == us // 1000 and us == frac and 0 < us < 1_000_000, line


def test_head_and_no_body_count_nothing(start_server):
    p = start_server(APP, "--access-log-format", "%(r)s %(s)s %(b)s %(B)s")
    mark = p.mark()
    with p.connect() as c:
        r = c.request(req("HEAD", "/"), head=True)
        assert r.status == 200
    assert access_line(p, mark) == "HEAD / HTTP/1.1 200 0 0"


def test_environment_variable_atom(start_server):
    p = start_server(APP, "--access-log-format", "%({ALOG_DEPLOY}e)s %({alog_deploy}e)s %({ALOG_UNSET}e)s",
                     env=clean_env({"ALOG_DEPLOY": "blue"}))
    mark = p.mark()
    with p.connect() as c:
        assert c.request(req("GET", "/")).status == 200
    assert access_line(p, mark) == "blue blue -"


def test_env_var_option_and_request_data_cannot_forge_lines(start_server):
    p = start_server(APP, env=clean_env({"CASGI_ACCESS_LOG_FORMAT": '%(h)s "%(r)s" "%(a)s" %(U)s'}))
    mark = p.mark()
    with p.connect() as c:
        c.send(b"GET /x%0aFORGED%22 HTTP/1.1\r\nHost: t\r\nUser-Agent: a\tb\xc3\xa9\"c\r\n\r\n")
        assert c.read_response().status == 200
    time.sleep(0.2)
    out = p.output(mark, stream="stdout")
    assert out == '127.0.0.1 "GET /x%0aFORGED%22 HTTP/1.1" "a\\x09b\\xc3\\xa9\\"c" /x\\x0aFORGED\\"\n', out


@pytest.mark.parametrize("fmt,why", [
    ("%(h)s %s", "'%' must be followed by '(name)s' or '%' at offset 6"),
    ("%(h", "unbalanced '('"),
    ("%(h)d", "only B, T, M and D are numbers"),
    ("%(h)5s", "must be followed by 's'"),
])
def test_malformed_format_is_a_startup_error(fmt, why):
    r = run_casgi(APP, "--access-log-format", fmt, "--port", "0")
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid value for '--access-log-format': "), r.stderr
    assert why in lines[0], lines[0]


def test_format_and_json_exclude_each_other():
    r = run_casgi(APP, "--access-log-format", "%(h)s", "--access-log-json")
    assert r.returncode == 2 and "exclude each other" in r.stderr, r


# ---- gunicorn's own output for the same requests ---------------------------


PARITY_REQUESTS = [
    req("GET", "/a%20b/c?x=1&y=%22", headers=HEADERS + [("Connection", "close")]),
    req("GET", "/missing?", headers=[("Connection", "close"), ("Authorization", "basic dXNlcjpw")]),
    req("POST", "/p", body=b"12345", headers=[("Connection", "close"), ("Authorization", "Bearer x"),
                                               ("User-Agent", "UA/1 (x; y)")]),
    req("GET", "/q?a=%41&b", version="HTTP/1.0", host=None,
        headers=[("Authorization", "Basic ixsTtkKzIpVTncfQjbBcnoRNoDfbnaXG")]),
]


def lines_from(p, mark: int, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        got = [ln.rstrip("\n") for ln in p.lines(mark, stream="stdout") if ln.strip()]
        if len(got) >= n:
            return got[:n]
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(got)} of {n} access lines:\n{p.tail(mark)}")
        time.sleep(0.05)


def send_all(port: int) -> None:
    for raw in PARITY_REQUESTS:
        with RawConn.tcp("127.0.0.1", port) as c:
            c.send(raw)
            c.read_response()


def test_lines_equal_gunicorns_sync_worker(start_server, sups):
    """The same format and requests through gunicorn's own sync worker (a WSGI
    twin of the app) and through casgi: the same lines, byte for byte."""
    fmt = STABLE.replace(" %(zz)s", "")  # gunicorn's own atom for it is '-' too; kept simple
    sups.copy_app("alog_app.py")
    port = free_port()
    g = sups.start([], cmd=[sys.executable, "-m", "gunicorn", "-k", "sync", "-w", "1", "alog_app:wsgi",
                            "-b", f"127.0.0.1:{port}", "--access-logfile", "-", "--access-logformat", fmt],
                   wait=False, patterns=())
    g.wait_for(r"Listening at: http://127\.0\.0\.1:%d" % port, timeout=20)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, g.tail()
            time.sleep(0.05)
    time.sleep(0.3)
    gmark = g.mark()
    send_all(port)
    theirs = lines_from(g, gmark, len(PARITY_REQUESTS))
    g.finish(signal.SIGTERM)

    p = start_server(APP, "--access-log-format", fmt)
    mark = p.mark()
    send_all(p.port)
    ours = lines_from(p, mark, len(PARITY_REQUESTS))
    assert ours == theirs
    assert theirs[0].startswith('127.0.0.1 - brk0v "GET /a%20b/c?x=1&y=%22 HTTP/1.1" 200 5 5 '), theirs


# ---- JSON --------------------------------------------------------------------


def test_json_lines_parse_with_json_loads(start_server):
    p = start_server(APP, "--access-log-json")
    mark = p.mark()
    with p.connect() as c:
        c.send(b"GET /j?k=v HTTP/1.1\r\nHost: t\r\nReferer: r\"\\\r\n"
               b"User-Agent: a\t\"\\\xc3\xa9\xf0\x9f\x98\x80\xff!\r\nAuthorization: Basic dXNlcjpw\r\n\r\n")
        assert c.read_response().status == 200
        port = c.local_port
        assert c.request(req("GET", "/missing")).status == 404
    lines = lines_from(p, mark, 2)
    first, second = (json.loads(ln) for ln in lines)
    assert all(ln.isascii() for ln in lines)
    assert first["client"] == "127.0.0.1" and first["port"] == port
    assert (first["method"], first["path"], first["query"], first["protocol"]) == ("GET", "/j", "k=v", "HTTP/1.1")
    assert (first["status"], first["bytes"]) == (200, 5)
    assert first["referer"] == 'r"\\'
    assert first["user_agent"] == 'a\t"\\\u00e9\U0001F600\ufffd!'
    assert first["user"] == "user" and first["pid"] == p.pid
    assert isinstance(first["duration"], float) and 0 < first["duration"] < 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", first["time"])
    assert (second["status"], second["bytes"], second["referer"], second["user_agent"], second["user"]) == (
        404, 7, None, None, None)


# ---- the client logged, protocols -------------------------------------------


def test_forwarded_client_is_the_logged_client(start_server):
    p = start_server(APP, "--access-log-format", "%(h)s %(s)s", "--forwarded-allow-ips", "127.0.0.1")
    mark = p.mark()
    with p.connect() as c:
        assert c.request(req("GET", "/", headers=[("X-Forwarded-For", "203.0.113.9, 127.0.0.1")])).status == 200
        assert c.request(req("GET", "/", headers=[("X-Forwarded-For", "2001:db8::7")])).status == 200
    assert lines_from(p, mark, 2) == ["203.0.113.9 200", "2001:db8::7 200"]


def test_untrusted_peer_forwarding_is_ignored(start_server):
    p = start_server(APP, "--access-log-json", "--forwarded-allow-ips", "10.9.9.9")
    mark = p.mark()
    with p.connect() as c:
        assert c.request(req("GET", "/", headers=[("X-Forwarded-For", "203.0.113.9")])).status == 200
    assert json.loads(lines_from(p, mark, 1)[0])["client"] == "127.0.0.1"


H2_FMT = '%(h)s "%(r)s" %(H)s %(s)s %(B)s "%(a)s" %({x-served-by}o)s %(U)s'


def test_http2_cleartext(start_server):
    p = start_server(APP, "--access-log-format", H2_FMT)
    mark = p.mark()
    with H2Client.tcp(p.port) as c:
        s = c.request("GET", "/h2?x=1", headers=[(b"user-agent", b"h2-test")])
        assert s.status == 200 and s.body == b"hello"
    assert access_line(p, mark) == '127.0.0.1 "GET /h2?x=1 HTTP/2" HTTP/2 200 5 "h2-test" casgi /h2'


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("trustme")
    from tls_util import Pki

    return Pki(tmp_path_factory.mktemp("pki"))


def test_tls_http1_and_h2(start_server, pki):
    import ssl

    p = start_server(APP, "--access-log-format", H2_FMT, "--ssl-certfile", str(pki.server.chain),
                     "--ssl-keyfile", str(pki.server.key))
    mark = p.mark()
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with RawConn(ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.port)), server_hostname="localhost")) as c:
        assert c.request(req("GET", "/tls", headers=[("User-Agent", "tls-1")])).status == 200
    assert access_line(p, mark) == '127.0.0.1 "GET /tls HTTP/1.1" HTTP/1.1 200 5 "tls-1" casgi /tls'
    mark = p.mark()
    with H2Client.tls(p.port, h2_tls_ctx(str(pki.ca_file))) as c:
        assert c.request("GET", "/tls2", headers=[(b"user-agent", b"tls-2")]).status == 200
    assert access_line(p, mark) == '127.0.0.1 "GET /tls2 HTTP/2" HTTP/2 200 5 "tls-2" casgi /tls2'


# ---- abandoned responses -----------------------------------------------------


ABANDON_FMT = '"%(r)s" %(s)s %(B)s'


@pytest.mark.parametrize("json_line", [False, True], ids=["format", "json"])
def test_http1_client_gone_mid_response_is_logged(start_server, json_line):
    p = start_server(APP, *(["--access-log-json"] if json_line else ["--access-log-format", ABANDON_FMT]))
    mark = p.mark()
    with p.connect() as c:
        c.send(req("GET", "/partial"))
        head = c.read_head()
        assert head.status == 200
        time.sleep(0.1)
    line = access_line(p, mark)
    if json_line:
        got = json.loads(line)
        assert (got["path"], got["status"], got["bytes"]) == ("/partial", 200, 7), got
    else:
        assert line == '"GET /partial HTTP/1.1" 200 7'


def test_http2_stream_reset_is_logged_with_what_was_sent(start_server):
    p = start_server(APP, "--access-log-format", ABANDON_FMT)
    mark = p.mark()
    with H2Client.tcp(p.port) as c:
        sid = c.send_request("GET", "/partial")
        c.pump_until(lambda: len(c.stream(sid).body) == 7, what="the partial body")
        c.reset(sid)
        assert access_line(p, mark) == '"GET /partial HTTP/2" 200 7'
        assert c.request("GET", "/").status == 200  # the connection goes on


def test_http2_reset_counts_only_bytes_that_left(start_server):
    """200,000 bytes queued, the client's window lets 65,535 through, then it
    resets: the line says 65535, not what the app handed over."""
    p = start_server(APP, "--access-log-format", ABANDON_FMT)
    mark = p.mark()
    with H2Client.tcp(p.port, auto_window=False) as c:
        sid = c.send_request("GET", "/big")
        c.pump_until(lambda: len(c.stream(sid).body) == 65535, what="a window's worth")
        c.pump_for(0.2)
        assert len(c.stream(sid).body) == 65535
        c.reset(sid)
        assert access_line(p, mark) == '"GET /big HTTP/2" 200 65535'


# ---- a user's logging configuration ----------------------------------------

# The server's own messages (the "running on" line the tests wait for).
ERR_HANDLER = {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}}
ERR_LOGGER = {"casgi": {"handlers": ["err"], "level": "INFO", "propagate": False}}


def test_log_config_records_are_gunicorns(start_server, tmp_path):
    """With --log-config the record is gunicorn's: msg the format, args the
    atoms (numbers as int), so the message is the line; casgi's
    AccessFormatter still shows uvicorn's shape from the same record."""
    cfg = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "msg": {"format": "MSG %(message)s"},
            "args": {"format": "ARGS %(args)r"},
            "uv": {"()": "casgi.logging.AccessFormatter",
                   "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                   "use_colors": False},
        },
        "handlers": {**{name: {"class": "logging.StreamHandler", "formatter": name, "stream": "ext://sys.stdout"}
                        for name in ("msg", "args", "uv")}, **ERR_HANDLER},
        "loggers": {"casgi.access": {"handlers": ["msg", "args", "uv"], "level": "INFO", "propagate": False},
                    **ERR_LOGGER},
    }
    path = tmp_path / "log.json"
    path.write_text(json.dumps(cfg))
    p = start_server(APP, "--log-config", str(path), "--access-log-format",
                     '%(h)s "%(r)s" %(s)s %(B)s %({x-req-id}i)s %(zz)s 5%%')
    mark = p.mark()
    with p.connect() as c:
        assert c.request(req("GET", "/r?q", headers=[("X-Req-Id", "7")])).status == 200
    msg = access_line(p, mark, r"^MSG ")
    assert msg == 'MSG 127.0.0.1 "GET /r?q HTTP/1.1" 200 5 7 - 5%'
    args = ast.literal_eval(access_line(p, mark, r"^ARGS ")[5:])
    assert args["h"] == "127.0.0.1" and args["r"] == "GET /r?q HTTP/1.1" and args["s"] == "200"
    assert args["B"] == 5 and isinstance(args["D"], int) and args["l"] == "-"
    assert args["{x-req-id}i"] == "7" and args["zz"] == "-" and args["U"] == "/r" and args["q"] == "q"
    assert access_line(p, mark, r"^INFO") == 'INFO:     127.0.0.1 - "GET /r?q HTTP/1.1" 200 OK'


def test_log_config_json_record(start_server, tmp_path):
    cfg = {"version": 1, "disable_existing_loggers": False,
           "formatters": {"msg": {"format": "MSG %(message)s"}},
           "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "msg", "stream": "ext://sys.stdout"},
                        **ERR_HANDLER},
           "loggers": {"casgi.access": {"handlers": ["h"], "level": "INFO", "propagate": False}, **ERR_LOGGER}}
    path = tmp_path / "log.json"
    path.write_text(json.dumps(cfg))
    p = start_server(APP, "--log-config", str(path), "--access-log-json")
    mark = p.mark()
    with p.connect() as c:
        assert c.request(req("GET", "/%25?a=%25s")).status == 200
    got = json.loads(access_line(p, mark, r"^MSG ")[4:])
    assert (got["path"], got["query"], got["status"]) == ("/%25", "a=%25s", 200)


# ---- the gunicorn worker ----------------------------------------------------


def start_gunicorn_worker(sups, *extra: str):
    sups.copy_app("alog_app.py")
    port = free_port()
    g = sups.start([], cmd=[sys.executable, "-m", "gunicorn", "-k", "casgi.workers.CasgiWorker", "-w", "1",
                            "alog_app:app", "-b", f"127.0.0.1:{port}", "--access-logfile", "-", *extra],
                   wait=False, patterns=())
    g.wait_for(r"Booting worker with pid", timeout=20)
    deadline = time.monotonic() + 15
    while True:
        try:
            with RawConn.tcp("127.0.0.1", port) as c:
                c.request(req("GET", "/warmup", headers=[("Connection", "close")]))
            break
        except OSError:
            assert time.monotonic() < deadline, g.tail()
            time.sleep(0.05)
    g.port = port
    return g


def test_gunicorn_worker_honours_access_log_format(sups):
    pytest.importorskip("gunicorn")
    g = start_gunicorn_worker(sups, "--access-logformat", '%(h)s %(u)s "%(r)s" %(s)s %(b)s "%(a)s" %(p)s')
    mark = g.mark()
    with RawConn.tcp("127.0.0.1", g.port) as c:
        assert c.request(req("GET", "/g?x", headers=HEADERS)).status == 200
    line = access_line(g, mark, r'"GET /g\?x')
    m = re.fullmatch(r'127\.0\.0\.1 brk0v "GET /g\?x HTTP/1\.1" 200 5 "curl/8 \\"q\\"" <(\d+)>', line)
    assert m, line
    assert int(m.group(1)) != g.pid  # the worker's pid
    g.finish(signal.SIGTERM)


def test_gunicorn_worker_default_format_is_uvicorns_line(sups):
    pytest.importorskip("gunicorn")
    g = start_gunicorn_worker(sups)
    mark = g.mark()
    with RawConn.tcp("127.0.0.1", g.port) as c:
        assert c.request(req("GET", "/g?x")).status == 200
        port = c.local_port
    assert access_line(g, mark, r'"GET /g\?x') == f'127.0.0.1:{port} - "GET /g?x HTTP/1.1" 200'
    g.finish(signal.SIGTERM)
