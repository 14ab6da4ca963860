"""adapter.wire: each document's field names and types as the Kubernetes Go types marshal them."""

from __future__ import annotations

import json

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
