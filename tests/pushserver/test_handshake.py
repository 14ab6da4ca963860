"""The websocket handshake: what the engine accepts, and the clear refusals for the rest."""

from __future__ import annotations

import json

import httpx
import pytest
import websockets
from websockets.typing import Origin


async def test_long_polling_opens_a_session_that_may_upgrade(push_server):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{push_server.url}/socket.io/?EIO=4&transport=polling")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    assert json.loads(response.text[1:])["upgrades"] == ["websocket"]


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        (
            "/socket.io/?EIO=5&transport=websocket",
            400,
            {"code": 5, "message": "Unsupported protocol version"},
        ),
        ("/socket.io/?EIO=4&transport=polling", 400, {"code": 3, "message": "Bad request"}),
        ("/socket.io/?EIO=4&transport=flash", 400, {"code": 0, "message": "Transport unknown"}),
        (
            "/socket.io/?EIO=4&transport=websocket&sid=abc",
            400,
            {"code": 1, "message": "Session ID unknown"},
        ),
        ("/elsewhere/?EIO=4&transport=websocket", 404, None),
    ],
    ids=["engine-io-v5", "polling-upgrade", "unknown-transport", "resumed-session", "wrong-path"],
)
async def test_bad_upgrades_are_refused_before_the_upgrade(push_server, path, status, body):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"ws://127.0.0.1:{push_server.port}{path}")
    response = refused.value.response
    assert response.status_code == status
    if body is not None:
        assert json.loads(response.body) == body


async def test_origins_are_checked_when_configured(server_factory):
    pod = server_factory(workers=1, extra=["--cors-allowed-origins", "https://sports.example"])
    url = f"ws://127.0.0.1:{pod.port}/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin=Origin("https://evil.example"))
    assert json.loads(refused.value.response.body)["message"] == "Not an accepted origin"
    async with websockets.connect(url, origin=Origin("https://sports.example")) as ws:
        opening = await ws.recv()
        assert isinstance(opening, str) and opening.startswith("0{")


async def test_the_open_packet_matches_engine_io_v4(push_server):
    async with websockets.connect(
        f"ws://127.0.0.1:{push_server.port}/socket.io/?EIO=4&transport=websocket"
    ) as ws:
        opening = await ws.recv()
    assert isinstance(opening, str) and opening[0] == "0"
    document = json.loads(opening[1:])
    assert set(document) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert (document["upgrades"], document["pingInterval"], document["pingTimeout"]) == (
        [],
        25000,
        20000,
    )
    assert document["maxPayload"] == 16384
