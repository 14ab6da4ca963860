"""adapter.quantity: values as the Quantity strings the HPA parses."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.quantity import QUANTITY, _milli_form, format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (8285, "8285"),
        (8285.0, "8285"),
        (40000, "40000"),
        (0, "0"),
        (1.5, "1500m"),
        (0.001, "1m"),
        (0.0004, "0"),
        (2.9999, "2999m"),
        (123.456, "123456m"),
        (-1.5, "-1500m"),
        (-2.0, "-2"),
        (1.6e6, "1600000"),
    ],
    ids=str,
)
def test_format(value, text):
    assert format_quantity(value) == text
    assert QUANTITY.fullmatch(text)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, 8285.0, 0.125, -3.25])
def test_round_trip(value):
    assert parse_quantity(format_quantity(value)) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_not_a_number_is_refused(value):
    with pytest.raises(ValueError):
        format_quantity(value)


def test_parse_refuses_other_forms():
    with pytest.raises(ValueError):
        parse_quantity("40k")


@given(
    st.one_of(
        st.floats(-1e18, 1e18),
        st.integers(-(2**55), 2**55).map(float),
        st.sampled_from([2.0**43 - 1, 2.0**43, -(2.0**43), 2.0**53, -0.0]),
    )
)
def test_a_whole_value_is_written_as_the_milli_form_would_write_it(value):
    assert format_quantity(value) == _milli_form(value)
