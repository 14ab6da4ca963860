"""When the supervisor restarts a worker that died (pure: the caller passes times).

`pushserver.supervisor` asks `RestartPolicy.delay_after` each time a worker exits unexpectedly.
A worker that crashes straight after starting is restarted with exponential backoff, so a crash
loop (a bad deploy, a lost volume) does not burn a CPU; one that ran long enough is considered
healthy again and is restarted at once.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    # A worker that stayed up this long reset its crash count.
    healthy_after_seconds: float = 60.0

    def delay_after(self, consecutive_crashes: int, uptime_seconds: float) -> tuple[float, int]:
        """The pause before the next start, and the crash count to remember for next time."""
        crashes = 1 if uptime_seconds >= self.healthy_after_seconds else consecutive_crashes + 1
        delay = min(self.max_delay_seconds, self.first_delay_seconds * 2 ** (crashes - 1))
        return delay, crashes


def describe_exit(returncode: int) -> str:
    """`exit code 3` or `killed by SIGKILL`, for the supervisor's log."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
