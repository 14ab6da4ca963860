"""At scale: the paced drain behind a Service, rebalancing, shed requests, overload refusal.

Every test runs real `pushscale server` processes; the drain and rebalancing tests put them
behind `ServiceProxy`, which routes new connections to ready pods only, as a Service does.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter

import httpx
import pytest
import websockets

from tests.conftest import Viewer, eventually, shutdown_viewers, url_of
from tests.service_proxy import ServiceProxy

RECONNECT = {"reconnection": True, "reconnection_delay": 0.3, "reconnection_delay_max": 0.6}


async def wait_routable(proxy: ServiceProxy, count: int) -> None:
    await eventually(lambda: len(proxy.ready) == count, what=f"{count} ready backends")


async def test_sigterm_drains_paced_and_every_client_lands_on_the_other_pod(
    server_factory, publish_token, viewers, own_redis
):
    drain = 4.0
    # Its own Redis: the test counts the workers a publish reaches.
    common = {"token": publish_token, "drain_seconds": drain, "redis_url": url_of(own_redis)}
    pod_a = server_factory(name="pod-a", **common)
    pod_b = server_factory(name="pod-b", **common)
    proxy = await ServiceProxy([pod_a.port, pod_b.port]).start()
    clients: list[Viewer] = []
    try:
        await wait_routable(proxy, 2)
        clients = await viewers(proxy.url, 80, game="final", **RECONNECT)
        await eventually(lambda: all(v.acks for v in clients), what="every join")
        on_a = [v for v in clients if v.acks[0]["worker"].startswith("pod-a/")]
        assert len(on_a) >= 20
        assert sum([await pod_a.connected(w) for w in pod_a.workers]) == len(on_a)

        not_ready_at: list[float] = []

        async def watch_readiness() -> None:
            async with httpx.AsyncClient(timeout=1) as http:
                while not not_ready_at:
                    try:
                        status = (await http.get(f"{pod_a.url}/readyz")).status_code
                    except httpx.HTTPError:
                        status = 0
                    if status != 200:
                        not_ready_at.append(time.monotonic())
                    await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch_readiness())
        started = time.monotonic()
        pod_a.process.terminate()
        assert await asyncio.to_thread(pod_a.process.wait, 30) == 0
        await watcher

        drops = sorted(t for v in on_a for t in v.disconnect_times)
        assert len(drops) == len(on_a), "each of pod A's clients dropped exactly once"
        assert all(v.disconnect_times == [] for v in clients if v not in on_a)
        # Readiness went first, so the Service stopped sending new clients before any drop.
        assert not_ready_at[0] < drops[0]
        # Spread over the drain window, not one burst: per worker the closes are evenly
        # paced over `drain` seconds, so no second holds much more than its share.
        assert drops[-1] - drops[0] >= 0.7 * drain
        assert drops[-1] - started <= drain + 2
        per_second = Counter(int(t - started) for t in drops)
        assert max(per_second.values()) <= math.ceil(len(on_a) / drain) + 4, per_second

        # Every client came back by itself, to pod B, and is in its room again.
        async def all_on_b() -> bool:
            return sum([await pod_b.connected(w) for w in pod_b.workers]) == 80

        await eventually(all_on_b, timeout=30, what="every client to reconnect to pod B")
        await eventually(lambda: all(len(v.acks) == 2 for v in on_a), what="rejoins")
        assert all(v.acks[-1]["worker"].startswith("pod-b/") for v in on_a)
        response = await pod_b.publish("final", "score", {"home": 1})
        assert response.json()["workers"] == 2, "pod A's workers are gone"
        await eventually(lambda: all(v.got("score") == [{"home": 1}] for v in clients))
        assert all(v.client.connected for v in clients), "no client gave up"
    finally:
        # Clients first: once the proxy is gone they would only retry against a closed port.
        await shutdown_viewers(clients)
        await proxy.close()


async def test_a_worker_above_recommended_sheds_its_newest_sockets_paced(
    server_factory, publish_token, viewers
):
    interval_ms = 50
    pod_a = server_factory(
        token=publish_token,
        name="pod-a",
        workers=1,
        extra=["--recommended-connections", "20", "--shed-buffer", "0",
               "--shed-interval-ms", str(interval_ms)],
    )  # fmt: skip
    # Started now, before pod A sheds: `server_factory` blocks this event loop, which also
    # carries the proxy and the clients, so starting it during the shed would bunch the drops.
    pod_b = server_factory(token=publish_token, name="pod-b", workers=1)
    proxy = await ServiceProxy([pod_a.port]).start()
    clients: list[Viewer] = []
    try:
        await wait_routable(proxy, 1)
        for _ in range(30):  # one at a time, so "newest" has a clear meaning
            clients += await viewers(proxy.url, 1, game="derby", **RECONNECT)
        # The new pod of a scale-up joins the Service: reconnecting clients can now land there.
        proxy.add(pod_b.port)
        await wait_routable(proxy, 2)

        await eventually(lambda: sum(bool(v.disconnect_times) for v in clients) >= 10,
                         what="the first shed")  # fmt: skip
        first_round = [v for v in clients if v.disconnect_times]
        first_drops = sorted(v.disconnect_times[0] for v in first_round)[:10]
        shed_first = {
            id(v)
            for v in clients
            if v.disconnect_times and v.disconnect_times[0] <= first_drops[-1]
        }
        assert shed_first == {id(v) for v in clients[20:]}, "the 10 newest went first"
        gaps = [b - a for a, b in itertools.pairwise(first_drops)]
        # Seen by the clients, whose loop may hand two drops over a few ms late: an unpaced
        # shed would show gaps of a millisecond or less.
        assert min(gaps) >= 0.5 * interval_ms / 1000, gaps
        assert first_drops[-1] - first_drops[0] >= 9 * 0.8 * interval_ms / 1000

        async def settled() -> bool:
            a = await pod_a.connected(0)
            b = await pod_b.connected(0)
            return a <= 20 and a + b == 30

        await eventually(settled, timeout=30, what="pod A at or below 20 and nobody lost")
        assert await pod_a.total("pushscale_sockets_shed_total") >= 10
        response = await pod_a.publish("derby", "goal", 1)
        assert response.status_code == 202
        await eventually(lambda: all(v.got("goal") == [1] for v in clients), what="everyone")
    finally:
        await shutdown_viewers(clients)
        await proxy.close()


async def test_shed_requests_need_the_admin_token(server_factory, viewers):
    admin = "admin-token-" + "z" * 16
    pod = server_factory(workers=1, extra=["--admin-token", admin])
    clients: list[Viewer] = []
    for _ in range(8):  # one at a time, so "newest" has a clear meaning
        clients += await viewers(pod.url, 1)
    shed_url = f"http://127.0.0.1:{pod.metrics_ports[0]}/admin/shed"
    async with httpx.AsyncClient() as http:
        nobody = await http.post(shed_url, json={"count": 5})
        wrong = await http.post(
            shed_url, json={"count": 5}, headers={"authorization": "Bearer nope"}
        )
        assert (nobody.status_code, wrong.status_code) == (401, 401)
        assert all(v.disconnects == [] for v in clients)
        bad = await http.post(
            shed_url, json={"count": 0}, headers={"authorization": f"Bearer {admin}"}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "bad_count"
        ok = await http.post(
            shed_url,
            json={"count": 5, "intervalMs": 20},
            headers={"authorization": f"Bearer {admin}"},
        )
    assert ok.status_code == 202
    assert ok.json() == {"shedding": 5, "intervalMs": 20.0}
    await eventually(lambda: sum(bool(v.disconnects) for v in clients) == 5, what="5 shed")
    assert set(id(v) for v in clients if v.disconnects) == set(id(v) for v in clients[3:])
    assert await pod.connected(0) == 3


async def test_shedding_is_off_without_an_admin_token(push_server):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{push_server.metrics_ports[0]}/admin/shed",
            json={"count": 1},
            headers={"authorization": "Bearer anything-at-all-xxxxxxxx"},
        )
    assert response.status_code == 403
    assert response.json()["error"] == "disabled"


async def test_above_max_connections_new_sockets_get_503_before_the_upgrade(
    server_factory, publish_token, viewers
):
    pod = server_factory(token=publish_token, workers=1, extra=["--max-connections", "10"])
    clients = await viewers(pod.url, 10, game="full")
    await eventually(lambda: all(v.acks for v in clients), what="joins")
    url = f"ws://127.0.0.1:{pod.port}/socket.io/?EIO=4&transport=websocket"
    for _ in range(3):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["retry-after"] == "5"
    assert await pod.total("pushscale_connections_rejected_total", reason="overload") == 3
    # The ten already connected did not notice.
    assert (await pod.publish("full", "ping", 1)).status_code == 202
    await eventually(lambda: all(v.got("ping") == [1] for v in clients))
    assert all(v.disconnects == [] for v in clients)
    # A freed slot is taken again.
    await clients[0].client.disconnect()
    await eventually(lambda: _connected_is(pod, 9), what="the slot to free up")
    again = await websockets.connect(url)
    await again.close()


async def _connected_is(pod, count: int) -> bool:
    return await pod.connected(0) == count
