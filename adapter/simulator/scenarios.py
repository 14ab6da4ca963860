"""The traffic a simulation replays: users online each second, and what happens to the pods
(pure; `load_csv` reads a file's text, not the file).

`adapter.simulator.cli` picks a built-in by name (`SCENARIOS`) or loads a CSV; `run` replays it.
All use the seed's HPA budget translated to exact per-pod sums: averageValue 40000 (the seed's
10000 came from one worker of four), min 2 pods (1 where the seed started from 1), max 20.
Noise is seeded, so every run of a scenario is the same run.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapter.simulator.cluster import ClusterSettings

TARGET_PER_POD = 40_000.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    users: tuple[float, ...]  # users online at second t
    initial_replicas: int
    min_replicas: int = 2
    max_replicas: int = 20
    kills: tuple[int, ...] = ()  # seconds at which one ready pod is deleted (and replaced)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    target_per_pod: float = TARGET_PER_POD

    @property
    def seconds(self) -> int:
        return len(self.users)


class ScenarioError(ValueError):
    """A scenario file that cannot be replayed; the message says where."""


def _piecewise(points: Sequence[tuple[float, float]]) -> list[float]:
    """Users at each second, linear between (second, users) points."""
    users: list[float] = []
    for (t0, u0), (t1, u1) in itertools.pairwise(points):
        for t in range(int(t0), int(t1)):
            users.append(u0 + (u1 - u0) * (t - t0) / (t1 - t0))
    users.append(points[-1][1])
    return users


def _noisy(users: list[float], share: float, seed: int, start: int = 0) -> list[float]:
    """Slow, bounded noise: a seeded random walk smoothed over a minute, within ±share."""
    rng = random.Random(seed)
    walk, level = [], 0.0
    for _ in users:
        level = 0.98 * level + rng.gauss(0, 0.2)
        walk.append(level)
    peak = max(abs(value) for value in walk) or 1.0
    return [
        u if t < start else max(0.0, u * (1 + share * walk[t] / peak)) for t, u in enumerate(users)
    ]


def _seed_autoscale() -> Scenario:
    ramp = 160_000 / 500
    users = _piecewise([(0, 0), (ramp, 160_000), (ramp + 1800, 160_000), (ramp + 2100, 60_000),
                        (ramp + 3900, 60_000)])  # fmt: skip
    return Scenario(
        "seed-autoscale",
        "the seed's autoscaling test: 500 new connections/s up to 160k, 1 -> 4 pods; "
        "then users drift down to 60k",
        tuple(users), initial_replicas=1, min_replicas=1,
    )  # fmt: skip


# The seed's maximum test ran 20k sockets per worker; the push servers are configured for it
# (--recommended-connections 21000 --max-connections 25000), or 1.6M could not fit in 20 pods.
_MAX_TEST_CLUSTER = ClusterSettings(recommended_per_pod=84_000, max_per_pod=100_000)


def _seed_max() -> Scenario:
    ramp = 1_600_000 / 200
    users = _piecewise([(0, 0), (ramp, 1_600_000), (ramp + 1800, 1_600_000)])
    return Scenario(
        "seed-max",
        "the seed's maximum test: 200 new connections/s up to 1.6M, 4 -> 20 pods "
        "(20k sockets per worker allowed, as in the seed)",
        tuple(users), initial_replicas=4, cluster=_MAX_TEST_CLUSTER,
    )  # fmt: skip


def _game_end() -> Scenario:
    users = _piecewise([(0, 150_000), (300, 150_000), (900, 10_000), (3300, 10_000)])
    return Scenario(
        "game-end",
        "a game ends: 150k viewers drain to 10k over 10 minutes (±5% noise)",
        tuple(_noisy(users, 0.05, seed=7)), initial_replicas=4,
    )  # fmt: skip


def _plateau() -> Scenario:
    # Swings of ±7% every 12 minutes (a game's rhythm: play, breaks) plus ±3% noise.
    swings = [125_000.0 * (1 + 0.07 * math.sin(2 * math.pi * t / 720)) for t in range(7200)]
    users = _noisy(swings, 0.03, seed=11)
    return Scenario(
        "plateau",
        "two hours hovering at 125k (±10% noise), across the HPA's 3 -> 4 pod threshold",
        tuple(users), initial_replicas=4,
    )  # fmt: skip


def _seed_pod_kill() -> Scenario:
    return Scenario(
        "seed-pod-kill",
        "the seed's pod-kill test: 4 pods, 160k sockets, one pod deleted and replaced",
        tuple([160_000.0] * 2400), initial_replicas=4, kills=(300,),
    )  # fmt: skip


def _day() -> Scenario:
    """A match day: a quiet night, an afternoon game and an evening final peaking at 1.6M."""
    hour = 3600
    points = [(0, 50_000), (12 * hour, 50_000), (14 * hour, 600_000), (16 * hour, 600_000),
              (16.5 * hour, 100_000), (19 * hour, 100_000), (20.5 * hour, 1_600_000),
              (22.5 * hour, 1_600_000), (23 * hour, 80_000), (24 * hour - 1, 50_000)]  # fmt: skip
    return Scenario(
        "day",
        "a match day, 24 h: a quiet night, an afternoon game at 600k, an evening final at 1.6M",
        tuple(_noisy(_piecewise(points), 0.05, seed=3)), initial_replicas=2,
        cluster=_MAX_TEST_CLUSTER,
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "seed-autoscale": _seed_autoscale,
    "seed-max": _seed_max,
    "game-end": _game_end,
    "plateau": _plateau,
    "seed-pod-kill": _seed_pod_kill,
    "day": _day,
}
# What `pushscale simulate` runs without --scenario (the day is long; ask for it by name).
DEFAULT_SCENARIOS = ("seed-autoscale", "seed-max", "game-end", "plateau", "seed-pod-kill")


def load_csv(name: str, text: str, initial_replicas: int | None = None) -> Scenario:
    """A scenario from CSV rows `second,users` (a header row, seconds ascending); users are
    interpolated linearly between rows, as the built-ins are."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [cell.strip().lower() for cell in rows[0]] != ["second", "users"]:
        raise ScenarioError(f"{name}: the first row must be the header 'second,users'")
    points: list[tuple[float, float]] = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ScenarioError(f"{name}:{number}: expected 2 columns, got {len(row)}")
        try:
            second, users = float(row[0]), float(row[1])
        except ValueError:
            raise ScenarioError(f"{name}:{number}: not numbers: {','.join(row)!r}") from None
        if not (math.isfinite(second) and math.isfinite(users)) or second < 0 or users < 0:
            raise ScenarioError(f"{name}:{number}: seconds and users must be >= 0")
        if points and second <= points[-1][0]:
            raise ScenarioError(f"{name}:{number}: seconds must increase ({second:g})")
        points.append((second, users))
    if len(points) < 2:
        raise ScenarioError(f"{name}: needs at least two rows of data")
    if points[0][0] != 0:
        points.insert(0, (0.0, points[0][1]))
    online = _piecewise(points)
    replicas = initial_replicas or max(2, math.ceil(online[0] / TARGET_PER_POD))
    return Scenario(name, f"users over time from {name}", tuple(online), initial_replicas=replicas)
