"""The HPA model: one sync of the Kubernetes HorizontalPodAutoscaler controller (pure).

The simulator calls `sync` once per `SYNC_PERIOD_SECONDS` with the HPA's spec, the scale
target's `spec.replicas`, what the custom metrics API serves (a `PodSample` per pod, or an
`ObjectSample`) and the `HpaMemory` the previous call returned; the companion controller calls it
to know what the HPA will do next. It returns an `HpaDecision` (replicas, the controller's reason
and message, its conditions) and the memory to pass next time. It owns the port of
kubernetes pkg/controller/podautoscaler for `Pods` and `Object` metrics with `AverageValue`:

- replica_calculator.go: `pods_metric_replicas` (GetMetricReplicas, calcPlainMetricReplicas,
  groupPods) and `object_metric_replicas` (GetObjectPerPodMetricReplicas);
- horizontal.go: `sync` (reconcileAutoscaler), `stabilize` (stabilizeRecommendationWithBehaviors),
  `limit_rate` (convertDesiredReplicasWithBehaviorRate with calculateScaleUpLimitWithScalingRules
  and calculateScaleDownLimitWithBehaviors), `store_scale_event` (storeScaleEvent), and the path
  of an HPA without `spec.behavior`: `stabilize_without_behavior` (stabilizeRecommendation) and
  `limit_without_behavior` (convertDesiredReplicasWithRules);
- pkg/apis/autoscaling/v2/defaults.go: `behavior` and `DEFAULT_BEHAVIOR`.

Values are compared as the controller compares them, in integer milli-units (Quantity.MilliValue);
time is the caller's `now`, in seconds. No clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
MetricType = Literal["Pods", "Object"]

# kube-controller-manager's --horizontal-pod-autoscaler-sync-period default: the caller drives
# `sync` this often.
SYNC_PERIOD_SECONDS = 15
# --horizontal-pod-autoscaler-tolerance default: a usage ratio within 10 % of 1 changes nothing.
DEFAULT_TOLERANCE = 0.1
# --horizontal-pod-autoscaler-downscale-stabilization default (5m): the scale-down window of an
# HPA without `behavior`, and of one whose `behavior.scaleDown` leaves the window unset.
DOWNSCALE_STABILIZATION_SECONDS = 300
# calculateScaleUpLimit (horizontal.go): without `behavior`, a sync at most doubles the replicas,
# or goes to 4.
_SCALE_UP_LIMIT_FACTOR = 2.0
_SCALE_UP_LIMIT_MINIMUM = 4.0
# The int32 bounds the Go code starts its policy selection from.
_MAX_INT32 = 2**31 - 1
_MIN_INT32 = -(2**31)


@dataclass(frozen=True)
class ScalingPolicy:
    """HPAScalingPolicy: at most `value` pods, or `value` percent, per `period_seconds`."""

    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """HPAScalingRules, one direction of `spec.behavior`.

    None means unset: a scale-down window then is the controller's downscale stabilization flag
    (maybeInitScaleDownStabilizationWindow), a scale-up window 0; a tolerance is the
    controller's tolerance flag (the per-HPA tolerance is KEP-4951, HPAConfigurableTolerance).
    """

    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"
    stabilization_window_seconds: int | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules
    scale_down: ScalingRules


# defaults.go: defaultHPAScaleUpRules ("these constants repeat previous HPA behavior") and
# defaultHPAScaleDownRules, whose window the API server leaves to the controller's flag.
_DEFAULT_SCALE_UP = ScalingRules(
    policies=(ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)),
    select_policy="Max",
    stabilization_window_seconds=0,
)
_DEFAULT_SCALE_DOWN = ScalingRules(policies=(ScalingPolicy("Percent", 100, 15),))


def behavior(
    *,
    scale_up_window_seconds: int | None = None,
    scale_up_select: SelectPolicy | None = None,
    scale_up_policies: Sequence[ScalingPolicy] | None = None,
    scale_up_tolerance: float | None = None,
    scale_down_window_seconds: int | None = None,
    scale_down_select: SelectPolicy | None = None,
    scale_down_policies: Sequence[ScalingPolicy] | None = None,
    scale_down_tolerance: float | None = None,
) -> Behavior:
    """`spec.behavior` as the API server completes it: each field given, else its default.

    SetDefaults_HorizontalPodAutoscalerBehavior and copyHPAScalingRules: policies given replace
    the default policies as a whole.
    """

    def rules(
        default: ScalingRules,
        window: int | None,
        select: SelectPolicy | None,
        policies: Sequence[ScalingPolicy] | None,
        tolerance: float | None,
    ) -> ScalingRules:
        return ScalingRules(
            policies=default.policies if policies is None else tuple(policies),
            select_policy=default.select_policy if select is None else select,
            stabilization_window_seconds=(
                default.stabilization_window_seconds if window is None else window
            ),
            tolerance=tolerance,
        )

    return Behavior(
        rules(
            _DEFAULT_SCALE_UP,
            scale_up_window_seconds,
            scale_up_select,
            scale_up_policies,
            scale_up_tolerance,
        ),
        rules(
            _DEFAULT_SCALE_DOWN,
            scale_down_window_seconds,
            scale_down_select,
            scale_down_policies,
            scale_down_tolerance,
        ),
    )


# What `behavior: {}` becomes. Not the same as no `behavior` at all: an HPA without it keeps the
# older path (no scale-up window, at most max(2 x current, 4) per sync, no scale-down policy).
DEFAULT_BEHAVIOR = behavior()


@dataclass(frozen=True)
class HpaSpec:
    """What the controller reads from one HPA, plus the two kube-controller-manager flags."""

    target_average_value: float
    min_replicas: int
    max_replicas: int
    behavior: Behavior | None = None
    metric: MetricType = "Pods"
    metric_name: str = "socket_io_connected"
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_seconds: int = DOWNSCALE_STABILIZATION_SECONDS

    def __post_init__(self) -> None:
        if not self.target_average_value > 0:
            raise ValueError("target_average_value must be positive")
        # minReplicas 0 needs the HPAScaleToZero alpha gate, not modelled.
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.tolerance < 0:
            raise ValueError("tolerance must not be negative")


@dataclass(frozen=True)
class PodSample:
    """One pod the HPA's selector lists, with its metric value (None: the API served none).

    `ready` is kept for the caller: for `Pods` metrics the controller never looks at readiness
    (groupPods checks it only for cpu), so a Running pod that is not ready counts with its value.
    """

    name: str
    value: float | None
    phase: PodPhase = "Running"
    ready: bool = True
    deleting: bool = False


@dataclass(frozen=True)
class ObjectSample:
    """An `Object` metric: the described object's value and the scale's `status.replicas`."""

    value: float
    status_replicas: int


@dataclass(frozen=True)
class Tolerances:
    """How far from 1 a usage ratio may be and change nothing (Tolerances in replica_calculator)."""

    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def within(self, ratio: float) -> bool:
        # Tolerances.isWithin. Older controllers tested |1 - ratio| <= tolerance, which in
        # float64 puts a ratio of exactly 1.1 outside; this form keeps it inside.
        return 1.0 - self.scale_down <= ratio <= 1.0 + self.scale_up


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    """A scale the controller made: `change` replicas added (up list) or removed (down list)."""

    at: float
    change: int


@dataclass(frozen=True)
class HpaMemory:
    """What the controller keeps per HPA between syncs, in its order (slots are reused)."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True)
