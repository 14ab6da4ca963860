"""engine.io (v4, and v3 for socket.io 2.x clients), built for hundreds of thousands of idle
websockets; long-polling too.

python-socketio's `AsyncServer` runs on top of an engine.io server; `pushserver.push.PushServer`
gives it this `Engine` instead of python-engineio's. uvicorn keeps serving plain HTTP; every
websocket upgrade goes to `pushserver.wsprotocol.EngineProtocol` (from `pushserver.httpguard`,
or uvicorn's `ws` protocol factory), which speaks RFC 6455 (`pushserver.websocket`) and
engine.io directly on the socket. Long-polling requests reach `pushserver.polling` through the
client port's routes; a polling session upgrades to a websocket there (the `2probe`/`3probe`/`5`
handshake) and keeps its session (`Engine.switch_transport`). The wire formats are
`pushserver.eio`'s.

Why not python-engineio: it keeps an asyncio queue, a writer task, a heartbeat task and a
pending `wait_for` per connection, plus the whole ASGI scope and a request class of its own —
about 40 KB and four tasks per idle socket, and a wake-up per socket per heartbeat. Here an idle
socket is one protocol object and one `Session`: no task, no queue. Heartbeats run on one timer
wheel for all sockets; incoming messages are handled as they come, in a task only while one
has to wait; outgoing frames go straight to the transport, and a client that stops reading is
disconnected once its unsent backlog passes `SLOW_CLIENT_BYTES`, so one slow phone never stalls
a fan-out.

Every frame a client sends draws from its one `EventBudget` (`pushserver.ratelimit`): the
socket.io layer spends it for MESSAGE frames, this engine for the rest (pings, pongs, noops), so
no kind of frame floods for free. A session that has not connected a socket.io namespace within
`connect_timeout` seconds is closed, as socket.io's own `connectTimeout` does.

A session's transport is whatever object `Session.protocol` holds: an `EngineProtocol`, or a
`polling.PollingTransport` (a small queue and at most one waiting GET). The heartbeat, budget,
connect timeout, slow-client and close rules are the same for both. In engine.io v3 the client
pings and the server answers; a v3 session that sent no ping within pingInterval + pingTimeout
is closed at its next heartbeat slot. A session id names its worker (`eio.new_sid`), so a
polling request that lands on a sibling worker is handed to the owner (`pushserver.handoff`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any, Protocol

import engineio
from engineio import packet as eio_packet

from pushkit.logs import LogLimiter
from pushserver import eio
from pushserver import websocket as ws
from pushserver.ratelimit import EventBudget, Verdict
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)

# engine.io's defaults, which socket.io clients expect unless told otherwise.
PING_INTERVAL_SECONDS = 25
PING_TIMEOUT_SECONDS = 20
# socket.io's `connectTimeout` default: an engine.io session must join a namespace by then.
CONNECT_TIMEOUT_SECONDS = 45.0
# Unsent bytes a client may fall behind by (a burst of events it has not read yet) before it
# counts as gone; a viewer on a dead mobile link would otherwise hold memory forever.
SLOW_CLIENT_BYTES = 4 * 1024 * 1024
# engine.io packet types a client sends.
_PONG, _MESSAGE, _CLOSE, _PING, _UPGRADE, _NOOP = "3", "4", "1", "2", "5", "6"

Handler = Callable[..., Coroutine[Any, Any, Any]]


class Transport(Protocol):
    """What a session writes to: a websocket (`EngineProtocol`) or a polling queue."""

    kind: str  # "websocket" or "polling"
    # Where a fan-out writes a prebuilt websocket frame itself, with no method of ours per
    # recipient: an open websocket's transport, and `fd` its socket's file descriptor
    # (`stream_fd`). Both are cleared together from our close frame on; `fd` is -1 too where
    # bytes must go through the transport (TLS). Wherever `fd` is -1, a frame goes through
    # `write_frame` (polling, TLS, a closing websocket).
    stream: asyncio.Transport | None
    fd: int

    def write_text(self, text: str) -> None: ...

    def write_frame(self, text: str, frame: bytes, size: int) -> None:
        """Write `text`, whose websocket frame (`size` payload bytes) is already built: a
        fan-out builds it once for every recipient."""

    def write_binary(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def upgraded_to(self, protocol: Transport) -> None:
        """The session now goes on over `protocol`: hand it what this one still holds."""


def stream_fd(transport: asyncio.BaseTransport) -> int:
    """The file descriptor a fan-out may write a frame to itself, or -1. Only a plain socket's:
    a TLS transport reports its socket too, but its bytes must go through the encryption."""
    if transport.get_extra_info("sslcontext") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


class Session:
    """One engine.io session: its transport and what the engine knows about it."""

    __slots__ = (
        "awaiting_pong", "budget", "closed", "inbox", "last_ping", "processing", "protocol",
        "sid", "slot", "store", "version",
    )  # fmt: skip

    def __init__(
        self, sid: str, protocol: Transport, slot: int, budget: EventBudget, version: int = 4
    ) -> None:
        self.sid = sid
        self.protocol = protocol
        # The engine.io protocol version: 3 (the client pings) or 4 (the server pings).
        self.version = version
        # v3: when the client last pinged (or the session opened).
        self.last_ping = 0.0
        # Every frame the client sends spends from it, whatever its kind.
        self.budget = budget
        # The second of the ping interval at which this session is pinged.
        self.slot = slot
        self.awaiting_pong = False
        self.closed = False
        # Work for the socket.io layer, run in order by at most one task at a time.
        self.inbox: deque[Coroutine[Any, Any, Any]] = deque()
        self.processing = False
        self.store: dict[str, Any] = {}


class Engine:
    """The server side of engine.io that python-socketio's `AsyncServer` uses."""

    reason = engineio.Server.reason
    async_mode = "asgi"

    def __init__(
        self,
        *,
        stats: WorkerStats,
        refusal: Callable[[], str | None],
        max_http_buffer_size: int,
        cors_allowed_origins: list[str] | str | None = None,
        ping_interval: int = PING_INTERVAL_SECONDS,
        ping_timeout: int = PING_TIMEOUT_SECONDS,
        event_rate: float = 20.0,
        event_burst: int = 40,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        worker: int = 0,
        allow_eio3: bool = True,
        **_library_options: Any,
    ) -> None:
        """`refusal()` says why a new websocket must be refused now (or None); `worker` is
        this worker's index, the first character of every session id it makes. The other
        library options (logger, json, async_handlers) do not apply here."""
        self.stats = stats
        self.worker = worker
        self.allow_eio3 = allow_eio3
        self.clock = clock
        self.event_rate = event_rate
        self.event_burst = event_burst
        self.connect_timeout = connect_timeout
        # One line per cause per minute, whatever clients do.
        self.complaints = LogLimiter(log)
        self.refusal = refusal
        self.max_payload_bytes = max_http_buffer_size
        origins = cors_allowed_origins or []
        self.allowed_origins = None if "*" in origins else set(origins)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.sessions: dict[str, Session] = {}
        # Sessions that have not connected a socket.io namespace yet, with their deadlines.
        # The timeout is the same for all, so insertion order is deadline order.
        self._unconnected: dict[Session, float] = {}
        self._handlers: dict[str, Handler] = {}
        # Timer wheels, one slot per second of the ping interval: sessions to ping at that
        # second, and sessions whose pong is due by that second.
        self._to_ping: list[set[Session]] = [set() for _ in range(ping_interval)]
        self._due: list[list[Session]] = [[] for _ in range(ping_interval)]
        self._heartbeat: asyncio.Task[None] | None = None
        # Called with each session the engine closes (polling keeps a closed one for its
        # client's next GET, which gets the CLOSE packet).
        self.on_closed: Callable[[Session], None] | None = None

    # -- the interface python-socketio calls ------------------------------------------------

    def on(self, event: str, handler: Handler) -> None:
        self._handlers[event] = handler

    async def send(self, sid: str, data: str | bytes) -> None:
        session = self.sessions.get(sid)
        if session is not None:
            if isinstance(data, str):
                if session.version == 3 and data.startswith('0{"sid"'):
                    # socket.io v2's CONNECT of the default namespace carries nothing.
                    data = "0"
                session.protocol.write_text(_MESSAGE + data)
            else:
                session.protocol.write_binary(data)

    async def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        session = self.sessions.get(sid)
        if session is not None:
            encoded = pkt.encode()
            if isinstance(encoded, str):
                session.protocol.write_text(encoded)
            else:
                session.protocol.write_binary(encoded)

    def broadcast_text(self, sids: Iterable[str], text: str) -> int:
        """Write one engine.io text packet to every session in `sids`, encoded and framed
        once, with no await per recipient; returns how many sessions it was written to.

        A websocket recipient whose transport holds nothing unsent costs a dict lookup and
        one `write(2)` on its socket's file descriptor (`Transport.fd`), with no call into
        the transport: uvloop's `write` spends twice as much user CPU around the same syscall
        and asking each transport for its buffer size as much again (bench/fanout.py, ways
        `floor` and `uvloop`), and a fan-out is that per recipient. Order stays: `fd` is -1
        while the transport holds unsent bytes (`EngineProtocol.pause_writing`), and
        whatever the kernel does not take, or an error, goes to the transport's `write`,
        which buffers the rest or meets the error and closes the connection as it always
        does.

        The descriptor is the socket's for as long as `fd` is set: the protocol clears it
        with our close frame and in `connection_lost`, and uvloop and asyncio both close the
        socket only after calling `connection_lost`. So the transport's `is_closing()` is
        asked only off the direct path: when the loop itself is closing a connection on an
        error, a frame may still reach that socket until `connection_lost`, as it would have
        a moment earlier. Sessions are closed only by `close`, which takes them out of
        `sessions`. Bytes are counted once per call; a recipient whose unsent backlog passed
        `SLOW_CLIENT_BYTES` is closed after the loop."""
        payload = text.encode()
        frame = ws.frame(ws.TEXT, payload)
        whole = len(frame)
        size = len(payload)
        get = self.sessions.get
        slow_limit = SLOW_CLIENT_BYTES
        write = os.write
        written = 0  # to websocket streams directly, counted here
        sent = 0
        slow: list[Session] = []
        for sid in sids:
            session = get(sid)
            if session is None:
                continue
            sent += 1
            protocol = session.protocol
            fd = protocol.fd
            if fd < 0:
                protocol.write_frame(text, frame, size)
                continue
            try:
                taken = write(fd, frame)
            except OSError:  # full (EAGAIN) or gone: the transport's write decides
                taken = 0
            if taken == whole:
                written += 1
                continue
            stream = protocol.stream
            if stream is None or stream.is_closing():
                continue  # the loop is closing it on an error: connection_lost is on its way
            written += 1
            stream.write(frame[taken:] if taken else frame)
            if stream.get_write_buffer_size() > slow_limit:
                slow.append(session)
        self.stats.transmit_bytes += written * size
        for session in slow:
            self.stats.client_error("slow_client")
            self.close(session, ws.GOING_AWAY, "slow_client")
        return sent

    async def disconnect(self, sid: str | None = None) -> None:
        """End one session (or all) with engine.io's CLOSE packet: a goodbye, not a move."""
        if sid is None:
            sessions = list(self.sessions.values())
        else:
            sessions = [self.sessions[sid]] if sid in self.sessions else []
        for session in sessions:
            session.protocol.write_text(_CLOSE)
            self.close(session, ws.NORMAL, self.reason.SERVER_DISCONNECT)

    def generate_id(self) -> str:
        return eio.new_sid(self.worker)

    def transport(self, sid: str) -> str:
        session = self.sessions.get(sid)
        return "websocket" if session is None else session.protocol.kind

    def start_background_task(
        self, target: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> asyncio.Task[Any]:
        return asyncio.ensure_future(target(*args, **kwargs))

    async def sleep(self, seconds: float = 0) -> None:
        await asyncio.sleep(seconds)

    def create_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def get_session(self, sid: str) -> dict[str, Any]:
        return self.sessions[sid].store

    async def save_session(self, sid: str, session: dict[str, Any]) -> None:
        self.sessions[sid].store = session

    async def shutdown(self) -> None:
        await self.disconnect()
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    # -- ours -------------------------------------------------------------------------------

    def start(self) -> None:
        self._heartbeat = asyncio.ensure_future(self._beat_forever())

    def close_transport(self, sid: str, reason: str) -> bool:
        """Close a client's websocket with no engine.io or socket.io goodbye, so the client
        reports `transport close` and reconnects by itself."""
        session = self.sessions.get(sid)
        if session is None or session.closed:
            return False
        self.close(session, ws.GOING_AWAY, reason)
        return True

    def open(self, protocol: Transport, environ: dict[str, str], version: int = 4) -> Session:
        sid = self.generate_id()
        now = self.clock()
        budget = EventBudget.full(self.event_rate, self.event_burst, now)
        # The slot of the second that has just been beaten, so the first PING comes a whole
        # pingInterval after the open, as engine.io's does (this second's slot may not have
        # been beaten yet: a session opened now would be pinged at once).
        slot = (self._second() - 1) % self.ping_interval
        session = Session(sid, protocol, slot, budget, version)
        session.last_ping = now
        self.sessions[sid] = session
        self.stats.engine_sessions += 1
        self.stats.sockets[(protocol.kind, str(version))] += 1
        self._unconnected[session] = now + self.connect_timeout
        upgrades = ["websocket"] if protocol.kind == "polling" else []
        protocol.write_text(
            eio.open_packet(
                version, sid, upgrades=upgrades, ping_interval_ms=self.ping_interval * 1000,
                ping_timeout_ms=self.ping_timeout * 1000, max_payload=self.max_payload_bytes,
            )
        )  # fmt: skip
        self._to_ping[session.slot].add(session)
        self.enqueue(session, self._handlers["connect"](sid, environ))
        if version == 3:
            # socket.io v2 clients never send a CONNECT for "/": the server connects them.
            self.enqueue(session, self._handlers["message"](sid, "0"))
        return session

    def switch_transport(self, session: Session, protocol: Transport) -> None:
        """The upgrade's last step: the session goes on over `protocol`."""
        old = session.protocol
        self.stats.sockets[(old.kind, str(session.version))] -= 1
        self.stats.sockets[(protocol.kind, str(session.version))] += 1
        session.protocol = protocol
        old.upgraded_to(protocol)

    def namespace_connected(self, sid: str) -> None:
        """The socket.io layer says this session joined a namespace: no connect timeout."""
        session = self.sessions.get(sid)
        if session is not None:
            self._unconnected.pop(session, None)

    def budget_of(self, sid: str) -> EventBudget | None:
        session = self.sessions.get(sid)
        return None if session is None else session.budget

    def reject(self, sid: str, code: int, cause: str) -> None:
        """Close one client's websocket for what it did: counted under `cause`, logged at most
        once per cause per minute. `cause` is our word for it, never client bytes."""
        self.stats.client_error(cause)
        self.complaints.info(cause, "closing %s: %s", sid, cause.replace("_", " "))
        session = self.sessions.get(sid)
        if session is not None:
            self.close(session, code, cause)

    def received(self, session: Session, text: str) -> None:
        kind = text[:1]
        if kind == _MESSAGE:
            self.enqueue(session, self._handlers["message"](session.sid, text[1:]))
        elif not self.control_admitted(session):
            return
        elif kind == _PONG:
            session.awaiting_pong = False
        elif kind == _CLOSE:
            self.close(session, ws.NORMAL, self.reason.CLIENT_DISCONNECT)
        elif kind == _PING:  # engine.io v3 clients ping the server themselves
            session.last_ping = self.clock()
            session.protocol.write_text(_PONG + text[1:])
        elif kind not in (_UPGRADE, _NOOP):
            self.reject(session.sid, ws.PROTOCOL_ERROR, "malformed_packet")

    def received_binary(self, session: Session, data: bytes) -> None:
        self.enqueue(session, self._handlers["message"](session.sid, data))

    def control_admitted(self, session: Session) -> bool:
        """Spend the session's budget on a frame the socket.io layer never sees."""
        verdict = session.budget.spend(self.clock())
        if verdict is Verdict.ADMIT:
            return True
        if verdict is Verdict.DROP:
            self.stats.client_error("rate_limited")
        else:
            self.reject(session.sid, ws.POLICY_VIOLATION, "flood")
        return False

    def close(self, session: Session, code: int, reason: str) -> None:
        """End a session once: the websocket closes, socket.io hears of it after the
        messages it already had."""
        if session.closed:
            return
        session.closed = True
        if self.sessions.pop(session.sid, None) is not None:
            self.stats.engine_sessions -= 1
            self.stats.sockets[(session.protocol.kind, str(session.version))] -= 1
        self._unconnected.pop(session, None)
        self._to_ping[session.slot].discard(session)
        session.protocol.close(code, reason)
        if self.on_closed is not None:
            self.on_closed(session)
        self.enqueue(session, self._handlers["disconnect"](session.sid, reason))

    def enqueue(self, session: Session, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` for the socket.io layer after whatever the session already has queued.

        Work that never waits (nearly all of it: a CONNECT, a join, a disconnect) runs to its
        end right here, with no task: a task per packet was ~8% of a new connection's CPU
        (`bench/accept.py`). Work that waits is carried on by a task, and the session's
        later work queues behind it, so a session's packets are still handled in order."""
        session.inbox.append(work)
        if session.processing:
            return
        session.processing = True
        inbox = session.inbox
        while inbox:
            work = inbox.popleft()
            try:
                waiting_on = work.send(None)
            except StopIteration:
                continue
            except Exception as exc:
                self._handler_failed(session, exc)
                continue
            rest = _resume(work, waiting_on)
            asyncio.get_running_loop().create_task(self._process(session, rest))
            return
        session.processing = False

    async def _process(self, session: Session, first: Awaitable[Any]) -> None:
        try:
            try:
                await first
            except Exception as exc:
                self._handler_failed(session, exc)
            while session.inbox:
                try:
                    await session.inbox.popleft()
                except Exception as exc:
                    self._handler_failed(session, exc)
        finally:
            session.processing = False

    def _handler_failed(self, session: Session, exc: Exception) -> None:
        # Our bug, not the client's: the socket goes (its state is in doubt), the log gets
        # one line per kind of failure per minute, not one per packet.
        cause = type(exc).__name__
        self.complaints.log(
            logging.ERROR, cause, "socket.io handler failed for %s: %r",
            session.sid, exc, exc_info=exc,
        )  # fmt: skip
        self.stats.client_error("server_error")
        self.close(session, ws.INTERNAL_ERROR, "server_error")

    # -- heartbeats -------------------------------------------------------------------------

    def _second(self) -> int:
        return int(asyncio.get_running_loop().time())

    async def _beat_forever(self) -> None:
        last = self._second()
        while True:
            await asyncio.sleep(1.0)
            now = self._second()
            # A late tick (a busy loop) still visits every second it missed.
            for second in range(last + 1, now + 1):
                self._beat(second)
            last = now

    def _expire_unconnected(self) -> None:
        now = self.clock()
        while self._unconnected:
            session, deadline = next(iter(self._unconnected.items()))
            if deadline > now:
                return
            self.reject(session.sid, ws.POLICY_VIOLATION, "connect_timeout")
            self._unconnected.pop(session, None)

    def _beat(self, second: int) -> None:
        self._expire_unconnected()
        slot = second % self.ping_interval
        for session in self._due[slot]:
            if session.awaiting_pong and not session.closed:
                self.close(session, ws.GOING_AWAY, self.reason.PING_TIMEOUT)
        pinged = []
        # v3 clients ping on their own; one silent for longer than that allows is gone.
        silent_since = self.clock() - self.ping_interval - self.ping_timeout
        for session in list(self._to_ping[slot]):
            if session.version == 3:
                if session.last_ping < silent_since:
                    self.close(session, ws.GOING_AWAY, self.reason.PING_TIMEOUT)
                continue
            pinged.append(session)
            session.awaiting_pong = True
            session.protocol.write_text(_PING)
        self._due[slot] = []
        self._due[(second + self.ping_timeout) % self.ping_interval].extend(pinged)


@types.coroutine
def _resume(work: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """The rest of a coroutine already started by hand (`Engine.enqueue`), for a task to await:
    what it waits on goes up to the task, what the task sends or throws back goes down."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            work.close()
            raise
        except BaseException as exc:  # a cancellation goes down as it came
            try:
                waiting_on = work.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = work.send(sent)
            except StopIteration as done:
                return done.value
