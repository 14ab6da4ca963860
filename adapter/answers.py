"""Answers to metric queries from the latest scrape rounds (pure: rounds and selectors in).

`adapter.app` parses a request into the pods it concerns and calls `pod_values` (the pods
themselves) or `object_value` (a deployment, service or namespace: the sum over its pods), with
the rounds `adapter.rounds.Rounds` keeps. A pod's value comes from one round of all its workers
(`adapter.aggregate`); a counter's rate from the same worker's successive rounds
(`adapter.rates`). What cannot be served raises an `adapter.errors` error whose message lists
every pod considered and why each was left out: that text ends up in the HPA's events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapter.aggregate import PodReading, WorkerReading, matching_sum, pod_reading
from adapter.catalog import CATALOG, ServedMetric
from adapter.errors import NotFound, Unavailable
from adapter.pods import Pod
from adapter.rates import Point, rate
from adapter.selectors import Selector
from adapter.wire import Described, Value

PodKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Round:
    """Every worker of every pod discovered when the round started, read once."""

    number: int
    started_at: float
    duration_seconds: float
    pods: tuple[Pod, ...]
    readings: Mapping[PodKey, tuple[WorkerReading, ...]]


@dataclass(frozen=True)
class PodValue:
    pod: Pod
    reading: PodReading
    # Left out by rule (terminating, not running), not for want of a complete scrape: such a
    # pod holds no sockets the HPA should count.
    by_rule: bool = False


def served_metric(name: str, resource: str) -> ServedMetric:
    metric = CATALOG.get(name)
    if metric is None:
        # custom-metrics-apiserver's NewMetricNotFoundForError wording.
        raise NotFound(f"the server could not find the metric {name} for {resource}")
    return metric


def pod_value(
    pod: Pod,
    rounds: Sequence[Round],
    metric: ServedMetric,
    metric_selector: Selector,
    window_seconds: float,
) -> PodValue:
    """One pod's value in the latest round (`rounds` oldest first), or why it is left out."""
    if pod.excluded is not None:
        return PodValue(pod, PodReading(None, None, pod.excluded), by_rule=True)
    latest = rounds[-1].readings.get((pod.namespace, pod.name)) if rounds else None
    if latest is None:
        return PodValue(pod, PodReading(None, None, "not scraped yet (discovered after the round)"))
    instant = pod_reading(pod.workers, latest, metric.sample, metric_selector, metric.combine)
    if not metric.rate or instant.value is None:
        return PodValue(pod, instant)
    total = 0.0
    for worker in range(pod.workers):
        points = _points(pod, worker, rounds, metric.sample, metric_selector)
        worker_rate = rate(points, points[-1].at, window_seconds)
        if worker_rate is None:
            reason = f"worker {worker}: fewer than two scrapes in {window_seconds:g} s, no rate yet"
            return PodValue(pod, PodReading(None, None, reason))
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
) -> list[Value]:
    """Every considered pod that can be served exactly; NotFound when none can."""
    values = [pod_value(pod, rounds, metric, metric_selector, window_seconds) for pod in considered]
    served = [
        Value(
            Described("pods", value.pod.name, value.pod.namespace),
            metric.name,
            value.reading.value,
            value.reading.scraped_at,
            _window(metric, window_seconds),
        )
        for value in values
        if value.reading.value is not None and value.reading.scraped_at is not None
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
) -> Value:
    """The sum over an object's pods. A pod that should count but could not be read makes the
    whole answer Unavailable: a sum without it would under-count, and the HPA holds the current
    replica count on an error rather than scaling on a wrong number."""
    what = f"{described.resource} {described.name}"
    if not considered:
        raise NotFound(f"no pods with metrics found for {what}")
    values = [pod_value(pod, rounds, metric, metric_selector, window_seconds) for pod in considered]
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
