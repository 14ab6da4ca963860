"""The socket.io side of a worker: rooms per game, counted events, bad input contained.

`pushserver.worker` builds one `PushServer` per worker process, on `pushserver.engine.Engine`
(engine.io over websocket), which calls `_handle_eio_message` for every packet a client sends;
this class decodes it once, counts it, applies the per-connection event budget
(`pushserver.ratelimit`) and then hands it to python-socketio's own dispatch, which calls the
event handlers below. Payloads are checked by `pushserver.payloads`. Room fan-out across
workers and pods is `pushserver.fanout`'s job.

Whatever one client sends, the worst it can cause is its own disconnect: a packet that does not
decode closes that client's transport; a flood is dropped, then disconnected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import socketio
from socketio import packet

from pushserver.engine import Engine
from pushserver.fanout import RoomFanout
from pushserver.payloads import PayloadError, game_id_of, room_of
from pushserver.ratelimit import EventBudget, Verdict
from pushserver.settings import ServerSettings
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)

# Events a client may send; anything else is counted as "other" so a client cannot grow the
# label set of `socket_io_events_received_total` without bound.
CLIENT_EVENTS = frozenset({"joinByGameId", "leaveByGameId", "visibilityChange"})
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
        )
        self._settings = settings
        self._stats = stats
        self._worker = f"{settings.pod_name}/{worker}"
        self._clock = clock
        self._budgets: dict[str, EventBudget] = {}
        # Connected engine.io sessions, oldest first (dicts keep insertion order), so shedding
        # can pick the newest sockets as the seed did.
        self._arrivals: dict[str, None] = {}
        self.on("connect", self._on_connect)
        self.on("disconnect", self._on_disconnect)
        self.on("joinByGameId", self._on_join)
        self.on("leaveByGameId", self._on_leave)
        self.on("visibilityChange", self._on_visibility_change)

    # -- packets --------------------------------------------------------------------------

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        try:
            if isinstance(data, bytes):
                # Only BINARY_EVENT attachments come as bytes, and those are refused below.
                raise ValueError("binary frames are not accepted")
            pkt = self.packet_class(encoded_packet=data)
            kind = pkt.packet_type
            if kind == packet.EVENT:
                _check_event(pkt.data)
            elif kind not in (packet.CONNECT, packet.DISCONNECT, packet.ACK):
                # CONNECT_ERROR is server → client only; every event this server takes is
                # JSON, so BINARY_EVENT / BINARY_ACK are refused too.
                raise ValueError(f"unexpected packet type {kind!r}")
        except (ValueError, TypeError) as exc:
            # TypeError: python-socketio's decoder on some truncated packets.
            self._stats.client_error("malformed_packet")
            log.info("closing %s: malformed socket.io packet (%s)", eio_sid, exc)
            self.close_transport(eio_sid, "malformed_packet")
            return
        if kind == packet.CONNECT:
            await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif await self._admit(eio_sid, pkt.namespace, pkt.data[0]):
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)

    async def _admit(self, eio_sid: str, namespace: str | None, event: str) -> bool:
        self._stats.events_received[event if event in CLIENT_EVENTS else OTHER_EVENT] += 1
        budget = self._budgets.get(eio_sid)
        if budget is None:  # an event before CONNECT: python-socketio ignores it
            return True
        verdict = budget.spend(self._clock())
        if verdict is Verdict.ADMIT:
            return True
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        if verdict is Verdict.DROP:
            self._stats.client_error("rate_limited")
            # One error event per burst of drops, not one per dropped event.
            if budget.refused_in_row == 1:
                await self.tell(sid, "error", _error(event, "rate_limited", "too many events"))
            return False
        self._stats.client_error("flood")
        log.info("disconnecting %s: event flood", eio_sid)
        await self.tell(sid, "error", _error(event, "flood", "too many events; disconnected"))
        # A socket.io-level disconnect, after which the official client does not reconnect
        # (what a flooding client deserves); then the transport goes too, since a hostile
        # client would simply keep its engine.io connection open.
        await self.disconnect(sid, ignore_queue=True)
        self.close_transport(eio_sid, "flood")
        return False

    # -- connections ----------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self._stats.connected += 1
        self._stats.connect_total += 1
        s = self._settings
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        self._budgets[eio_sid] = EventBudget.full(
            s.event_rate_per_second, s.event_burst, self._clock()
        )
        self._arrivals[eio_sid] = None

    async def _on_disconnect(self, sid: str, reason: str) -> None:
        self._stats.connected -= 1
        self._stats.disconnect_total += 1
        self._stats.disconnects_by_reason[reason.replace(" ", "_")] += 1
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        self._budgets.pop(eio_sid, None)
        self._arrivals.pop(eio_sid, None)

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
        return await self._room_request(sid, "joinByGameId", payload, self.enter_room)

    async def _on_leave(self, sid: str, payload: Any = None) -> dict[str, Any]:
        return await self._room_request(sid, "leaveByGameId", payload, self.leave_room)

    async def _room_request(
        self, sid: str, event: str, payload: Any, act: Callable[[str, str], Any]
    ) -> dict[str, Any]:
        try:
            room = room_of(game_id_of(payload))
        except PayloadError as exc:
            self._stats.client_error("bad_payload")
            error = _error(event, exc.code, exc.message)
            await self.tell(sid, "error", error)
            return {"ok": False, **error}
        await act(sid, room)
        return {"ok": True, "room": room, "worker": self._worker}

    async def _on_visibility_change(self, sid: str, payload: Any = None) -> None:
        # Counted in _admit; the server has nothing to do with it.
        return None

    def _engineio_server_class(self) -> type[Engine]:
        return Engine

    async def tell(self, sid: str, event: str, data: Any) -> None:
        """Send one event to one local client, without a round trip through Redis."""
        await self.emit(event, data, to=sid, ignore_queue=True)
        self._stats.events_sent[event] += 1


def _check_event(data: Any) -> None:
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError("an EVENT packet must carry a list starting with the event name")


def _error(event: str, code: str, message: str) -> dict[str, str]:
    return {"event": event, "code": code, "message": message}
