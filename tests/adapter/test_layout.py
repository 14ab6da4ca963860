"""adapter.layout: samples kept as a layout and values read back as the dicts they came from."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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
    for name, series in samples.items():
        assert laid.total(name) == sum(series.values())
    assert laid.total("not there") is None and laid.get("not there") is None


def test_a_layout_is_one_object_for_every_reading_of_its_shape():
    layout = Layout((("a", ((), (("event", "x"),))), ("b", ((),))))
    first, second = LaidOut(layout, [1.0, 2.0, 3.0]), LaidOut(layout, [4.0, 5.0, 6.0])
    assert dict(second["a"]) == {(): 4.0, (("event", "x"),): 5.0}
    assert (first.total("a"), second.total("b")) == (3.0, 6.0)
    assert laid_out(second) is second, "already laid out: kept as it is"
