"""The custom metrics API described as OpenAPI: Swagger 2.0 and OpenAPI 3.0 documents (pure).

The API layer (`adapter.app`) serves `openapi_v2` at `/openapi/v2`, `openapi_v3_index` at
`/openapi/v3` and `openapi_v3` at `/openapi/v3/apis/custom.metrics.k8s.io/{version}`;
kube-apiserver's aggregator downloads them and merges them into the cluster's documents (what
`kubectl explain` and client generators read). The types are those k8s.io/metrics generates for
custom-metrics-apiserver (`pkg/generated/openapi`), named as kube-openapi names definitions:
`io.k8s.metrics.pkg.apis.custom_metrics.v1beta2.MetricValueList`, while shared types keep the Go
package they live in (`io.k8s.api.core.v1.ObjectReference`, `...meta.v1.LabelSelector`). One
table of fields feeds both formats. The paths are the concrete ones `adapter.wire` announces in
`api_resource_list`: one per object kind and metric, rather than custom-metrics-apiserver's
`{resource}/{name}/{subresource}` wildcards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.wire import GROUP, RESOURCES, VERSIONS, render

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_CORE = "io.k8s.api.core.v1."
_METRICS = "io.k8s.metrics.pkg.apis.custom_metrics."
_TIME = _META + "Time"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_LIST_META = _META + "ListMeta"
_LABEL_SELECTOR = _META + "LabelSelector"
_STATUS = _META + "Status"
_API_RESOURCE_LIST = _META + "APIResourceList"
_API_GROUP = _META + "APIGroup"

# Which objects are also served as a list (`*`, narrowed by labelSelector): the HPA asks for pods
# that way; the API layer answers one named service, deployment or namespace.
LISTED = frozenset({"pods"})

_INFO = {"title": "pushscale custom metrics", "version": "unversioned"}
_BEARER = {
    "type": "apiKey",
    "name": "authorization",
    "in": "header",
    "description": "Bearer Token authentication",
}


@dataclass(frozen=True)
class Field:
    """One JSON field as the Go type marshals it.

    `type` is "string", "boolean", "int32", "int64", a definition name, or "[]T" (array) and
    "{}T" (object with T values) of those.
    """

    name: str
    type: str
    description: str
    required: bool = False
    nullable: bool = False  # a pointer without omitempty: Go writes null


@dataclass(frozen=True)
class Definition:
    """One Go type as a schema: an object of `fields`, or a string in a format (`scalar`)."""

    description: str
    fields: tuple[Field, ...] = ()
    scalar: str | None = None  # a JSON string in a format, e.g. "date-time", instead of fields
    kind: tuple[str, str, str] | None = None  # (group, version, kind) when it is a Kind


_TYPE_META = (
    Field("kind", "string", "the REST resource this object represents, in CamelCase"),
    Field("apiVersion", "string", "the versioned schema of this representation of an object"),
)
_WINDOW = (
    "the window ([timestamp-window, timestamp]) a rate was calculated over, when the metric is "
    "a rate of a counter"
)
_SELECTOR = "the label selector the query used to select this metric (null: name only)"


_TIMESTAMP = Field("timestamp", _TIME, "when the value was produced", required=True)
_VALUE = Field("value", _QUANTITY, "the value of the metric for this object", required=True)
# MetricValue's fields after describedObject, as k8s.io/metrics' types.go has them: the only
# place the two versions differ.
_METRIC_FIELDS: Mapping[str, tuple[Field, ...]] = {
    "v1beta1": (
        Field("metricName", "string", "the name of the metric", required=True),
        _TIMESTAMP,
        Field("window", "int64", _WINDOW),
        _VALUE,
        Field("selector", _LABEL_SELECTOR, _SELECTOR, nullable=True),
    ),
    "v1beta2": (
        Field("metric", f"{_METRICS}v1beta2.MetricIdentifier", "the metric", required=True),
        _TIMESTAMP,
        Field("windowSeconds", "int64", _WINDOW),
        _VALUE,
    ),
}


def _metric_definitions(version: str) -> dict[str, Definition]:
    """MetricValueList and MetricValue of one version, from `_METRIC_FIELDS`."""
    package = f"{_METRICS}{version}."
    items = Field(
        "items", f"[]{package}MetricValue", "the value across the described objects", required=True
    )
    described = Field(
        "describedObject", _CORE + "ObjectReference", "the described object", required=True
    )
    return {
        package + "MetricValueList": Definition(
            "MetricValueList is a list of values for a given metric for some set of objects",
            (*_TYPE_META, Field("metadata", _LIST_META, "standard list metadata"), items),
            kind=(GROUP, version, "MetricValueList"),
        ),
        package + "MetricValue": Definition(
            "MetricValue is the metric value for some object",
            (*_TYPE_META, described, *_METRIC_FIELDS[version]),
            kind=(GROUP, version, "MetricValue"),
        ),
    }


def _shared(description: str, *fields: Field, kind: str | None = None) -> Definition:
    """A definition of a core kind (group "", version v1) or of a plain struct."""
    return Definition(description, fields, kind=("", "v1", kind) if kind else None)


# Everything else the documents refer to, transcribed from k8s.io/metrics, k8s.io/api/core/v1 and
# k8s.io/apimachinery/pkg/apis/meta/v1 types.go (json names; omitempty or +optional: not required).
_SHARED: Mapping[str, Definition] = {
    f"{_METRICS}v1beta2.MetricIdentifier": _shared(
        "MetricIdentifier identifies a metric by name and, optionally, selector",
        Field("name", "string", "the name of the metric", required=True),
        Field("selector", _LABEL_SELECTOR, _SELECTOR, nullable=True),
    ),
    _CORE + "ObjectReference": _shared(
        "a reference to an object",
        Field("kind", "string", "kind of the referent"),
        Field("namespace", "string", "namespace of the referent"),
        Field("name", "string", "name of the referent"),
        Field("uid", "string", "UID of the referent"),
        Field("apiVersion", "string", "API version of the referent"),
        Field("resourceVersion", "string", "the resourceVersion referred to, if any"),
        Field("fieldPath", "string", "a field of the referent, if not all of it"),
    ),
    _LABEL_SELECTOR: _shared(
        "a label query over a set of resources; matchLabels and matchExpressions are ANDed",
        Field("matchLabels", "{}string", "each {key: value} is an In requirement of one value"),
        Field("matchExpressions", f"[]{_META}LabelSelectorRequirement", "requirements"),
    ),
    _META + "LabelSelectorRequirement": _shared(
        "a key, an operator and values",
        Field("key", "string", "the label key", required=True),
        Field("operator", "string", "In, NotIn, Exists or DoesNotExist", required=True),
        Field("values", "[]string", "non-empty for In and NotIn, empty otherwise"),
    ),
    _LIST_META: _shared(
        "metadata of a list",
        Field("selfLink", "string", "deprecated, never set"),
        Field("resourceVersion", "string", "the list's version"),
        Field("continue", "string", "a token to fetch more of the list"),
        Field("remainingItemCount", "int64", "items left after this page"),
    ),
    _TIME: Definition("an RFC 3339 time in UTC, to the second", scalar="date-time"),
    _QUANTITY: Definition("a fixed-point number such as 8285 or 1500m", scalar=""),
    _STATUS: _shared(
        "the answer to a failed call",
        *_TYPE_META,
        Field("metadata", _LIST_META, "standard list metadata"),
        Field("status", "string", "Success or Failure"),
        Field("message", "string", "what went wrong, for people"),
        Field("reason", "string", "what went wrong, for programs (e.g. NotFound)"),
        Field("details", _META + "StatusDetails", "more about the reason"),
        Field("code", "int32", "the HTTP status code"),
        kind="Status",
    ),
    _META + "StatusDetails": _shared(
        "details of a Status",
        Field("name", "string", "the name of the resource concerned"),
        Field("group", "string", "its group"),
        Field("kind", "string", "its kind"),
        Field("uid", "string", "its UID"),
        Field("causes", f"[]{_META}StatusCause", "the causes, where known"),
        Field("retryAfterSeconds", "int32", "seconds to wait before retrying"),
    ),
    _META + "StatusCause": _shared(
        "one cause of a failure",
        Field("reason", "string", "the cause, for programs"),
        Field("message", "string", "the cause, for people"),
        Field("field", "string", "the field concerned"),
    ),
    _API_RESOURCE_LIST: _shared(
        "the resources of one group version",
        *_TYPE_META,
        Field("groupVersion", "string", "the group and version listed", required=True),
        Field("resources", f"[]{_META}APIResource", "the resources", required=True),
        kind="APIResourceList",
    ),
    _META + "APIResource": _shared(
        "one resource of a group version",
        Field("name", "string", "plural name; here {resource}/{metric}", required=True),
        Field("singularName", "string", "singular name", required=True),
        Field("namespaced", "boolean", "whether it is namespaced", required=True),
        Field("group", "string", "its group, if not the list's"),
        Field("version", "string", "its version, if not the list's"),
        Field("kind", "string", "the kind served", required=True),
        Field("verbs", "[]string", "the verbs served", required=True),
        Field("shortNames", "[]string", "short names"),
        Field("categories", "[]string", "categories"),
        Field("storageVersionHash", "string", "hash of the storage version"),
    ),
    _API_GROUP: _shared(
        "a group's versions",
        *_TYPE_META,
        Field("name", "string", "the group", required=True),
        Field("versions", f"[]{_META}GroupVersionForDiscovery", "its versions", required=True),
        Field("preferredVersion", _META + "GroupVersionForDiscovery", "the preferred version"),
        Field(
            "serverAddressByClientCIDRs",
            f"[]{_META}ServerAddressByClientCIDR",
            "where clients in each CIDR reach the server",
        ),
        kind="APIGroup",
    ),
    _META + "GroupVersionForDiscovery": _shared(
        "one version of a group",
        Field("groupVersion", "string", "group/version", required=True),
        Field("version", "string", "version", required=True),
    ),
    _META + "ServerAddressByClientCIDR": _shared(
        "a server address for clients in a CIDR",
        Field("clientCIDR", "string", "the clients' CIDR", required=True),
        Field("serverAddress", "string", "host, host:port, IP or IP:port", required=True),
    ),
}


def _definitions() -> dict[str, Definition]:
    """Every type either document may refer to, by kube-openapi definition name."""
    table = dict(_SHARED)
    for version in VERSIONS:
        table.update(_metric_definitions(version))
    return table


_SCALARS: Mapping[str, Mapping[str, str]] = {
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
}


def _element(type_: str) -> str:
    return type_.removeprefix("[]").removeprefix("{}")


def _schema(type_: str, refs: str) -> dict[str, Any]:
    if type_.startswith("[]"):
        return {"type": "array", "items": _schema(type_[2:], refs)}
    if type_.startswith("{}"):
        return {"type": "object", "additionalProperties": _schema(type_[2:], refs)}
    if type_ in _SCALARS:
        return dict(_SCALARS[type_])
    return {"$ref": refs + type_}


def _property(field: Field, refs: str, openapi3: bool) -> dict[str, Any]:
    schema = _schema(field.type, refs)
    if openapi3 and "$ref" in schema:
        # OpenAPI 3.0 ignores a $ref's siblings; kube-openapi wraps it to keep the description.
        schema = {"allOf": [schema]}
        if field.nullable:
            schema["nullable"] = True
    return {"description": field.description, **schema}


def _definition(definition: Definition, refs: str, openapi3: bool) -> dict[str, Any]:
    if definition.scalar is not None:
        schema = {"description": definition.description, "type": "string"}
        return {**schema, "format": definition.scalar} if definition.scalar else schema
    document: dict[str, Any] = {
        "description": definition.description,
        "type": "object",
        "properties": {f.name: _property(f, refs, openapi3) for f in definition.fields},
    }
    required = [f.name for f in definition.fields if f.required]
    if required:
        document["required"] = required
    if definition.kind:
        group, version, kind = definition.kind
        document["x-kubernetes-group-version-kind"] = [
            {"group": group, "kind": kind, "version": version}
        ]
    return document


def _reachable(roots: Sequence[str], table: Mapping[str, Definition]) -> list[str]:
    """The definitions `roots` refer to, themselves included, so each document is self-contained."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in table and name not in seen:
            seen.add(name)
            pending += [_element(f.type) for f in table[name].fields]
    return sorted(seen)


