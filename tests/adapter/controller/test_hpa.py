"""adapter.controller.hpa: the HPA controller's arithmetic, as tables.

Cases named Test... are transcribed from kubernetes pkg/controller/podautoscaler
replica_calculator_test.go and horizontal_test.go (metric levels there are milli-values, so 20000
reads 20 here); cases named docs-... are the worked examples of the "Horizontal Pod Autoscaling"
task page (Algorithm details, Configurable scaling behavior).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from adapter.controller.hpa import (
    DEFAULT_BEHAVIOR,
    SYNC_PERIOD_SECONDS,
    Behavior,
    HpaMemory,
    HpaSpec,
    ObjectSample,
    PodSample,
    Recommendation,
    ReplicaCountError,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    Tolerances,
    behavior,
    limit_rate,
    limit_without_behavior,
    object_metric_replicas,
    pods_metric_replicas,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    stabilize_without_behavior,
    store_scale_event,
    sync,
)

NOW = 10_000.0


def pods(*values: float | None) -> list[PodSample]:
    return [PodSample(f"push-{i}", value) for i, value in enumerate(values)]


def pending(n: int) -> list[PodSample]:
    return [PodSample(f"new-{i}", None, phase="Pending") for i in range(n)]


def rules(
    pods_value: int, pods_period: int, percent: int, percent_period: int, window: int | None = 0
) -> ScalingRules:
    """horizontal_test.go generateScalingRules: a zero value leaves that policy out."""
    policies = []
    if pods_value:
        policies.append(ScalingPolicy("Pods", pods_value, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(tuple(policies), "Max", window)


def uniform(changes: list[int], period: int = 120) -> tuple[ScaleEvent, ...]:
    """horizontal_test.go generateEventsUniformDistribution: centred in equal slices of `period`."""
    segment = period / len(changes)
    return tuple(
        ScaleEvent(NOW - (period - segment * (i + 1) + segment / 2), change)
        for i, change in enumerate(changes)
    )


# replica_calculator.go: calcPlainMetricReplicas (Pods metrics) ------------------------------

TOL = Tolerances()  # 10 % either way, the controller's default
UP_1 = Tolerances(scale_down=0.1, scale_up=0.01)
UNREADY_50 = PodSample("a", 50, ready=False)


@pytest.mark.parametrize(
    ("current", "samples", "target", "tolerances", "expected"),
    [
        (2, pods(0.2, 0.2), 0.1, TOL, 4),
        (4, pods(0.05, 0.05, 0.05, 0.05), 0.1, TOL, 2),
        (3, pods(20, 10, 30), 15, TOL, 4),
        (3, [*pods(50, 10), PodSample("hot", 30, ready=False)], 15, TOL, 6),
        (3, [UNREADY_50, PodSample("b", 15), PodSample("c", 30, ready=False)], 15, TOL, 7),
        (5, pods(12, 12, 12, 12, 12), 20, TOL, 3),
        (3, pods(20, 21, 21), 20, TOL, 3),
        (3, pods(20, 21, 21), 20, UP_1, 4),
        (5, pods(20, 19, 21, None, None), 20, TOL, 5),
        (2, pods(10, 10, None), 17, TOL, 2),
        (10, pods(*[44_000] * 10), 40_000, TOL, 10),
        (10, pods(*[44_001] * 10), 40_000, TOL, 12),
        (10, pods(*[36_000] * 10), 40_000, TOL, 10),
        (10, pods(*[35_999] * 10), 40_000, TOL, 9),
        (3, pods(300, 300, None), 100, TOL, 6),
        (4, pods(130, 130, None, None), 100, TOL, 4),
        (3, pods(50, 50, None), 100, TOL, 2),
        (5, pods(85, 85, None, None, None), 100, TOL, 5),
        (3, [*pods(200, 200), *pending(1)], 100, TOL, 4),
        (4, [*pods(120, 120), *pending(2)], 100, TOL, 4),
        (3, [*pods(50, 50), *pending(1)], 100, TOL, 1),
        (3, [*pods(50, 50), PodSample("going", 500, deleting=True)], 100, TOL, 1),
        (3, [*pods(50, 50), PodSample("dead", None, phase="Failed")], 100, TOL, 1),
        (3, pods(0, 0, 0), 100, TOL, 0),
        (3, pods(0.0005, 0.0005), 0.001, TOL, 3),
    ],
    ids=[
        "docs-200m-over-100m-doubles",
        "docs-50m-over-100m-halves",
        "TestReplicaCalcScaleUpCM",
        "TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale-unready-counts",
        "TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown-int-average",
        "TestReplicaCalcScaleDownCM",
        "TestReplicaCalcToleranceCM",
        "TestReplicaCalcConfigurableToleranceCM",
        "TestPlainMetricReplicaCalcMissingMetricsNoChangeEq",
        "TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM-count-would-flip",
        "tolerance-ratio-1.1-exactly-within",
        "tolerance-ratio-just-above-1.1",
        "tolerance-ratio-0.9-exactly-within",
        "tolerance-ratio-just-below-0.9",
        "missing-on-scale-up-count-as-zero",
        "missing-on-scale-up-direction-flip-keeps-current",
        "missing-on-scale-down-count-as-target",
        "missing-on-scale-down-lands-within-tolerance",
        "pending-on-scale-up-count-as-zero",
        "pending-on-scale-up-direction-flip-keeps-current",
        "pending-ignored-on-scale-down",
        "deleting-pod-ignored-value-and-all",
        "failed-pod-ignored-not-missing",
        "all-zero-proposes-zero",
        "milli-rounding-up",
    ],
)
def test_pods_metric_replicas(current, samples, target, tolerances, expected):
    assert pods_metric_replicas(current, samples, target, tolerances) == expected


@pytest.mark.parametrize(
    ("samples", "error"),
    [
        ([], "no pods returned by selector while calculating replica count"),
        (pending(2), "did not receive metrics for targeted pods"),
        (pods(None, None), "did not receive metrics for targeted pods"),
        ([PodSample("going", 10, deleting=True)], "did not receive metrics for targeted pods"),
    ],
    ids=["no-pods", "all-pending", "all-missing", "only-deleting"],
)
def test_pods_metric_replicas_errors(samples, error):
    with pytest.raises(ReplicaCountError, match=error):
        pods_metric_replicas(2, samples, 100)


# replica_calculator.go: GetObjectPerPodMetricReplicas ---------------------------------------


@pytest.mark.parametrize(
    ("status_replicas", "value", "target", "tolerances", "expected"),
    [
        (3, 20, 5, TOL, 4),
        (5, 6, 2, TOL, 3),
        (4, 20.166, 5, TOL, 4),
        (4, 20.208, 5, UP_1, 5),
        (2, 160_000, 40_000, TOL, 4),
        (4, 44_000, 10_000, TOL, 4),
        (4, 44_001, 10_000, TOL, 5),
        (0, 1_000, 400, TOL, 3),
        (0, 0, 400, TOL, 0),
    ],
    ids=[
        "TestReplicaCalcScaleUpCMPerPodObject",
        "TestReplicaCalcScaleDownPerPodCMObject",
        "TestReplicaCalcTolerancePerPodCMObject",
        "TestReplicaCalcConfigurableTolerancePerPodCMObject",
        "seed-2-pods-160k-sockets-40k-target",
        "ratio-1.1-keeps-status-replicas",
        "ratio-above-1.1-ceil-value-over-target",
        "no-pods-yet-inf-ratio",
        "no-pods-no-value-nan-ratio",
    ],
)
def test_object_metric_replicas(status_replicas, value, target, tolerances, expected):
    assert object_metric_replicas(status_replicas, value, target, tolerances) == expected


# horizontal.go: stabilizeRecommendationWithBehaviors -----------------------------------------


def recs(*pairs: tuple[int, float]) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(NOW - ago, replicas) for replicas, ago in pairs)


OBSOLETE_FIRST = recs((10, 600), (4, 60), (5, 120), (9, 540))
OBSOLETE_ONE = recs((10, 6000), (6, 60), (5, 120), (9, 180))


@pytest.mark.parametrize(
    ("before", "current", "desired", "up", "down", "expected", "reason", "after"),
    [
        ((), 100, 5, 0, 0, 5, "ReadyForNewScale", [5]),
        (recs((4, 120), (5, 60)), 100, 3, 0, 180, 5, "ScaleDownStabilized", [4, 5, 3]),
        (recs((4, 120), (5, 60)), 1, 7, 300, 0, 4, "ScaleUpStabilized", [4, 5, 7]),
        (recs((1, 120), (2, 60)), 100, 3, 300, 0, 3, "ReadyForNewScale", [1, 2, 3]),
        (recs((4, 120), (5, 60)), 1, 3, 0, 300, 3, "ReadyForNewScale", [4, 5, 3]),
        (recs((10, 600), (9, 540)), 100, 3, 0, 0, 3, "ReadyForNewScale", [10, 3]),
        (recs((10, 600), (9, 540)), 1, 100, 0, 0, 100, "ReadyForNewScale", [10, 100]),
        (OBSOLETE_FIRST, 100, 3, 0, 180, 5, "ScaleDownStabilized", [10, 4, 5, 3]),
        (OBSOLETE_ONE, 1, 100, 300, 0, 5, "ScaleUpStabilized", [100, 6, 5, 9]),
        (recs((8, 300)), 8, 2, 0, 300, 2, "ReadyForNewScale", [8, 2]),
        (recs((8, 299)), 8, 2, 0, 300, 8, "ScaleDownStabilized", [8, 2]),
    ],
    ids=[
        "TestNormalizeDesiredReplicasWithBehavior-empty recommendations for scaling down",
        "TestNormalizeDesiredReplicasWithBehavior-simple scale down stabilization",
        "TestNormalizeDesiredReplicasWithBehavior-simple scale up stabilization",
        "TestNormalizeDesiredReplicasWithBehavior-no scale down stabilization",
        "TestNormalizeDesiredReplicasWithBehavior-no scale up stabilization",
        "TestNormalizeDesiredReplicasWithBehavior-no scale down stabilization, reuse element",
        "TestNormalizeDesiredReplicasWithBehavior-no scale up stabilization, reuse element",
        "TestNormalizeDesiredReplicasWithBehavior-scale down stabilization, reuse obsolete",
        "TestNormalizeDesiredReplicasWithBehavior-scale up stabilization, reuse obsolete",
        "window-lets-go-at-exactly-its-length-but-keeps-the-slot",
        "window-still-holds-a-second-before",
    ],
)
def test_stabilize(before, current, desired, up, down, expected, reason, after):
    stabilized, got_reason, _, kept = stabilize(before, desired, current, up, down, NOW)
    assert (stabilized, got_reason) == (expected, reason)
    assert [rec.replicas for rec in kept] == after
    assert Recommendation(NOW, desired) in kept


@pytest.mark.parametrize(
    ("before", "desired", "expected", "length"),
    [
        ((), 5, 5, 1),
        (recs((4, 120), (5, 60)), 3, 5, 3),
        (recs((1, 120), (2, 60)), 3, 3, 3),
        (recs((10, 600), (9, 540)), 3, 3, 2),
        (OBSOLETE_FIRST, 3, 5, 4),
        (recs((10, 60)), 3, 10, 2),
    ],
    ids=[
        "TestNormalizeDesiredReplicas-empty log",
        "TestNormalizeDesiredReplicas-stabilize",
        "TestNormalizeDesiredReplicas-no stabilize",
        "TestNormalizeDesiredReplicas-no stabilize - old recommendations",
        "TestNormalizeDesiredReplicas-stabilize - old recommendations",
        "above-current-is-kept-too",
    ],
)
def test_stabilize_without_behavior(before, desired, expected, length):
    stabilized, kept = stabilize_without_behavior(before, desired, 300, NOW)
    assert (stabilized, len(kept)) == (expected, length)


# horizontal.go: convertDesiredReplicasWithBehaviorRate and the policy limits ---------------


@dataclass(frozen=True)
class Rate:
    """One TestScalingWithRules row: None rules are the defaults (GenerateHPAScale*Rules(nil))."""

    current: int
    desired: int
    expected: int
    reason: str
    up: ScalingRules | None = None
    down: ScalingRules | None = None
    ups: tuple[ScaleEvent, ...] = ()
    downs: tuple[ScaleEvent, ...] = ()
    low: int = 1
    high: int = 1000


EARLIER = uniform([1, 5, 9])  # 15 pods over the last 120 s, at -100, -60 and -20 s
RAMP, STEADY, BURSTS = uniform([2, 4, 6]), uniform([10, 10, 10]), uniform([8, 12, 9, 11])


@pytest.mark.parametrize(
    "case",
    [
        Rate(5, 7, 7, "DesiredWithinRange", low=3, high=8),
        Rate(3, 1, 2, "TooFewReplicas", low=2, high=8),
        Rate(20, 1000, 10, "TooManyReplicas", high=10),
        Rate(100, 1000, 150, "TooManyReplicas", low=100, high=150),
        Rate(3, 1000, 4, "ScaleUpLimit", up=rules(0, 0, 1, 60), high=2000),
        Rate(10, 50, 20, "ScaleUpLimit"),
        Rate(10, 500, 110, "ScaleUpLimit", up=rules(100, 60, 100, 60)),
        Rate(10, 500, 20, "ScaleUpLimit", up=rules(2, 60, 100, 60)),
        Rate(10, 50, 50, "DesiredWithinRange", up=rules(100, 60, 0, 0)),
        Rate(10, 50, 40, "ScaleUpLimit", up=rules(30, 60, 0, 0)),
        Rate(10, 50, 30, "ScaleUpLimit", up=rules(0, 0, 200, 60)),
        Rate(100, 2, 80, "ScaleDownLimit", down=rules(20, 60, 1, 60)),
        Rate(100, 2, 98, "ScaleDownLimit", down=rules(2, 60, 1, 60)),
        Rate(10, 2, 5, "TooFewReplicas", down=rules(0, 0, 100, 60), low=5),
        Rate(10, 2, 5, "ScaleDownLimit", down=rules(5, 60, 0, 0)),
        Rate(10, 5, 5, "DesiredWithinRange", down=rules(0, 0, 50, 60)),
        Rate(100, 500, 200, "TooManyReplicas", up=rules(300, 60, 0, 0), ups=EARLIER, high=200),
        Rate(100, 500, 100, "ScaleUpLimit", up=rules(5, 120, 0, 0), ups=EARLIER),
        Rate(100, 500, 235, "ScaleUpLimit", up=rules(150, 120, 0, 0), ups=EARLIER),
        Rate(100, 500, 255, "ScaleUpLimit", up=rules(0, 0, 200, 120), ups=EARLIER),
        Rate(10, 5, 5, "DesiredWithinRange", downs=EARLIER),
        Rate(100, 2, 100, "ScaleDownLimit", down=rules(5, 120, 0, 0), downs=EARLIER),
        Rate(100, 0, 56, "ScaleDownLimit", down=rules(0, 0, 50, 120), downs=RAMP),
        Rate(100, 0, 100, "ScaleDownLimit", down=rules(0, 0, 10, 120), downs=STEADY),
        Rate(10, 5, 5, "DesiredWithinRange", down=rules(0, 0, 1000, 120), downs=STEADY),
        Rate(100, 200, 200, "DesiredWithinRange", up=rules(1000, 60, 0, 0), ups=BURSTS),
        Rate(7, 20, 14, "ScaleUpLimit", up=rules(4, 60, 0, 0), downs=(ScaleEvent(NOW - 30, 3),)),
        Rate(13, 2, 6, "ScaleDownLimit", down=rules(4, 60, 0, 0), ups=(ScaleEvent(NOW - 30, 3),)),
        Rate(5, 2, 4, "ScaleDownLimit", down=rules(1, 60, 0, 0), downs=(ScaleEvent(NOW - 60, 1),)),
    ],
    ids=[
        "TestScalingWithRules-prenormalized desired replicas within range",
        "TestScalingWithRules-prenormalized desired replicas < minReplicas",
        "TestScalingWithRules-maxReplicas is the limit because maxReplicas < scaleUpLimit",
        "TestScalingWithRules-desired replica count is more than the maximum replica count",
        "TestScalingWithRules-scaleUpLimit < maxReplicas with user policies",
        "TestScalingWithRules-scaleUp with default behavior",
        "TestScalingWithRules-scaleUp with pods policy larger than percent policy",
        "TestScalingWithRules-scaleUp with percent policy larger than pods policy",
        "TestScalingWithRules-scaleUp with spec MaxReplicas limitation with large pod policy",
        "TestScalingWithRules-scaleUp with pod policy limitation",
        "TestScalingWithRules-scaleUp with percent policy limitation",
        "TestScalingWithRules-scaleDown with percent policy larger than pod policy",
        "TestScalingWithRules-scaleDown with pod policy larger than percent policy",
        "TestScalingWithRules-scaleDown with spec MinReplicas limitation, large percent policy",
        "TestScalingWithRules-scaleDown with pod policy limitation",
        "TestScalingWithRules-scaleDown with percent policy limitation",
        "TestScalingWithRules-scaleUp MaxReplicas limitation, large pod policy and events",
        "TestScalingWithRules-scaleUp currentReplicas limitation, a lot of recent scale up events",
        "TestScalingWithRules-scaleUp with pod policy and previous scale up events",
        "TestScalingWithRules-scaleUp with percent policy and previous scale up events",
        "TestScalingWithRules-scaleDown with default policy and previous events",
        "TestScalingWithRules-scaleDown with pod policy limitation and previous events",
        "TestScalingWithRules-scaleDown with percent policy limitation and previous events",
        "TestScalingWithRules-scaleDown with previous events preventing further scale down",
        "TestScalingWithRules-scaleDown with previous events still allowing more scale down",
        "TestScalingWithRules-check 'outdated' flag for events for one behavior for up",
        "scale-down-in-the-period-gives-its-pods-back-to-scale-up",
        "scale-up-in-the-period-gives-its-pods-back-to-scale-down",
        "event-exactly-one-period-old-no-longer-counts",
    ],
)
def test_limit_rate(case):
    rates = Behavior(case.up or DEFAULT_BEHAVIOR.scale_up, case.down or DEFAULT_BEHAVIOR.scale_down)
    memory = HpaMemory(scale_up_events=case.ups, scale_down_events=case.downs)
    replicas, reason, _ = limit_rate(
        case.desired, case.current, case.low, case.high, rates, memory, NOW
    )
    assert (replicas, reason) == (case.expected, case.reason)


MIN_OF_TWO = (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60))


@pytest.mark.parametrize(
    ("select", "current", "up_expected", "down_expected"),
    [
        ("Min", 1, 2, 0),
        ("Min", 5, 7, 3),
        ("Max", 5, 8, 2),
        ("Disabled", 5, 5, 5),
    ],
    ids=[
        "TestCalculateScaleUpLimitWithScalingRules-min-policy",
        "TestCalculateScaleDownLimitWithBehaviors-min-policy",
        "max-policy-most-change",
        "disabled-no-change",
    ],
)
def test_select_policy(select, current, up_expected, down_expected):
    rules_ = ScalingRules(MIN_OF_TWO, select)
    assert scale_up_limit(current, (), (), rules_, NOW) == up_expected
    if current == 5:
        assert scale_down_limit(current, (), (), rules_, NOW) == down_expected


@pytest.mark.parametrize(
    ("current", "desired", "low", "high", "result"),
    [
        (5, 7, 3, 8, (7, "DesiredWithinRange")),
        (3, 1, 2, 8, (2, "TooFewReplicas")),
        (1, 0, 0, 10, (0, "DesiredWithinRange")),
        (20, 1000, 1, 10, (10, "TooManyReplicas")),
        (3, 1000, 1, 2000, (6, "ScaleUpLimit")),
        (1, 1000, 1, 2000, (4, "ScaleUpLimit")),
    ],
    ids=[
        "TestConvertDesiredReplicasWithRules-within range",
        "TestConvertDesiredReplicasWithRules-below minReplicas",
        "TestConvertDesiredReplicasWithRules-zeroed replicas within range",
        "TestConvertDesiredReplicasWithRules-maxReplicas < scaleUpLimit",
        "TestConvertDesiredReplicasWithRules-scaleUpLimit < maxReplicas",
        "scale-up-limit-at-least-4",
    ],
)
def test_limit_without_behavior(current, desired, low, high, result):
    replicas, reason, _ = limit_without_behavior(desired, current, low, high)
    assert (replicas, reason) == result


def events(*pairs: tuple[int, float]) -> tuple[ScaleEvent, ...]:
    return tuple(ScaleEvent(NOW - ago, change) for change, ago in pairs)


@pytest.mark.parametrize(
    ("before", "policies", "after"),
    [
        ((), rules(10, 60, 100, 60), [5]),
        (events((7, 61)), rules(10, 60, 100, 60), [5]),
        (events((7, 58)), rules(10, 60, 100, 60), [7, 5]),
        (events((7, 61), (6, 59)), rules(10, 60, 0, 0), [5, 6]),
        (events((8, 29), (6, 59), (7, 61), (9, 61)), rules(10, 60, 100, 30), [8, 6, 7, 5]),
        (events((7, 58), (6, 59)), rules(10, 120, 100, 30), [7, 6, 5]),
    ],
    ids=[
        "TestStoreScaleEvents-empty entries with two-policy-behavior",
        "TestStoreScaleEvents-one outdated entry to be replaced with behavior",
        "TestStoreScaleEvents-one actual entry to be not touched with behavior",
        "TestStoreScaleEvents-two entries, one of them to be replaced",
        "TestStoreScaleEvents-replace one entry, use policies with different periods",
        "TestStoreScaleEvents-two entries, both actual",
    ],
)
def test_store_scale_event(before, policies, after):
    stored = store_scale_event(before, 5, policies, NOW)
    assert [event.change for event in stored] == after
    assert ScaleEvent(NOW, 5) in stored


# defaults.go ---------------------------------------------------------------------------------


def test_default_behavior_is_what_the_api_server_fills_in():
    assert DEFAULT_BEHAVIOR == behavior()
    up, down = DEFAULT_BEHAVIOR.scale_up, DEFAULT_BEHAVIOR.scale_down
    assert up == ScalingRules(
        (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)), "Max", 0
    )
    # The scale-down window is left to --horizontal-pod-autoscaler-downscale-stabilization.
    assert down == ScalingRules((ScalingPolicy("Percent", 100, 15),), "Max", None)


def test_behavior_merges_what_is_given_with_the_defaults():
    given = behavior(scale_down_select="Disabled", scale_up_window_seconds=60)
    assert given.scale_down.select_policy == "Disabled"
    assert given.scale_down.policies == DEFAULT_BEHAVIOR.scale_down.policies
    assert given.scale_up.stabilization_window_seconds == 60
    assert given.scale_up.policies == DEFAULT_BEHAVIOR.scale_up.policies
    # Policies given replace the default list as a whole (copyHPAScalingRules).
    one = behavior(scale_up_policies=[ScalingPolicy("Pods", 1, 60)])
    assert one.scale_up.policies == (ScalingPolicy("Pods", 1, 60),)


@pytest.mark.parametrize(
    "fields",
    [
        {"target_average_value": 0, "min_replicas": 1, "max_replicas": 2},
        {"target_average_value": 1, "min_replicas": 0, "max_replicas": 2},
        {"target_average_value": 1, "min_replicas": 3, "max_replicas": 2},
        {"target_average_value": 1, "min_replicas": 1, "max_replicas": 2, "tolerance": -0.1},
    ],
    ids=["zero-target", "min-zero-needs-scale-to-zero-gate", "min-above-max", "negative-tolerance"],
)
def test_spec_refuses_what_the_api_refuses(fields):
    with pytest.raises(ValueError):
        HpaSpec(**fields)


# horizontal.go: reconcileAutoscaler, sync by sync -------------------------------------------

TARGET = 40_000.0  # the seed's budget with exact sums: 4 workers x 10k sockets per pod


def load(total: float, replicas: int) -> list[PodSample]:
    """`total` connections over `replicas` pods, whole sockets each, as the adapter serves them."""
    share, extra = divmod(round(total), replicas)
    return [PodSample(f"push-{i}", share + (i < extra)) for i in range(replicas)]


def run(spec, replicas, totals):
    """Drive `sync` every 15 s with the total connections of each sync; (at, decision) each."""
    memory, history = HpaMemory(), []
    for step, total in enumerate(totals):
        now = step * SYNC_PERIOD_SECONDS
        decision, memory = sync(spec, replicas, load(total, replicas), memory, now)
        history.append((now, decision))
        replicas = decision.desired_replicas
    return history, memory


def changes(history):
    trail, last = [], None
    for at, decision in history:
        if decision.desired_replicas != last:
            trail.append((at, decision.desired_replicas))
            last = decision.desired_replicas
    return trail


@pytest.mark.parametrize(
    ("rules_", "expected"),
    [
        (DEFAULT_BEHAVIOR, [5, 10, 20, 40, 80, 100]),
        (None, [4, 8, 16, 32, 64, 100]),
        (behavior(scale_up_policies=[ScalingPolicy("Percent", 100, 15)]), [2, 4, 8, 16, 32]),
        (behavior(scale_up_select="Min"), [2, 4, 8, 12, 16]),
    ],
    ids=[
        "docs-default-4-pods-or-100-percent-per-15s",
        "no-behavior-double-or-4-per-sync",
        "docs-percent-100-per-15s",
        "select-min-least-change",
    ],
)
def test_scale_up_from_one_pod_under_a_flood(rules_, expected):
    spec = HpaSpec(TARGET, 1, 100, rules_)
    history, _ = run(spec, 1, [100 * TARGET] * len(expected))
    assert [decision.desired_replicas for _, decision in history] == expected
    assert history[0][1].rescale_reason == "pods metric socket_io_connected above target"


def test_docs_scale_down_at_most_4_pods_or_10_percent_per_minute():
    rules_ = behavior(
        scale_down_policies=[ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)]
    )
    spec = HpaSpec(TARGET, 1, 100, rules_)
    history, _ = run(spec, 80, [10 * TARGET] * 80)
    held = [decision.reason for at, decision in history if at < 300]
    assert set(held) == {"ScaleDownStabilized"}, "a new HPA waits out the 300 s window first"
    # 80 -> 72 removes 10 % (8); 72 -> 64 removes 7.2 rounded up; below 40 the Pods policy (4)
    # removes more than 10 % does; one step per 60 s period.
    assert changes(history) == [
        (0, 80), (300, 72), (360, 64), (420, 57), (480, 51), (540, 45), (600, 40), (660, 36),
        (720, 32), (780, 28), (840, 24), (900, 20), (960, 16), (1020, 12), (1080, 10),
    ]  # fmt: skip
    between = [decision.reason for at, decision in history if 300 < at < 360]
    assert set(between) == {"ScaleDownLimit"}
    assert history[-1][1].reason == "DesiredWithinRange"


def test_docs_stabilization_window_keeps_the_highest_recommendation_and_expires():
    spec = HpaSpec(TARGET, 1, 100, DEFAULT_BEHAVIOR)
    # 4 pods at target for a minute, then the load halves (a reconnect storm settling, say).
    history, _ = run(spec, 4, [4 * TARGET] * 5 + [2 * TARGET] * 30)
    dip = [(at, d) for at, d in history if 75 <= at < 360]
    assert {d.desired_replicas for _, d in dip} == {4}
    assert {d.reason for _, d in dip} == {"ScaleDownStabilized"}
    assert {d.metric_replicas for _, d in dip} == {2}
    assert {d.stabilized_replicas for _, d in dip} == {4}
    # The last recommendation of 4 was at 60 s: the window lets go of it at 360 s.
    assert changes(history) == [(0, 4), (360, 2)]
    at_360 = dict(history)[360]
    assert (at_360.reason, at_360.rescale_reason) == (
        "DesiredWithinRange",
        "All metrics below target",
    )


def test_a_short_dip_inside_the_window_never_scales_down():
    spec = HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR)
    history, _ = run(spec, 4, [4 * TARGET] * 4 + [TARGET] * 10 + [4 * TARGET] * 20)
    assert changes(history) == [(0, 4)]


def test_scale_down_disabled_holds_forever_with_scale_down_limit():
    spec = HpaSpec(TARGET, 2, 20, behavior(scale_down_select="Disabled"))
    history, _ = run(spec, 10, [TARGET] * 60)
    assert changes(history) == [(0, 10)]
    assert history[-1][1].reason == "ScaleDownLimit"


def test_no_behavior_scale_down_waits_for_the_controller_window_then_goes_at_once():
    spec = HpaSpec(TARGET, 1, 100)
    history, _ = run(spec, 10, [TARGET] * 30)
    # stabilizeRecommendation still counts a recommendation exactly 300 s old (it drops only
    # those before the cutoff), unlike the behavior path: the drop comes one sync later.
    assert changes(history) == [(0, 10), (315, 1)]
    assert {d.reason for at, d in history if at < 315} == {"ScaleDownStabilized"}


def test_configurable_tolerance_per_direction():
    wide = HpaSpec(TARGET, 1, 100, behavior(scale_down_tolerance=0.3, scale_down_window_seconds=0))
    history, _ = run(wide, 4, [3 * TARGET] * 3)  # ratio 0.75: within a 30 % scale-down band
    assert changes(history) == [(0, 4)]
    narrow = HpaSpec(TARGET, 1, 100, behavior(scale_up_tolerance=0.0))
    history, _ = run(narrow, 4, [4.2 * TARGET])  # ratio 1.05: outside a 0 % scale-up band
    assert history[0][1].desired_replicas == 5


@pytest.mark.parametrize(
    ("spec", "current", "total", "desired", "reason"),
    [
        (HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR), 25, 0, 20, "TooManyReplicas"),
        (HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR), 1, 100 * TARGET, 2, "TooFewReplicas"),
        (HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR), 16, 30 * TARGET, 20, "TooManyReplicas"),
        (HpaSpec(TARGET, 2, 20, behavior(scale_down_window_seconds=0)), 4, 0, 2, "TooFewReplicas"),
        (HpaSpec(TARGET, 2, 20), 16, 30 * TARGET, 20, "TooManyReplicas"),
        (HpaSpec(TARGET, 2, 20), 5, 5 * TARGET, 5, "DesiredWithinRange"),
    ],
    ids=[
        "current-above-max-straight-to-max",
        "current-below-min-straight-to-min",
        "desired-above-max",
        "desired-below-min",
        "no-behavior-desired-above-max",
        "at-target",
    ],
)
def test_min_max_clamps(spec, current, total, desired, reason):
    decision, _ = sync(spec, current, load(total, current), HpaMemory(), NOW)
    assert (decision.desired_replicas, decision.reason) == (desired, reason)


def test_current_out_of_range_skips_metrics_and_window():
    spec = HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR)
    decision, memory = sync(spec, 25, [], HpaMemory(), NOW)
    assert decision.message == "Current number of replicas above Spec.MaxReplicas"
    assert decision.metric_replicas is None
    assert memory.scale_down_events == (ScaleEvent(NOW, 5),)


def test_metrics_unavailable_keeps_the_size_and_says_why():
    spec = HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR)
    decision, memory = sync(spec, 3, pending(3), HpaMemory(), NOW)
    assert (decision.desired_replicas, decision.reason) == (3, "FailedGetPodsMetric")
    assert "did not receive metrics for targeted pods" in decision.message
    active = next(c for c in decision.conditions if c.type == "ScalingActive")
    assert not active.status
    assert memory.recommendations == (Recommendation(NOW, 3),)


def test_zero_replicas_means_scaling_is_disabled():
    spec = HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR)
    decision, _ = sync(spec, 0, [], HpaMemory(), NOW)
    assert (decision.desired_replicas, decision.reason) == (0, "ScalingDisabled")


def test_object_metric_average_value():
    spec = HpaSpec(TARGET, 2, 20, DEFAULT_BEHAVIOR, metric="Object")
    decision, memory = sync(spec, 2, ObjectSample(160_000, status_replicas=2), HpaMemory(), NOW)
    assert (decision.desired_replicas, decision.reason) == (4, "DesiredWithinRange")
    # computeStatusForObjectMetric's own name for an AverageValue object metric.
    assert decision.rescale_reason == "external metric socket_io_connected(<nil>) above target"
    assert memory.scale_up_events == (ScaleEvent(NOW, 2),)
    with pytest.raises(TypeError):
        sync(spec, 2, load(1, 2), HpaMemory(), NOW)


def test_conditions_as_kubectl_describe_shows_them():
    spec = HpaSpec(TARGET, 1, 100, DEFAULT_BEHAVIOR)
    decision, _ = sync(spec, 1, load(100 * TARGET, 1), HpaMemory(), NOW)
    assert [(c.type, c.status, c.reason) for c in decision.conditions] == [
        ("AbleToScale", True, "SucceededRescale"),
        ("ScalingActive", True, "ValidMetricFound"),
        ("ScalingLimited", True, "ScaleUpLimit"),
    ]
    assert (decision.metric_replicas, decision.stabilized_replicas) == (100, 100)
    assert decision.message == (
        "the desired replica count is increasing faster than the maximum scale rate"
    )


# Properties over many syncs ------------------------------------------------------------------

SHAPES = [
    None,
    DEFAULT_BEHAVIOR,
    behavior(scale_down_window_seconds=0, scale_down_policies=[ScalingPolicy("Pods", 2, 60)]),
    behavior(
        scale_up_window_seconds=30,
        scale_up_policies=[ScalingPolicy("Pods", 3, 45)],
        scale_down_window_seconds=60,
        scale_down_policies=[ScalingPolicy("Percent", 20, 30), ScalingPolicy("Pods", 1, 90)],
        scale_down_select="Min",
    ),
]


@pytest.mark.parametrize("rules_", SHAPES, ids=["none", "default", "down-2-per-60s", "mixed"])
def test_properties_over_a_random_day(rules_):
    rng = random.Random(20240607)
    spec = HpaSpec(TARGET, 2, 20, rules_)
    replicas, memory, trail = 2, HpaMemory(), []
    total = 2 * TARGET
    for step in range(3000):
        now = step * SYNC_PERIOD_SECONDS
        total = max(0.0, total + rng.gauss(0, 0.6 * TARGET))
        total = min(total, 30 * TARGET)
        samples = load(total, replicas)
        if rng.random() < 0.05:  # a pod not scraped this round
            samples[0] = PodSample("push-0", None)
        decision, memory = sync(spec, replicas, samples, memory, now)
        assert spec.min_replicas <= decision.desired_replicas <= spec.max_replicas
        trail.append((now, replicas, decision.desired_replicas))
        replicas = decision.desired_replicas
        # What the controller keeps stays small: old slots are reused.
        assert len(memory.recommendations) <= 30
        assert len(memory.scale_up_events) + len(memory.scale_down_events) <= 30
    ups = sum(after > before for _, before, after in trail)
    downs = sum(after < before for _, before, after in trail)
    assert ups > 50 and downs > 50, "the day moved both ways"
    # A scale-down never leaves fewer pods than the period started with, less the policy's 2
    # (pods added inside the period may be taken back: they count from the period's start).
    if rules_ is SHAPES[2]:
        for now, before, after in trail:
            if after < before:
                window = [(b, a) for at, b, a in trail if now - 60 < at <= now]
                assert sum(b - a for b, a in window) <= 2
    # Likewise a scale-up adds at most the policy's 3 over its 45 s period.
    if rules_ is SHAPES[3]:
        for now, before, after in trail:
            if after > before:
                window = [(b, a) for at, b, a in trail if now - 45 < at <= now]
                assert sum(a - b for b, a in window) <= 3
