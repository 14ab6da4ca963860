"""adapter.answers: which pods are served, what an object sums to, and what errors say."""

from __future__ import annotations

import pytest

from adapter.aggregate import WorkerReading
from adapter.answers import Round, object_value, pod_value, pod_values, served_metric
from adapter.catalog import CATALOG
from adapter.errors import NotFound, Unavailable
from adapter.pods import Pod
from adapter.selectors import parse_selector
from adapter.wire import Described

ALL = parse_selector(None)
CONNECTED = CATALOG["socket_io_connected"]
CONNECT_RATE = CATALOG["socket_io_connect"]


def pod(name: str, workers: int = 2, **fields: object) -> Pod:
    return Pod("live", name, {"app": "push"}, "10.0.0.1", 9100, workers, **fields)  # type: ignore[arg-type]


def reading(
    worker: int, connected: float, at: float = 100.0, connects: float = 0.0
) -> WorkerReading:
    return WorkerReading(
        worker,
        at,
        {
            "socket_io_connected": {(): connected},
            "socket_io_connect_total": {(): connects},
            "pushscale_worker_info": {(("pod", "x"), ("worker", str(worker))): 1.0},
        },
    )


def round_of(
    pods: list[Pod], readings: dict[str, list[WorkerReading]], at: float = 100.0, number: int = 1
) -> Round:
    return Round(
        number, at, 0.01, tuple(pods), {("live", n): tuple(r) for n, r in readings.items()}
    )


def test_the_catalog_serves_gauges_counters_and_counter_rates():
    assert CONNECTED.sample == "socket_io_connected" and not CONNECTED.rate
    assert CATALOG["socket_io_connect_total"].sample == "socket_io_connect_total"
    assert CONNECT_RATE.sample == "socket_io_connect_total" and CONNECT_RATE.rate
    assert "pushscale_worker_info" not in CATALOG, "identity is not summed"


def test_an_unknown_metric_is_not_found_with_the_custom_metrics_apiserver_wording():
    with pytest.raises(NotFound, match="could not find the metric nope for pods"):
        served_metric("nope", "pods")


@pytest.mark.parametrize(
    ("the_pod", "reason"),
    [
        (pod("a", deleting=True), "terminating (deletionTimestamp set)"),
        (pod("a", phase="Pending"), "phase Pending, not Running"),
    ],
    ids=["terminating", "pending"],
)
def test_pods_left_out_by_rule_say_so(the_pod, reason):
    value = pod_value(
        the_pod, [round_of([the_pod], {"a": [reading(0, 1), reading(1, 1)]})], CONNECTED, ALL, 60
    )
    assert value.reading.value is None and value.by_rule
    assert value.reading.reason == reason


def test_pods_list_serves_the_complete_pods_and_leaves_out_the_rest():
    pods = [pod("a"), pod("b"), pod("c")]
    current = round_of(
        pods,
        {
            "a": [reading(0, 300), reading(1, 200, at=99.0)],
            "b": [reading(0, 50), WorkerReading(1, 100.0, error="connection refused")],
        },
    )
    values = pod_values(pods, [current], CONNECTED, ALL, 60, "pods")
    assert [(v.described.name, v.value, v.timestamp) for v in values] == [("a", 500, 99.0)]


def test_no_servable_pod_is_not_found_and_explains_every_pod():
    pods = [pod("b"), pod("c", phase="Pending")]
    current = round_of(
        pods, {"b": [reading(0, 50), WorkerReading(1, 100.0, error="timeout after 1 s")]}
    )
    with pytest.raises(NotFound) as caught:
        pod_values(pods, [current], CONNECTED, ALL, 60, "pods in live")
    assert caught.value.message == (
        "no value of socket_io_connected for pods in live: "
        "pod b: worker 1: timeout after 1 s; pod c: phase Pending, not Running"
    )


def test_an_object_sums_its_pods_and_ignores_pods_left_out_by_rule():
    pods = [pod("a"), pod("b"), pod("old", deleting=True)]
    current = round_of(
        pods, {"a": [reading(0, 1), reading(1, 2)], "b": [reading(0, 3), reading(1, 4, at=98.0)]}
    )
    value = object_value(
        Described("deployments.apps", "push", "live"), pods, [current], CONNECTED, ALL, 60
    )
    assert (value.value, value.timestamp, value.window_seconds) == (10, 98.0, None)


