"""The metrics the API serves, derived from what a push server worker exports (pure).

`pushserver.exposition.FAMILIES` declares every family and how workers combine; this module
turns that into the API's catalog: a gauge is served under its own name, a counter `x_total`
both as `x_total` (the summed counter) and as `x` (its per-second rate over the rate window),
the way prometheus-adapter's default rules name them. Discovery lists the catalog from memory,
so it answers before the first scrape. `adapter.answers` looks metrics up here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pushserver.exposition import FAMILIES, Combine


@dataclass(frozen=True)
class ServedMetric:
    name: str  # as the API serves it
    sample: str  # the sample name read from every worker
    combine: Combine
    rate: bool = False


def _catalog() -> dict[str, ServedMetric]:
    served: dict[str, ServedMetric] = {}
    for family in FAMILIES:
        if family.across_workers is Combine.IGNORE:
            continue
        served[family.name] = ServedMetric(family.name, family.name, family.across_workers)
        if family.kind == "counter":
            rate_name = family.name.removesuffix("_total")
            served[rate_name] = ServedMetric(rate_name, family.name, Combine.SUM, rate=True)
    return served


CATALOG: Mapping[str, ServedMetric] = _catalog()
METRIC_NAMES: tuple[str, ...] = tuple(sorted(CATALOG))

# Every family the adapter takes a number from, with the TYPE the push server declares:
# `adapter.samples` refuses a body that says otherwise about one of them.
READ_TYPES: Mapping[str, str] = {
    **{family.name: family.kind for family in FAMILIES},
    "pushscale_worker_info": "gauge",
}

# The families a round keeps in columns (`adapter.columns`): the served gauges, which HPAs scale
# on. Counters are asked for as rates, which read the readings of several rounds.
COLUMNS: tuple[str, ...] = tuple(
    sorted(
        metric.sample
        for metric in CATALOG.values()
        if not metric.rate and READ_TYPES.get(metric.sample) == "gauge"
    )
)
