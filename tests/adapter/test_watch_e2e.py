"""The pod watch end to end: the adapter process finds real push server pods through the fake API.

`pushscale adapter --kubeconfig <FakeKube>` without `--static-pods` lists and watches the pods
labelled `pushscale.io/scrape=true`, as in a cluster. Two real push server "pods" (two workers
each, on consecutive metrics ports) are registered in the fake as Pod objects owned by a
Deployment's ReplicaSet; real socket.io clients connect to them. Each test changes the pods in
the fake and waits for the API's answer to follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.pods import SCRAPE_LABEL
from tests.adapter.conftest import AdapterFactory, RunningAdapter, settles
from tests.conftest import RunningServer, free_port_block, start_server
from tests.fake_kube import FakeKube, JsonObject, pod_object, service_object

V2 = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/live"
PODS = V2 + "/pods/*/socket_io_connected"


@pytest.fixture(scope="module")
def push_pods(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two pods for the module; each test registers them in its own fake API server."""
    where = tmp_path_factory.mktemp("push")
    servers = [
        start_server(where, redis_url, workers=2, name=name, metrics_port=free_port_block(2))
        for name in ("push-a", "push-b")
    ]
    yield servers[0], servers[1]
    for server in servers:
        server.stop()


def pod_of(server: RunningServer, *, deleting: bool = False, **labels: str) -> JsonObject:
    """The Pod object of a push server pod, as the Deployment "push" makes it."""
    return pod_object(
        "live",
        server.name,
        {"app": "push", SCRAPE_LABEL: "true", **labels},
        "127.0.0.1",
        metrics_port=server.metrics_ports[0],
        workers=len(server.metrics_ports),
        deployment="push",
        deleting=deleting,
    )


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


Watching = Callable[[], RunningAdapter]


@pytest.fixture
def watching(fake: FakeKube, adapter_factory: AdapterFactory, tmp_path: Path) -> Watching:
    """Start the adapter on the pod watch (requested after `fake`, so it stops first)."""
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")

    def start() -> RunningAdapter:
        # A watch event shows in the answers from the next scrape round on: rounds every
        # 0.2 s instead of every second keep each step of a test short.
        flags = ["--kubeconfig", str(kubeconfig), "--authentication-skip"]
        return adapter_factory(None, extra=[*flags, "--scrape-interval-seconds", "0.2"])

    return start


async def values(adapter: RunningAdapter, path: str = PODS, **params: str) -> dict[str, int]:
    """Every served pod's value; {} when no pod can be served (a 404 Status)."""
    response = await adapter.get(path, params=params)
    if response.status_code == 404 and path == PODS:
        return {}
    assert response.status_code == 200, response.text
    return {
        item["describedObject"]["name"]: int(item["value"]) for item in response.json()["items"]
    }


def value_of(adapter: RunningAdapter, path: str) -> Callable[[], Any]:
    async def read() -> str | int:
        response = await adapter.get(V2 + path)
        if response.status_code != 200:
            return response.status_code
        return str(response.json()["items"][0]["value"])

    return read


def pod_lists(fake: FakeKube) -> int:
    return sum(
        1 for seen in fake.requests if seen.path == "/api/v1/pods" and "watch" not in seen.query
    )


async def test_the_listed_pods_are_served_with_exact_sums(push_pods, fake, watching, viewers):
    a, b = push_pods
    fake.add_pod(pod_of(a))
    fake.add_pod(pod_of(b))
    # Not labelled for scraping, and nothing listens on its port: the watch never asks for it.
    fake.add_pod(pod_object("live", "other", {"app": "other"}, "127.0.0.1", metrics_port=1))
    adapter = watching()
    await viewers(a.url, 3)
    await viewers(b.url, 2)
    await settles(lambda: values(adapter), {"push-a": 3, "push-b": 2})
    per_worker = [await a.connected(w) for w in a.workers]
    await viewers(a.url, 4)
    await settles(lambda: values(adapter), {"push-a": 7, "push-b": 2})
    assert sum(per_worker) == 3
    assert "pods listed: 2 with pushscale.io/scrape=true" in adapter.log()


