"""adapter.columns: a pod's value from the round's columns is exactly what
`aggregate.pod_reading` gives, and the columns say nothing where it would leave the pod out."""

from __future__ import annotations

from array import array
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.aggregate import WorkerReading, pod_reading
from adapter.answers import Round, pod_values
from adapter.catalog import CATALOG
from adapter.columns import Columns, pod_totals, spans_of, totals_of
from adapter.errors import NotFound
from adapter.packing import laid_out
from adapter.pods import Pod
from adapter.selectors import parse_selector
from pushserver.exposition import Combine

EVERYTHING = parse_selector(None)
FAMILIES = ("socket_io_connected", "pushscale_draining", "socket_io_events_received_total")

_value = st.floats(min_value=0, max_value=2**40, allow_nan=False) | st.integers(0, 10**6)
_series = st.dictionaries(
    st.sampled_from([(), (("event", "a"),), (("event", "b"),)]), _value, max_size=3
)
_samples = st.dictionaries(st.sampled_from(FAMILIES), _series, max_size=3)
_reading = st.one_of(
    st.tuples(st.just("ok"), _samples, st.floats(0, 2e9)),
    st.tuples(st.just("error"), st.sampled_from(["timeout", "malformed"]), st.floats(0, 2e9)),
)
_pods = st.lists(st.lists(_reading, min_size=1, max_size=4), min_size=1, max_size=5)


Drawn = list[
    list[tuple[str, Any, float]]
]  # per pod, per worker: ("ok", samples) or ("error", kind)


def round_of(pods: Drawn) -> tuple[tuple[Pod, ...], list[list[WorkerReading]], Columns]:
    listed = tuple(Pod("live", f"p{i}", {}, "10.0.0.1", 9100, len(w)) for i, w in enumerate(pods))
    readings = [
        [
            # Even workers as the scrape process reads them, odd ones as plain dicts.
            WorkerReading(index, at, laid_out(what) if index % 2 == 0 else what) if kind == "ok"
            else WorkerReading(index, at, error="failed", error_kind=what)
            for index, (kind, what, at) in enumerate(workers)
        ]
        for workers in pods
    ]  # fmt: skip
    flat = [reading for workers in readings for reading in workers]
    targets = [
        (pod.key, reading.worker)
        for pod, workers in zip(listed, readings, strict=True)
        for reading in workers
    ]
    columns = Columns(
        spans_of(targets), array("d", [r.scraped_at for r in flat]), totals_of(flat, FAMILIES)
    )
    return listed, readings, columns


@settings(max_examples=200, deadline=None)
@given(_pods, st.sampled_from(FAMILIES), st.sampled_from([Combine.SUM, Combine.MAX]))
def test_the_columns_answer_exactly_as_the_readings_do(pods, family, combine):
    listed, readings, columns = round_of(pods)
    every = pod_totals(columns, listed, family, combine)
    for pod, workers, fast in zip(listed, readings, every, strict=True):
        slow = pod_reading(pod.workers, workers, family, EVERYTHING, combine)
        if slow.value is None:
            assert fast is None
        else:
            assert fast is not None and (fast.value, fast.scraped_at) == (
                slow.value, slow.scraped_at,
            )  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(_pods)
def test_an_answer_is_the_same_with_and_without_columns(pods):
    listed, readings, columns = round_of(pods)
    by_pod = {pod.key: tuple(workers) for pod, workers in zip(listed, readings, strict=True)}
    metric = CATALOG["socket_io_connected"]

    def answer(round_: Round) -> object:
        try:
            return pod_values(listed, [round_], metric, EVERYTHING, 60.0, "pods")
        except NotFound as error:
            return str(error)

    plain = Round(1, 100.0, 0.1, listed, by_pod)
    with_columns = Round(1, 100.0, 0.1, listed, by_pod, columns)
    assert answer(with_columns) == answer(plain)


def test_a_pod_whose_targets_are_not_together_and_in_order_is_left_to_the_readings():
    a, b = ("live", "a"), ("live", "b")
    assert spans_of([(a, 0), (a, 1), (b, 0)]) == {a: (0, 2), b: (2, 1)}
    assert spans_of([(a, 0), (b, 0), (a, 1)]) == {b: (1, 1)}, "a is split"
    assert spans_of([(a, 1), (a, 0)]) == {}, "out of order"
    assert spans_of([(a, 0), (a, 0)]) == {}, "a worker twice"
