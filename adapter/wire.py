"""The custom metrics API's JSON documents, field for field as the Go types marshal them (pure).

The API layer (issue 3) builds every answer here: `MetricValueList` for v1beta1 and v1beta2
(`k8s.io/metrics/pkg/apis/custom_metrics/{v1beta1,v1beta2}/types.go`), `APIResourceList` for
discovery, and `Status` for every error (one place maps errors to codes and reasons).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.quantity import format_quantity
from adapter.selectors import Selector

GROUP = "custom.metrics.k8s.io"
VERSIONS = ("v1beta1", "v1beta2")

# The objects a metric can describe: resource name → (kind, apiVersion as prometheus-adapter
# writes it in ObjectReference, namespaced).
RESOURCES: Mapping[str, tuple[str, str, bool]] = {
    "pods": ("Pod", "/v1", True),
    "services": ("Service", "/v1", True),
    "deployments.apps": ("Deployment", "apps/v1", True),
    "namespaces": ("Namespace", "/v1", False),
}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True)
class Described:
    """What a value is about: `ObjectReference` with the fields the adapters fill in."""

    resource: str  # a key of RESOURCES
    name: str
    namespace: str | None = None

    def reference(self) -> dict[str, str]:
        kind, api_version, namespaced = RESOURCES[self.resource]
        reference = {"kind": kind, "name": self.name, "apiVersion": api_version}
        if namespaced and self.namespace is not None:
            reference["namespace"] = self.namespace
        return reference


def rfc3339(timestamp: float) -> str:
    """`metav1.Time` marshals to RFC 3339 in UTC with whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def label_selector(selector: Selector) -> dict[str, Any] | None:
    """A parsed selector as `metav1.LabelSelector` (None for "everything")."""
    if selector.empty:
        return None
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    operators = {"in": "In", "notin": "NotIn", "exists": "Exists", "!exists": "DoesNotExist"}
    for requirement in selector.requirements:
        if requirement.operator == "in" and len(requirement.values) == 1:
            match_labels[requirement.key] = next(iter(requirement.values))
            continue
        expression: dict[str, Any] = {
            "key": requirement.key,
            "operator": operators[requirement.operator],
        }
        if requirement.values:
            expression["values"] = sorted(requirement.values)
        expressions.append(expression)
    document: dict[str, Any] = {}
    if match_labels:
        document["matchLabels"] = match_labels
    if expressions:
        document["matchExpressions"] = expressions
    return document


@dataclass(frozen=True)
class Value:
    described: Described
    metric: str
    value: float
    timestamp: float
    window_seconds: int | None = None


def metric_value(version: str, item: Value, selector: Selector) -> dict[str, Any]:
    document: dict[str, Any] = {"describedObject": item.described.reference()}
    if version == "v1beta1":
        document["metricName"] = item.metric
        document["timestamp"] = rfc3339(item.timestamp)
        if item.window_seconds is not None:
            document["window"] = item.window_seconds
        document["value"] = format_quantity(item.value)
        document["selector"] = label_selector(selector)
    elif version == "v1beta2":
        document["metric"] = {"name": item.metric, "selector": label_selector(selector)}
        document["timestamp"] = rfc3339(item.timestamp)
        if item.window_seconds is not None:
            document["windowSeconds"] = item.window_seconds
        document["value"] = format_quantity(item.value)
    else:
        raise ValueError(f"unknown version {version!r}")
    return document


def metric_value_list(version: str, items: Iterable[Value], selector: Selector) -> dict[str, Any]:
    return {
        "kind": "MetricValueList",
        "apiVersion": f"{GROUP}/{version}",
        "metadata": {},
        "items": [metric_value(version, item, selector) for item in items],
    }


def api_resource_list(version: str, metrics: Sequence[str]) -> dict[str, Any]:
    """Discovery: every metric, for every kind of object it can describe."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{GROUP}/{version}",
        "resources": [
            {
                "name": f"{resource}/{metric}",
                "singularName": "",
                "namespaced": namespaced,
                "kind": "MetricValueList",
                "verbs": ["get"],
            }
            for metric in sorted(metrics)
            for resource, (_, _, namespaced) in RESOURCES.items()
        ],
    }


def status(code: int, message: str, details: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A failure `Status`, as the API server answers errors."""
    document: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS[code],
        "code": code,
    }
    if details:
        document["details"] = dict(details)
    return document
