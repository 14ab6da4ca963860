"""The push pods the adapter scrapes, and the Services that select them (pure).

`adapter.discovery` builds `Pod`s from Kubernetes Pod JSON (`pod_from_object`, fed by the pod
watch) or from the laptop file (`parse_static_pods`); the scrape loop reads `Pod.metrics_url`
for each worker, and the metrics API serves only pods whose `excluded` is None. A pod says how
to scrape it with annotations (`pushscale.io/metrics-port`, `pushscale.io/workers`); a bad one
raises `PodError`, a bad laptop file `StaticPodsError`, each naming the place.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from adapter.aggregate import Reason

# Pods carry `pushscale.io/scrape: "true"`; the watch asks the API server for them by label.
SCRAPE_LABEL = "pushscale.io/scrape"
METRICS_PORT_ANNOTATION = "pushscale.io/metrics-port"
WORKERS_ANNOTATION = "pushscale.io/workers"
# The push server's own defaults (`--metrics-port`, `--workers`).
DEFAULT_METRICS_PORT = 9100
DEFAULT_WORKERS = 4
# One supervisor per pod; far more workers than cores only adds scrape fan-out.
MAX_WORKERS = 64
MAX_PORT = 65535

# A Deployment names its ReplicaSets `<deployment>-<pod-template-hash>`.
_TEMPLATE_HASH_LABEL = "pod-template-hash"
_DIGITS = re.compile(r"[0-9]+")


class PodError(ValueError):
    """A pod whose annotations do not say how to scrape it."""


class StaticPodsError(ValueError):
    """A laptop pods file that does not describe pods; the message names the place."""


class Labels(Mapping[str, str]):
    """An immutable, hashable label map, so pods can be shared and used as keys."""

    # The dict answers lookups: every API request matches its selector against every pod.
    __slots__ = ("_items", "_map")

    def __init__(self, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        self._items: tuple[tuple[str, str], ...] = tuple(sorted(dict(pairs).items()))
        self._map = dict(self._items)

    def __getitem__(self, key: str) -> str:
        return self._map[key]

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def get(self, key: str, default: Any = None) -> Any:
        return self._map.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __repr__(self) -> str:
        return f"Labels({dict(self._items)!r})"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str | None
    metrics_port: int
    workers: int
    phase: str = "Running"
    deleting: bool = False
    deployment: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.labels, Labels):
            object.__setattr__(self, "labels", Labels(self.labels))

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def metrics_url(self, worker: int) -> str:
        if self.ip is None:
            raise ValueError(f"pod {self.namespace}/{self.name} has no IP yet")
        if not 0 <= worker < self.workers:
            raise ValueError(f"pod {self.namespace}/{self.name} has no worker {worker}")
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.metrics_port + worker}/metrics"

    @property
    def excluded(self) -> str | None:
        """Why the pod is not served whatever its scrape says, or None."""
        exclusion = self.exclusion
        return None if exclusion is None else exclusion[1]

    @property
    def exclusion(self) -> tuple[Reason, str] | None:
        """The code and words of `excluded`, or None.

        The HPA ignores terminating pods and counts Pending ones as unready, so a value for
        either would only mislead it.
        """
        if self.deleting:
            return "terminating", "terminating (deletionTimestamp set)"
        if self.phase != "Running":
            return "not_running", f"phase {self.phase}, not Running"
        if self.ip is None:
            return "no_ip", "no pod IP yet"
        return None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    selector: Mapping[str, str] = field(default_factory=Labels)

    def __post_init__(self) -> None:
        if not isinstance(self.selector, Labels):
            object.__setattr__(self, "selector", Labels(self.selector))

    def selects(self, pod: Pod) -> bool:
        """As the endpoints controller does: same namespace, every selector label equal.

        A Service without a selector has no pods chosen for it.
        """
        if pod.namespace != self.namespace or not self.selector:
            return False
        return all(pod.labels.get(key) == value for key, value in self.selector.items())


@dataclass(frozen=True)
class StaticInventory:
    pods: tuple[Pod, ...]
    services: tuple[Service, ...] = ()


def _past_last_port(port: int, workers: int) -> str | None:
    last = port + workers - 1
    if last > MAX_PORT:
        return f"{workers} workers from port {port} reach port {last}, past {MAX_PORT}"
    return None


def _annotation_int(
    pod: str, annotations: Mapping[str, Any], key: str, default: int, top: int
) -> int:
    raw = annotations.get(key)
    if raw is None:
        return default
    # int() would also take " 9100", "+9100" and "9_100"; Kubernetes users write digits.
    if not isinstance(raw, str) or not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= top:
        raise PodError(
            f"pod {pod}: annotation {key} must be an integer from 1 to {top}, not {raw!r}"
        )
    return int(raw)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _deployment(metadata: Mapping[str, Any], labels: Mapping[str, str]) -> str | None:
    template_hash = labels.get(_TEMPLATE_HASH_LABEL)
    if not template_hash:
        return None
    for owner in metadata.get("ownerReferences") or ():
        if not isinstance(owner, Mapping) or not owner.get("controller"):
            continue
        name = owner.get("name")
        suffix = f"-{template_hash}"
        if owner.get("kind") == "ReplicaSet" and isinstance(name, str) and name.endswith(suffix):
            return name[: -len(suffix)] or None
    return None


def pod_from_object(obj: Mapping[str, Any]) -> Pod:
    """A Pod from its Kubernetes JSON (a list item or a watch event's object)."""
    metadata = _mapping(obj.get("metadata"))
    status = _mapping(obj.get("status"))
    namespace = metadata.get("namespace") or "default"
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise PodError(f"a pod in {namespace} has no metadata.name")
    where = f"{namespace}/{name}"
    labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}
    annotations = _mapping(metadata.get("annotations"))
    port = _annotation_int(
        where, annotations, METRICS_PORT_ANNOTATION, DEFAULT_METRICS_PORT, MAX_PORT
    )
    workers = _annotation_int(where, annotations, WORKERS_ANNOTATION, DEFAULT_WORKERS, MAX_WORKERS)
    if problem := _past_last_port(port, workers):
        raise PodError(
            f"pod {where}: annotations {METRICS_PORT_ANNOTATION} and {WORKERS_ANNOTATION}: "
            f"{problem}"
        )
    return Pod(
        namespace=namespace,
        name=name,
        labels=labels,
        ip=status.get("podIP") or None,
        metrics_port=port,
        workers=workers,
        # The API server defaults a new pod's phase to Pending.
        phase=status.get("phase") or "Pending",
        deleting=metadata.get("deletionTimestamp") is not None,
        deployment=_deployment(metadata, labels),
    )


