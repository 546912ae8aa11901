"""Helpers for the supervisor tests (--reload, --workers, the gunicorn worker).

- ``SupProc``: a ``CasgiProcess`` whose output lines carry arrival times and
  whose process tree is tracked from /proc while it runs.
- ``ProcTracker``: samples /proc/<pid>/task/*/children recursively (plus the
  worker pids named in the log) and checks, after a scenario, that no process
  of the tree is alive and none is a zombie.
- ``Sups``: the ``sups`` fixture's object: starts supervisors in a temporary
  directory holding copies of the app files, reaps everything at teardown.
- Clients: one-shot requests over raw sockets, a polling wait for a version,
  and a ``LoadClient`` that sends requests without pause from a thread.

The test process is made a child subreaper while a supervisor test runs: the
machine's pid 1 does not reap orphans, so without it a worker orphaned by a
SIGKILLed supervisor would stay a zombie of pid 1 whatever casgi does. A
zombie whose parent is the test process therefore means "orphaned"; it is
reaped here and is a failure unless the scenario killed the supervisor.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Iterable, Optional


from helpers import APPS_DIR, BackgroundLoop, CasgiProcess, ConnectionClosed, RawConn, clean_env, req

STARTED_RE = re.compile(r"Started server process \[(\d+)\]")
GUNICORN_BOOT_RE = re.compile(r"Booting worker with pid: (\d+)")
DIED_RE = re.compile(r"Child process \[(\d+)\] died \(([^)]*)\)")
WAITING_RE = re.compile(r"Waiting for file changes before restarting")
RELOADING_RE = re.compile(r"Detected changes in (.*)\. Reloading\.\.\.")

# Short bounds everywhere: these tests must stay fast.
RELOAD_OPTS = ["--reload", "--reload-delay", "0.05", "--timeout-graceful-shutdown", "2"]
WORKER_OPTS = ["--timeout-graceful-shutdown", "2", "--timeout-worker-healthcheck", "3"]

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def set_subreaper(on: bool) -> None:
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


# ----------------------------------------------------------------------------
# /proc
# ----------------------------------------------------------------------------


def proc_stat(pid: int) -> Optional[tuple]:
    """(state, ppid, starttime) of `pid`, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def children(pid: int) -> set:
    out = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def descendants(pid: int) -> set:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for c in children(p):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def live_children(pid: int) -> set:
    """Direct children of `pid` that are not zombies."""
    out = set()
    for c in children(pid):
        st = proc_stat(c)
        if st and st[0] != "Z":
            out.add(c)
    return out


