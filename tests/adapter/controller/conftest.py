"""Fixtures for the controller: the fake API server holding one push Deployment and its HPA.

`Cluster` puts a Deployment, its pods (Running and Ready) and the values the adapter would
serve for them into `tests.fake_kube.FakeKube`; `FakeClock` is the injected clock, so a test
drives the reconcile loop one sync at a time through minutes of policy time without sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from adapter.controller.instruments import Instruments
from adapter.controller.reconcile import CONNECT_RATE, Reconciler
from adapter.controller.settings import ControllerSettings
from adapter.kube import KubeApi
from tests.fake_kube import FakeKube, deployment_object, pod_object

NS = "live"
APP = {"app": "push"}
IDENTITY = "controller-0_1"
# Wall-clock time of the fake clock's zero, for Event timestamps.
EPOCH = 1_780_000_000.0


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def hpa_object(
    name: str = "push",
    *,
    annotations: Mapping[str, str] | None = None,
    average: str = "40000",
    target_type: str = "AverageValue",
    metric: str = "socket_io_connected",
    select_policy: str | None = "Disabled",
    min_replicas: int = 1,
    target_kind: str = "Deployment",
) -> dict[str, Any]:
    """An autoscaling/v2 HPA on the Deployment `push` as the docs write it."""
    target: dict[str, Any] = {"type": target_type}
    target["averageValue" if target_type == "AverageValue" else "value"] = average
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": "push"},
        "minReplicas": min_replicas,
        "maxReplicas": 20,
        "metrics": [{"type": "Pods", "pods": {"metric": {"name": metric}, "target": target}}],
    }
    if select_policy is not None:
        spec["behavior"] = {"scaleDown": {"selectPolicy": select_policy}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": {"pushscale.io/hysteresis": "true", **(annotations or {})},
        },
        "spec": spec,
    }


def ready_pod(name: str, *, ip: str = "10.0.0.1", **fields: Any) -> dict[str, Any]:
    pod = pod_object(NS, name, APP, ip, **fields)
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return pod


class Cluster:
    """One Deployment `push` in namespace `live`, its pods and their served values."""

    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake

    def deploy(
        self, connections: Mapping[str, float], rate: float = 10.0, **pod_fields: Any
    ) -> None:
        self.fake.add_deployment(deployment_object(NS, "push", len(connections), APP))
        for name in connections:
            self.fake.add_pod(ready_pod(name, **pod_fields))
        self.serve(connections, rate)

    def serve(self, connections: Mapping[str, float], rate: float = 10.0) -> None:
        """What the adapter serves: these connections, and `rate` connects/s per pod."""
        self.fake.set_pod_metric(NS, "socket_io_connected", connections)
        self.fake.set_pod_metric(NS, CONNECT_RATE, {name: rate for name in connections})

    @property
    def replicas(self) -> int:
        return int(self.fake.deployment(NS, "push")["spec"]["replicas"])

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.fake.events(NS) if reason is None or e["reason"] == reason]

    def writes(self) -> list[tuple[str, str]]:
        """Every request that changed something, in order."""
        return [(r.method, r.path) for r in self.fake.requests if r.method != "GET"]


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture
def api(fake: FakeKube) -> Iterator[KubeApi]:
    with fake.api() as client:
        yield client


@pytest.fixture
def cluster(fake: FakeKube) -> Cluster:
    return Cluster(fake)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_reconciler(
    api: KubeApi, clock: FakeClock, *, identity: str = IDENTITY, **settings: Any
) -> Reconciler:
    leading = settings.pop("leading", lambda: True)
    shed = settings.pop("shed", None)
    return Reconciler(
        api,
        ControllerSettings(**settings),
        Instruments(),
        identity=identity,
        leading=leading,
        shed=shed,
        clock=clock,
        wall=lambda: EPOCH + clock(),
    )
