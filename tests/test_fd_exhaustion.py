"""File-descriptor exhaustion: with every fd of the process in use the server
backs off accepting (no busy loop, no log flood), warns once per episode,
keeps serving the connections it has, and accepts again once fds are free."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from helpers import casgi_args, req

NOFILE = 64


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hold_connections(p, n: int) -> list:
    """Opens up to n connections (those past the server's fds wait in its
    backlog) and returns them, open."""
    held = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((p.host, p.port))
        except OSError:
            s.close()
            break
        held.append(s)
    return held


def test_fd_exhaustion_backs_off_warns_once_and_recovers(start_server, loop):
    args = casgi_args("basic:app", "--timeout-keep-alive", "30", "--no-access-log", loop=loop)
    p = start_server.spawn(args, cmd=["prlimit", f"--nofile={NOFILE}:{NOFILE}", sys.executable, "-m",
                                      "casgi", *args])
    p.wait_running()
    old = p.connect(timeout=5)
    assert old.request(req("GET", "/")).status == 200
    mark = p.mark()
    held = hold_connections(p, NOFILE + 40)
    try:
        p.wait_for(r"Too many open files", since=mark, timeout=5)
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
        assert cpu < 0.3, f"the server used {cpu:.0%} of a core while out of fds"
        # Already open connections are still served.
        assert old.request(req("GET", "/")).status == 200
        during = p.output(since=mark)
        assert during.count("Too many open files") == 1, during[-3000:]
        assert "out of system resource" not in during and "Traceback" not in during, during[-3000:]
        assert len(during) < 2000, f"{len(during)} bytes of log during the episode"
    finally:
        for s in held:
            s.close()
    p.wait_for(r"accepting new connections again", since=mark, timeout=5)
    with p.connect(timeout=5) as c:
        assert c.request(req("GET", "/")).status == 200
    old.close()
    # A second episode warns again.
    mark = p.mark()
    held = hold_connections(p, NOFILE + 10)
    try:
        p.wait_for(r"Too many open files", since=mark, timeout=5)
    finally:
        for s in held:
            s.close()
    p.wait_for(r"accepting new connections again", since=mark, timeout=5)
