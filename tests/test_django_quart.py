"""Django (through django.core.asgi) and Quart apps served unchanged."""

import signal

import httpx
import pytest
import websockets.sync.client as websockets_sync


@pytest.fixture
def client():
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def test_django_app(start_server, loop, client):
    s = start_server("django_app:application", loop=loop)
    r = client.get(s.url + "/", params={"q": "dj"})
    assert r.status_code == 200
    assert r.json() == {"hello": "django", "method": "GET", "q": "dj"}
    r = client.post(s.url + "/echo", content=b"\x00raw bytes\xff")
    assert r.status_code == 200 and r.content == b"\x00raw bytes\xff"
    # Django has no lifespan support: one warning, then it serves.
    assert "ASGI 'lifespan' protocol appears unsupported." in s.output()
    assert s.stop(signal.SIGTERM) == 0


def test_quart_app(start_server, loop, client):
    s = start_server("quart_app:app", loop=loop)
    assert "Application startup complete." in s.output()
    r = client.get(s.url + "/", params={"q": "qu"})
    assert r.status_code == 200 and r.json() == {"hello": "quart", "q": "qu"}
    r = client.post(s.url + "/echo", content=b"quart body")
    assert r.status_code == 200 and r.content == b"quart body"
    with websockets_sync.connect(s.url.replace("http://", "ws://") + "/ws") as ws:
        ws.send("over a websocket")
        assert ws.recv(timeout=5) == "over a websocket"
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=5) == b"\x01\x02"
    assert s.stop(signal.SIGTERM) == 0
