"""Which HPAs the controller manages, and with what settings: an HPA's JSON read once (pure).

`adapter.controller.reconcile` lists the autoscaling/v2 HPAs every sync, keeps those that
`wants_hysteresis`, and calls `parse_hpa` on each: the `HysteresisSettings` for
`adapter.controller.policy` (target from the HPA's `socket_io_connected` Pods metric, the rest
from `pushscale.io/*` annotations), the scale target, and whether the HPA's own scale-down is
off. Anything that does not parse raises `ConfigError` naming the field and the value; the
reconciler turns it into an `InvalidHysteresisConfig` Event on the HPA and skips it.

    metadata:
      annotations:
        pushscale.io/hysteresis: "true"
        pushscale.io/headroom: "0.2"                 # share of the target left free per pod
        pushscale.io/stabilization-seconds: "300"    # below the threshold this long first
        pushscale.io/cooldown-seconds: "60"          # since the last scale event, either way
        pushscale.io/settle-max-seconds: "180"       # a storm is over after this long, whatever
        pushscale.io/max-step: "4"                   # pods removed at a time, at most

An annotation left out takes the policy's own default (`HysteresisSettings`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from adapter.controller.policy import HysteresisSettings

PREFIX = "pushscale.io/"
ENABLED = f"{PREFIX}hysteresis"
HEADROOM = f"{PREFIX}headroom"
STABILIZATION = f"{PREFIX}stabilization-seconds"
COOLDOWN = f"{PREFIX}cooldown-seconds"
SETTLE_MAX = f"{PREFIX}settle-max-seconds"
MAX_STEP = f"{PREFIX}max-step"
# The metric whose AverageValue target the policy keeps pods under.
METRIC = "socket_io_connected"

# Targets whose pods a ReplicaSet removes, so `controller.kubernetes.io/pod-deletion-cost`
# decides which go. A StatefulSet always removes its highest ordinal, whatever the cost: the
# controller could not remove the emptiest pod, which is half of why it exists.
SCALE_RESOURCES = {("apps", "Deployment"): "deployments", ("apps", "ReplicaSet"): "replicasets"}

# The policy's defaults, for the annotations left out.
_DEFAULTS = HysteresisSettings(target_per_pod=1.0)
# A day: a longer window is surely a unit mistake (minutes or milliseconds for seconds).
_MAX_SECONDS = 86_400.0
_MAX_STEP = 100

T = TypeVar("T")


class ConfigError(ValueError):
    """An HPA the controller cannot manage; the message names the field and the value."""


@dataclass(frozen=True)
class ScaleTarget:
    """The HPA's `scaleTargetRef`, and where its `scale` subresource lives."""

    namespace: str
    api_version: str  # group/version, e.g. apps/v1
    kind: str
    name: str

    @property
    def scale_path(self) -> str:
        group, _, version = self.api_version.rpartition("/")
        resource = SCALE_RESOURCES[(group, self.kind)]
        return f"/apis/{group}/{version}/namespaces/{self.namespace}/{resource}/{self.name}/scale"

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class HpaConfig:
    namespace: str
    name: str
    uid: str
    resource_version: str
    target: ScaleTarget
    settings: HysteresisSettings
    # The HPA's `spec.behavior.scaleDown.selectPolicy`; anything but Disabled means the HPA
    # scales down too (its default is Max).
    select_policy: str

    @property
    def scale_down_disabled(self) -> bool:
        return self.select_policy == "Disabled"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def wants_hysteresis(hpa: Mapping[str, Any]) -> bool:
    """Annotated `pushscale.io/hysteresis: "true"` (as a Kubernetes boolean string)."""
    annotations = _mapping(_mapping(hpa.get("metadata")).get("annotations"))
    return str(annotations.get(ENABLED, "")).strip().lower() == "true"


