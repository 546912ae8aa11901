"""How each server under test is started: one process (or one worker), access log off.

Every command serves the same app file, run with bench/apps as the working
directory and the app named `<module>:app`. (Not from the repository root: there
`python -m casgi` would import the source tree's casgi/ package, which has no
compiled extension, instead of the installed one.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

NGINX = "/usr/sbin/nginx"
HERE = os.path.dirname(os.path.abspath(__file__))
APPS_DIR = os.path.join(HERE, "apps")


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    files: dict[str, str]  # extra files to write before starting: path -> text


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files bench/tlscerts.py writes: what a TLS scenario's servers are given."""
    cert: str  # server certificate followed by its chain
    key: str  # private key, PKCS#8, unencrypted
    ca: str  # the CA that signed it, for clients that verify


def casgi(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
          tls: TLSFiles | None = None, http2: bool = False) -> Launch:
    # HTTP/2 is on by default (h2c with prior knowledge beside HTTP/1.1 on one
    # port, h2 by ALPN over TLS), so the HTTP/2 rows use the same command; a
    # casgi without it fails their readiness check.
    argv = [f"{bin_dir}/python", "-m", "casgi", app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--loop", loop]
    if keep_alive:
        argv += ["--timeout-keep-alive", f"{keep_alive:g}"]
    if tls:
        argv += ["--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key]
    return Launch(argv, {})


def uvicorn(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
            tls: TLSFiles | None = None, http2: bool = False) -> Launch:
    # httptools on both loops: uvicorn's fastest HTTP/1.1 implementation. TLS
    # through the standard library's ssl module (asyncio's SSL protocol).
    if http2:
        raise ValueError("uvicorn serves no HTTP/2")
    argv = [f"{bin_dir}/uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--loop", loop, "--http", "httptools"]
    if keep_alive:
        argv += ["--timeout-keep-alive", f"{keep_alive:g}"]
    if tls:
        argv += ["--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key]
    return Launch(argv, {})


def granian(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
            tls: TLSFiles | None = None, http2: bool = False) -> Launch:
    # One worker process with granian's default single runtime thread; taskset
    # on the parent pins the worker and its Rust threads as well. TLS through
    # rustls, which reads a PKCS#8 key only. For HTTP/2 `--http 2`, granian's
    # HTTP/2-only mode (h2c with prior knowledge, ALPN h2 over TLS); `--http
    # auto`, which serves both, measured the same on h2c in a short check.
    argv = [f"{bin_dir}/granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", loop, "--no-access-log",
            "--http", "2" if http2 else "1"]
    if tls:
        argv += ["--ssl-certificate", tls.cert, "--ssl-keyfile", tls.key]
    return Launch(argv + [app], {})


def h2corn(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
           tls: TLSFiles | None = None, http2: bool = False) -> Launch:
    # One worker process with h2corn's default two Tokio runtime threads (both
    # pinned to the server CPU with the rest; one thread measured slower there).
    # TLS through rustls. h2corn is HTTP/2 first: it picks h2 when the client
    # offers it by ALPN and h2c when a cleartext connection starts with the
    # preface (no option for either); wrk and bench/idle.py's HTTP/1.1
    # connections offer no ALPN and speak HTTP/1.1, which h2corn then serves.
    argv = [f"{bin_dir}/h2corn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--loop", loop, "--no-access-log"]
    if keep_alive:
        argv += ["--timeout-keep-alive", f"{keep_alive:g}"]
    if tls:
        argv += ["--certfile", tls.cert, "--keyfile", tls.key]
    return Launch(argv + [app], {})


def hypercorn(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
              tls: TLSFiles | None = None, http2: bool = False) -> Launch:
    # Hypercorn writes no access log unless --access-logfile is given. HTTP/2
    # needs no option: h2c with prior knowledge in cleartext, ALPN h2 (its
    # default list, h2 then http/1.1) over TLS, both through the h2 package.
    argv = [f"{bin_dir}/hypercorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", loop]
    if keep_alive:
        argv += ["--keep-alive", f"{keep_alive:g}"]
    if tls:
        argv += ["--certfile", tls.cert, "--keyfile", tls.key]
    return Launch(argv + [app], {})


def nginx(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
          workdir: str = "", tls: TLSFiles | None = None) -> Launch:
    """nginx returning the fixed plaintext body; `app` and `loop` do not apply.
    Over TLS: TLS 1.2 and 1.3 (nginx 1.22 leaves 1.3 out by default), session
    tickets on (nginx's default), the system's OpenSSL as for casgi."""
    with open(os.path.join(HERE, "nginx.conf")) as f:
        template = f.read()
    tls_lines = ""
    if tls:
        tls_lines = (f"        ssl_certificate {tls.cert};\n"
                     f"        ssl_certificate_key {tls.key};\n"
                     "        ssl_protocols TLSv1.2 TLSv1.3;")
    conf = template.format(port=port, prefix=workdir, tls_listen=" ssl" if tls else "",
                           tls=tls_lines)
    conf_path = os.path.join(workdir, "nginx.conf")
    argv = [NGINX, "-p", workdir, "-e", os.path.join(workdir, "error.log"), "-c", conf_path]
    return Launch(argv, {conf_path: conf})


LAUNCHERS = {
    "casgi": casgi,
    "uvicorn": uvicorn,
    "granian": granian,
    "h2corn": h2corn,
    "hypercorn": hypercorn,
    "nginx": nginx,
}

ALL = list(LAUNCHERS)
