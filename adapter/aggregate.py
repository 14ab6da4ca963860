"""A pod's value from its workers' scrapes: exact, or left out with the reason (pure).

The scraper (issue 3) reads every worker of a pod in one round and hands the readings here. A pod
is served only when every expected worker answered and carried the metric: a partial sum would
under-count, and the HPA treats a missing pod conservatively, so leaving it out is the exact
answer. How workers combine follows the push server's own declaration
(`pushserver.exposition.ACROSS_WORKERS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, get_args

from adapter.selectors import Selector
from pushserver.exposition import Combine

# Sample name → {sorted (label, value) pairs → value}, as read from one worker's /metrics.
Samples = Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]

# Why a pod is left out: a closed set of codes, so they can label the adapter's own metrics
# (`pushscale_adapter_pods_left_out_total{reason}`) and be looked up in docs/adapter.md
# ("Exclusion reasons"). The first group is also a worker read's `error_kind`.
Reason = Literal[
    # A worker read that gave no samples (adapter.scrape), or whose samples say they are
    # another worker's (`wrong_worker`).
    "timeout", "refused", "http_status", "http", "too_large", "malformed", "wrong_worker",
    # A body that parsed but cannot be trusted (adapter.samples).
    "not_finite", "negative", "out_of_range", "duplicate_series", "wrong_type",
    # Samples that do not make a complete round (here).
    "not_scraped", "metric_missing", "not_combined", "no_rate_yet",
    # Left out by rule, whatever the scrape says (adapter.pods).
    "terminating", "not_running", "no_ip",
    # A bug of ours met one pod's reading; the pod is left out, the others are answered.
    "internal_error",
]  # fmt: skip
REASONS: tuple[Reason, ...] = get_args(Reason)


class WorkerReading(NamedTuple):
    """One worker's answer in a scrape round: its samples, or why there are none. (4000 are
    made a round at 1000 pods, on each side of the scrape process: a NamedTuple, as
    `PodReading` below.)"""

    worker: int
    scraped_at: float
    samples: Samples | None = None
    error: str | None = None
    # The error's code (`timeout`, `not_finite`...): the adapter's metric label.
    error_kind: Reason | None = None


class PodReading(NamedTuple):
    """A pod's value, or the reason it is left out (`value` is None then).

    A NamedTuple, as are the other records made per pod and answer (`answers.PodValue`,
    `wire.Value`, `wire.Described`): a frozen dataclass costs ~1 µs to make, four times a
    NamedTuple's, and an answer over 1000 pods made four of them per pod."""

    value: float | None
    scraped_at: float | None
    reason: str | None = None
    code: Reason | None = None


def left_out(code: Reason, reason: str) -> PodReading:
    return PodReading(None, None, reason, code)


def pod_reading(
    expected_workers: int,
    readings: Sequence[WorkerReading],
    metric: str,
    metric_selector: Selector,
    combine: Combine,
) -> PodReading:
    by_worker = {reading.worker: reading for reading in readings}
    values: list[float] = []
    for worker in range(expected_workers):
        reading = by_worker.get(worker)
        if reading is None:
            return left_out("not_scraped", f"worker {worker} was not scraped")
        if reading.error is not None or reading.samples is None:
            # Every read the scraper makes carries its kind; one without is a bug of ours.
            code = reading.error_kind or "internal_error"
            return left_out(code, f"worker {worker}: {reading.error or 'no samples'}")
        series = reading.samples.get(metric)
        if series is None:
            return left_out("metric_missing", f"worker {worker} does not serve {metric}")
        values.append(matching_sum(series, metric_selector))
    if combine is Combine.IGNORE:
        return left_out("not_combined", f"{metric} is not combined across workers")
    value = max(values) if combine is Combine.MAX else sum(values)
    # The round's value is as old as its oldest reading.
    oldest = min(by_worker[worker].scraped_at for worker in range(expected_workers))
    return PodReading(value, oldest)


def matching_sum(series: Mapping[tuple[tuple[str, str], ...], float], selector: Selector) -> float:
    """The sum of a metric's series whose labels match the `metricLabelSelector`."""
    if selector.empty:
        return sum(series.values())  # the HPA's usual request: no label to look at
    return sum(value for labels, value in series.items() if selector.matches(dict(labels)))


def wrong_worker(samples: Samples, worker: int) -> str | None:
    """Why an endpoint read as worker `worker` must not count as it: it says it is another
    worker (two pods' port ranges overlap, or the worker count or metrics port is wrong, and
    summing it would count another worker's sockets). Checked once per read, by the scraper."""
    for labels in samples.get("pushscale_worker_info", {}):
        answered_as = dict(labels).get("worker")
        if answered_as is not None and answered_as != str(worker):
            return f"the endpoint answers as worker {answered_as}"
        break
    return None
