"""A hostile client cannot corrupt the count, hold slots for free, or grow the log.

Each test attacks a real `pushscale server` over real sockets and checks what an operator would
look at: `socket_io_connected`, the engine.io sessions gauge, the counters by reason, the log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from tests.conftest import RunningServer, eventually
from tests.pushserver.rawws import closed_with, raw_client


async def recv_until(ws: websockets.ClientConnection, prefix: str) -> str:
    async with asyncio.timeout(10):
        while True:
            frame = await ws.recv()
            if isinstance(frame, str) and frame.startswith(prefix):
                return frame


async def counted(server: RunningServer, name: str, value: float, **labels: str) -> None:
    async def check() -> bool:
        return await server.total(name, **labels) == value

    await eventually(check, what=f"{name}{labels} == {value}")


async def test_reserved_event_names_and_other_namespaces_cannot_change_the_count(
    push_server, viewers
):
    await viewers(push_server.url, 3)
    ws = await raw_client(push_server)
    await counted(push_server, "socket_io_connected", 4)
    for frame in (
        '42["connect",{}]',
        '42["connect",{},{}]',
        '42["disconnect","io server disconnect"]',
        '42["disconnecting"]',
        '42["connect_error",{}]',
        '42["error",{}]',
        '42/admin,["joinByGameId",{"gameId":"1"}]',
        '42/admin,["disconnect"]',
        "41/admin,",
    ):
        await ws.send(frame)
    # The socket is still there and still works: an acknowledged join comes back.
    await ws.send('427["joinByGameId",{"gameId":"1"}]')
    ack = await recv_until(ws, "437")
    assert json.loads(ack[3:])[0]["ok"] is True
    assert await push_server.total("socket_io_connected") == 4
    assert await push_server.total("pushscale_engineio_sessions") == 4
    assert await push_server.total("socket_io_disconnect_total") == 0
    assert await push_server.total("pushscale_client_errors_total", reason="not_connected") == 2
    await ws.close()
    await counted(push_server, "socket_io_connected", 3)
    await counted(push_server, "pushscale_engineio_sessions", 3)
    assert await push_server.total("socket_io_connect_total") == 4
    assert await push_server.total("socket_io_disconnect_total") == 1


async def test_a_second_connect_on_one_transport_is_refused(push_server):
    ws = await raw_client(push_server)
    await ws.send("40")
    assert await closed_with(ws) == 1008
    await counted(push_server, "pushscale_client_errors_total", 1, reason="duplicate_connect")
    await counted(push_server, "socket_io_connected", 0)
    assert await push_server.total("socket_io_connect_total") == 1
    assert await push_server.total("socket_io_disconnect_total") == 1


async def test_acks_spend_the_event_budget(server_factory, viewers):
    server = server_factory(extra=["--event-rate", "5", "--event-burst", "10"])
    [calm] = await viewers(server.url, 1)
    ws = await raw_client(server)
    for i in range(100):
        await ws.send(f"43{i}[]")
    assert await closed_with(ws) is not None
    await counted(server, "pushscale_client_errors_total", 1, reason="flood")
    # The client never asked for anything to acknowledge: each admitted ACK is counted.
    assert 8 <= await server.total("pushscale_client_errors_total", reason="unexpected_ack") <= 10
    await counted(server, "socket_io_connected", 1)
    assert calm.client.connected


async def test_control_frames_spend_the_budget_too(server_factory):
    """engine.io noops and websocket pings never reach socket.io, but they cost the server a
    frame each: a flood of them is cut off like an event flood, connected or not."""
    server = server_factory(extra=["--event-rate", "5", "--event-burst", "10"])
    for connect in (False, True):
        ws = await raw_client(server, connect=connect)
        for _ in range(100):
            await ws.send("6")
        assert await closed_with(ws) == 1008
        ws = await raw_client(server, connect=connect)
        with_pong = 0
        for _ in range(100):
            try:
                await ws.ping()
                with_pong += 1
            except websockets.ConnectionClosed:
                break
        assert await closed_with(ws) == 1008
    await counted(server, "pushscale_client_errors_total", 4, reason="flood")
    await counted(server, "pushscale_engineio_sessions", 0)
    await counted(server, "socket_io_connected", 0)


async def test_a_session_that_never_connects_socket_io_is_closed(server_factory, viewers):
    server = server_factory(extra=["--connect-timeout", "1.5"])
    [viewer] = await viewers(server.url, 1)
    idle = [await raw_client(server, connect=False) for _ in range(3)]
    # What fills --max-connections is visible even before it is a socket.io connection.
    await counted(server, "pushscale_engineio_sessions", 4)
    assert await server.total("socket_io_connected") == 1
    codes = await asyncio.gather(*(closed_with(ws) for ws in idle))
    assert codes == [1008, 1008, 1008]
    await counted(server, "pushscale_client_errors_total", 3, reason="connect_timeout")
    await counted(server, "pushscale_engineio_sessions", 1)
    # A connected socket is not subject to the timeout.
    await asyncio.sleep(2)
    assert viewer.client.connected
    assert await server.total("socket_io_connected") == 1


async def raw_http(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_requests_whose_headers_never_finish_are_closed(server_factory):
    server = server_factory(workers=1, extra=["--header-timeout", "1"])
    slow: list[Any] = []
    for port in (server.port, server.metrics_ports[0]):
        reader, writer = await raw_http(port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.append((reader, writer))
    for reader, writer in slow:
        async with asyncio.timeout(5):
            answer = await reader.read()  # until the server closes
        assert answer.startswith(b"HTTP/1.1 408 ")
        writer.close()
        await writer.wait_closed()
    await counted(server, "pushscale_connections_rejected_total", 2, reason="header_timeout")
    # A prompt client on a kept-alive connection is not affected.
    async with httpx.AsyncClient() as http:
        for _ in range(3):
            assert (await http.get(f"{server.url}/healthz")).status_code == 200
            await asyncio.sleep(0.6)


async def test_not_yet_upgraded_connections_are_bounded_and_counted(server_factory, viewers):
    server = server_factory(workers=1, extra=["--max-http-connections", "4"])
    idle = [await raw_http(server.port) for _ in range(4)]
    await counted(server, "pushscale_http_connections", 4, port="client")
    reader, writer = await raw_http(server.port)
    async with asyncio.timeout(5):
        answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 503 ")
    writer.close()
    await writer.wait_closed()
    await counted(server, "pushscale_connections_rejected_total", 1, reason="http_connections_full")
    for _, w in idle:
        w.close()
        await w.wait_closed()
    await counted(server, "pushscale_http_connections", 0, port="client")
    # Websockets stop counting as HTTP connections once upgraded: many more than 4 fit.
    for _ in range(10):
        await viewers(server.url, 1)
    await counted(server, "socket_io_connected", 10)
    assert await server.total("pushscale_http_connections", port="client") == 0


async def test_a_socket_may_join_only_so_many_games(server_factory, viewers):
    server = server_factory(extra=["--max-rooms-per-socket", "3"])
    [viewer] = await viewers(server.url, 1)
    call = viewer.client.call
    for game in ("1", "2", "3", "3"):
        assert (await call("joinByGameId", {"gameId": game}, timeout=5))["ok"] is True
    refused = await call("joinByGameId", {"gameId": "4"}, timeout=5)
    assert refused["ok"] is False and refused["code"] == "too_many_rooms"
    await eventually(lambda: len(viewer.got("error")) == 1, what="the error event")
    assert viewer.got("error")[0]["code"] == "too_many_rooms"
    assert (await call("leaveByGameId", {"gameId": "1"}, timeout=5))["ok"] is True
    assert (await call("leaveByGameId", {"gameId": "1"}, timeout=5))["ok"] is True
    assert (await call("joinByGameId", {"gameId": "4"}, timeout=5))["ok"] is True
    assert await server.total("pushscale_client_errors_total", reason="too_many_rooms") == 1
    assert viewer.client.connected


BAD_PACKETS = (
    "hello",
    "42" + "[" * 5000,
    '42["visibilityChange",NaN]',
    "451-[]",
    "44{}",
)


async def test_a_thousand_bad_packets_cost_a_few_log_lines(push_server, viewers):
    calm = await viewers(push_server.url, 2)
    before = push_server.log().count("\n")

    async def attack(frame: str) -> int | None:
        ws = await raw_client(push_server)
        await ws.send(frame)
        return await closed_with(ws)

    codes: list[int | None] = []
    for start in range(0, 1000, 50):
        codes += await asyncio.gather(
            *(attack(BAD_PACKETS[i % len(BAD_PACKETS)]) for i in range(start, start + 50))
        )
    assert codes == [1002] * 1000
    await counted(push_server, "socket_io_errors_total", 1000)
    await counted(push_server, "socket_io_connected", 2)
    await asyncio.sleep(0.5)
    # Each worker says each cause once per minute, whatever the number of packets.
    grown = push_server.log().count("\n") - before
    causes = {"malformed_packet", "too_deep", "not_finite", "binary_packet", "unexpected_packet"}
    assert 1 <= grown <= len(causes) * len(push_server.workers)
    assert all(v.client.connected for v in calm)


async def test_publish_refuses_json_a_client_could_not_parse(push_server, viewers):
    [viewer] = await viewers(push_server.url, 1)
    await viewer.client.call("joinByGameId", {"gameId": "g"}, timeout=5)
    bodies = {
        b'{"gameId":"g","event":"tick","data":NaN}': "not_finite",
        b'{"gameId":"g","event":"tick","data":[Infinity]}': "not_finite",
        b'{"gameId":"g","event":"tick","data":{"x":-Infinity}}': "not_finite",
        b'{"gameId":"g","event":"tick","data":1e400}': "not_finite",
        b'{"gameId":"g","event":"tick","data":' + b"[" * 40 + b"]" * 40 + b"}": "too_deep",
        b'{"gameId":"g","event":"tick","data":' + b"[" * 100_000 + b"}": "too_deep",
    }
    async with httpx.AsyncClient() as http:
        for body, code in bodies.items():
            response = await http.post(
                f"{push_server.url}/publish",
                content=body,
                headers={
                    "authorization": f"Bearer {push_server.token}",
                    "content-type": "application/json",
                },
            )
            assert response.status_code == 400, body[:60]
            assert response.json()["error"] == code
            assert len(response.content) < 300
    await counted(push_server, "pushscale_publish_requests_total", len(bodies), code="400")
    assert (await push_server.publish("g", "tick", {"ok": [1.5, 2]})).status_code == 202
    await eventually(lambda: viewer.got("tick") == [{"ok": [1.5, 2]}], what="the good publish")
