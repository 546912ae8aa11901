#!/usr/bin/env python3
"""Benchmark casgi against uvicorn, granian, h2corn, hypercorn and nginx; write BENCHMARKS.md.

    python bench/run.py [--scenario NAME ...] [--tls] [--h2] [--servers casgi,uvicorn,...]
                        [--duration S] [--runs N] [--quick] [--no-install] [--merge]

Every server runs the same app file, pinned (all its threads and child
processes) to one CPU; wrk runs on another. For each scenario all servers are
started, each is warmed up, then runs alternate between servers (A B C A B C
...) so slow drifts of the machine hit every server alike. Reported numbers are
medians over the runs; ratios between two servers are medians of the per-round
ratios. Load goes to 127.0.0.1 only.

The peers are installed from PyPI into .bench-venv (created when missing),
casgi from this repository; wrk, h2load and nginx from Debian when missing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import shutil
import ssl
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import h2client
import h2load
import idle
import procstat
import report
import servers
import wrk
from scenarios import BY_NAME, H2_SCENARIOS, SCENARIOS, TLS_SCENARIOS, Scenario

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENV = os.path.join(ROOT, ".bench-venv")
VENV_BIN = os.path.join(VENV, "bin")
VENV_PY = os.path.join(VENV_BIN, "python")
VENV_PYTHON = sys.executable  # the interpreter a new venv is made with (--python)


def use_python(python: str) -> None:
    """Runs every server on `python` instead: its own venv, .bench-venv-X.Y."""
    global VENV, VENV_BIN, VENV_PY, VENV_PYTHON, WS_CLIENT, NORESUME
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    VENV = os.path.join(ROOT, f".bench-venv-{version}")
    VENV_BIN = os.path.join(VENV, "bin")
    VENV_PY = os.path.join(VENV_BIN, "python")
    VENV_PYTHON = python
    WS_CLIENT = os.path.join(VENV, "ws_client")
    NORESUME = os.path.join(VENV, "tls_noresume.so")
CHARTS_DIR = os.path.join(ROOT, "docs", "bench")
REPORT_MD = os.path.join(ROOT, "BENCHMARKS.md")

PEER_PACKAGES = ["uvicorn[standard]", "granian", "h2corn", "hypercorn", "uvloop", "fastapi",
                 "matplotlib", "trustme", "h2"]
BUILD_PACKAGES = ["meson-python", "meson", "ninja"]
VERSIONED = ["casgi", "uvicorn", "httptools", "uvloop", "granian", "h2corn", "hypercorn", "h2",
             "starlette", "fastapi", "pydantic"]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# ---------------------------------------------------------------- set-up


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_system_tools() -> None:
    """wrk, h2load (nghttp2-client) and nginx from Debian, installed when missing."""
    if shutil.which("wrk") and shutil.which("h2load") and os.path.exists(servers.NGINX) \
            and shutil.which("taskset"):
        return
    packages = ["wrk", "nghttp2-client", "nginx-light"]
    log("installing " + ", ".join(packages) + " with apt-get")
    if subprocess.run(["apt-get", "install", "-y", *packages]).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", *packages], check=True)


def pip(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([VENV_PY, "-m", "pip", "install", "-q", *arguments],
                          capture_output=True, text=True)


def ensure_venv(install: bool, with_casgi: bool) -> str | None:
    """Creates .bench-venv with the peers and (re)installs casgi from this tree.

    Returns None when casgi is installed, or a one-line reason why it is not.
    """
    if not os.path.exists(VENV_PY):
        log(f"creating {VENV}")
        subprocess.run([VENV_PYTHON, "-m", "venv", VENV], check=True)
        install = True
    if not install:
        if not with_casgi or _importable("casgi"):
            return None
        return "casgi is not installed in .bench-venv (run without --no-install)"
    log("installing the peers: " + " ".join(PEER_PACKAGES))
    result = pip(*PEER_PACKAGES, *BUILD_PACKAGES)
    if result.returncode != 0:
        sys.exit("pip failed installing the peers:\n" + result.stderr)
    if not with_casgi:
        return None
    log("building and installing casgi from " + ROOT)
    result = pip("--no-build-isolation", "--force-reinstall", "--no-deps", ROOT)
    if result.returncode != 0:
        build_log = os.path.join(VENV, "casgi-build.log")
        with open(build_log, "w") as f:
            f.write(result.stdout + result.stderr)
        return f"build failed: {build_error(result.stdout + result.stderr)} (full log: " \
               f"{os.path.relpath(build_log, ROOT)})"
    return None


def build_error(output: str) -> str:
    """The first compiler or meson error in pip's output, else its last line."""
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    boilerplate = ("error: subprocess-exited-with-error", "error: metadata-generation-failed",
                   "hint:", "note:")
    for line in lines:
        if "error" in line.lower() and not line.lower().startswith(boilerplate):
            return line[:200]
    return lines[-1][:200] if lines else "pip install returned an error"


