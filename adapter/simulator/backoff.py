"""When a dropped socket.io client tries again: the reconnect delay distribution (pure).

socket.io-client's Manager waits `backoff.duration()` before every reconnect attempt, the first
one included. Its Backoff (engine `backo2`): `ms = min * factor^attempt`; with jitter `j`, a
uniform `r` gives `deviation = floor(r * j * ms)`, subtracted when `floor(r * 10)` is even and
added otherwise; the result is capped at `max`. With the seed's options (reconnectionDelay
10000, reconnectionDelayMax 20000, randomizationFactor 1) the first attempt lands anywhere in
0-20 s and later ones are mostly at 20 s. This module turns that into, per attempt, the share
of clients retrying after each whole second, so the simulator moves counts, not clients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class ClientOptions:
    """socket.io-client reconnection options; the defaults are the seed's."""

    reconnection_delay_ms: float = 10_000
    reconnection_delay_max_ms: float = 20_000
    randomization_factor: float = 1.0
    reconnection_attempts: int = 10


SEED_CLIENT = ClientOptions()
# Enough uniform draws that each 1 s bucket's share is exact to well under 0.1%.
_DRAWS = 20_000


def duration_ms(options: ClientOptions, attempt: int, r: float) -> float:
    """Backoff.duration() for the 0-based `attempt`, given the uniform draw `r`."""
    ms = options.reconnection_delay_ms * 2.0**attempt
    if options.randomization_factor:
        deviation = math.floor(r * options.randomization_factor * ms)
        ms = ms - deviation if math.floor(r * 10) & 1 == 0 else ms + deviation
    return min(ms, options.reconnection_delay_max_ms)


@cache
def delay_shares(options: ClientOptions, attempt: int) -> tuple[float, ...]:
    """Share of clients whose `attempt` (0-based) fires after 1, 2, ... whole seconds.

    Index i holds the share retrying i + 1 s after the drop (a delay under a second still waits
    for the next simulated second).
    """
    seconds = math.ceil(options.reconnection_delay_max_ms / 1000)
    counts = [0] * seconds
    for draw in range(_DRAWS):
        ms = duration_ms(options, attempt, (draw + 0.5) / _DRAWS)
        counts[max(0, min(seconds - 1, math.ceil(ms / 1000) - 1))] += 1
    return tuple(count / _DRAWS for count in counts)
