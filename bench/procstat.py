"""CPU time and memory of a server's whole process tree, read from /proc.

A server is the process we started plus every descendant (granian and
hypercorn run their workers as child processes). /proc/PID/stat already sums
the CPU time of all threads of a process, so summing over the tree counts
every thread of every process.
"""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def _parent_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])  # field 4: ppid
    return parents


def process_tree(root: int) -> list[int]:
    """`root` and all its living descendants."""
    parents = _parent_map()
    tree = [root]
    frontier = [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree.extend(children)
        frontier = children
    return [pid for pid in tree if pid == root or pid in parents]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds consumed so far by the processes `pids`."""
    return sum(cpu_user_system(pids))


def cpu_user_system(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds consumed so far by the processes `pids`."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])  # field 14: utime
            system += int(fields[12])  # field 15: stime
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kib(pids: list[int]) -> int:
    """Sum over `pids` of each process's peak resident set (VmHWM), KiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in pids)


def rss_kib(pids: list[int]) -> int:
    """Sum over `pids` of the current resident set (VmRSS), KiB."""
    return sum(_status_kib(pid, "VmRSS") for pid in pids)


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU `cpu` has spent not idle since boot (all processes, interrupts, steal)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]  # idle, iowait
                return (sum(values[:8]) - idle) / CLOCK_TICKS
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def tcp_passive_opens() -> int:
    """TCP connections accepted on this machine (this network namespace) since boot:
    the PassiveOpens counter of /proc/net/snmp."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Tcp:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("PassiveOpens")])