def _importable(module: str) -> bool:
    # Not from the repository root, where "casgi" would be the source tree.
    return subprocess.run([VENV_PY, "-c", f"import {module}"], cwd=servers.APPS_DIR,
                          capture_output=True).returncode == 0


def package_versions() -> dict:
    code = (
        "import importlib.metadata as m, json\n"
        f"names = {VERSIONED!r}\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    versions = json.loads(subprocess.run([VENV_PY, "-c", code], capture_output=True, text=True,
                                         check=True).stdout)
    nginx = subprocess.run([servers.NGINX, "-v"], capture_output=True, text=True)
    versions["nginx"] = nginx.stderr.strip().split("/")[-1] if nginx.returncode == 0 else None
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    versions["wrk"] = (wrk_v.stdout + wrk_v.stderr).split("\n")[0].split(" [")[0].removeprefix("wrk ")
    versions["h2load (nghttp2)"] = h2load.version()
    # The system's OpenSSL: casgi and wrk link it, uvicorn and hypercorn use it
    # through Python's ssl module (granian and h2corn use rustls).
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True)
    versions["OpenSSL"] = openssl.stdout.split()[1] if openssl.returncode == 0 else None
    return versions


def machine_info() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    python = subprocess.run([VENV_PY, "-c", "import sys; print(sys.version.split()[0])"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": python,
        "loadavg": _loadavg(),
    }


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def git_revision() -> str:
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "-uno"],
                           capture_output=True, text=True).stdout.strip()
    return rev + (" (with uncommitted changes)" if dirty else "")


# ---------------------------------------------------------------- servers


class StartError(Exception):
    pass


@dataclass
class Server:
    name: str
    port: int
    argv: list
    proc: subprocess.Popen
    log_path: str
    tls_session: str | None = None  # "TLSv1.3 TLS_AES_..." the readiness check negotiated

    def pids(self) -> list:
        return procstat.process_tree(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                tail = [l.rstrip() for l in f.readlines() if l.strip()][-lines:]
        except OSError:
            return ""
        return " / ".join(tail)

    def stop(self) -> None:
        """Stops the process group this harness started for the server."""
        if self.alive():
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_for(name: str, scenario: Scenario, port, workdir: str,
               tls: servers.TLSFiles | None = None) -> servers.Launch:
    launcher = servers.LAUNCHERS[name]
    tls = tls if scenario.tls else None
    if name == "nginx":
        return launcher(VENV_BIN, scenario.app, port, scenario.loop, scenario.keep_alive,
                        workdir=workdir, tls=tls)
    return launcher(VENV_BIN, scenario.app, port, scenario.loop, scenario.keep_alive, tls=tls,
                    http2=scenario.http2)


# How the report shows the run's certificate files (made in the run's temporary directory).
DISPLAY_TLS = servers.TLSFiles(cert="$TMPDIR/tls/chain.pem", key="$TMPDIR/tls/key.pem",
                               ca="$TMPDIR/tls/ca.pem")


def display_command(name: str, scenario: Scenario) -> str:
    launch = launch_for(name, scenario, "PORT", "$TMPDIR", DISPLAY_TLS)
    argv = [os.path.relpath(a, servers.APPS_DIR) if a.startswith(VENV) else a
            for a in launch.argv]
    return f"taskset -c {{cpu}} {' '.join(argv)}"


def start_server(name: str, scenario: Scenario, cpu: int, workdir: str,
                 tls: servers.TLSFiles | None = None) -> Server:
    port = free_port()
    server_dir = os.path.join(workdir, name)
    os.makedirs(server_dir, exist_ok=True)
    launch = launch_for(name, scenario, port, server_dir, tls)
    for path, text in launch.files.items():
        with open(path, "w") as f:
            f.write(text)
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               VIRTUAL_ENV=VENV, PYTHONUNBUFFERED="1")
    log_path = os.path.join(server_dir, "server.log")
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), *launch.argv], cwd=servers.APPS_DIR,
                                env=env,
                                stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, port, launch.argv, proc, log_path)
    try:
        server.tls_session = wait_ready(server, scenario, tls)
    except StartError:
        server.stop()
        raise
    return server


