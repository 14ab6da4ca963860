"""adapter.rates: counter rates over a window, as tables."""

from __future__ import annotations

import pytest

from adapter.rates import Point, rate


def points(*pairs: tuple[float, float]) -> list[Point]:
    return [Point(at, value) for at, value in pairs]


@pytest.mark.parametrize(
    ("series", "now", "window", "expected"),
    [
        (points((0, 100), (10, 600)), 10, 60, 50.0),
        (points((0, 100), (10, 600), (20, 1100)), 20, 60, 50.0),
        (points((0, 0), (50, 5000), (70, 5100)), 70, 30, 5.0),
        (points((0, 100), (10, 600), (20, 50)), 20, 60, (500 + 50) / 20),
        (points((0, 100)), 0, 60, None),
        (points((0, 100), (100, 200)), 100, 60, None),
        (points((0, 100), (10, 100)), 10, 60, 0.0),
        (points((5, 100), (5, 200)), 5, 60, None),
        (points((0, 100), (10, 600), (80, 700)), 12, 60, 50.0),
    ],
    ids=[
        "two-points",
        "steady",
        "window-drops-old-points",
        "counter-reset",
        "one-point",
        "second-point-outside-window",
        "flat",
        "same-instant",
        "future-points-ignored",
    ],
)
def test_rate(series, now, window, expected):
    assert rate(series, now, window) == expected
