"""What a run's timeline says, in the numbers the comparison is made on (pure).

`adapter.simulator.cli` calls `summarize` per variant, `table` for the terminal and `as_json`
for `DIR/NAME.json`. The definitions:
- scale events: replica changes made by the HPA or the controller (a pod replaced by its
  ReplicaSet is not one);
- flaps: a scale event in the opposite direction of the one before it, within 5 minutes
  (a scale-up within 5 minutes of a scale-down, or the reverse);
- peak load ratio: the fullest pod's sockets ÷ the target, at its worst second;
- minutes over 1.2: minutes during which some pod held more than 1.2 x the target;
- replica-minutes, against the oracle that always has exactly max(min, ceil(users / target))
  pods (clamped to max): what the capacity cost, next to what it had to cost;
- clients lost: clients that exhausted their reconnect attempts;
- sockets dropped: sockets the servers closed (drains of removed pods, sheds), each a reconnect.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from adapter.simulator.run import Timeline

FLAP_SECONDS = 300
OVERLOAD = 1.2


@dataclass(frozen=True)
class Summary:
    variant: str
    scale_events: int
    flaps: int
    peak_load_ratio: float
    minutes_over_1_2: float
    replica_minutes: float
    oracle_replica_minutes: float
    clients_lost: int
    sockets_dropped: int  # closed by drains and sheds: each one a client's reconnect


def flaps(timeline: Timeline) -> int:
    scaling = [event for event in timeline.events if event.by != "replicaset"]
    return sum(
        1
        for before, after in itertools.pairwise(scaling)
        if before.up != after.up and after.at - before.at <= FLAP_SECONDS
    )


def summarize(timeline: Timeline) -> Summary:
    scenario = timeline.scenario
    target = scenario.target_per_pod
    oracle = sum(
        min(scenario.max_replicas, max(scenario.min_replicas, math.ceil(users / target)))
        for users in timeline.users
    )
    return Summary(
        variant=timeline.variant.name,
        scale_events=sum(1 for event in timeline.events if event.by != "replicaset"),
        flaps=flaps(timeline),
        peak_load_ratio=round(max(timeline.max_load, default=0.0) / target, 3),
        minutes_over_1_2=round(
            sum(1 for load in timeline.max_load if load > OVERLOAD * target) / 60, 1
        ),
        replica_minutes=round(sum(timeline.replicas) / 60, 1),
        oracle_replica_minutes=round(oracle / 60, 1),
        clients_lost=round(timeline.lost),
        sockets_dropped=round(timeline.dropped),
    )


def table(scenario_name: str, summaries: Sequence[Summary]) -> str:
    """The terminal table: one row per variant."""
    header = ("variant", "scale events", "flaps", "peak load/target", "min > 1.2x target",
              "replica-min (oracle)", "clients lost", "sockets dropped")  # fmt: skip
    rows = [
        (s.variant, str(s.scale_events), str(s.flaps), f"{s.peak_load_ratio:.2f}",
         f"{s.minutes_over_1_2:.1f}", f"{s.replica_minutes:.0f} ({s.oracle_replica_minutes:.0f})",
         f"{s.clients_lost:,}", f"{s.sockets_dropped:,}")
        for s in summaries
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [f"{scenario_name}"]
    for row in (header, *rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def as_json(timelines: Sequence[Timeline]) -> dict[str, Any]:
    scenario = timelines[0].scenario
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "seconds": scenario.seconds,
        "target_per_pod": scenario.target_per_pod,
        "variants": {t.variant.name: asdict(summarize(t)) for t in timelines},
    }
