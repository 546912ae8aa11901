"""Throughput with and without --metrics-port: what counting costs a request.

    python bench/metrics_ab.py [--rounds 5] [--seconds 10] [--python .bench-venv/bin/python]

casgi serves bench/apps/plaintext.py (uvloop, no access log) pinned to CPU 0;
wrk (1 thread, 64 connections) pinned to CPU 1. Rounds alternate the two
configurations (metrics off, then on, ...); reported: the median requests/s of
each and the ratio on/off computed round by round (its median). The issue's
target is a ratio of at least 0.98.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from wrk import parse  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def run_once(python: str, metrics: bool, seconds: int) -> float:
    port = free_port()
    argv = [python, "-m", "casgi", "plaintext:app", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--loop", "uvloop"]
    if metrics:
        argv += ["--metrics-port", str(free_port())]
    proc = subprocess.Popen(["taskset", "-c", "0", *argv], cwd=os.path.join(HERE, "apps"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d2s", url],
                       capture_output=True, check=True)  # warm-up
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", url],
                             capture_output=True, text=True, check=True).stdout
        return parse(out).rps
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--python", default=os.path.join(os.path.dirname(HERE), ".bench-venv", "bin", "python"))
    args = ap.parse_args()
    off, on, ratios = [], [], []
    for i in range(args.rounds):
        a = run_once(args.python, False, args.seconds)
        b = run_once(args.python, True, args.seconds)
        off.append(a)
        on.append(b)
        ratios.append(b / a)
        print(f"round {i + 1}: off {a:,.0f} req/s, on {b:,.0f} req/s, on/off {b / a:.3f}", flush=True)
    print(f"median: off {statistics.median(off):,.0f} req/s, on {statistics.median(on):,.0f} req/s, "
          f"on/off {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
