"""The socket.io side of a worker: rooms per game, counted events, bad input contained.

`pushserver.worker` builds one `PushServer` per worker process, on `pushserver.engine.Engine`
(engine.io over websocket and long-polling), which calls `_handle_eio_message` for every packet
a client sends; this class spends the session's one event budget (`pushserver.ratelimit`,
shared with the engine's control frames), decodes it with bounds (`pushserver.packets`), counts
it and calls the event handlers below itself, and answers the CONNECT of "/" and the ACKs
itself; python-socketio keeps its disconnect bookkeeping and refuses other namespaces.
Payloads are checked by `pushserver.payloads`. Room fan-out across workers and pods is
`pushserver.fanout`'s job.

Whatever one client sends, the worst it can cause is its own disconnect: a packet that does not
decode closes that client's transport with a protocol error (counted by cause, logged at most
once per cause per minute); a flood is dropped, then disconnected; a socket may join at most
`--max-rooms-per-socket` games.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from pushserver import packets
from pushserver import websocket as ws
from pushserver.engine import Engine
from pushserver.fanout import RoomFanout
from pushserver.packets import Kind
from pushserver.payloads import PayloadError, game_id_of, room_of
from pushserver.ratelimit import Verdict
from pushserver.settings import ServerSettings
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)

# The label of every event without a handler: a client cannot grow the label set of
# `socket_io_events_received_total` without bound.
OTHER_EVENT = "other"


class PushServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(
        self,
        settings: ServerSettings,
        stats: WorkerStats,
        fanout: RoomFanout,
        worker: int,
        refusal: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`refusal()` says why a new websocket must be refused right now, if it must."""
        super().__init__(
            client_manager=fanout,
            cors_allowed_origins=list(settings.cors_allowed_origins),
            # Handlers are short and never block; running them inline saves a task per event.
            async_handlers=False,
            # Our loggers: given `True`/`False`, both libraries add a handler of their own and
            # print every error twice, once unformatted.
            logger=logging.getLogger("socketio.server"),
            engineio_logger=logging.getLogger("engineio.server"),
            # Options for `Engine`, which python-socketio passes through to it.
            stats=stats,
            refusal=refusal,
            max_http_buffer_size=settings.max_payload_bytes,
            event_rate=settings.event_rate_per_second,
            event_burst=settings.event_burst,
            connect_timeout=settings.connect_timeout_seconds,
            ping_interval=settings.ping_interval_seconds,
            ping_timeout=settings.ping_timeout_seconds,
            clock=clock,
            worker=worker,
            allow_eio3=settings.allow_eio3,
        )
        self._settings = settings
        self._stats = stats
        self._worker = f"{settings.pod_name}/{worker}"
        self._clock = clock
        # Connected engine.io sessions, oldest first (dicts keep insertion order), so shedding
        # can pick the newest sockets as the seed did.
        self._arrivals: dict[str, None] = {}
        self.on("disconnect", self._on_disconnect)
        # The events a client may send; only these reach a handler.
        self._event_handlers: dict[str, Callable[[str, Any], Awaitable[Any]]] = {
            "joinByGameId": self._on_join,
            "leaveByGameId": self._on_leave,
            "visibilityChange": self._on_visibility_change,
        }

    # -- packets --------------------------------------------------------------------------

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        """Every packet a client sends: budget first, then a bounded decode, then our dispatch.

        python-socketio's own dispatch is bypassed for events on purpose: it would hand
        `42["connect",…]` or `42["disconnect",…]` to the connection handlers (corrupting the
        count), log a line per packet for events on namespaces a client never joined, and look
        up ACKs for callbacks this server never asked for.
        """
        budget = self.eio.budget_of(eio_sid)
        if budget is None:  # the session closed while this packet waited
            return
        verdict = budget.spend(self._clock())
        if verdict is Verdict.DROP and budget.refused_in_row > 1:
            # Already warned for this burst; a dropped packet is not even decoded.
            self._stats.client_error("rate_limited")
            return
        if isinstance(data, bytes):
            self.eio.reject(eio_sid, ws.PROTOCOL_ERROR, "binary_packet")
            return
        try:
            pkt = packets.decode(data)
        except packets.PacketError as exc:
            self.eio.reject(eio_sid, ws.PROTOCOL_ERROR, exc.cause)
            return
        if pkt.kind is Kind.EVENT:
            name = pkt.event
            self._stats.events_received[name if name in self._event_handlers else OTHER_EVENT] += 1
        if verdict is not Verdict.ADMIT:
            await self._refuse(eio_sid, pkt, verdict)
        elif pkt.kind is Kind.CONNECT:
            if self.manager.sid_from_eio_sid(eio_sid, pkt.namespace) is not None:
                # A second CONNECT would register a second socket for one transport.
                self.eio.reject(eio_sid, ws.POLICY_VIOLATION, "duplicate_connect")
            elif pkt.namespace == "/":
                await self._connect(eio_sid)
            else:
                # No other namespace is served: python-socketio answers CONNECT_ERROR.
                await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif pkt.kind is Kind.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif pkt.kind is Kind.ACK:
            # This server never asks a client for an acknowledgement.
            self._stats.client_error("unexpected_ack")
        else:
            await self._dispatch_event(eio_sid, pkt)

    async def _dispatch_event(self, eio_sid: str, pkt: packets.ClientPacket) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, pkt.namespace)
        if sid is None:
            self._stats.client_error("not_connected")
            return
        handler = self._event_handlers.get(pkt.event)
        if handler is None:
            return  # counted as "other"; nothing to do
        result = await handler(sid, pkt.data[1] if len(pkt.data) > 1 else None)
        if pkt.ack_id is not None:
            reply = [] if result is None else [result]
            await self.eio.send(eio_sid, packets.ack_text(pkt.namespace, pkt.ack_id, reply))

    async def _refuse(self, eio_sid: str, pkt: packets.ClientPacket, verdict: Verdict) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if verdict is Verdict.DROP:
            self._stats.client_error("rate_limited")
            # One error event per burst of drops, not one per dropped packet.
            if sid is not None:
                await self.tell(sid, "error", _error(pkt.event, "rate_limited", "too many events"))
            return
        if sid is None:
            self.eio.reject(eio_sid, ws.POLICY_VIOLATION, "flood")
            return
        await self.tell(sid, "error", _error(pkt.event, "flood", "too many events; disconnected"))
        # A socket.io-level disconnect, after which the official client does not reconnect
        # (what a flooding client deserves); then the transport goes too, since a hostile
        # client would simply keep its engine.io connection open.
        await self.disconnect(sid, ignore_queue=True)
        self.eio.reject(eio_sid, ws.GOING_AWAY, "flood")

    # -- connections ----------------------------------------------------------------------

    async def _connect(self, eio_sid: str) -> None:
        """socket.io's CONNECT of "/", done here rather than by python-socketio's
        `_handle_connect`, whose pre-connect list, handler lookup with two call signatures and
        packet object were a fifth of a new connection's Python (`bench/accept.py`). The same
        steps in its order: the socket's id and rooms, the connect bookkeeping, then the
        CONNECT answer. Nothing here refuses a socket (an overloaded worker refuses the
        upgrade), so there is no pending state; the auth payload is not read."""
        sid = self.eio.generate_id()
        self.manager.basic_enter_room(sid, "/", None, eio_sid=eio_sid)
        self.manager.basic_enter_room(sid, "/", sid, eio_sid=eio_sid)
        self._stats.connected += 1
        self._stats.connect_total += 1
        self.eio.namespace_connected(eio_sid)
        self._arrivals[eio_sid] = None
        # An id is engine.io's base64url alphabet: nothing in it for JSON to escape.
        await self.eio.send(eio_sid, f'0{{"sid":"{sid}"}}')

    async def _on_disconnect(self, sid: str, reason: str) -> None:
        self._stats.connected -= 1
        self._stats.disconnect_total += 1
        self._stats.disconnects_by_reason[reason.replace(" ", "_")] += 1
        self._arrivals.pop(self.manager.eio_sid_from_sid(sid, "/"), None)

    def newest(self, count: int) -> list[str]:
        """The engine.io ids of the `count` most recently connected clients, newest first."""
        newest: list[str] = []
        for eio_sid in reversed(self._arrivals):
            if len(newest) == count:
                break
            newest.append(eio_sid)
        return newest

    def close_transport(self, eio_sid: str, reason: str) -> bool:
        """Close one client's websocket without a socket.io DISCONNECT packet.

        The client then sees `transport close` and reconnects by itself (to another worker or
        pod), which is what draining and shedding want; `disconnect()` would send
        `io server disconnect`, after which socket.io clients stay away for good.
        """
        return bool(self.eio.close_transport(eio_sid, reason))

    # -- events ---------------------------------------------------------------------------

    async def _on_join(self, sid: str, payload: Any = None) -> dict[str, Any]:
        return await self._room_request(sid, "joinByGameId", payload, self._join)

    async def _on_leave(self, sid: str, payload: Any = None) -> dict[str, Any]:
        return await self._room_request(sid, "leaveByGameId", payload, self._leave)

    async def _room_request(
        self, sid: str, event: str, payload: Any, act: Callable[[str, str], Awaitable[None]]
    ) -> dict[str, Any]:
        try:
            room = room_of(game_id_of(payload))
            await act(sid, room)
        except PayloadError as exc:
            self._stats.client_error("bad_payload" if exc.code.startswith("bad_") else exc.code)
            error = _error(event, exc.code, exc.message)
            await self.tell(sid, "error", error)
            return {"ok": False, **error}
        return {"ok": True, "room": room, "worker": self._worker}

    def _is_in(self, sid: str, room: str) -> bool:
        members = self.manager.rooms.get("/", {}).get(room)
        return members is not None and sid in members

    async def _join(self, sid: str, room: str) -> None:
        if self._is_in(sid, room):
            return
        games = len(self.manager.get_rooms(sid, "/")) - 1  # all but its own sid room
        cap = self._settings.max_rooms_per_socket
        if games >= cap:
            raise PayloadError("too_many_rooms", f"a socket may be in at most {cap} games")
        await self.enter_room(sid, room)

    async def _leave(self, sid: str, room: str) -> None:
        if self._is_in(sid, room):
            await self.leave_room(sid, room)

    async def _on_visibility_change(self, sid: str, payload: Any = None) -> None:
        # Counted on arrival; the server has nothing to do with it.
        return None

    def _engineio_server_class(self) -> type[Engine]:
        return Engine

    async def tell(self, sid: str, event: str, data: Any) -> None:
        """Send one event to one local client, without a round trip through Redis."""
        await self.emit(event, data, to=sid, ignore_queue=True)
        self._stats.events_sent[event] += 1


def _error(event: str, code: str, message: str) -> dict[str, str]:
    return {"event": event, "code": code, "message": message}
