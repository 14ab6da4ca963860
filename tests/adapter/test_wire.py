"""adapter.wire: each document's field names and types as the Kubernetes Go types marshal them."""

from __future__ import annotations

import json
from email.message import Message

import pytest

from adapter import wire
from adapter.quantity import QUANTITY
from adapter.selectors import parse_selector

ALL = parse_selector(None)
# 2026-11-26T08:00:00Z
NOW = 1795680000.0


def pod_value(**overrides):
    fields = {
        "described": wire.Described("pods", "push-a", "live"),
        "metric": "socket_io_connected",
        "value": 8285.0,
        "timestamp": NOW,
    }
    return wire.Value(**{**fields, **overrides})


def test_v1beta1_item_fields():
    item = wire.metric_value("v1beta1", pod_value(), ALL)
    assert item == {
        "describedObject": {
            "kind": "Pod",
            "namespace": "live",
            "name": "push-a",
            "apiVersion": "/v1",
        },
        "metricName": "socket_io_connected",
        "timestamp": "2026-11-26T08:00:00Z",
        "value": "8285",
        "selector": None,
    }


def test_v1beta2_item_fields():
    item = wire.metric_value("v1beta2", pod_value(), ALL)
    assert item == {
        "describedObject": {
            "kind": "Pod",
            "namespace": "live",
            "name": "push-a",
            "apiVersion": "/v1",
        },
        "metric": {"name": "socket_io_connected", "selector": None},
        "timestamp": "2026-11-26T08:00:00Z",
        "value": "8285",
    }


@pytest.mark.parametrize(
    ("version", "field"), [("v1beta1", "window"), ("v1beta2", "windowSeconds")]
)
def test_rates_carry_their_window_under_each_versions_name(version, field):
    item = wire.metric_value(
        version, pod_value(metric="socket_io_connect", value=1.5, window_seconds=60), ALL
    )
    assert item[field] == 60
    assert item["value"] == "1500m"
    assert QUANTITY.fullmatch(item["value"])


def test_the_metric_label_selector_is_echoed_as_a_label_selector():
    selector = parse_selector("event=joinByGameId,reason in (a,b),!canary,x!=y")
    assert wire.label_selector(selector) == {
        "matchLabels": {"event": "joinByGameId"},
        "matchExpressions": [
            {"key": "reason", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "x", "operator": "NotIn", "values": ["y"]},
        ],
    }
    item = wire.metric_value("v1beta2", pod_value(), selector)
    assert item["metric"]["selector"]["matchLabels"] == {"event": "joinByGameId"}


@pytest.mark.parametrize(
    ("described", "reference"),
    [
        (
            wire.Described("deployments.apps", "push", "live"),
            {"kind": "Deployment", "namespace": "live", "name": "push", "apiVersion": "apps/v1"},
        ),
        (
            wire.Described("services", "push", "live"),
            {"kind": "Service", "namespace": "live", "name": "push", "apiVersion": "/v1"},
        ),
        (
            wire.Described("namespaces", "live"),
            {"kind": "Namespace", "name": "live", "apiVersion": "/v1"},
        ),
    ],
    ids=["deployment", "service", "namespace"],
)
def test_object_references(described, reference):
    assert described.reference() == reference


def test_the_list_document():
    document = wire.metric_value_list("v1beta2", [pod_value(), pod_value()], ALL)
    assert document["kind"] == "MetricValueList"
    assert document["apiVersion"] == "custom.metrics.k8s.io/v1beta2"
    assert document["metadata"] == {}
    assert len(document["items"]) == 2
    json.dumps(document)  # plain JSON all the way down


def test_discovery_lists_every_metric_for_every_object_kind():
    document = wire.api_resource_list("v1beta1", ["socket_io_connected", "socket_io_connect"])
    assert document["kind"] == "APIResourceList" and document["apiVersion"] == "v1"
    assert document["groupVersion"] == "custom.metrics.k8s.io/v1beta1"
    names = {(r["name"], r["namespaced"]) for r in document["resources"]}
    assert ("pods/socket_io_connected", True) in names
    assert ("namespaces/socket_io_connected", False) in names
    assert ("deployments.apps/socket_io_connect", True) in names
    assert len(names) == 8
    assert all(
        r["kind"] == "MetricValueList" and r["verbs"] == ["get"] for r in document["resources"]
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (400, "BadRequest"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "NotFound"),
        (503, "ServiceUnavailable"),
    ],
)
def test_status(code, reason):
    document = wire.status(code, "why", {"name": "socket_io_connected", "group": wire.GROUP})
    assert document == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "why", "reason": reason, "code": code,
        "details": {"name": "socket_io_connected", "group": "custom.metrics.k8s.io"},
    }  # fmt: skip


