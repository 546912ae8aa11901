"""Running h2load (nghttp2's HTTP/2 load generator) and reading its report.

h2load speaks h2c with prior knowledge to an http:// URL (its default) and,
with `--npn-list=h2`, offers only h2 by ALPN to an https:// one, so a server
that would pick HTTP/1.1 is not measured as HTTP/2 by mistake. A run is timed
(`-D`) after a warm-up (`--warm-up-time`) in which the connections are made
(TLS handshakes included): requests per second count the main phase only, and
`--log-file` gives each of its requests' latency, from which p50 and p99 come.

A run with any error is a failed run, not a number: `run` raises. That covers
failed, errored and timed-out streams, answers other than 2xx/3xx, clients
whose TLS handshake negotiated no h2, and no request done at all (a server
that does not speak h2c answers the preface with HTTP/1.1 or closes, and
h2load then reports 0 requests and 0 bytes and exits with status 0).
"""

from __future__ import annotations

import os
import re
import subprocess

from wrk import WrkResult

RUN_WARMUP = 1.0  # seconds of h2load's own warm-up before each timed run
# Over TLS the same suite wrk negotiates in the HTTP/1.1 TLS rows (OpenSSL's
# first client choice), so that HTTP/2 and HTTP/1.1 over TLS are comparable;
# h2load's own default list starts with AES-128-GCM.
TLS13_CIPHERS = "TLS_AES_256_GCM_SHA384"


def _duration(seconds: float) -> str:
    """h2load takes whole units: seconds, or milliseconds for a fraction."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _seconds(duration: str) -> float:
    return float(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration[:-1])


def command(url: str, connections: int, streams: int, duration: float, cpu: int,
            log_file: str, data_file: str | None = None, headers: tuple = (),
            warmup: float = RUN_WARMUP) -> list:
    """h2load's command line: one thread pinned to `cpu`, `connections` x `streams`."""
    argv = ["taskset", "-c", str(cpu), "h2load", "-t1", f"-c{connections}", f"-m{streams}",
            "-D", _duration(duration), "--warm-up-time", _duration(warmup),
            "--log-file", log_file]
    if url.startswith("https://"):
        argv += ["--npn-list=h2", f"--tls13-ciphers={TLS13_CIPHERS}"]
    for header in headers:
        argv += ["-H", header]
    if data_file:
        argv += ["-d", data_file]
    return argv + [url]


def run(argv: list, duration: float, warming_up: bool = False) -> WrkResult:
    """Runs h2load; its result as wrk's (the latencies from its log file).
    Raises RuntimeError for a run with any error. `warming_up`: a run only to
    warm the server up, where no stream finishing in a short timed phase is no
    error (hypercorn needs seconds for the first of 640 concurrent 1 MiB streams)."""
    log_file = argv[argv.index("--log-file") + 1]
    warmup = _seconds(argv[argv.index("--warm-up-time") + 1])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=warmup + duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed ({proc.returncode}): "
                               f"{(proc.stderr.strip() or proc.stdout)[-300:]}")
        result = parse(proc.stdout)
        problem = errors_in(proc.stdout, none_done_ok=warming_up)
        if problem:
            raise RuntimeError(problem)
        result.p50_ms, result.p99_ms = percentiles(log_file)
        return result
    finally:
        if os.path.exists(log_file):
            os.unlink(log_file)


def _counts(output: str) -> dict:
    requests = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored, (\d+) timeout", output, re.M)
    status = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if not requests or not status:
        raise ValueError("cannot read h2load output:\n" + output[-2000:])
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    counts = dict(zip(keys, map(int, requests.groups())))
    counts.update(zip(("2xx", "3xx", "4xx", "5xx"), map(int, status.groups())))
    traffic = re.search(r"^traffic: \S+ \((\d+)\) total", output, re.M)
    counts["bytes"] = int(traffic.group(1)) if traffic else 0
    return counts


def parse(output: str) -> WrkResult:
    """Requests per second of the main phase (h2load divides the requests done
    in it by its duration) and the error count; latencies are filled in from
    the log file by `run`."""
    finished = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", output, re.M)
    if not finished:
        raise ValueError("cannot read h2load output:\n" + output[-2000:])
    counts = _counts(output)
    # "failed" includes "errored" (streams closed with an error) and non-2xx/3xx answers.
    errors = counts["failed"] + counts["timeout"]
    rps = float(finished.group(2))
    return WrkResult(requests=counts["done"], seconds=counts["done"] / rps if rps else 0.0,
                     rps=rps, p50_ms=float("nan"), p99_ms=float("nan"), errors=errors,
                     output=output)


def errors_in(output: str, none_done_ok: bool = False) -> str | None:
    """Why the run counts as failed, or None when it had no error at all."""
    counts = _counts(output)
    unnegotiated = output.count("No supported protocol was negotiated")
    if unnegotiated:
        alpn = re.search(r"^Application protocol: (\S+)", output, re.M)
        return (f"{unnegotiated} connection(s) negotiated no h2 by ALPN"
                + (f" (others: {alpn.group(1)})" if alpn else ""))
    problems = [f"{counts[k]} {k}" for k in ("failed", "errored", "timeout", "4xx", "5xx")
                if counts[k]]
    if problems:
        return f"{counts['done']} requests done, " + ", ".join(problems)
    if not counts["done"] and not counts["bytes"]:
        return ("no request done, no byte received: the server did not speak HTTP/2 (a "
                "server without h2c answers the preface with HTTP/1.1 or closes the "
                "connection)")
    if not counts["done"] and not none_done_ok:
        # Streams under way since the warm-up, answers arriving, none finished.
        return (f"no request finished in the timed phase ({counts['bytes']:,} bytes "
                "received): too slow for this duration")
    return None


def percentiles(log_file: str) -> tuple:
    """p50 and p99 in ms from h2load's log: one line per request of the main
    phase, the third column its microseconds from start to end of response."""
    times = []
    with open(log_file) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) >= 3:
                times.append(int(fields[2]))
    if not times:
        return float("nan"), float("nan")
    times.sort()
    return (times[int(0.50 * (len(times) - 1))] / 1000,
            times[int(0.99 * (len(times) - 1))] / 1000)


def version() -> str | None:
    try:
        proc = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    m = re.search(r"nghttp2/(\S+)", proc.stdout)
    return m.group(1) if m else None
