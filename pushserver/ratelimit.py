"""Per-connection event flood control (pure: the caller passes `now`).

`pushserver.push` keeps one `EventBudget` per connected socket and asks it about every event.
A token bucket admits `rate` events per second with bursts of `burst`. Refused events keep
drawing the bucket below zero, so a client that keeps flooding digs itself a hole; once the hole
is `burst` deep the client is disconnected. A client that only bursts briefly loses those events
and recovers as the bucket refills.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    ADMIT = "admit"
    DROP = "drop"
    DISCONNECT = "disconnect"


@dataclass
class EventBudget:
    rate: float
    burst: int
    tokens: float
    updated: float
    # Events refused since the last admitted one; the caller warns the client on the first.
    refused_in_row: int = 0

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> EventBudget:
        return cls(rate=rate, burst=burst, tokens=float(burst), updated=now)

    def spend(self, now: float) -> Verdict:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused_in_row = 0
            return Verdict.ADMIT
        self.tokens -= 1.0
        self.refused_in_row += 1
        if self.tokens <= -self.burst:
            return Verdict.DISCONNECT
        return Verdict.DROP
