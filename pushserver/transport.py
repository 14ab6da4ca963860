"""The websocket guard in front of engine.io: admission, size limit, framing check, byte counts.

`pushserver.worker` wraps the socket.io ASGI app in `TransportGuard`; uvicorn calls it for every
request. For websocket requests it sits between uvicorn and engine.io and sees every frame, so it
can refuse a connection before the upgrade, close one client whose frame is oversized or not an
engine.io packet at all (engine.io would raise deep inside its read loop), and count the bytes on
the wire without touching the socket.io hot path. Plain HTTP passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pushserver.stats import WorkerStats

# Engine.io v4 packet types are the digits 0 (open) to 6 (noop); any text frame that does not
# start with one cannot be a packet. Binary frames are raw message packets and always valid.
_ENGINE_IO_TYPES = frozenset("0123456")

# RFC 6455 close codes.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


def frame_size(message: Message) -> int:
    text = message.get("text")
    if text is not None:
        # Frames are almost always ASCII JSON; encoding only when needed keeps this O(1)-ish.
        return len(text) if text.isascii() else len(text.encode())
    data = message.get("bytes")
    return len(data) if data is not None else 0


class TransportGuard:
    def __init__(
        self,
        app: ASGIApp,
        stats: WorkerStats,
        max_payload_bytes: int,
        refusal: Callable[[], str | None],
    ) -> None:
        """`refusal()` returns why a new connection must be refused now (e.g. "draining")."""
        self._app = app
        self._stats = stats
        self._max = max_payload_bytes
        self._refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self._app(scope, receive, send)
            return
        reason = self._refusal()
        if reason is not None:
            await self._refuse(reason, receive, send)
            return
        connection = _Connection(self._stats, self._max, receive, send)
        await self._app(scope, connection.receive, connection.send)

    async def _refuse(self, reason: str, receive: Receive, send: Send) -> None:
        self._stats.rejected_connections[reason] += 1
        await receive()  # websocket.connect
        body = f"connection refused: {reason}\n".encode()
        # The ASGI websocket denial response: a plain HTTP 503 before the upgrade, so a load
        # balancer or client sees an ordinary, retryable error instead of a websocket close.
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"5"),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})


class _Connection:
    """One websocket: checks what arrives, counts what leaves, and stays quiet once closed."""

    __slots__ = ("_closed", "_limit", "_receive", "_send", "_stats")

    def __init__(self, stats: WorkerStats, limit: int, receive: Receive, send: Send) -> None:
        self._stats = stats
        self._limit = limit
        self._receive = receive
        self._send = send
        self._closed = False

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            size = frame_size(message)
            self._stats.receive_bytes += size
            if size > self._limit:
                return await self._reject("payload_too_large", CLOSE_TOO_BIG)
            text = message.get("text")
            if text is not None and text[:1] not in _ENGINE_IO_TYPES:
                return await self._reject("malformed_packet", CLOSE_PROTOCOL_ERROR)
        elif kind == "websocket.disconnect" and message.get("code") == CLOSE_TOO_BIG:
            # uvicorn's own frame limit fired before the frame reached us.
            self._stats.client_error("payload_too_large")
        return message

    async def _reject(self, reason: str, code: int) -> Message:
        self._stats.client_error(reason)
        await self._send({"type": "websocket.close", "code": code, "reason": reason})
        self._closed = True
        # engine.io sees an ordinary disconnect and cleans up that one socket.
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    async def send(self, message: Message) -> None:
        if self._closed:
            # engine.io's writer may still flush or close after we closed the socket.
            return
        if message["type"] == "websocket.send":
            self._stats.transmit_bytes += frame_size(message)
        elif message["type"] == "websocket.close":
            self._closed = True
        await self._send(message)
