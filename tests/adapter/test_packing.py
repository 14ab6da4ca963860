"""adapter.packing: a round's readings arrive in the serving process exactly as they were read,
whatever their samples, their errors and the order of the chunks' layouts."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.aggregate import REASONS, WorkerReading
from adapter.layout import LaidOut, Layout
from adapter.packing import Packer, Unpacker

_names = st.sampled_from(["socket_io_connected", "pushscale_worker_info", "a_total", "b"])
_labels = st.lists(
    st.tuples(st.sampled_from(["event", "worker", "reason"]), st.text(max_size=3)),
    max_size=2, unique_by=lambda pair: pair[0],
).map(lambda pairs: tuple(sorted(pairs)))  # fmt: skip
_values = st.floats(min_value=0, max_value=2**53, allow_nan=False)
_samples = st.dictionaries(_names, st.dictionaries(_labels, _values, max_size=3), max_size=3)
_error = st.builds(
    lambda error, kind: WorkerReading(0, 1.5, error=error, error_kind=kind),
    st.text(min_size=1, max_size=10), st.sampled_from(REASONS),
)  # fmt: skip
_reading = st.one_of(
    st.builds(lambda samples, at: WorkerReading(0, at, samples), _samples,
              st.floats(min_value=0, max_value=2e9)),
    _error,
)  # fmt: skip


def as_plain(reading: WorkerReading) -> tuple[object, ...]:
    samples = reading.samples
    plain = None if samples is None else {name: dict(samples[name]) for name in samples}
    return (reading.worker, reading.scraped_at, plain, reading.error, reading.error_kind)


def travel(chunks: list[list[WorkerReading]], max_layouts: int) -> list[list[WorkerReading]]:
    packer, unpacker = Packer(max_layouts), Unpacker()
    arrived = []
    for chunk in chunks:
        # Through pickle, as over the socket: nothing may rely on shared objects.
        packed = pickle.loads(pickle.dumps(packer.pack(chunk)))
        arrived.append(unpacker.unpack(packed, [r.worker for r in chunk]))
    return arrived


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_reading, max_size=6), max_size=6), st.integers(min_value=6, max_value=20))
def test_readings_arrive_exactly_as_read(chunks, max_layouts):
    arrived = travel(chunks, max_layouts)
    assert [[as_plain(r) for r in chunk] for chunk in arrived] == [
        [as_plain(r) for r in chunk] for chunk in chunks
    ]


def test_a_layout_travels_once_and_a_full_table_starts_again():
    # As an endpoint's readings come through its shape: one layout, new values each round.
    layout = Layout((("socket_io_connected", ((),)), ("x", ((("worker", "0"),),))))

    def reading(connected: float) -> WorkerReading:
        return WorkerReading(0, 10.0, LaidOut(layout, [connected, 1.0]))

    packer = Packer(max_layouts=4)
    first = packer.pack([reading(5), reading(6)])
    again = packer.pack([reading(7)])
    assert (first[0], first[1]) == (False, (layout.families,)), "sent once"
    assert (again[0], again[1]) == (False, ()), "named by number the second time"
    assert len(pickle.dumps(again)) < len(pickle.dumps(first)) / 2
    # Readings of the strict reader (plain dicts) bring layouts of their own each time: the
    # table starts again instead of growing.
    grown = [packer.pack([WorkerReading(0, 1.0, {"b": {(): float(n)}})]) for n in range(6)]
    assert [reset for reset, _, _, _ in grown].count(True) >= 1
    assert len(packer._numbers) <= 4


def test_an_unknown_error_kind_arrives_as_internal_error():
    packer, unpacker = Packer(), Unpacker()
    chunk = packer.pack([WorkerReading(0, 1.0, error="?", error_kind=None)])
    (reading,) = unpacker.unpack(chunk, [0])
    assert (reading.error, reading.error_kind) == ("?", "internal_error")
    forged = (False, (), ((1.0, "odd", "not_a_reason"),), b"")
    assert unpacker.unpack(forged, [3])[0].error_kind == "internal_error"


def test_a_chunk_for_another_number_of_targets_is_refused():
    chunk = Packer().pack([WorkerReading(0, 1.0, error="e", error_kind="timeout")])
    with pytest.raises(ValueError, match="a chunk of 1 readings for 2 targets"):
        Unpacker().unpack(chunk, [0, 1])


def test_a_chunk_whose_values_do_not_add_up_is_refused():
    layout = Layout((("socket_io_connected", ((),)),))
    reset, new, entries, values = Packer().pack([WorkerReading(0, 1.0, LaidOut(layout, [3.0]))])
    with pytest.raises(ValueError, match="a chunk of 2 values for readings of 1"):
        Unpacker().unpack((reset, new, entries, values * 2), [0])
