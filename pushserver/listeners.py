"""The listening sockets a supervisor binds and hands to its workers.

`pushserver.supervisor` binds every port itself, so a port that is taken is reported once, clearly,
before any worker starts. The client port is shared the way the kernel does best: each worker gets
its own `SO_REUSEPORT` socket on the same port, and the kernel spreads new connections evenly over
the workers that are alive (a dead worker's socket closes with it, so no connection waits on it).
The supervisor also holds a reservation on the client port that never listens, so the port stays
ours while workers restart.
Each worker's metrics port is bound once for the supervisor's whole life, so a restarted worker
finds its port and nobody else can take it in between.
"""

from __future__ import annotations

import errno
import socket

# Connections queued per worker before the kernel drops SYNs; capped by net.core.somaxconn.
BACKLOG = 4096


class PortUnavailable(OSError):
    """A port the server needs cannot be bound."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _explain(exc: OSError, what: str, host: str, port: int) -> PortUnavailable:
    if exc.errno == errno.EADDRINUSE:
        reason = "is already in use (another server running? pick another port)"
    elif exc.errno == errno.EACCES:
        reason = "needs privileges this process does not have"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason = "is not an address of this machine"
    else:
        reason = f"cannot be bound: {exc.strerror}"
    return PortUnavailable(exc.errno, f"{what} {host}:{port} {reason}")


def claim_client_port(host: str, port: int) -> socket.socket:
    """Reserve the client port for the server's whole life; return the reservation.

    The reservation is bound with `SO_REUSEPORT` and never listens, so no connection queues on
    it: each worker's listening socket (`client_socket`) joins it on the same port. While it is
    held nothing else can take the port, not even an outgoing connection picking an ephemeral
    port between start-up steps or while every worker is restarting. Port 0 picks a free port.

    An explicit port is first checked with a bind without `SO_REUSEPORT`, which fails if
    anything listens there, even another pushscale server (which `SO_REUSEPORT` would let in).
    """
    if port != 0:
        probe = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR lets the probe bind over the TIME_WAIT connections a previous server
            # on this port left behind (a restarted container), but still not over a listener.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise _explain(exc, "client port", host, port) from exc
        finally:
            probe.close()
    return _reuseport_socket(host, port)


def client_socket(host: str, port: int) -> socket.socket:
    """One worker's listening socket on the shared client port."""
    sock = _reuseport_socket(host, port)
    try:
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise _explain(exc, "client port", host, port) from exc
    return sock


def _reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _explain(exc, "client port", host, port) from exc
    return sock


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def metrics_sockets(host: str, first_port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on consecutive ports from `first_port` (0: any free run)."""
    if first_port != 0:
        bound: list[socket.socket] = []
        try:
            for port in range(first_port, first_port + count):
                try:
                    bound.append(_listen(host, port))
                except OSError as exc:
                    raise _explain(exc, "metrics port", host, port) from exc
        except PortUnavailable:
            for sock in bound:
                sock.close()
            raise
        return bound
    for _ in range(50):
        first = _listen(host, 0)
        base = int(first.getsockname()[1])
        try:
            return [first, *metrics_sockets(host, base + 1, count - 1)] if count > 1 else [first]
        except PortUnavailable:
            first.close()
    raise PortUnavailable(errno.EADDRINUSE, f"found no {count} consecutive free ports on {host}")
