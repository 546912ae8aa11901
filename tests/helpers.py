"""Shared machinery for the end-to-end tests.

Every test talks to a real `casgi` process started with
``[sys.executable, "-m", "casgi", ...]`` over real sockets. Helpers here:

- ``CasgiProcess``: starts a server, captures its stdout/stderr, waits for the
  ``casgi running on ...`` line, reads its RSS, signals and reaps it.
- ``RawConn``: a raw TCP (or Unix) client that sends bytes verbatim and parses
  responses byte-exactly (status line, headers, content-length / chunked /
  close-delimited bodies, trailers).
The fixtures (``server``, ``start_server``, ``loop``, ``sups``, ``ws_shared``,
``wss``) live in conftest.py; test modules import helpers from here only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import signal
from signal import SIGINT, SIGTERM
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"

LOOPS = ["asyncio", "uvloop"]
STARTUP_TIMEOUT = 20.0
RUNNING_RE = re.compile(r"casgi running on (?P<where>\S+)")
HTTP_RUNNING_RE = re.compile(r"casgi running on https?://(?P<host>[^\s]+):(?P<port>\d+) \(Press CTRL\+C to quit\)")


def _have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


HAVE_UVLOOP = _have_uvloop()


def loop_params() -> list:
    """The event-loop parameters, uvloop skipped when it is not installed."""
    return [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(
            "uvloop",
            id="uvloop",
            marks=pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed"),
        ),
    ]


def clean_env(extra: Optional[dict] = None) -> dict:
    """The test process environment without any CASGI_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASGI_") and k != "WEB_CONCURRENCY"}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 10.0,
                   details: Callable[[], str] = lambda: "") -> None:
    """Waits until a helper process (nginx, haproxy) accepts on 127.0.0.1:port;
    fails saying `what` and details() when it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else "does not listen"
                raise AssertionError(f"{what} {state}: {details()}")
            time.sleep(0.05)


def run_casgi(*args: str, env: Optional[dict] = None, cwd: Optional[str] = None,
              timeout: float = 20) -> subprocess.CompletedProcess:
    """`python -m casgi ARGS` run to its end (--help, a usage error, a startup failure)."""
    # Never from the repository root, where ./casgi (the source tree) would
    # shadow the installed package.
    cwd = cwd or tempfile.gettempdir()
    return subprocess.run(
        [sys.executable, "-m", "casgi", *args],
        capture_output=True, text=True, env=env if env is not None else clean_env(),
        cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def run_py(code: str) -> subprocess.CompletedProcess:
    """`python -c CODE` run to its end, outside the repository root (as run_casgi)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tempfile.gettempdir(), env=clean_env(), stdin=subprocess.DEVNULL)


HELP_HINT = "Try 'casgi --help' for help."


def assert_one_line_error(stderr: str, *needles: str) -> str:
    """One `Error: ...` line naming the problem; a pointer to --help may follow."""
    lines = [line for line in stderr.splitlines() if line.strip() and line.strip() != HELP_HINT]
    assert len(lines) == 1, f"expected a one-line error, got:\n{stderr}"
    assert lines[0].startswith("Error:"), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not named in {lines[0]!r}"
    assert "Traceback" not in stderr
    return lines[0]


# Under AddressSanitizer (tests/asan.sh preloads libasan) freed memory sits in
# ASan's quarantine, so RSS says nothing about what the server holds.
UNDER_SANITIZER = "libasan" in os.environ.get("LD_PRELOAD", "")


def assert_rss_growth_below(growth_kib: int, limit_kib: int, what: str) -> None:
    """Asserts a bounded RSS growth, except under a sanitizer (see above)."""
    if UNDER_SANITIZER:
        return
    assert growth_kib < limit_kib, f"server RSS grew by {growth_kib // 1024} MiB {what}"