def parse_hpa(hpa: Mapping[str, Any]) -> HpaConfig:
    metadata = _mapping(hpa.get("metadata"))
    spec = _mapping(hpa.get("spec"))
    annotations = _mapping(metadata.get("annotations"))
    namespace = str(metadata.get("namespace") or "default")
    target = _scale_target(namespace, _mapping(spec.get("scaleTargetRef")))
    average = _target_average_value(spec.get("metrics"))
    min_replicas = spec.get("minReplicas", 1)
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 1:
        raise ConfigError(f"spec.minReplicas: must be a whole number >= 1, not {min_replicas!r}")
    try:
        settings = HysteresisSettings(
            target_per_pod=average,
            min_replicas=min_replicas,
            headroom=_annotation(annotations, HEADROOM, _DEFAULTS.headroom, _fraction),
            stabilization_seconds=_annotation(
                annotations, STABILIZATION, _DEFAULTS.stabilization_seconds, _seconds
            ),
            cooldown_seconds=_annotation(
                annotations, COOLDOWN, _DEFAULTS.cooldown_seconds, _seconds
            ),
            settle_max_seconds=_annotation(
                annotations, SETTLE_MAX, _DEFAULTS.settle_max_seconds, _seconds
            ),
            max_step=_annotation(annotations, MAX_STEP, _DEFAULTS.max_step, _step),
        )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc  # HysteresisSettings' own checks
    behavior = _mapping(_mapping(spec.get("behavior")).get("scaleDown"))
    return HpaConfig(
        namespace=namespace,
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        resource_version=str(metadata.get("resourceVersion") or ""),
        target=target,
        settings=settings,
        select_policy=str(behavior.get("selectPolicy") or "Max"),
    )


def _scale_target(namespace: str, ref: Mapping[str, Any]) -> ScaleTarget:
    kind, name = ref.get("kind"), ref.get("name")
    api_version = str(ref.get("apiVersion") or "")
    if not isinstance(kind, str) or not isinstance(name, str) or not kind or not name:
        raise ConfigError("spec.scaleTargetRef: needs a kind and a name")
    group = api_version.rpartition("/")[0]
    if (group, kind) not in SCALE_RESOURCES:
        supported = ", ".join(f"{g}/v1 {k}" for g, k in SCALE_RESOURCES)
        raise ConfigError(
            f"spec.scaleTargetRef: {api_version or '?'} {kind} is not supported ({supported} "
            "only: the controller removes the emptiest pods through pod-deletion-cost, which "
            "only a ReplicaSet honours)"
        )
    return ScaleTarget(namespace, api_version, kind, name)


def _target_average_value(metrics: Any) -> float:
    """The AverageValue target of the Pods metric `socket_io_connected`."""
    for index, metric in enumerate(metrics if isinstance(metrics, list) else []):
        metric = _mapping(metric)
        pods = _mapping(metric.get("pods"))
        if metric.get("type") != "Pods" or _mapping(pods.get("metric")).get("name") != METRIC:
            continue
        where = f"spec.metrics[{index}].pods.target"
        target = _mapping(pods.get("target"))
        if target.get("type") != "AverageValue":
            raise ConfigError(
                f"{where}.type: must be AverageValue (connections per pod), "
                f"not {target.get('type')!r}"
            )
        text = target.get("averageValue")
        try:
            value = parse_quantity(str(text))
        except ValueError as exc:
            raise ConfigError(f"{where}.averageValue: {exc}") from exc
        if value <= 0:
            raise ConfigError(f"{where}.averageValue: must be above 0, not {text!r}")
        return value
    raise ConfigError(
        f"spec.metrics: no Pods metric {METRIC} with an AverageValue target; the controller "
        "keeps pods under that target"
    )


def _annotation(
    annotations: Mapping[str, Any], name: str, default: T, convert: Callable[[str], T]
) -> T:
    if name not in annotations:
        return default
    text = str(annotations[name])
    try:
        return convert(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}, not {text!r}") from exc


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise ValueError("must be a fraction from 0 up to (not including) 1")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= _MAX_SECONDS:
        raise ValueError(f"must be seconds from 0 to {_MAX_SECONDS:.0f}")
    return value


def _step(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= _MAX_STEP:
        raise ValueError(f"must be a whole number of pods from 1 to {_MAX_STEP}")
    return int(text)


# resource.Quantity: a decimal number, then a binary suffix, a decimal suffix or an exponent.
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([a-zA-Z]*|[eE][+-]?[0-9]+)")
_SUFFIXES = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip


def parse_quantity(text: str) -> float:
    """A Kubernetes Quantity (`40000`, `40k`, `1500m`, `4e4`) as a number; the HPA's targets
    are written by people, so every form `resource.ParseQuantity` takes is taken."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return float(Decimal(number) * Decimal(10) ** int(suffix[1:]))
        if suffix not in _SUFFIXES:
            raise ValueError(f"unknown quantity suffix {suffix!r} in {text!r}")
        return float(Decimal(number) * _SUFFIXES[suffix])
    except InvalidOperation as exc:
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
