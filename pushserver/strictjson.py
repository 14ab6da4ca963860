"""JSON from outside, decoded only if a JavaScript client could take it back (pure).

Clients' socket.io packets (`pushserver.packets`) and `POST /publish` bodies
(`pushserver.payloads`) go through `loads`. Python's `json.loads` alone would accept what a
browser's `JSON.parse` cannot (`NaN`, `Infinity`, numbers past the float range, which it would
turn into `inf`), and recurses once per nesting level, so a 16 KiB packet of `[` raises
`RecursionError`. Here the nesting depth is measured before the parser runs, and every number
is checked as it is parsed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deep enough for any payload a person designs (a match state object is 4-6 levels), shallow
# enough that no parser or serializer on the way to a client recurses far.
MAX_DEPTH = 32

# A JSON string literal: what is inside one cannot open or close a container.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
# Past this many digits an integer is outside the float range: JavaScript would read Infinity.
_MAX_INT_DIGITS = 309


class JsonRejected(ValueError):
    """Text that is not JSON a JavaScript client can parse; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def depth_of(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (0 for a bare value)."""
    openers = text.count("[") + text.count("{")
    if openers <= 1:  # the common small packet: nothing to scan
        return openers
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _constant(name: str) -> Any:
    raise JsonRejected("not_finite", f"{name} is not JSON: JavaScript cannot parse it")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRejected("not_finite", "a number is too large: JavaScript would read Infinity")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise JsonRejected("not_finite", "a number is too large: JavaScript would read Infinity")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise JsonRejected(
            "not_finite", "a number is too large: JavaScript would read Infinity"
        ) from None
    return value


# One decoder for every call: `json.loads` with hooks builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Decode one JSON document, or raise `JsonRejected` (codes: `bad_json`, `too_deep`,
    `not_finite`); no other exception comes out, whatever the input."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRejected("bad_json", "not valid JSON: not UTF-8 text") from None
    # No deeper than it has openers: only a text with more than the limit needs the scan.
    openers = text.count("[") + text.count("{")
    if openers > max_depth and (depth := depth_of(text)) > max_depth:
        raise JsonRejected("too_deep", f"nested {depth} levels deep; the limit is {max_depth}")
    try:
        return _DECODER.decode(text)
    except JsonRejected:
        raise
    except json.JSONDecodeError as exc:
        # The message names a position, never the input itself.
        raise JsonRejected("bad_json", f"not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise JsonRejected("bad_json", f"not valid JSON: {type(exc).__name__}") from None
