"""adapter.controller.policy: when the controller scales down, and why it holds."""

from __future__ import annotations

import dataclasses

import pytest

from adapter.controller.policy import HysteresisSettings, Memory, Observation, decide, replicas_for

SETTINGS = HysteresisSettings(target_per_pod=40_000, min_replicas=2)


def seen(at: float, *loads: float, rate: float = 10.0, replicas: int | None = None,
         missing: tuple[str, ...] = ()) -> Observation:  # fmt: skip
    pods = {f"pod-{i}": load for i, load in enumerate(loads)}
    return Observation(at, replicas or len(loads), pods, rate, missing)


def run(observations: list[Observation], settings: HysteresisSettings = SETTINGS):
    memory = Memory()
    decisions = []
    for observation in observations:
        decision, memory = decide(settings, memory, observation)
        decisions.append(decision)
    return decisions, memory


@pytest.mark.parametrize(
    ("total", "replicas"),
    [(0, 2), (64_000, 2), (64_001, 3), (96_000, 3), (96_001, 4), (1_000_000, 32)],
    ids=["empty-is-min", "two-at-threshold", "just-over-two", "three", "just-over-three",
         "large"],
)  # fmt: skip
def test_replicas_keep_every_pod_at_or_below_target_minus_headroom(total, replicas):
    assert replicas_for(total, SETTINGS) == replicas


@pytest.mark.parametrize(
    ("loads", "reason", "words"),
    [
        ((30_000, 30_000, 30_000), "NoScaleDown", "2 pods would carry 45.0k each, above 32.0k"),
        ((20_000, 20_000, 20_000), "ScaleDownHeld", "below the threshold for 0 s of 300 s"),
    ],
    ids=["the-pods-left-would-sit-above-the-threshold", "stabilization-starts"],
)
def test_a_first_look_never_scales_down(loads, reason, words):
    [decision], _ = run([seen(0, *loads)])
    assert (decision.reason, decision.replicas) == (reason, len(loads))
    assert words in decision.message


def test_the_stock_hpa_scale_down_is_refused_when_it_leaves_pods_at_the_target():
    # The HPA would go to ceil(120k / 40k) = 3 pods at exactly the target; we keep 4.
    decisions, _ = run([seen(t, 30_000, 30_000, 30_000, 30_000) for t in range(0, 600, 15)])
    assert {d.reason for d in decisions} == {"NoScaleDown"}


def test_after_the_window_it_removes_the_emptiest_pods_at_most_max_step():
    loads = (30_000, 5_000, 12_000, 9_000, 8_000, 30_000)  # 94k: 3 pods at 31.3k
    settings = dataclasses.replace(SETTINGS, max_step=2)
    decisions, memory = run([seen(t, *loads) for t in range(0, 301, 15)], settings)
    assert all(d.reason == "ScaleDownHeld" for d in decisions[:-1])
    last = decisions[-1]
    assert (last.reason, last.replicas, last.remove) == ("ScaleDown", 4, ("pod-1", "pod-4"))
    assert "6 -> 4" in last.message and "removing pod-1 (5.0k), pod-4 (8.0k)" in last.message
    assert memory.last_scale_down is not None and memory.last_scale_down.total_before == 94_000


def test_a_storm_holds_the_next_scale_down_until_the_sockets_are_back():
    settings = dataclasses.replace(SETTINGS, max_step=1, cooldown_seconds=0)
    quiet = [seen(t, 10_000, 10_000, 10_000, 10_000, rate=20) for t in range(0, 301, 15)]
    decisions, memory = run(quiet, settings)
    assert decisions[-1].reason == "ScaleDown" and decisions[-1].replicas == 3
    # 10k sockets dropped: 31k back, 400/s reconnecting.
    for t, total_back, rate, expected in [
        (315, 31_000, 400, "storm settling, 31.0k of 40.0k sockets back, 400/s connecting"),
        (330, 36_000, 200, "storm settling, 36.0k of 40.0k sockets back"),
        (345, 39_500, 25, None),
    ]:
        observation = seen(t, *[total_back / 3] * 3, rate=rate)
        decision, memory = decide(settings, memory, observation)
        if expected is None:
            assert decision.reason != "ScaleDownHeld" or "storm" not in decision.message
        else:
            assert decision.reason == "ScaleDownHeld" and expected in decision.message


def test_a_storm_stops_holding_after_the_maximum_settle_time():
    settings = dataclasses.replace(SETTINGS, max_step=1, cooldown_seconds=0,
                                   stabilization_seconds=0, settle_max_seconds=60)  # fmt: skip
    decisions, memory = run([seen(0, 10_000, 10_000, 10_000, 10_000)], settings)
    assert decisions[0].reason == "ScaleDown"
    # Users left meanwhile: the total never comes back, but the storm is over by the clock.
    held, memory = decide(settings, memory, seen(30, 8_000, 8_000, 8_000, rate=5))
    assert "storm settling" in held.message
    went, _ = decide(settings, memory, seen(60, 8_000, 8_000, 8_000, rate=5))
    assert went.reason == "ScaleDown"


def test_the_cooldown_follows_any_scale_event_including_the_hpas():
    settings = dataclasses.replace(SETTINGS, stabilization_seconds=0, cooldown_seconds=120)
    memory = Memory()
    _, memory = decide(settings, memory, seen(0, 10_000, 10_000, rate=5, replicas=2))
    # The HPA scaled up to 4 meanwhile; the load fell right after.
    decision, memory = decide(settings, memory, seen(15, 5_000, 5_000, 5_000, 5_000, rate=5))
    assert decision.reason == "ScaleDownHeld" and "cooldown" in decision.message
    decision, _ = decide(settings, memory, seen(135, 5_000, 5_000, 5_000, 5_000, rate=5))
    assert decision.reason == "ScaleDown"


def test_a_pod_without_an_exact_value_holds_the_scale_down():
    settings = dataclasses.replace(SETTINGS, stabilization_seconds=0)
    decision, _ = decide(settings, Memory(),
                         seen(0, 1_000, 1_000, 1_000, replicas=4, missing=("pod-9",)))  # fmt: skip
    assert decision.reason == "ScaleDownHeld"
    assert "no exact value for pod-9" in decision.message


def test_a_growing_load_is_not_scaled_down_on_its_way_up():
    # Users arrive at 200/s from nothing: below the threshold for 5 minutes, but not for long.
    decisions, _ = run([seen(t, *[200 * t / 4] * 4, rate=200) for t in range(0, 331, 15)])
    assert all(d.reason != "ScaleDown" for d in decisions)
    assert any("with the load growing" in d.message for d in decisions)


def test_never_below_min_replicas_and_never_up():
    settings = dataclasses.replace(SETTINGS, stabilization_seconds=0, cooldown_seconds=0)
    memory = Memory()
    replicas = 6
    for t in range(0, 3000, 15):
        decision, memory = decide(settings, memory, seen(t, *[100.0] * replicas, rate=1))
        assert settings.min_replicas <= decision.replicas <= replicas
        replicas = decision.replicas
    assert replicas == settings.min_replicas


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"target_per_pod": 0}, "target"), ({"headroom": 1.0}, "headroom"),
     ({"max_step": 0}, "max step")],
    ids=["zero-target", "headroom-100%", "zero-step"],
)  # fmt: skip
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SETTINGS, **changes)