def test_unknown_versions_are_refused():
    with pytest.raises(ValueError):
        wire.metric_value("v1", pod_value(), ALL)


# Discovery. Each Go type's JSON fields, transcribed from k8s.io/apimachinery/pkg/apis/meta/v1 and
# k8s.io/api/apidiscovery/v2 types.go: json name -> (JSON type, always written, nested Go type).
# "Always written" means no omitempty, or a struct, which encoding/json writes despite omitempty.
# TypeMeta's kind and apiVersion are omitempty, so nested objects have none; the top-level values
# are checked on their own.
ALWAYS, OMITEMPTY = True, False
GoFields = dict[str, tuple[type, bool, str | None]]
TYPE_META: GoFields = {"kind": (str, OMITEMPTY, None), "apiVersion": (str, OMITEMPTY, None)}
GO_TYPES: dict[str, GoFields] = {
    "APIGroupList": {**TYPE_META, "groups": (list, ALWAYS, "APIGroup")},
    "APIGroup": {
        **TYPE_META,
        "name": (str, ALWAYS, None),
        "versions": (list, ALWAYS, "GroupVersionForDiscovery"),
        "preferredVersion": (dict, ALWAYS, "GroupVersionForDiscovery"),  # a struct
        "serverAddressByClientCIDRs": (list, OMITEMPTY, "ServerAddressByClientCIDR"),
    },
    "GroupVersionForDiscovery": {
        "groupVersion": (str, ALWAYS, None), "version": (str, ALWAYS, None),
    },
    "ServerAddressByClientCIDR": {
        "clientCIDR": (str, ALWAYS, None), "serverAddress": (str, ALWAYS, None),
    },
    "APIResourceList": {
        **TYPE_META,
        "groupVersion": (str, ALWAYS, None), "resources": (list, ALWAYS, "APIResource"),
    },
    "APIResource": {
        "name": (str, ALWAYS, None), "singularName": (str, ALWAYS, None),
        "namespaced": (bool, ALWAYS, None), "group": (str, OMITEMPTY, None),
        "version": (str, OMITEMPTY, None), "kind": (str, ALWAYS, None),
        "verbs": (list, ALWAYS, None), "shortNames": (list, OMITEMPTY, None),
        "categories": (list, OMITEMPTY, None), "storageVersionHash": (str, OMITEMPTY, None),
    },
    "ListMeta": {
        "selfLink": (str, OMITEMPTY, None), "resourceVersion": (str, OMITEMPTY, None),
        "continue": (str, OMITEMPTY, None), "remainingItemCount": (int, OMITEMPTY, None),
    },
    "ObjectMeta": {"name": (str, OMITEMPTY, None)},  # only the name is filled in
    "APIGroupDiscoveryList": {
        **TYPE_META, "metadata": (dict, ALWAYS, "ListMeta"),
        "items": (list, ALWAYS, "APIGroupDiscovery"),
    },
    "APIGroupDiscovery": {
        **TYPE_META, "metadata": (dict, ALWAYS, "ObjectMeta"),
        "versions": (list, OMITEMPTY, "APIVersionDiscovery"),
    },
    "APIVersionDiscovery": {
        "version": (str, ALWAYS, None), "resources": (list, OMITEMPTY, "APIResourceDiscovery"),
        "freshness": (str, OMITEMPTY, None),
    },
    "APIResourceDiscovery": {
        "resource": (str, ALWAYS, None), "responseKind": (dict, OMITEMPTY, "GroupVersionKind"),
        "scope": (str, ALWAYS, None), "singularResource": (str, ALWAYS, None),
        "verbs": (list, ALWAYS, None), "shortNames": (list, OMITEMPTY, None),
        "categories": (list, OMITEMPTY, None),
        "subresources": (list, OMITEMPTY, "APISubresourceDiscovery"),
    },
    "APISubresourceDiscovery": {
        "subresource": (str, ALWAYS, None), "responseKind": (dict, OMITEMPTY, "GroupVersionKind"),
        "acceptedTypes": (list, OMITEMPTY, "GroupVersionKind"), "verbs": (list, ALWAYS, None),
    },
    "GroupVersionKind": {
        "group": (str, ALWAYS, None), "version": (str, ALWAYS, None), "kind": (str, ALWAYS, None),
    },
}  # fmt: skip
METRICS = ("socket_io_connected", "socket_io_connect")


