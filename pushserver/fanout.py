"""Room fan-out across workers and pods through Redis pub/sub.

`pushserver.routes` calls `RoomFanout.broadcast` for `POST /publish`; the listening loop
(`_thread`) calls `_receive` for every message on the channel. Built on python-socketio's
`AsyncRedisManager`, with these changes:

- `broadcast` publishes to Redis *before* delivering locally and raises `PublishFailed` when
  Redis did not take the message (the library logs and carries on), so a publisher learns that
  nobody got it and can retry without sending duplicates to this worker's clients;
- rooms are indexed per socket (`pushserver.roomindex`), so a socket leaving costs O(its
  rooms) instead of a scan of every room;
- local delivery encodes the packet and its websocket frame once and writes the frame to every
  recipient's transport in one loop (`Engine.broadcast_text`), where the library starts a task
  per recipient and our engine encoded and framed it per socket; `events_sent` is counted once
  per emit;
- the listener has a connection of its own, records whether Redis has confirmed its subscription
  (`WorkerStats.redis_subscribed`, the readiness condition and a metric), closes a connection it
  gives up on, and retries within 5 s (the library doubles up to 60 s, so a worker could stay
  deaf for most of a minute after Redis came back);
- every connection (publish and listener) is made from one `RedisAccess`, so with the
  credentials and TLS of the settings, and its failures are logged as one line without the
  password (`pushserver.redis_access.describe_failure`);
- the listening loop is our own: each message goes through `pushserver.fanout_messages`'
  strict parser, so a message on the channel is never unpickled or obeyed as a command; a bad
  one is dropped, counted by reason (`WorkerStats.redis_messages_rejected`), logged at most
  once per reason per minute, and the listener goes on with the next.
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

from pushkit.logs import LogLimiter
from pushserver.fanout_messages import (
    REJECT_REASONS,
    MessageRejected,
    RoomMessage,
    encode_message,
    max_message_bytes,
    parse_message,
)
from pushserver.redis_access import RedisAccess, describe_failure
from pushserver.roomindex import IndexedRooms
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)

# One channel for every pushscale worker that shares the Redis server.
CHANNEL = "pushscale"
# After a failed subscription the listener retries after this, doubling up to the maximum.
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 5.0


class PublishFailed(RuntimeError):
    """Redis did not take a published message; no client received it."""


class RoomFanout(IndexedRooms, socketio.AsyncRedisManager):  # type: ignore[misc]
    # Set by the library; declared for the type checker.
    connected: bool
    redis: Any

    def __init__(
        self,
        access: RedisAccess,
        stats: WorkerStats,
        client_name: str,
        max_bytes: int = max_message_bytes(1024 * 1024),
    ) -> None:
        # Named connections make every worker's subscription visible in `CLIENT LIST`. The
        # library opens every client from `url` and `redis_options`, so the password and the
        # CA reach the publish path and the listener alike.
        options = {"client_name": client_name, **access.client_options()}
        super().__init__(url=access.url, channel=CHANNEL, redis_options=options)
        self._access = access
        self._stats = stats
        self._max_bytes = max_bytes
        self._limiter = LogLimiter(log)
        for reason in REJECT_REASONS:
            # Every reason exported from the start at 0, so a rate over it needs no first drop.
            stats.redis_messages_rejected[reason] += 0

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
                log.error(
                    "not subscribed to Redis (%s); subscribing again in %.1f s",
                    describe_failure(self._access, exc),
                    delay,
                )
            finally:
                for closing in (pubsub, redis):
                    with contextlib.suppress(Exception):
                        await closing.aclose()
            await asyncio.sleep(delay)
            delay = min(2 * delay, _RETRY_MAX_SECONDS)

    async def _thread(self) -> None:
        """python-socketio's listening loop, replaced: only well-formed emits are delivered."""
        channel = self.channel.encode()
        async for message in self._redis_listen_with_retries():
            if message["type"] == "message" and message["channel"] == channel:
                await self._receive(message["data"])

    async def _receive(self, raw: bytes | str) -> None:
        try:
            message = parse_message(
                raw if isinstance(raw, bytes) else raw.encode(), self._max_bytes
            )
        except MessageRejected as exc:
            self._stats.redis_messages_rejected[exc.reason] += 1
            self._limiter.warning(
                exc.reason,
                "dropped a message on the Redis channel %r: %s (%s)",
                self.channel,
                exc.reason,
                exc,
            )
            return
        if message.host_id == self.host_id:
            return  # our own publish, delivered here before it went to Redis
        try:
            await self._deliver(message)
        except Exception as exc:
            # A client gone mid-delivery must not end the listener for every other client.
            self._limiter.warning(
                "delivery", "delivering %r failed: %s", message.event, type(exc).__name__
            )

    async def broadcast(self, room: str, event: str, data: Any) -> int:
        """Send `event` to every client in `room` on every worker; returns the workers reached."""
        message = RoomMessage(room, event, data, self.host_id)
        encoded = encode_message(message)
        if len(encoded) > self._max_bytes:
            # Unreachable for a publish within --max-publish-bytes (max_message_bytes says why);
            # checked so that no worker drops what this one was told it published.
            raise PublishFailed(f"the message is {len(encoded)} bytes, above {self._max_bytes}")
        try:
            if not self.connected:
                self._redis_connect()
            receivers = int(await self.redis.publish(self.channel, encoded))
        except Exception as exc:
            # redis-py raises its own tree and OSError subclasses; any of them means the same.
            self.connected = False
            why = describe_failure(self._access, exc)
            raise PublishFailed(f"Redis did not take the message: {why}") from None
        await self._deliver(message)
        return receivers

    async def _deliver(self, message: RoomMessage) -> None:
        """Queue the event on every local client in the room, encoded once."""
        # The room's {sid: eio_sid} map (`roomindex`: a plain dict) read directly, not through
        # `get_participants`' generator of pairs; a snapshot, as a delivery may close a slow
        # recipient.
        members = self.rooms.get("/", {}).get(message.room)
        participants = list(members.values()) if members is not None else []
        if not participants:
            return  # nobody here is in the room: nothing to encode
        encoded = self.server.packet_class(
            packet.EVENT, namespace="/", data=[message.event, message.data]
        ).encode()
        text = eio_packet.Packet(eio_packet.MESSAGE, encoded).encode()
        sent = self.server.eio.broadcast_text(participants, text)
        self._stats.events_sent[message.event] += sent
