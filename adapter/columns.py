"""One round's per-worker totals in columns, for the HPA's usual request (pure).

The HPA asks for a metric of every pod with no metric label selector, so a pod's value is the
sum (or max) over its workers of each worker's total: the sum of all its series of that family.
Read from the readings, that touches every worker's objects, each one cold: ~8 µs a worker,
~30 ms for a request over 1000 pods of 4 workers. So the scrape process also sends, for each
served gauge (`adapter.catalog.COLUMNS`), every worker's total in one array of floats in target
order (`totals_of`: NaN where the worker gave no samples or not that family), and the serving
side finds a pod's value as one slice of one array (`pod_totals`).

The columns never decide anything `aggregate.pod_reading` would decide otherwise: they answer
only when every worker of the pod has the family, and then with the same floats added in the
same order; anything else (a worker missing or failed, a family absent) is None, and the
caller asks `pod_reading`, whose answer carries the reason.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapter.aggregate import PodReading, Samples, WorkerReading
from adapter.layout import LaidOut
from pushserver.exposition import Combine

if TYPE_CHECKING:  # the scrape process imports this module, and needs nothing of pods'
    from adapter.pods import Pod

PodKey = tuple[str, str]  # (namespace, name)

_MISSING = math.nan


@dataclass(frozen=True)
class Columns:
    # A pod's targets: the first one's index and how many, numbered 0, 1, ... in order.
    spans: Mapping[PodKey, tuple[int, int]]
    scraped_at: array[float]
    # Family → each target's total, NaN where there is none.
    totals: Mapping[str, array[float]]


def spans_of(targets: Iterable[tuple[PodKey, int]]) -> dict[PodKey, tuple[int, int]]:
    """Each pod whose targets (pod, worker index) come together and in worker order, with its
    first index and count; a pod whose targets do not is left to the readings."""
    spans: dict[PodKey, tuple[int, int]] = {}
    broken: set[PodKey] = set()
    for index, (key, worker) in enumerate(targets):
        first, count = spans.get(key, (index, 0))
        if first + count != index or worker != count:
            broken.add(key)
        spans[key] = (first, count + 1)
    for key in broken:
        del spans[key]
    return spans


def _total(samples: Samples | None, family: str) -> float:
    if samples is None:
        return _MISSING
    series = samples.get(family)
    return _MISSING if series is None else sum(series.values())


def totals_of(
    readings: Sequence[WorkerReading], families: Iterable[str]
) -> dict[str, array[float]]:
    """Every reading's total of each family, in the readings' order: one walk over the
    readings (not one per family), each laid-out reading's values summed by its layout's
    slices."""
    names = tuple(families)
    columns: list[list[float]] = [[] for _ in names]
    for reading in readings:
        samples = reading.samples
        if isinstance(samples, LaidOut):
            counts = samples.counts
            for column, where in zip(columns, samples.layout.slices(names), strict=True):
                column.append(_MISSING if where is None else sum(counts[where]))
        else:
            for column, name in zip(columns, names, strict=True):
                column.append(_total(samples, name))
    return {name: array("d", column) for name, column in zip(names, columns, strict=True)}


def pod_totals(
    columns: Columns, pods: Sequence[Pod], family: str, combine: Combine
) -> list[PodReading | None]:
    """Each pod's value of `family` with no metric label selector, as `pod_reading` gives it;
    None for a pod the columns cannot say (then `pod_reading` says why not). One loop over
    every pod, not a call per pod: the HPA's request over 1000 pods."""
    totals = columns.totals.get(family)
    if totals is None or combine is Combine.IGNORE:
        return [None] * len(pods)
    spans, scraped_at, largest = columns.spans, columns.scraped_at, combine is Combine.MAX
    readings: list[PodReading | None] = []
    for pod in pods:
        span = spans.get((pod.namespace, pod.name))
        if span is None or span[1] != pod.workers:  # spans_of counts at least one
            readings.append(None)
            continue
        first, end = span[0], span[0] + span[1]
        values = totals[first:end]
        value = sum(values)  # NaN if any worker has no total
        if value != value:
            readings.append(None)
            continue
        readings.append(PodReading(max(values) if largest else value, min(scraped_at[first:end])))
    return readings
