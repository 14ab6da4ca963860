"""An HPA's JSON read into the policy's settings: the good, the bad numbers, the wrong metric."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.controller.annotations import (
    ConfigError,
    parse_hpa,
    parse_quantity,
    wants_hysteresis,
)
from adapter.controller.policy import HysteresisSettings
from tests.adapter.controller.conftest import hpa_object


def test_defaults_and_the_target_from_the_pods_metric():
    config = parse_hpa(hpa_object(min_replicas=2))

    assert config.settings == HysteresisSettings(target_per_pod=40000.0, min_replicas=2)
    assert config.settings.threshold == 32000.0
    assert (config.namespace, config.name) == ("live", "push")
    assert config.target.scale_path == "/apis/apps/v1/namespaces/live/deployments/push/scale"
    assert config.scale_down_disabled


def test_every_annotation_is_read():
    hpa = hpa_object(
        annotations={
            "pushscale.io/headroom": "0.25",
            "pushscale.io/stabilization-seconds": "120",
            "pushscale.io/cooldown-seconds": "30.5",
            "pushscale.io/settle-max-seconds": "90",
            "pushscale.io/max-step": "2",
        },
        average="10k",
    )
    settings = parse_hpa(hpa).settings
    assert (settings.target_per_pod, settings.headroom, settings.max_step) == (10000.0, 0.25, 2)
    assert settings.stabilization_seconds == 120.0
    assert settings.cooldown_seconds == 30.5
    assert settings.settle_max_seconds == 90.0


@pytest.mark.parametrize(
    ("select_policy", "disabled"),
    [("Disabled", True), ("Max", False), ("Min", False), (None, False)],
    ids=["disabled", "max", "min", "default-is-max"],
)
def test_whether_the_hpa_scales_down_itself(select_policy, disabled):
    config = parse_hpa(hpa_object(select_policy=select_policy))
    assert config.scale_down_disabled is disabled
    assert config.select_policy == (select_policy or "Max")


def _without_metrics(hpa: dict[str, Any]) -> dict[str, Any]:
    del hpa["spec"]["metrics"]
    return hpa


@pytest.mark.parametrize(
    ("hpa", "error"),
    [
        (hpa_object(annotations={"pushscale.io/headroom": "abc"}),
         "pushscale.io/headroom: must be a number, not 'abc'"),
        (hpa_object(annotations={"pushscale.io/headroom": "1"}),
         "pushscale.io/headroom: must be a fraction from 0 up to (not including) 1, not '1'"),
        (hpa_object(annotations={"pushscale.io/headroom": "-0.1"}), "pushscale.io/headroom"),
        (hpa_object(annotations={"pushscale.io/headroom": "nan"}), "must be a finite number"),
        (hpa_object(annotations={"pushscale.io/stabilization-seconds": "5m"}),
         "pushscale.io/stabilization-seconds: must be a number, not '5m'"),
        (hpa_object(annotations={"pushscale.io/cooldown-seconds": "-1"}),
         "pushscale.io/cooldown-seconds: must be seconds from 0 to 86400, not '-1'"),
        (hpa_object(annotations={"pushscale.io/settle-max-seconds": "1e9"}),
         "pushscale.io/settle-max-seconds"),
        (hpa_object(annotations={"pushscale.io/max-step": "0"}),
         "pushscale.io/max-step: must be a whole number of pods from 1 to 100, not '0'"),
        (hpa_object(annotations={"pushscale.io/max-step": "1.5"}), "pushscale.io/max-step"),
        (hpa_object(metric="cpu_seconds"),
         "spec.metrics: no Pods metric socket_io_connected with an AverageValue target"),
        (_without_metrics(hpa_object()), "spec.metrics: no Pods metric socket_io_connected"),
        (hpa_object(target_type="Value"),
         "spec.metrics[0].pods.target.type: must be AverageValue (connections per pod), "
         "not 'Value'"),
        (hpa_object(target_type="Utilization"), "must be AverageValue"),
        (hpa_object(average="lots"),
         "spec.metrics[0].pods.target.averageValue: not a Kubernetes quantity: 'lots'"),
        (hpa_object(average="0"), "spec.metrics[0].pods.target.averageValue: must be above 0"),
        (hpa_object(target_kind="StatefulSet"),
         "spec.scaleTargetRef: apps/v1 StatefulSet is not supported"),
        (hpa_object(min_replicas=0), "spec.minReplicas: must be a whole number >= 1, not 0"),
    ],
    ids=[
        "headroom-not-a-number", "headroom-1", "headroom-negative", "headroom-nan",
        "stabilization-with-unit", "cooldown-negative", "settle-max-huge", "max-step-0",
        "max-step-fraction", "other-metric", "no-metrics", "target-type-value",
        "target-type-utilization", "target-not-a-quantity", "target-0", "statefulset",
        "min-replicas-0",
    ],
)  # fmt: skip
def test_bad_configuration_is_refused_with_the_field_and_value(hpa, error):
    with pytest.raises(ConfigError) as refused:
        parse_hpa(hpa)
    assert error in str(refused.value)


@pytest.mark.parametrize(
    ("annotation", "wanted"),
    [("true", True), ("True", True), (" true ", True), ("false", False), ("yes", False),
     (None, False)],
    ids=["true", "capital", "spaces", "false", "yes-is-not-true", "absent"],
)  # fmt: skip
def test_only_annotated_hpas_are_managed(annotation, wanted):
    hpa = hpa_object()
    del hpa["metadata"]["annotations"]["pushscale.io/hysteresis"]
    if annotation is not None:
        hpa["metadata"]["annotations"]["pushscale.io/hysteresis"] = annotation
    assert wants_hysteresis(hpa) is wanted


@pytest.mark.parametrize(
    ("text", "value"),
    [("40000", 40000.0), ("40k", 40000.0), ("1500m", 1.5), ("4e4", 40000.0), ("1Ki", 1024.0),
     ("0.5M", 500000.0), ("+12", 12.0), ("250u", 0.00025)],
    ids=["plain", "kilo", "milli", "exponent", "binary", "fraction-mega", "sign", "micro"],
)  # fmt: skip
def test_quantities_as_people_write_them(text, value):
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "k", "12 k", "12x", "1.2.3", "0x10"])
def test_not_quantities(text):
    with pytest.raises(ValueError):
        parse_quantity(text)