def wait_ready(server: Server, scenario: Scenario,
               tls: servers.TLSFiles | None = None) -> str | None:
    """Waits until the server answers correctly; returns the TLS version and
    cipher suite it negotiated (None in cleartext)."""
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise StartError(f"exited with status {server.proc.returncode}: {server.log_tail()}")
        try:
            status, body, session = request_once(server.port, scenario, tls)
        except ssl.SSLError as exc:
            raise StartError(f"TLS failed: {exc}") from None
        except h2client.NotHttp2 as exc:
            raise StartError(f"no HTTP/2: {exc}") from None
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
            time.sleep(0.2)
            continue
        if status != 200:
            raise StartError(f"answered {status} to {scenario.method} {scenario.path}")
        if scenario.expect is not None and body != scenario.expect:
            raise StartError(f"wrong body ({len(body)} bytes: {body[:40]!r})")
        return session
    raise StartError(f"not answering after {START_TIMEOUT:g} s ({last_error}): {server.log_tail()}")


def request_once(port: int, scenario: Scenario, tls: servers.TLSFiles | None = None):
    """One request; over TLS when the scenario is a TLS one, where the server must
    present a certificate that the run's CA verifies and negotiate TLS 1.3; over
    HTTP/2 in an HTTP/2 scenario (h2c with prior knowledge, or ALPN h2 only)."""
    if scenario.http2:
        headers = (("content-type", scenario.content_type),) if scenario.content_type else ()
        return h2client.request_once(port, scenario.method, scenario.path, scenario.body,
                                     headers, h2client.client_context(tls.ca)
                                     if scenario.tls else None)
    if scenario.tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                           context=idle.client_context(tls.ca))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": scenario.content_type} if scenario.content_type else {}
        conn.request(scenario.method, scenario.path, body=scenario.body or None, headers=headers)
        response = conn.getresponse()
        body = response.read()
        session = None
        if scenario.tls and conn.sock is not None:
            name, version, _ = conn.sock.cipher()
            session = f"{version} {name}"
        return response.status, body, session
    finally:
        conn.close()


# ---------------------------------------------------------------- measuring


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure_wrk(scenario: Scenario, server: Server, argv: list, duration: float,
                server_cpu: int) -> dict:
    pids = server.pids()
    before = {}

    def snapshot() -> None:
        before["user"], before["system"] = procstat.cpu_user_system(pids)
        before["busy"] = procstat.cpu_busy_seconds(server_cpu)
        before["accepted"] = procstat.tcp_passive_opens()
        before["time"] = time.monotonic()

    # h2load makes its connections and warms up before the timed phase its
    # numbers count: the server's CPU is counted from the end of that warm-up.
    warmup = h2load.RUN_WARMUP if scenario.http2 else 0.0
    timer = threading.Timer(warmup, snapshot)
    if warmup:
        timer.start()
    else:
        snapshot()
    try:
        result = run_load(scenario, argv, duration)
    finally:
        timer.cancel()
        if warmup:
            timer.join()
    if not before:
        raise RuntimeError("the load ended before its warm-up did")
    window = time.monotonic() - before["time"]  # includes wrk's start-up
    user_after, system_after = procstat.cpu_user_system(pids)
    cpu = user_after + system_after - before["user"] - before["system"]
    system = system_after - before["system"]
    # Connections accepted on this machine during the run (all servers, all
    # processes): about 1 per request when every request opens a new one.
    accepted = procstat.tcp_passive_opens() - before["accepted"]
    # Time the server's CPU spent on anything but the server: other processes
    # on a shared machine make the run unfair, and the report says so.
    others = procstat.cpu_busy_seconds(server_cpu) - before["busy"] - cpu
    return {
        "rps": result.rps,
        "requests": result.requests,
        "seconds": result.seconds,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "cpu_s": round(cpu, 3),
        "cpu_per_100k": round(cpu / result.requests * 100_000, 4) if result.requests else None,
        "cpu_use": round(cpu / window, 3),
        "system_share": round(system / cpu, 3) if cpu > 0 else None,  # kernel part of cpu_s
        "others_use": round(max(others, 0.0) / window, 3),
        "connections_per_request": round(accepted / result.requests, 3) if result.requests
        else None,
    }


def wait_quiet(cpus: list, limit: float, threshold: float = 0.10) -> float:
    """Waits (at most `limit` s) until `cpus` were each busy less than `threshold`
    over half a second. Returns the seconds waited. Servers are idle here, so
    whatever keeps these CPUs busy is someone else's work."""
    start = time.monotonic()
    while True:
        before = [procstat.cpu_busy_seconds(c) for c in cpus]
        time.sleep(0.5)
        busy = [(procstat.cpu_busy_seconds(c) - b) / 0.5 for c, b in zip(cpus, before)]
        waited = time.monotonic() - start
        if max(busy) < threshold or waited >= limit:
            return waited