class Condition:
    type: Literal["AbleToScale", "ScalingActive", "ScalingLimited"]
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class HpaDecision:
    """One sync's outcome. `reason` is the condition reason that decided `desired_replicas`."""

    desired_replicas: int
    reason: str
    message: str
    metric_replicas: int | None = None  # the replica calculator's proposal
    stabilized_replicas: int | None = None  # after the stabilization window, before limits
    rescale_reason: str = ""  # the SuccessfulRescale event's "reason:" text, when scaling
    conditions: tuple[Condition, ...] = ()


_Kept = TypeVar("_Kept")


class ReplicaCountError(ValueError):
    """The replica calculator cannot tell (the controller's wording); the HPA keeps its size."""


def milli(value: float) -> int:
    """A value as the controller holds it: Quantity.MilliValue, rounded up."""
    return math.ceil(round(value * 1000, 6))


def _usage_ratio(metrics: Sequence[int], target_milli: int) -> float:
    # GetMetricUsageRatio: the int64 average (truncated) over the target.
    total = sum(metrics)
    average = abs(total) // len(metrics) * (1 if total >= 0 else -1)
    return average / target_milli


def pods_metric_replicas(
    current_replicas: int,
    samples: Sequence[PodSample],
    target_average_value: float,
    tolerances: Tolerances = Tolerances(),
) -> int:
    """Desired replicas for a `Pods` metric (calcPlainMetricReplicas with groupPods).

    Deleting and Failed pods never count; Pending pods count as 0 only when the others alone
    ask to scale up; pods without a value count as the target on a scale-down and as 0 on a
    scale-up. If those guesses flip the direction or land within tolerance, nothing changes.
    """
    if not samples:
        raise ReplicaCountError("no pods returned by selector while calculating replica count")
    target = milli(target_average_value)
    metrics: list[int] = []
    unready = missing = 0
    for pod in samples:
        if pod.deleting or pod.phase == "Failed":
            continue
        if pod.phase == "Pending":
            unready += 1
        elif pod.value is None:
            missing += 1
        else:
            metrics.append(milli(pod.value))
    if not metrics:
        raise ReplicaCountError("did not receive metrics for targeted pods (pods might be unready)")
    ready = len(metrics)
    ratio = _usage_ratio(metrics, target)
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        return current_replicas if tolerances.within(ratio) else math.ceil(ratio * ready)
    if missing and ratio < 1.0:
        metrics += [target] * missing
    elif missing and ratio > 1.0:
        metrics += [0] * missing
    if scale_up_with_unready:
        metrics += [0] * unready
    new_ratio = _usage_ratio(metrics, target)
    if tolerances.within(new_ratio) or ratio < 1.0 < new_ratio or ratio > 1.0 > new_ratio:
        return current_replicas
    new_replicas = math.ceil(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return current_replicas  # counting more pods would turn the direction around
    return new_replicas


def object_metric_replicas(
    status_replicas: int,
    value: float,
    target_average_value: float,
    tolerances: Tolerances = Tolerances(),
) -> int:
    """Desired replicas for an `Object` metric with `AverageValue` (GetObjectPerPodMetricReplicas).

    The ratio divides by the scale's `status.replicas` (pods that exist, ready or not); outside
    tolerance the answer is ceil(value / target), whatever the readiness.
    """
    usage, target = milli(value), milli(target_average_value)
    if status_replicas:
        ratio = usage / (float(target) * float(status_replicas))
    else:  # float64 division by zero in Go: +Inf, or NaN for 0 / 0; neither is within
        ratio = math.inf if usage > 0 else math.nan
    if tolerances.within(ratio):
        return status_replicas
    return math.ceil(usage / target)


# The AbleToScale reasons and messages of normalizeDesiredReplicas(WithBehaviors).
_READY = ("ReadyForNewScale", "recommended size matches current size")
_UP_STABILIZED = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
)
_DOWN_STABILIZED = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent "
    "recommendation",
)


