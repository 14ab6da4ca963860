"""adapter.aggregate: a pod is its workers' exact sum, or left out with the reason."""

from __future__ import annotations

import pytest

from adapter.aggregate import WorkerReading, pod_reading, wrong_worker
from adapter.selectors import parse_selector
from pushserver.exposition import Combine

ALL = parse_selector(None)


def worker(
    index: int,
    connected: float,
    at: float = 100.0,
    **extra: dict[tuple[tuple[str, str], ...], float],
) -> WorkerReading:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
        "socket_io_connected": {(): connected},
        "socket_io_events_received_total": {
            (("event", "joinByGameId"),): 10 * connected,
            (("event", "visibilityChange"),): connected,
        },
        **extra,
    }
    return WorkerReading(index, at, samples)


def test_the_value_is_the_sum_over_every_worker():
    readings = [worker(0, 10_000), worker(1, 9_000, at=99.5), worker(2, 11_000), worker(3, 10_500)]
    reading = pod_reading(4, readings, "socket_io_connected", ALL, Combine.SUM)
    assert reading.value == 40_500
    assert reading.scraped_at == 99.5, "as old as the oldest worker's scrape"
    assert reading.reason is None


@pytest.mark.parametrize(
    ("readings", "reason"),
    [
        ([worker(0, 1)], "worker 1 was not scraped"),
        (
            [worker(0, 1), WorkerReading(1, 100.0, error="timeout after 1.0 s")],
            "worker 1: timeout after 1.0 s",
        ),
        (
            [worker(0, 1), WorkerReading(1, 100.0, samples={"other": {(): 1}})],
            "worker 1 does not serve socket_io_connected",
        ),
        (
            [WorkerReading(0, 100.0, error="connection refused"), worker(1, 1)],
            "worker 0: connection refused",
        ),
        (
            [
                worker(0, 1),
                WorkerReading(
                    1, 100.0, error="the endpoint answers as worker 0", error_kind="wrong_worker"
                ),
            ],
            "worker 1: the endpoint answers as worker 0",
        ),
    ],
    ids=[
        "worker-missing",
        "worker-timed-out",
        "metric-missing",
        "first-worker-refused",
        "wrong-worker-behind-the-port",
    ],
)
def test_a_pod_with_an_incomplete_round_is_left_out_never_under_counted(readings, reason):
    reading = pod_reading(2, readings, "socket_io_connected", ALL, Combine.SUM)
    assert reading.value is None
    assert reading.reason == reason


def test_extra_workers_beyond_the_expected_count_are_not_added():
    readings = [worker(0, 5), worker(1, 5), worker(2, 1_000)]
    assert pod_reading(2, readings, "socket_io_connected", ALL, Combine.SUM).value == 10


def test_the_metric_label_selector_picks_series():
    readings = [worker(0, 3), worker(1, 4)]
    joins = parse_selector("event=joinByGameId")
    reading = pod_reading(2, readings, "socket_io_events_received_total", joins, Combine.SUM)
    assert reading.value == 70
    everything = pod_reading(2, readings, "socket_io_events_received_total", ALL, Combine.SUM)
    assert everything.value == 77


def test_max_and_ignore():
    readings = [worker(0, 0, pushscale_draining={(): 0}), worker(1, 0, pushscale_draining={(): 1})]
    assert pod_reading(2, readings, "pushscale_draining", ALL, Combine.MAX).value == 1
    ignored = pod_reading(2, readings, "pushscale_draining", ALL, Combine.IGNORE)
    assert ignored.value is None and "not combined" in (ignored.reason or "")


WORKER_0 = (("worker", "0"),)


@pytest.mark.parametrize(
    ("readings", "code"),
    [
        ([worker(0, 1)], "not_scraped"),
        ([worker(0, 1), WorkerReading(1, 100.0, error="t", error_kind="timeout")], "timeout"),
        ([worker(0, 1), WorkerReading(1, 100.0, error="nan", error_kind="not_finite")],
         "not_finite"),
        ([worker(0, 1), WorkerReading(1, 100.0, samples={"other": {(): 1}})], "metric_missing"),
        # The scraper names every error; one without a name is a bug of ours.
        ([worker(0, 1), WorkerReading(1, 100.0, error="?")], "internal_error"),
    ],
    ids=["not-scraped", "timeout", "not-finite", "metric-missing", "no-kind"],
)  # fmt: skip
def test_every_left_out_pod_carries_a_reason_code(readings, code):
    reading = pod_reading(2, readings, "socket_io_connected", ALL, Combine.SUM)
    assert (reading.value, reading.code) == (None, code)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({WORKER_0: 1.0}, "the endpoint answers as worker 0"),
        ({(("worker", "1"),): 1.0}, None),
        ({(("version", "0.1.0"),): 1.0}, None),  # says nothing about its index
        (None, None),  # not a push server's exposition: nothing to check
    ],
    ids=["another-worker", "itself", "no-worker-label", "no-info"],
)
def test_an_endpoint_that_says_it_is_another_worker_is_caught(info, expected):
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
        "socket_io_connected": {(): 5.0}
    }
    if info is not None:
        samples["pushscale_worker_info"] = info
    assert wrong_worker(samples, 1) == expected
