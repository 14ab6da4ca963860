"""pacing: drain and shed schedules, and how many sockets a worker sheds."""

from __future__ import annotations

import pytest

from pushserver.pacing import Pace, shed_count


def test_a_drain_spreads_evenly_and_ends_on_the_deadline():
    pace = Pace.over(4, start=100.0, duration=20.0)
    assert pace.schedule() == [105.0, 110.0, 115.0, 120.0]
    assert pace.end == 120.0


@pytest.mark.parametrize(
    ("now", "due"),
    [(99.0, 0), (100.0, 0), (104.999, 0), (105.0, 1), (112.0, 2), (120.0, 4), (500.0, 4)],
    ids=["before", "at-start", "just-before-first", "first", "between", "deadline", "long-after"],
)
def test_due_by(now, due):
    assert Pace.over(4, start=100.0, duration=20.0).due_by(now) == due


def test_a_40k_pod_drain_is_2000_a_second_not_one_burst():
    pace = Pace.over(40_000, start=0.0, duration=20.0)
    assert pace.due_by(1.0) == 2000
    assert pace.due_by(10.0) == 20_000


def test_the_seeds_shed_pace_is_one_every_5_ms():
    pace = Pace(100, start=0.0, interval=0.005)
    assert pace.due_by(0.25) == 50
    assert pace.end == pytest.approx(0.5)


@pytest.mark.parametrize(
    "pace", [Pace.over(0, 5.0, 20.0), Pace(3, 5.0, 0.0)], ids=["none", "no-wait"]
)
def test_degenerate_paces(pace):
    assert pace.due_by(5.0) == pace.count


@pytest.mark.parametrize(
    ("connected", "recommended", "buffer", "count"),
    [
        (9_999, 10_000, 100, 0),
        (10_000, 10_000, 100, 0),
        (10_001, 10_000, 100, 101),
        (12_000, 10_000, 0, 2_000),
        (50, 10, 45, 50),
    ],
    ids=["below", "at", "one-over", "no-buffer", "never-more-than-held"],
)
def test_shed_count(connected, recommended, buffer, count):
    assert shed_count(connected, recommended, buffer) == count
