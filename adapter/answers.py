"""Answers to metric queries from the latest scrape rounds (pure: rounds and selectors in).

`adapter.app` parses a request into the pods it concerns and calls `pod_values` (the pods
themselves) or `object_value` (a deployment, service or namespace: the sum over its pods), with
the rounds `adapter.rounds.Rounds` keeps. A pod's value comes from one round of all its workers
(`adapter.aggregate`); a counter's rate from the same worker's successive rounds
(`adapter.rates`). What cannot be served raises an `adapter.errors` error whose message lists
every pod considered and why each was left out: that text ends up in the HPA's events.

One pod's reading never costs another pod its answer: an exception while reading one pod
(a bug of ours that some value provoked) leaves that pod out as `internal_error` and is handed
to the caller's `report` (the shells log it, rate-limited), and the other pods are answered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from adapter.aggregate import PodReading, WorkerReading, left_out, matching_sum, pod_reading
from adapter.catalog import CATALOG, ServedMetric
from adapter.columns import Columns, PodKey, pod_totals
from adapter.errors import NotFound, Unavailable, clip
from adapter.pods import Pod
from adapter.rates import Point, rate
from adapter.selectors import Selector
from adapter.wire import Described, Value

# Told of every exception met while reading one pod; the shells log it.
Report = Callable[[Pod, Exception], None]


def ignore(pod: Pod, error: Exception) -> None:
    """The `report` of callers that keep no log (tests, benches)."""


@dataclass(frozen=True)
class Round:
    """Every worker of every pod discovered when the round started, read once."""

    number: int
    started_at: float
    duration_seconds: float
    pods: tuple[Pod, ...]
    readings: Mapping[PodKey, tuple[WorkerReading, ...]]
    # The readings' totals by family, when the scraper made them (the scrape process does).
    columns: Columns | None = None
    # Each gauge's value of every pod with no metric label selector, by pod, made the first
    # time one is asked for (`each_pod_value`): they depend on this round alone. The round's
    # pod counts (`adapter.instruments`) make the headline's as the round lands, so the HPA's
    # request, over every pod, finds them made.
    gauges: dict[str, dict[PodKey, PodValue]] = field(
        default_factory=dict, compare=False, repr=False
    )


class PodValue(NamedTuple):
    pod: Pod
    reading: PodReading
    # Left out by rule (terminating, not running), not for want of a complete scrape: such a
    # pod holds no sockets the HPA should count.
    by_rule: bool = False


def served_metric(name: str, resource: str) -> ServedMetric:
    metric = CATALOG.get(name)
    if metric is None:
        # custom-metrics-apiserver's NewMetricNotFoundForError wording.
        raise NotFound(f"the server could not find the metric {clip(name)} for {clip(resource)}")
    return metric


def pod_value(
    pod: Pod,
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    report: Report = ignore,
) -> PodValue:
    """One pod's value in the latest round (`rounds` oldest first), or why it is left out."""
    [value] = each_pod_value([pod], rounds, metric, metric_selector, window_seconds, report)
    return value


def each_pod_value(
    pods: Sequence[Pod],
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    report: Report = ignore,
) -> list[PodValue]:
    """`pod_value` of each pod. The HPA's usual request (no metric label selector, a gauge) is
    answered from the latest round's `gauges`, made once a round for all its pods."""
    if not rounds or not metric_selector.empty or metric.rate:
        return _each_pod_value(pods, rounds, metric, metric_selector, window_seconds, report)
    latest = rounds[-1]
    made = latest.gauges.get(metric.name)
    if made is None:
        every = _each_pod_value(latest.pods, (latest,), metric, metric_selector, 0.0, report)
        made = latest.gauges[metric.name] = {value.pod.key: value for value in every}
    values: list[PodValue] = []
    for pod in pods:
        value = made.get(pod.key)
        if value is None or value.pod is not pod:  # not one of the round's pods
            [value] = _each_pod_value([pod], (latest,), metric, metric_selector, 0.0, report)
        values.append(value)
    return values


def _each_pod_value(
    pods: Sequence[Pod],
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    report: Report,
) -> list[PodValue]:
    """Each pod's value, made now. A gauge with no metric label selector is answered from the
    round's columns in one pass; a pod they cannot answer, or whose answer is no count, takes
    the readings' path, which says why it is left out."""
    fast = _from_columns(pods, rounds, metric, metric_selector)
    values: list[PodValue] = []
    for pod, reading in zip(pods, fast, strict=True):
        if reading is not None and pod.exclusion is None and _is_count(reading.value):
            values.append(PodValue(pod, reading))
        else:
            values.append(_read_pod(pod, rounds, metric, metric_selector, window_seconds, report))
    return values


