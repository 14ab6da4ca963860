"""What /proc says about the benches' processes: CPU time, memory, children."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """utime + stime of a live process; 0 once it is gone (its time is then lost, not zeroed).

    With `reaped_children`, plus the time of the children it has waited for (short-lived
    helpers like `ss`), which the kernel adds to the parent only once they are reaped.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3 of stat(5)), so utime (14) and stime (15) sit at 11 and
    # 12, cutime (16) and cstime (17) at 13 and 14.
    used = int(fields[11]) + int(fields[12])
    if reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / CLOCK_TICKS


def user_seconds(pid: int) -> float:
    """utime alone: the process's own code, without the kernel's work on its behalf (on
    loopback a sender's writes also run the receiving side's TCP stack)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return int(fields[11]) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time every CPU spent on anything but idling and waiting for I/O, since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared by forked workers count once over all of them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pin(pid: int, cpu: int) -> None:
    """Every thread of `pid` on `cpu` (`sched_setaffinity` of a pid moves its first only)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`: the embedded Redis is the supervisor's child too."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                stack.append(child)
    return found


def meminfo_bytes(field: str) -> int:
    """A /proc/meminfo field (machine-wide, whatever the network namespace), in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0
