"""Per-second rates of counters from successive scrapes (pure: points and `now` in).

The API serves a counter `x_total` also as `x`, its rate over a window, as prometheus-adapter
does. The adapter keeps each worker's recent readings and asks `rate` per worker, then sums the
workers: a restarted worker resets only its own counter, so its reset cannot be mistaken for
the whole pod's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    at: float
    value: float


def rate(points: Sequence[Point], now: float, window_seconds: float) -> float | None:
    """The per-second increase over the points inside `[now - window, now]`, oldest first.

    A value lower than the one before is a counter reset (the process restarted): the counter
    counted from zero again, so the increase is the new value, as Prometheus's `rate` assumes.
    None when fewer than two points fall inside the window: there is no rate to tell yet.
    """
    inside = [point for point in points if now - window_seconds <= point.at <= now]
    if len(inside) < 2:
        return None
    increase = 0.0
    for before, after in itertools.pairwise(inside):
        increase += after.value - before.value if after.value >= before.value else after.value
    elapsed = inside[-1].at - inside[0].at
    return increase / elapsed if elapsed > 0 else None
