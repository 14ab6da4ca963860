"""Metric values as Kubernetes Quantity strings (pure).

The HPA reads `value` as a `resource.Quantity`. Whole numbers are served as plain integers
(`"8285"`, `"40000"`; Go's canonical form would say `"40k"`, which parses to the same value but
reads worse in `kubectl get --raw`), anything else in milli units (`"1500m"`), truncated
toward zero as `resource.NewMilliQuantity(int64(v * 1000))` in prometheus-adapter does.
"""

from __future__ import annotations

import math
import re

# The subset of the Quantity grammar we emit: optional sign, digits, optional "m".
QUANTITY = re.compile(r"[+-]?[0-9]+m?")


# Below this a whole float times 1000 is still exact, so the milli form is a multiple of 1000.
_EXACT_WHOLE = 2.0**43


def format_quantity(value: float) -> str:
    # A count, the usual value: one of ~1000 in an answer over every pod.
    if type(value) is float and value.is_integer() and -_EXACT_WHOLE < value < _EXACT_WHOLE:
        return str(int(value))
    return _milli_form(value)


def _milli_form(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{value} cannot be a Quantity")
    milli = math.trunc(round(value * 1000, 6))
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"


def parse_quantity(text: str) -> float:
    """The inverse of `format_quantity`, for tests and the controller."""
    if not QUANTITY.fullmatch(text):
        raise ValueError(f"not a Quantity this adapter serves: {text!r}")
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    return float(int(text))
