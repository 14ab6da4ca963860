"""Each worker listens on the Redis channel exactly once, however early its first client came.

python-socketio starts its Redis listener lazily, at the first client connection; the worker
starts it itself, before serving. Two listeners in one worker would share one pub/sub object
and replace each other's subscription in a loop: messages lost, a leaked subscribed connection
per turn (each one a copy of every publish, buffered by Redis for nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import redis.asyncio
import socketio
import uvicorn
import websockets

from pushserver.fanout import RoomFanout
from pushserver.stats import WorkerStats
from tests.conftest import free_port_block, url_of


async def _pubsub_connections(url: str, name: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        listed = await client.client_list(_type="pubsub")
    finally:
        await client.aclose()
    return sum(1 for c in listed if c.get("name") == name)


async def test_a_client_connected_before_the_subscription_starts_no_second_listener(own_redis):
    url = url_of(own_redis)
    fanout = RoomFanout(url, WorkerStats(), "pushscale:early:0")
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=fanout)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(socketio.ASGIApp(sio), log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    client = socketio.AsyncClient(reconnection=False)
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        # The library's own start of the listener, then the worker's.
        await client.connect(f"http://127.0.0.1:{sock.getsockname()[1]}", transports=["websocket"])
        await fanout.subscribe(5)
        await asyncio.sleep(1)  # two listeners would have replaced each other many times by now
        assert await _pubsub_connections(url, "pushscale:early:0") == 1
        assert await fanout.broadcast("game:x", "score", 1) == 1
    finally:
        await client.disconnect()
        server.should_exit = True
        await serving
        if fanout.thread is not None:
            fanout.thread.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fanout.thread
        await fanout.pubsub.aclose()
        await fanout.redis.aclose()


async def test_a_pod_started_into_a_reconnect_storm_listens_once_per_worker(
    server_factory, publish_token, own_redis
):
    """Clients already retrying against the port when the pod starts (its predecessor just
    drained) are served only by workers that receive every publish."""
    port = free_port_block(1)
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    opened: list[websockets.ClientConnection] = []

    async def knock() -> None:
        while True:
            try:
                opened.append(await websockets.connect(url, open_timeout=5))
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.002)

    storm = [asyncio.create_task(knock()) for _ in range(8)]
    try:
        pod = await asyncio.to_thread(
            server_factory, token=publish_token, port=port, workers=2, redis_url=url_of(own_redis)
        )
        while len(opened) < 40:
            await asyncio.sleep(0.05)
    finally:
        for task in storm:
            task.cancel()
        await asyncio.gather(*storm, return_exceptions=True)
    try:
        await asyncio.sleep(1)
        for worker in pod.workers:
            name = f"pushscale:{pod.name}:{worker}"
            assert await _pubsub_connections(url_of(own_redis), name) == 1, name
        response = await pod.publish("storm", "score", 1)
        assert response.json()["workers"] == 2
    finally:
        await asyncio.gather(*(ws.close() for ws in opened))
