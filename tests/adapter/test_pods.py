"""adapter.pods: Pod JSON and the laptop file into pods, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.pods import (
    Labels,
    Pod,
    PodError,
    Service,
    StaticPodsError,
    parse_static_pods,
    pod_from_object,
    service_from_object,
)
from tests.fake_kube import pod_object, service_object

APP = {"app": "push"}


def _pod(**changes):
    fields = dict(namespace="ns", name="p", labels=APP, ip="10.0.0.5", metrics_port=9100, workers=4)
    return Pod(**{**fields, **changes})


OWNED = pod_object("ns", "p", APP, "10.0.0.5", deployment="push-web")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod_object("ns", "p", APP, "10.0.0.5"), _pod()),
        (pod_object("ns", "p", APP, None, phase="Pending"), _pod(ip=None, phase="Pending")),
        (pod_object("ns", "p", APP, "10.0.0.5", deleting=True), _pod(deleting=True)),
        (pod_object("ns", "p", APP, None), _pod(ip=None)),
        (OWNED, _pod(deployment="push-web", labels=OWNED["metadata"]["labels"])),
        (
            pod_object("ns", "p", APP, "10.0.0.5", metrics_port=9300, workers=8),
            _pod(metrics_port=9300, workers=8),
        ),
        (
            pod_object("ns", "p", APP, "10.0.0.5", metrics_port=65532, workers=4),
            _pod(metrics_port=65532, workers=4),
        ),
        (pod_object("ns", "p", APP, "fd00::5"), _pod(ip="fd00::5")),
        ({"metadata": {"name": "bare"}}, Pod("default", "bare", {}, None, 9100, 4, "Pending")),
    ],
    ids=[
        "running",
        "pending",
        "terminating",
        "no-ip",
        "replicaset-owner",
        "custom-annotations",
        "last-port",
        "ipv6",
        "no-status",
    ],
)
def test_pod_from_object(obj, expected):
    assert pod_from_object(obj) == expected


def _owned(owner: dict[str, Any], hash_label: str | None = "abc12") -> dict[str, Any]:
    obj = pod_object("ns", "p", APP, "10.0.0.5")
    obj["metadata"]["ownerReferences"] = [owner]
    if hash_label:
        obj["metadata"]["labels"]["pod-template-hash"] = hash_label
    return obj


RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc12", "controller": True}


@pytest.mark.parametrize(
    ("obj", "deployment"),
    [
        (_owned(RS), "web"),
        (_owned({**RS, "name": "my-push-web-abc12"}), "my-push-web"),
        (pod_object("ns", "p", APP, "10.0.0.5"), None),
        (_owned(RS, hash_label=None), None),
        (_owned({**RS, "controller": False}), None),
        (_owned({**RS, "kind": "StatefulSet"}), None),
        (_owned({**RS, "name": "web-other"}), None),
        (_owned({**RS, "name": "-abc12"}), None),
    ],
    ids=[
        "replicaset",
        "dashes-in-name",
        "bare-pod",
        "no-hash-label",
        "not-controller",
        "statefulset",
        "hash-mismatch",
        "empty-name",
    ],
)
def test_deployment_from_owner(obj, deployment):
    assert pod_from_object(obj).deployment == deployment


@pytest.mark.parametrize(
    ("port", "workers", "words"),
    [
        ("abc", None, "pod ns/p: annotation pushscale.io/metrics-port must be an integer from 1 to 65535, not 'abc'"),  # noqa: E501
        ("0", None, "pushscale.io/metrics-port must be an integer from 1 to 65535, not '0'"),
        ("65536", None, "pushscale.io/metrics-port must be an integer from 1 to 65535"),
        (" 9100", None, "metrics-port must be an integer from 1 to 65535, not ' 9100'"),
        ("9_100", None, "not '9_100'"),
        ("-1", None, "not '-1'"),
        (None, "0", "annotation pushscale.io/workers must be an integer from 1 to 64, not '0'"),
        (None, "65", "pushscale.io/workers must be an integer from 1 to 64, not '65'"),
        (None, "four", "pushscale.io/workers must be an integer from 1 to 64, not 'four'"),
        ("65533", "4", "4 workers from port 65533 reach port 65536, past 65535"),
    ],
    ids=[
        "port-word",
        "port-zero",
        "port-too-big",
        "port-space",
        "port-underscore",
        "port-negative",
        "workers-zero",
        "workers-too-many",
        "workers-word",
        "past-last-port",
    ],
)  # fmt: skip
def test_bad_annotations(port, workers, words):
    with pytest.raises(PodError) as caught:
        pod_from_object(pod_object("ns", "p", APP, "10.0.0.5", metrics_port=port, workers=workers))
    assert words in str(caught.value)
    assert "ns/p" in str(caught.value)


def test_pod_without_a_name_is_refused():
    with pytest.raises(PodError, match=r"no metadata\.name"):
        pod_from_object({"metadata": {"namespace": "ns"}})


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        (_pod(), None),
        (_pod(deleting=True), "terminating (deletionTimestamp set)"),
        (_pod(deleting=True, phase="Pending", ip=None), "terminating (deletionTimestamp set)"),
        (_pod(phase="Pending", ip=None), "phase Pending, not Running"),
        (_pod(phase="Succeeded"), "phase Succeeded, not Running"),
        (_pod(phase="Failed"), "phase Failed, not Running"),
        (_pod(ip=None), "no pod IP yet"),
    ],
    ids=["served", "terminating", "terminating-first", "pending", "succeeded", "failed", "no-ip"],
)
def test_excluded(pod, reason):
    assert pod.excluded == reason


@pytest.mark.parametrize(
    ("ip", "port", "worker", "url"),
    [
        ("10.0.0.5", 9100, 0, "http://10.0.0.5:9100/metrics"),
        ("10.0.0.5", 9100, 3, "http://10.0.0.5:9103/metrics"),
        ("fd00::5", 9100, 1, "http://[fd00::5]:9101/metrics"),
    ],
    ids=["first-worker", "last-worker", "ipv6-brackets"],
)
def test_metrics_url(ip, port, worker, url):
    assert _pod(ip=ip, metrics_port=port).metrics_url(worker) == url


@pytest.mark.parametrize(
    ("pod", "worker", "words"),
    [(_pod(), 4, "has no worker 4"), (_pod(), -1, "has no worker -1"), (_pod(ip=None), 0, "no IP")],
    ids=["past-last-worker", "negative-worker", "no-ip"],
)
def test_metrics_url_refused(pod, worker, words):
    with pytest.raises(ValueError, match=words):
        pod.metrics_url(worker)


def test_labels_are_immutable_and_pods_hashable():
    source = {"app": "push"}
    pod = _pod(labels=source)
    source["app"] = "changed"
    assert pod.labels == {"app": "push"}
    assert isinstance(pod.labels, Labels)
    with pytest.raises(TypeError):
        pod.labels["app"] = "x"  # type: ignore[index]
    assert {pod, _pod(labels={"app": "push"})} == {pod}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (service_object("ns", "push", APP), Service("ns", "push", APP)),
        (service_object("ns", "headless", None), Service("ns", "headless", {})),
    ],
    ids=["selector", "no-selector"],
)
def test_service_from_object(obj, expected):
    assert service_from_object(obj) == expected


@pytest.mark.parametrize(
    ("service", "pod", "selects"),
    [
        (Service("ns", "s", APP), _pod(), True),
        (Service("ns", "s", APP), _pod(labels={"app": "push", "extra": "1"}), True),
        (Service("ns", "s", APP), _pod(labels={"app": "web"}), False),
        (Service("other", "s", APP), _pod(), False),
        (Service("ns", "s", {}), _pod(), False),
    ],
    ids=["match", "extra-labels", "other-value", "other-namespace", "no-selector-no-pods"],
)
def test_service_selects(service, pod, selects):
    assert service.selects(pod) is selects


GOOD_FILE = """
pods:
  - {name: push-a, labels: {app: push}, ip: 127.0.0.1, metricsPort: 9100, workers: 4}
  - namespace: games
    name: push-b
    ip: "::1"
    workers: 2
    deployment: push
