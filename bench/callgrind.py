#!/usr/bin/env python3
"""Instructions per request of a server's hot path, counted by callgrind.

    python bench/callgrind.py [--server casgi|uvicorn|hypercorn]
                              [--scenario plaintext|json|echo-10k|tls-plaintext|tls-json|...]
                              [--tls] [--loop uvloop|asyncio] [--requests N]
                              [--annotate FILE] [--keep DIR] [--venv DIR]

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
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time

import idle
import servers
from run import VENV_BIN, free_port, make_certificates
from scenarios import BY_NAME

START_TIMEOUT = 120.0  # start-up under valgrind is slow
CONNECTIONS = 4


def connect(port: int, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    if tls:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=tls)
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60)


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
        conns = [connect(port, tls) for _ in range(CONNECTIONS)]
    try:
        for i in range(count):
            conn = connect(port, tls) if scenario.handshake else conns[i % len(conns)]
            try:
                conn.request(scenario.method, scenario.path, body=scenario.body or None,
                             headers=headers)
                response = conn.getresponse()
                response.read()
            finally:
                if scenario.handshake:
                    conn.close()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
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


def callgrind_control(*arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments], check=True, capture_output=True)


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
            by_object: dict | None = None, over_tls: bool = False) -> float:
    """Instructions per request; fills `by_object` (when given) with instructions
    per request for each part of the process (object_label). `over_tls` serves
    a cleartext scenario over TLS."""
    scenario = BY_NAME[scenario_name]
    if over_tls:
        scenario = dataclasses.replace(scenario, tls=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="casgi-callgrind-") as tmp_dir:
        files = make_certificates(tmp_dir) if scenario.tls else None
        tls = idle.client_context(files.ca) if files else None
        launch = servers.LAUNCHERS[server](bin_dir, scenario.app, port, loop, None, tls=files)
        out_dir = keep or os.path.join(tmp_dir, "out")
        os.makedirs(out_dir, exist_ok=True)
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out_dir}/callgrind.out.%p", *launch.argv]
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.Popen(argv, cwd=servers.APPS_DIR, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_ready(port, proc, scenario, tls)
            # The counted requests go over the warm-up's connections: their set-up
            # (a TLS handshake each) is not counted, except in tls-handshake.
            conns = None if scenario.handshake else \
                [connect(port, tls) for _ in range(CONNECTIONS)]
            send_requests(port, scenario, warmup, tls, conns)
            callgrind_control("--instr=on", str(proc.pid))
            send_requests(port, scenario, requests, tls, conns)
            callgrind_control("--instr=off", str(proc.pid))
            callgrind_control("--dump", str(proc.pid))
            for conn in conns or ():
                conn.close()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
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
    p.add_argument("--server", default="casgi", choices=["casgi", "uvicorn", "hypercorn"])
    p.add_argument("--scenario", default="plaintext",
                   choices=["plaintext", "json", "echo-10k", "stream-1m", "starlette", "fastapi",
                            "tls-plaintext", "tls-json", "tls-handshake"])
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
    p.add_argument("--venv", metavar="DIR",
                   help="run the server from this virtual environment (default .bench-venv), "
                        "e.g. one made with another Python version")
    args = p.parse_args(argv)
    bin_dir = os.path.join(args.venv, "bin") if args.venv else VENV_BIN
    parts = {} if args.by_object else None
    per_request = measure(args.server, args.scenario, args.loop, args.requests, args.warmup,
                          args.annotate, args.keep, bin_dir, parts, args.tls)
    how = "each on a new connection" if BY_NAME[args.scenario].handshake else \
        f"{CONNECTIONS} keep-alive connections"
    name = args.scenario + (" over TLS" if args.tls and not BY_NAME[args.scenario].tls else "")
    print(f"{args.server} {name} ({args.loop}): {per_request:,.0f} instructions per "
          f"request ({args.requests} requests, {how})")
    for label, cost in sorted((parts or {}).items(), key=lambda item: -item[1]):
        if cost >= per_request / 1000:
            print(f"  {label:<40} {cost:>12,.0f}  {cost / per_request:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