def test_an_object_with_an_unreadable_pod_is_unavailable_never_under_counted():
    pods = [pod("a"), pod("b")]
    current = round_of(pods, {"a": [reading(0, 1), reading(1, 2)], "b": [reading(0, 3)]})
    with pytest.raises(Unavailable, match="would under-count: pod b: worker 1 was not scraped"):
        object_value(Described("services", "push", "live"), pods, [current], CONNECTED, ALL, 60)


def test_an_object_without_pods_is_not_found():
    with pytest.raises(NotFound, match="no pods with metrics found for services push"):
        object_value(Described("services", "push", "live"), [], [], CONNECTED, ALL, 60)


def test_a_counter_rate_sums_per_worker_rates_and_survives_one_worker_restarting():
    the_pod = pod("a")
    rounds = [
        round_of(
            [the_pod],
            {"a": [reading(0, 0, at=t, connects=c0), reading(1, 0, at=t, connects=c1)]},
            at=t,
            number=n,
        )
        for n, (t, c0, c1) in enumerate([(100, 1000, 50), (110, 1100, 70), (120, 1200, 10)])
    ]
    value = pod_value(the_pod, rounds, CONNECT_RATE, ALL, 60)
    # Worker 0: 200 over 20 s = 10/s. Worker 1 restarted: +20, then reset to 10 → 30 over 20 s.
    assert value.reading.value == pytest.approx(10 + 1.5)


def test_a_rate_needs_two_scrapes_inside_the_window():
    the_pod = pod("a")
    rounds = [round_of([the_pod], {"a": [reading(0, 0, connects=5), reading(1, 0, connects=5)]})]
    value = pod_value(the_pod, rounds, CONNECT_RATE, ALL, 60)
    assert value.reading.value is None
    assert value.reading.reason == "worker 0: fewer than two scrapes in 60 s, no rate yet"


def test_a_rate_is_served_with_its_window():
    the_pod = pod("a")
    rounds = [
        round_of(
            [the_pod],
            {"a": [reading(0, 0, at=t, connects=t), reading(1, 0, at=t, connects=t)]},
            at=t,
            number=n,
        )
        for n, t in enumerate([100.0, 101.0])
    ]
    [value] = pod_values([the_pod], rounds, CONNECT_RATE, ALL, 30, "pods")
    assert (value.metric, value.value, value.window_seconds) == ("socket_io_connect", 2.0, 30)


class Poisoned(dict[str, dict[tuple[tuple[str, str], ...], float]]):
    """Samples whose reading raises: a stand-in for a bug some value provokes."""

    def get(self, *args, **kwargs):
        raise ZeroDivisionError("poisoned")


def poisoned(worker: int) -> WorkerReading:
    return WorkerReading(worker, 100.0, Poisoned())


def test_a_bug_in_one_pods_reading_leaves_only_that_pod_out_and_is_reported():
    pods = [pod("a"), pod("b")]
    rounds = [
        round_of(pods, {"a": [reading(0, 3), reading(1, 4)], "b": [poisoned(0), poisoned(1)]})
    ]
    reported: list[tuple[str, str]] = []

    def report(the_pod, error):
        reported.append((the_pod.name, type(error).__name__))

    value = pod_value(pods[1], rounds, CONNECTED, ALL, 60.0, report)
    assert (value.reading.value, value.reading.code) == (None, "internal_error")
    assert value.reading.reason == "internal error: ZeroDivisionError"
    served = pod_values(pods, rounds, CONNECTED, ALL, 60.0, "pods", report)
    assert [(v.described.name, v.value) for v in served] == [("a", 7)]
    # Once: a round's gauge values are made once, however many requests ask.
    assert reported == [("b", "ZeroDivisionError")]
    with pytest.raises(Unavailable, match="pod b: internal error: ZeroDivisionError"):
        object_value(Described("deployments.apps", "push", "live"), pods, rounds, CONNECTED, ALL,
                     60.0, report)  # fmt: skip


def test_a_value_that_is_no_count_never_leaves_the_pure_core():
    pods = [pod("a", workers=1)]
    # Past the parser's checks only by a bug: samples built by hand.
    rounds = [round_of(pods, {"a": [WorkerReading(0, 100.0, {"socket_io_connected": {(): -1.0}})]})]
    value = pod_value(pods[0], rounds, CONNECTED, ALL, 60.0)
    assert value.reading.code == "internal_error"
