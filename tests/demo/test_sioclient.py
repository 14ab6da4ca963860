"""`pushkit.sioclient`, the raw client of the demo's viewers and the benchmark's agents,
against a real push server: it joins its game, hears that game's events and nothing else, and
says why it closed in socket.io's words."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushkit.sioclient import (
    CLIENT_DISCONNECT,
    PING_TIMEOUT,
    TRANSPORT_CLOSE,
    SocketIOClient,
    _heartbeat_seconds,
)
from tests.conftest import eventually


class Seen:
    def __init__(self) -> None:
        self.connected = 0
        self.closed: list[tuple[str, bool]] = []
        self.events: list[bytes] = []

    def client(self, port: int, game: str) -> SocketIOClient:
        return SocketIOClient(
            "127.0.0.1", port, game,
            lambda c: setattr(self, "connected", self.connected + 1),
            lambda c, reason, was_connected: self.closed.append((reason, was_connected)),
            lambda packet, at: self.events.append(packet),
        )  # fmt: skip


async def test_events_of_its_game_arrive_and_leaving_is_a_clean_goodbye(
    server_factory, publish_token
):
    pod = server_factory(token=publish_token, workers=1)
    loop = asyncio.get_running_loop()
    fan, other = Seen(), Seen()
    fan_client = fan.client(pod.port, "final")
    await loop.create_connection(lambda: fan_client, "127.0.0.1", pod.port)
    other_client = other.client(pod.port, "semi")
    await loop.create_connection(lambda: other_client, "127.0.0.1", pod.port)

    # Joined: the server counts both in their rooms.
    async def joined() -> bool:
        return await pod.total("socket_io_events_received_total", event="joinByGameId") == 2

    await eventually(lambda: fan.connected == other.connected == 1, what="both connected")
    await eventually(joined, what="both joins")
    assert (await pod.publish("final", "score", {"home": 1})).status_code == 202
    await eventually(lambda: bool(fan.events), what="the score")
    assert fan.events == [b'42["score",{"home":1}]']
    await asyncio.sleep(0.2)
    assert other.events == [], "another game's event"

    fan_client.leave()
    assert fan.closed == [(CLIENT_DISCONNECT, True)]
    pod.stop()
    await eventually(lambda: bool(other.closed), what="the drain to close the other client")
    assert other.closed == [(TRANSPORT_CLOSE, True)]


async def test_a_server_that_stops_pinging_is_left_as_socket_io_client_leaves_it():
    """A connection whose server vanished without a FIN (a node gone, a packet lost) is noticed
    the way socket.io-client notices it: no PING within pingInterval + pingTimeout."""

    handlers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        handshake = b'0{"sid":"x","upgrades":[],"pingInterval":100,"pingTimeout":100}'
        writer.write(bytes([0x81, len(handshake)]) + handshake)
        while await reader.read(100):  # the client's CONNECT, then its close; no PING, ever
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen = Seen()
    client = seen.client(port, "final")
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    await eventually(lambda: bool(seen.closed), what="the heartbeat check to give up")
    assert seen.closed == [(PING_TIMEOUT, False)]
    # The server's end is closed here, not left to the garbage collector: its ResourceWarning
    # would land in whichever test runs next.
    for writer in handlers:
        writer.close()
    server.close()
    await server.wait_closed()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_handshake_gives_a_usable_heartbeat(handshake: bytes):
    seconds = _heartbeat_seconds(handshake)
    assert 0 < seconds <= 2 * 3600


def test_the_handshakes_heartbeat_is_interval_plus_timeout():
    assert _heartbeat_seconds(b'{"pingInterval":25000,"pingTimeout":20000}') == 45.0
    assert _heartbeat_seconds(b'{"pingInterval":100,"pingTimeout":-1}') == 20.1
