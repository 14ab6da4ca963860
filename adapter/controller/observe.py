"""What one sync sees of a scale target: its running pods and their exact values (pure).

`adapter.controller.reconcile` lists the target's pods and reads `socket_io_connected` and
`socket_io_connect` from the custom metrics API, then builds the `policy.Observation` here: a
Running pod that is not being deleted holds sockets; one without both values is `missing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from adapter.controller.annotations import parse_quantity
from adapter.controller.policy import Observation


def running_pods(pods: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Pods that hold sockets: Running and not being deleted (the HPA ignores the rest)."""
    running = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        if metadata.get("deletionTimestamp") is not None:
            continue
        running[str(metadata.get("name"))] = pod
    return running


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def metric_values(answer: Mapping[str, Any]) -> dict[str, float]:
    """Pod name → value from a `MetricValueList`; ValueError for one that is not."""
    if answer.get("kind") != "MetricValueList":
        raise ValueError(f"not a MetricValueList: kind {answer.get('kind')!r}")
    values = {}
    for item in answer.get("items") or []:
        described = item.get("describedObject") or {}
        if described.get("kind", "Pod") != "Pod" or not described.get("name"):
            raise ValueError(f"an item that describes no pod: {described!r}")
        values[str(described["name"])] = parse_quantity(str(item.get("value")))
    return values


def observation(
    at: float,
    replicas: int,
    running: Iterable[str],
    connected: Mapping[str, float],
    rates: Mapping[str, float],
) -> Observation:
    """What the policy sees: a running pod is counted only with both of its values, else it is
    missing (a pod's rate needs two scrapes, so a new pod misses one sync at most)."""
    names = sorted(running)
    pods = {pod: connected[pod] for pod in names if pod in connected and pod in rates}
    missing = tuple(pod for pod in names if pod not in pods)
    rate = sum(rates[pod] for pod in pods)
    return Observation(at=at, replicas=replicas, pods=pods, connect_rate=rate, missing=missing)