def _schemas(roots: Sequence[str], refs: str, openapi3: bool) -> dict[str, Any]:
    table = _definitions()
    return {name: _definition(table[name], refs, openapi3) for name in _reachable(roots, table)}


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # "path" or "query"
    description: str


_NAMESPACE = Parameter("namespace", "path", "object name and auth scope, such as for teams")
_NAME = Parameter("name", "path", "name of the described object")
_LABEL_SELECTOR_QUERY = Parameter(
    "labelSelector", "query", "restrict the described objects by their labels; default all"
)
_METRIC_LABEL_SELECTOR_QUERY = Parameter(
    "metricLabelSelector", "query", "restrict the metric's series by their labels"
)


@dataclass(frozen=True)
class Route:
    """One GET path: what it answers and, for metric paths, the version of MetricValueList."""

    path: str
    operation_id: str
    tag: str
    description: str
    response: str  # a definition name
    parameters: tuple[Parameter, ...] = ()
    version: str | None = None  # set on metric paths: x-kubernetes-action and -group-version-kind


def _metric_routes(version: str, metrics: Sequence[str]) -> Iterator[Route]:
    base = f"/apis/{GROUP}/{version}"
    tag = f"customMetrics_{version}"
    prefix = f"CustomMetrics{version.capitalize()}"
    response = f"{_METRICS}{version}.MetricValueList"
    for metric in sorted(metrics):
        for resource, (kind, _, namespaced) in RESOURCES.items():
            # operationIds end in the metric verbatim after "_", which the prefix never holds,
            # so they stay unique whatever the metric names.
            if not namespaced:  # namespaces, under the path custom-metrics-apiserver gives them
                yield Route(
                    f"{base}/namespaces/{{namespace}}/metrics/{metric}",
                    f"read{prefix}{kind}_{metric}",
                    tag,
                    f"get {metric} for one {kind}",
                    response,
                    (_NAMESPACE, _METRIC_LABEL_SELECTOR_QUERY),
                    version,
                )
                continue
            objects = f"{base}/namespaces/{{namespace}}/{resource}"
            yield Route(
                f"{objects}/{{name}}/{metric}",
                f"read{prefix}Namespaced{kind}_{metric}",
                tag,
                f"get {metric} for one {kind}",
                response,
                (_NAMESPACE, _NAME, _METRIC_LABEL_SELECTOR_QUERY),
                version,
            )
            if resource in LISTED:
                yield Route(
                    f"{objects}/*/{metric}",
                    f"list{prefix}Namespaced{kind}_{metric}",
                    tag,
                    f"get {metric} for every {kind} labelSelector selects",
                    response,
                    (_NAMESPACE, _LABEL_SELECTOR_QUERY, _METRIC_LABEL_SELECTOR_QUERY),
                    version,
                )