async def test_pods_come_and_go_with_the_watch(push_pods, fake, watching, viewers):
    a, b = push_pods
    fake.add_pod(pod_of(a))
    adapter = watching()
    await viewers(a.url, 2)
    await viewers(b.url, 5)
    await settles(lambda: values(adapter), {"push-a": 2})

    fake.add_pod(pod_of(b))
    await settles(lambda: values(adapter), {"push-a": 2, "push-b": 5})

    fake.modify_pod(pod_of(b, deleting=True))
    await settles(lambda: values(adapter), {"push-a": 2})
    debug = (await adapter.get("/debug/pods")).text
    assert "live/push-b" in debug and "LEFT OUT: terminating" in debug
    # A terminating pod holds no sockets the HPA should count: the deployment is just push-a.
    assert await value_of(adapter, "/deployments.apps/push/socket_io_connected")() == "2"

    fake.delete_pod("live", "push-b")

    async def debugged() -> bool:
        return "push-b" in (await adapter.get("/debug/pods")).text

    await settles(debugged, False)
    assert await values(adapter) == {"push-a": 2}
    fake.delete_pod("live", "push-a")
    none: dict[str, int] = {}
    await settles(lambda: values(adapter), none)
    response = await adapter.get(PODS)
    assert response.json()["message"].endswith("no pods matched")


async def test_an_expired_watch_lists_again_and_catches_up(push_pods, fake, watching, viewers):
    a, b = push_pods
    fake.add_pod(pod_of(a))
    fake.add_pod(pod_of(b))
    adapter = watching()
    await viewers(a.url, 1)
    await viewers(b.url, 2)
    await settles(lambda: values(adapter), {"push-a": 1, "push-b": 2})

    # The API server goes away; while it is down, push-b is deleted and push-a relabelled,
    # and those events are compacted away. The adapter serves what it knew meanwhile.
    fake.set_unavailable(True)
    fake.delete_pod("live", "push-b")
    fake.modify_pod(pod_of(a, track="a"))
    fake.expire_history()
    assert await values(adapter) == {"push-a": 1, "push-b": 2}
    fake.set_unavailable(False)

    # Back, the watch from the old version is 410 Expired: the adapter lists again.
    await settles(lambda: values(adapter), {"push-a": 1})
    assert await values(adapter, labelSelector="track=a") == {"push-a": 1}
    assert pod_lists(fake) == 2
    assert "pod watch expired, listing again" in adapter.log()


async def test_services_and_deployments_sum_their_pods(push_pods, fake, watching, viewers):
    a, b = push_pods
    fake.add_pod(pod_of(a, track="a"))
    fake.add_pod(pod_of(b, track="b"))
    fake.add_service(service_object("live", "track-a", {"app": "push", "track": "a"}))
    fake.add_service(service_object("live", "everyone", {"app": "push"}))
    adapter = watching()
    await viewers(a.url, 4)
    await viewers(b.url, 3)
    await settles(lambda: values(adapter), {"push-a": 4, "push-b": 3})

    assert await value_of(adapter, "/services/track-a/socket_io_connected")() == "4"
    assert await value_of(adapter, "/services/everyone/socket_io_connected")() == "7"
    assert await value_of(adapter, "/deployments.apps/push/socket_io_connected")() == "7"
    assert await value_of(adapter, "/deployments.apps/other/socket_io_connected")() == 404
    assert await value_of(adapter, "/services/nobody/socket_io_connected")() == 404

    # A Service the adapter has not read yet, while the API server is down: not a guess.
    fake.set_unavailable(True)
    response = await adapter.get(V2 + "/services/later/socket_io_connected")
    assert response.status_code == 503
    assert "cannot read services/later in live" in response.json()["message"]
    fake.set_unavailable(False)
