"""Bad input from one client costs that client at most its connection; nobody else notices.

Raw engine.io frames go over a real websocket (the `websockets` library) so the tests can send
what no well-behaved socket.io client would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import RunningServer, Viewer, eventually


async def raw_client(server: RunningServer) -> ClientConnection:
    """A websocket that has done the engine.io and socket.io handshakes by hand."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        max_size=None,
    )
    opening = await ws.recv()
    assert isinstance(opening, str) and opening.startswith("0{")
    await ws.send("40")
    connected = await ws.recv()
    assert isinstance(connected, str) and connected.startswith("40{")
    return ws


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; return the websocket close code."""
    try:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def bystander(server: RunningServer, viewers: Any) -> list[Viewer]:
    clients = await viewers(server.url, 4)
    for viewer in clients:
        await viewer.client.call("joinByGameId", {"gameId": "calm"}, timeout=5)
    return clients


async def assert_bystanders_fine(server: RunningServer, clients: list[Viewer]) -> None:
    response = await server.publish("calm", "tick", 1)
    assert response.status_code == 202
    await eventually(lambda: all(v.got("tick") == [1] for v in clients), what="bystanders")
    assert all(v.disconnects == [] for v in clients)


@pytest.mark.parametrize(
    ("frame", "close_code", "reason"),
    [
        ("hello", 1002, "malformed_packet"),
        ("", 1002, "malformed_packet"),
        ('42["joinByGameId", {"gameId": "1"}', None, "malformed_packet"),
        ('42{"not": "a list"}', None, "malformed_packet"),
        ("42[17]", None, "malformed_packet"),
        ("42", None, "malformed_packet"),
        ("49[]", None, "malformed_packet"),
        ('451-["joinByGameId",{"_placeholder":true,"num":0}]', None, "malformed_packet"),
        (b"\x00\x01binary", None, "malformed_packet"),
        ('42["visibilityChange","' + "x" * 20_000 + '"]', 1009, "payload_too_large"),
    ],
    ids=[
        "not-engine-io",
        "empty-frame",
        "truncated-json",
        "event-not-a-list",
        "event-name-not-a-string",
        "event-without-data",
        "unknown-socket-io-type",
        "binary-event",
        "binary-frame",
        "oversized-frame",
    ],
)
async def test_a_bad_frame_closes_only_its_sender(push_server, viewers, frame, close_code, reason):
    calm = await bystander(push_server, viewers)
    ws = await raw_client(push_server)
    await ws.send(frame)
    code = await closed_with(ws)
    if close_code is not None:
        assert code == close_code
    await eventually(lambda: push_server_total(push_server, reason), what=f"{reason} to be counted")
    assert await push_server.total("socket_io_errors_total") >= 1
    await assert_bystanders_fine(push_server, calm)


async def push_server_total(server: RunningServer, reason: str) -> bool:
    return await server.total("pushscale_client_errors_total", reason=reason) == 1


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "42",
        42,
        [],
        {},
        {"gameId": None},
        {"gameId": True},
        {"gameId": "a b"},
        {"gameId": "x" * 200},
        {"gameId": {"$ne": 1}},
    ],
    ids=[
        "none",
        "bare-string",
        "bare-number",
        "list",
        "empty-object",
        "null-id",
        "bool-id",
        "space-in-id",
        "id-too-long",
        "object-id",
    ],
)
async def test_a_bad_join_payload_gets_an_error_and_keeps_the_client(push_server, viewers, payload):
    calm = await bystander(push_server, viewers)
    [viewer] = await viewers(push_server.url, 1)
    answer = await viewer.client.call("joinByGameId", payload, timeout=5)
    assert answer["ok"] is False
    assert answer["code"] in ("bad_payload", "bad_game_id")
    await eventually(lambda: len(viewer.got("error")) == 1, what="the error event")
    [error] = viewer.got("error")
    assert error["event"] == "joinByGameId" and error["code"] == answer["code"]
    assert error["message"]
    # Still connected, and a correct join afterwards works.
    joined = await viewer.client.call("joinByGameId", {"gameId": "calm"}, timeout=5)
    assert joined["ok"] is True
    assert await push_server.total("pushscale_client_errors_total", reason="bad_payload") == 1
    await assert_bystanders_fine(push_server, [*calm, viewer])


async def test_numeric_game_ids_are_the_same_room_as_their_string(push_server, viewers):
    [a, b] = await viewers(push_server.url, 2)
    assert (await a.client.call("joinByGameId", {"gameId": 7}, timeout=5))["room"] == "game:7"
    assert (await b.client.call("joinByGameId", {"gameId": "7"}, timeout=5))["room"] == "game:7"


async def test_an_event_flood_is_throttled_then_disconnected(
    server_factory, publish_token, viewers
):
    server = server_factory(token=publish_token, extra=["--event-rate", "5", "--event-burst", "10"])
    calm = await bystander(server, viewers)
    ws = await raw_client(server)
    frames = []
    try:
        for _ in range(100):
            await ws.send('42["visibilityChange",{"hidden":true}]')
        async with asyncio.timeout(10):
            while True:
                frames.append(await ws.recv())
    except websockets.ConnectionClosed:
        pass
    errors = [
        json.loads(f[2:])[1] for f in frames if isinstance(f, str) and f.startswith('42["error"')
    ]
    assert [e["code"] for e in errors] == ["rate_limited", "flood"]
    # The socket.io DISCONNECT tells an official client not to come back.
    assert "41" in frames
    assert await server.total("pushscale_client_errors_total", reason="flood") == 1
    # The 10 burst tokens are admitted, then refusals dig the bucket 10 deep (a little more
    # if it refilled at 5/s while the frames arrived) and the client is cut off; frames that
    # were already in flight after that are ignored, not refused again.
    refused = await server.total("pushscale_client_errors_total", reason="rate_limited")
    assert 9 <= refused <= 14
    await assert_bystanders_fine(server, calm)


async def test_a_brief_burst_only_loses_the_excess(server_factory, publish_token, viewers):
    server = server_factory(token=publish_token, extra=["--event-rate", "5", "--event-burst", "10"])
    [viewer] = await viewers(server.url, 1)
    for _ in range(13):
        await viewer.client.emit("visibilityChange", {"hidden": False})
    await eventually(lambda: len(viewer.got("error")) == 1, what="one rate_limited error")
    assert viewer.got("error")[0]["code"] == "rate_limited"
    await asyncio.sleep(1.0)  # the bucket refills
    answer = await viewer.client.call("joinByGameId", {"gameId": "1"}, timeout=5)
    assert answer["ok"] is True
    assert viewer.client.connected