WS_CLIENT = os.path.join(VENV, "ws_client")  # built from bench/ws_client.c when cc exists
NORESUME = os.path.join(VENV, "tls_noresume.so")  # built from bench/tls_noresume.c


def build_noresume() -> bool:
    """Compiles the LD_PRELOAD shim that keeps wrk from resuming TLS sessions."""
    source = os.path.join(BENCH, "tls_noresume.c")
    if not shutil.which("cc"):
        return False
    result = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", NORESUME, source, "-ldl"],
                            capture_output=True)
    return result.returncode == 0


def make_certificates(workdir: str) -> servers.TLSFiles:
    """A CA and a server certificate for 127.0.0.1 in workdir/tls (bench/tlscerts.py)."""
    directory = os.path.join(workdir, "tls")
    subprocess.run([VENV_PY, os.path.join(BENCH, "tlscerts.py"), directory], check=True,
                   capture_output=True)
    return servers.TLSFiles(cert=os.path.join(directory, "chain.pem"),
                            key=os.path.join(directory, "key.pem"),
                            ca=os.path.join(directory, "ca.pem"))


def build_ws_client() -> bool:
    """Compiles the C WebSocket load client into .bench-venv; False if that fails."""
    source = os.path.join(BENCH, "ws_client.c")
    if not os.path.exists(source) or not shutil.which("cc"):
        return False
    result = subprocess.run(["cc", "-O2", "-o", WS_CLIENT, source], capture_output=True)
    return result.returncode == 0


def wrk_argv(scenario: Scenario, port, script: str | None, duration: float, cpu: int,
             workdir: str = "$TMPDIR") -> list:
    """The load command: wrk, h2load for HTTP/2 (its request body and log file in
    `workdir`), or a WebSocket client (C when built, else bench/wsload.py)."""
    if scenario.http2:
        url = f"{'https' if scenario.tls else 'http'}://127.0.0.1:{port}{scenario.path}"
        headers = (f"content-type: {scenario.content_type}",) if scenario.content_type else ()
        return h2load.command(url, scenario.connections, scenario.streams, duration, cpu,
                              log_file=os.path.join(workdir, f"{scenario.name}.log"),
                              data_file=os.path.join(workdir, f"{scenario.name}.body")
                              if scenario.body else None, headers=headers)
    if scenario.kind == "ws" and os.path.exists(WS_CLIENT):
        return ["taskset", "-c", str(cpu), WS_CLIENT, "echo", "127.0.0.1", str(port), "/ws",
                str(scenario.connections), str(scenario.message_size), f"{duration:g}", "0",
                "text"]
    if scenario.kind == "ws":
        return ["taskset", "-c", str(cpu), VENV_PY, os.path.join(BENCH, "wsload.py"),
                "--port", str(port), "--connections", str(scenario.connections),
                "--duration", f"{duration:g}", "--size", str(scenario.message_size)]
    url = f"{'https' if scenario.tls else 'http'}://127.0.0.1:{port}{scenario.path}"
    if scenario.handshake:
        return wrk.command(url, scenario.connections, duration, script, cpu,
                           headers=("Connection: close",), preload=NORESUME)
    return wrk.command(url, scenario.connections, duration, script, cpu)


def run_load(scenario: Scenario, argv: list, duration: float,
             warming_up: bool = False) -> wrk.WrkResult:
    if scenario.http2:
        return h2load.run(argv, duration, warming_up)
    if scenario.kind != "ws":
        return wrk.run(argv, duration)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"WebSocket client failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-300:]}")
    if argv[3] == WS_CLIENT:
        return parse_ws_client(proc.stdout)
    out = json.loads(proc.stdout)
    return wrk.WrkResult(requests=out["messages"], seconds=out["seconds"], rps=out["rate"],
                         p50_ms=out["p50_ms"], p99_ms=out["p99_ms"], errors=out["errors"],
                         output=proc.stdout)


def parse_ws_client(output: str) -> wrk.WrkResult:
    """The summary line of bench/ws_client.c: "conns=.. seconds=.. messages=.. ..."."""
    line = next(l for l in output.splitlines() if l.startswith("conns="))
    fields = dict(item.split("=", 1) for item in line.split())
    return wrk.WrkResult(requests=int(fields["messages"]), seconds=float(fields["seconds"]),
                         rps=float(fields["msgs_per_sec"]),
                         p50_ms=float(fields["p50_us"]) / 1000,
                         p99_ms=float(fields["p99_us"]) / 1000,
                         errors=int(fields["errors"]), output=output)


def display_load(argv: list) -> str:
    def shown(a: str) -> str:
        a = a.replace(VENV, ".bench-venv")
        return shlex.quote(os.path.relpath(a, ROOT) if a.startswith(ROOT) else a)
    return " ".join(shown(a) for a in argv)