def read_rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB, from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples the RSS of a process in a background thread; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid = pid
        self.interval = interval
        self.max_kib = read_rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.max_kib = max(self.max_kib, read_rss_kib(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


# ----------------------------------------------------------------------------
# Server processes
# ----------------------------------------------------------------------------


CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
SANITIZER_NEEDLES = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


class ServerStartError(AssertionError):
    pass


class CasgiProcess:
    """One `python -m casgi ...` process with its output captured line by line."""

    def __init__(
        self,
        args: list,
        env: Optional[dict] = None,
        cwd: Optional[Path] = None,
        pass_fds: Iterable[int] = (),
        cmd: Optional[list] = None,
    ):
        self.args = list(args)
        self.cmd = cmd if cmd is not None else [sys.executable, "-m", "casgi", *self.args]
        self._lines: list = []  # (stream, text) in arrival order
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env if env is not None else clean_env(),
            cwd=str(cwd) if cwd else None,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._reader, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._reader, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.where: Optional[str] = None

    def _reader(self, stream, name: str) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "backslashreplace")
            with self._cond:
                self._lines.append((name, text))
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    # -- output -----------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self, since: int = 0, stream: Optional[str] = None) -> list:
        with self._cond:
            return [t for (s, t) in self._lines[since:] if stream is None or s == stream]

    def output(self, since: int = 0, stream: Optional[str] = None) -> str:
        return "".join(self.lines(since, stream))

    @property
    def stderr(self) -> str:
        return self.output(stream="stderr")

    @property
    def stdout(self) -> str:
        return self.output(stream="stdout")

    def mark(self) -> int:
        """A position in the output; pass it as `since` to look only at what follows."""
        with self._cond:
            return len(self._lines)

    def wait_for(self, pattern, since: int = 0, timeout: float = 5.0, stream: Optional[str] = None):
        """Waits for a line matching `pattern` (regex or compiled); returns the match."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for s, text in self._lines[since:]:
                    if stream is not None and s != stream:
                        continue
                    m = rx.search(text)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no output line matched {rx.pattern!r} within {timeout}s; output:\n"
                        + self.tail(since)
                    )
                if self.proc.poll() is not None and all(not t.is_alive() for t in self._readers):
                    raise AssertionError(
                        f"server exited with {self.proc.returncode} before a line matched "
                        f"{rx.pattern!r}; output:\n" + self.tail(since)
                    )
                self._cond.wait(min(remaining, 0.1))

    def tail(self, since: int = 0, n: int = 60) -> str:
        lines = self.lines(since)
        return "".join(lines[-n:])

    # -- lifecycle ---------------------------------------------------------
    def wait_running(self, timeout: float = STARTUP_TIMEOUT) -> "CasgiProcess":
        m = self.wait_for(RUNNING_RE, timeout=timeout)
        self.where = m.group("where")
        hm = HTTP_RUNNING_RE.search(m.string)
        if hm:
            self.host = hm.group("host")
            self.port = int(hm.group("port"))
        return self

    def wait_port(self, host: str, port: int, timeout: float = STARTUP_TIMEOUT) -> "CasgiProcess":
        """Readiness by connecting (for configurations that do not log the running line)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerStartError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                self.host, self.port = host, port
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerStartError(f"server not accepting on {host}:{port}:\n{self.tail()}")
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """Waits for exit (fails the test if it does not come) and for all output."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit within {timeout}s; output:\n{self.tail()}")
        for t in self._readers:
            t.join(5)
        return rc

    def stop(self, sig: int = SIGINT, timeout: float = 10.0) -> int:
        self.signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """Terminates for good (finaliser): SIGTERM, then SIGKILL after a grace period."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(SIGTERM)
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._readers:
            t.join(2)

    def crash_report(self, since: int = 0) -> Optional[str]:
        """A description when the process died of a fatal signal or a sanitizer
        reported an error; None otherwise."""
        rc = self.proc.poll()
        out = self.output(since)
        if rc is not None and rc < 0 and -rc in CRASH_SIGNALS:
            return f"server crashed with signal {-rc}; output:\n{self.tail(since)}"
        for needle in SANITIZER_NEEDLES:
            if needle in out:
                return f"sanitizer report in server output:\n{self.tail(since, 120)}"
        return None

    def rss_kib(self) -> int:
        return read_rss_kib(self.pid)

    # -- clients -------------------------------------------------------------
    def connect(self, timeout: float = 5.0) -> "RawConn":
        return RawConn.tcp(self.host or "127.0.0.1", self.port, timeout=timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def casgi_args(app: str, *args: str, loop: Optional[str] = "asyncio", port: Optional[str] = "0",
               app_dir: Optional[Path] = APPS_DIR) -> list:
    out = [app]
    if port is not None:
        out += ["--port", port]
    if loop is not None:
        out += ["--loop", loop]
    if app_dir is not None:
        out += ["--app-dir", str(app_dir)]
    out += list(args)
    return out


# ----------------------------------------------------------------------------
# Raw HTTP client
# ----------------------------------------------------------------------------


class ProtocolError(AssertionError):
    """The server put bytes on the wire that are not valid HTTP/1.1 framing."""


class ConnectionClosed(AssertionError):
    """The connection ended before a complete response arrived."""

    def __init__(self, msg: str, partial: bytes = b""):
        super().__init__(msg)
        self.partial = partial


STATUS_LINE_RE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3}) ([^\r\n]*)$")
TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass
class Response:
    status_line: bytes
    version: str
    status: int
    reason: str
    raw_headers: list  # [(name bytes as sent, value bytes)]
    body: bytes = b""
    framing: str = "none"  # "length", "chunked", "close", "none"
    chunks: list = field(default_factory=list)  # chunk payloads when chunked
    trailers: list = field(default_factory=list)
    raw: bytes = b""  # every byte of this response as received

    @property
    def headers(self) -> list:
        """[(lower-case name str, value str)] decoded as latin-1, in order."""
        return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in self.raw_headers]

    def header(self, name: str) -> Optional[str]:
        values = self.header_all(name)
        if len(values) > 1:
            raise AssertionError(f"header {name!r} sent {len(values)} times: {values}")
        return values[0] if values else None

    def header_all(self, name: str) -> list:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def has_token(self, name: str, token: str) -> bool:
        """True when the comma-separated header `name` contains `token` (case-insensitive)."""
        for v in self.header_all(name):
            if token.lower() in [t.strip().lower() for t in v.split(",")]:
                return True
        return False

    def json(self):
        return json.loads(self.body)


