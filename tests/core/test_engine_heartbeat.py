"""engine: the heartbeat wheel and session bookkeeping, driven second by second.

`Wire` stands in for `wsprotocol.EngineProtocol`, the socket side; the engine logic under test
is real.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pushserver.engine import Engine
from pushserver.stats import WorkerStats


class Wire:
    kind = "websocket"
    stream: asyncio.Transport | None = None  # every write goes through write_frame
    fd = -1

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    def write_text(self, text: str) -> None:
        self.sent.append(text)

    def write_frame(self, text: str, frame: bytes, size: int) -> None:
        self.sent.append(text)

    def write_binary(self, data: bytes) -> None:
        raise AssertionError("no binary here")

    def upgraded_to(self, protocol: object) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def engine_with_log() -> tuple[Engine, list[tuple[str, Any]]]:
    engine = Engine(
        stats=WorkerStats(), refusal=lambda: None, max_http_buffer_size=1000,
        ping_interval=5, ping_timeout=3,
    )  # fmt: skip
    calls: list[tuple[str, Any]] = []

    async def connect(sid: str, environ: dict[str, str]) -> None:
        calls.append(("connect", sid))

    async def message(sid: str, data: str) -> None:
        calls.append(("message", data))

    async def disconnect(sid: str, reason: str) -> None:
        calls.append(("disconnect", reason))

    for name, handler in (("connect", connect), ("message", message), ("disconnect", disconnect)):
        engine.on(name, handler)
    return engine, calls


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_open_packet_tells_the_client_the_heartbeat():
    engine, calls = engine_with_log()
    engine.start()
    wire = Wire()
    session = engine.open(wire, {})
    opening = json.loads(wire.sent[0][1:])
    assert opening == {
        "sid": session.sid, "upgrades": [], "pingInterval": 5000, "pingTimeout": 3000,
        "maxPayload": 1000,
    }  # fmt: skip
    await settle()
    assert calls == [("connect", session.sid)]
    await engine.shutdown()


async def test_a_client_that_answers_stays_and_one_that_does_not_is_closed():
    engine, calls = engine_with_log()
    alive, silent = Wire(), Wire()
    first = engine.open(alive, {})
    second = engine.open(silent, {})
    start = engine._second()
    for second_ in range(start + 1, start + 6):  # one whole ping interval: both pinged once
        engine._beat(second_)
    assert alive.sent[-1] == "2" and silent.sent[-1] == "2"
    engine.received(first, "3")  # pong
    for second_ in range(start + 6, start + 9):  # past the ping timeout
        engine._beat(second_)
    await settle()
    assert alive.closed is None
    assert silent.closed is not None and silent.closed[1] == "ping timeout"
    assert set(engine.sessions) == {first.sid}
    assert ("disconnect", "ping timeout") in calls
    assert second.closed


async def test_v3_clients_ping_the_server_and_a_silent_one_is_closed():
    engine, calls = engine_with_log()
    now = [1000.0]
    engine.clock = lambda: now[0]
    pinging, silent = Wire(), Wire()
    first = engine.open(pinging, {}, version=3)
    second = engine.open(silent, {}, version=3)
    assert "maxPayload" not in json.loads(silent.sent[0][1:])
    await settle()
    # socket.io v2 connects "/" by itself: the engine hands socket.io a CONNECT at once.
    assert calls.count(("message", "0")) == 2
    start = engine._second()
    # Past pingInterval + pingTimeout (5 + 3 s), up to the session's next heartbeat slot.
    for offset in range(1, 11):
        now[0] += 1
        engine.received(first, "2")
        engine._beat(start + offset)
    assert pinging.sent[-1] == "3", "the server answers the client's ping"
    assert "2" not in pinging.sent[1:], "the server never pings a v3 client"
    assert first.sid in engine.sessions
    assert second.closed and silent.closed is not None
    assert silent.closed[1] == "ping timeout"
    assert engine.stats.sockets[("websocket", "3")] == 1


async def test_messages_reach_socket_io_in_order_before_the_disconnect():
    engine, calls = engine_with_log()
    wire = Wire()
    session = engine.open(wire, {})
    for i in range(3):
        engine.received(session, f"4{i}")
    engine.received(session, "1")  # the client closes
    await settle()
    assert calls == [
        ("connect", session.sid), ("message", "0"), ("message", "1"), ("message", "2"),
        ("disconnect", "client disconnect"),
    ]  # fmt: skip
    assert not session.processing, "no task is left behind for an idle socket"


async def test_an_unknown_packet_type_closes_the_session():
    engine, _calls = engine_with_log()
    wire = Wire()
    session = engine.open(wire, {})
    engine.received(session, "9oops")
    assert wire.closed == (1002, "malformed_packet")
    assert engine.stats.client_errors["malformed_packet"] == 1
    assert session.sid not in engine.sessions


async def test_a_failing_handler_closes_only_its_session_and_logs_once(caplog: Any) -> None:
    engine, _ = engine_with_log()

    async def broken(sid: str, data: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    engine.on("message", broken)
    wires = [Wire() for _ in range(50)]
    sessions = [engine.open(wire, {}) for wire in wires]
    bystander = engine.open(Wire(), {})
    with caplog.at_level("ERROR", logger="pushserver.engine"):
        for session in sessions:
            engine.received(session, "4anything")
        await settle()
    assert {wire.closed for wire in wires} == {(1011, "server_error")}
    assert engine.stats.client_errors["server_error"] == 50
    assert not bystander.closed and bystander.sid in engine.sessions
    assert len(caplog.records) == 1 and "RecursionError" in caplog.records[0].getMessage()
    await engine.shutdown()


async def test_sessions_without_a_namespace_are_closed_after_the_connect_timeout() -> None:
    now = [100.0]
    engine = Engine(
        stats=WorkerStats(), refusal=lambda: None, max_http_buffer_size=1000,
        connect_timeout=45.0, clock=lambda: now[0],
    )  # fmt: skip
    for name in ("connect", "message", "disconnect"):
        engine.on(name, _nothing)
    idle, joined = Wire(), Wire()
    engine.open(idle, {})
    session = engine.open(joined, {})
    engine.namespace_connected(session.sid)
    assert engine.stats.engine_sessions == 2
    now[0] = 144.0
    engine._beat(engine._second())
    assert (idle.closed, joined.closed) == (None, None)
    now[0] = 145.5
    engine._beat(engine._second())
    assert (idle.closed, joined.closed) == ((1008, "connect_timeout"), None)
    assert engine.stats.engine_sessions == 1
    assert engine.stats.client_errors["connect_timeout"] == 1
    await engine.shutdown()


async def _nothing(*args: Any) -> None:
    return None


async def test_a_broadcast_reaches_every_live_session_named_once_and_counts_them():
    engine, _ = engine_with_log()
    wires = [Wire() for _ in range(3)]
    sessions = [engine.open(wire, {}) for wire in wires]
    engine.close(sessions[2], 1000, "gone")
    sids = [s.sid for s in sessions] + ["no-such-sid"]
    assert engine.broadcast_text(sids, '42["score",1]') == 2
    assert [wire.sent[-1] for wire in wires[:2]] == ['42["score",1]'] * 2
    assert '42["score",1]' not in wires[2].sent, "a closed session gets nothing more"
