"""--proxy-headers / --forwarded-allow-ips: the client address and scheme come
from X-Forwarded-For / X-Forwarded-Proto only when the peer is a trusted proxy.

The semantics are uvicorn's ProxyHeadersMiddleware: the list holds addresses
and CIDR networks (default 127.0.0.1,::1), '*' trusts everything; every
X-Forwarded-For line is part of one list, whose right-most untrusted entry is
the client. casgi adds 'unix:' (peers on a Unix socket) and rejects entries
that are neither, where uvicorn would keep them as literals that never match."""

import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from helpers import APPS_DIR, RawConn, clean_env, free_port, req, wait_listening
from ws_util import WsConn


def scope_of(server, headers, conn=None):
    with (conn or server.connect()) as c:
        r = c.request(req("GET", "/scope", headers=headers))
        assert r.status == 200, r.status_line
        return r.json()


def have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def start_ipv6(start_server, *args):
    if not have_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    s = start_server("basic:app", "--host", "::1", *args, wait=False)
    m = s.wait_for(r"casgi running on http://\[::1\]:(\d+)")
    s.host, s.port = "::1", int(m.group(1))
    return s


def ipv6_conn(s):
    return RawConn(socket.create_connection(("::1", s.port), timeout=5))


def test_trusted_peer_sets_client_and_scheme(start_server, loop):
    # The default trusts 127.0.0.1, the address the tests connect from.
    s = start_server("basic:app", loop=loop)
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_default_trusts_ipv6_loopback(start_server):
    s = start_ipv6(start_server)
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")],
                     conn=ipv6_conn(s))
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_chain_skips_trusted_hops(start_server):
    s = start_server("basic:app", "--forwarded-allow-ips", "127.0.0.1, 10.0.0.2")
    scope = scope_of(s, [("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.0.0.2")])
    # 10.0.0.2 is a trusted proxy, so the client is the hop before it.
    assert scope["client"] == ["203.0.113.9", 0]