def _reuse(items: tuple[_Kept, ...], index: int | None, new: _Kept) -> tuple[_Kept, ...]:
    # The controller overwrites an old slot when it has one, else appends.
    if index is None:
        return (*items, new)
    return (*items[:index], new, *items[index + 1 :])


def stabilize(
    recommendations: tuple[Recommendation, ...],
    desired: int,
    current: int,
    up_window_seconds: int,
    down_window_seconds: int,
    now: float,
) -> tuple[int, str, str, tuple[Recommendation, ...]]:
    """Stabilized replicas, AbleToScale reason and message, recommendations with `desired` added.

    stabilizeRecommendationWithBehaviors: current replicas, raised to the lowest recommendation
    of the scale-up window and lowered to the highest of the scale-down window (each including
    `desired`). The last recommendation older than both windows is overwritten, else one is
    appended: the controller's way of keeping the list short.
    """
    up_cutoff, down_cutoff = now - up_window_seconds, now - down_window_seconds
    up = down = desired
    old: int | None = None
    for index, rec in enumerate(recommendations):
        if rec.at > up_cutoff:
            up = min(up, rec.replicas)
        if rec.at > down_cutoff:
            down = max(down, rec.replicas)
        if rec.at < up_cutoff and rec.at < down_cutoff:
            old = index
    stabilized = min(max(current, up), down)
    kept = _reuse(recommendations, old, Recommendation(now, desired))
    if stabilized == desired:
        return stabilized, *_READY, kept
    return stabilized, *(_UP_STABILIZED if desired >= current else _DOWN_STABILIZED), kept


