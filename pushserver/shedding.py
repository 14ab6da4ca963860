"""Closing sockets on purpose, paced: the drain, rebalancing, and shed requests.

`pushserver.worker` owns one `Shedder`. It calls `drain()` on SIGTERM, runs `rebalance_forever()`
in the background, and `pushserver.routes` calls `shed()` for `POST /admin/shed`. Every close is
a transport close (`PushServer.close_transport`), so clients reconnect by themselves — to another
pod on a drain, to any worker (the kernel picks) on a shed. The timing is `pushserver.pacing`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pushserver.pacing import Pace, shed_count
from pushserver.push import PushServer
from pushserver.settings import ServerSettings
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)

# How often a worker compares its sockets with --recommended-connections.
_REBALANCE_CHECK_SECONDS = 1.0
# After the last close of a drain, how long to wait for the transports to finish closing.
_DRAIN_LINGER_SECONDS = 5.0


class Busy(RuntimeError):
    """A shed was asked for while another shed or the drain is running."""


class Shedder:
    def __init__(self, sio: PushServer, stats: WorkerStats, settings: ServerSettings) -> None:
        self._sio = sio
        self._stats = stats
        self._settings = settings
        self._shedding: asyncio.Task[None] | None = None

    @property
    def shedding(self) -> bool:
        return self._shedding is not None and not self._shedding.done()

    def shed(self, count: int, interval_seconds: float, why: str) -> int:
        """Start closing the `count` newest sockets, one every `interval_seconds`; returns how
        many will be closed (fewer if the worker holds fewer)."""
        if self._stats.draining or self.shedding:
            raise Busy("draining" if self._stats.draining else "already shedding")
        victims = self._sio.newest(count)
        pace = Pace(len(victims), time.monotonic(), interval_seconds)
        log.info(
            "shedding %d of %d sockets, one every %.1f ms (%s)",
            len(victims),
            self._stats.connected,
            interval_seconds * 1000,
            why,
        )
        self._shedding = asyncio.create_task(self._close(victims, pace, "shed"))
        return len(victims)

    async def rebalance_forever(self) -> None:
        s = self._settings
        while True:
            await asyncio.sleep(_REBALANCE_CHECK_SECONDS)
            count = shed_count(self._stats.connected, s.recommended_connections, s.shed_buffer)
            if count and not self.shedding and not self._stats.draining:
                why = f"above --recommended-connections {s.recommended_connections}"
                self.shed(count, s.shed_interval_ms / 1000, why)

    async def drain(self, why: str) -> None:
        """Refuse new sockets, close every socket evenly over `--drain-seconds`, then return
        once they are gone (or the linger time ran out)."""
        self._stats.draining = True
        if self._shedding is not None:
            self._shedding.cancel()
        victims = self._sio.newest(len(self._sio.eio.sessions))
        duration = self._settings.drain_seconds
        log.info("draining (%s): closing %d sockets over %.1f s", why, len(victims), duration)
        started = time.monotonic()
        await self._close(victims, Pace.over(len(victims), started, duration), "drain")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_LINGER_SECONDS):
                while self._stats.connected > 0:
                    await asyncio.sleep(0.05)
        log.info(
            "drained in %.1f s; %d sockets still connected",
            time.monotonic() - started,
            self._stats.connected,
        )

    async def _close(self, victims: list[str], pace: Pace, reason: str) -> None:
        closed = 0
        while closed < len(victims):
            due = pace.due_by(time.monotonic())
            while closed < due:
                if self._sio.close_transport(victims[closed], reason):
                    self._stats.shed_total += 1
                closed += 1
            if closed < len(victims):
                await asyncio.sleep(max(0.0, pace.time_of(closed) - time.monotonic()))
