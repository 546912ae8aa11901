"""WebSocket echo benchmark: casgi vs uvicorn (websockets-sansio) vs granian.

    python bench/ws_bench.py [--duration 5] [--warmup 1] [--servers casgi,uvicorn,granian]
                             [--casgi-python PATH] [--venv PATH] [--idle 1000] [--rounds 1]

Every server runs the same raw ASGI echo app (written to a temporary
directory, the servers' working directory) on one process pinned to CPU 0
(`taskset -c 0`), access log off, uvloop. The load client is bench/ws_client.c
(compiled here with `cc -O2`), pinned to CPU 1: N connections, each sending a
masked message of S bytes and waiting for the echo before sending the next.

`--servers ...,ceiling` adds bench/ws_ceiling.c: an echo server in plain C
with no Python, the most any server can reach here (its 1-connection rate
shows how much of a round trip is the machine's wake-up latency rather than
server work).

Scenarios: 32 B and 16 KiB messages over 1 and 64 connections. Reported per
run: messages/s, p50/p99 round-trip latency, the CPU use of the client and of
the server during the measured window (from /proc/PID/stat; a client below
100% is not the bottleneck). Memory per idle open WebSocket: a fresh server,
RSS of its process tree before and after opening --idle connections, delta
divided by their number.

Python environment for uvicorn/granian: .bench-venv at the repository root if
present, else /tmp/wsbvenv (created with uvicorn[standard] and granian).
casgi runs with --casgi-python (default: that venv's python).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

ECHO_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})
'''

SCENARIOS = [(32, 1), (32, 64), (16384, 1), (16384, 64)]


# -- /proc -------------------------------------------------------------------------

def _stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def tree(root: int) -> list:
    parents = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            st = _stat(int(e))
            if st:
                parents[int(e)] = int(st[1])
    out, frontier = [root], [root]
    while frontier:
        nxt = [p for p, pp in parents.items() if pp in frontier]
        out += nxt
        frontier = nxt
    return out


def cpu_ticks(pids) -> int:
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st:
            total += int(st[11]) + int(st[12])  # utime + stime (fields 14, 15)
    return total


def rss_kib(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except OSError:
            pass
    return total


# -- environment -------------------------------------------------------------------

def find_venv(explicit: str | None) -> str:
    if explicit:
        return explicit
    cand = os.path.join(ROOT, ".bench-venv")
    if os.path.exists(os.path.join(cand, "bin", "python")):
        return cand
    cand = "/tmp/wsbvenv"
    if not os.path.exists(os.path.join(cand, "bin", "python")):
        subprocess.check_call([sys.executable, "-m", "venv", cand])
        subprocess.check_call([f"{cand}/bin/pip", "install", "-q", "uvicorn[standard]", "granian", "websockets"])
    return cand


def uvicorn_ws_flag(venv: str) -> str:
    out = subprocess.run([f"{venv}/bin/python", "-c",
                          "from uvicorn.config import WS_PROTOCOLS; print(' '.join(WS_PROTOCOLS))"],
                         capture_output=True, text=True, cwd="/")
    names = out.stdout.split()
    return "websockets-sansio" if "websockets-sansio" in names else "websockets"


def compile_c(workdir: str, name: str) -> str:
    exe = os.path.join(workdir, name)
    subprocess.check_call(["cc", "-O2", "-o", exe, os.path.join(HERE, f"{name}.c")])
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(name: str, venv: str, casgi_py: str, port: int, uv_ws: str, work: str) -> list:
    if name == "ceiling":
        return [os.path.join(work, "ws_ceiling"), "--port", str(port)]
    if name == "casgi":
        return [casgi_py, "-m", "casgi", "ws_echo:app", "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--loop", "uvloop"]
    if name == "uvicorn":
        return [f"{venv}/bin/uvicorn", "ws_echo:app", "--host", "127.0.0.1", "--port", str(port),
                "--no-access-log", "--loop", "uvloop", "--http", "httptools", "--ws", uv_ws]
    if name == "granian":
        return [f"{venv}/bin/granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--loop", "uvloop", "--no-access-log", "ws_echo:app"]
    raise ValueError(name)


def _raise_nofile():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Server:
    def __init__(self, name, argv, cwd):
        self.name = name
        self.argv = ["taskset", "-c", "0", *argv]
        self.log = open(os.path.join(cwd, f"{name}.log"), "w")
        self.proc = subprocess.Popen(self.argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_raise_nofile)
        self.port = int(argv[argv.index("--port") + 1])

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.3)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout}s")

    def pids(self):
        return tree(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


RESULT_RE = re.compile(r"(\w+)=([0-9.]+)")


def run_echo(client: str, server: Server, size: int, conns: int, duration: float, warmup: float) -> dict:
    argv = ["taskset", "-c", "1", client, "echo", "127.0.0.1", str(server.port), "/ws", str(conns), str(size),
            str(duration), str(warmup)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_raise_nofile)
    sp = server.pids()
    t_start = c_start = s_start = None
    result = {}
    for line in p.stdout:
        line = line.strip()
        if line == "START":
            t_start, c_start, s_start = time.monotonic(), cpu_ticks([p.pid]), cpu_ticks(sp)
        elif line == "END":
            t_end, c_end, s_end = time.monotonic(), cpu_ticks([p.pid]), cpu_ticks(sp)
        elif line.startswith("conns="):
            result = {k: float(v) for k, v in RESULT_RE.findall(line)}
    rc = p.wait(30)
    err = p.stderr.read()
    if rc != 0 or not result or t_start is None:
        raise RuntimeError(f"client failed (rc {rc}): {err.strip()[:500]}")
    wall = t_end - t_start
    result["client_cpu"] = 100.0 * (c_end - c_start) / CLK / wall
    result["server_cpu"] = 100.0 * (s_end - s_start) / CLK / wall
    # CPU time the server spent per echoed message: steadier than messages/s
    # when other processes take a share of CPU 0
    result["server_us_per_msg"] = 1e6 * (s_end - s_start) / CLK / max(result["messages"], 1)
    shown = list(argv)
    shown[6] = "PORT"
    result["cmd"] = " ".join(shlex.quote(a) for a in shown)
    return result


def idle_memory(client: str, server: Server, n: int) -> tuple:
    # warm the server's WebSocket path first (a few connections opened and used)
    run_echo(client, server, 32, 4, 0.3, 0.1)
    time.sleep(0.5)
    base = rss_kib(server.pids())
    argv = ["taskset", "-c", "1", client, "idle", "127.0.0.1", str(server.port), "/ws", str(n), "30"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_raise_nofile)
    line = p.stdout.readline().strip()
    if not line.startswith("READY"):
        p.kill()
        raise RuntimeError(f"idle client: {line!r} {p.stderr.read()[:300]}")
    time.sleep(1.5)
    after = rss_kib(server.pids())
    p.kill()
    p.wait(5)
    return base, after, (after - base) / n, " ".join(shlex.quote(a) for a in argv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--servers", default="casgi,uvicorn,granian")
    ap.add_argument("--venv", default=None)
    ap.add_argument("--casgi-python", default=None)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every server's scenarios this many times, servers interleaved; "
                         "the best round is reported (on a shared machine noise only lowers throughput)")
    args = ap.parse_args()

    venv = find_venv(args.venv)
    casgi_py = args.casgi_python or f"{venv}/bin/python"
    uv_ws = uvicorn_ws_flag(venv)
    work = tempfile.mkdtemp(prefix="wsbench-")
    with open(os.path.join(work, "ws_echo.py"), "w") as f:
        f.write(ECHO_APP)
    client = compile_c(work, "ws_client")
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "ceiling" in names:
        compile_c(work, "ws_ceiling")
    print(f"# WebSocket echo benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, duration {args.duration:g}s + warmup {args.warmup:g}s)\n")
    print("command: `python3 bench/ws_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`\n")
    print(f"client: `cc -O2 -o ws_client bench/ws_client.c`; venv {venv}; casgi python {casgi_py}; "
          f"working directory {work}\n")

    rows, mem, cmds = [], [], []
    best: dict = {}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        for name in names:
            srv = Server(name, server_argv(name, venv, casgi_py, free_port(), uv_ws, work), work)
            try:
                srv.wait_ready()
                if rnd == 0:
                    cmds.append(" ".join(shlex.quote(a) for a in srv.argv))
                for size, conns in SCENARIOS:
                    r = run_echo(client, srv, size, conns, args.duration, args.warmup)
                    key = (name, size, conns)
                    if key not in best or r["msgs_per_sec"] > best[key]["msgs_per_sec"]:
                        best[key] = r
                    print(f"round {rnd + 1} {name:8} {size:>6} B x {conns:>2} conns: {r['msgs_per_sec']:>9.0f} msg/s  "
                          f"p50 {r['p50_us']:.0f} us  p99 {r['p99_us']:.0f} us  client CPU {r['client_cpu']:.0f}%  "
                          f"server CPU {r['server_cpu']:.0f}%  errors {r['errors']:.0f}", flush=True)
            finally:
                srv.stop()
    for name in names:
        for size, conns in SCENARIOS:
            rows.append((name, size, conns, best[(name, size, conns)]))
    for name in names:
        if not args.idle or name == "ceiling":
            continue
        srv = Server(name, server_argv(name, venv, casgi_py, free_port(), uv_ws, work), work)
        try:
            srv.wait_ready()
            base, after, per, idle_cmd = idle_memory(client, srv, args.idle)
            mem.append((name, base, after, per))
            print(f"{name:8} idle: RSS {base} KiB -> {after} KiB with {args.idle} WebSockets: "
                  f"{per:.1f} KiB each", flush=True)
        finally:
            srv.stop()
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs); best of {args.rounds} round(s)")

    print("\n| server | message | conns | msgs/s | p50 (us) | p99 (us) | client CPU | server CPU | server CPU us/msg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, size, conns, r in rows:
        label = "32 B" if size == 32 else f"{size // 1024} KiB"
        print(f"| {name} | {label} | {conns} | {r['msgs_per_sec']:,.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
              f"{r['client_cpu']:.0f}% | {r['server_cpu']:.0f}% | {r['server_us_per_msg']:.1f} |")
    base = {(s, c): r["msgs_per_sec"] for n, s, c, r in rows if n == "uvicorn"}
    ratios = [(s, c, r["msgs_per_sec"] / base[(s, c)]) for n, s, c, r in rows if n == "casgi" and (s, c) in base]
    if ratios:
        print("\ncasgi / uvicorn messages per second: " + ", ".join(
            f"{'32 B' if s == 32 else '16 KiB'} x {c}: {x:.2f}x" for s, c, x in ratios))
        cost = {(s, c): r["server_us_per_msg"] for n, s, c, r in rows if n == "uvicorn"}
        print("uvicorn / casgi server CPU per message: " + ", ".join(
            f"{'32 B' if s == 32 else '16 KiB'} x {c}: {cost[(s, c)] / r['server_us_per_msg']:.2f}x"
            for n, s, c, r in rows if n == "casgi" and (s, c) in cost and r["server_us_per_msg"] > 0))
    ceiling = {(s, c): r["msgs_per_sec"] for n, s, c, r in rows if n == "ceiling"}
    for peer in ("uvicorn", "casgi"):
        if ceiling and any(n == peer for n, *_ in rows):
            print(f"{peer} / C ceiling messages per second: " + ", ".join(
                f"{'32 B' if s == 32 else '16 KiB'} x {c}: {r['msgs_per_sec'] / ceiling[(s, c)]:.2f}x"
                for n, s, c, r in rows if n == peer and (s, c) in ceiling))
    if mem:
        print(f"\n| server | RSS before | RSS with {args.idle} idle WebSockets | per WebSocket |")
        print("|---|---:|---:|---:|")
        for name, b, a, per in mem:
            print(f"| {name} | {b / 1024:.1f} MiB | {a / 1024:.1f} MiB | {per:.1f} KiB |")
    print("\nCommands (run with the app file ws_echo.py in the working directory):")
    for c in cmds:
        print(f"    {c}")
    for cmd in dict.fromkeys(r["cmd"] for _, _, _, r in rows):
        print(f"    {cmd}")
    print(f"    taskset -c 1 {client} idle 127.0.0.1 PORT /ws {args.idle} 30   # idle WebSockets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