def stabilize_without_behavior(
    recommendations: tuple[Recommendation, ...], desired: int, window_seconds: int, now: float
) -> tuple[int, tuple[Recommendation, ...]]:
    """stabilizeRecommendation: the highest recommendation of the window, `desired` included."""
    cutoff = now - window_seconds
    highest = desired
    old: int | None = None
    for index, rec in enumerate(recommendations):
        if rec.at < cutoff:
            old = index
        elif rec.replicas > highest:
            highest = rec.replicas
    return highest, _reuse(recommendations, old, Recommendation(now, desired))


def _changed_within(events: Sequence[ScaleEvent], period_seconds: int, now: float) -> int:
    # getReplicasChangePerPeriod: events strictly after now - period.
    return sum(event.change for event in events if event.at > now - period_seconds)


def scale_up_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """calculateScaleUpLimitWithScalingRules: the most replicas the policies allow now.

    Each policy counts from the replicas at the start of its period (current, less what was
    added, plus what was removed since), so a period's budget is spent across syncs.
    """
    if rules.select_policy == "Disabled":
        return current
    pick, result = (min, _MAX_INT32) if rules.select_policy == "Min" else (max, _MIN_INT32)
    for policy in rules.policies:
        start = (
            current
            - _changed_within(up_events, policy.period_seconds, now)
            + _changed_within(down_events, policy.period_seconds, now)
        )
        if policy.type == "Pods":
            proposed = start + policy.value
        else:  # rounded up, else a small percentage of few pods would never add one
            proposed = math.ceil(start * (1 + policy.value / 100))
        result = pick(result, proposed)
    return result


def scale_down_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """calculateScaleDownLimitWithBehaviors: the fewest replicas the policies allow now.

    A Percent policy truncates the replicas that stay (int32 conversion), so 10 % of 72 removes
    8, not 7.
    """
    if rules.select_policy == "Disabled":
        return current
    pick, result = (max, _MIN_INT32) if rules.select_policy == "Min" else (min, _MAX_INT32)
    for policy in rules.policies:
        start = (
            current
            - _changed_within(up_events, policy.period_seconds, now)
            + _changed_within(down_events, policy.period_seconds, now)
        )
        if policy.type == "Pods":
            proposed = start - policy.value
        else:
            proposed = int(start * (1 - policy.value / 100))
        result = pick(result, proposed)
    return result


