"""One engine.io websocket: the asyncio protocol every upgrade is handed to.

`pushserver.worker` gives uvicorn `protocol_factory(engine)` as its `ws` protocol.
`pushserver.httpguard` hands it a `/socket.io/` upgrade with the request's bytes as they came,
before uvicorn parses them; uvicorn hands it any other upgrade. From the upgrade request on,
`EngineProtocol` speaks RFC 6455 (`pushserver.websocket`) and engine.io on the socket itself and
is the session's `engine.Transport`: frames in go to `engine.Engine` (`received`,
`received_binary`, `close`), frames out are written straight to the transport. An upgrade that
names a polling session (`sid=`) runs the probe (`2probe`/`3probe`, NOOP to the waiting poll,
`5`) and then carries that session on (`Engine.switch_transport`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from pushserver import eio
from pushserver import websocket as ws
from pushserver.engine import (
    _NOOP,
    _UPGRADE,
    SLOW_CLIENT_BYTES,
    Engine,
    Session,
    Transport,
    stream_fd,
)

# How long a closing socket waits for the client's close frame (RFC 6455 §7.1.1).
CLOSE_TIMEOUT_SECONDS = 5.0
# How long an upgrading websocket may take to send `2probe` and `5`: engine.io-client sends
# both within a round trip or two; a probe left hanging would hold a socket no session counts.
PROBE_TIMEOUT_SECONDS = 10.0


def protocol_factory(engine: Engine) -> Callable[..., EngineProtocol]:
    """What uvicorn's `ws` setting takes: it builds one protocol per websocket upgrade."""
    return partial(EngineProtocol, engine=engine)


