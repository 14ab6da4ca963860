"""The custom metrics API's JSON documents, field for field as the Go types marshal them (pure).

The API layer (issue 3) builds every answer here: `MetricValueList` for v1beta1 and v1beta2
(`k8s.io/metrics/pkg/apis/custom_metrics/{v1beta1,v1beta2}/types.go`), `APIResourceList` for
discovery, and `Status` for every error (one place maps errors to codes and reasons). Discovery of
the group comes in both forms kube-apiserver's aggregator asks for: the legacy `APIGroupList` /
`APIGroup` (`k8s.io/apimachinery/pkg/apis/meta/v1/types.go`) and the aggregated
`APIGroupDiscoveryList` (`k8s.io/api/apidiscovery/v2/types.go`), chosen by
`negotiate_discovery`. `adapter.openapi` describes the same paths and types as OpenAPI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import orjson

from adapter.quantity import format_quantity
from adapter.selectors import Selector

GROUP = "custom.metrics.k8s.io"
VERSIONS = ("v1beta1", "v1beta2")
# Discovery lists versions most preferred first, as kube-apiserver does; v1beta2 is what the
# HPA's custom metrics client picks when both are there.
PREFERRED_VERSIONS = ("v1beta2", "v1beta1")

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


class Described(NamedTuple):
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


def render(document: Mapping[str, Any]) -> bytes:
    """The bytes served for every JSON document: compact UTF-8, what Starlette's JSONResponse
    writes, ~10x sooner (a list over 1000 pods is ~200 KB). The documents here hold no float
    that is not finite (values go out as Quantity strings), and orjson would write one as null
    where the stdlib refuses it; `adapter.debug`'s floats are finite counts and ages."""
    return orjson.dumps(document)


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


class Value(NamedTuple):
    described: Described
    metric: str
    value: float
    timestamp: float
    window_seconds: int | None = None


def metric_value(version: str, item: Value, selector: Selector) -> dict[str, Any]:
    return _renderer(version, selector)(item)


def metric_value_list(version: str, items: Iterable[Value], selector: Selector) -> dict[str, Any]:
    render = _renderer(version, selector)
    return {
        "kind": "MetricValueList",
        "apiVersion": f"{GROUP}/{version}",
        "metadata": {},
        "items": [render(item) for item in items],
    }


def _renderer(version: str, selector: Selector) -> Callable[[Value], dict[str, Any]]:
    """`MetricValue` of one item. What every item of a list shares is made once: the selector's
    document and v1beta2's metric identifier (the same objects in every item: nothing edits a
    rendered document), and the timestamps, which the values of one round share (`rfc3339`
    costs ~1 µs an item)."""
    selector_document = label_selector(selector)
    times: dict[float, str] = {}
    metrics: dict[str, dict[str, Any]] = {}

    def timestamp(at: float) -> str:
        text = times.get(at)
        if text is None:
            text = times[at] = rfc3339(at)
        return text

    if version == "v1beta1":

        def render(item: Value) -> dict[str, Any]:
            document: dict[str, Any] = {
                "describedObject": item.described.reference(),
                "metricName": item.metric,
                "timestamp": timestamp(item.timestamp),
            }
            if item.window_seconds is not None:
                document["window"] = item.window_seconds
            document["value"] = format_quantity(item.value)
            document["selector"] = selector_document
            return document

    elif version == "v1beta2":

        def render(item: Value) -> dict[str, Any]:
            metric = metrics.get(item.metric)
            if metric is None:
                metric = metrics[item.metric] = {"name": item.metric, "selector": selector_document}
            document: dict[str, Any] = {
                "describedObject": item.described.reference(),
                "metric": metric,
                "timestamp": timestamp(item.timestamp),
            }
            if item.window_seconds is not None:
                document["windowSeconds"] = item.window_seconds
            document["value"] = format_quantity(item.value)
            return document

    else:
        raise ValueError(f"unknown version {version!r}")
    return render


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


def _group_version(version: str) -> dict[str, str]:
    """`GroupVersionForDiscovery`: both fields required."""
    return {"groupVersion": f"{GROUP}/{version}", "version": version}


def _api_group_fields() -> dict[str, Any]:
    # serverAddressByClientCIDRs is omitempty: the aggregator proxies every request, so the
    # adapter has no address of its own worth advertising. preferredVersion is a struct, which
    # encoding/json never omits despite its omitempty.
    return {
        "name": GROUP,
        "versions": [_group_version(version) for version in PREFERRED_VERSIONS],
        "preferredVersion": _group_version(PREFERRED_VERSIONS[0]),
    }


def api_group_list() -> dict[str, Any]:
    """Legacy discovery at `/apis`: `APIGroupList` with our one group.

    The API layer answers it when `negotiate_discovery` says "legacy"; the aggregator then reads
    `/apis/custom.metrics.k8s.io/{version}` (`api_resource_list`) for the resources.
    """
    # A nested APIGroup carries no kind/apiVersion: TypeMeta's fields are omitempty.
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group_fields()]}


