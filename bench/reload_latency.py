"""Save-to-served latency of --reload, casgi against uvicorn, and the idle cost
of casgi's reload supervisor.

    python bench/reload_latency.py [--edits 20] [--tree 20000] [--idle 10] [--venv PATH]

1. Save-to-served: the time from writing the app file to the first response
   that shows the new code, median of N edits (written in place, then polled
   every 2 ms on fresh connections), for a Starlette app and a FastAPI app,
   with `casgi --reload` and `uvicorn --reload` (watchfiles installed), both
   with their default options, running side by side with the edits
   alternating between them.
2. Idle: the supervisor's CPU over S seconds (utime+stime from
   /proc/PID/stat) and its RSS while it watches a tree of N files and nothing
   changes, with inotify and with --reload-poll; uvicorn's reloader
   (watchfiles) on the same tree for reference.

Servers run from a virtual environment: `.bench-venv` when it exists (the
benchmark harness's), else /tmp/rlvenv, created here with uvicorn[standard],
watchfiles, starlette, fastapi and casgi built from this repository.
Prints a markdown table and the exact commands.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

STARLETTE_APP = '''\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

VERSION = "v0"


async def index(request):
    return PlainTextResponse(VERSION)


app = Starlette(routes=[Route("/", index)])
'''

FASTAPI_APP = '''\
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

VERSION = "v0"

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def index():
    return VERSION
'''

TINY_APP = '''\
VERSION = "v0"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = VERSION.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def venv_python(path: Path | None) -> Path:
    if path is not None:
        return path / "bin" / "python"
    bench = ROOT / ".bench-venv"
    if (bench / "bin" / "python").exists():
        return bench / "bin" / "python"
    venv = Path("/tmp/rlvenv")
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["uvicorn[standard]", "watchfiles", "starlette", "fastapi",
                              "meson-python", "meson", "ninja"], check=True)
        subprocess.run(pip + ["--no-build-isolation", str(ROOT)], check=True)
    return py


def versions(py: Path) -> str:
    code = ("import importlib.metadata as m\n"
            "print(', '.join(f'{n} {m.version(n)}' for n in "
            "['casgi', 'uvicorn', 'watchfiles', 'starlette', 'fastapi']))")
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd="/",
                          check=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, timeout: float = 2.0) -> bytes | None:
    """The body of GET / on a fresh connection; None when it fails."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return body