def _routes(version: str | None, metrics: Sequence[str]) -> list[Route]:
    """The GET paths of one version, or with None of the whole group (the group path too)."""
    found: list[Route] = []
    if version is None:
        about = "get information of a group"
        found.append(
            Route(f"/apis/{GROUP}/", "getCustomMetricsAPIGroup", "customMetrics", about, _API_GROUP)
        )
    for each in VERSIONS if version is None else (version,):
        if each not in VERSIONS:
            raise ValueError(f"unknown version {each!r}")
        operation_id = f"getCustomMetrics{each.capitalize()}APIResources"
        about = "get available resources"
        found.append(
            Route(
                f"/apis/{GROUP}/{each}/",
                operation_id,
                f"customMetrics_{each}",
                about,
                _API_RESOURCE_LIST,
            )
        )
        found += _metric_routes(each, metrics)
    return found


def _responses(route: Route, refs: str, openapi3: bool) -> dict[str, Any]:
    def body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        if openapi3:
            return {"description": description, "content": {"application/json": {"schema": schema}}}
        return {"description": description, "schema": schema}

    return {
        "200": body("OK", {"$ref": refs + route.response}),
        "401": {"description": "Unauthorized"},
        # Every other failure is a Status (adapter.wire.status).
        "default": body("a failure", {"$ref": refs + _STATUS}),
    }


