"""Room fan-out across workers and pods through Redis pub/sub.

`pushserver.routes` calls `RoomFanout.broadcast` for `POST /publish`; python-socketio's pub/sub
listener calls `_handle_emit` for every message another worker published. Built on
python-socketio's `AsyncRedisManager`, with two changes:

- `broadcast` publishes to Redis *before* delivering locally and raises `PublishFailed` when
  Redis did not take the message (the library logs and carries on), so a publisher learns that
  nobody got it and can retry without sending duplicates to this worker's clients;
- local delivery encodes the packet once, queues it on each recipient directly instead of
  starting a task per recipient, and counts `events_sent` once per emit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from pushserver.stats import WorkerStats

# One channel for every pushscale worker that shares the Redis server.
CHANNEL = "pushscale"


class PublishFailed(RuntimeError):
    """Redis did not take a published message; no client received it."""


class RoomFanout(socketio.AsyncRedisManager):  # type: ignore[misc]
    # Set by the library; declared for the type checker.
    connected: bool
    redis: Any

    def __init__(self, redis_url: str, stats: WorkerStats, client_name: str) -> None:
        # Named connections make every worker's subscription visible in `CLIENT LIST`, which
        # is also how `subscribed` below knows its own subscription is active.
        super().__init__(url=redis_url, channel=CHANNEL, redis_options={"client_name": client_name})
        self._stats = stats
        self.client_name = client_name

    async def subscribe(self, timeout_seconds: float) -> None:
        """Start listening now, not at the first client connection, and return once Redis
        has the subscription: a worker reports ready only when it can receive every publish."""
        # python-socketio otherwise starts the listener at the first client connection; a
        # second listener would share `self.pubsub` with the first, and the two replace each
        # other's subscription in a loop, leaking a subscribed connection on every turn.
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.initialize()
        try:
            async with asyncio.timeout(timeout_seconds):
                while not await self._subscribed():
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise PublishFailed(
                f"not subscribed to the Redis channel {self.channel!r} after {timeout_seconds} s"
            ) from None

    async def _subscribed(self) -> bool:
        if self.redis is None:  # the listener has not connected yet
            return False
        try:
            clients = await self.redis.client_list(_type="pubsub")
        except Exception:
            return False  # the listener retries the connection; so do we, until the timeout
        return any(c.get("name") == self.client_name and int(c.get("sub", 0)) > 0 for c in clients)

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
