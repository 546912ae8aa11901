#!/usr/bin/env python3
"""Soak test: millions of requests through one casgi process, RSS watched.

    python bench/soak.py [--requests 5000000] [--warmup 500000] [--limit-kib 1024]

Serves bench/apps/soak.py (plaintext, JSON, a POST echo and a streamed
response in turn, so every hot path allocates and frees) with the casgi
installed in the running interpreter, loads it with wrk (64 connections,
keep-alive) on the other CPU, and samples the server's resident memory. After
the warm-up the RSS may grow by at most --limit-kib over the rest of the run:
a reference leak of even one small object per request would show as hundreds
of MiB. Exits 1 when the limit is exceeded or the server misbehaves.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from procstat import rss_kib

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = """
local paths = {"/plain", "/json", "/echo", "/stream"}
local i = 0
request = function()
  i = i + 1
  local p = paths[(i % 4) + 1]
  if p == "/echo" then
    return wrk.format("POST", p, {["Content-Type"] = "application/octet-stream"}, string.rep("x", 2048))
  end
  return wrk.format("GET", p)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def run_wrk(port: int, script: str, requests: int, rate_guess: float) -> int:
    """Runs wrk long enough for about `requests` requests; returns the count."""
    seconds = max(2, int(requests / rate_guess) + 1)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", "-s", script,
         f"http://127.0.0.1:{port}/"],
        check=True, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise SystemExit("cannot read wrk's output:\n" + out)
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit("wrk reported errors:\n" + out)
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5_000_000)
    ap.add_argument("--warmup", type=int, default=500_000)
    ap.add_argument("--limit-kib", type=int, default=1024)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")

    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "casgi", "soak:app", "--app-dir",
         os.path.join(HERE, "apps"), "--port", str(port), "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # Not the repository root: its casgi/ (without the built extension)
        # would shadow the installed package.
        cwd=os.path.join(HERE, "apps"))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
        script = f.name
    try:
        wait_up(port, server)
        t0 = time.monotonic()
        done = run_wrk(port, script, args.warmup, 20_000)
        rate = done / (time.monotonic() - t0)
        base = rss_kib([server.pid])
        print(f"warm-up: {done} requests, {rate:.0f} req/s, RSS {base} KiB", flush=True)
        samples = []
        total = done
        while total < args.requests:
            chunk = min(args.requests - total, max(args.requests // 10, 1))
            total += run_wrk(port, script, chunk, rate)
            samples.append(rss_kib([server.pid]))
            print(f"{total:>9} requests: RSS {samples[-1]} KiB ({samples[-1] - base:+d})",
                  flush=True)
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}")
        growth = samples[-1] - base
        print(f"RSS growth after warm-up: {growth} KiB over {total - done} requests "
              f"(limit {args.limit_kib} KiB)")
        return 0 if growth <= args.limit_kib else 1
    finally:
        os.unlink(script)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
