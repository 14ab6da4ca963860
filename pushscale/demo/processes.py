"""The demo's process handling over /proc (no psutil): who is alive, whose children, why a
program stopped, and waiting with a limit. Used by `pushscale.demo.stack`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path


def child_environment() -> dict[str, str]:
    # A PUSHSCALE_* variable meant for a real deployment (a kubeconfig, a token) must not
    # change what the demo's programs do.
    return {k: v for k, v in os.environ.items() if not k.startswith("PUSHSCALE_")}


def reason_in_log(path: Path) -> str:
    """The line of a log that says why a program stopped: its `cannot start:` or `error:`
    line, else its last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return f"no log at {path}"
    lines = [line for line in lines if line]
    for marker in ("cannot start: ", "error: "):
        for line in reversed(lines):
            if marker in line:
                return line.split(marker, 1)[1]
    return lines[-1] if lines else "it wrote nothing"


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (/proc, so no psutil needed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ours(pid: int) -> bool:
    """A recorded pid still running one of our programs (not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return alive(pid) and any(word in command for word in (b"pushs", b"adapter", b"valkey"))


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a supervisor and its workers; stopped first, so it starts no more."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
        for child in children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)


async def wait_limited(process: asyncio.subprocess.Process, timeout: float) -> int:
    """The exit code, killing the process if it takes longer than `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            return await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait()
