"""The metrics API end to end: real push server pods, the real adapter process, real TLS.

Two "pods" (supervisors with two workers each, on consecutive metrics ports as in a pod) and
real socket.io clients; the adapter reads them from a static pods file, as on a laptop.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from adapter.quantity import QUANTITY
from tests.adapter.conftest import AdapterFactory, RunningAdapter, settles, static_pod
from tests.conftest import (
    RunningServer,
    ServerFactory,
    free_port_block,
    shutdown_viewers,
)

V2 = "/apis/custom.metrics.k8s.io/v1beta2"
V1 = "/apis/custom.metrics.k8s.io/v1beta1"
LIVE = V2 + "/namespaces/live"
PODS = LIVE + "/pods/*/socket_io_connected"


def pod_server(server_factory: ServerFactory, name: str, workers: int = 2) -> RunningServer:
    return server_factory(name=name, workers=workers, metrics_port=free_port_block(workers))


def entry(server: RunningServer, **fields: Any) -> dict[str, Any]:
    return static_pod(server.name, server.metrics_ports[0], len(server.metrics_ports), **fields)


async def values(adapter: RunningAdapter, path: str = PODS, **params: str) -> dict[str, int]:
    response = await adapter.get(path, params=params)
    assert response.status_code == 200, response.text
    return {
        item["describedObject"]["name"]: int(item["value"]) for item in response.json()["items"]
    }


@pytest.fixture
def two_pods(server_factory: ServerFactory) -> tuple[RunningServer, RunningServer]:
    return pod_server(server_factory, "push-a"), pod_server(server_factory, "push-b")


async def test_each_pod_is_the_exact_sum_of_its_workers_and_follows_the_clients(
    two_pods, adapter_factory: AdapterFactory, viewers
):
    a, b = two_pods
    adapter = adapter_factory([entry(a, deployment="push"), entry(b, deployment="push")])
    clients_a = await viewers(a.url, 7)
    await viewers(b.url, 5)
    per_worker = [await a.connected(w) for w in a.workers]
    assert sum(per_worker) == 7

    await settles(lambda: values(adapter), {"push-a": 7, "push-b": 5})

    await shutdown_viewers(clients_a[:3])
    more_b = await viewers(b.url, 4)
    assert more_b
    await settles(lambda: values(adapter), {"push-a": 4, "push-b": 9})
    deployment = await adapter.get(
        V2 + "/namespaces/live/deployments.apps/push/socket_io_connected"
    )
    assert deployment.json()["items"][0]["value"] == "13"


async def test_the_documents_carry_each_versions_field_names(two_pods, adapter_factory, viewers):
    a, b = two_pods
    adapter = adapter_factory([entry(a), entry(b)])
    await viewers(a.url, 3)
    await settles(lambda: values(adapter), {"push-a": 3, "push-b": 0})

    v2 = (await adapter.get(PODS, params={"labelSelector": "app=push"})).json()
    v1 = (
        await adapter.get(
            PODS.replace("v1beta2", "v1beta1"), params={"labelSelector": "app in (push)"}
        )
    ).json()
    assert v2["kind"] == v1["kind"] == "MetricValueList"
    assert (v2["apiVersion"], v1["apiVersion"]) == (
        "custom.metrics.k8s.io/v1beta2",
        "custom.metrics.k8s.io/v1beta1",
    )
    item2, item1 = v2["items"][0], v1["items"][0]
    assert set(item2) == {"describedObject", "metric", "timestamp", "value"}
    assert set(item1) == {"describedObject", "metricName", "timestamp", "value", "selector"}
    assert item2["metric"] == {"name": "socket_io_connected", "selector": None}
    assert item2["describedObject"] == {
        "kind": "Pod", "namespace": "live", "name": "push-a", "apiVersion": "/v1"
    }  # fmt: skip
    assert QUANTITY.fullmatch(item2["value"]) and item2["value"] == "3"


async def test_a_killed_scrape_process_is_replaced_and_the_values_come_back(
    server_factory: ServerFactory, adapter_factory: AdapterFactory, viewers
):
    pod = pod_server(server_factory, "push-a")
    adapter = adapter_factory([entry(pod)])
    await viewers(pod.url, 3)
    await settles(lambda: values(adapter), {"push-a": 3})
    (scraping,) = _children(adapter.process.pid)
    os.kill(scraping, signal.SIGKILL)
    await settles(lambda: _replaced(adapter, scraping), True)
    await viewers(pod.url, 2)
    await settles(lambda: values(adapter), {"push-a": 5})
    assert "the scrape process is gone (it closed its socket; exit code -9)" in adapter.log()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _replaced(adapter: RunningAdapter, killed: int) -> bool:
    children = _children(adapter.process.pid)
    return len(children) == 1 and children[0] != killed


async def test_a_pod_with_a_stopped_worker_is_left_out_and_the_debug_view_says_why(
    two_pods, adapter_factory, viewers
):
    a, b = two_pods
    adapter = adapter_factory(
        [entry(a, deployment="push"), entry(b, deployment="push")],
    )
    await viewers(b.url, 6)
    await settles(lambda: values(adapter), {"push-a": 0, "push-b": 6})

    frozen = b.worker_pids[1]
    os.kill(frozen, signal.SIGSTOP)
    try:
        await settles(lambda: values(adapter), {"push-a": 0})
        debug = (await adapter.get("/debug/pods")).text
        assert "live/push-b" in debug and "LEFT OUT: worker 1: timeout after 0.5 s" in debug
        assert (
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/live/pods/*/socket_io_connected"
            in debug
        )
        as_json = (await adapter.get("/debug/pods", params={"format": "json"})).json()
        pod_b = next(pod for pod in as_json["pods"] if pod["name"] == "push-b")
        assert [w["error"] for w in pod_b["workers"]] == [None, "timeout after 0.5 s"]
        assert pod_b["workers"][0]["value"] is not None

        # A sum over the deployment would under-count: an error, never a smaller number.
        deployment = await adapter.get(
            V2 + "/namespaces/live/deployments.apps/push/socket_io_connected"
        )
        assert deployment.status_code == 503
        status = deployment.json()
        assert (status["kind"], status["reason"], status["code"]) == (
            "Status",
            "ServiceUnavailable",
            503,
        )
        assert "pod push-b: worker 1: timeout after 0.5 s" in status["message"]

        single = await adapter.get(V2 + "/namespaces/live/pods/push-b/socket_io_connected")
        assert single.status_code == 404
        assert "pod push-b: worker 1: timeout" in single.json()["message"]
    finally:
        os.kill(frozen, signal.SIGCONT)
    await settles(lambda: values(adapter), {"push-a": 0, "push-b": 6})


async def test_objects_sum_their_pods(two_pods, adapter_factory, viewers):
    a, b = two_pods
    adapter = adapter_factory(
        [entry(a, deployment="push", labels={"app": "push", "track": "a"}), entry(b)],
        services=[{"namespace": "live", "name": "track-a", "selector": {"track": "a"}}],
    )
    await viewers(a.url, 4)
    await viewers(b.url, 2)
    await settles(lambda: values(adapter), {"push-a": 4, "push-b": 2})

    async def one(path: str) -> tuple[str, str, dict[str, str]]:
        item = (await adapter.get(V2 + path)).json()["items"][0]
        return item["value"], item["metric"]["name"], item["describedObject"]

    assert await one("/namespaces/live/services/track-a/socket_io_connected") == (
        "4", "socket_io_connected",
        {"kind": "Service", "namespace": "live", "name": "track-a", "apiVersion": "/v1"},
    )  # fmt: skip
    assert await one("/namespaces/live/metrics/socket_io_connected") == (
        "6", "socket_io_connected", {"kind": "Namespace", "name": "live", "apiVersion": "/v1"},
    )  # fmt: skip
    assert (await one("/namespaces/live/deployments.apps/push/socket_io_connected"))[0] == "4"
    assert await values(adapter, labelSelector="track=a") == {"push-a": 4}
    assert await values(adapter, labelSelector="track!=a") == {"push-b": 2}
    assert await values(adapter, labelSelector="!track") == {"push-b": 2}
    single = await values(adapter, V2 + "/namespaces/live/pods/push-b/socket_io_connected")
    assert single == {"push-b": 2}


async def test_counters_are_served_summed_and_as_a_rate_with_its_window(
    two_pods, adapter_factory, viewers
):
    a, b = two_pods
    adapter = adapter_factory([entry(a), entry(b)])
    await viewers(a.url, 5)

    async def totals() -> dict[str, int]:
        return await values(adapter, V2 + "/namespaces/live/pods/*/socket_io_connect_total")

    await settles(totals, {"push-a": 5, "push-b": 0})
    rate = (await adapter.get(V2 + "/namespaces/live/pods/push-a/socket_io_connect")).json()
    [item] = rate["items"]
    assert item["metric"]["name"] == "socket_io_connect"
    assert item["windowSeconds"] == 10
    assert QUANTITY.fullmatch(item["value"])
    v1 = (await adapter.get(V1 + "/namespaces/live/pods/push-a/socket_io_connect")).json()
    assert v1["items"][0]["window"] == 10


@pytest.mark.parametrize(
    ("path", "params", "code", "reason", "words"),
    [
        (PODS, {"labelSelector": "app in (push"}, 400, "BadRequest", "labelSelector"),
        (PODS, {"metricLabelSelector": "==x"}, 400, "BadRequest", "metricLabelSelector"),
        (LIVE + "/pods/*/nope", {}, 404, "NotFound", "could not find the metric nope"),
        (LIVE + "/pods/ghost/socket_io_connected", {}, 404, "NotFound", '"ghost" not found'),
        (LIVE + "/services/ghost/socket_io_connected", {}, 404, "NotFound", '"ghost" not found'),
        (LIVE + "/nodes/n1/socket_io_connected", {}, 404, "NotFound", "nodes"),
        (PODS.replace("v1beta2", "v9"), {}, 404, "NotFound", "v9"),
        ("/no/such/path", {}, 404, "NotFound", "could not find the requested resource"),
        (PODS.replace("/live/", "/other/"), {}, 404, "NotFound", "no pods matched"),
    ],
    ids=["bad-label-selector", "bad-metric-selector", "unknown-metric", "unknown-pod",
         "unknown-service", "unserved-resource", "unknown-version", "unknown-path",
         "empty-namespace"],
)  # fmt: skip
async def test_errors_are_kubernetes_status_documents(
    two_pods, adapter_factory, path, params, code, reason, words
):
    a, b = two_pods
    adapter = adapter_factory([entry(a), entry(b)])
    await settles(lambda: values(adapter), {"push-a": 0, "push-b": 0})
    response = await adapter.get(path, params=params)
    assert response.status_code == code
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert status["kind"] == "Status" and status["apiVersion"] == "v1"
    assert status["status"] == "Failure"
    assert (status["reason"], status["code"]) == (reason, code)
    assert words in status["message"]


async def test_discovery_answers_from_memory_before_any_pod_answers(adapter_factory):
    dead = free_port_block(2)
    adapter = adapter_factory([static_pod("nobody-home", dead, 2)])
    legacy = await adapter.get("/apis", headers={"Accept": "application/json"})
    assert legacy.status_code == 200 and legacy.json()["kind"] == "APIGroupList"
    aggregated = await adapter.get(
        "/apis",
        headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"},
    )
    assert aggregated.status_code == 200
    assert aggregated.json()["kind"] == "APIGroupDiscoveryList"
    assert "g=apidiscovery.k8s.io" in aggregated.headers["content-type"]
    group = (await adapter.get("/apis/custom.metrics.k8s.io")).json()
    assert group["preferredVersion"]["version"] == "v1beta2"
    for version in ("v1beta1", "v1beta2"):
        listing = (await adapter.get(f"/apis/custom.metrics.k8s.io/{version}")).json()
        names = {resource["name"] for resource in listing["resources"]}
        assert "pods/socket_io_connected" in names and "namespaces/socket_io_connected" in names
    assert (await adapter.get("/openapi/v2")).json()["swagger"] == "2.0"
    index = (await adapter.get("/openapi/v3")).json()
    for entry_ in index["paths"].values():
        document = (await adapter.get(entry_["serverRelativeURL"])).json()
        assert document["openapi"].startswith("3.")
    # Nothing answers, so nothing is served: a 404 that says why, never a partial answer.
    response = await adapter.get(V2 + "/namespaces/live/pods/*/socket_io_connected")
    assert response.status_code == 404
    assert "pod nobody-home: worker 0: connection refused" in response.json()["message"]
    assert (await adapter.get("/readyz")).status_code == 200


async def test_the_adapters_own_metrics_and_probes(two_pods, adapter_factory):
    a, b = two_pods
    adapter = adapter_factory([entry(a), entry(b), static_pod("gone", free_port_block(1), 1)])
    await settles(lambda: values(adapter), {"push-a": 0, "push-b": 0})
    for probe in ("/healthz", "/livez", "/readyz"):
        assert (await adapter.get(probe)).text == "ok"
    text = (await adapter.get("/metrics")).text
    assert 'pushscale_adapter_pods{state="served"} 2.0' in text
    assert 'pushscale_adapter_pods{state="left_out"} 1.0' in text
    assert 'pushscale_adapter_scrape_errors_total{reason="refused"}' in text
    assert "pushscale_adapter_scrape_targets 5.0" in text
    assert "pushscale_adapter_value_age_seconds_bucket" in text
    assert (
        'pushscale_adapter_request_duration_seconds_count{code="200",path="/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/{resource}/{name}/{metric}"}'
        in text
    )


async def test_concurrent_requests_share_scrape_rounds(two_pods, adapter_factory):
    a, b = two_pods
    adapter = adapter_factory([entry(a), entry(b)])
    await settles(lambda: values(adapter), {"push-a": 0, "push-b": 0})

    async def rounds_so_far() -> float:
        text = (await adapter.get("/metrics")).text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith("pushscale_adapter_scrape_round_seconds_count")
        )
        return float(line.split()[-1])

    before = await rounds_so_far()
    async with adapter.client() as client:
        answers = await asyncio.gather(*(client.get(PODS) for _ in range(100)))
    after = await rounds_so_far()
    assert all(answer.status_code == 200 for answer in answers)
    assert after - before <= 3, "100 requests, but rounds come from the scrape loop"
