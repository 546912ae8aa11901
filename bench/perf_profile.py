#!/usr/bin/env python3
"""Where a server's CPU time goes under load, by library, sampled with perf.

    python bench/perf_profile.py [--server casgi] [--scenario tls-plaintext]
                                 [--duration S] [--top N] [--keep FILE]

Starts one server as bench/run.py does (pinned to --server-cpu, TLS files made
for the run when the scenario is a TLS one), puts the scenario's wrk load on it
from --client-cpu, and samples the server's processes with `perf record -e
cpu-clock` (a timer: it works in virtual machines without hardware counters)
for the length of the load. Prints the share of samples in each object (the
kernel, OpenSSL's libcrypto and libssl, CPython, casgi's extension, uvloop,
libc, a Rust server's own binary, ...) and, with the server's CPU time per
request measured over the same window, the microseconds per request in each;
then the --top functions. Unlike callgrind, this counts real time, the
kernel's included; like every timing it moves with the machine's noise.
Uses the servers installed in .bench-venv (run bench/run.py once first).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import run
from scenarios import BY_NAME


def object_label(dso: str) -> str:
    for key, label in (("[kernel", "kernel"), ("libcrypto", "OpenSSL libcrypto"),
                       ("libssl", "OpenSSL libssl"), ("_casgi", "casgi extension"),
                       ("uvloop", "uvloop (libuv)"), ("loop.cpython", "uvloop (libuv)"),
                       ("libc.so", "libc"),
                       ("libc-", "libc"), ("libpython", "CPython"), ("python3", "CPython"),
                       ("_asyncio", "CPython _asyncio"), ("_json", "CPython _json"),
                       ("httptools", "httptools"), ("_ssl", "CPython _ssl")):
        if key in dso:
            return label
    return dso


def report_rows(data: str, sort: str) -> list:
    """(percent, key) rows of `perf report --sort SORT`, highest first."""
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", sort,
                          "--percent-limit", "0.1"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if m and not line.lstrip().startswith("#"):
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def profile(name: str, scenario_name: str, duration: float, server_cpu: int, client_cpu: int,
            top: int, keep: str | None) -> None:
    scenario = BY_NAME[scenario_name]
    if not shutil.which("perf"):
        sys.exit("perf is not installed (Debian: linux-perf)")
    with tempfile.TemporaryDirectory(prefix="casgi-perf-") as workdir:
        tls = run.make_certificates(workdir) if scenario.tls else None
        if scenario.handshake and not run.build_noresume():
            sys.exit("no C compiler for bench/tls_noresume.c")
        if scenario.http2:
            run.h2client.use_venv(run.VENV_PY)  # the readiness check's HTTP/2 client
        server = run.start_server(name, scenario, server_cpu, workdir, tls)
        try:
            script = run.write_script(scenario, workdir)
            run.run_load(scenario, run.wrk_argv(scenario, server.port, script, 2, client_cpu,
                                                workdir), 2, warming_up=True)
            pids = server.pids()
            data = keep or os.path.join(workdir, "perf.data")
            perf = subprocess.Popen(["taskset", "-c", str(client_cpu), "perf", "record", "-q",
                                     "-e", "cpu-clock", "-F", "1999", "-o", data,
                                     "-p", ",".join(map(str, pids))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            # The server's CPU over the span the load tool counts requests in (for
            # h2load, after its own warm-up; perf samples that warm-up as well).
            measured = run.measure_wrk(scenario, server, run.wrk_argv(
                scenario, server.port, script, duration, client_cpu, workdir), duration,
                server_cpu)
            perf.send_signal(2)
            perf.wait(30)
        finally:
            server.stop()
        per_request_us = (measured["cpu_per_100k"] or 0.0) * 10
        print(f"{name} {scenario_name}: {measured['rps']:,.0f} req/s, server CPU "
              f"{per_request_us:.1f} us per request ({duration:g} s, perf cpu-clock samples)")
        by_label: dict = {}
        for percent, dso in report_rows(data, "dso"):
            label = object_label(dso)
            by_label[label] = by_label.get(label, 0.0) + percent
        print(f"\n  {'object':<32} {'share':>7} {'us/request':>11}")
        for label, percent in sorted(by_label.items(), key=lambda item: -item[1]):
            print(f"  {label:<32} {percent:6.1f}% {per_request_us * percent / 100:11.2f}")
        print(f"\n  top {top} functions:")
        for percent, key in report_rows(data, "dso,sym")[:top]:
            print(f"  {percent:6.2f}%  {key}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="casgi", choices=sorted(run.servers.LAUNCHERS))
    p.add_argument("--scenario", default="tls-plaintext",
                   choices=[s for s, sc in BY_NAME.items() if sc.kind == "wrk"])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--keep", metavar="FILE", help="write perf's data to FILE (kept)")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.client_cpu})
    profile(args.server, args.scenario, args.duration, args.server_cpu, args.client_cpu,
            args.top, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