class SocketClient:
    """A client over `self.sock`: a context manager that closes the socket
    (errors on close ignored)."""

    sock: socket.socket

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class RawConn(SocketClient):
    """A client socket that sends exact bytes and parses responses strictly."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.peeked = b""  # what is_open_after() saw arrive (b"" = EOF)

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float = 5.0) -> "RawConn":
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(s, timeout)

    @classmethod
    def unix(cls, path: str, timeout: float = 5.0) -> "RawConn":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        return cls(s, timeout)

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- reading -------------------------------------------------------------
    def _fill(self, timeout: Optional[float] = None) -> bool:
        """Reads more bytes into the buffer. False on EOF (or reset)."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_line(self, consumed: list) -> bytes:
        """One CRLF-terminated line (without the CRLF). A bare LF is a protocol error."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.buf[: i + 1]
                if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                    raise ProtocolError(f"line not terminated by CRLF (or bare CR inside): {line!r}")
                self.buf = self.buf[i + 1 :]
                consumed.append(line)
                return line[:-2]
            if len(self.buf) > 1 << 20:
                raise ProtocolError("line longer than 1 MiB")
            if not self._fill():
                raise ConnectionClosed(
                    f"connection closed in the middle of a line: {self.buf!r}", b"".join(consumed) + self.buf
                )

    def _read_exact(self, n: int, consumed: list) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                got = self.buf
                raise ConnectionClosed(
                    f"connection closed after {len(got)} of {n} body bytes", b"".join(consumed) + got
                )
        data, self.buf = self.buf[:n], self.buf[n:]
        consumed.append(data)
        return data

    def read_head(self) -> Response:
        consumed: list = []
        try:
            line = self._read_line(consumed)
        except ConnectionClosed as e:
            raise ConnectionClosed("connection closed before a status line" + (f": {e.partial!r}" if e.partial else ""), e.partial)
        m = STATUS_LINE_RE.match(line)
        if not m:
            raise ProtocolError(f"malformed status line {line!r}")
        headers = []
        while True:
            hl = self._read_line(consumed)
            if hl == b"":
                break
            if hl[:1] in (b" ", b"\t"):
                raise ProtocolError(f"obs-fold in response: {hl!r}")
            name, sep, value = hl.partition(b":")
            if not sep or not TOKEN_RE.match(name):
                raise ProtocolError(f"malformed header line {hl!r}")
            value = value.strip(b" \t")
            if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
                raise ProtocolError(f"control character in header value {hl!r}")
            headers.append((name, value))
        resp = Response(
            status_line=line,
            version=f"{m.group(1).decode()}.{m.group(2).decode()}",
            status=int(m.group(3)),
            reason=m.group(4).decode("latin-1"),
            raw_headers=headers,
        )
        resp.raw = b"".join(consumed)
        return resp

    def read_response(self, head: bool = False, allow_interim: bool = False) -> Response:
        """Reads one complete response. Interim (1xx) responses are returned only
        with allow_interim; otherwise they are an error (they must be asked for)."""
        resp = self.read_head()
        consumed = [resp.raw]
        if 100 <= resp.status < 200:
            if not allow_interim:
                raise ProtocolError(f"unexpected interim response {resp.status_line!r}")
            if resp.raw_headers and resp.status == 100:
                pass
            return resp
        te = resp.header_all("transfer-encoding")
        cl = resp.header_all("content-length")
        if te and cl:
            raise ProtocolError(f"response has both transfer-encoding {te} and content-length {cl}")
        if len(cl) > 1:
            raise ProtocolError(f"response has several content-length headers {cl}")
        try:
            if head or resp.status in (204, 304):
                resp.framing = "none"
            elif te:
                if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
                    raise ProtocolError(f"unexpected transfer-encoding {te}")
                resp.framing = "chunked"
                self._read_chunked(resp, consumed)
            elif cl:
                if not re.fullmatch(r"[0-9]+", cl[0]):
                    raise ProtocolError(f"malformed content-length {cl[0]!r}")
                resp.framing = "length"
                resp.body = self._read_exact(int(cl[0]), consumed)
            else:
                resp.framing = "close"
                while self._fill():
                    pass
                resp.body, self.buf = self.buf, b""
                consumed.append(resp.body)
        except ConnectionClosed as e:
            e.response = resp  # type: ignore[attr-defined]
            raise
        resp.raw = b"".join(consumed)
        return resp

    def _read_chunked(self, resp: Response, consumed: list) -> None:
        body = []
        while True:
            line = self._read_line(consumed)
            size_text = line.split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                raise ProtocolError(f"malformed chunk size line {line!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            data = self._read_exact(size, consumed)
            body.append(data)
            resp.chunks.append(data)
            if self._read_exact(2, consumed) != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
        while True:
            tl = self._read_line(consumed)
            if tl == b"":
                break
            resp.trailers.append(tl)
        resp.body = b"".join(body)

    def read_until_close(self, timeout: float = 5.0) -> bytes:
        """Everything up to EOF; fails the test if the peer keeps it open past `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s (buffered: {self.buf[:200]!r})")
            try:
                self._fill(timeout=remaining)
            except socket.timeout:
                continue
        data, self.buf = self.buf, b""
        return data

    def assert_closed(self, timeout: float = 5.0) -> None:
        """The server closes the connection and sends nothing more."""
        rest = self.read_until_close(timeout)
        assert rest == b"", f"unexpected bytes after the response: {rest[:300]!r}"

    def is_open_after(self, wait: float) -> bool:
        """True when nothing (no bytes, no EOF) arrives within `wait` seconds."""
        if self.buf or self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            self.peeked = self.sock.recv(4096, socket.MSG_PEEK)
        except OSError as exc:
            self.peeked = repr(exc).encode()
        return False

    def request(self, data: bytes, head: bool = False) -> Response:
        self.send(data)
        return self.read_response(head=head)


def req(method: str = "GET", target: str = "/", headers: Optional[list] = None, body: bytes = b"",
        version: str = "HTTP/1.1", host: Optional[str] = "t") -> bytes:
    """Builds request bytes. `headers` is a list of (name, value) str pairs or raw
    bytes lines; a content-length is added when a body is given without one."""
    lines = [f"{method} {target} {version}".encode("latin-1")]
    hdrs = list(headers or [])
    if host is not None:
        lines.append(b"Host: " + host.encode("latin-1"))
    has_len = False
    for h in hdrs:
        if isinstance(h, bytes):
            lines.append(h)
            low = h.lower()
            has_len |= low.startswith(b"content-length") or low.startswith(b"transfer-encoding")
        else:
            n, v = h
            has_len |= n.lower() in ("content-length", "transfer-encoding")
            lines.append(f"{n}: {v}".encode("latin-1"))
    if body and not has_len:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def unique(prefix: str = "m") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def seen_paths(server: CasgiProcess) -> list:
    """What the general-purpose app has been asked for ("METHOD path?query")."""
    with server.connect() as c:
        r = c.request(req("GET", "/seen"))
        assert r.status == 200, r.status_line
        return r.json()


class BackgroundLoop:
    """Runs self._run() in a daemon thread for the length of a with-block;
    _run loops until self._stop is set. `join_timeout` bounds the stop."""

    join_timeout = 15.0

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.join_timeout)


def assert_server_healthy(p: "CasgiProcess", mark: int) -> None:
    """After a test on a shared server: no crash report since `mark`, and the
    process is still alive."""
    crash = p.crash_report(mark)
    if crash:
        pytest.fail(crash)
    if not p.alive():
        pytest.fail(f"the server process died during this test (exit status {p.proc.returncode}); "
                    f"output:\n{p.tail()}")
