"""Frameworks over a real HTTP client (httpx): Starlette, FastAPI, and the
database connect/disconnect pattern casgi was started for."""

import concurrent.futures
import signal

import httpx
import pytest

from helpers import clean_env

pytest.importorskip("starlette")


@pytest.fixture
def client():
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def test_starlette_app(start_server, loop, client):
    s = start_server("starlette_app:app", loop=loop)
    r = client.get(s.url + "/")
    assert r.status_code == 200 and r.text == "starlette ok"
    r = client.get(s.url + "/items/42", params={"q": "find me"})
    assert r.json() == {"item_id": 42, "q": "find me"}
    assert client.get(s.url + "/items/not-an-int").status_code == 404
    r = client.post(s.url + "/echo", json={"a": [1, 2, {"b": None}], "u": "é"})
    assert r.json() == {"received": {"a": [1, 2, {"b": None}], "u": "é"}, "method": "POST"}
    r = client.get(s.url + "/stream")
    assert r.text == "".join(f"line {i}\n" for i in range(5))
    assert r.headers.get("transfer-encoding") == "chunked"
    r = client.get(s.url + "/headers", headers={"X-Custom": "custom value"})
    assert r.json()["x-custom"] == "custom value"
    assert r.json()["client"][0] == "127.0.0.1"
    assert s.stop(signal.SIGINT) == 0


def test_fastapi_app(start_server, loop, client):
    pytest.importorskip("fastapi")
    s = start_server("fastapi_app:app", loop=loop)
    assert client.get(s.url + "/").json() == {"message": "fastapi ok"}
    assert client.get(s.url + "/items/5", params={"q": "x"}).json() == {"item_id": 5, "q": "x"}
    assert client.get(s.url + "/items/five").status_code == 422
    r = client.post(s.url + "/items", json={"name": "widget", "price": 10.0, "tags": ["a"]})
    assert r.status_code == 200
    assert r.json() == {"name": "widget", "price_with_tax": 11.0, "tags": ["a"]}
    assert client.post(s.url + "/items", json={"name": "no price"}).status_code == 422
    assert client.put(s.url + "/items/7", json={"name": "n", "price": 1}).json() == {"item_id": 7, "name": "n"}
    r = client.get(s.url + "/openapi.json")
    assert r.status_code == 200 and "/items/{item_id}" in r.json()["paths"]
    assert s.stop(signal.SIGINT) == 0


def test_database_connect_disconnect_pattern(start_server, tmp_path, loop, client):
    env = clean_env({"DB_MARKER_DIR": str(tmp_path)})
    s = start_server("database_app:app", loop=loop, env=env)
    assert (tmp_path / "connected").read_text() == str(s.pid)
    assert not (tmp_path / "disconnected").exists()
    r = client.get(s.url + "/rows/1")
    assert r.json() == {"key": "1", "value": "first", "connected": True}
    assert client.get(s.url + "/rows/2").json()["value"] == "second"
    assert s.stop(signal.SIGINT) == 0
    assert (tmp_path / "disconnected").read_text() == str(s.pid)


def test_many_concurrent_clients(server):
    def one(i):
        with httpx.Client(timeout=10, trust_env=False) as c:
            out = []
            for j in range(5):
                body = f"client {i} request {j}".encode()
                r = c.post(server.url + "/echo", content=body)
                out.append(r.status_code == 200 and r.content == body)
            return all(out)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(32)))
    assert all(results)


def test_httpx_streaming_download(server):
    size = 5 * 1024 * 1024
    total = 0
    with httpx.Client(timeout=10, trust_env=False) as c:
        with c.stream("GET", server.url + f"/download?size={size}") as r:
            for chunk in r.iter_bytes():
                total += len(chunk)
    assert total == size


def test_httpx_streaming_upload(server):
    def gen():
        for _ in range(64):
            yield b"z" * 65536

    with httpx.Client(timeout=10, trust_env=False) as c:
        r = c.post(server.url + "/consume", content=gen())
    assert r.status_code == 200 and int(r.text) == 64 * 65536


def test_starlette_background_task_does_not_delay_response(start_server, loop):
    """The response is on the wire as soon as the app sent it, even though the
    app keeps running its background task; the connection serves the next
    request meanwhile."""
    import time

    from helpers import req

    s = start_server("starlette_app:app", loop=loop)
    with s.connect() as c:
        t0 = time.monotonic()
        r = c.request(req("GET", "/background"))
        assert r.body == b"sent before the task"
        assert time.monotonic() - t0 < 1.0, "the response waited for the background task"
        t1 = time.monotonic()
        r2 = c.request(req("GET", "/"))
        assert r2.body == b"starlette ok"
        assert time.monotonic() - t1 < 1.0, "the next request waited for the background task"


def test_starlette_stream_stops_when_client_leaves(start_server, loop):
    from helpers import req

    s = start_server("starlette_app:app", loop=loop)
    c = s.connect()
    c.send(req("GET", "/infinite"))
    head = c.read_head()
    assert head.status == 200 and head.header("transfer-encoding") == "chunked"
    c.close()
    s.wait_for("INFINITE-STOPPED", timeout=5)