def write_script(scenario: Scenario, workdir: str) -> str | None:
    """wrk's script; for h2load, the request body file (`-d`) instead."""
    if scenario.http2:
        if scenario.body:
            with open(os.path.join(workdir, f"{scenario.name}.body"), "wb") as f:
                f.write(scenario.body)
        return None
    text = wrk.lua_script(scenario.method, scenario.body, scenario.content_type,
                          scenario.pipeline)
    if not text:
        return None
    path = os.path.join(workdir, f"{scenario.name}.lua")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_wrk_scenario(scenario: Scenario, running: dict, args) -> None:
    script = write_script(scenario, args.workdir)
    for name, entry in running.items():
        server = entry["server"]
        log(f"  warm-up {name} ({args.warmup:g} s)")
        try:
            run_load(scenario, wrk_argv(scenario, server.port, script, args.warmup,
                                        args.client_cpu, args.workdir), args.warmup,
                     warming_up=True)
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            entry["failure"] = f"warm-up failed: {exc}"
    for round_no in range(1, args.runs + 1):
        for name, entry in running.items():
            if "failure" in entry:
                continue
            server = entry["server"]
            argv = wrk_argv(scenario, server.port, script, args.duration, args.client_cpu,
                            args.workdir)
            waited = wait_quiet([args.server_cpu, args.client_cpu], args.quiet_wait)
            if waited > 1:
                log(f"  waited {waited:.0f} s for the CPUs to be quiet")
            try:
                run = measure_wrk(scenario, server, argv, args.duration, args.server_cpu)
            except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
                entry["failure"] = f"run {round_no} failed: {exc}"
                continue
            if not server.alive():
                entry["failure"] = f"died during run {round_no}: {server.log_tail()}"
                continue
            if not scenario.latency:
                run["p50_ms"] = run["p99_ms"] = None
            run["round"] = round_no
            entry["runs"].append(run)
            log(f"  round {round_no} {name}: {run['rps']:.0f} {scenario.unit}/s"
                + (f", p99 {run['p99_ms']:.2f} ms" if scenario.latency else "")
                + (f", other processes used {run['others_use']:.0%} of CPU {args.server_cpu}"
                   if run["others_use"] and run["others_use"] > 0.05 else "")
                + (f", {run['errors']} errors" if run["errors"] else ""))


def run_idle_scenario(scenario: Scenario, running: dict, args) -> None:
    count = idle_count(scenario, args)
    for round_no in range(1, args.runs + 1):
        for name, entry in running.items():
            if "failure" in entry:
                continue
            server = entry["server"]
            pids = server.pids()
            # The baseline is the fresh server's RSS before the first round: after a
            # round, memory the server freed may stay mapped and would hide the cost.
            before = entry.setdefault("rss_baseline_kib", procstat.rss_kib(pids))
            cpu_before = procstat.cpu_seconds(pids)

            def measure(opened: int, failures: list) -> dict:
                after = procstat.rss_kib(pids)
                return {
                    "opened": opened,
                    "failed": len(failures),
                    "first_failure": repr(failures[0]) if failures else None,
                    "rss_before_kib": before,
                    "rss_after_kib": after,
                    "kib_per_connection": round((after - before) / opened, 3) if opened else None,
                    "cpu_s": round(procstat.cpu_seconds(pids) - cpu_before, 3),
                }

            try:
                run = idle.hold_connections(server.port, count, scenario.path,
                                            scenario.expect or b"", measure,
                                            ca_file=args.tls.ca if scenario.tls else None,
                                            http2=scenario.http2)
            except OSError as exc:
                entry["failure"] = f"round {round_no}: {exc}"
                continue
            entry["runs"].append(run)
            log(f"  round {round_no} {name}: {run['opened']} open, "
                f"{run['kib_per_connection']} KiB each"
                + (f", {run['failed']} failed" if run["failed"] else ""))
            time.sleep(1.0)  # let the server close its side before the next round


def idle_count(scenario: Scenario, args) -> int:
    return min(scenario.idle_connections, 1000) if args.quick else scenario.idle_connections


