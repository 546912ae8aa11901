"""The HTTP connection scope the app receives (ASGI spec 2.x, asgi.version 3.0)."""

import time

import pytest

from helpers import RawConn, req


def get_scope(conn, target="/scope", **kw) -> dict:
    r = conn.request(req("GET", target, **kw))
    assert r.status == 200, r.status_line
    return r.json()


def test_scope_basic_fields(server):
    with server.connect() as c:
        s = get_scope(c, "/scope")
        client_port = c.local_port
    assert s["type"] == "http"
    assert s["asgi"]["version"] == "3.0"
    assert s["asgi"]["spec_version"].startswith("2.")
    assert s["http_version"] == "1.1"
    assert s["scheme"] == "http"
    assert s["method"] == "GET"
    assert s["root_path"] == ""
    assert s["path"] == "/scope"
    assert s["raw_path"] == "/scope"
    assert s["query_string"] == ""
    assert s["server"] == ["127.0.0.1", server.port]
    assert s["client"] == ["127.0.0.1", client_port]


def test_scope_value_types(server):
    with server.connect() as c:
        s = get_scope(c, "/scope?a=1")
    types = s["_types"]
    assert types["path"] == "str"
    assert types["raw_path"] == "bytes"
    assert types["query_string"] == "bytes"
    assert types["method"] == "str"
    assert types["headers"] in ("list", "tuple")
    assert types["server"] in ("tuple", "list")
    assert types["client"] in ("tuple", "list")
    assert s["_header_types"] == ["bytes"]


def test_scope_http10(server):
    with server.connect() as c:
        r = c.request(req("GET", "/scope", version="HTTP/1.0", host=None))
    assert r.json()["http_version"] == "1.0"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CUSTOM", "get", "M-SEARCH"])
def test_scope_method(server, method):
    with server.connect() as c:
        r = c.request(req(method, "/scope", headers=[("Content-Length", "0")]))
    assert r.json()["method"] == method


def test_path_percent_decoded_raw_path_as_received(server):
    with server.connect() as c:
        s = get_scope(c, "/scope/caf%C3%A9%20x%2Fy?q=%20a&b=%C3%A9")
    assert s["path"] == "/scope/café x/y"
    assert s["raw_path"] == "/scope/caf%C3%A9%20x%2Fy"
    assert s["query_string"] == "q=%20a&b=%C3%A9"


def test_raw_path_keeps_unescaped_utf8_bytes(server):
    with server.connect() as c:
        r = c.request(b"GET /scope/\xc3\xa9t\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n")
    if r.status == 400:
        # A strict parser may refuse raw obs-text in the target; then properly.
        assert r.has_token("connection", "close")
        return
    s = r.json()
    assert s["raw_path"] == "/scope/\xc3\xa9t\xc3\xa9"  # latin-1 view of the raw bytes
    assert s["path"] == "/scope/été"


def test_query_string_without_path_query(server):
    with server.connect() as c:
        s = get_scope(c, "/scope?")
    assert s["path"] == "/scope"
    assert s["raw_path"] == "/scope"
    assert s["query_string"] == ""


