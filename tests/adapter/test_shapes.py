"""adapter.shapes: a body read through the last body's shape answers exactly what the strict
reader answers, restricted to the read families, and refuses what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.catalog import READ_TYPES
from adapter.samples import UntrustedScrape, parse_samples
from adapter.shapes import _through, read_served, shape_of
from tests.adapter.test_parser_properties import PIECES, PROPERTY, bodies, render
from tests.adapter.test_samples import _exposition


def strict(text: str):
    """What the strict reader says of `text`, as read_served must: the read families, or the
    refusal's code and message."""
    try:
        samples = parse_samples(text)
    except UntrustedScrape as refused:
        return ("refused", refused.kind, str(refused))
    return {name: series for name, series in samples.items() if name in READ_TYPES}


def through_shape(text: str, shape):
    try:
        return read_served(text, shape)[0]
    except UntrustedScrape as refused:
        return ("refused", refused.kind, str(refused))


def test_a_workers_next_body_is_read_through_the_shape_of_its_last():
    first = _exposition()
    shape = shape_of(first)
    assert shape is not None
    after = first.replace("socket_io_connected 12345.0", "socket_io_connected 12346.0")
    assert after != first
    samples = _through(after, shape)
    assert samples is not None, "only a value changed: the shape reads it"
    assert samples == strict(after)
    assert samples["socket_io_connected"] == {(): 12346.0}
    assert "process_resident_memory_bytes" not in samples, "families nobody reads are skipped"
    assert read_served(after, shape)[1] is shape


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (("socket_io_connected 12345.0", "socket_io_connected NaN"), "not_finite"),
        (("socket_io_connected 12345.0", "socket_io_connected +Inf"), "not_finite"),
        (("socket_io_connected 12345.0", "socket_io_connected -1"), "negative"),
        (("socket_io_connected 12345.0", "socket_io_connected 1e300"), "out_of_range"),
        (("socket_io_connected 12345.0", f"socket_io_connected {2**53 + 2}"), "out_of_range"),
        (("socket_io_connected 12345.0", "socket_io_connected 1\nsocket_io_connected 2"),
         "duplicate_series"),
        (("# TYPE socket_io_connected gauge", "# TYPE socket_io_connected counter"),
         "wrong_type"),
        (("socket_io_connected 12345.0", "socket_io_connected twelve"), "malformed"),
        (("\nprocess_max_fds ", "\nprocess_max_fds{ "), "malformed"),
    ],
    ids=["nan", "inf", "negative", "1e300", "past-2^53", "duplicate", "wrong-type",
         "not-a-number", "broken-unread-line"],
)  # fmt: skip
def test_what_the_strict_reader_refuses_is_refused_through_a_shape(change, kind):
    first = _exposition()
    shape = shape_of(first)
    old, new = change
    after = first.replace(old, new, 1)
    assert after != first
    with pytest.raises(UntrustedScrape) as refused:
        read_served(after, shape)
    assert refused.value.kind == kind
    assert through_shape(after, shape) == strict(after)


def test_a_body_not_in_the_plain_form_has_no_shape():
    assert shape_of('m{a="x\\"y"} 1\n') is None
    assert shape_of("m 1 1700000000000\n") is None
    samples, shape = read_served('socket_io_connected{a="x\\"y"} 1\n', None)
    assert samples == {"socket_io_connected": {(("a", 'x"y'),): 1.0}}
    assert shape is None


def _values_changed(model, data):
    """The same series, other values (counts, and now and then something that is not one)."""
    values = st.integers(0, 2**53 + 4).map(float) | st.sampled_from(
        [float("nan"), float("inf"), -1.0, -0.0, 1e300, 0.5]
    )
    return {
        name: {labels: data.draw(values) for labels in series} for name, series in model.items()
    }


@PROPERTY
@given(bodies(), st.data())
def test_a_body_with_new_values_reads_as_the_strict_reader_reads_it(model, data):
    first = render(model)
    shape = shape_of(first)
    assert shape is not None, "a rendered body is in the plain form"
    after = render(_values_changed(model, data))
    assert through_shape(after, shape) == strict(after)


@PROPERTY
@given(bodies(), st.lists(PIECES, max_size=8).map("".join), st.integers(0, 10_000))
def test_any_edit_of_a_body_reads_as_the_strict_reader_reads_it(model, piece, where):
    first = render(model)
    shape = shape_of(first)
    at = where % (len(first) + 1)
    edited = first[:at] + piece + first[at:]
    assert through_shape(edited, shape) == strict(edited)
    cut = first[:at] + first[at + len(piece) :]
    assert through_shape(cut, shape) == strict(cut)


# What a read value may be written as: the number alphabet, and what `float` accepts beyond the
# plain form's value rule (underscores, other whitespace, other digits, words).
VALUE_TEXT = st.text(
    st.sampled_from("0123456789.eE+- \t_\x0b\u00a0\u0663infINFtyaN"), min_size=0, max_size=8
) | st.sampled_from(
    [
        "1_0",
        "infinity",
        "nan",
        " 7",
        "7 \t",
        "\u0663",
        "-0",
        "+.5",
        "5.",
        "1e",
        "1e-5",
        "-1",
        "-2.5e3",
        "9007199254740993",
        "1e400",
    ]
)


@PROPERTY
@given(bodies(), st.integers(0, 100), VALUE_TEXT)
def test_a_read_value_written_any_way_reads_as_the_strict_reader_reads_it(model, which, value):
    first = render(model)
    shape = shape_of(first)
    assert shape is not None
    lines = first.split("\n")
    read = [
        index
        for index, line in enumerate(lines)
        if line.partition("{")[0].partition(" ")[0] in READ_TYPES and not line.startswith("#")
    ]
    if read:
        index = read[which % len(read)]
        lines[index] = lines[index][: lines[index].rindex(" ") + 1] + value
    after = "\n".join(lines)
    assert through_shape(after, shape) == strict(after)