class ProcTracker:
    """Every process of one tree: the root, its descendants seen by sampling
    /proc, and the pids named by worker start lines in the root's output."""

    def __init__(self, root: int, out: Optional[CasgiProcess] = None,
                 patterns: Iterable = (STARTED_RE, GUNICORN_BOOT_RE)):
        self.root = root
        self.out = out
        self.patterns = list(patterns)
        self.pids: dict = {}  # pid -> starttime (None when never seen in /proc)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seen_lines = 0
        self._add(root)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _add(self, pid: int) -> None:
        with self._lock:
            if pid in self.pids and self.pids[pid] is not None:
                return
        st = proc_stat(pid)
        with self._lock:
            if self.pids.get(pid) is None:
                self.pids[pid] = st[2] if st else None

    def sample(self) -> None:
        if proc_stat(self.root) is not None:
            for p in descendants(self.root):
                self._add(p)
        if self.out is not None:
            lines = self.out.lines(self._seen_lines)
            self._seen_lines += len(lines)
            for line in lines:
                for rx in self.patterns:
                    m = rx.search(line)
                    if m:
                        self._add(int(m.group(1)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sample()

    def known(self) -> dict:
        with self._lock:
            return dict(self.pids)

    def state(self, pid: int) -> Optional[tuple]:
        """(state, ppid) of a tracked pid while it is the same process, else None."""
        st = proc_stat(pid)
        start = self.known().get(pid)
        if st is None or (start is not None and st[2] != start):
            return None
        return st[0], st[1]

    def alive(self, pid: int) -> bool:
        s = self.state(pid)
        return s is not None and s[0] != "Z"

    def standby(self, pid: int) -> bool:
        """A --reload standby: exec'd with CASGI_WORKER=<ctl>:<alive>:S (its
        initial environment, which /proc keeps) and not serving yet."""
        if self.out is not None and any(
                int(m.group(1)) == pid for rx in self.patterns for line in self.out.lines()
                for m in [rx.search(line)] if m):
            return False
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            return False
        return any(e.startswith(b"CASGI_WORKER=") and e.endswith(b":S") for e in env)

    def standbys(self) -> set:
        return {p for p in self.known() if p != self.root and self.alive(p) and self.standby(p)}

    def workers(self) -> set:
        """Tracked pids other than the root that are alive now, standbys not counted."""
        return {p for p in self.known() if p != self.root and self.alive(p) and not self.standby(p)}

    def assert_no_zombies(self, grace: float = 1.5) -> None:
        """While the supervisor runs: no child of it stays a zombie (unreaped)
        longer than `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            zombies = {p: self.state(p) for p in self.known() if p != self.root}
            zombies = {p: s for p, s in zombies.items() if s is not None and s[0] == "Z"}
            if not zombies:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"zombie process(es) not reaped within {grace}s: "
                    + ", ".join(f"[{p}] parent {s[1]}" for p, s in zombies.items())
                    + (("; output:\n" + self.out.tail(n=40)) if self.out else "")
                )
            time.sleep(0.05)

    def assert_all_gone(self, timeout: float = 3.0, orphans_expected: bool = False) -> None:
        """After the root was reaped by the test: every tracked process is gone
        (not alive, not a zombie). Zombies reparented to the test process (the
        subreaper) are reaped here; they are a failure unless the scenario
        orphaned the workers on purpose (SIGKILL to the supervisor)."""
        self.stop()
        me = os.getpid()
        deadline = time.monotonic() + timeout
        orphaned = set()
        while True:
            alive, zombies = [], []
            for p in self.known():
                s = self.state(p)
                if s is None:
                    continue
                if s[0] == "Z" and s[1] == me and p != self.root:
                    try:
                        os.waitpid(p, os.WNOHANG)
                        orphaned.add(p)
                    except ChildProcessError:
                        pass
                    continue
                (zombies if s[0] == "Z" else alive).append((p, s))
            if not alive and not zombies:
                break
            if time.monotonic() > deadline:
                for p, _ in alive:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                raise AssertionError(
                    f"process(es) of the tree still there {timeout}s after the supervisor exited: "
                    + ", ".join(f"[{p}] state {s[0]} parent {s[1]}" for p, s in alive + zombies)
                    + (("; output:\n" + self.out.tail(n=40)) if self.out else "")
                )
            time.sleep(0.05)
        if orphaned and not orphans_expected:
            raise AssertionError(
                f"worker(s) {sorted(orphaned)} were left unreaped by their parent (the supervisor or "
                "gunicorn's master): they became zombies of the test process after it exited"
                + (("; output:\n" + self.out.tail(n=40)) if self.out else "")
            )


# ----------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------


class SupProc(CasgiProcess):
    """A supervisor (or gunicorn master) process; output lines are timed and
    its process tree is tracked."""

    def __init__(self, *args, patterns: Iterable = (STARTED_RE, GUNICORN_BOOT_RE), **kwargs):
        self._times: list = []
        super().__init__(*args, **kwargs)
        self.tracker = ProcTracker(self.pid, self, patterns)
        self.checked = False

    def _reader(self, stream, name: str) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "backslashreplace")
            with self._cond:
                self._lines.append((name, text))
                self._times.append(time.monotonic())
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def timed_matches(self, pattern, since: int = 0) -> list:
        """[(arrival time, match)] of every line matching `pattern`."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        with self._cond:
            items = list(zip(self._times[since:], self._lines[since:]))
        out = []
        for t, (_, text) in items:
            m = rx.search(text)
            if m:
                out.append((t, m))
        return out

    def started_pids(self, since: int = 0) -> list:
        return [int(m.group(1)) for _, m in self.timed_matches(STARTED_RE, since)]

    def wait_started(self, n: int = 1, since: int = 0, timeout: float = 15.0) -> list:
        """Waits until `n` worker start lines appeared after `since`; returns their pids."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.started_pids(since)
            if len(pids) >= n:
                return pids
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pids)} of {n} worker start lines within {timeout}s; output:\n"
                                     + self.tail(since))
            if not self.alive():
                raise AssertionError(f"supervisor exited with {self.proc.returncode}; output:\n" + self.tail())
            time.sleep(0.02)

    def count(self, pattern, since: int = 0) -> int:
        return len(self.timed_matches(pattern, since))

    def finish(self, sig: int = signal.SIGTERM, timeout: float = 10.0, expect_rc: Optional[int] = 0,
               group: bool = False) -> int:
        """Stops the supervisor, reaps it and checks the tree is gone."""
        if group:
            os.killpg(self.pid, sig)
        else:
            self.signal(sig)
        rc = self.wait(timeout)
        self.check_gone()
        if expect_rc is not None:
            assert rc == expect_rc, f"supervisor exit status {rc}, expected {expect_rc}; output:\n{self.tail()}"
        return rc

    def check_gone(self, timeout: float = 3.0, orphans_expected: bool = False) -> None:
        assert self.proc.returncode is not None, "the supervisor was not reaped"
        assert proc_stat(self.pid) is None, f"supervisor [{self.pid}] still in /proc after it was reaped"
        self.checked = True
        self.tracker.assert_all_gone(timeout, orphans_expected=orphans_expected)


class Sups:
    """Starts supervisors in `workdir` (a temporary directory with copies of
    the app files) and reaps everything at the end of the test."""

    def __init__(self, tmp_path: Path):
        self.workdir = tmp_path / "site"
        self.workdir.mkdir()
        self.hooks = tmp_path / "hooks.log"
        self.procs: list = []

    def copy_app(self, name: str, as_name: Optional[str] = None, version: Optional[str] = None) -> Path:
        """Copies an app of tests/apps (and the module the apps share) into the workdir."""
        dst = self.workdir / (as_name or name)
        text = (APPS_DIR / name).read_text()
        if version is not None:
            text = set_version(text, version)
        dst.write_text(text)
        shared = self.workdir / "plain_lifespan.py"
        if not shared.exists():
            shared.write_text((APPS_DIR / "plain_lifespan.py").read_text())
        return dst

    def env(self, extra: Optional[dict] = None) -> dict:
        e = clean_env({"SUP_HOOKS": str(self.hooks)})
        if extra:
            e.update(extra)
        return e

    def start(self, args: list, env: Optional[dict] = None, cmd: Optional[list] = None,
              wait: bool = True, patterns: Iterable = (STARTED_RE, GUNICORN_BOOT_RE)) -> SupProc:
        p = SupProc(args, env=env if env is not None else self.env(), cwd=self.workdir, cmd=cmd,
                    patterns=patterns)
        self.procs.append(p)
        if wait:
            p.wait_running()
        return p

    def casgi(self, app: str, *args: str, env: Optional[dict] = None, wait: bool = True,
              workers_started: int = 1) -> SupProc:
        p = self.start([app, "--port", "0", *args], env=env, wait=wait)
        if wait and workers_started:
            p.wait_started(workers_started)
        return p

    def hook_lines(self) -> list:
        if not self.hooks.exists():
            return []
        return [line.split() for line in self.hooks.read_text().splitlines() if line.strip()]

    def cleanup(self) -> list:
        problems = []
        for p in self.procs:
            crash = p.crash_report()
            if crash:
                problems.append(crash)
            if p.alive():
                # The test failed before it stopped the supervisor: stop everything.
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.proc.wait(5)
            for t in p._readers:
                t.join(2)
            if not p.checked:
                try:
                    p.tracker.assert_all_gone(3.0, orphans_expected=True)
                except AssertionError as e:
                    problems.append(str(e))
            # Leave nothing behind whatever happened.
            for pid in p.tracker.known():
                if p.tracker.alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        reap_orphans()
        return problems


def reap_orphans() -> None:
    """Reaps zombies reparented to the test process (subreaper)."""
    me = os.getpid()
    for c in children(me):
        st = proc_stat(c)
        if st and st[0] == "Z":
            try:
                os.waitpid(c, os.WNOHANG)
            except ChildProcessError:
                pass


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

VERSION_RE = re.compile(r'^VERSION = "[^"]*"$', re.M)


def set_version(text: str, version: str) -> str:
    new, n = VERSION_RE.subn(f'VERSION = "{version}"', text)
    assert n == 1, "app file has no VERSION line"
    return new


def write_in_place(path: Path, text: str) -> None:
    """An editor that rewrites the file itself (truncate + write)."""
    with open(path, "w") as f:
        f.write(text)
        f.flush()


def write_by_rename(path: Path, text: str) -> None:
    """An editor's atomic save: write a temporary file, then rename it over."""
    tmp = path.with_name("." + path.name + ".tmp~")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
    os.replace(tmp, path)


def edit_version(path: Path, version: str, rename: bool = False) -> None:
    text = set_version(path.read_text(), version)
    (write_by_rename if rename else write_in_place)(path, text)


# ----------------------------------------------------------------------------
# Clients
# ----------------------------------------------------------------------------


def get(port: int, path: str = "/", timeout: float = 5.0, method: str = "GET", body: bytes = b""):
    """One request on a fresh connection (Connection: close); returns the Response."""
    with RawConn.tcp("127.0.0.1", port, timeout=timeout) as c:
        return c.request(req(method, path, headers=[("Connection", "close")], body=body))


def wait_version(port: int, version: str, timeout: float = 10.0, proc: Optional[CasgiProcess] = None,
                 lost: Optional[list] = None):
    """Polls GET / until the body starts with `version`; returns (response,
    seconds waited). A refused connection always fails (the listening socket
    never goes away), and so does any answer but a 200. A connection closed
    without a response fails too, unless a `lost` list is given: it is then
    recorded there (the tests that count lost requests are strict)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = None
    while True:
        try:
            r = get(port, timeout=max(1.0, deadline - time.monotonic()))
        except (ConnectionClosed, ConnectionResetError) as e:
            if lost is None:
                raise AssertionError(f"request failed while waiting for {version}: {type(e).__name__}: {e}"
                                     + (("; output:\n" + proc.tail(n=40)) if proc else "")) from e
            lost.append((version, f"{type(e).__name__}: {e}"))
            r = None
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"request failed while waiting for {version}: {type(e).__name__}: {e}"
                                 + (("; output:\n" + proc.tail(n=40)) if proc else "")) from e
        if r is not None:
            assert r.status == 200, f"status {r.status} while waiting for {version}: {r.body[:300]!r}"
            last = r.body.decode()
            if last.split()[0] == version:
                return r, time.monotonic() - t0
        if time.monotonic() > deadline:
            raise AssertionError(f"version {version} not served within {timeout}s (last answer {last!r})"
                                 + (("; output:\n" + proc.tail(n=40)) if proc else ""))
        time.sleep(0.01)


class LoadClient(BackgroundLoop):
    """Requests without pause from a thread; every outcome is recorded."""

    def __init__(self, port: int, path: str = "/", keepalive: bool = False, timeout: float = 10.0):
        super().__init__()
        self.port = port
        self.path = path
        self.keepalive = keepalive
        self.timeout = timeout
        self.join_timeout = timeout + 5
        self.ok = 0
        self.failures: list = []  # (time, description)
        self.pids: dict = {}  # pid -> count
        self.versions: dict = {}

    def _record(self, r) -> None:
        if r.status != 200:
            self.failures.append((time.monotonic(), f"status {r.status}"))
            return
        self.ok += 1
        pid = r.header("x-pid")
        if pid:
            self.pids[int(pid)] = self.pids.get(int(pid), 0) + 1
        v = r.body.split(b" ", 1)[0].decode()
        self.versions[v] = self.versions.get(v, 0) + 1

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if not self.keepalive:
                    self._record(get(self.port, self.path, timeout=self.timeout))
                    continue
                if conn is None:
                    conn = RawConn.tcp("127.0.0.1", self.port, timeout=self.timeout)
                r = conn.request(req("GET", self.path))
                self._record(r)
                if r.has_token("connection", "close"):
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is the result
                # With keep-alive, a connection the server closed while idle
                # (between two responses, announced or not) is not a lost
                # request only when nothing was sent on it yet; we count every
                # failure anyway and the test decides.
                self.failures.append((time.monotonic(), f"{type(e).__name__}: {e}"))
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def report(self) -> str:
        return f"{self.ok} ok, {len(self.failures)} failed: {self.failures[:10]}"


def stop_sup(p: SupProc, sig: int = signal.SIGTERM) -> None:
    if p.alive():
        p.signal(sig)




def wait_until(cond, timeout: float, what: str, interval: float = 0.02, proc: Optional[CasgiProcess] = None):
    """Polls `cond()` until it returns a true value (returned), or fails."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}"
                                 + (("; output:\n" + proc.tail(n=50)) if proc else ""))
        time.sleep(interval)
