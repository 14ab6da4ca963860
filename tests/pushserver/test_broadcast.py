"""`Engine.broadcast_text` on real sockets: websocket recipients written to their descriptor
(whole frames, in order, when the kernel takes only part or a connection is handed over with
bytes unsent; nothing after our close frame), TLS ones through their transport, polling ones
through their queue, a client that stops reading closed as `slow_client`, bytes counted once.
Each test runs on asyncio's loop and on uvloop's: the direct writes lean on how each transport
buffers and when it closes the socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest
import trustme
import uvloop

from pushserver import websocket as ws
from pushserver.engine import SLOW_CLIENT_BYTES, Engine
from pushserver.polling import PollingTransport
from pushserver.stats import WorkerStats
from pushserver.wsprotocol import EngineProtocol

Run = Callable[[Coroutine[Any, Any, None]], None]
# Every websocket a test opened, closed after it whether it passed or not: uvloop cannot close
# its loop while a transport still holds bytes for a peer that does not read.
_opened: list[tuple[EngineProtocol, socket.socket]] = []


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's body on asyncio's loop, then (a second test) on uvloop's, the one the
    server runs on: the direct writes lean on how each transport buffers and closes."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def on_loop(body: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            try:
                runner.run(body)
            finally:
                runner.run(_close_opened())

    return on_loop


async def _close_opened() -> None:
    while _opened:
        protocol, peer = _opened.pop()
        if protocol.transport is not None:
            protocol.transport.abort()
        peer.close()
    await asyncio.sleep(0.01)  # connection_lost


async def _nothing(*args: Any) -> None:
    return None


def _engine() -> Engine:
    engine = Engine(stats=WorkerStats(), refusal=lambda: None, max_http_buffer_size=1000)
    for name in ("connect", "message", "disconnect"):
        engine.on(name, _nothing)
    return engine


def _socket_pair(buffer: int | None = None) -> tuple[socket.socket, socket.socket]:
    """Our end and the client's; `buffer` shrinks our send and its receive kernel buffers."""
    ours, peer = socket.socketpair()
    if buffer is not None:
        for end, option in ((ours, socket.SO_SNDBUF), (peer, socket.SO_RCVBUF)):
            end.setsockopt(socket.SOL_SOCKET, option, buffer)
    return ours, peer


async def _websocket(
    engine: Engine, buffer: int | None = None
) -> tuple[EngineProtocol, socket.socket]:
    """A websocket session on our end of `_socket_pair(buffer)`, the client's end with it."""
    ours, peer = _socket_pair(buffer)
    protocol = EngineProtocol(None, SimpleNamespace(connections=set()), None, engine=engine)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, ours)
    _opened.append((protocol, peer))
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


def test_every_kind_of_recipient_gets_the_frame_and_a_reader_that_stalls_is_closed(
    run: Run,
) -> None:
    run(_every_kind_of_recipient_gets_the_frame_and_a_reader_that_stalls_is_closed())


async def _every_kind_of_recipient_gets_the_frame_and_a_reader_that_stalls_is_closed() -> None:
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


def _server_frames(data: bytes) -> list[bytes]:
    """The payloads of unmasked server frames (RFC 6455 §5.2), each checked whole."""
    payloads = []
    while data:
        assert data[0] == 0x81, data[:2]
        size, start = data[1], 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        assert len(data) >= start + size, "a frame was cut"
        payloads.append(data[start : start + size])
        data = data[start + size :]
    return payloads


def test_frames_stay_whole_and_in_order_when_the_kernel_takes_only_part_of_one(run: Run) -> None:
    run(_frames_stay_whole_and_in_order_when_the_kernel_takes_only_part_of_one())