def go_shape(document, go_type, where=""):
    """Every way `document` differs from what encoding/json writes for `go_type`."""
    fields = GO_TYPES[go_type]
    problems = [f"{where}{name}: no such field in {go_type}" for name in document.keys() - fields]
    for name, (json_type, always, nested) in fields.items():
        if name not in document:
            if always:
                problems.append(f"{where}{name}: {go_type} always writes it")
            continue
        value = document[name]
        written = type(value)  # exactly: a bool is no int here
        if written is not json_type:
            problems.append(f"{where}{name}: {value!r} is not a {json_type.__name__}")
        elif json_type is dict and nested:
            problems += go_shape(value, nested, f"{where}{name}.")
        elif json_type is list:
            for index, element in enumerate(value):
                if nested:
                    problems += go_shape(element, nested, f"{where}{name}[{index}].")
                elif not isinstance(element, str):
                    problems.append(f"{where}{name}[{index}]: {element!r} is not a str")
    return problems


@pytest.mark.parametrize(
    ("document", "go_type", "api_version"),
    [
        (wire.api_group_list(), "APIGroupList", "v1"),
        (wire.api_group(), "APIGroup", "v1"),
        (wire.api_resource_list("v1beta2", METRICS), "APIResourceList", "v1"),
        (wire.api_group_discovery_list(METRICS), "APIGroupDiscoveryList", "apidiscovery.k8s.io/v2"),
        (wire.api_group_discovery_list([]), "APIGroupDiscoveryList", "apidiscovery.k8s.io/v2"),
    ],
    ids=["group-list", "group", "resource-list", "aggregated", "aggregated-no-metrics"],
)
def test_discovery_documents_marshal_as_the_go_types(document, go_type, api_version):
    assert go_shape(document, go_type) == []
    assert (document["kind"], document["apiVersion"]) == (go_type, api_version)
    json.dumps(document)


