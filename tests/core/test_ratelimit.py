"""ratelimit: the per-connection token bucket, driven by explicit times."""

from __future__ import annotations

import pytest

from pushserver.ratelimit import EventBudget, Verdict


def spend(budget: EventBudget, times: list[float]) -> list[Verdict]:
    return [budget.spend(t) for t in times]


def test_a_burst_is_admitted_then_refused():
    budget = EventBudget.full(rate=5, burst=3, now=0)
    assert spend(budget, [0, 0, 0, 0]) == [Verdict.ADMIT] * 3 + [Verdict.DROP]
    assert budget.refused_in_row == 1


def test_the_bucket_refills_at_the_rate():
    budget = EventBudget.full(rate=5, burst=3, now=0)
    spend(budget, [0, 0, 0])
    assert budget.spend(0.1) is Verdict.DROP  # 0.5 token
    assert budget.spend(0.5) is Verdict.ADMIT  # -0.5 + 2.0 = 1.5 tokens
    assert budget.refused_in_row == 0


def test_a_sustained_flood_is_disconnected_after_burst_refusals():
    budget = EventBudget.full(rate=5, burst=3, now=0)
    verdicts = spend(budget, [0.0] * 7)
    assert verdicts == [Verdict.ADMIT] * 3 + [Verdict.DROP] * 2 + [Verdict.DISCONNECT] + [
        Verdict.DISCONNECT
    ]


@pytest.mark.parametrize(
    ("interval", "expected"),
    [(0.25, Verdict.ADMIT), (0.19, Verdict.DISCONNECT)],
    ids=["at-the-rate-forever", "slightly-over-the-rate-eventually-cut"],
)
def test_steady_senders(interval, expected):
    budget = EventBudget.full(rate=5, burst=3, now=0)
    verdicts = spend(budget, [i * interval for i in range(400)])
    if expected is Verdict.ADMIT:
        assert set(verdicts) == {Verdict.ADMIT}
    else:
        assert Verdict.DISCONNECT in verdicts


def test_the_clock_going_backwards_adds_nothing():
    budget = EventBudget.full(rate=5, burst=2, now=10)
    assert spend(budget, [10, 10]) == [Verdict.ADMIT, Verdict.ADMIT]
    assert budget.spend(5) is Verdict.DROP
    # Back at 10: no time passed since the last real refill.
    assert budget.spend(10) is Verdict.DISCONNECT
