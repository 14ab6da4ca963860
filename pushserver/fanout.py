"""Room fan-out across workers and pods through Redis pub/sub.

`pushserver.routes` calls `RoomFanout.broadcast` for `POST /publish`; python-socketio's pub/sub
listener calls `_handle_emit` for every message another worker published. Built on
python-socketio's `AsyncRedisManager`, with three changes:

- `broadcast` publishes to Redis *before* delivering locally and raises `PublishFailed` when
  Redis did not take the message (the library logs and carries on), so a publisher learns that
  nobody got it and can retry without sending duplicates to this worker's clients;
- local delivery encodes the packet once, queues it on each recipient directly instead of
  starting a task per recipient, and counts `events_sent` once per emit;
- the listener has a connection of its own, records whether Redis has confirmed its subscription
  (`WorkerStats.redis_subscribed`, the readiness condition and a metric), closes a connection it
  gives up on, and retries within 5 s (the library doubles up to 60 s, so a worker could stay
  deaf for most of a minute after Redis came back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)

# One channel for every pushscale worker that shares the Redis server.
CHANNEL = "pushscale"
# After a failed subscription the listener retries after this, doubling up to the maximum.
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 5.0


class PublishFailed(RuntimeError):
    """Redis did not take a published message; no client received it."""


class RoomFanout(socketio.AsyncRedisManager):  # type: ignore[misc]
    # Set by the library; declared for the type checker.
    connected: bool
    redis: Any

    def __init__(self, redis_url: str, stats: WorkerStats, client_name: str) -> None:
        # Named connections make every worker's subscription visible in `CLIENT LIST`.
        super().__init__(url=redis_url, channel=CHANNEL, redis_options={"client_name": client_name})
        self._stats = stats

    async def subscribe(self, timeout_seconds: float) -> None:
        """Start listening now, not at the first client connection, and return once Redis
        has the subscription: a worker reports ready only when it can receive every publish."""
        # python-socketio otherwise starts the listener at the first client connection; a
        # second listener would double every delivery.
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.initialize()
        try:
            async with asyncio.timeout(timeout_seconds):
                while not self._stats.redis_subscribed:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise PublishFailed(
                f"not subscribed to the Redis channel {self.channel!r} after {timeout_seconds} s"
            ) from None

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        """Every pub/sub message, for python-socketio's `_listen`, through Redis outages."""
        delay = _RETRY_FIRST_SECONDS
        while True:
            redis = self._get_redis_module().Redis.from_url(self.redis_url, **self.redis_options)
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":  # Redis confirms: publishes reach us
                        self._stats.redis_subscribed = True
                        delay = _RETRY_FIRST_SECONDS
                    yield message
                raise ConnectionError("the subscription ended")
            except Exception as exc:
                # redis-py raises its own tree and OSError subclasses; any of them means the same.
                self._stats.redis_subscribed = False
                self._stats.redis_subscription_losses += 1
                log.error("not subscribed to Redis (%s); subscribing again in %.1f s", exc, delay)
            finally:
                for closing in (pubsub, redis):
                    with contextlib.suppress(Exception):
                        await closing.aclose()
            await asyncio.sleep(delay)
            delay = min(2 * delay, _RETRY_MAX_SECONDS)

    async def broadcast(self, room: str, event: str, data: Any) -> int:
        """Send `event` to every client in `room` on every worker; returns the workers reached."""
        message = {
            "method": "emit",
            "event": event,
            "data": [data],
            "binary": False,
            "namespace": "/",
            "room": room,
            "skip_sid": None,
            "callback": None,
            "host_id": self.host_id,
        }
        try:
            if not self.connected:
                self._redis_connect()
            receivers = int(await self.redis.publish(self.channel, self.json.dumps(message)))
        except Exception as exc:
            # redis-py raises its own tree and OSError subclasses; any of them means the same.
            self.connected = False
            raise PublishFailed(f"Redis did not take the message: {exc}") from exc
        await self._handle_emit(message)
        return receivers

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("callback") or message.get("binary"):
            await super()._handle_emit(message)
            return
        namespace = message.get("namespace") or "/"
        if namespace not in self.rooms:
            return
        event = message["event"]
        skip = message.get("skip_sid")
        skipped = set(skip) if isinstance(skip, list) else {skip}
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *message["data"]]
        ).encode()
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        sent = 0
        for sid, eio_sid in self.get_participants(namespace, message.get("room")):
            if sid not in skipped:
                await self.server._send_eio_packet(eio_sid, eio_pkt)
                sent += 1
        self._stats.events_sent[event] += sent
