"""The adapter's own metrics, served at its /metrics (a registry of its own, no globals).

`adapter.server` feeds `observe_round` after every scrape round; `adapter.app` calls
`observe_request` and `observe_value_age` for every API answer. Every pod left out of the
headline metric in a round counts once in `pushscale_adapter_pods_left_out_total` under its
reason's code (`adapter.aggregate.REASONS`), so an alert can tell a NaN-serving pod from a
slow one. The value-age histogram is the
freshness measure custom-metrics-apiserver exports as `metric_freshness`: how old the values
handed to the HPA were, from the scrape that read them to the answer. It takes each age with
how many values had it (`Ages`): an answer over 1000 pods hands out 1000 values of one round,
and prometheus_client's `Histogram` takes one observation at a time, ~1 µs each.
"""

from __future__ import annotations

import collections
import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from adapter.aggregate import REASONS
from adapter.answers import Report, Round, each_pod_value, ignore
from adapter.catalog import CATALOG
from adapter.selectors import parse_selector

# The metric whose exactness the adapter exists for; pods served/left out are counted for it.
HEADLINE = "socket_io_connected"
_ALL = parse_selector(None)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A round is meant to take under its 1 s timeout: finer around it, where an operator looks.
_ROUND_SECONDS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 10.0)
_AGE_SECONDS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Ages(Collector):
    """A histogram observed with a count: `observe(seconds, count)` is `count` observations of
    `seconds`, exposed as prometheus_client exposes a `Histogram` (buckets, sum, count)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last is +Inf
        self._sum = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        # A bucket holds values <= its bound: bisect_left finds the first bound >= seconds.
        self._counts[bisect_left(self._bounds, seconds)] += count
        self._sum += seconds * count

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, math.inf), self._counts, strict=True):
            cumulative += count
            # The label prometheus_client writes for these bounds ("0.5", "1.0", "+Inf").
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=self._sum
        )


class Instruments:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.round_seconds = Histogram(
            "pushscale_adapter_scrape_round_seconds",
            "Time to read every worker of every pod once",
            buckets=_ROUND_SECONDS, registry=self.registry,
        )  # fmt: skip
        self.targets = Gauge(
            "pushscale_adapter_scrape_targets",
            "Worker endpoints read in the latest round",
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "pushscale_adapter_scrape_errors_total",
            "Worker endpoints that did not answer with metrics, by reason",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.pods = Gauge(
            "pushscale_adapter_pods",
            f"Pods in the latest round: served, or left out of {HEADLINE}",
            ["state"], registry=self.registry,
        )  # fmt: skip
        self.value_age = Ages(
            "pushscale_adapter_value_age_seconds",
            "Age of each value served, from its scrape to the answer",
            _AGE_SECONDS,
        )
        self.registry.register(self.value_age)
        self.requests = Histogram(
            "pushscale_adapter_request_duration_seconds",
            "API requests by route and status code",
            ["path", "code"], buckets=_SECONDS, registry=self.registry,
        )  # fmt: skip
        self.pods_left_out = Counter(
            "pushscale_adapter_pods_left_out_total",
            f"Pods left out of {HEADLINE} in a round, by reason (one per pod and round)",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        for state in ("served", "left_out"):
            self.pods.labels(state)
        # Every reason from the start, at 0: a rate() over a series that appears only with
        # its first increment misses that increment.
        for reason in REASONS:
            self.pods_left_out.labels(reason)

    def observe_round(self, finished: Round, report: Report = ignore) -> None:
        self.round_seconds.observe(finished.duration_seconds)
        readings = [reading for pod in finished.readings.values() for reading in pod]
        self.targets.set(len(readings))
        # By kind, then one increment each: a round where every one of 4000 reads failed cost
        # ~6 ms of label lookups one by one.
        kinds = collections.Counter(reading.error_kind for reading in readings)
        kinds.pop(None, None)
        for kind, count in kinds.items():
            self.scrape_errors.labels(kind).inc(count)
        headline = CATALOG[HEADLINE]
        values = each_pod_value(finished.pods, [finished], headline, _ALL, 1.0, report)
        served = sum(1 for value in values if value.reading.value is not None)
        for value in values:
            if value.reading.code is not None:
                self.pods_left_out.labels(value.reading.code).inc()
        self.pods.labels("served").set(served)
        self.pods.labels("left_out").set(len(values) - served)

    def observe_request(self, path: str, code: int, seconds: float) -> None:
        self.requests.labels(path, str(code)).observe(seconds)

    def observe_value_age(self, seconds: float, count: int = 1) -> None:
        """`count` values served, each `seconds` old."""
        self.value_age.observe(max(0.0, seconds), count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
