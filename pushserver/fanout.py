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
    connected: bool  # set by the library; declared for the type checker

    def __init__(self, redis_url: str, stats: WorkerStats) -> None:
        super().__init__(url=redis_url, channel=CHANNEL)
        self._stats = stats

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