async def _frames_stay_whole_and_in_order_when_the_kernel_takes_only_part_of_one() -> None:
    engine = _engine()
    protocol, peer = await _websocket(engine, buffer=4096)
    transport, session = protocol.transport, protocol.session
    assert transport is not None and session is not None
    _read_all(peer)  # the OPEN packet
    fd = transport.get_extra_info("socket").fileno()
    assert protocol.fd == fd
    texts = [f'42["score",{n},"{"x" * 30000}"]' for n in range(40)]
    got = b""
    for text in texts:
        assert engine.broadcast_text([session.sid], text) == 1
        # The client reads a little while the loop has not run: the kernel has room again
        # while the transport still holds what it did not take.
        with contextlib.suppress(BlockingIOError):
            got += peer.recv(8192)
    # The kernel took the first frames directly and part of one; the transport holds the rest.
    assert 0 < transport.get_write_buffer_size() < SLOW_CLIENT_BYTES
    expected = sum(len(_frame(text)) for text in texts)
    for _ in range(500):
        got += _read_all(peer)
        if len(got) >= expected:
            break
        await asyncio.sleep(0.01)
    assert _server_frames(got) == [text.encode() for text in texts]
    assert not session.closed
    # All of it went: the descriptor is the fan-out's to write to again.
    assert transport.get_write_buffer_size() == 0 and protocol.fd == fd


def _frame(text: str) -> bytes:
    return ws.frame(ws.TEXT, text.encode())


def test_a_connection_handed_over_with_bytes_unsent_is_written_after_them(run: Run) -> None:
    run(_a_connection_handed_over_with_bytes_unsent_is_written_after_them())


async def _a_connection_handed_over_with_bytes_unsent_is_written_after_them() -> None:
    # What httpguard does: the connection's first protocol wrote, then hands the transport on.
    engine = _engine()
    ours, peer = _socket_pair(buffer=4096)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    earlier = b"\x81\x7e" + (60000).to_bytes(2, "big") + b"e" * 60000
    transport.write(earlier)
    await asyncio.sleep(0.01)
    assert transport.get_write_buffer_size() > 0
    protocol = EngineProtocol(None, SimpleNamespace(connections=set()), None, engine=engine)
    protocol.connection_made(transport)
    transport.set_protocol(protocol)
    _opened.append((protocol, peer))
    assert protocol.fd == -1  # the transport holds bytes: the fan-out must queue behind them
    session = protocol.session = engine.open(protocol, {})
    got = peer.recv(8192)  # the kernel has room again; the transport still holds the rest
    assert engine.broadcast_text([session.sid], '42["score",1]') == 1
    for _ in range(500):
        got += _read_all(peer)
        if got.endswith(_frame('42["score",1]')):
            break
        await asyncio.sleep(0.01)
    frames = _server_frames(got)
    assert frames[0] == b"e" * 60000 and frames[-1] == b'42["score",1]'
    assert protocol.fd == ours.fileno()  # drained: written directly again


def test_nothing_is_written_after_our_close_frame(run: Run) -> None:
    run(_nothing_is_written_after_our_close_frame())


async def _nothing_is_written_after_our_close_frame() -> None:
    engine = _engine()
    protocol, peer = await _websocket(engine)
    assert protocol.session is not None
    sid = protocol.session.sid
    await asyncio.sleep(0.05)
    _read_all(peer)  # the OPEN packet
    # The close frame is out, the client has not answered: a publish arriving now (the session
    # still listed, as it is for a moment inside `Engine.close`) must not follow it.
    protocol.close(ws.GOING_AWAY, "server shutting down")
    assert engine.broadcast_text([sid], '42["score",1]') == 1
    await asyncio.sleep(0.05)
    assert _read_all(peer) == ws.close_frame(ws.GOING_AWAY)


def test_a_tls_socket_gets_its_frame_encrypted_not_written_to_the_descriptor(run: Run) -> None:
    run(_a_tls_socket_gets_its_frame_encrypted_not_written_to_the_descriptor())


async def _a_tls_socket_gets_its_frame_encrypted_not_written_to_the_descriptor() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    engine = _engine()
    made: list[EngineProtocol] = []

    def factory() -> EngineProtocol:
        made.append(EngineProtocol(None, SimpleNamespace(connections=set()), None, engine=engine))
        return made[-1]

    server = await asyncio.get_running_loop().create_server(
        factory, "127.0.0.1", 0, ssl=server_context
    )
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
    for _ in range(100):
        if made and made[0].transport is not None:
            break
        await asyncio.sleep(0.01)
    protocol = made[0]
    assert protocol.fd == -1  # a TLS transport's socket is not ours to write to
    protocol.session = engine.open(protocol, {})
    assert engine.broadcast_text([protocol.session.sid], '42["score",1]') == 1
    wanted = _frame('42["score",1]')
    got = b""
    while not got.endswith(wanted):
        got += await asyncio.wait_for(reader.read(1 << 16), 5)
    writer.close()
    server.close()
    await server.wait_closed()
