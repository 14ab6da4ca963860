"""restarts: backoff for crash loops, reset after a healthy run."""

from __future__ import annotations

import pytest

from pushserver.restarts import RestartPolicy, describe_exit


@pytest.mark.parametrize(
    ("crashes", "uptime", "delay", "remembered"),
    [
        (0, 0.1, 0.5, 1),
        (1, 0.1, 1.0, 2),
        (2, 3.0, 2.0, 3),
        (7, 1.0, 30.0, 8),
        (50, 1.0, 30.0, 51),
        (9, 60.0, 0.5, 1),
    ],
    ids=["first-crash", "second", "third", "capped", "long-loop", "healthy-run-resets"],
)
def test_backoff(crashes, uptime, delay, remembered):
    assert RestartPolicy().delay_after(crashes, uptime) == (delay, remembered)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (-99, "killed by signal 99"),
    ],
)
def test_exit_descriptions(code, text):
    assert describe_exit(code) == text
