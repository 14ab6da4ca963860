"""Handing a client's TCP connection to the sibling worker that owns its engine.io session.

The workers of a pod share the client port (`SO_REUSEPORT`), so the kernel spreads each new
connection over them at random; a long-polling session is many HTTP requests, often on new
connections, and would land on the wrong worker three times in four with four workers. A session
id's first character names its owner (`eio.new_sid`). `pushserver.httpguard` reads each request
line before uvicorn parses it; when it names a session of another worker, `Handoff.send` passes
the connection's file descriptor, with the bytes already read, to that worker over a unix
`SOCK_SEQPACKET` pair (`SCM_RIGHTS`), and closes its own copy of the descriptor. The owner
(`Handoff` reading its own end) serves the connection as if it had accepted it: uvicorn's
protocol is made for it and fed the bytes first. Nothing is proxied; after the handoff the
sender holds nothing of the connection.

The supervisor makes one pair per worker slot, once, for its whole life (`channels`), and
gives each worker the receiving end of its own and the sending ends of all others; a restarted
worker gets the same ends back, and a connection handed to a worker that is restarting waits in
the pair's buffer (its sessions are gone with the old process: "Session ID unknown").

A sid that names no running worker index (beyond `--workers`) is not handed anywhere: the worker
that got it answers "Session ID unknown" itself. Outcomes are `pushscale_handoffs_total{result}`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from pushkit.logs import LogLimiter
from pushserver import eio
from pushserver.requestline import EngineRequest, engine_request
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)
_complaints = LogLimiter(log)

# What a handed-off connection may carry along: its request line and headers (uvicorn's limit
# is far below this) and the start of a polling POST body.
MAX_HANDOFF_BYTES = 64 * 1024


def channels(workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """One (receiving end, sending end) pair per worker slot, made by the supervisor."""
    return [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(workers)]


def owner_of_request(line: bytes, me: int, workers: int) -> int | None:
    """The sibling worker that must serve this request line (`GET /socket.io/?…sid=… HTTP/1.1`),
    or None if this one serves it (not engine.io, no sid, ours, or naming no worker)."""
    request = engine_request(line)
    return None if request is None else owner_of_session(request.sid, me, workers)


def owner_of_session(sid: str | None, me: int, workers: int) -> int | None:
    """The sibling worker that owns session `sid`, or None if it is this one's or nobody's."""
    owner = None if sid is None else eio.owner_of(sid)
    if owner is None or owner == me or owner >= workers:
        return None
    return owner


class Handoff:
    """One worker's ends: `channels[i]` sends to worker i; `channels[me]` is where it receives."""

    def __init__(self, me: int, ends: list[socket.socket], stats: WorkerStats) -> None:
        self.me = me
        self.ends = ends
        self.workers = len(ends)
        self.stats = stats
        # Set by the worker once uvicorn serves: takes a handed connection and its bytes.
        self.serve: Callable[[socket.socket, bytes], None] | None = None
        for end in ends:
            end.setblocking(False)

    def owner_of(self, request: EngineRequest) -> int | None:
        return owner_of_session(request.sid, self.me, self.workers)

    def send(self, owner: int, fd: int, data: bytes) -> bool:
        """Pass the connection `fd` and the bytes read from it to `owner`; False if it could
        not go (the owner's buffer is full, or the bytes are too many)."""
        if len(data) > MAX_HANDOFF_BYTES:
            self.stats.handoffs["too_large"] += 1
            return False
        try:
            socket.send_fds(self.ends[owner], [data], [fd], socket.MSG_DONTWAIT)
        except OSError as exc:
            self.stats.handoffs["failed"] += 1
            _complaints.warning("send", "handing a connection to worker %d failed: %s", owner, exc)
            return False
        self.stats.handoffs["ok"] += 1
        return True

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.ends[self.me].fileno(), self._receive)

    def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.ends[self.me].fileno())

    def _receive(self) -> None:
        end = self.ends[self.me]
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(
                    end, MAX_HANDOFF_BYTES, 1, socket.MSG_DONTWAIT
                )
            except (BlockingIOError, InterruptedError):
                return
            if not data and not fds:
                # Every sender's end is closed (the supervisor died and the siblings have
                # exited): nothing more can come, and the end stays readable for ever, so
                # without this the loop would spin and the worker never finish its drain.
                self.stop()
                return
            connections = [socket.socket(fileno=fd) for fd in fds]
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(connections) != 1:
                # Not what a sibling sends; whatever came is closed.
                for sock in connections:
                    sock.close()
                self.stats.handoffs["malformed"] += 1
                continue
            self.stats.handoffs["received"] += 1
            sock = connections[0]
            sock.setblocking(False)
            if self.serve is None:
                sock.close()
            else:
                self.serve(sock, data)
