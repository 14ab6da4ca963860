"""The controller's scale-down policy: when to remove pods, how many, which (pure).

The HPA keeps scale-up; scale-down is left to this policy (the HPA's `scaleDown.selectPolicy:
Disabled`). `adapter.controller.reconcile` calls `decide` once per sync with what the adapter
serves, and the simulator (`adapter.simulator`) calls it with the model's numbers, so both run
the same rules:

(a) the pods left must sit at or below `target * (1 - headroom)`: the HPA scales down to exactly
    ceil(total / target), which leaves every remaining pod at the target, and the first rise
    (or the removed pod's own clients coming back) scales straight back up;
(b) that must have held for the stabilization window;
(c) no reconnect storm may still be settling: after a scale-down, the clients of the removed
    pods come back over the next 10-20 s (the seed's reconnectionDelay 10 s, randomization 1,
    max 20 s), and until they do, the total reads too low and invites a second scale-down;
(d) the cooldown since the last scale event (either direction) must have passed;
and then at most `max_step` pods go, the ones with the fewest connections.
Every decision carries its reason, in the HPA's CamelCase event style.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HysteresisSettings:
    target_per_pod: float  # the HPA's averageValue for socket_io_connected
    min_replicas: int = 1
    headroom: float = 0.2
    stabilization_seconds: float = 300.0
    cooldown_seconds: float = 60.0
    # A storm has settled when the total is back to this share of what it was before the
    # scale-down and the connect rate is back near its baseline ...
    recovered_share: float = 0.95
    storm_rate_factor: float = 1.5
    # ... or, whatever the numbers say, after this long (users may simply have left).
    settle_max_seconds: float = 180.0
    # As many pods as the HPA's default scale-up policy adds per period: (a) already keeps the
    # pods left under the threshold, and one pod at a time takes a match day's evening from 20
    # pods back to 2 so slowly that it costs ~10% more replica-minutes (`pushscale simulate`).
    max_step: int = 4
    # How far ahead a growing load is carried: the span within which a scale-up after a
    # scale-down counts as a flap.
    projection_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.target_per_pod <= 0:
            raise ValueError("the target must be above 0")
        if not 0 <= self.headroom < 1:
            raise ValueError("headroom must be in [0, 1)")
        if self.min_replicas < 1 or self.max_step < 1:
            raise ValueError("min replicas and max step must be at least 1")

    @property
    def threshold(self) -> float:
        """The most connections a pod may hold after a scale-down."""
        return self.target_per_pod * (1 - self.headroom)


@dataclass(frozen=True)
class Observation:
    """One sync's view: exact connections per pod, and the deployment's connect rate."""

    at: float
    replicas: int  # the scale target's current spec.replicas
    pods: Mapping[str, float]  # pod → connections, for every pod with an exact value
    connect_rate: float  # new connections per second over all pods (socket_io_connect)
    missing: tuple[str, ...] = ()  # running pods the adapter left out (no exact value)

    @property
    def total(self) -> float:
        return sum(self.pods.values())


@dataclass(frozen=True)
class ScaleDown:
    at: float
    replicas_before: int
    total_before: float
    connect_rate_before: float


@dataclass(frozen=True)
class Memory:
    """What the policy carries from one sync to the next."""

    below_since: float | None = None
    total_below_since: float = 0.0  # the total when the load first fell below the threshold
    last_scale_down: ScaleDown | None = None
    settled: bool = True
    last_scale_event_at: float | None = None
    last_replicas: int | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    remove: tuple[str, ...]  # the pods chosen to go, emptiest first
    reason: str  # ScaleDown, ScaleDownHeld, NoScaleDown
    message: str

    @property
    def scales_down(self) -> bool:
        return self.reason == "ScaleDown"


def replicas_for(total: float, settings: HysteresisSettings) -> int:
    """The fewest pods that keep every pod at or below the threshold."""
    return max(settings.min_replicas, math.ceil(total / settings.threshold))


def decide(
    settings: HysteresisSettings, memory: Memory, seen: Observation
) -> tuple[Decision, Memory]:
    memory = _note_replica_changes(memory, seen)
    if memory.last_scale_down is not None and not memory.settled:
        memory = replace(memory, settled=_settled(settings, memory.last_scale_down, seen))
    n = seen.replicas
    # While a storm settles, the total rises as the dropped clients come back: that is not
    # growth to carry forward, and the storm rule holds the scale-down anyway.
    projected = _projected(settings, memory, seen) if memory.settled else seen.total
    wanted = replicas_for(projected, settings)
    if wanted >= n:
        memory = replace(memory, below_since=None)
        return Decision(n, (), "NoScaleDown", _at_threshold(settings, seen, projected, n)), memory
    if memory.below_since is None:
        memory = replace(memory, below_since=seen.at, total_below_since=seen.total)
    held = _held(settings, memory, seen, wanted)
    if held is not None:
        return Decision(n, (), "ScaleDownHeld", held), memory
    new = max(wanted, n - settings.max_step)
    remove = tuple(sorted(seen.pods, key=lambda pod: (seen.pods[pod], pod))[: n - new])
    leaving = ", ".join(f"{pod} ({kilo(seen.pods[pod])})" for pod in remove)
    message = (
        f"{n} -> {new}: {kilo(seen.total)} sockets leave {kilo(seen.total / new)} per pod, at or "
        f"below {kilo(settings.threshold)} ({settings.headroom:.0%} under the target); "
        f"removing {leaving}"
    )
    memory = Memory(
        last_scale_down=ScaleDown(seen.at, n, seen.total, seen.connect_rate),
        settled=False,
        last_scale_event_at=seen.at,
        last_replicas=new,
    )
    return Decision(new, remove, "ScaleDown", message), memory


def _held(
    settings: HysteresisSettings, memory: Memory, seen: Observation, wanted: int
) -> str | None:
    """Why a scale-down the load would allow must wait, or None: rules (c), (b), (d), the
    storm first, as the most telling reason."""
    if seen.missing:
        return f"no exact value for {', '.join(seen.missing)}; not scaling down blind"
    if not memory.settled and memory.last_scale_down is not None:
        before = memory.last_scale_down.total_before
        return (
            f"storm settling, {kilo(seen.total)} of {kilo(before)} sockets back, "
            f"{seen.connect_rate:.0f}/s connecting"
        )
    below_for = seen.at - (memory.below_since if memory.below_since is not None else seen.at)
    if below_for < settings.stabilization_seconds:
        return (
            f"{wanted} pods would carry the load; below the threshold for {below_for:.0f} s "
            f"of {settings.stabilization_seconds:.0f} s"
        )
    if memory.last_scale_event_at is not None:
        since = seen.at - memory.last_scale_event_at
        if since < settings.cooldown_seconds:
            return (
                f"cooldown: the last scale event was {since:.0f} s ago, "
                f"{settings.cooldown_seconds:.0f} s needed"
            )
    return None


def _note_replica_changes(memory: Memory, seen: Observation) -> Memory:
    """A replica count that changed since the last sync is a scale event (the HPA's scale-up,
    or someone's kubectl scale): it restarts the cooldown."""
    if memory.last_replicas is not None and memory.last_replicas != seen.replicas:
        memory = replace(memory, last_scale_event_at=seen.at)
    return replace(memory, last_replicas=seen.replicas)


def _projected(settings: HysteresisSettings, memory: Memory, seen: Observation) -> float:
    """The total a scale-down must still fit after the projection horizon: while the load grows,
    what it grew by per second since it fell below the threshold, carried forward. Without it,
    a ramp that starts below the threshold (users arriving for a game) is scaled down and the
    HPA scales straight back up minutes later."""
    if memory.below_since is None or seen.at <= memory.below_since:
        return seen.total
    growth = (seen.total - memory.total_below_since) / (seen.at - memory.below_since)
    return seen.total + max(0.0, growth) * settings.projection_seconds


def _settled(settings: HysteresisSettings, before: ScaleDown, seen: Observation) -> bool:
    if seen.at - before.at >= settings.settle_max_seconds:
        return True
    recovered = seen.total >= settings.recovered_share * before.total_before
    calm = seen.connect_rate <= settings.storm_rate_factor * max(before.connect_rate_before, 1.0)
    return recovered and calm


def _at_threshold(settings: HysteresisSettings, seen: Observation, projected: float, n: int) -> str:
    per_pod = projected / max(n - 1, 1)
    growing = f" with the load growing ({kilo(seen.total)} now)" if projected > seen.total else ""
    return (
        f"{n - 1} pods would carry {kilo(per_pod)} each{growing}, above {kilo(settings.threshold)} "
        f"({settings.headroom:.0%} under the target {kilo(settings.target_per_pod)})"
    )


def kilo(value: float) -> str:
    """A count as the controller's messages write it: 31.3k, or 950."""
    return f"{value / 1000:.1f}k" if abs(value) >= 1000 else f"{value:.0f}"
