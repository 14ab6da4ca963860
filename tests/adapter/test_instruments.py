"""adapter.instruments: the value-age histogram taken with counts exposes what prometheus_client's
own `Histogram` exposes when given each value one at a time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from adapter.aggregate import WorkerReading
from adapter.answers import Round
from adapter.instruments import Ages, Instruments
from adapter.pods import Pod

NAME = "pushscale_adapter_value_age_seconds"
BOUNDS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# Bounds themselves are the edge cases: a value equal to a bound belongs to that bucket.
_age = st.sampled_from(BOUNDS) | st.floats(0, 100, allow_nan=False) | st.just(0.0)


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(NAME) and "_created" not in line]


@given(st.lists(st.tuples(_age, st.integers(1, 50)), max_size=20))
def test_ages_with_counts_expose_what_a_histogram_of_each_value_does(observations):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    ages = Ages(NAME, "doc", BOUNDS)
    ours.register(ages)
    histogram = Histogram(NAME, "doc", buckets=BOUNDS, registry=theirs)
    for seconds, count in observations:
        ages.observe(seconds, count)
        for _ in range(count):
            histogram.observe(seconds)
    mine, reference = _lines(ours), _lines(theirs)
    # The sums may differ in the last bits (seconds * count against count additions).
    assert [line for line in mine if "_sum" not in line] == [
        line for line in reference if "_sum" not in line
    ]
    [my_sum] = [float(line.split()[-1]) for line in mine if "_sum" in line]
    [their_sum] = [float(line.split()[-1]) for line in reference if "_sum" in line]
    assert abs(my_sum - their_sum) <= 1e-9 * max(1.0, their_sum)


def test_an_age_past_the_last_bound_counts_only_in_inf():
    registry = CollectorRegistry()
    ages = Ages(NAME, "doc", BOUNDS)
    registry.register(ages)
    ages.observe(0.3, 1000)
    ages.observe(31.0)
    lines = _lines(registry)
    assert f'{NAME}_bucket{{le="0.25"}} 0.0' in lines
    assert f'{NAME}_bucket{{le="0.5"}} 1000.0' in lines
    assert f'{NAME}_bucket{{le="30.0"}} 1000.0' in lines
    assert f'{NAME}_bucket{{le="+Inf"}} 1001.0' in lines
    assert f"{NAME}_count 1001.0" in lines


def test_a_rounds_failed_reads_are_counted_by_reason_and_its_pods_served_or_left_out():
    pods = (Pod("live", "a", {}, "127.0.0.1", 9000, 3), Pod("live", "b", {}, "127.0.0.1", 9010, 2))
    readings = {
        ("live", "a"): (
            WorkerReading(0, 1.0, error="timeout after 1 s", error_kind="timeout"),
            WorkerReading(1, 1.0, error="timeout after 1 s", error_kind="timeout"),
            WorkerReading(2, 1.0, error="refused", error_kind="refused"),
        ),
        ("live", "b"): (
            WorkerReading(0, 1.0, {"socket_io_connected": {(): 3.0}}),
            WorkerReading(1, 1.0, {"socket_io_connected": {(): 4.0}}),
        ),
    }
    instruments = Instruments()
    for _ in range(2):
        instruments.observe_round(Round(1, 1.0, 0.1, pods, readings))
    registry = instruments.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("pushscale_adapter_scrape_errors_total", reason="timeout") == 4
    assert value("pushscale_adapter_scrape_errors_total", reason="refused") == 2
    assert value("pushscale_adapter_scrape_targets") == 5
    assert value("pushscale_adapter_pods", state="served") == 1
    assert value("pushscale_adapter_pods", state="left_out") == 1
