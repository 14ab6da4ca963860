"""A minimal, fast socket.io-over-websocket client for load generation (asyncio protocol).

The bench's variant of `pushscale.sioclient` (the demo's viewers), which also notes when each
event arrives for latency; both write frames with `pushscale.sioclient.frame`. A load generator
must not be the bottleneck: this client speaks just enough of RFC 6455,
engine.io v4 and socket.io v4 (handshake, join a game, answer heartbeats, note event arrival
times) in one small protocol object per connection, with no task per connection. Frames it
sends are masked with a zero key (legal, and no XOR needed).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import cast

from pushscale.sioclient import frame

_UPGRADE = (
    "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class SocketIOClient(asyncio.Protocol):
    def __init__(
        self,
        port: int,
        game: str,
        on_connected: Callable[[SocketIOClient], None],
        on_failed: Callable[[SocketIOClient, str], None],
        on_event: Callable[[str, float], None],
    ) -> None:
        self.port = port
        self.game = game
        self.on_connected = on_connected
        self.on_failed = on_failed
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.connected = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack the same.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_UPGRADE.format(port=self.port).encode())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.buffer[: self.buffer.find(b"\r\n")]
            if b" 101 " not in status:
                self.fail(status.decode(errors="replace"))
                return
            self.upgraded = True
            self.buffer = self.buffer[end + 4 :]
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length = struct.unpack_from("!H", self.buffer, 2)[0]
                offset = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length = struct.unpack_from("!Q", self.buffer, 2)[0]
                offset = 10
            if len(self.buffer) < offset + length:
                return
            payload = self.buffer[offset : offset + length]
            self.buffer = self.buffer[offset + length :]
            self.on_frame(first & 0x0F, payload)

    def on_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x8:
            self.transport.close()
            return
        if opcode == 0x9:
            # A pong echoes the ping's bytes exactly, or the server drops us as unresponsive.
            self.transport.write(frame(payload, 0xA))
            return
        if opcode != 0x1:
            return
        kind = payload[:1]
        if kind == b"0":  # engine.io open: connect to the default namespace
            self.transport.write(frame("40"))
        elif payload.startswith(b"40"):
            self.transport.write(frame(f'42["joinByGameId",{{"gameId":"{self.game}"}}]'))
            self.connected = True
            self.on_connected(self)
        elif kind == b"2":
            self.transport.write(frame("3"))
        elif payload.startswith(b'42["'):
            self.on_event(payload.decode(errors="replace"), time.time())

    def fail(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            self.on_failed(self, why)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected:
            self.fail(f"connection lost before socket.io connected: {exc}")
        self.closed = True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
