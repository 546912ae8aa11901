"""The benchmark scenarios. Adding one is adding an entry to SCENARIOS.

A wrk scenario drives one URL with `wrk -t1 -c<connections>`; an idle
scenario opens many keep-alive connections and measures the memory they cost.
A TLS scenario (`tls=True`) serves the same app over TLS 1.3 with a certificate
made for the run; `handshake=True` makes every request open a new connection
with a full handshake. An HTTP/2 scenario (`http2=True`) is driven by h2load
with `streams` concurrent streams per connection: h2c with prior knowledge in
cleartext, h2 by ALPN over TLS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PEERS = ("casgi", "uvicorn", "granian", "hypercorn")
WITH_NGINX = PEERS + ("nginx",)
# Over TLS: uvicorn on the standard library's ssl, granian and h2corn on rustls.
TLS_PEERS = ("casgi", "uvicorn", "granian", "h2corn", "hypercorn")
TLS_WITH_NGINX = TLS_PEERS + ("nginx",)
# The goals for TLS: requests per second against each peer.
TLS_TARGETS = (("uvicorn", 2.5), ("granian", 1.3), ("h2corn", 1.3))
# HTTP/2: uvicorn has none (its h2 is an experiment), nginx is not set up for it.
H2_PEERS = ("casgi", "granian", "h2corn", "hypercorn")
H2_TARGETS = (("granian", 1.5), ("h2corn", 1.3))
H2_STREAMS = 10  # concurrent streams per connection
# casgi's CPU time per request over HTTP/2 against its own over HTTP/1.1 (same app).
H2_MAX_CPU_VS_HTTP1 = 1.2

PLAINTEXT = "plaintext:app"
HELLO = b"Hello, world!"
ECHO_BODY = b"x" * 10240
FASTAPI_BODY = json.dumps({"name": "widget", "price": 9.99, "tags": ["a", "b"]}).encode()


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    app: str
    path: str = "/"
    loop: str = "uvloop"
    connections: int = 64
    method: str = "GET"
    body: bytes = b""
    content_type: str = ""
    pipeline: int = 1
    servers: tuple = PEERS
    expect: bytes | None = None  # exact body the readiness check must see
    requires: tuple = ()  # modules the bench venv must import for this app
    kind: str = "wrk"  # "wrk", "ws" (bench/wsload.py) or "idle"
    message_size: int = 64  # "ws": bytes per message
    idle_connections: int = 0
    keep_alive: float | None = None  # keep-alive timeout to ask of servers that have one
    latency: bool = True  # False when wrk's latency numbers do not apply (pipelining)
    # casgi's goals here: (peer, least casgi/peer requests-per-second ratio)
    targets: tuple = ()
    p99_targets: tuple = ()  # peers whose p99 latency casgi's must not exceed
    max_kib_per_connection: float | None = None  # idle scenarios
    notes: str = ""
    tls: bool = False  # serve over TLS (certificates from bench/tlscerts.py)
    handshake: bool = False  # TLS: a new connection, with a full handshake, per request
    cleartext: str | None = None  # TLS: the same load in cleartext, for "TLS cost"
    min_tls_share: float | None = None  # TLS: least casgi TLS / cleartext req/s ratio
    http2: bool = False  # HTTP/2: h2load (h2c prior knowledge, or ALPN h2 over TLS)
    streams: int = 1  # HTTP/2: concurrent streams per connection
    http1: str | None = None  # HTTP/2: the HTTP/1.1 scenario with the same app and load
    max_cpu_vs_http1: float | None = None  # HTTP/2: most casgi CPU/request vs its HTTP/1.1

    @property
    def unit(self) -> str:
        return "msg" if self.kind == "ws" else "req"


SCENARIOS = [
    Scenario("plaintext", "Plaintext 13 B, 64 connections, uvloop", PLAINTEXT,
             servers=WITH_NGINX, expect=HELLO,
             targets=(("granian", 1.3), ("uvicorn", 2.5), ("nginx", 0.6)),
             p99_targets=("uvicorn", "granian")),
    Scenario("plaintext-asyncio", "Plaintext 13 B, 64 connections, asyncio loop", PLAINTEXT,
             loop="asyncio", expect=HELLO, targets=(("uvicorn", 2.0),),
             notes="Every Python server on the standard library's asyncio loop."),
    Scenario("json", "JSON (json.dumps of a small dict), 64 connections, uvloop",
             "json_app:app", targets=(("granian", 1.3), ("uvicorn", 2.0))),
    Scenario("echo-10k", "POST echo of a 10 KiB body, 64 connections, uvloop",
             "echo:app", method="POST", body=ECHO_BODY,
             content_type="application/octet-stream", expect=ECHO_BODY,
             targets=(("granian", 1.3), ("uvicorn", 1.5))),
    Scenario("plaintext-c1", "Plaintext 13 B, 1 connection, uvloop", PLAINTEXT,
             connections=1, servers=WITH_NGINX, expect=HELLO),
    Scenario("plaintext-c512", "Plaintext 13 B, 512 connections, uvloop", PLAINTEXT,
             connections=512, servers=WITH_NGINX, expect=HELLO),
    Scenario("pipelined", "Plaintext 13 B pipelined 16 deep, 64 connections, uvloop", PLAINTEXT,
             pipeline=16, servers=WITH_NGINX, expect=HELLO, latency=False,
             targets=(("granian", 1.5),),
             notes="wrk times a pipelined batch, not each request: no latency is reported."),
    Scenario("stream-1m", "1 MiB response streamed in 64 KiB chunks, 64 connections, uvloop",
             "stream:app"),
    Scenario("starlette", "Starlette route with a path parameter, JSON answer, uvloop",
             "starlette_app:app", path="/items/42", requires=("starlette",),
             targets=(("uvicorn", 1.2),)),
    Scenario("fastapi", "FastAPI route validating a JSON body with pydantic, uvloop",
             "fastapi_app:app", path="/items", method="POST", body=FASTAPI_BODY,
             content_type="application/json", requires=("fastapi",),
             targets=(("uvicorn", 1.2),)),
    Scenario("ws-echo", "WebSocket echo of 64-byte text messages, 64 connections, uvloop",
             "ws_echo:app", kind="ws", expect=b"websocket echo",
             notes="Load from `bench/ws_client.c` (epoll, one message in flight per "
                   "connection; `bench/wsload.py` in Python when no C compiler is found) on "
                   "the load CPU."),
    Scenario("idle-10k", "10,000 idle keep-alive connections: memory per connection",
             PLAINTEXT, kind="idle", idle_connections=10000, servers=WITH_NGINX,
             expect=HELLO, keep_alive=120, max_kib_per_connection=2.0,
             notes="Each connection sends one request, reads the answer, then stays open. "
                   "Servers with a keep-alive timeout are given 120 s."),
    Scenario("tls-plaintext", "TLS 1.3: plaintext 13 B, 64 keep-alive connections, uvloop",
             PLAINTEXT, tls=True, servers=TLS_WITH_NGINX, expect=HELLO, targets=TLS_TARGETS,
             cleartext="plaintext", min_tls_share=0.75,
             notes="The `plaintext` load over TLS 1.3 (wrk's OpenSSL, no ALPN, so every "
                   "server speaks HTTP/1.1)."),
    Scenario("tls-json", "TLS 1.3: JSON, 64 keep-alive connections, uvloop", "json_app:app",
             tls=True, servers=TLS_PEERS, targets=TLS_TARGETS, cleartext="json",
             min_tls_share=0.75, notes="The `json` load over TLS 1.3."),
    Scenario("tls-handshake", "TLS 1.3: a full handshake per request, 64 connections, uvloop",
             PLAINTEXT, tls=True, handshake=True, servers=TLS_WITH_NGINX, expect=HELLO,
             targets=TLS_TARGETS,
             notes="Every request is sent with `Connection: close` on a new connection, so "
                   "requests per second are handshakes per second. wrk would resume its last "
                   "session on each new connection (a TLS 1.3 ticket, no certificate "
                   "signature); `bench/tls_noresume.c`, preloaded into wrk, drops it, so every "
                   "handshake is a full one (X25519 key exchange, ECDSA P-256 signature). "
                   "wrk's latency starts when the request is written, after the handshake. "
                   "A full handshake costs the client about as much as the server (its own "
                   "X25519 exchange, and checking the server's signature), so the one wrk "
                   "thread can be the limit: a server whose CPU use is well below 1.00 was "
                   "waiting for wrk, and CPU time per request is then the comparison."),
    Scenario("idle-tls", "2,000 idle TLS connections: memory per connection", PLAINTEXT,
             kind="idle", tls=True, idle_connections=2000, servers=TLS_WITH_NGINX, expect=HELLO,
             keep_alive=120,
             notes="As `idle-10k`, over TLS 1.3: each connection completes a full handshake, "
                   "sends one request, reads the answer, then stays open. Servers with a "
                   "keep-alive timeout are given 120 s."),
]



def _h2(name: str, title: str, app: str, tls: bool = False, http1: str | None = None,
        **fields) -> Scenario:
    """An HTTP/2 twin of an HTTP/1.1 scenario: 64 connections x 10 streams."""
    transport = "TLS 1.3, ALPN h2" if tls else "h2c (prior knowledge)"
    return Scenario(name, f"HTTP/2 over {transport}: {title}", app, http2=True, tls=tls,
                    streams=H2_STREAMS, servers=H2_PEERS, targets=H2_TARGETS, http1=http1,
                    max_cpu_vs_http1=H2_MAX_CPU_VS_HTTP1 if http1 else None,
                    requires=("h2",), **fields)


H2_NOTE = ("h2load, one thread on the load CPU, 64 connections with up to 10 streams in flight "
           "on each.")
H2_STREAM_NOTE = H2_NOTE + (" That is 640 MiB of answers under way: a server that interleaves "
                            "the streams fairly finishes its first ones only once several hundred "
                            "MiB are sent, so a slow server (hypercorn) can finish none within a "
                            "short (`--quick`) run and is then reported as too slow.")
SCENARIOS += [
    _h2("h2c-plaintext", "plaintext 13 B, 64 connections x 10 streams", PLAINTEXT,
        http1="plaintext", expect=HELLO, notes=H2_NOTE),
    _h2("h2c-json", "JSON, 64 connections x 10 streams", "json_app:app", http1="json",
        notes=H2_NOTE),
    _h2("h2c-echo-10k", "POST echo of a 10 KiB body, 64 connections x 10 streams", "echo:app",
        http1="echo-10k", method="POST", body=ECHO_BODY,
        content_type="application/octet-stream", expect=ECHO_BODY, notes=H2_NOTE),
    _h2("h2c-stream-1m", "1 MiB response in 64 KiB chunks, 64 connections x 10 streams",
        "stream:app", http1="stream-1m", notes=H2_STREAM_NOTE),
    _h2("h2-tls-plaintext", "plaintext 13 B, 64 connections x 10 streams", PLAINTEXT,
        tls=True, http1="tls-plaintext", cleartext="h2c-plaintext", expect=HELLO,
        notes=H2_NOTE),
    _h2("h2-tls-json", "JSON, 64 connections x 10 streams", "json_app:app", tls=True,
        http1="tls-json", cleartext="h2c-json", notes=H2_NOTE),
    _h2("h2-tls-echo-10k", "POST echo of a 10 KiB body, 64 connections x 10 streams",
        "echo:app", tls=True, cleartext="h2c-echo-10k", method="POST", body=ECHO_BODY,
        content_type="application/octet-stream", expect=ECHO_BODY, notes=H2_NOTE),
    _h2("h2-tls-stream-1m", "1 MiB response in 64 KiB chunks, 64 connections x 10 streams",
        "stream:app", tls=True, cleartext="h2c-stream-1m", notes=H2_STREAM_NOTE),
    Scenario("idle-h2c", "2,000 idle h2c connections: memory per connection", PLAINTEXT,
             kind="idle", http2=True, idle_connections=2000, servers=H2_PEERS, expect=HELLO,
             requires=("h2",),
             keep_alive=120, max_kib_per_connection=16.0,
             notes="As `idle-10k`, over HTTP/2 with prior knowledge: each connection sends "
                   "the preface and its SETTINGS, acknowledges the server's, completes one "
                   "GET on stream 1, then stays open. Servers with a keep-alive timeout are "
                   "given 120 s."),
]

TLS_SCENARIOS = [s.name for s in SCENARIOS if s.tls and not s.http2]
H2_SCENARIOS = [s.name for s in SCENARIOS if s.http2]

BY_NAME = {s.name: s for s in SCENARIOS}