def service_from_object(obj: Mapping[str, Any]) -> Service:
    metadata = _mapping(obj.get("metadata"))
    selector = _mapping(_mapping(obj.get("spec")).get("selector"))
    return Service(
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or ""),
        selector={str(k): str(v) for k, v in selector.items()},
    )


# The laptop file: what `pushscale adapter --static-pods FILE` serves instead of a pod watch.

_POD_KEYS = ("namespace", "name", "labels", "ip", "metricsPort", "workers", "deployment")
_SERVICE_KEYS = ("namespace", "name", "selector")


def _keys(item: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    if not isinstance(item, dict):
        raise StaticPodsError(f"{where}: must be a mapping, not {type(item).__name__}")
    for key in item:
        if key not in allowed:
            raise StaticPodsError(f"{where}: unknown key {key!r} (known: {', '.join(allowed)})")
    for key in required:
        if key not in item:
            raise StaticPodsError(f"{where}: missing key {key!r}")


def _string(item: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or not value:
        raise StaticPodsError(f"{where}.{key}: must be a non-empty string, not {value!r}")
    return value


def _string_map(item: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = item.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StaticPodsError(f"{where}.{key}: must be a mapping, not {value!r}")
    for name, text in value.items():
        # YAML reads `enabled: true` as a bool; a label value is always a string.
        if not isinstance(name, str) or not isinstance(text, str):
            raise StaticPodsError(
                f"{where}.{key}: {name!r}: {text!r} must be strings (quote YAML's true, 1)"
            )
    return dict(value)


def _integer(item: dict[str, Any], key: str, where: str, default: int, top: int) -> int:
    value = item.get(key, default)
    # YAML booleans are ints to Python; `workers: yes` is still a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise StaticPodsError(f"{where}.{key}: must be an integer from 1 to {top}, not {value!r}")
    return value


def _static_pod(item: Any, where: str) -> Pod:
    _keys(item, where, _POD_KEYS, ("name", "ip"))
    ip = _string(item, "ip", where)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise StaticPodsError(f"{where}.ip: must be an IP address, not {ip!r}") from None
    port = _integer(item, "metricsPort", where, DEFAULT_METRICS_PORT, MAX_PORT)
    workers = _integer(item, "workers", where, DEFAULT_WORKERS, MAX_WORKERS)
    if problem := _past_last_port(port, workers):
        raise StaticPodsError(f"{where}: metricsPort and workers: {problem}")
    deployment = item.get("deployment")
    return Pod(
        namespace=_string(item, "namespace", where, "default"),
        name=_string(item, "name", where),
        labels=_string_map(item, "labels", where),
        ip=ip,
        metrics_port=port,
        workers=workers,
        deployment=None if deployment is None else _string(item, "deployment", where),
    )


def _static_service(item: Any, where: str) -> Service:
    _keys(item, where, _SERVICE_KEYS, ("name",))
    return Service(
        namespace=_string(item, "namespace", where, "default"),
        name=_string(item, "name", where),
        selector=_string_map(item, "selector", where),
    )


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list):
        raise StaticPodsError(f"{key}: must be a list, not {type(value).__name__}")
    return value


def _no_duplicates(kind: str, objects: Iterable[Pod | Service]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, obj in enumerate(objects):
        key = (obj.namespace, obj.name)
        if key in seen:
            raise StaticPodsError(
                f"{kind}[{i}]: duplicate {obj.namespace}/{obj.name} (also {kind}[{seen[key]}])"
            )
        seen[key] = i


def parse_static_pods(text: str) -> StaticInventory:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StaticPodsError(f"not YAML: {exc}".replace("\n", " ")) from exc
    except RecursionError:
        # PyYAML builds nested collections recursively; a few thousand `[` exhaust the stack.
        raise StaticPodsError("not a pods file: nested too deeply") from None
    if not isinstance(document, dict):
        found = "an empty file" if document is None else f"a {type(document).__name__}"
        raise StaticPodsError(f"must be a mapping with a 'pods' list, not {found}")
    for key in document:
        if key not in ("pods", "services"):
            raise StaticPodsError(f"unknown key {key!r} (known: pods, services)")
    if "pods" not in document:
        raise StaticPodsError("missing key 'pods'")
    pods = tuple(_static_pod(item, f"pods[{i}]") for i, item in enumerate(_list(document, "pods")))
    services = tuple(
        _static_service(item, f"services[{i}]")
        for i, item in enumerate(_list(document, "services"))
    )
    _no_duplicates("pods", pods)
    _no_duplicates("services", services)
    return StaticInventory(pods, services)