def _operation(route: Route, refs: str, openapi3: bool) -> dict[str, Any]:
    parameters = []
    for parameter in route.parameters:
        document: dict[str, Any] = {
            "name": parameter.name,
            "in": parameter.location,
            "description": parameter.description,
        }
        if parameter.location == "path":
            document["required"] = True
        if openapi3:
            document["schema"] = {"type": "string"}
        else:
            document["type"] = "string"
        parameters.append(document)
    operation: dict[str, Any] = {"description": route.description}
    if not openapi3:
        operation |= {"consumes": ["*/*"], "produces": ["application/json"], "schemes": ["https"]}
    operation |= {"tags": [route.tag], "operationId": route.operation_id}
    if parameters:
        operation["parameters"] = parameters
    operation["responses"] = _responses(route, refs, openapi3)
    if route.version is not None:
        operation["x-kubernetes-action"] = "get"
        operation["x-kubernetes-group-version-kind"] = {
            "group": GROUP,
            "version": route.version,
            "kind": "MetricValueList",
        }
    return operation


def _roots(found: Sequence[Route]) -> list[str]:
    return sorted({route.response for route in found} | {_STATUS})


def openapi_v2(metrics: Sequence[str]) -> dict[str, Any]:
    """`/openapi/v2`: Swagger 2.0 for the whole group, both versions (the aggregator merges it)."""
    refs = "#/definitions/"
    found = _routes(None, metrics)
    return {
        "swagger": "2.0",
        "info": dict(_INFO),
        "paths": {route.path: {"get": _operation(route, refs, False)} for route in found},
        "definitions": _schemas(_roots(found), refs, False),
        "securityDefinitions": {"BearerToken": dict(_BEARER)},
        "security": [{"BearerToken": []}],
    }


