"""The controller's Events on an HPA, and when one is worth posting (pure).

`adapter.controller.reconcile` reports every decision through `event_object` (a core/v1 Event
with the HPA as `involvedObject`, as client-go's recorder writes it, so `kubectl describe hpa`
lists it) and asks `should_post` first: an Event goes out when the decision's reason or the
shape of its message changes (`message_shape`: numbers masked, so a countdown or a drifting
load does not post every sync), and again every `--event-repeat-seconds` while it holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapter.kube import JsonObject
from adapter.wire import rfc3339

COMPONENT = "pushscale-controller"
# events.k8s.io caps a note at 1 kB; core/v1 does not, but no reader needs more.
_MAX_MESSAGE = 1024
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class HpaRef:
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def reference(self) -> dict[str, str]:
        """The Event's `involvedObject`, as client-go's recorder fills it."""
        reference = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.uid:
            reference["uid"] = self.uid
        if self.resource_version:
            reference["resourceVersion"] = self.resource_version
        return reference

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def hpa_ref(hpa: Mapping[str, Any]) -> HpaRef:
    metadata = hpa.get("metadata") or {}
    return HpaRef(
        str(metadata.get("namespace") or "default"),
        str(metadata.get("name") or ""),
        str(metadata.get("uid") or ""),
        str(metadata.get("resourceVersion") or ""),
    )


def message_shape(message: str) -> str:
    """A message with its numbers masked: what must change for a new Event."""
    return _NUMBER.sub("#", message)


def should_post(last: tuple[str, float] | None, key: str, now: float, repeat: float) -> bool:
    return last is None or last[0] != key or now - last[1] >= repeat


def event_object(
    ref: HpaRef,
    event_type: str,
    reason: str,
    message: str,
    wall: float,
    name_suffix: int,
    identity: str,
) -> JsonObject:
    """A core/v1 Event on the HPA, named `<hpa>.<hex>` as client-go's recorder names them."""
    stamp = rfc3339(wall)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ref.name}.{name_suffix:x}", "namespace": ref.namespace},
        "involvedObject": ref.reference(),
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "type": event_type,
        "source": {"component": COMPONENT},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": identity,
    }
