"""When each socket of a drain or a shed is closed (pure: times in, schedule out).

`pushserver.worker` asks `Pace.due_by(now)` how many sockets should be closed by now and closes
that many, so a drain of 10k sockets over 20 s is 500 closes a second, never one burst (seed §1),
and a shed closes one socket every `--shed-interval-ms` (seed §2). `shed_count` decides how many
sockets a worker above `--recommended-connections` sheds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    """`count` closes, one every `interval` seconds, the first one `interval` after `start`."""

    count: int
    start: float
    interval: float

    @classmethod
    def over(cls, count: int, start: float, duration: float) -> Pace:
        """Spread `count` closes evenly so the last one falls at `start + duration`."""
        return cls(count, start, duration / count if count else 0.0)

    def time_of(self, index: int) -> float:
        return self.start + (index + 1) * self.interval

    def due_by(self, now: float) -> int:
        """How many of the closes are due at `now`."""
        if self.interval <= 0:
            return self.count
        due = math.floor((now - self.start) / self.interval + 1e-9)
        return max(0, min(self.count, due))

    @property
    def end(self) -> float:
        return self.time_of(self.count - 1) if self.count else self.start

    def schedule(self) -> list[float]:
        return [self.time_of(i) for i in range(self.count)]


def shed_count(connected: int, recommended: int, buffer: int) -> int:
    """Sockets to shed so the worker lands `buffer` below `recommended`, or 0 if not above it."""
    if connected <= recommended:
        return 0
    return min(connected, connected - recommended + buffer)
