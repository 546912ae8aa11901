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


def casgi(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None) -> Launch:
    argv = [f"{bin_dir}/python", "-m", "casgi", app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--loop", loop]
    if keep_alive:
        argv += ["--timeout-keep-alive", f"{keep_alive:g}"]
    return Launch(argv, {})


def uvicorn(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None) -> Launch:
    # httptools on both loops: uvicorn's fastest HTTP/1.1 implementation.
    argv = [f"{bin_dir}/uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--loop", loop, "--http", "httptools"]
    if keep_alive:
        argv += ["--timeout-keep-alive", f"{keep_alive:g}"]
    return Launch(argv, {})


def granian(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None) -> Launch:
    # One worker process with granian's default single runtime thread; taskset
    # on the parent pins the worker and its Rust threads as well.
    argv = [f"{bin_dir}/granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", loop, "--no-access-log",
            "--http", "1", app]
    return Launch(argv, {})


def hypercorn(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None) -> Launch:
    # Hypercorn writes no access log unless --access-logfile is given.
    argv = [f"{bin_dir}/hypercorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", loop, app]
    if keep_alive:
        argv += ["--keep-alive", f"{keep_alive:g}"]
    return Launch(argv, {})


def nginx(bin_dir: str, app: str, port: int, loop: str, keep_alive: float | None,
          workdir: str = "") -> Launch:
    """nginx returning the fixed plaintext body; `app` and `loop` do not apply."""
    with open(os.path.join(HERE, "nginx.conf")) as f:
        template = f.read()
    conf = template.format(port=port, prefix=workdir)
    conf_path = os.path.join(workdir, "nginx.conf")
    argv = [NGINX, "-p", workdir, "-e", os.path.join(workdir, "error.log"), "-c", conf_path]
    return Launch(argv, {conf_path: conf})


LAUNCHERS = {
    "casgi": casgi,
    "uvicorn": uvicorn,
    "granian": granian,
    "hypercorn": hypercorn,
    "nginx": nginx,
}

ALL = list(LAUNCHERS)
