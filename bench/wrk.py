"""Running wrk and reading its report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors of every kind plus non-2xx/3xx responses
    output: str


def lua_script(method: str = "GET", body: bytes = b"", content_type: str = "",
               pipeline: int = 1) -> str:
    """A wrk script for a POST body and/or `pipeline` requests per write; '' when not needed."""
    lines = []
    if method != "GET":
        lines.append(f'wrk.method = "{method}"')
    if body:
        lines.append(f"wrk.body = {_lua_string(body)}")
    if content_type:
        lines.append(f'wrk.headers["Content-Type"] = "{content_type}"')
    if pipeline > 1:
        lines += [
            f"local depth = {pipeline}",
            "init = function(args)",
            "  local r = {}",
            "  for i = 1, depth do r[i] = wrk.format() end",
            "  req = table.concat(r)",
            "end",
            "request = function() return req end",
        ]
    return "\n".join(lines) + "\n" if lines else ""


def _lua_string(data: bytes) -> str:
    if len(data) > 64 and len(set(data)) == 1:
        return f'string.rep("{chr(data[0])}", {len(data)})'
    text = data.decode("ascii")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command(url: str, connections: int, duration: float, script: str | None, cpu: int,
            headers: tuple = (), preload: str | None = None) -> list[str]:
    """wrk's command line; `preload` is a shared object wrk is run with (LD_PRELOAD)."""
    argv = ["env", f"LD_PRELOAD={preload}"] if preload else []
    argv += ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}",
             f"-d{duration:g}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script:
        argv += ["-s", script]
    return argv + [url]


def run(argv: list[str], duration: float) -> WrkResult:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return parse(proc.stdout)


def _latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse(output: str) -> WrkResult:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not total or not rps:
        raise ValueError("cannot read wrk output:\n" + output)
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", output, re.M))
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_latency_ms(total.group(2) + total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(percentiles["50"]) if "50" in percentiles else float("nan"),
        p99_ms=_latency_ms(percentiles["99"]) if "99" in percentiles else float("nan"),
        errors=errors,
        output=output,
    )
