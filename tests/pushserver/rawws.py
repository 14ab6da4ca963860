"""Raw engine.io over a real websocket (the `websockets` library), for sending what no
well-behaved socket.io client would."""

from __future__ import annotations

import asyncio

import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import RunningServer


async def raw_client(server: RunningServer, *, connect: bool = True) -> ClientConnection:
    """A websocket past the engine.io handshake and, if `connect`, the socket.io one."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        max_size=None,
        # The tests send pings of their own, and want the server's answer to them.
        ping_interval=None,
    )
    opening = await ws.recv()
    assert isinstance(opening, str) and opening.startswith("0{")
    if connect:
        await ws.send("40")
        connected = await ws.recv()
        while connected == "2":  # a heartbeat may come first on a busy machine
            await ws.send("3")
            connected = await ws.recv()
        assert isinstance(connected, str) and connected.startswith("40{"), connected
    return ws


async def closed_with(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes; return the websocket close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
