"""A minimal socket.io client over websocket, one asyncio protocol object per connection.

`pushscale.loadgen` opens thousands of these in one process for `pushscale demo`, and
`bench/agents.py` tens of thousands for the push server benchmark. It speaks just enough of
RFC 6455, engine.io v4 and socket.io v4 to be a viewer: the upgrade, the namespace connect,
`joinByGameId`, heartbeats, and a clean goodbye. No task per connection; the owner hears of the
moments that matter: `connected` and `closed` (with socket.io's reason words, so the owner can
decide like socket.io-client whether to reconnect), and, if it asks, each event's arrival.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable
from typing import cast

# socket.io-client's reasons (`socket.on("disconnect", (reason) => ...)`).
TRANSPORT_CLOSE = "transport close"  # the connection went away: the client reconnects
SERVER_DISCONNECT = "io server disconnect"  # a socket.io DISCONNECT: the client stays away
CLIENT_DISCONNECT = "io client disconnect"  # the user left
PING_TIMEOUT = "ping timeout"  # no server PING in pingInterval + pingTimeout: the client reconnects
# engine.io's defaults, for a handshake that does not say.
_PING_INTERVAL_MS, _PING_TIMEOUT_MS = 25_000, 20_000
# socket.io-client's `timeout` option is 20 s; on loopback a handshake takes milliseconds.
CONNECT_TIMEOUT_SECONDS = 10.0

_OP_TEXT, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x8, 0x9, 0xA


def frame(data: str | bytes, opcode: int = _OP_TEXT) -> bytes:
    """A client frame. Clients must mask; a zero key is legal and needs no XOR."""
    payload = data.encode() if isinstance(data, str) else data
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + b"\x00\x00\x00\x00" + payload


class SocketIOClient(asyncio.Protocol):
    """One viewer: connects, joins `game`, answers heartbeats until closed.

    `on_connected(client)` fires once socket.io's CONNECT is acknowledged (when the server
    counts the socket); `on_closed(client, reason, was_connected)` fires exactly once;
    `on_event(packet, time.time())`, if given, for every socket.io EVENT packet received.
    `timeout` is socket.io-client's option of that name: how long the handshake may take.
    """

    def __init__(
        self,
        host: str,
        port: int,
        game: str,
        on_connected: Callable[[SocketIOClient], None],
        on_closed: Callable[[SocketIOClient, str, bool], None],
        on_event: Callable[[bytes, float], None] | None = None,
        timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.game = game
        self._on_connected = on_connected
        self._on_closed = on_closed
        self._on_event = on_event
        # The handshake deadline counts from now, the TCP connect included, as the client's does.
        self._deadline = time.monotonic() + timeout
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._upgraded = False
        self.connected = False
        self.finished = False
        self._timeout: asyncio.TimerHandle | None = None
        # socket.io-client's heartbeat check: a connection that stops bringing the server's
        # PINGs is dead even if no FIN or RST ever arrives (a vanished node, a lost packet).
        self._heartbeat_seconds = (_PING_INTERVAL_MS + _PING_TIMEOUT_MS) / 1000
        self._alive: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack the same.
        self._transport = cast(asyncio.Transport, transport)
        if self.finished:  # the user left while the TCP connect was in flight
            self._transport.close()
            return
        key = base64.b64encode(os.urandom(16)).decode()
        self._transport.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self._timeout = asyncio.get_running_loop().call_later(
            max(0.0, self._deadline - time.monotonic()), self.fail, "connect timeout"
        )

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self._buffer[: self._buffer.find(b"\r\n")].decode(errors="replace")
            if " 101 " not in status:
                self.fail(f"refused: {status}")
                return
            self._upgraded = True
            self._buffer = self._buffer[end + 4 :]
        while len(self._buffer) >= 2 and not self.finished:
            second = self._buffer[1]
            length, offset = second & 0x7F, 2
            if length == 126:
                if len(self._buffer) < 4:
                    return
                length, offset = struct.unpack_from("!H", self._buffer, 2)[0], 4
            elif length == 127:
                if len(self._buffer) < 10:
                    return
                length, offset = struct.unpack_from("!Q", self._buffer, 2)[0], 10
            if len(self._buffer) < offset + length:
                return
            opcode = self._buffer[0] & 0x0F
            payload = self._buffer[offset : offset + length]
            self._buffer = self._buffer[offset + length :]
            self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        assert self._transport is not None
        if opcode == _OP_CLOSE:
            # A shed or a drain: the server closes the websocket with no socket.io goodbye.
            self._finish(TRANSPORT_CLOSE)
        elif opcode == _OP_PING:
            self._transport.write(frame(payload, _OP_PONG))
        elif opcode == _OP_TEXT:
            self._packet(payload)

    def _packet(self, payload: bytes) -> None:
        assert self._transport is not None
        if payload[:1] == b"0":  # engine.io OPEN: connect to the default namespace
            self._heartbeat_seconds = _heartbeat_seconds(payload[1:])
            self._expect_ping()
            self._transport.write(frame("40"))
        elif payload.startswith(b"40"):
            self.connected = True
            if self._timeout is not None:
                self._timeout.cancel()
            join = json.dumps(["joinByGameId", {"gameId": self.game}], separators=(",", ":"))
            self._transport.write(frame("42" + join))
            self._on_connected(self)
        elif payload.startswith(b"42"):  # socket.io EVENT
            if self._on_event is not None:
                self._on_event(payload, time.time())
        elif payload[:1] == b"2":  # engine.io PING from the server
            self._expect_ping()
            self._transport.write(frame("3"))
        elif payload.startswith(b"41"):
            self._finish(SERVER_DISCONNECT)
        elif payload[:1] == b"1":  # engine.io CLOSE
            self._finish(TRANSPORT_CLOSE)

    def _expect_ping(self) -> None:
        if self._alive is not None:
            self._alive.cancel()
        self._alive = asyncio.get_running_loop().call_later(
            self._heartbeat_seconds, self._finish, PING_TIMEOUT
        )

    def fail(self, why: str) -> None:
        """Give up on this connection attempt (the owner hears `closed`)."""
        self._finish(f"{TRANSPORT_CLOSE}: {why}")

    def _finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        for timer in (self._timeout, self._alive):
            if timer is not None:
                timer.cancel()
        if self._transport is not None:
            self._transport.close()
        self._on_closed(self, reason, self.connected)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connected:
            self._finish(TRANSPORT_CLOSE)
        else:
            self.fail(str(exc or "closed before the socket.io handshake"))

    def leave(self) -> None:
        """The user goes away: socket.io DISCONNECT, a websocket close, then the TCP close."""
        if self._transport is not None and not self.finished and self._upgraded:
            self._transport.write(frame("41") + frame(struct.pack("!H", 1000), _OP_CLOSE))
        self._finish(CLIENT_DISCONNECT)


def _heartbeat_seconds(handshake: bytes) -> float:
    """pingInterval + pingTimeout of an engine.io OPEN packet, in seconds (engine.io's defaults
    for whatever the server left out or garbled)."""
    try:
        fields = json.loads(handshake)
        interval, timeout = fields.get("pingInterval"), fields.get("pingTimeout")
    except (ValueError, AttributeError):
        interval = timeout = None
    if not isinstance(interval, int) or not 0 < interval < 3_600_000:
        interval = _PING_INTERVAL_MS
    if not isinstance(timeout, int) or not 0 < timeout < 3_600_000:
        timeout = _PING_TIMEOUT_MS
    return (interval + timeout) / 1000
