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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pushserver import websocket as ws
from pushserver.stats import WorkerStats


@dataclass(frozen=True)
class HttpGuard:
    stats: WorkerStats
    # The `port` label: "client" or "metrics".
    port: str
    header_timeout: float
    max_connections: int


_TIMEOUT = ws.http_error(408, "request headers not received in time")
_FULL = ws.http_error(503, "too many HTTP connections")


class _GuardedHttp(HttpToolsProtocol):
    guard: HttpGuard
    _counted = False
    _header_timer: asyncio.TimerHandle | None = None

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
        self._arm()

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