def test_several_lines_are_one_list(start_server, loop):
    """Each X-Forwarded-For line continues the list (HAProxy's option
    forwardfor appends a line): the right-most untrusted entry of all of them
    is the client, not whatever the last line holds."""
    s = start_server("basic:app", "--forwarded-allow-ips", "127.0.0.1,10.0.0.2", loop=loop)
    scope = scope_of(s, [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "10.0.0.2")])
    assert scope["client"] == ["198.51.100.1", 0]
    scope = scope_of(s, [("X-Forwarded-For", "198.51.100.1, 203.0.113.9"), ("Accept", "*/*"),
                         ("x-forwarded-for", "10.0.0.2")])
    assert scope["client"] == ["203.0.113.9", 0]
    # A client's own (spoofed) line stays to the left of what the proxy appended.
    scope = scope_of(s, [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.5")])
    assert scope["client"] == ["203.0.113.5", 0]
    # Every entry trusted: the left-most one, as uvicorn does.
    scope = scope_of(s, [("X-Forwarded-For", "10.0.0.2"), ("X-Forwarded-For", "127.0.0.1")])
    assert scope["client"] == ["10.0.0.2", 0]


def test_forwarded_ports(start_server):
    """host:port and [v6]:port entries give the port, as uvicorn splits them."""
    s = start_server("basic:app")
    assert scope_of(s, [("X-Forwarded-For", "203.0.113.7:5678")])["client"] == ["203.0.113.7", 5678]
    assert scope_of(s, [("X-Forwarded-For", "[2001:db8::1]:443")])["client"] == ["2001:db8::1", 443]
    assert scope_of(s, [("X-Forwarded-For", "2001:db8::1")])["client"] == ["2001:db8::1", 0]
    # A trusted hop written with a port is still recognised as trusted.
    assert scope_of(s, [("X-Forwarded-For", "198.51.100.4, 127.0.0.1:8080")])["client"] == [
        "198.51.100.4", 0]


def test_cidr_networks_ipv4(start_server, loop):
    s = start_server("basic:app", "--forwarded-allow-ips", "127.0.0.0/8, 10.0.0.0/255.0.0.0",
                     loop=loop)
    scope = scope_of(s, [("X-Forwarded-For", "198.51.100.1, 10.20.30.40, 127.0.0.9"),
                         ("X-Forwarded-Proto", "https")])
    assert scope["client"] == ["198.51.100.1", 0]
    assert scope["scheme"] == "https"


def test_cidr_network_not_containing_peer(start_server):
    s = start_server("basic:app", "--forwarded-allow-ips", "10.0.0.0/8, ::/0")
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["scheme"] == "http"


def test_cidr_networks_ipv6(start_server):
    s = start_ipv6(start_server, "--forwarded-allow-ips", "::/0")
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.4, 2001:db8::7")], conn=ipv6_conn(s))
    assert scope["client"] == ["203.0.113.4", 0]  # 2001:db8::7 is in ::/0: a trusted hop


def test_ipv6_network_not_containing_peer(start_server):
    s = start_ipv6(start_server, "--forwarded-allow-ips", "2001:db8::/32, 0.0.0.0/0")
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.4")], conn=ipv6_conn(s))
    assert scope["client"][0] == "::1"


@pytest.mark.parametrize("value,needle", [
    ("localhost", "'localhost' is not an IP address or network"),
    ("127.0.0.1, 10.0.0.1/8", "'10.0.0.1/8' has host bits set"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
    ("::/129", "'::/129' is not an IP address or network"),
    ("1.2.3", "'1.2.3' is not an IP address or network"),
], ids=["name", "host-bits", "v4-prefix", "v6-prefix", "short-address"])
def test_invalid_entry_is_usage_error(start_server, value, needle):
    s = start_server("basic:app", "--forwarded-allow-ips", value, wait=False)
    assert s.wait() == 2, s.tail()
    lines = [line for line in s.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, s.stderr
    assert lines[0].startswith(f"Error: invalid value for '--forwarded-allow-ips': {needle}"), s.stderr


def test_invalid_entry_in_environment_is_usage_error(start_server):
    s = start_server("basic:app", env=clean_env({"FORWARDED_ALLOW_IPS": "10.0.0.0/8,proxy"}),
                     wait=False)
    assert s.wait() == 2, s.tail()
    assert "FORWARDED_ALLOW_IPS" in s.stderr and "'proxy' is not an IP address" in s.stderr


def test_untrusted_peer_headers_ignored(start_server):
    s = start_server("basic:app", "--forwarded-allow-ips", "10.9.9.9")
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["scheme"] == "http"


def test_no_proxy_headers(start_server):
    s = start_server("basic:app", "--no-proxy-headers")
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_trust_all_and_unknown_proto_ignored(start_server):
    s = start_server("basic:app", "--forwarded-allow-ips", "*")
    scope = scope_of(s, [("X-Forwarded-For", "192.0.2.5"), ("X-Forwarded-Proto", "gopher")])
    assert scope["client"] == ["192.0.2.5", 0]
    assert scope["scheme"] == "http"


def test_access_log_shows_forwarded_client(start_server, loop):
    s = start_server("basic:app", loop=loop)
    mark = s.mark()
    with s.connect() as c:
        port = c.local_port
        r = c.request(req("GET", "/scope?fwd", headers=[("X-Forwarded-For", "203.0.113.7:4321")]))
        assert r.status == 200
        # The next request on the same connection has no header: the peer again.
        r = c.request(req("GET", "/scope?plain"))
        assert r.status == 200
    s.wait_for(r'INFO: +203\.0\.113\.7:4321 - "GET /scope\?fwd HTTP/1\.1" 200', since=mark)
    s.wait_for(rf'INFO: +127\.0\.0\.1:{port} - "GET /scope\?plain HTTP/1\.1" 200', since=mark)


def test_websocket_scope_and_log(start_server, loop):
    s = start_server("ws_app:app", loop=loop)
    mark = s.mark()
    headers = [("X-Forwarded-For", "198.51.100.3"), ("X-Forwarded-Proto", "https")]
    with WsConn.open(s.host, s.port, "/scope", headers=headers) as ws:
        scope = ws.recv_json()
        assert scope["type"] == "websocket"
        assert scope["client"] == ["198.51.100.3", 0]
        assert scope["scheme"] == "wss"
    s.wait_for(r'198\.51\.100\.3:0 - "WebSocket /scope" \[accepted\]', since=mark)


# ---------------------------------------------------------------------------
# Unix sockets: a peer has no address (scope["client"] is None, as in uvicorn)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("allow", ["*", "unix:"])
def test_uds_peer_trusted_when_allowed(start_server, tmp_path, loop, allow):
    path = str(tmp_path / "casgi.sock")
    s = start_server("basic:app", "--uds", path, "--forwarded-allow-ips", allow, loop=loop, port=None)
    mark = s.mark()
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")],
                     conn=RawConn.unix(path))
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    s.wait_for(r'INFO: +203\.0\.113\.7:0 - "GET /scope HTTP/1\.1" 200', since=mark)
    # Without the header the client stays unknown.
    assert scope_of(s, [], conn=RawConn.unix(path))["client"] is None


def test_uds_peer_not_trusted_by_default(start_server, tmp_path, loop):
    path = str(tmp_path / "casgi.sock")
    s = start_server("basic:app", "--uds", path, loop=loop, port=None)
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")],
                     conn=RawConn.unix(path))
    assert scope["client"] is None
    assert scope["scheme"] == "http"


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://unix:{sock}:;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def find_nginx():
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture
def nginx_to(tmp_path):
    """Starts nginx on 127.0.0.1 proxying to a Unix socket path; yields a
    function taking that path and returning nginx's port. Stopped at the end."""
    exe = find_nginx()
    if not exe:
        pytest.skip("nginx is not installed (make test installs it with apt-get)")
    procs = []

    def start(sock_path: str) -> int:
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, sock=sock_path))
        p = subprocess.Popen([exe, "-p", str(tmp_path), "-e", str(tmp_path / "nginx-error.log"),
                              "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
        procs.append(p)
        log = tmp_path / "nginx-error.log"
        wait_listening(port, p, "nginx", details=lambda: (
            (p.stderr.read().decode() if p.poll() is not None else "") + (log.read_text() if log.exists() else "")))
        return port

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGQUIT)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        p.stderr.close()


def test_nginx_in_front_over_unix_socket(start_server, nginx_to, tmp_path, loop):
    """The usual deployment: nginx -> casgi over --uds. nginx appends the
    client's address to X-Forwarded-For; with its Unix-socket peers trusted,
    that address (not a spoofed one to its left) is the client, in the scope
    and in the access log."""
    path = str(tmp_path / "casgi.sock")
    s = start_server("basic:app", "--uds", path, "--forwarded-allow-ips", "unix:", loop=loop,
                     port=None)
    port = nginx_to(path)
    mark = s.mark()
    with RawConn.tcp("127.0.0.1", port) as c:
        r = c.request(req("GET", "/scope?via=nginx", headers=[("X-Forwarded-For", "6.6.6.6")]))
        assert r.status == 200, r.status_line
    scope = r.json()
    assert scope["client"] == ["127.0.0.1", 0]
    assert scope["scheme"] == "http"
    headers = {k.lower(): v for k, v in scope["headers"]}
    assert headers["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    s.wait_for(r'INFO: +127\.0\.0\.1:0 - "GET /scope\?via=nginx HTTP/1\.1" 200', since=mark)


def test_run_keyword_takes_a_list(start_server, tmp_path):
    """casgi.run(forwarded_allow_ips=[...]) as uvicorn.run takes it; a bad
    entry raises ValueError naming it."""
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(f"""
        import casgi
        try:
            casgi.run("basic:app", port=0, forwarded_allow_ips=["10.0.0.0/8", "bogus"])
        except ValueError as exc:
            print("RAISED", exc, flush=True)
        casgi.run("basic:app", port=0, app_dir={str(APPS_DIR)!r},
                  forwarded_allow_ips=("10.0.0.0/8", "127.0.0.0/8"))
    """))
    s = start_server.spawn([], cmd=[sys.executable, str(script)])
    s.wait_for(r"RAISED invalid value for '--forwarded-allow-ips': 'bogus' is not an IP address")
    s.wait_running()
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.8, 127.0.0.5")])
    assert scope["client"] == ["203.0.113.8", 0]