def openapi_v3(version: str, metrics: Sequence[str]) -> dict[str, Any]:
    """`/openapi/v3/apis/custom.metrics.k8s.io/{version}`: OpenAPI 3.0 for one group version."""
    refs = "#/components/schemas/"
    found = _routes(version, metrics)
    return {
        "openapi": "3.0.0",
        "info": dict(_INFO),
        "paths": {route.path: {"get": _operation(route, refs, True)} for route in found},
        "components": {
            "schemas": _schemas(_roots(found), refs, True),
            "securitySchemes": {"BearerToken": dict(_BEARER)},
        },
        "security": [{"BearerToken": []}],
    }


def etag(body: bytes) -> str:
    """kube-openapi's content hash (handler3's computeETag): SHA-512 in upper-case hex."""
    return hashlib.sha512(body).hexdigest().upper()


def openapi_v3_index(metrics: Sequence[str]) -> dict[str, Any]:
    """`/openapi/v3`: where each group version's document is, with its content hash.

    The aggregator merges these `paths` into kube-apiserver's own index and proxies requests for
    them here, so only our group versions are listed: a shared key such as "apis" would shadow
    kube-apiserver's. The hash changes exactly when the document does, which lets clients cache
    `?hash=` URLs for good.
    """
    paths: dict[str, Any] = {}
    for version in VERSIONS:
        path = f"apis/{GROUP}/{version}"
        digest = etag(render(openapi_v3(version, metrics)))
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