def test_the_group_prefers_v1beta2():
    versions = [
        {"groupVersion": "custom.metrics.k8s.io/v1beta2", "version": "v1beta2"},
        {"groupVersion": "custom.metrics.k8s.io/v1beta1", "version": "v1beta1"},
    ]
    group = {"name": "custom.metrics.k8s.io", "versions": versions, "preferredVersion": versions[0]}
    assert wire.api_group() == {"kind": "APIGroup", "apiVersion": "v1", **group}
    assert wire.api_group_list() == {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def test_aggregated_discovery_lists_the_group_and_its_versions_in_preference_order():
    document = wire.api_group_discovery_list(METRICS)
    assert document["metadata"] == {}
    [group] = document["items"]
    assert group["metadata"] == {"name": "custom.metrics.k8s.io"}
    assert [v["version"] for v in group["versions"]] == ["v1beta2", "v1beta1"]
    assert all(v["freshness"] == "Current" for v in group["versions"])
    pods = group["versions"][0]["resources"][0]
    assert pods == {
        "resource": "pods",
        "responseKind": {"group": "", "version": "", "kind": ""},
        "scope": "Namespaced",
        "singularResource": "",
        "verbs": [],
        "subresources": [
            {
                "subresource": metric,
                "responseKind": {
                    "group": wire.GROUP, "version": "v1beta2", "kind": "MetricValueList",
                },
                "verbs": ["get"],
            }
            for metric in ("socket_io_connect", "socket_io_connected")
        ],
    }  # fmt: skip


def test_without_metrics_the_versions_have_no_resources_field():
    versions = wire.api_group_discovery_list([])["items"][0]["versions"]
    assert versions == [
        {"version": "v1beta2", "freshness": "Current"},
        {"version": "v1beta1", "freshness": "Current"},
    ]


def split_groups_and_resources(document):
    """client-go's discovery.SplitGroupsAndResources, as kubectl and the HPA's client see it.

    A resource or subresource whose responseKind is empty is dropped; a subresource becomes
    "parent/subresource" with the parent's scope.
    """
    lists = {}
    for group in document["items"]:
        for version in group["versions"]:
            listed = []
            for resource in version.get("resources", []):
                namespaced = resource["scope"] == "Namespaced"
                entries = [(resource["resource"], resource)] + [
                    (f"{resource['resource']}/{sub['subresource']}", sub)
                    for sub in resource.get("subresources", [])
                ]
                listed += [
                    (name, namespaced, entry["responseKind"]["kind"], entry["verbs"])
                    for name, entry in entries
                    if any(entry.get("responseKind", {}).values())
                ]
            lists[f"{group['metadata']['name']}/{version['version']}"] = sorted(listed)
    return lists


@pytest.mark.parametrize("version", wire.VERSIONS)
def test_aggregated_discovery_reads_back_as_the_legacy_resource_list(version):
    legacy = wire.api_resource_list(version, METRICS)
    expected = sorted(
        (r["name"], r["namespaced"], r["kind"], r["verbs"]) for r in legacy["resources"]
    )
    aggregated = split_groups_and_resources(wire.api_group_discovery_list(METRICS))
    assert aggregated[legacy["groupVersion"]] == expected


V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
PROTOBUF = "application/vnd.kubernetes.protobuf"


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        pytest.param(f"{V2},{V2BETA1}", "aggregated", id="aggregator"),
        pytest.param(f"{V2},{V2BETA1},application/json", "aggregated", id="kubectl"),
        pytest.param(
            f"{PROTOBUF};g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,{V2},application/json",
            "aggregated",
            id="kubectl-protobuf",
        ),
        pytest.param(
            "application/json; as=APIGroupDiscoveryList ;v=v2;  g=apidiscovery.k8s.io",
            "aggregated",
            id="reordered-spaced",
        ),
        pytest.param(
            'Application/JSON;G="apidiscovery.k8s.io";V="v2";AS="APIGroupDiscoveryList"',
            "aggregated",
            id="case-quoted",
        ),
        pytest.param(
            "application/json;charset=utf-8;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "aggregated",
            id="extra-parameter",
        ),
        pytest.param(f"application/json;q=0.9,{V2};q=1.0", "aggregated", id="q-prefers-aggregated"),
        pytest.param(f"{V2};q=0.5,application/json", "legacy", id="q-prefers-legacy"),
        pytest.param(f"{V2};q=0,application/json", "legacy", id="q0-refuses"),
        pytest.param(f"{V2};q=0", "legacy", id="q0-only"),
        pytest.param(f"{V2};q=high", "legacy", id="unreadable-q"),
        pytest.param(V2BETA1, "legacy", id="v2beta1-only"),
        pytest.param(f"{V2BETA1},application/json", "legacy", id="v2beta1-then-json"),
        pytest.param(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=Table", "legacy", id="as-table"
        ),
        pytest.param("application/json", "legacy", id="json"),
        pytest.param("*/*", "legacy", id="anything"),
        pytest.param(None, "legacy", id="missing"),
        pytest.param("", "legacy", id="empty"),
        pytest.param(PROTOBUF, "legacy", id="protobuf-only"),
        pytest.param(f"{PROTOBUF}, */*", "legacy", id="protobuf-or-anything"),
    ],
)
def test_negotiate_discovery(accept, kind):
    assert wire.negotiate_discovery(accept) == (kind, wire.DISCOVERY_CONTENT_TYPES[kind])


def test_the_aggregated_content_type_names_its_kind_as_the_aggregator_checks_it():
    # discovery.ContentTypeIsGVK: mime.ParseMediaType, then base type and g/v/as compared.
    message = Message()
    message["Content-Type"] = wire.DISCOVERY_CONTENT_TYPES["aggregated"]
    assert message.get_content_type() == "application/json"
    parameters = message.get_params()
    assert parameters is not None
    assert dict(parameters[1:]) == {
        "g": "apidiscovery.k8s.io", "v": "v2", "as": "APIGroupDiscoveryList",
    }  # fmt: skip
    assert wire.DISCOVERY_CONTENT_TYPES["legacy"] == "application/json"
