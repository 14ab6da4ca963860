"""engine.io's HTTP long-polling transport (v4, and v3 for socket.io 2.x clients).

`pushserver.routes` mounts `Polling` at `/socket.io/` on the client port; by then
`pushserver.httpguard` has handed every request whose session belongs to a sibling worker to
that worker (`pushserver.handoff`), so the session named by a request is here or nowhere.

- `GET` without `sid`: a new session (`Engine.open`, same refusal as a websocket): the OPEN
  packet, and for v3 the socket.io CONNECT that follows it on the next poll.
- `GET` with `sid`: the packets queued for the session, at once if there are any, else as soon
  as one is queued, else a NOOP after pingInterval. A second GET while one waits is what
  engine.io calls an overlap: the session is closed (`overlapping_poll`).
- `POST` with `sid`: packets from the client, at most `--max-payload-bytes` (beyond: 413 and
  the session closed, as a too-large websocket frame closes one), decoded by `pushserver.eio`
  and handed to the engine like websocket frames, so the same event budget applies.

A polling session costs a `PollingTransport`: a list of queued packets and, while a GET waits,
one future. Once the engine closes it (drain, shed, ping timeout, refusal) its CLOSE packet
waits for the client's next GET; that GET (within `_CLOSED_KEPT_SECONDS`) gets it and the
session is gone for good. After an upgrade to a websocket (`pushserver.engine`) a GET gets
400 Bad request.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from pushserver import eio
from pushserver import websocket as ws
from pushserver.bodies import BodyTooLarge, read_capped
from pushserver.engine import SLOW_CLIENT_BYTES, Engine, Session, Transport

# Packets one POST may carry: more than the event burst would be dropped by the budget anyway.
MAX_PACKETS_PER_POST = 64
# How long a closed session's CLOSE packet waits for its client's next GET: a poll is sent
# right after the last one returned, so a live client asks within a round trip.
_CLOSED_KEPT_SECONDS = 30.0
_CONTENT_TYPE = "text/plain; charset=UTF-8"
# What an empty poll returns: engine.io's NOOP.
_NOOP = "6"


class PollingTransport:
    """What the engine writes to for a polling session: a queue, and the GET waiting on it."""

    __slots__ = ("closed", "engine", "queue", "queued_bytes", "session", "upgraded", "waiter")
    kind = "polling"
    # A poll's answer is a payload, not websocket frames: every write goes through write_frame.
    stream: asyncio.Transport | None = None
    fd = -1

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session: Session | None = None
        self.queue: list[eio.Packet] = []
        self.queued_bytes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.upgraded = False

    def write_text(self, text: str) -> None:
        self._queue(text, len(text))

    def write_frame(self, text: str, frame: bytes, size: int) -> None:
        self._queue(text, len(text))  # a poll's answer is a payload, not websocket frames

    def write_binary(self, data: bytes) -> None:
        self._queue(data, len(data))

    def _queue(self, packet: eio.Packet, size: int) -> None:
        if self.closed or self.upgraded:
            return
        self.queue.append(packet)
        self.queued_bytes += size
        self.engine.stats.transmit_bytes += size
        self._wake()
        if self.queued_bytes > SLOW_CLIENT_BYTES and self.session is not None:
            self.engine.stats.client_error("slow_client")
            self.engine.close(self.session, ws.GOING_AWAY, "slow_client")

    def close(self, code: int, reason: str) -> None:
        """The engine ended the session: the client's next GET gets engine.io's CLOSE."""
        if self.closed:
            return
        if not self.queue or self.queue[-1] != "1":
            self.queue.append("1")
        self.closed = True
        self._wake()

    def upgraded_to(self, protocol: Transport) -> None:
        """The session goes on over a websocket: what is still queued goes there."""
        self.upgraded = True
        for packet in self.take():
            if isinstance(packet, str):
                protocol.write_text(packet)
            else:
                protocol.write_binary(packet)
        self._wake()

    def take(self) -> list[eio.Packet]:
        packets, self.queue, self.queued_bytes = self.queue, [], 0
        return packets

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Polling:
    """The ASGI app for `/socket.io/` requests that are not websocket upgrades."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Closed sessions whose client has not fetched the CLOSE yet, oldest first.
        self._closed: dict[str, tuple[PollingTransport, float]] = {}
        engine.on_closed = self._remember_closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        origin = request.headers.get("origin")
        if origin is not None and self._origin_allowed(origin):
            response.headers["access-control-allow-origin"] = origin
            response.headers["access-control-allow-credentials"] = "true"
        await response(scope, receive, send)

    def _origin_allowed(self, origin: str | None) -> bool:
        allowed = self.engine.allowed_origins
        return allowed is None or origin is None or origin in allowed

    async def _answer(self, request: Request) -> Response:
        engine = self.engine
        if request.method == "OPTIONS":  # a CORS preflight
            return Response(status_code=204, headers={"access-control-allow-methods": "GET, POST"})
        try:
            handshake = eio.parse_handshake(
                dict(request.query_params), allow_eio3=engine.allow_eio3
            )
        except eio.EioRefused as exc:
            return refused(exc.refusal)
        if handshake.transport != "polling":
            return refused(eio.Refusal.BAD_REQUEST)
        if not self._origin_allowed(request.headers.get("origin")):
            return refused(eio.Refusal.FORBIDDEN, message=eio.NOT_AN_ACCEPTED_ORIGIN)
        if handshake.sid is None:
            if request.method != "GET":
                return refused(eio.Refusal.BAD_HANDSHAKE_METHOD)
            return self._open(request, handshake)
        session = engine.sessions.get(handshake.sid)
        if session is None:
            kept = self._closed.pop(handshake.sid, None)
            if kept is not None and request.method == "GET":
                return self._payload(kept[0], handshake.protocol)
            return refused(eio.Refusal.UNKNOWN_SID)
        transport = session.protocol
        if not isinstance(transport, PollingTransport) or session.version != handshake.protocol:
            return refused(eio.Refusal.BAD_REQUEST)
        if request.method == "GET":
            return await self._poll(session, transport)
        return await self._post(request, session, transport)

    def _open(self, request: Request, handshake: eio.Handshake) -> Response:
        engine = self.engine
        why = engine.refusal()
        if why is not None:
            engine.stats.rejected_connections[why] += 1
            return PlainTextResponse(
                f"connection refused: {why}", 503, headers={"retry-after": "5"}
            )
        self._forget_expired()
        transport = PollingTransport(engine)
        environ = {
            "QUERY_STRING": request.url.query,
            "REMOTE_ADDR": request.client.host if request.client else "",
        }
        transport.session = engine.open(transport, environ, handshake.protocol)
        return self._payload(transport, handshake.protocol)

    async def _poll(self, session: Session, transport: PollingTransport) -> Response:
        if transport.waiter is not None:
            self.engine.reject(session.sid, ws.POLICY_VIOLATION, "overlapping_poll")
            return refused(eio.Refusal.BAD_REQUEST)
        if not transport.queue:
            waiter = asyncio.get_running_loop().create_future()
            transport.waiter = waiter
            try:
                await asyncio.wait([waiter], timeout=self.engine.ping_interval)
            finally:
                transport.waiter = None
        if transport.closed:
            self._closed.pop(session.sid, None)  # this GET fetches the CLOSE
        return self._payload(transport, session.version, empty=_NOOP)

    async def _post(
        self, request: Request, session: Session, transport: PollingTransport
    ) -> Response:
        engine = self.engine
        limit = engine.max_payload_bytes
        try:
            body = await read_capped(request.stream(), request.headers.get("content-length"), limit)
        except BodyTooLarge:
            engine.reject(session.sid, ws.TOO_BIG, "payload_too_large")
            return refused(eio.Refusal.BAD_REQUEST, 413)
        except ClientDisconnect:
            return refused(eio.Refusal.BAD_REQUEST)
        decode = eio.decode_payload_v3 if session.version == 3 else eio.decode_payload_v4
        try:
            packets = decode(body, MAX_PACKETS_PER_POST)
        except eio.EioError as exc:
            engine.reject(session.sid, ws.PROTOCOL_ERROR, exc.cause)
            return refused(eio.Refusal.BAD_REQUEST)
        engine.stats.receive_bytes += len(body)
        for packet in packets:
            if session.closed:
                break
            if isinstance(packet, str):
                engine.received(session, packet)
            else:
                engine.received_binary(session, packet)
        return PlainTextResponse("ok", headers={"content-type": "text/html"})

    def _payload(
        self, transport: PollingTransport, version: int, empty: str | None = None
    ) -> Response:
        packets = transport.take()
        if not packets and empty is not None:
            packets = [empty]
        encode = eio.encode_payload_v3 if version == 3 else eio.encode_payload_v4
        return Response(encode(packets), headers={"content-type": _CONTENT_TYPE})

    def _remember_closed(self, session: Session) -> None:
        transport = session.protocol
        if isinstance(transport, PollingTransport) and not transport.upgraded:
            if transport.waiter is None:  # no GET is waiting to carry the CLOSE
                self._forget_expired()
                self._closed[session.sid] = (transport, time.monotonic() + _CLOSED_KEPT_SECONDS)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._closed:
            sid, (_, deadline) = next(iter(self._closed.items()))
            if deadline > now:
                return
            del self._closed[sid]


def refused(refusal: eio.Refusal, status: int = 400, message: str | None = None) -> Response:
    return Response(eio.error_body(refusal, message), status, media_type="application/json")
