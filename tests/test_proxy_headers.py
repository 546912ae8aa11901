"""--proxy-headers / --forwarded-allow-ips: the client address and scheme come
from X-Forwarded-For / X-Forwarded-Proto only when the peer is a trusted proxy."""

from helpers import req


def scope_of(server, headers):
    with server.connect() as c:
        r = c.request(req("GET", "/scope", headers=headers))
        assert r.status == 200, r.status_line
        return r.json()


def test_trusted_peer_sets_client_and_scheme(start_server, loop):
    # The default trusts 127.0.0.1, the address the tests connect from.
    s = start_server("basic:app", loop=loop)
    scope = scope_of(s, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_chain_skips_trusted_hops(start_server):
    s = start_server("basic:app", "--forwarded-allow-ips", "127.0.0.1, 10.0.0.2")
    scope = scope_of(s, [("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 10.0.0.2")])
    # 10.0.0.2 is a trusted proxy, so the client is the hop before it.
    assert scope["client"] == ["203.0.113.9", 0]


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
