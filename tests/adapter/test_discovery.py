"""adapter.discovery: the laptop file, and the pod watch against the fake API server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from adapter.discovery import StaticDiscovery, WatchDiscovery, backoff_seconds
from adapter.kube import KubeApi
from adapter.pods import SCRAPE_LABEL, Service, StaticPodsError
from tests.conftest import eventually
from tests.fake_kube import FakeKube, pod_object, service_object

SCRAPED = {"app": "push", SCRAPE_LABEL: "true"}
LOGGER = "pushscale.adapter.discovery"


def names(discovery: WatchDiscovery | StaticDiscovery) -> list[str]:
    return [f"{pod.namespace}/{pod.name}" for pod in discovery.pods()]


def watches(fake: FakeKube) -> list[dict[str, str]]:
    return [seen.query for seen in fake.requests if seen.query.get("watch") == "true"]


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (8, 30.0), (5000, 30.0)],
    ids=["none", "first", "second", "third", "reaches-cap", "stays-capped", "no-overflow"],
)
def test_backoff(failures, seconds):
    assert backoff_seconds(failures, 0.5, 30.0) == seconds


# The laptop file.


async def test_static_discovery_serves_the_file(tmp_path: Path):
    path = tmp_path / "pods.yaml"
    path.write_text(
        "pods:\n"
        "  - {namespace: games, name: push-b, ip: 127.0.0.1, metricsPort: 9200, workers: 2}\n"
        "  - {name: push-a, labels: {app: push}, ip: 127.0.0.1}\n"
        "services:\n"
        "  - {name: push, selector: {app: push}}\n"
    )
    discovery = StaticDiscovery(path)

    assert discovery.synced
    await discovery.wait_synced()
    assert names(discovery) == ["default/push-a", "games/push-b"]
    assert discovery.pods()[1].metrics_url(1) == "http://127.0.0.1:9201/metrics"
    assert await discovery.service("default", "push") == Service("default", "push", {"app": "push"})
    assert await discovery.service("default", "other") is None
    task = asyncio.create_task(discovery.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pods: [{name: a, ip: 127.0.0.1, port: 1}]", "pods.yaml: pods[0]: unknown key 'port'"),
        (None, "pods.yaml: cannot read: "),
    ],
    ids=["bad-file", "missing-file"],
)
def test_static_discovery_refuses_a_bad_file(tmp_path: Path, text, message):
    path = tmp_path / "pods.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(StaticPodsError) as caught:
        StaticDiscovery(path)
    assert str(caught.value).startswith(str(tmp_path))
    assert message in str(caught.value)


# The pod watch.

Start = Callable[..., Awaitable[WatchDiscovery]]


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture
async def watching(fake: FakeKube) -> AsyncIterator[Start]:
    """Start `WatchDiscovery.run()` with test-sized timeouts; stopped at the end of the test."""
    running: list[tuple[asyncio.Task[None], KubeApi]] = []

    async def start(*, synced: bool = True, **options: Any) -> WatchDiscovery:
        api = KubeApi(ApiClient(fake.configuration()))
        options = {
            "watch_timeout_seconds": 1,
            "backoff_first_seconds": 0.05,
            "backoff_max_seconds": 0.2,
            **options,
        }
        discovery = WatchDiscovery(api, **options)
        running.append((asyncio.create_task(discovery.run()), api))
        if synced:
            await asyncio.wait_for(discovery.wait_synced(), 5)
        return discovery

    yield start
    for task, api in running:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        api.close()


async def test_initial_list_has_the_labelled_pods_sorted(fake: FakeKube, watching: Start):
    fake.add_pod(pod_object("b", "push-0", SCRAPED, "10.0.0.2", deployment="push"))
    fake.add_pod(pod_object("a", "push-1", SCRAPED, "10.0.0.1", metrics_port=9300, workers=2))
    fake.add_pod(pod_object("a", "redis-0", {"app": "redis"}, "10.0.0.3"))

    discovery = await watching()

    assert discovery.synced
    assert names(discovery) == ["a/push-1", "b/push-0"]
    first, second = discovery.pods()
    assert (first.metrics_port, first.workers, first.deployment) == (9300, 2, None)
    assert second.deployment == "push"
    assert discovery.resource_version == str(fake.resource_version)
    # The label selector is the server's work, not ours.
    assert fake.requests[0].query["labelSelector"] == f"{SCRAPE_LABEL}=true"


async def test_added_modified_deleted(fake: FakeKube, watching: Start):
    discovery = await watching()
    assert discovery.pods() == ()

    fake.add_pod(pod_object("ns", "p", SCRAPED, None, phase="Pending"))
    await eventually(lambda: names(discovery) == ["ns/p"], 3, "the added pod")
    assert discovery.pods()[0].excluded == "phase Pending, not Running"

    fake.modify_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1"))
    await eventually(lambda: discovery.pods()[0].excluded is None, 3, "Pending → Running")

    fake.modify_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1", deleting=True))
    await eventually(lambda: discovery.pods()[0].deleting, 3, "deletionTimestamp set")
    assert discovery.pods()[0].excluded == "terminating (deletionTimestamp set)"

    fake.delete_pod("ns", "p")
    await eventually(lambda: discovery.pods() == (), 3, "the deleted pod gone")
    assert discovery.lists == 1


async def test_a_pod_losing_the_label_leaves(fake: FakeKube, watching: Start):
    fake.add_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1"))
    discovery = await watching()
    fake.modify_pod(pod_object("ns", "p", {"app": "push"}, "10.0.0.1"))
    await eventually(lambda: discovery.pods() == (), 3, "the unlabelled pod gone")


async def test_bookmark_only_moves_the_version(fake: FakeKube, watching: Start):
    fake.add_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1"))
    discovery = await watching()
    pods = discovery.pods()

    version = str(fake.bookmark())

    await eventually(lambda: discovery.resource_version == version, 3, "the bookmark")
    assert discovery.pods() == pods
    # The next watch (the 1 s one ends) starts from the bookmark.
    await eventually(
        lambda: any(q["resourceVersion"] == version for q in watches(fake)), 3, "a later watch"
    )
    assert all(q["allowWatchBookmarks"] == "true" for q in watches(fake))


async def test_an_expired_watch_lists_again(fake: FakeKube, watching: Start):
    fake.add_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1"))
    discovery = await watching()
    await eventually(lambda: len(watches(fake)) >= 1, 3, "the watch")

    fake.expire_history()

    await eventually(lambda: discovery.lists == 2, 3, "a second list")
    assert names(discovery) == ["ns/p"]
    fake.add_pod(pod_object("ns", "q", SCRAPED, "10.0.0.2"))
    await eventually(lambda: names(discovery) == ["ns/p", "ns/q"], 3, "watching again")


async def test_changes_missed_while_expired_are_replaced_by_the_list(
    fake: FakeKube, watching: Start, caplog: pytest.LogCaptureFixture
):
    fake.add_pod(pod_object("ns", "stays", SCRAPED, "10.0.0.1"))
    fake.add_pod(pod_object("ns", "goes", SCRAPED, "10.0.0.2"))
    discovery = await watching()
    assert names(discovery) == ["ns/goes", "ns/stays"]

    # The API server goes away; while it is down, one pod goes, one comes, and the history is
    # compacted, so the watch can only resume with a 410.
    before = len(fake.requests)
    fake.set_unavailable(True)
    await eventually(lambda: len(fake.requests) > before, 3, "a watch refused")
    fake.delete_pod("ns", "goes")
    fake.add_pod(pod_object("ns", "comes", SCRAPED, "10.0.0.3"))
    fake.expire_history()
    assert names(discovery) == ["ns/goes", "ns/stays"]
    fake.set_unavailable(False)

    await eventually(lambda: names(discovery) == ["ns/comes", "ns/stays"], 3, "the new list")
    assert discovery.lists == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(
        m.startswith("watching pods failed (1 in a row), retrying in 0.05 s: watch pods")
        and "HTTP 503 ServiceUnavailable" in m
        for m in warnings
    )


async def test_bad_annotations_are_skipped_and_logged_once(
    fake: FakeKube, watching: Start, caplog: pytest.LogCaptureFixture
):
    fake.add_pod(pod_object("ns", "bad", SCRAPED, "10.0.0.1", metrics_port="abc"))
    fake.add_pod(pod_object("ns", "good", SCRAPED, "10.0.0.2"))
    discovery = await watching()
    assert names(discovery) == ["ns/good"]

    fake.expire_history()  # the same bad version again, in a second list
    await eventually(lambda: discovery.lists == 2, 3, "a second list")
    fake.modify_pod(pod_object("ns", "good", SCRAPED, "10.0.0.2", workers=0))
    fake.add_pod(pod_object("ns", "later", SCRAPED, "10.0.0.3"))
    await eventually(lambda: names(discovery) == ["ns/later"], 3, "good gone bad, later added")

    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert [m for m in logged if m.startswith("pod left out")] == [
        "pod left out: pod ns/bad: annotation pushscale.io/metrics-port must be an integer"
        " from 1 to 65535, not 'abc'",
        "pod left out: pod ns/good: annotation pushscale.io/workers must be an integer"
        " from 1 to 64, not '0'",
    ]


async def test_api_down_at_start_then_up(
    fake: FakeKube, watching: Start, caplog: pytest.LogCaptureFixture
):
    fake.add_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1"))
    fake.set_unavailable(True)

    discovery = await watching(synced=False)
    await eventually(lambda: len(fake.requests) >= 3, 3, "retried lists")
    assert not discovery.synced
    assert discovery.pods() == ()
    fake.set_unavailable(False)

    await asyncio.wait_for(discovery.wait_synced(), 3)
    assert names(discovery) == ["ns/p"]
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert (
        warnings[0]
        .getMessage()
        .startswith("listing pods failed (1 in a row), retrying in 0.05 s: list pods")
    )
    # Doubling up to the cap.
    assert "retrying in 0.1 s" in warnings[1].getMessage()


async def test_cancel_stops_the_watch_promptly(fake: FakeKube):
    with fake.api() as api:
        discovery = WatchDiscovery(api, watch_timeout_seconds=30)
        task = asyncio.create_task(discovery.run())
        await asyncio.wait_for(discovery.wait_synced(), 5)
        await eventually(lambda: len(watches(fake)) >= 1, 3, "the watch")
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 1
        fake.add_pod(pod_object("ns", "late", SCRAPED, "10.0.0.1"))
        await asyncio.sleep(0.2)
        assert discovery.pods() == ()


async def test_service_is_read_and_cached(fake: FakeKube):
    fake.add_service(service_object("ns", "push", {"app": "push"}))
    now = [100.0]
    with fake.api() as api:
        discovery = WatchDiscovery(api, service_cache_seconds=10, clock=lambda: now[0])

        def reads() -> int:
            return sum(1 for seen in fake.requests if "/services/" in seen.path)

        assert await discovery.service("ns", "push") == Service("ns", "push", {"app": "push"})
        assert await discovery.service("ns", "missing") is None
        now[0] += 9.9
        await discovery.service("ns", "push")
        await discovery.service("ns", "missing")
        assert reads() == 2
        now[0] += 0.2
        fake.add_service(service_object("ns", "missing", None))
        assert await discovery.service("ns", "missing") == Service("ns", "missing", {})
        assert reads() == 3
