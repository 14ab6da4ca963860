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

from tests.conftest import RunningServer, Viewer, eventually
from tests.pushserver.rawws import closed_with, raw_client


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
        ('42["joinByGameId", {"gameId": "1"}', 1002, "malformed_packet"),
        ('42{"not": "a list"}', 1002, "malformed_packet"),
        ("42[17]", 1002, "malformed_packet"),
        ("42", 1002, "malformed_packet"),
        ("49[]", 1002, "malformed_packet"),
        ('451-["joinByGameId",{"_placeholder":true,"num":0}]', 1002, "binary_packet"),
        (b"\x00\x01binary", 1002, "binary_packet"),
        ('42["visibilityChange","' + "x" * 20_000 + '"]', 1009, "payload_too_large"),
        ("42" + "[" * 5000 + "]" * 5000, 1002, "too_deep"),
        ('42["visibilityChange",' + "9" * 400 + "]", 1002, "not_finite"),
        ('42["visibilityChange",1e999]', 1002, "not_finite"),
        ('42["visibilityChange",NaN]', 1002, "not_finite"),
        ('42["visibilityChange",-Infinity]', 1002, "not_finite"),
        ("4" + "9" * 30 + '["visibilityChange"]', 1002, "malformed_packet"),
        ('44{"message":"x"}', 1002, "unexpected_packet"),
        ('43["x"]', 1002, "malformed_packet"),
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
        "deep-nesting",
        "huge-integer",
        "float-overflow",
        "nan",
        "infinity",
        "huge-ack-id",
        "connect-error-from-client",
        "ack-without-id",
    ],
)
async def test_a_bad_frame_closes_only_its_sender(push_server, viewers, frame, close_code, reason):
    calm = await bystander(push_server, viewers)
    ws = await raw_client(push_server)
    await ws.send(frame)
    assert await closed_with(ws) == close_code
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