def summarise(scenario: Scenario, running: dict, skipped: dict) -> dict:
    rows = {}
    for name in scenario.servers:
        if name in skipped:
            rows[name] = {"status": skipped[name], "runs": []}
            continue
        if name not in running:
            continue
        entry = running[name]
        runs = entry["runs"]
        row = {"status": entry.get("failure", "ok") if not runs else "ok", "runs": runs,
               "note": entry.get("failure"), "peak_rss_kib": entry.get("peak_rss_kib")}
        if entry.get("tls_session"):
            row["tls_session"] = entry["tls_session"]
        if runs and scenario.kind != "idle":
            row["median"] = {key: median([r[key] for r in runs])
                             for key in ("rps", "p50_ms", "p99_ms", "cpu_per_100k", "cpu_use",
                                         "others_use", "errors", "connections_per_request",
                                         "system_share")}
        elif runs:
            row["median"] = {key: median([r[key] for r in runs])
                             for key in ("opened", "rss_before_kib", "rss_after_kib",
                                         "kib_per_connection")}
        rows[name] = row
    if scenario.kind != "idle":
        for name, row in rows.items():
            row["ratios"] = {peer: pairwise_ratio(row, rows.get(peer))
                             for peer in RATIO_PEERS}
    return rows


RATIO_PEERS = ("uvicorn", "granian", "h2corn", "hypercorn", "nginx")


def pairwise_ratio(row: dict, peer_row: dict | None) -> float | None:
    """Median over rounds of this server's req/s divided by the peer's in the same round."""
    if not peer_row or not row.get("runs") or not peer_row.get("runs"):
        return None
    peer_by_round = {run["round"]: run for run in peer_row["runs"]}
    return median([run["rps"] / peer_by_round[run["round"]]["rps"] for run in row["runs"]
                   if peer_by_round.get(run["round"], {}).get("rps")])


def run_scenario(scenario: Scenario, names: list, casgi_note: str | None, args) -> dict:
    log(f"scenario {scenario.name}: {scenario.title}")
    skipped, running = {}, {}
    if scenario.handshake and not args.noresume:
        # Without the shim wrk resumes sessions: that would measure something else.
        skipped = {name: "not run: no C compiler for bench/tls_noresume.c, and wrk alone "
                         "resumes TLS sessions" for name in names if name in scenario.servers}
        names = []
    commands = {name: display_command(name, scenario) for name in names
                if name in scenario.servers}
    missing = [m for m in scenario.requires if not _importable(m)]
    for name in [n for n in names if n in scenario.servers]:
        if missing:
            skipped[name] = "skipped: " + ", ".join(missing) + " not installed"
        elif name == "casgi" and casgi_note:
            skipped[name] = "not run: " + casgi_note
        else:
            try:
                server = start_server(name, scenario, args.server_cpu, args.workdir, args.tls)
            except StartError as exc:
                skipped[name] = f"failed to start: {exc}"
                log(f"  {name} {skipped[name]}")
                continue
            running[name] = {"server": server, "runs": [], "tls_session": server.tls_session}
    try:
        if scenario.kind == "idle":
            run_idle_scenario(scenario, running, args)
        else:
            run_wrk_scenario(scenario, running, args)
    finally:
        for entry in running.values():
            entry["peak_rss_kib"] = procstat.peak_rss_kib(entry["server"].pids())
            entry["server"].stop()
    script = "SCRIPT.lua" if not scenario.http2 and wrk.lua_script(
        scenario.method, scenario.body, scenario.content_type, scenario.pipeline) else None
    return {
        "name": scenario.name,
        "title": scenario.title,
        "kind": scenario.kind,
        "app": scenario.app,
        "loop": scenario.loop,
        "notes": scenario.notes,
        "connections": scenario.connections,
        "idle_connections": idle_count(scenario, args),
        "unit": scenario.unit,
        "wrk_command": display_load(wrk_argv(scenario, "PORT", script, args.duration,
                                             args.client_cpu)) if scenario.kind != "idle"
        else None,
        "wrk_script": None if scenario.http2 else wrk.lua_script(
            scenario.method, scenario.body, scenario.content_type, scenario.pipeline) or None,
        "commands": {n: c.replace("{cpu}", str(args.server_cpu)) for n, c in commands.items()},
        "targets": [list(t) for t in scenario.targets],
        "p99_targets": list(scenario.p99_targets),
        "max_kib_per_connection": scenario.max_kib_per_connection,
        "tls": scenario.tls,
        "handshake": scenario.handshake,
        "cleartext": scenario.cleartext,
        "min_tls_share": scenario.min_tls_share,
        "http2": scenario.http2,
        "streams": scenario.streams,
        "http1": scenario.http1,
        "max_cpu_vs_http1": scenario.max_cpu_vs_http1,
        "servers": summarise(scenario, running, skipped),
    }


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", action="append", choices=list(BY_NAME), metavar="NAME",
                   help="scenario to run (repeatable; default all): " + ", ".join(BY_NAME))
    p.add_argument("--tls", action="store_true",
                   help="run the TLS scenarios (" + ", ".join(TLS_SCENARIOS) + ") and the "
                        "cleartext ones they are compared with, plus any --scenario given")
    p.add_argument("--h2", action="store_true",
                   help="run the HTTP/2 scenarios (" + ", ".join(H2_SCENARIOS) + ") and the "
                        "HTTP/1.1 ones their CPU per request is compared with, plus any "
                        "--scenario given")
    p.add_argument("--merge", action="store_true",
                   help="keep the scenarios of the saved results.json that this run does not "
                        "measure, and replace those it does; the report says which run each "
                        "scenario comes from")
    p.add_argument("--servers", default=",".join(servers.ALL),
                   help="comma-separated servers (default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--runs", type=int, default=3, help="runs per server (default 3)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 s runs, 1 round, 1 s warm-up, 1,000 idle connections")
    p.add_argument("--no-install", action="store_true",
                   help="use .bench-venv as it is (no pip install, no rebuild of casgi)")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (default 0)")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU for wrk (default 1)")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="before each run, wait up to this many seconds for both CPUs to be "
                        "idle (default 10, 5 with --quick)")
    p.add_argument("--no-callgrind", dest="callgrind", action="store_false",
                   help="skip counting instructions per request with callgrind")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: rewrite the report and charts from the saved "
                        "results.json")
    p.add_argument("--output", default=REPORT_MD, help="report file (default BENCHMARKS.md)")
    p.add_argument("--python", metavar="PATH",
                   help="run the servers on this Python (own venv .bench-venv-X.Y; default the "
                        "Python running this script); write the report elsewhere with --output")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.runs, args.warmup = 3.0, 1, 1.0
    if args.quiet_wait is None:
        args.quiet_wait = 5.0 if args.quick else 10.0
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in servers.LAUNCHERS]
    if unknown:
        p.error("unknown server(s): " + ", ".join(unknown))
    args.server_names = names
    chosen = list(args.scenario or [])
    if args.tls:
        for name in TLS_SCENARIOS:
            chosen += [BY_NAME[name].cleartext, name] if BY_NAME[name].cleartext else [name]
    if args.h2:
        for name in H2_SCENARIOS:
            chosen += [twin for twin in (BY_NAME[name].http1,) if twin] + [name]
    if chosen:
        # The order of SCENARIOS, each once: cleartext before its TLS twin.
        args.scenarios = [s for s in SCENARIOS if s.name in chosen]
    else:
        args.scenarios = SCENARIOS
    return args


