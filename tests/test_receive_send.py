"""receive() and send() semantics: disconnect, dropped sends, message order."""

import time

import pytest

from helpers import ConnectionClosed, req, unique


def test_receive_gives_disconnect_when_client_goes_away(server):
    ident = unique()
    mark = server.mark()
    c = server.connect()
    c.send(req("POST", f"/wait-disconnect?id={ident}", body=b"abc"))
    time.sleep(0.3)
    assert c.is_open_after(0.1)
    c.close()
    server.wait_for(rf"DISCONNECT-MESSAGE {ident} http.disconnect", since=mark, timeout=5)


def test_receive_gives_disconnect_when_client_leaves_mid_body(server):
    ident = unique()
    mark = server.mark()
    c = server.connect()
    c.send(req("POST", f"/wait-disconnect?id={ident}", headers=[("Content-Length", "100")]) + b"only part")
    time.sleep(0.3)
    c.close()
    server.wait_for(rf"DISCONNECT-MESSAGE {ident} http.disconnect", since=mark, timeout=5)


def test_send_after_disconnect_is_dropped_without_error(server):
    ident = unique()
    mark = server.mark()
    c = server.connect()
    c.send(req("POST", f"/wait-disconnect?id={ident}", body=b"abc"))
    time.sleep(0.3)
    c.close()
    m = server.wait_for(rf"SEND-AFTER-DISCONNECT {ident} (.*)", since=mark, timeout=5)
    assert m.group(1).strip() == "ok", f"send() after disconnect: {m.group(1)}"
    time.sleep(0.2)
    assert "Traceback" not in server.output(mark)


def test_receive_after_response_complete_gives_disconnect(server):
    ident = unique()
    mark = server.mark()
    with server.connect() as c:
        r = c.request(req("POST", f"/receive-after-complete?id={ident}", body=b"x"))
        assert r.status == 200 and r.body == b"done"
        # Keep the connection open: the disconnect must come from completion.
        m = server.wait_for(rf"AFTER-COMPLETE-RECEIVE {ident} (\S+)", since=mark, timeout=5)
        assert m.group(1) == "http.disconnect"
        assert c.request(req("GET", "/")).status == 200


@pytest.mark.parametrize("case", ["body-before-start", "double-start", "after-complete", "unknown-type"])
def test_messages_out_of_order_raise_runtime_error(server, case):
    ident = unique()
    mark = server.mark()
    with server.connect() as c:
        c.send(req("GET", f"/order?case={case}&id={ident}"))
        m = server.wait_for(rf"ORDER {ident} {case} (.*)", since=mark, timeout=5)
        assert m.group(1).startswith("RuntimeError"), f"{case}: {m.group(1)}"


def test_body_before_start_does_not_break_the_response(server):
    ident = unique()
    with server.connect() as c:
        r = c.request(req("GET", f"/order?case=body-before-start&id={ident}"))
        assert r.status == 200
        assert r.body.startswith(b"RuntimeError")
        assert c.request(req("GET", "/")).status == 200


def test_app_returning_without_response_gives_500(start_server, tmp_path, loop):
    app_file = tmp_path / "silent_app.py"
    app_file.write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        return\n"
        "    return None\n"
    )
    s = start_server("silent_app:app", "--lifespan", "off", loop=loop, app_dir=tmp_path)
    with s.connect() as c:
        r = c.request(req("GET", "/"))
    assert r.status_line == b"HTTP/1.1 500 Internal Server Error"


def test_receive_keeps_giving_disconnect(server):
    ident = unique()
    mark = server.mark()
    c = server.connect()
    c.send(req("POST", f"/wait-disconnect?id={ident}", body=b"abc"))
    time.sleep(0.3)
    c.close()
    m = server.wait_for(rf"DISCONNECT-AGAIN {ident} (\S+)", since=mark, timeout=5)
    assert m.group(1) == "http.disconnect"


def test_app_returning_after_start_does_not_hang_client(server):
    with server.connect() as c:
        c.send(req("GET", "/start-only"))
        try:
            r = c.read_response()
        except ConnectionClosed as exc:
            assert exc.partial.startswith(b"HTTP/1.1 200 OK\r\n")
        else:
            assert r.body == b"begun"
