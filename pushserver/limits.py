"""Connection limits of the host, checked loudly at start-up (seed §4: a network limit nobody
knew about capped real traffic at 120k connections while tests had reached 800k).

`pushserver.supervisor` calls `raise_open_file_limit()` (workers inherit the raised limit), then
`read_host_limits()` and logs every line of `limit_warnings(...)`. The check itself is pure.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

# Files a worker holds besides its sockets: the listeners, Redis connections, logs, libraries.
_SPARE_FILES = 64


@dataclass(frozen=True)
class HostLimits:
    open_files_soft: int
    open_files_hard: int
    somaxconn: int | None
    local_port_range: tuple[int, int] | None
    conntrack_max: int | None


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_host_limits(proc: Path = Path("/proc")) -> HostLimits:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    port_range = None
    try:
        low, high = (
            int(x) for x in (proc / "sys/net/ipv4/ip_local_port_range").read_text().split()
        )
        port_range = (low, high)
    except (OSError, ValueError):
        pass
    return HostLimits(
        open_files_soft=soft,
        open_files_hard=hard,
        somaxconn=_read_int(str(proc / "sys/net/core/somaxconn")),
        local_port_range=port_range,
        conntrack_max=_read_int(str(proc / "sys/net/netfilter/nf_conntrack_max")),
    )


def limit_warnings(
    limits: HostLimits,
    workers: int,
    max_connections: int,
    backlog: int,
    http_connections: int = 0,
) -> list[str]:
    """One sentence per limit that cannot carry `max_connections` per worker (plus up to
    `http_connections` not yet upgraded, which hold a file each too)."""
    pod = workers * max_connections
    warnings = []
    needed = max_connections + http_connections + _SPARE_FILES
    if limits.open_files_soft < needed:
        warnings.append(
            f"open-file limit {limits.open_files_soft} (hard {limits.open_files_hard}) is below "
            f"the {needed} a worker needs for --max-connections {max_connections} and "
            f"--max-http-connections {http_connections}: workers will fail to accept sockets "
            "(EMFILE) before they refuse them cleanly; raise `ulimit -n` or lower those limits"
        )
    if limits.somaxconn is not None and limits.somaxconn < backlog:
        warnings.append(
            f"net.core.somaxconn is {limits.somaxconn}, below the listen backlog {backlog}: a "
            "burst of new connections (the seed saw 4000/s per pod) overflows the accept queue "
            "and clients time out; raise net.core.somaxconn"
        )
    if limits.local_port_range is not None:
        low, high = limits.local_port_range
        ports = high - low + 1
        if ports < pod:
            warnings.append(
                f"the local port range {low}-{high} has {ports} ports, fewer than "
                f"{workers} x {max_connections} = {pod} connections: this caps any proxy or "
                "sidecar on this host that opens one upstream connection per client"
            )
    if limits.conntrack_max is not None and limits.conntrack_max < pod:
        warnings.append(
            f"net.netfilter.nf_conntrack_max is {limits.conntrack_max}, below {pod} "
            "connections: once the table is full the kernel drops new connections silently "
            "(check the nodes and every hop on the way, as the seed's hidden L3 limit showed)"
        )
    return warnings