def artifacts_dir(output: str) -> str:
    """Where the raw results and charts of a report go: docs/bench for BENCHMARKS.md,
    else "<report name>-files" next to the report."""
    if os.path.abspath(output) == REPORT_MD:
        return CHARTS_DIR
    return os.path.splitext(os.path.abspath(output))[0] + "-files"


def rewrite_report(output: str) -> int:
    """Redraws the charts and rewrites the report from its saved results.json."""
    outdir = artifacts_dir(output)
    results_json = os.path.join(outdir, "results.json")
    with open(results_json) as f:
        results = json.load(f)
    charts = make_charts(results_json, outdir)
    with open(output, "w") as f:
        f.write(report.markdown(results, charts, os.path.dirname(os.path.abspath(output)),
                                with_measured=os.path.abspath(output) == REPORT_MD))
    log(f"rewrote {os.path.relpath(output)} from {os.path.relpath(results_json)}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.python:
        use_python(args.python)
    if args.report_only:
        return rewrite_report(args.output)
    command_line = "python bench/run.py" + "".join(
        " " + a for a in (sys.argv[1:] if argv is None else argv))
    if os.cpu_count() and os.cpu_count() < 2:
        sys.exit("needs two CPUs: one for the servers, one for wrk")
    ensure_system_tools()
    casgi_note = ensure_venv(install=not args.no_install,
                             with_casgi="casgi" in args.server_names)
    if casgi_note:
        log(f"casgi will not be run: {casgi_note}")
    h2client.use_venv(VENV_PY)  # the harness's own HTTP/2 requests need the venv's h2
    if any(s.kind == "ws" for s in args.scenarios) and not build_ws_client():
        log("no C compiler for bench/ws_client.c: WebSocket load from bench/wsload.py")
    args.noresume = any(s.handshake for s in args.scenarios) and build_noresume()
    if any(s.handshake for s in args.scenarios) and not args.noresume:
        log("no C compiler for bench/tls_noresume.c: the handshake scenario is not run")
    os.sched_setaffinity(0, {args.client_cpu})
    results = {
        "command": command_line,
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "revision": git_revision(),
        "duration": args.duration,
        "runs": args.runs,
        "warmup": args.warmup,
        "quiet_wait": args.quiet_wait,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "machine": machine_info(),
        "versions": package_versions(),
        "scenarios": [],
    }
    with tempfile.TemporaryDirectory(prefix="casgi-bench-") as workdir:
        args.workdir = workdir
        args.tls = make_certificates(workdir) if any(s.tls for s in args.scenarios) else None
        for scenario in args.scenarios:
            results["scenarios"].append(run_scenario(scenario, args.server_names, casgi_note,
                                                     args))
    if args.callgrind and shutil.which("valgrind"):
        results["callgrind"] = run_callgrind(args, casgi_note)
    outdir = artifacts_dir(args.output)
    results_json = os.path.join(outdir, "results.json")
    os.makedirs(outdir, exist_ok=True)
    if args.merge and os.path.exists(results_json):
        with open(results_json) as f:
            results = merge_results(json.load(f), results)
    with open(results_json, "w") as f:
        json.dump(results, f, indent=1)
    charts = make_charts(results_json, outdir)
    with open(args.output, "w") as f:
        f.write(report.markdown(results, charts, os.path.dirname(os.path.abspath(args.output)),
                                with_measured=os.path.abspath(args.output) == REPORT_MD))
    log(f"wrote {os.path.relpath(args.output)}, {os.path.relpath(results_json)} and "
        f"{len(charts)} charts")
    return 0


RUN_KEYS = ("command", "quick", "date", "revision", "duration", "runs", "warmup", "quiet_wait",
            "machine", "versions")


def merge_results(old: dict, new: dict) -> dict:
    """`new` with the scenarios of `old` that it did not measure, in the order of
    SCENARIOS. Each scenario kept from `old` carries the run it came from
    (`run`: command, date, revision, ...), as do the callgrind rows."""
    measured = {s["name"] for s in new["scenarios"]}
    runs = {}
    for scenario in old["scenarios"]:
        if scenario["name"] not in measured:
            scenario.setdefault("run", {k: old.get(k) for k in RUN_KEYS})
            runs[scenario["name"]] = scenario
    for scenario in new["scenarios"]:
        runs[scenario["name"]] = scenario
    order = [s.name for s in SCENARIOS]
    new["scenarios"] = sorted(runs.values(), key=lambda s: order.index(s["name"])
                              if s["name"] in order else len(order))
    if not new.get("callgrind") and old.get("callgrind"):
        new["callgrind"] = dict(old["callgrind"])
        new["callgrind"].setdefault("run", {k: old.get(k) for k in RUN_KEYS})
    return new


# (scenario, servers): casgi and uvicorn over HTTP/1.1; casgi over h2c, for its
# HTTP/2 cost against its own HTTP/1.1 on the same app.
CALLGRIND_ROWS = [(name, ("casgi", "uvicorn")) for name in
                  ("plaintext", "json", "echo-10k", "tls-plaintext", "tls-handshake")] + \
                 [(name, ("casgi",)) for name in ("h2c-plaintext", "h2c-json", "h2c-echo-10k")]


def run_callgrind(args, casgi_note: str | None) -> dict:
    """Instructions per request (bench/callgrind.py) for casgi and uvicorn, and
    for casgi over h2c."""
    import callgrind

    requests = 500 if args.quick else 2000
    rows = []
    for scenario, names in CALLGRIND_ROWS:
        for name in names:
            if name not in args.server_names or (name == "casgi" and casgi_note):
                continue
            # A handshake per request is ~100 times a keep-alive request's work.
            count = requests // 4 if BY_NAME[scenario].handshake else requests
            row = {"server": name, "scenario": scenario, "loop": "uvloop", "requests": count}
            try:
                row["per_request"] = round(callgrind.measure(name, scenario, "uvloop", count,
                                                             count // 4, None,
                                                             bin_dir=VENV_BIN))
                log(f"callgrind {scenario} {name}: {row['per_request']:,} instructions/request")
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                row["error"] = str(exc)
                log(f"callgrind {scenario} {name} failed: {exc}")
            rows.append(row)
    return {"requests": requests, "rows": rows,
            "command": "python bench/callgrind.py --server NAME --scenario SCENARIO "
                       f"--requests {requests} --warmup {requests // 4} (tls-handshake: "
                       f"--requests {requests // 4} --warmup {requests // 16})"}


def make_charts(results_json: str, outdir: str) -> list:
    """Draws the PNG charts with matplotlib from the bench venv; returns their paths."""
    proc = subprocess.run([VENV_PY, os.path.join(BENCH, "charts.py"), results_json, outdir],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        log("charts failed: " + (lines[-1] if lines else f"status {proc.returncode}"))
        return []
    return [line for line in proc.stdout.splitlines() if line.endswith(".png")]


if __name__ == "__main__":
    sys.exit(main())