def _from_columns(
    pods: Sequence[Pod], rounds: Sequence[Round], metric: ServedMetric, metric_selector: Selector
) -> Sequence[PodReading | None]:
    columns = rounds[-1].columns if rounds else None
    if columns is None or not metric_selector.empty or metric.rate:
        return [None] * len(pods)
    try:
        return pod_totals(columns, pods, metric.sample, metric.combine)
    except Exception:
        # Then every pod takes the readings' path, where a bug costs only the pod it met.
        return [None] * len(pods)


def _is_count(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def _read_pod(
    pod: Pod,
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    report: Report,
) -> PodValue:
    try:
        value = _pod_value(pod, rounds, metric, metric_selector, window_seconds)
        reading = value.reading
        if reading.value is not None and not _is_count(reading.value):
            # The samples are checked when parsed; a value that is still not a count here is
            # our arithmetic's fault, and must not reach the HPA.
            raise ArithmeticError(f"{metric.name} came out as {reading.value}")
    except Exception as exc:
        report(pod, exc)
        return PodValue(pod, left_out("internal_error", f"internal error: {type(exc).__name__}"))
    return value


def _pod_value(
    pod: Pod,
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
) -> PodValue:
    exclusion = pod.exclusion
    if exclusion is not None:
        return PodValue(pod, left_out(*exclusion), by_rule=True)
    latest = rounds[-1].readings.get((pod.namespace, pod.name)) if rounds else None
    if latest is None:
        reason = "not scraped yet (discovered after the round)"
        return PodValue(pod, left_out("not_scraped", reason))
    instant = pod_reading(pod.workers, latest, metric.sample, metric_selector, metric.combine)
    if not metric.rate or instant.value is None:
        return PodValue(pod, instant)
    total = 0.0
    for worker in range(pod.workers):
        points = _points(pod, worker, rounds, metric.sample, metric_selector)
        worker_rate = rate(points, points[-1].at, window_seconds)
        if worker_rate is None:
            reason = f"worker {worker}: fewer than two scrapes in {window_seconds:g} s, no rate yet"
            return PodValue(pod, left_out("no_rate_yet", reason))
        total += worker_rate
    return PodValue(pod, PodReading(total, instant.scraped_at))


def _points(
    pod: Pod, worker: int, rounds: Sequence[Round], sample: str, metric_selector: Selector
) -> list[Point]:
    """The worker's counter in every round that read it (per worker: a restarted worker's reset
    is its own, not the pod's)."""
    points: list[Point] = []
    for past in rounds:
        for reading in past.readings.get((pod.namespace, pod.name), ()):
            if reading.worker != worker or reading.samples is None:
                continue
            series = reading.samples.get(sample)
            if series is not None:
                points.append(Point(reading.scraped_at, matching_sum(series, metric_selector)))
    return points


def pod_values(
    considered: Sequence[Pod],
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    what: str,
    report: Report = ignore,
) -> list[Value]:
    """Every considered pod that can be served exactly; NotFound when none can."""
    values = each_pod_value(considered, rounds, metric, metric_selector, window_seconds, report)
    name, window = metric.name, _window(metric, window_seconds)
    served = [
        Value(Described("pods", pod.name, pod.namespace), name, reading.value, at, window)
        for pod, reading, _ in values
        if reading.value is not None and (at := reading.scraped_at) is not None
    ]
    if not served:
        raise NotFound(f"no value of {metric.name} for {what}: {_explain(values)}")
    return served


def object_value(
    described: Described,
    considered: Sequence[Pod],
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
    report: Report = ignore,
) -> Value:
    """The sum over an object's pods. A pod that should count but could not be read makes the
    whole answer Unavailable: a sum without it would under-count, and the HPA holds the current
    replica count on an error rather than scaling on a wrong number."""
    what = f"{described.resource} {clip(described.name)}"
    if not considered:
        raise NotFound(f"no pods with metrics found for {what}")
    values = each_pod_value(considered, rounds, metric, metric_selector, window_seconds, report)
    incomplete = [value for value in values if value.reading.value is None and not value.by_rule]
    if incomplete:
        raise Unavailable(f"{metric.name} of {what} would under-count: {_explain(incomplete)}")
    counted = [value.reading for value in values if value.reading.value is not None]
    if not counted:
        raise NotFound(f"no value of {metric.name} for {what}: {_explain(values)}")
    return Value(
        described,
        metric.name,
        sum(reading.value for reading in counted if reading.value is not None),
        min(reading.scraped_at for reading in counted if reading.scraped_at is not None),
        _window(metric, window_seconds),
    )


def _window(metric: ServedMetric, window_seconds: float) -> int | None:
    return round(window_seconds) if metric.rate else None


def _explain(values: Sequence[PodValue]) -> str:
    if not values:
        return "no pods matched"
    return "; ".join(f"pod {value.pod.name}: {value.reading.reason}" for value in values)
