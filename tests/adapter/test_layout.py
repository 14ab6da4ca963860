"""adapter.layout: samples kept as a layout and values read back as the dicts they came from."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.aggregate import WorkerReading
from adapter.columns import totals_of
from adapter.layout import LaidOut, Layout
from adapter.packing import laid_out

_labels = st.lists(
    st.tuples(st.sampled_from(["event", "worker"]), st.text(max_size=2)),
    max_size=2, unique_by=lambda pair: pair[0],
).map(lambda pairs: tuple(sorted(pairs)))  # fmt: skip
_samples = st.dictionaries(
    st.text(min_size=1, max_size=4),
    st.dictionaries(_labels, st.floats(0, 2**53, allow_nan=False), max_size=3),
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(_samples)
def test_laid_out_samples_read_as_the_dicts_they_were(samples):
    laid = laid_out(samples)
    assert isinstance(laid, LaidOut)
    assert laid == samples and list(laid) == list(samples) and len(laid) == len(samples)
    assert laid.get("not there") is None
    # The columns' totals read the values by the layout's slices.
    totals = totals_of([WorkerReading(0, 0.0, laid)], (*samples, "not there"))
    for name, series in samples.items():
        assert totals[name][0] == sum(series.values())
    assert math.isnan(totals["not there"][0])


def test_a_layout_is_one_object_for_every_reading_of_its_shape():
    layout = Layout((("a", ((), (("event", "x"),))), ("b", ((),))))
    first, second = LaidOut(layout, [1.0, 2.0, 3.0]), LaidOut(layout, [4.0, 5.0, 6.0])
    assert dict(second["a"]) == {(): 4.0, (("event", "x"),): 5.0}
    totals = totals_of([WorkerReading(0, 0.0, first), WorkerReading(1, 0.0, second)], ("a", "b"))
    assert (list(totals["a"]), list(totals["b"])) == ([3.0, 9.0], [3.0, 6.0])
    assert layout.slices(("b", "c")) is layout.slices(("b", "c")), "found once per layout"
    assert laid_out(second) is second, "already laid out: kept as it is"