class Server:
    def __init__(self, name: str, cmd: list, cwd: Path, port: int):
        self.name = name
        self.cmd = cmd
        self.port = port
        self.logf = open(cwd / f"{name}.log", "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASGI_")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_serving(self, version: str = "v0", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while http_get(self.port) != version.encode():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.logf.flush()
                tail = Path(self.logf.name).read_text()[-2000:]
                raise RuntimeError(f"{self.name} not serving: {' '.join(self.cmd)}\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, 2)
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
        self.logf.close()


def server_cmd(py: Path, server: str, port: int, extra: tuple = ()) -> list:
    return [str(py), "-m", server, "main:app", "--port", str(port), "--reload", *extra]


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def save_to_served(py: Path, app_text: str, edits: int, servers=("casgi", "uvicorn")) -> tuple:
    """Both servers run at once, each in its own directory; the edits alternate
    between them (and which goes first alternates too), so a change in the
    machine's load affects both alike."""
    works, srvs, mains = {}, {}, {}
    lat: dict = {name: [] for name in servers}
    cmds = []
    try:
        for name in servers:
            works[name] = Path(tempfile.mkdtemp(prefix=f"rl-{name}-"))
            mains[name] = works[name] / "main.py"
            mains[name].write_text(app_text)
            port = free_port()
            cmd = server_cmd(py, name, port)
            cmds.append(cmd)
            srvs[name] = Server(name, cmd, works[name], port)
        for srv in srvs.values():
            srv.wait_serving()
        time.sleep(1.0)
        for i in range(1, edits + 1):
            order = list(servers) if i % 2 else list(reversed(servers))
            for name in order:
                version = f"v{i}"
                text = re.sub(r'^VERSION = "[^"]*"$', f'VERSION = "{version}"', app_text, flags=re.M)
                port = srvs[name].port
                t0 = time.perf_counter()
                with open(mains[name], "w") as f:
                    f.write(text)
                deadline = time.monotonic() + 30
                while http_get(port) != version.encode():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name}: edit {i} not served within 30 s")
                    time.sleep(0.002)
                lat[name].append(time.perf_counter() - t0)
                time.sleep(0.3)
    finally:
        for srv in srvs.values():
            srv.stop()
        for w in works.values():
            shutil.rmtree(w, ignore_errors=True)
    return lat, cmds


def make_tree(root: Path, files: int) -> None:
    per_dir = 100
    for d in range((files + per_dir - 1) // per_dir):
        sub = root / f"pkg{d // 20:03d}" / f"mod{d:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(min(per_dir, files - d * per_dir)):
            (sub / f"f{f:03d}.py").write_text("X = 1\n")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime, stime


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_cost(py: Path, server: str, extra: tuple, files: int, seconds: float, env_extra: dict | None = None):
    work = Path(tempfile.mkdtemp(prefix=f"rl-idle-{server}-"))
    make_tree(work, files)
    (work / "main.py").write_text(TINY_APP)
    port = free_port()
    cmd = server_cmd(py, server, port, extra)
    srv = Server(server, cmd, work, port)
    try:
        srv.wait_serving(timeout=60)
        time.sleep(2.0)  # initial scans and worker start are not "idle"
        pid = srv.proc.pid  # the reloader / supervisor process
        c0, t0 = cpu_ticks(pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_ticks(pid), time.monotonic()
        rss = rss_kib(pid)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    return (c1 - c0) / CLK_TCK / (t1 - t0) * 100.0, rss, cmd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--tree", type=int, default=20000, help="files in the idle tree")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument("--venv", type=Path, default=None)
    ap.add_argument("--skip-idle", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()

    py = venv_python(args.venv)
    log(f"python: {py} ({versions(py)})")
    rows, cmds = [], []
    apps = () if args.skip_latency else (("Starlette", STARLETTE_APP), ("FastAPI", FASTAPI_APP))
    for app_name, app_text in apps:
        log(f"save-to-served: casgi and uvicorn, {app_name}, {args.edits} edits each, alternating")
        res, used = save_to_served(py, app_text, args.edits)
        for cmd in used:
            cmds.append(" ".join(cmd) + f"   # {app_name} app in a temporary directory")
        c, u = statistics.median(res["casgi"]), statistics.median(res["uvicorn"])
        rows.append((app_name, c, min(res["casgi"]), max(res["casgi"]), u, min(res["uvicorn"]),
                     max(res["uvicorn"]), c / u))

    if rows:
        print(f"\nSave-to-served latency, median of {args.edits} edits (min-max), {versions(py)}\n")
        print("| app | casgi --reload | uvicorn --reload (watchfiles) | casgi / uvicorn |")
        print("|---|---|---|---|")
    for app_name, c, cmin, cmax, u, umin, umax, ratio in rows:
        print(f"| {app_name} | {c * 1000:.0f} ms ({cmin * 1000:.0f}-{cmax * 1000:.0f}) | "
              f"{u * 1000:.0f} ms ({umin * 1000:.0f}-{umax * 1000:.0f}) | {ratio:.2f} |")

    if not args.skip_idle:
        idle_rows = []
        for label, server, extra in (("casgi, inotify", "casgi", ()),
                                     ("casgi, --reload-poll", "casgi", ("--reload-poll",)),
                                     ("uvicorn, watchfiles (reference)", "uvicorn", ())):
            log(f"idle: {label}, {args.tree} files, {args.idle} s")
            cpu, rss, cmd = idle_cost(py, server, extra, args.tree, args.idle)
            idle_rows.append((label, cpu, rss))
            cmds.append(" ".join(cmd) + f"   # tree of {args.tree} .py files, idle {args.idle:g} s")
        print(f"\nReloader process while idle, watching {args.tree:,} files ({args.idle:g} s)\n")
        print("| reloader | CPU (% of one core) | RSS |")
        print("|---|---|---|")
        for label, cpu, rss in idle_rows:
            print(f"| {label} | {cpu:.2f} % | {rss / 1024:.1f} MiB |")

    print("\nCommands (each in a temporary directory holding main.py):\n")
    for c in cmds:
        print(f"    {c}")
    print(f"\n    {sys.executable} {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