def api_group() -> dict[str, Any]:
    """`/apis/custom.metrics.k8s.io`: the group's versions, for clients that walk discovery."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group_fields()}


_EMPTY_KIND = {"group": "", "version": "", "kind": ""}


def _resource_discovery(version: str, metrics: Sequence[str]) -> list[dict[str, Any]]:
    # Shaped as kube-apiserver's own endpoints.ConvertGroupVersionIntoToDiscovery turns the legacy
    # list's "pods/socket_io_connected" into aggregated form, so a cluster shows the same thing
    # whichever document the aggregator took: a parent per object kind with an empty
    # responseKind (the parent serves nothing itself; client-go skips such parents) and one
    # subresource per metric. client-go's SplitGroupsAndResources turns this back into exactly
    # the names `api_resource_list` gives.
    if not metrics:
        return []
    response_kind = {"group": GROUP, "version": version, "kind": "MetricValueList"}
    return [
        {
            "resource": resource,
            "responseKind": dict(_EMPTY_KIND),
            "scope": "Namespaced" if namespaced else "Cluster",
            "singularResource": "",
            # Required (no omitempty); Go writes null for the converter's nil, [] says the same.
            "verbs": [],
            "subresources": [
                {"subresource": metric, "responseKind": dict(response_kind), "verbs": ["get"]}
                for metric in sorted(metrics)
            ],
        }
        for resource, (_, _, namespaced) in RESOURCES.items()
    ]


def api_group_discovery_list(metrics: Sequence[str]) -> dict[str, Any]:
    """Aggregated discovery at `/apis`: `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`.

    The API layer answers it when `negotiate_discovery` says "aggregated" (kube-apiserver's
    aggregator asks for it first since 1.30, and kubectl does too), saving the aggregator one
    legacy request per version.
    """
    versions: list[dict[str, Any]] = []
    for version in PREFERRED_VERSIONS:
        entry: dict[str, Any] = {"version": version}
        resources = _resource_discovery(version, metrics)
        if resources:  # omitempty
            entry["resources"] = resources
        entry["freshness"] = "Current"  # served from memory: never stale
        versions.append(entry)
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        # ObjectMeta: only the name is filled in (Go also writes "creationTimestamp": null,
        # which decoders read as absent).
        "items": [{"metadata": {"name": GROUP}, "versions": versions}],
    }


DiscoveryKind = Literal["aggregated", "legacy"]

# What each discovery document is served as. The aggregator checks the answer's Content-Type with
# discovery.ContentTypeIsGVK (base type and the g/v/as parameters), so the aggregated one carries
# them; kube-apiserver writes them in this order.
AGGREGATED_DISCOVERY_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
DISCOVERY_CONTENT_TYPES: Mapping[DiscoveryKind, str] = {
    "aggregated": AGGREGATED_DISCOVERY_TYPE,
    "legacy": "application/json",
}
_AGGREGATED_PARAMETERS = {"g": "apidiscovery.k8s.io", "v": "v2", "as": "APIGroupDiscoveryList"}


def _media_ranges(accept: str) -> list[tuple[float, str, dict[str, str]]]:
    """Accept's media ranges as (q, type, parameters without q), in the header's order."""
    ranges: list[tuple[float, str, dict[str, str]]] = []
    for part in accept.split(","):
        media_type, *raw_parameters = (piece.strip() for piece in part.split(";"))
        if not media_type:
            continue
        parameters: dict[str, str] = {}
        for raw in raw_parameters:
            name, _, value = raw.partition("=")
            parameters[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(parameters.pop("q", "1"))
        except ValueError:
            q = 0.0  # an unreadable weight is no acceptance
        ranges.append((q, media_type.lower(), parameters))
    return ranges


def negotiate_discovery(accept: str | None) -> tuple[DiscoveryKind, str]:
    """Which `/apis` document to serve for this Accept header, and its Content-Type.

    The API layer's `/apis` route calls it. "aggregated" when the client takes
    `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList` (parameters in any
    order, ranked by q like any range); otherwise "legacy", never an error: v2beta1 (removed in
    Kubernetes 1.35) and protobuf are not served, and the aggregator, finding no v2 Content-Type
    on a 200, falls back to legacy discovery by itself. The answer varies with Accept, so the
    response should say `Vary: Accept`.
    """
    if not accept:
        return "legacy", DISCOVERY_CONTENT_TYPES["legacy"]
    # Highest q first; among equals the header's order, as the client listed its preference.
    ranked = sorted(_media_ranges(accept), key=lambda media_range: -media_range[0])
    for q, media_type, parameters in ranked:
        if q <= 0:
            break
        # Other parameters (charset, say) are tolerated, as ContentTypeIsGVK tolerates them.
        wanted = {name: parameters.get(name) for name in _AGGREGATED_PARAMETERS}
        if media_type == "application/json" and wanted == _AGGREGATED_PARAMETERS:
            return "aggregated", DISCOVERY_CONTENT_TYPES["aggregated"]
        grouped = _AGGREGATED_PARAMETERS.keys() & parameters.keys()
        if media_type in ("application/json", "application/*", "*/*") and not grouped:
            return "legacy", DISCOVERY_CONTENT_TYPES["legacy"]
    return "legacy", DISCOVERY_CONTENT_TYPES["legacy"]
