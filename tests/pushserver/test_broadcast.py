"""`Engine.broadcast_text` on real sockets: websocket recipients written directly, polling ones
through their queue, a client that stops reading closed as `slow_client`, bytes counted once."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

from pushserver.engine import SLOW_CLIENT_BYTES, Engine
from pushserver.polling import PollingTransport
from pushserver.stats import WorkerStats
from pushserver.wsprotocol import EngineProtocol


async def _nothing(*args: Any) -> None:
    return None


def _engine() -> Engine:
    engine = Engine(stats=WorkerStats(), refusal=lambda: None, max_http_buffer_size=1000)
    for name in ("connect", "message", "disconnect"):
        engine.on(name, _nothing)
    return engine


async def _websocket(engine: Engine) -> tuple[EngineProtocol, socket.socket]:
    ours, peer = socket.socketpair()
    protocol = EngineProtocol(None, SimpleNamespace(connections=set()), None, engine=engine)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, ours)
    protocol.session = engine.open(protocol, {})
    return protocol, peer


def _read_all(peer: socket.socket) -> bytes:
    peer.setblocking(False)
    got = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


async def test_every_kind_of_recipient_gets_the_frame_and_a_reader_that_stalls_is_closed():
    engine = _engine()
    reading, reading_peer = await _websocket(engine)
    stalled, stalled_peer = await _websocket(engine)
    polling = PollingTransport(engine)
    polling.session = engine.open(polling, {})
    polling.take()
    sessions = [reading.session, stalled.session, polling.session]
    sids = [s.sid for s in sessions if s is not None]
    before = engine.stats.transmit_bytes
    assert engine.broadcast_text(sids, '42["score",1]') == 3
    assert polling.take() == ['42["score",1]']
    await asyncio.sleep(0.05)
    assert _read_all(reading_peer).endswith(b'\x81\x0d42["score",1]')
    assert engine.stats.transmit_bytes - before == 3 * len('42["score",1]')
    _read_all(stalled_peer)
    # One event the kernel cannot take whole: more than SLOW_CLIENT_BYTES stays unsent.
    big = '42["score","' + "x" * (SLOW_CLIENT_BYTES + (1 << 20)) + '"]'
    reading_peer.setblocking(True)
    assert engine.broadcast_text(sids, big) == 3
    assert stalled.session is not None and stalled.session.closed
    assert reading.session is not None and reading.session.closed  # nor did it read this one
    assert polling.session is not None and polling.session.closed  # queued past the limit too
    assert engine.stats.client_errors["slow_client"] == 3
    # Closed sessions get nothing more, and are not counted.
    assert engine.broadcast_text(sids, '42["score",2]') == 0
    for protocol, peer in ((reading, reading_peer), (stalled, stalled_peer)):
        assert protocol.transport is not None
        protocol.transport.abort()
        peer.close()
    await asyncio.sleep(0.05)
