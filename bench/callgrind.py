#!/usr/bin/env python3
"""Instructions per request of a server's hot path, counted by callgrind.

    python bench/callgrind.py [--server casgi|uvicorn|hypercorn|granian]
                              [--scenario plaintext|json|echo-10k|tls-plaintext|h2c-plaintext|...]
                              [--tls] [--loop uvloop|asyncio] [--requests N]
                              [--annotate FILE] [--keep DIR] [--venv DIR] [--server-arg ARG]

Wall-clock numbers on a shared or noisy machine move by several percent from run
to run; instruction counts move by far less, so they show the effect of one
change to the hot path. The server runs under `valgrind --tool=callgrind` with
instrumentation off; after start-up and a warm-up, instrumentation is switched
on for exactly N requests (sent one after another on keep-alive connections),
then off, and the total instruction count (Ir) is divided by N. Uses the
servers installed in .bench-venv (run bench/run.py once first).

The TLS scenarios serve the same apps over TLS 1.3 with a certificate made for
the run (bench/tlscerts.py): `tls-plaintext` and `tls-json` send the requests
over 4 keep-alive connections as above; `tls-handshake` opens a new connection
with a full handshake (Python's ssl client never resumes unless handed a
session) for every request, so its count is instructions per handshake plus
one request. `--tls` serves any other scenario over TLS the same way
(`--scenario echo-10k --tls`: a 10 KiB upload and response per request).

The h2c scenarios send the same requests over HTTP/2 with prior knowledge
(bench/h2client.py, on the `h2` package): one stream at a time on each of the 4
connections, so their counts compare with the HTTP/1.1 ones of the same app.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time

import h2client
import idle
import procstat
import servers
from run import VENV_BIN, free_port, make_certificates
from scenarios import BY_NAME

START_TIMEOUT = 120.0  # start-up under valgrind is slow
CONNECTIONS = 4


def connect(port: int, scenario, tls: ssl.SSLContext | None = None):
    """An HTTP/1.1 connection, or an HTTP/2 one (h2client) in an h2 scenario."""
    if scenario.http2:
        return h2client.Connection(port, tls)
    if tls:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=tls)
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def request(conn, scenario, headers: dict) -> int:
    """One request on `conn`, its answer read whole; returns the status."""
    if scenario.http2:
        fields = tuple((k.lower(), v) for k, v in headers.items())
        return conn.request(scenario.method, scenario.path, scenario.body, fields)[0]
    conn.request(scenario.method, scenario.path, body=scenario.body or None, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def send_requests(port: int, scenario, count: int, tls: ssl.SSLContext | None = None,
                  conns: list | None = None) -> None:
    """`count` requests over `conns` (default: CONNECTIONS new keep-alive
    connections, closed at the end), round robin; or, for a handshake scenario,
    each on a new connection."""
    headers = {"Content-Type": scenario.content_type} if scenario.content_type else {}
    if scenario.handshake:
        headers["Connection"] = "close"
    owned = conns is None and not scenario.handshake
    if owned:
        conns = [connect(port, scenario, tls) for _ in range(CONNECTIONS)]
    try:
        for i in range(count):
            conn = connect(port, scenario, tls) if scenario.handshake else conns[i % len(conns)]
            try:
                status = request(conn, scenario, headers)
            finally:
                if scenario.handshake:
                    conn.close()
            if status != 200:
                raise RuntimeError(f"status {status}")
    finally:
        for conn in conns if owned else ():
            conn.close()


def wait_ready(port: int, proc: subprocess.Popen, scenario, tls=None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            send_requests(port, scenario, 1, tls)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server not answering")


def callgrind_control(argument: str, pids: list) -> None:
    """Sends `argument` to the callgrind of each process in `pids`."""
    for pid in pids:
        subprocess.run(["callgrind_control", argument, str(pid)], check=True,
                       capture_output=True)


def total_instructions(out_dir: str) -> int:
    """Sum of the 'totals:' lines of every dump callgrind wrote (the 'summary:'
    line at the top of a dump can be a placeholder 0)."""
    total = 0
    for name in os.listdir(out_dir):
        with open(os.path.join(out_dir, name)) as f:
            for line in f:
                m = re.match(r"totals:\s+(\d+)", line)
                if m:
                    total += int(m.group(1))
    return total


def self_cost_by_object(out_dir: str) -> dict:
    """Instructions executed in each ELF object (the python binary, libcrypto,
    libssl, libc, casgi's extension, uvloop, ...), summed over every dump:
    self cost only, so the objects add up to the total."""
    costs: dict = {}
    for name in os.listdir(out_dir):
        names, current, skip = {}, "?", False
        with open(os.path.join(out_dir, name)) as f:
            for line in f:
                if line.startswith(("ob=", "cob=")):
                    # "(id) name" defines a compressed name, "(id)" refers to one;
                    # a definition can come first on a cob= (called object) line.
                    m = re.match(r"c?ob=(?:\((\d+)\))?\s*(.*)", line.rstrip("\n"))
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    if line.startswith("ob="):
                        current = names.get(m.group(1), m.group(2))
                elif line.startswith("calls="):
                    skip = True  # the next cost line is the callee's inclusive cost
                elif line[:1].isdigit() or line[:1] in "+-*":
                    if skip:
                        skip = False
                        continue
                    parts = line.split()
                    if len(parts) >= 2:
                        costs[current] = costs.get(current, 0) + int(parts[1])
    return costs


def object_label(path: str) -> str:
    for key, label in (("libcrypto", "OpenSSL libcrypto"), ("libssl", "OpenSSL libssl"),
                       ("/casgi/_casgi", "casgi extension"), ("/uvloop/", "uvloop (libuv)"),
                       ("/libc.so", "libc (malloc, memcpy, memset)"), ("/python3", "CPython"),
                       ("libpython", "CPython"), ("ld-linux", "dynamic loader"),
                       ("_json", "CPython _json"), ("_asyncio", "CPython _asyncio")):
        if key in path:
            return label
    return os.path.basename(path)


def measure(server: str, scenario_name: str, loop: str, requests: int, warmup: int,
            annotate: str | None, keep: str | None = None, bin_dir: str = VENV_BIN,
            by_object: dict | None = None, over_tls: bool = False, server_args: tuple = ()) -> float:
    """Instructions per request; fills `by_object` (when given) with instructions
    per request for each part of the process (object_label). `over_tls` serves
    a cleartext scenario over TLS."""
    scenario = BY_NAME[scenario_name]
    if scenario.http2:
        h2client.use_venv(os.path.join(bin_dir, "python"))
        try:
            import h2  # noqa: F401
        except ImportError:
            raise RuntimeError("the h2 package is not installed in the bench venv") from None
    if over_tls:
        scenario = dataclasses.replace(scenario, tls=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="casgi-callgrind-") as tmp_dir:
        files = make_certificates(tmp_dir) if scenario.tls else None
        context = h2client.client_context if scenario.http2 else idle.client_context
        tls = context(files.ca) if files else None
        launch = servers.LAUNCHERS[server](bin_dir, scenario.app, port, loop, None, tls=files,
                                           http2=scenario.http2)
        out_dir = keep or os.path.join(tmp_dir, "out")
        os.makedirs(out_dir, exist_ok=True)
        # Children traced too: hypercorn, granian and h2corn serve from a worker
        # process that their first process starts.
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
                f"--callgrind-out-file={out_dir}/callgrind.out.%p", *launch.argv, *server_args]
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.Popen(argv, cwd=servers.APPS_DIR, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_ready(port, proc, scenario, tls)
            # The counted requests go over the warm-up's connections: their set-up
            # (a TLS handshake each) is not counted, except in tls-handshake.
            conns = None if scenario.handshake else \
                [connect(port, scenario, tls) for _ in range(CONNECTIONS)]
            send_requests(port, scenario, warmup, tls, conns)
            pids = procstat.process_tree(proc.pid)
            callgrind_control("--instr=on", pids)
            send_requests(port, scenario, requests, tls, conns)
            callgrind_control("--instr=off", pids)
            callgrind_control("--dump", pids)
            for conn in conns or ():
                conn.close()
        finally:
            # The server's process group (its own session): worker processes included.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(30)
                except ProcessLookupError:
                    pass
                except subprocess.TimeoutExpired:
                    continue
                break
            proc.wait()
        dumps = [f for f in os.listdir(out_dir) if f.startswith("callgrind.out")]
        if annotate and dumps:
            with open(annotate, "w") as f:
                for dump in sorted(dumps):
                    subprocess.run(["callgrind_annotate", "--threshold=95",
                                    os.path.join(out_dir, dump)], stdout=f, check=False)
        if by_object is not None:
            for path, cost in self_cost_by_object(out_dir).items():
                label = object_label(path)
                by_object[label] = by_object.get(label, 0) + cost / requests
        # The final dump at exit has instrumentation off, so it adds nothing.
        return total_instructions(out_dir) / requests


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Not h2corn: under valgrind its supervisor shuts down right after starting its worker.
    p.add_argument("--server", default="casgi",
                   choices=["casgi", "uvicorn", "hypercorn", "granian"])
    p.add_argument("--scenario", default="plaintext",
                   choices=["plaintext", "json", "echo-10k", "stream-1m", "starlette", "fastapi",
                            "tls-plaintext", "tls-json", "tls-handshake", "h2c-plaintext",
                            "h2c-json", "h2c-echo-10k", "h2c-stream-1m", "h2-tls-plaintext",
                            "h2-tls-json", "h2-tls-stream-1m"])
    p.add_argument("--tls", action="store_true",
                   help="serve the scenario over TLS 1.3 (as the tls-* scenarios do)")
    p.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--annotate", metavar="FILE",
                   help="write callgrind_annotate's per-function profile to FILE")
    p.add_argument("--keep", metavar="DIR",
                   help="write callgrind's dumps to DIR (kept, for callgrind_annotate --inclusive)")
    p.add_argument("--by-object", action="store_true",
                   help="also print the instructions per request spent in each library "
                        "(OpenSSL, CPython, casgi's extension, uvloop, libc, ...)")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="appended to the server's command line (repeatable), e.g. "
                        "--server-arg=--access-log to count casgi's access line")
    p.add_argument("--venv", metavar="DIR",
                   help="run the server from this virtual environment (default .bench-venv), "
                        "e.g. one made with another Python version")
    args = p.parse_args(argv)
    bin_dir = os.path.join(args.venv, "bin") if args.venv else VENV_BIN
    parts = {} if args.by_object else None
    try:
        per_request = measure(args.server, args.scenario, args.loop, args.requests,
                              args.warmup, args.annotate, args.keep, bin_dir, parts, args.tls,
                              tuple(args.server_arg))
    except RuntimeError as exc:  # e.g. a server without HTTP/2 in an h2c scenario
        sys.exit(f"{args.server} {args.scenario}: {exc}")
    scenario = BY_NAME[args.scenario]
    how = "each on a new connection" if scenario.handshake else \
        f"{CONNECTIONS} keep-alive connections" + (", HTTP/2" if scenario.http2 else "")
    name = args.scenario + (" over TLS" if args.tls and not scenario.tls else "")
    print(f"{args.server} {name} ({args.loop}): {per_request:,.0f} instructions per "
          f"request ({args.requests} requests, {how})")
    for label, cost in sorted((parts or {}).items(), key=lambda item: -item[1]):
        if cost >= per_request / 1000:
            print(f"  {label:<40} {cost:>12,.0f}  {cost / per_request:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