class EngineProtocol(asyncio.Protocol):
    """One websocket, from the upgrade request uvicorn passes on to the last byte."""

    __slots__ = (
        "_closing", "_handshake", "_prelude", "_probing", "_reader", "connections", "engine",
        "fd", "session", "stream", "transport",
    )  # fmt: skip
    kind = "websocket"

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: Any,
        _loop: Any = None,
        *,
        engine: Engine,
    ) -> None:
        self.engine = engine
        self.connections: set[Any] = server_state.connections
        self.transport: asyncio.Transport | None = None
        # `Transport.stream` and `fd`: the socket while frames may go to it, cleared together
        # from our close frame on and in `connection_lost`; `fd` is also -1 while the
        # transport holds bytes the kernel has not taken (`pause_writing`).
        self.stream: asyncio.Transport | None = None
        self.fd = -1
        self.session: Session | None = None
        # A polling session this websocket is the upgrade of, until the client's UPGRADE.
        self._probing: Session | None = None
        self._handshake: bytearray | None = bytearray()
        self._reader = ws.FrameReader(engine.max_payload_bytes)
        # Set once our close frame is out: we wait for the client's before closing the TCP
        # connection, or the kernel would answer unread data with a reset and the client would
        # lose what we sent last (an error event, the close frame itself).
        self._closing: asyncio.TimerHandle | None = None
        # The 101 answer, held back to go out with the OPEN packet in one write.
        self._prelude: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        stream = cast(asyncio.Transport, transport)  # a stream server's: it writes
        self.transport = self.stream = stream
        self.fd = stream_fd(stream)
        if self.fd >= 0:
            # With no high-water room, the transport calls `pause_writing` the moment it
            # holds anything unsent and `resume_writing` once all of it is gone: `fd` then
            # says whether a fan-out may write to the socket itself, with no question to the
            # transport per recipient. Our writes still go out at once, not at the end of
            # the loop's turn: a connection's writes are seldom more than one per turn.
            stream.set_write_buffer_limits(high=0)
            if stream.get_write_buffer_size():
                # Handed over (`httpguard`) with bytes unsent: the pause went to the protocol
                # before us, the resume will come to us.
                self.fd = -1

    def pause_writing(self) -> None:
        self.fd = -1

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.fd = stream_fd(self.stream)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.stream, self.fd = None, -1
        if self._closing is not None:
            self._closing.cancel()
        if self.session is not None:
            self.engine.close(self.session, 1006, self.engine.reason.TRANSPORT_CLOSE)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: say we are restarting, then go."""
        if self.session is not None:
            self.engine.close(self.session, ws.SERVICE_RESTART, "server shutting down")
        elif self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end < 0:
                if len(self._handshake) > ws.MAX_HANDSHAKE_BYTES:
                    self._http_error(431, "request headers too large")
                return
            request, rest = bytes(self._handshake[:end]), bytes(self._handshake[end + 4 :])
            self._handshake = None
            self._upgrade(request)
            if not rest or (self.session is None and self._probing is None):
                return
            data = rest
        if self._closing is not None:
            self._await_close_frame(data)
            return
        if self._probing is not None:
            self._probe(data)
            return
        session = self.session
        if session is None or session.closed:
            return
        try:
            messages = self._reader.feed(data)
        except ws.ProtocolError as exc:
            reason = "payload_too_large" if exc.code == ws.TOO_BIG else "malformed_packet"
            self.engine.stats.client_error(reason)
            self.engine.close(session, exc.code, reason)
            return
        self.data_received_messages(messages)

    def data_received_messages(self, messages: list[ws.Message]) -> None:
        session = self.session
        assert session is not None
        stats = self.engine.stats
        for message in messages:
            stats.receive_bytes += message.size
            if not self.open:  # an earlier message in this read closed the session
                return
            if message.opcode == ws.TEXT:
                self.engine.received(session, message.data)  # type: ignore[arg-type]
            elif message.opcode == ws.BINARY:
                self.engine.received_binary(session, message.data)  # type: ignore[arg-type]
            elif message.opcode == ws.PING:
                if self.engine.control_admitted(session):
                    self._write(ws.frame(ws.PONG, message.data))  # type: ignore[arg-type]
            elif message.opcode == ws.CLOSE:
                code = ws.close_code_of(message.data)  # type: ignore[arg-type]
                self.engine.close(session, code, self.engine.reason.CLIENT_DISCONNECT)
                # Our answering close frame is queued; the handshake is complete, so the TCP
                # connection goes now rather than after CLOSE_TIMEOUT_SECONDS (RFC 6455 §7.1.1:
                # the server closes first).
                if self.transport is not None:
                    self.transport.close()
                return

    @property
    def open(self) -> bool:
        return self.session is not None and not self.session.closed

    def _probe(self, data: bytes) -> None:
        """The upgrade of a polling session: `2probe` → `3probe` (and a NOOP to the waiting
        GET, so the client pauses polling), then `5`; anything else ends the websocket."""
        session = self._probing
        assert session is not None
        try:
            messages = self._reader.feed(data)
        except ws.ProtocolError as exc:
            self._probing = None
            self.close(exc.code, "malformed_packet")
            return
        for at, message in enumerate(messages):
            if session.closed or not self.engine.control_admitted(session):
                self._probing = None
                self.close(ws.GOING_AWAY, "probe_failed")
                return
            text = message.data if message.opcode == ws.TEXT else None
            if text == "2probe":
                self.write_text("3probe")
                session.protocol.write_text(_NOOP)
            elif text == _UPGRADE:
                self._probing = None
                self.engine.switch_transport(session, self)
                self.session = session
                rest = messages[at + 1 :]
                if rest:  # frames after the UPGRADE in the same read: the usual path
                    self.data_received_messages(rest)
                return
            else:
                self._probing = None
                self.engine.stats.client_error("malformed_packet")
                self.close(ws.PROTOCOL_ERROR, "malformed_packet")
                return

    def _probe_expired(self) -> None:
        if self._probing is not None:
            self._probing = None
            self.engine.stats.client_error("probe_timeout")
            self.close(ws.GOING_AWAY, "probe_timeout")

    def _upgrade(self, request: bytes) -> None:
        lines = request.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rpartition(" ")[0]
        headers = {}
        malformed = False
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            # A field name is a token: no space before the colon (RFC 9112 §5.1), no colon-less
            # lines. uvicorn's parser refused these before `httpguard` sent upgrades here.
            malformed = malformed or not colon or not name or name != name.strip()
            headers[name.lower()] = value.strip()
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        engine = self.engine
        handshake, refusal = self._handshake_of(query)
        probed = None
        if handshake is not None and handshake.sid is not None:
            probed = engine.sessions.get(handshake.sid)
            if (
                probed is None
                or probed.protocol.kind != "polling"
                or (probed.version != handshake.protocol)
            ):
                refusal = eio.Refusal.UNKNOWN_SID
        if malformed or len(lines[0].split(" ")) != 3:
            self._http_error(400, "malformed request")
        elif method != "GET" or url.path.rstrip("/") != "/socket.io":
            self._http_error(404, "not found")
        elif refusal is not None or handshake is None:
            refusal = eio.Refusal.BAD_REQUEST if refusal is None else refusal  # 0 is falsy
            self._engine_error(refusal)
        elif engine.allowed_origins is not None and headers.get("origin") not in (
            engine.allowed_origins
        ):
            self._engine_error(eio.Refusal.FORBIDDEN, eio.NOT_AN_ACCEPTED_ORIGIN)
        elif "websocket" not in _tokens(headers.get("upgrade", "")):
            # A plain GET that says transport=websocket: what the polling app answers it.
            self._engine_error(eio.Refusal.BAD_REQUEST)
        elif headers.get("sec-websocket-version") != "13" or "sec-websocket-key" not in headers:
            self._http_error(400, "not a websocket handshake")
        elif probed is None and (why := engine.refusal()) is not None:
            engine.stats.rejected_connections[why] += 1
            self._http_error(503, f"connection refused: {why}", retry_after=5)
        else:
            switching = (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + ws.accept_key(headers["sec-websocket-key"]).encode()
                + b"\r\n\r\n"
            )
            if probed is not None:
                self._write(switching)
                self._probing = probed
                loop = asyncio.get_running_loop()
                loop.call_later(PROBE_TIMEOUT_SECONDS, self._probe_expired)
                return
            peer = self.transport.get_extra_info("peername") if self.transport else None
            environ = {"QUERY_STRING": url.query, "REMOTE_ADDR": peer[0] if peer else ""}
            # One write, one syscall, for the 101 and the OPEN packet `open` writes first.
            self._prelude = switching
            self.session = engine.open(self, environ, handshake.protocol)
            if self._prelude is not None:  # nothing was written: the 101 goes alone
                self._prelude = None
                self._write(switching)

    def _handshake_of(
        self, query: dict[str, str]
    ) -> tuple[eio.Handshake | None, eio.Refusal | None]:
        try:
            handshake = eio.parse_handshake(query, allow_eio3=self.engine.allow_eio3)
        except eio.EioRefused as exc:
            return None, exc.refusal
        if handshake.transport != "websocket":
            return None, eio.Refusal.BAD_REQUEST
        return handshake, None

    def _engine_error(self, refusal: eio.Refusal, message: str | None = None) -> None:
        self._http_error(400, eio.error_body(refusal, message), "application/json")

    def _http_error(
        self,
        status: int,
        body: str,
        content_type: str = "text/plain; charset=utf-8",
        retry_after: int | None = None,
    ) -> None:
        self._write(ws.http_error(status, body, content_type, retry_after))
        if self.transport is not None:
            self.transport.close()

    def _writable(self) -> bool:
        # Nothing may follow our close frame (RFC 6455 §5.5.1).
        transport = self.transport
        return transport is not None and not transport.is_closing() and self._closing is None

    def _write(self, data: bytes) -> None:
        if self._writable():
            self.transport.write(data)  # type: ignore[union-attr]

    def write_text(self, text: str) -> None:
        payload = text.encode()
        frame = ws.frame(ws.TEXT, payload)
        if self._prelude is not None:
            frame, self._prelude = self._prelude + frame, None
        self.write_frame(text, frame, len(payload))

    def write_frame(self, text: str, frame: bytes, size: int) -> None:
        if not self._writable():
            return
        transport = self.transport
        assert transport is not None
        transport.write(frame)
        self.engine.stats.transmit_bytes += size
        if transport.get_write_buffer_size() > SLOW_CLIENT_BYTES and self.session is not None:
            self.engine.stats.client_error("slow_client")
            self.engine.close(self.session, ws.GOING_AWAY, "slow_client")

    def write_binary(self, data: bytes) -> None:
        if self._writable():
            self.transport.write(ws.frame(ws.BINARY, data))  # type: ignore[union-attr]
            self.engine.stats.transmit_bytes += len(data)

    def upgraded_to(self, protocol: Transport) -> None:
        """A websocket is the last transport of a session: never upgraded from."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake: our close frame now, the TCP close once the client
        answers with its own, or after `CLOSE_TIMEOUT_SECONDS`."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._closing is not None:
            return
        # Nothing may follow the close frame (RFC 6455 §5.5.1): no fan-out writes either.
        self.stream, self.fd = None, -1
        if code == 1006:  # the connection is already gone; there is nobody to tell
            transport.close()
            return
        transport.write(ws.close_frame(code))
        self._closing = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT_SECONDS, transport.close
        )

    def _await_close_frame(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except ws.ProtocolError:
            messages = [ws.Message(ws.CLOSE, b"", 0)]
        if any(message.opcode == ws.CLOSE for message in messages) and self.transport:
            self.transport.close()


def _tokens(value: str) -> list[str]:
    """A comma-separated header's tokens, lower-cased (`Upgrade: websocket`)."""
    return [token.strip().lower() for token in value.split(",")]
