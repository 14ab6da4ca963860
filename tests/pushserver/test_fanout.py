"""Each worker listens on the Redis channel exactly once, however early its first client came,
and listens again by itself after Redis comes back, saying so in its metrics.

python-socketio starts its Redis listener lazily, at the first client connection; the worker
starts it itself, before serving. A second listener in one worker would deliver every publish
twice (with python-socketio's own listening loop, the two also replaced each other's
subscription in a loop, losing messages and leaking a subscribed connection per turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

import redis.asyncio
import socketio
import uvicorn
import websockets

from pushserver.fanout import RoomFanout
from pushserver.redis_access import RedisAccess
from pushserver.stats import WorkerStats
from tests.conftest import eventually, free_port_block, url_of


async def _pubsub_connections(url: str, name: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        listed = await client.client_list(_type="pubsub")
    finally:
        await client.aclose()
    return sum(1 for c in listed if c.get("name") == name)


async def test_a_client_connected_before_the_subscription_starts_no_second_listener(own_redis):
    url = url_of(own_redis)
    fanout = RoomFanout(RedisAccess(url), WorkerStats(), "pushscale:early:0")
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
        await asyncio.sleep(1)  # time enough for a second listener to hold its own connection
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
        for client in (fanout.pubsub, fanout.redis):
            if client is not None:
                await client.aclose()


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


async def test_after_a_redis_restart_every_worker_listens_again_and_says_so(
    server_factory, publish_token, viewers, own_redis
):
    pod = server_factory(token=publish_token, redis_url=url_of(own_redis))
    clients = await viewers(pod.url, 20)
    joins = await asyncio.gather(
        *(c.client.call("joinByGameId", {"gameId": "back"}, timeout=10) for c in clients)
    )
    assert {j["worker"] for j in joins} == {f"{pod.name}/{w}" for w in pod.workers}
    assert await pod.total("pushscale_redis_subscribed") == 2

    async def subscribed(count: int) -> bool:
        return await pod.total("pushscale_redis_subscribed") == count

    own_redis.stop()
    await eventually(lambda: subscribed(0), what="both workers to report the loss")
    await asyncio.sleep(8)  # a Redis pod being replaced; the retries back off meanwhile
    own_redis.start()
    await eventually(lambda: subscribed(2), timeout=15, what="both workers to subscribe again")

    response = await pod.publish("back", "score", 1)
    assert response.json()["workers"] == 2
    await eventually(lambda: all(c.got("score") == [1] for c in clients), what="every viewer")
    assert all(c.client.connected for c in clients), "clients stayed through the outage"
    # Retries back off to 5 s, no further (python-socketio's own loop goes on to 60 s).
    delays = [float(d) for d in re.findall(r"subscribing again in ([\d.]+) s", pod.log())]
    assert max(delays) == 5.0, delays
    assert await pod.total("pushscale_redis_subscription_losses_total") == len(delays)
