"""adapter.kube against the fake API server, through the official client over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from adapter.kube import KubeApi, KubeError, WatchExpired
from adapter.pods import SCRAPE_LABEL
from tests.fake_kube import FakeKube, pod_object, service_object

SCRAPED = {"app": "push", SCRAPE_LABEL: "true"}
SELECTOR = f"{SCRAPE_LABEL}=true"


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture
def api(fake: FakeKube) -> Iterator[KubeApi]:
    with fake.api() as client:
        yield client


async def test_list_pods_keeps_the_wire_json_and_filters_by_label(fake, api):
    fake.add_pod(pod_object("b", "push-1", SCRAPED, "10.0.0.2", metrics_port=9300))
    fake.add_pod(pod_object("a", "push-0", SCRAPED, "10.0.0.1"))
    fake.add_pod(pod_object("a", "redis-0", {"app": "redis"}, "10.0.0.3"))

    items, version = await api.list_pods(SELECTOR)

    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [
        ("a", "push-0"),
        ("b", "push-1"),
    ]
    assert version == str(fake.resource_version)
    assert items[1]["metadata"]["annotations"] == {"pushscale.io/metrics-port": "9300"}
    assert items[0]["status"]["podIP"] == "10.0.0.1"
    assert fake.requests[-1].query == {"labelSelector": SELECTOR}


async def test_read_service_and_config_map_or_none(fake, api):
    fake.add_service(service_object("default", "push", {"app": "push"}))
    fake.add_config_map({"metadata": {"name": "rules", "namespace": "ops"}, "data": {"a": "1"}})

    service = await api.read_service("default", "push")
    assert service is not None
    assert service["kind"] == "Service"
    assert service["spec"]["selector"] == {"app": "push"}
    config_map = await api.read_config_map("ops", "rules")
    assert config_map is not None
    assert config_map["data"] == {"a": "1"}
    assert await api.read_service("default", "missing") is None
    assert await api.read_config_map("ops", "missing") is None


async def test_token_review(fake, api):
    fake.tokens["hpa-token"] = {
        "username": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "uid": "u-1",
        "groups": ["system:serviceaccounts", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["kcm-0"]},
    }

    def review(token: str) -> dict[str, object]:
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }

    known = await api.create_token_review(review("hpa-token"))
    unknown = await api.create_token_review(review("stolen"))

    assert known["status"]["authenticated"] is True
    assert known["status"]["user"] == fake.tokens["hpa-token"]
    # Go's omitempty: a failed review has no `authenticated` field at all.
    assert "authenticated" not in unknown["status"]
    assert unknown["status"]["error"]
    assert [spec["token"] for spec in fake.token_reviews] == ["hpa-token", "stolen"]


async def test_subject_access_review_follows_the_policy(fake, api):
    def policy(spec):
        allowed = spec["user"] == "hpa" and spec["resourceAttributes"]["verb"] == "get"
        return allowed, "RBAC: allowed by ClusterRoleBinding" if allowed else ""

    fake.access_policy = policy

    def review(user: str, verb: str) -> dict[str, object]:
        attributes = {"group": "custom.metrics.k8s.io", "resource": "pods", "verb": verb}
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["g"], "resourceAttributes": attributes},
        }

    allowed = await api.create_subject_access_review(review("hpa", "get"))
    denied = await api.create_subject_access_review(review("eve", "get"))

    assert allowed["status"] == {"allowed": True, "reason": "RBAC: allowed by ClusterRoleBinding"}
    assert denied["status"] == {"allowed": False}
    assert [spec["user"] for spec in fake.access_reviews] == ["hpa", "eve"]


async def test_wrong_token_is_a_kube_error_without_the_token(fake):
    secret = "wrong-token-that-must-not-leak"
    with fake.api(token=secret) as api, pytest.raises(KubeError) as caught:
        await api.list_pods(SELECTOR)
    assert caught.value.status == 401
    assert caught.value.reason == "Unauthorized"
    assert str(caught.value) == f"list pods ({SELECTOR}): HTTP 401 Unauthorized: Unauthorized"
    assert secret not in repr(caught.value)


async def test_unavailable_and_unreachable_are_kube_errors(fake, api):
    fake.set_unavailable(True)
    with pytest.raises(KubeError) as caught:
        await api.read_service("default", "push")
    assert caught.value.status == 503
    assert "ServiceUnavailable" in str(caught.value)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    configuration = fake.configuration()
    configuration.host = f"http://127.0.0.1:{dead}"
    unreachable = KubeApi(ApiClient(configuration))
    with pytest.raises(KubeError) as caught:
        await unreachable.list_pods(SELECTOR)
    unreachable.close()
    assert caught.value.status is None
    assert fake.token not in str(caught.value)


def _events(api: KubeApi, since: str, seconds: int = 1) -> list[tuple[str, str | None, str]]:
    return [
        (kind, obj["metadata"].get("name"), obj["metadata"]["resourceVersion"])
        for kind, obj in api.watch_pods(SELECTOR, since, seconds)
    ]


async def test_watch_yields_events_after_the_version_then_ends(fake, api):
    fake.add_pod(pod_object("ns", "old", SCRAPED, "10.0.0.1"))
    _, since = await api.list_pods(SELECTOR)
    fake.add_pod(pod_object("ns", "new", SCRAPED, None, phase="Pending"))
    fake.modify_pod(pod_object("ns", "new", SCRAPED, "10.0.0.2"))
    bookmark = fake.bookmark()
    fake.modify_pod(pod_object("ns", "old", {"app": "push"}, "10.0.0.1"))  # leaves the selection
    fake.add_pod(pod_object("ns", "other", {"app": "redis"}, "10.0.0.3"))  # never selected
    fake.delete_pod("ns", "new")

    started = time.monotonic()
    events = await asyncio.to_thread(_events, api, since)

    v = int(since)
    assert events == [
        ("ADDED", "new", str(v + 1)),
        ("MODIFIED", "new", str(v + 2)),
        ("BOOKMARK", None, str(bookmark)),
        ("DELETED", "old", str(v + 4)),
        ("DELETED", "new", str(v + 6)),
    ]
    assert 0.9 < time.monotonic() - started < 3  # the server's timeoutSeconds ends it


async def test_watch_from_a_compacted_version_is_watch_expired(fake, api):
    _, since = await api.list_pods(SELECTOR)
    compacted = fake.expire_history()

    with pytest.raises(WatchExpired) as caught:
        await asyncio.to_thread(_events, api, since)

    assert caught.value.status == 410
    assert f"too old resource version: {since} ({compacted})" in str(caught.value)
    _, fresh = await api.list_pods(SELECTOR)
    assert await asyncio.to_thread(_events, api, fresh) == []


async def test_stop_ends_a_blocked_watch_at_once(api):
    _, since = await api.list_pods(SELECTOR)
    watch = api.watch_pods(SELECTOR, since, 30)
    done = threading.Event()

    def consume() -> None:
        for _ in watch:
            pass
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    await asyncio.sleep(0.3)  # the watch is open and waiting on its socket
    started = time.monotonic()
    watch.stop()
    thread.join(5)
    assert done.is_set()
    assert time.monotonic() - started < 1


def test_from_config_reads_a_kubeconfig(fake: FakeKube, tmp_path: Path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: tester, user: {{token: {fake.token}}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: tester}}}}]
current-context: fake
"""
    )
    fake.add_pod(pod_object("ns", "p", SCRAPED, "10.0.0.1"))
    api = KubeApi.from_config(str(kubeconfig))
    try:
        items, _ = asyncio.run(api.list_pods(SELECTOR))
    finally:
        api.close()
    assert [item["metadata"]["name"] for item in items] == ["p"]


def test_from_config_without_a_file_is_a_kube_error(tmp_path: Path):
    with pytest.raises(KubeError, match="no Kubernetes API configuration"):
        KubeApi.from_config(str(tmp_path / "missing"))