def limit_rate(
    desired: int,
    current: int,
    min_replicas: int,
    max_replicas: int,
    rules: Behavior,
    memory: HpaMemory,
    now: float,
) -> tuple[int, str, str]:
    """convertDesiredReplicasWithBehaviorRate: policies, then min/max; ScalingLimited's reason."""
    if desired > current:
        limit = max(
            scale_up_limit(
                current, memory.scale_up_events, memory.scale_down_events, rules.scale_up, now
            ),
            current,
        )
        if max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
            message = "the desired replica count is increasing faster than the maximum scale rate"
        else:
            allowed, reason = max_replicas, "TooManyReplicas"
            message = "the desired replica count is more than the maximum replica count"
        if desired > allowed:
            return allowed, reason, message
    elif desired < current:
        limit = min(
            scale_down_limit(
                current, memory.scale_up_events, memory.scale_down_events, rules.scale_down, now
            ),
            current,
        )
        if min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
            message = "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            allowed, reason = min_replicas, "TooFewReplicas"
            message = "the desired replica count is less than the minimum replica count"
        if desired < allowed:
            return allowed, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def limit_without_behavior(
    desired: int, current: int, min_replicas: int, max_replicas: int
) -> tuple[int, str, str]:
    """convertDesiredReplicasWithRules: min/max and the max(2 x current, 4) scale-up limit."""
    up_limit = int(max(_SCALE_UP_LIMIT_FACTOR * current, _SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > up_limit:
        allowed, reason = up_limit, "ScaleUpLimit"
        message = "the desired replica count is increasing faster than the maximum scale rate"
    else:
        allowed, reason = max_replicas, "TooManyReplicas"
        message = "the desired replica count is more than the maximum replica count"
    if desired < min_replicas:
        message = "the desired replica count is less than the minimum replica count"
        return min_replicas, "TooFewReplicas", message
    if desired > allowed:
        return allowed, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def store_scale_event(
    events: tuple[ScaleEvent, ...], change: int, rules: ScalingRules, now: float
) -> tuple[ScaleEvent, ...]:
    """storeScaleEvent: overwrite the last event older than the longest policy period, or append.

    Only one old event is overwritten per scale; others stay, and still count for the other
    direction's policies when those have longer periods, as in the controller.
    """
    longest = max((policy.period_seconds for policy in rules.policies), default=0)
    old: int | None = None
    for index, event in enumerate(events):
        if event.at < now - longest:
            old = index
    return _reuse(events, old, ScaleEvent(now, change))


def _tolerances(spec: HpaSpec) -> Tolerances:
    rules = spec.behavior
    down = rules.scale_down.tolerance if rules else None
    up = rules.scale_up.tolerance if rules else None
    return Tolerances(
        spec.tolerance if down is None else down, spec.tolerance if up is None else up
    )


def _metric_label(spec: HpaSpec) -> str:
    if spec.metric == "Pods":
        return f"pods metric {spec.metric_name}"
    # computeStatusForObjectMetric names an AverageValue object metric this way, nil selector
    # and all; the text shows in the HPA's events and conditions.
    return f"external metric {spec.metric_name}(<nil>)"


def _record_scale(
    spec: HpaSpec, memory: HpaMemory, current: int, desired: int, now: float
) -> HpaMemory:
    # After a successful scale. No events are kept for an HPA without behavior: nothing reads them.
    if spec.behavior is None:
        return memory
    if desired > current:
        events = store_scale_event(
            memory.scale_up_events, desired - current, spec.behavior.scale_up, now
        )
        return replace(memory, scale_up_events=events)
    events = store_scale_event(
        memory.scale_down_events, current - desired, spec.behavior.scale_down, now
    )
    return replace(memory, scale_down_events=events)


_GOT_SCALE = Condition(
    "AbleToScale",
    True,
    "SucceededGetScale",
    "the HPA controller was able to get the target's current scale",
)


def _rescaled(desired: int) -> Condition:
    message = f"the HPA controller was able to update the target scale to {desired}"
    return Condition("AbleToScale", True, "SucceededRescale", message)


def sync(
    spec: HpaSpec,
    current_replicas: int,
    observed: Sequence[PodSample] | ObjectSample,
    memory: HpaMemory,
    now: float,
) -> tuple[HpaDecision, HpaMemory]:
    """One reconcileAutoscaler pass: the decision, and the memory to pass to the next sync.

    `current_replicas` is the scale target's `spec.replicas`. The model assumes the scale update
    succeeds: a scale event is recorded whenever the decision differs from `current_replicas`.
    """
    if not memory.recommendations:  # recordInitialRecommendation: the first sync of this HPA
        memory = replace(memory, recommendations=(Recommendation(now, current_replicas),))
    if current_replicas == 0:
        message = "scaling is disabled since the replica count of the target is zero"
        active = Condition("ScalingActive", False, "ScalingDisabled", message)
        return HpaDecision(0, "ScalingDisabled", message, conditions=(_GOT_SCALE, active)), memory
    if not spec.min_replicas <= current_replicas <= spec.max_replicas:
        # Outside the range the controller goes straight to the bound: no metrics, no window,
        # no policy; it sets no ScalingLimited condition, only the event text.
        above = current_replicas > spec.max_replicas
        desired = spec.max_replicas if above else spec.min_replicas
        if above:
            reason, text = "TooManyReplicas", "Current number of replicas above Spec.MaxReplicas"
        else:
            reason, text = "TooFewReplicas", "Current number of replicas below Spec.MinReplicas"
        conditions = (_rescaled(desired),)
        decision = HpaDecision(desired, reason, text, rescale_reason=text, conditions=conditions)
        return decision, _record_scale(spec, memory, current_replicas, desired, now)
    return _normalize(spec, current_replicas, observed, memory, now)


def _normalize(
    spec: HpaSpec,
    current: int,
    observed: Sequence[PodSample] | ObjectSample,
    memory: HpaMemory,
    now: float,
) -> tuple[HpaDecision, HpaMemory]:
    label = _metric_label(spec)
    try:
        if spec.metric == "Object":
            if not isinstance(observed, ObjectSample):
                raise TypeError("an Object metric is observed as an ObjectSample")
            proposal = object_metric_replicas(
                observed.status_replicas,
                observed.value,
                spec.target_average_value,
                _tolerances(spec),
            )
        else:
            if isinstance(observed, ObjectSample):
                raise TypeError("a Pods metric is observed as PodSamples")
            proposal = pods_metric_replicas(
                current, observed, spec.target_average_value, _tolerances(spec)
            )
    except ReplicaCountError as error:
        reason = "FailedGetObjectMetric" if spec.metric == "Object" else "FailedGetPodsMetric"
        message = f"the HPA was unable to compute the replica count: {error}"
        active = Condition("ScalingActive", False, reason, message)
        return HpaDecision(current, reason, message, conditions=(_GOT_SCALE, active)), memory
    # reconcileAutoscaler keeps a proposal only when it is above 0.
    metric_replicas = max(proposal, 0)
    if spec.behavior is None:
        stabilized, recommendations = stabilize_without_behavior(
            memory.recommendations, metric_replicas, spec.downscale_stabilization_seconds, now
        )
        able_reason, able_message = _READY if stabilized == metric_replicas else _DOWN_STABILIZED
        memory = replace(memory, recommendations=recommendations)
        desired, limit_reason, limit_message = limit_without_behavior(
            stabilized, current, spec.min_replicas, spec.max_replicas
        )
    else:
        down_window = spec.behavior.scale_down.stabilization_window_seconds
        stabilized, able_reason, able_message, recommendations = stabilize(
            memory.recommendations,
            metric_replicas,
            current,
            spec.behavior.scale_up.stabilization_window_seconds or 0,
            spec.downscale_stabilization_seconds if down_window is None else down_window,
            now,
        )
        memory = replace(memory, recommendations=recommendations)
        desired, limit_reason, limit_message = limit_rate(
            stabilized, current, spec.min_replicas, spec.max_replicas, spec.behavior, memory, now
        )
    limited = desired != stabilized
    if limited or stabilized == metric_replicas:
        reason, message = limit_reason, limit_message
    else:
        reason, message = able_reason, able_message
    able = Condition("AbleToScale", True, able_reason, able_message)
    rescale_reason = ""
    if desired != current:
        able = _rescaled(desired)
        if metric_replicas > current:
            rescale_reason = f"{label} above target"
        elif metric_replicas < current:
            rescale_reason = "All metrics below target"
        memory = _record_scale(spec, memory, current, desired, now)
    conditions = (
        able,
        Condition(
            "ScalingActive",
            True,
            "ValidMetricFound",
            f"the HPA was able to successfully calculate a replica count from {label}",
        ),
        Condition("ScalingLimited", limited, limit_reason, limit_message),
    )
    decision = HpaDecision(
        desired, reason, message, metric_replicas, stabilized, rescale_reason, conditions
    )
    return decision, memory
