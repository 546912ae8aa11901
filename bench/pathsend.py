"""A large file at line rate over loopback: http.response.pathsend on casgi,
granian and h2corn, and Starlette's FileResponse on casgi (with pathsend
offered, and with it hidden so the app streams the file).

    python bench/pathsend.py [--size-mib 1024] [--runs 5] [--downloads 3] [--client curl|discard]
                             [--servers casgi,casgi-starlette,casgi-stream,granian,h2corn]
                             [--python .bench-venv/bin/python] [--loop uvloop]

Each server (every thread and child process) is pinned to CPU 0 with taskset,
the client (HTTP/1.1 cleartext: curl writing to /dev/null, or with --client
discard this script reading with MSG_TRUNC, which copies nothing out of the
socket) to CPU 1. Servers
run one after the other in rounds (casgi, granian, h2corn, casgi, ...), each
run `--downloads` downloads of the file on one connection. Reported per
server: the median over runs of the throughput (bytes/s) and of the server's
CPU time (user + system, whole process tree, from /proc) per GiB sent, and
the ratio to granian computed run by run. casgi comes from the Python given
(`--python`: its environment must have casgi installed, granian and h2corn
next to it, and Starlette).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from procstat import cpu_seconds, process_tree  # noqa: E402
from servers import APPS_DIR, LAUNCHERS  # noqa: E402

APP = "pathsend_file:app"
# name -> (launcher, URL path)
SERVERS = {
    "casgi": ("casgi", "/"),
    "casgi-starlette": ("casgi", "/starlette"),
    "casgi-stream": ("casgi", "/stream"),
    "granian": ("granian", "/"),
    "h2corn": ("h2corn", "/"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_file(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            f.write(block[i % 4096:] + block[: i % 4096])  # no two MiB alike
    with open(path, "rb") as f:  # into the page cache: the disk is not measured
        while f.read(1 << 24):
            pass


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("did not listen")


def download_discard(url: str, n: int) -> tuple[int, float]:
    """n downloads of url on one connection by this process, the body
    discarded in the kernel (recv with MSG_TRUNC: TCP drops the bytes without
    copying them out), so the client costs almost nothing and the server's
    own limit shows: (bytes, seconds)."""
    host, _, rest = url[len("http://"):].partition(":")
    port, _, path = rest.partition("/")
    buf = bytearray(1 << 20)
    total = 0
    t = time.monotonic()
    with socket.create_connection((host, int(port))) as s:
        for _ in range(n):
            s.sendall(f"GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("closed before the head")
                head += chunk
            head, _, body = head.partition(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            left = length - len(body)
            while left > 0:
                got = s.recv_into(buf, min(left, len(buf)), socket.MSG_TRUNC)
                if got <= 0:
                    raise RuntimeError("closed mid-body")
                left -= got
            total += length
    return total, time.monotonic() - t


def download(url: str, n: int, cpu: int, client: str = "curl") -> tuple[int, float]:
    """n downloads of url on one connection: (bytes, seconds)."""
    if client == "discard":
        return download_discard(url, n)
    argv = ["taskset", "-c", str(cpu), "curl", "-s", "--http1.1", "-w", "%{size_download}\\n"]
    for _ in range(n):
        argv += ["-o", "/dev/null", url]
    t = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return sum(int(x) for x in out.split()), time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--downloads", type=int, default=3)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--python", default=os.path.join(os.path.dirname(HERE), ".bench-venv", "bin", "python"))
    ap.add_argument("--loop", default="uvloop")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--client", choices=["curl", "discard"], default="curl",
                    help="curl -o /dev/null (the client copies every byte out of the socket), or "
                         "discard: this process reads with MSG_TRUNC (nothing copied out)")
    ap.add_argument("--file", default=os.path.join(tempfile.gettempdir(), "casgi-pathsend-bench.bin"))
    args = ap.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is needed")
    size = args.size_mib << 20
    make_file(args.file, size)
    os.sched_setaffinity(0, {args.client_cpu})  # the harness (and the discarding client) on the client CPU
    bin_dir = os.path.dirname(args.python)
    names = args.servers.split(",")
    procs, urls = {}, {}
    env = dict(os.environ, PATHSEND_FILE=args.file)
    try:
        for name in names:
            launcher, path = SERVERS[name]
            port = free_port()
            launch = LAUNCHERS[launcher](bin_dir, APP, port, args.loop, None)
            p = subprocess.Popen(["taskset", "-c", str(args.server_cpu), *launch.argv], cwd=APPS_DIR, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs[name] = p
            wait_port(port, p)
            urls[name] = f"http://127.0.0.1:{port}{path}"
            got, _ = download(urls[name], 1, args.client_cpu)  # warm-up, and the check
            if got != size:
                raise RuntimeError(f"{name}: {got} bytes instead of {size}")
        results: dict = {n: [] for n in names}
        for r in range(args.runs):
            for name in names:
                tree = process_tree(procs[name].pid)
                cpu0 = cpu_seconds(tree)
                got, secs = download(urls[name], args.downloads, args.client_cpu, args.client)
                cpu = cpu_seconds(process_tree(procs[name].pid)) - cpu0
                if got != size * args.downloads:
                    raise RuntimeError(f"{name}: {got} bytes instead of {size * args.downloads}")
                results[name].append((got / secs, cpu / (got / (1 << 30))))
                print(f"round {r + 1} {name}: {got / secs / 1e9:.2f} GB/s, {cpu / (got / (1 << 30)):.3f} CPU s/GiB",
                      file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    ref = "granian" if "granian" in names else None
    print(f"| server | throughput (GB/s) | server CPU per GiB (s) | throughput / granian | CPU per GiB / granian |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        rows = results[name]
        tput = statistics.median(t for t, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        if ref:
            rt = statistics.median(a[0] / b[0] for a, b in zip(rows, results[ref]))
            rc = statistics.median(a[1] / b[1] for a, b in zip(rows, results[ref]))
            ratio = f"{rt:.2f} | {rc:.2f}"
        else:
            ratio = "- | -"
        print(f"| {name} | {tput / 1e9:.2f} | {cpu:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
