"""Bounds on connections that still speak HTTP: a header timeout and a cap per port.

`pushserver.worker` gives uvicorn `guarded_http(...)` as its HTTP protocol on both ports. A
websocket stops costing here once it is upgraded (`pushserver.engine` counts it from then on);
until then it is one of `WorkerStats.http_connections[port]`. Without these bounds a client
could open connections that never finish a request (slowloris) and hold one file each, unseen by
every metric, until the worker ran out of files.

- A connection must send complete request headers within `header_timeout` seconds of opening
  (and of finishing a previous request): past that it gets `408 Request Timeout` and is closed.
- Beyond `max_connections` open HTTP connections on a port, a new one gets `503` at once.

Both are counted in `rejected_connections` (`header_timeout`, `http_connections_full`).

On the client port it also reads the request line of each request before uvicorn does: an
engine.io request whose session belongs to a sibling worker leaves this worker with the bytes
read so far (`pushserver.handoff`), and a connection handed to this worker starts with them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pushserver import websocket as ws
from pushserver.handoff import Handoff
from pushserver.requestline import engine_request
from pushserver.stats import WorkerStats


@dataclass(frozen=True)
class HttpGuard:
    stats: WorkerStats
    # The `port` label: "client" or "metrics".
    port: str
    header_timeout: float
    max_connections: int
    # The client port's: where requests for a sibling's sessions go.
    handoff: Handoff | None = None


_TIMEOUT = ws.http_error(408, "request headers not received in time")
_FULL = ws.http_error(503, "too many HTTP connections")
_UNAVAILABLE = ws.http_error(503, "the worker owning this session cannot take it now")
# A request line longer than this is not one a handoff looks at (uvicorn judges it).
_MAX_REQUEST_LINE = 8192


class _GuardedHttp(HttpToolsProtocol):
    guard: HttpGuard
    _counted = False
    _header_timer: asyncio.TimerHandle | None = None
    # Reading a new request's first line (client port only), to see whether it belongs to a
    # sibling worker or is a websocket upgrade for the engine.
    _peeking = False
    _peeked = b""
    _message_open = False
    # A connection handed to this worker: the bytes its first worker had read.
    handed_bytes: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if guard.stats.http_connections[guard.port] >= guard.max_connections:
            guard.stats.rejected_connections["http_connections_full"] += 1
            transport.write(_FULL)
            transport.close()
            return
        guard.stats.http_connections[guard.port] += 1
        self._counted = True
        self._peeking = guard.port == "client"
        self._arm()
        if self.handed_bytes is not None:
            data, self.handed_bytes = self.handed_bytes, None
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if not self._peeking:
            super().data_received(data)
            return
        data = self._peeked + data
        end = data.find(b"\r\n", 0, _MAX_REQUEST_LINE)
        if end < 0 and len(data) < _MAX_REQUEST_LINE:
            self._peeked = data
            return
        request = None if end < 0 else engine_request(data[:end])
        if request is None:
            self._to_uvicorn(data)
            return
        handoff = self.guard.handoff
        owner = None if handoff is None else handoff.owner_of(request)
        if owner is not None:
            self._hand_to(owner, data)
        elif request.websocket:
            # Wait for the whole handshake (the header timer runs on), then skip uvicorn's parse,
            # scope and re-serialised request (docs/benchmarks.md: accept, second pass).
            if data.find(b"\r\n\r\n", end) < 0 and len(data) <= ws.MAX_HANDSHAKE_BYTES:
                self._peeked = data
                return
            self._to_websocket(data)
        else:
            self._to_uvicorn(data)

    def _to_uvicorn(self, data: bytes) -> None:
        self._peeking, self._peeked = False, b""
        super().data_received(data)

    def _hand_to(self, owner: int, data: bytes) -> None:
        self._peeking, self._peeked = False, b""
        assert self.guard.handoff is not None
        sock = self.transport.get_extra_info("socket")
        if self.guard.handoff.send(owner, sock.fileno(), data):
            # The owner has the connection now; closing our descriptor leaves it open.
            self._uncount()
            self.transport.close()
        else:
            self.transport.write(_UNAVAILABLE)
            self.transport.close()

    def _to_websocket(self, data: bytes) -> None:
        """What uvicorn's `handle_websocket_upgrade` does, given the bytes as they came."""
        self._peeking, self._peeked = False, b""
        self._uncount()
        self.connections.discard(self)
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(data)

    def on_message_begin(self) -> None:
        self._message_open = True
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._message_open = False
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.guard.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _uncount(self) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.guard.stats.http_connections[self.guard.port] -= 1

    def _timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.guard.stats.rejected_connections["header_timeout"] += 1
            self.transport.write(_TIMEOUT)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # The next request on this keep-alive connection gets the same time.
            self._arm()
            # And may be for a sibling's session, unless the client already sent part of it.
            self._peeking = (
                self.guard.port == "client" and not self._message_open and not self.pipeline
            )

    def handle_websocket_upgrade(self) -> None:
        # From here the engine counts and times the connection.
        self._uncount()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        super().connection_lost(exc)


def guarded_http(guard: HttpGuard) -> type[HttpToolsProtocol]:
    """An HTTP protocol class for uvicorn's `http=` option, bound to `guard`."""
    return type("GuardedHttpToolsProtocol", (_GuardedHttp,), {"guard": guard})


def handed_protocol(server: Any, data: bytes) -> Any:
    """A protocol for a connection handed to this worker, as `server` (a started
    `uvicorn.Server` using `guarded_http`) would make for one it accepted."""
    config = server.config
    protocol = config.http_protocol_class(
        config=config, server_state=server.server_state, app_state=server.lifespan.state
    )
    protocol.handed_bytes = data
    return protocol