def test_absolute_form_target_uses_path_and_query(server):
    with server.connect() as c:
        r = c.request(b"GET http://example.com:8080/scope/abs%20p?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
    s = r.json()
    assert s["path"] == "/scope/abs p"
    assert s["raw_path"] == "/scope/abs%20p"
    assert s["query_string"] == "x=1&y"


def test_headers_lowercased_raw_values_order_and_duplicates(server):
    headers = [
        b"X-Dup: first",
        b"X-Mixed-CASE: AbC dEf",
        b"X-DUP: second",
        b"x-spaces:    padded value   ",
        b"X-Empty:",
        b"X-Latin: caf\xc3\xa9",
    ]
    with server.connect() as c:
        r = c.request(req("GET", "/scope", headers=headers))
    got = r.json()["headers"]
    assert got == [
        ["host", "t"],
        ["x-dup", "first"],
        ["x-mixed-case", "AbC dEf"],
        ["x-dup", "second"],
        ["x-spaces", "padded value"],
        ["x-empty", ""],
        ["x-latin", "caf\xc3\xa9"],
    ]


def test_scope_state_from_lifespan(server):
    with server.connect() as c:
        s = get_scope(c)
    assert s["state"]["from_lifespan"] == "yes"
    assert s["state"]["shared_list"] == []


def test_scope_state_is_a_copy_per_request(server):
    with server.connect() as c:
        r = c.request(req("GET", "/state-mutate"))
        assert "leaked" in r.json()
        s = get_scope(c)
    assert "leaked" not in s["state"]
    assert s["state"]["from_lifespan"] == "yes"


def test_scope_state_copy_across_connections(server):
    with server.connect() as c:
        c.request(req("GET", "/state-mutate"))
    with server.connect() as c:
        s = get_scope(c)
    assert "leaked" not in s["state"]


def test_root_path_option(start_server, loop):
    s = start_server("basic:app", "--root-path", "/api", loop=loop)
    with s.connect() as c:
        sc = get_scope(c, "/scope/x%20y?z=1")
    assert sc["root_path"] == "/api"
    assert sc["path"] == "/api/scope/x y"
    assert sc["query_string"] == "z=1"


def test_request_body_messages(server):
    body = b"a" * 100_000
    with server.connect() as c:
        r = c.request(req("POST", "/echo", body=body))
    assert r.body == body
    assert int(r.header("x-body-messages")) >= 1


def test_uds_scope_client_is_none(start_server, tmp_path, loop):
    path = str(tmp_path / "casgi.sock")
    start_server("basic:app", "--uds", path, loop=loop, port=None)
    with RawConn.unix(path) as c:
        r = c.request(req("GET", "/scope"))
    sc = r.json()
    assert sc["client"] is None
    assert sc["type"] == "http" and sc["path"] == "/scope"


@pytest.mark.parametrize("raw", [
    "/scope/a+b",
    "/scope/%4%zz%",
    "/scope/%FF%C3",
    "/scope/%00",
    "/scope/../x/./y",
    "/scope//double//slashes",
    "/scope/%2e%2E/%41",
    "/scope/%E2%82%AC%f0%9f%98%80",
])
def test_path_decoding_matches_unquote(server, raw):
    """path is the percent-decoded UTF-8 of the raw path (invalid sequences
    replaced, nothing normalised), exactly as urllib.parse.unquote gives it."""
    from urllib.parse import unquote

    with server.connect() as c:
        s = get_scope(c, raw + "?k=v")
    assert s["raw_path"] == raw
    assert s["path"] == unquote(raw)
    assert s["query_string"] == "k=v"


@pytest.mark.parametrize("target,path,query", [
    ("http://example.com", "/", ""),
    ("http://example.com?a=1", "/", "a=1"),
    ("http://example.com:81/scope/p?q", "/scope/p", "q"),
])
def test_absolute_form_without_or_with_path(server, target, path, query):
    with server.connect() as c:
        r = c.request(f"GET {target} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode())
    assert r.status != 400, r.status_line
    if path == "/":
        assert r.body == b"Hello, world!"
    else:
        s = r.json()
        assert s["path"] == path and s["query_string"] == query


def test_scope_headers_per_pipelined_request(server):
    with server.connect() as c:
        c.send(req("GET", "/scope", headers=[("X-Req", "one")]) + req("GET", "/scope", headers=[("X-Req", "two")]))
        h1 = c.read_response().json()["headers"]
        h2 = c.read_response().json()["headers"]
    assert ["x-req", "one"] in h1 and ["x-req", "two"] not in h1
    assert ["x-req", "two"] in h2 and ["x-req", "one"] not in h2


def test_known_and_unknown_header_names_lowercased(server):
    headers = [b"CONTENT-TYPE: text/x", b"Accept: */*", b"uSER-aGENT: ua/1", b"Cookie: a=1",
               b"COOKIE: b=2", b"X-Custom-HEADER:\tv", b"TE: trailers", b"Content-Length: 0"]
    with server.connect() as c:
        r = c.request(req("POST", "/scope", headers=headers))
    assert r.json()["headers"] == [
        ["host", "t"], ["content-type", "text/x"], ["accept", "*/*"], ["user-agent", "ua/1"],
        ["cookie", "a=1"], ["cookie", "b=2"], ["x-custom-header", "v"], ["te", "trailers"],
        ["content-length", "0"],
    ]


def test_request_sent_one_byte_at_a_time(server):
    data = req("POST", "/scope/one%20by%20one?x=y", headers=[("X-Slow", "yes"), ("Content-Length", "4")]) + b"body"
    with server.connect() as c:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.001)
        s = c.read_response().json()
    assert s["path"] == "/scope/one by one"
    assert s["query_string"] == "x=y"
    assert ["x-slow", "yes"] in s["headers"]


def test_large_head_arriving_in_pieces(server):
    headers = [(f"X-Field-{i}", "v" * 3000) for i in range(20)]
    data = req("GET", "/scope", headers=headers)
    with server.connect() as c:
        for i in range(0, len(data), 1000):
            c.send(data[i:i + 1000])
            time.sleep(0.002)
        s = c.read_response().json()
    assert s["headers"][1:] == [[f"x-field-{i}", "v" * 3000] for i in range(20)]


def test_absolute_form_https_target(server):
    with server.connect() as c:
        r = c.request(b"GET https://example.com/scope/s?z HTTP/1.1\r\nHost: example.com\r\n\r\n")
    s = r.json()
    assert s["path"] == "/scope/s" and s["query_string"] == "z"