services:
  - {namespace: default, name: push, selector: {app: push}}
  - {name: bare}
"""


def test_static_file():
    inventory = parse_static_pods(GOOD_FILE)
    assert inventory.pods == (
        Pod("default", "push-a", {"app": "push"}, "127.0.0.1", 9100, 4),
        Pod("games", "push-b", {}, "::1", 9100, 2, deployment="push"),
    )
    assert inventory.services == (
        Service("default", "push", {"app": "push"}),
        Service("default", "bare", {}),
    )
    assert all(pod.excluded is None for pod in inventory.pods)


def test_static_file_with_no_pods():
    assert parse_static_pods("pods: []").pods == ()


def _pods(*lines: str) -> str:
    return "pods:\n" + "".join(f"  - {line}\n" for line in lines)


A = "{name: a, ip: 127.0.0.1}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pods: [", "not YAML: "),
        ("", "must be a mapping with a 'pods' list, not an empty file"),
        ("- a", "must be a mapping with a 'pods' list, not a list"),
        ("services: []", "missing key 'pods'"),
        ("pods: []\nextra: 1", "unknown key 'extra' (known: pods, services)"),
        ("pods: {a: 1}", "pods: must be a list, not dict"),
        (_pods("a"), "pods[0]: must be a mapping, not str"),
        (_pods("{ip: 127.0.0.1}"), "pods[0]: missing key 'name'"),
        (_pods("{name: a}"), "pods[0]: missing key 'ip'"),
        (_pods("{name: a, ip: 127.0.0.1, port: 9100}"), "pods[0]: unknown key 'port'"),
        (_pods(A, A, "{name: c, ip: 127.0.0.1, metricsPort: abc}"),
         "pods[2].metricsPort: must be an integer from 1 to 65535, not 'abc'"),
        (_pods("{name: a, ip: 127.0.0.1, metricsPort: 0}"),
         "pods[0].metricsPort: must be an integer from 1 to 65535, not 0"),
        (_pods("{name: a, ip: 127.0.0.1, metricsPort: '9100'}"),
         "pods[0].metricsPort: must be an integer from 1 to 65535, not '9100'"),
        (_pods("{name: a, ip: 127.0.0.1, workers: 0}"),
         "pods[0].workers: must be an integer from 1 to 64, not 0"),
        (_pods("{name: a, ip: 127.0.0.1, workers: true}"),
         "pods[0].workers: must be an integer from 1 to 64, not True"),
        (_pods("{name: a, ip: 127.0.0.1, workers: 2.5}"),
         "pods[0].workers: must be an integer from 1 to 64, not 2.5"),
        (_pods("{name: a, ip: 127.0.0.1, metricsPort: 65534, workers: 4}"),
         "pods[0]: metricsPort and workers: 4 workers from port 65534 reach port 65537"),
        (_pods("{name: a, ip: localhost}"),
         "pods[0].ip: must be an IP address, not 'localhost'"),
        (_pods("{name: a, ip: 127.0.0.1, namespace: ''}"),
         "pods[0].namespace: must be a non-empty string, not ''"),
        (_pods("{name: 7, ip: 127.0.0.1}"), "pods[0].name: must be a non-empty string, not 7"),
        (_pods("{name: a, ip: 127.0.0.1, labels: [app]}"),
         "pods[0].labels: must be a mapping, not ['app']"),
        (_pods("{name: a, ip: 127.0.0.1, labels: {enabled: true}}"),
         "pods[0].labels: 'enabled': True must be strings"),
        (_pods("{name: a, ip: 127.0.0.1, deployment: 3}"),
         "pods[0].deployment: must be a non-empty string, not 3"),
        (_pods(A, "{name: b, ip: 127.0.0.1}", "{namespace: default, name: a, ip: 127.0.0.2}"),
         "pods[2]: duplicate default/a (also pods[0])"),
        ("pods: []\nservices: {}", "services: must be a list, not dict"),
        ("pods: []\nservices: [{name: s, ports: [80]}]", "services[0]: unknown key 'ports'"),
        ("pods: []\nservices: [{selector: {}}]", "services[0]: missing key 'name'"),
        ("pods: []\nservices: [{name: s, selector: {app: 1}}]",
         "services[0].selector: 'app': 1 must be strings"),
        ("pods: []\nservices: [{name: s}, {name: s}]",
         "services[1]: duplicate default/s (also services[0])"),
    ],
    ids=[
        "not-yaml",
        "empty",
        "top-level-list",
        "missing-pods",
        "unknown-top-key",
        "pods-not-list",
        "pod-not-mapping",
        "missing-name",
        "missing-ip",
        "unknown-pod-key",
        "port-word",
        "port-zero",
        "port-quoted",
        "workers-zero",
        "workers-bool",
        "workers-float",
        "past-last-port",
        "ip-hostname",
        "empty-namespace",
        "name-number",
        "labels-list",
        "label-bool",
        "deployment-number",
        "duplicate-pod",
        "services-not-list",
        "unknown-service-key",
        "service-without-name",
        "selector-number",
        "duplicate-service",
    ],
)  # fmt: skip
def test_static_file_refused(text, message):
    with pytest.raises(StaticPodsError) as caught:
        parse_static_pods(text)
    assert message in str(caught.value)
