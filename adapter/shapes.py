"""The families the adapter reads from one worker's body, cheaply when it has the last one's
shape (pure).

`adapter.scrape` calls `read_served(text, shape)` on every body with the `Shape` of the same
endpoint's last body. A worker writes the same lines every round and only the values at their
ends change, so the next body is read by comparing it with the shape line by line: a comment
or an unchanged line is one string comparison, a sample line a prefix test and a check of
its value: against the plain form's value rule for a family nobody reads; for one the adapter
reads (`adapter.catalog.READ_TYPES`), a check of its characters and one `float`. For a
worker's body asked for the read families (27 series, 3.7 KB) that is ~37 µs, where the strict
reader and making the shape take ~380 µs.

The shape never decides anything the strict reader (`adapter.samples.parse_samples`) would
decide otherwise: a body whose lines differ from the shape in anything but a value, or one of
whose read values is not a count (NaN, ±Inf, negative, past 2^53), goes to the strict reader,
which answers or refuses with its reason, and whose answer gives the next shape. So a body read
through a shape gives exactly what the strict reader gives it, restricted to the read families.
Families nobody reads are never turned into numbers on the shape's path.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from adapter.aggregate import Samples
from adapter.catalog import READ_TYPES
from adapter.layout import LaidOut, Layout
from adapter.samples import (
    LABEL_PAIR,
    MAX_EXACT,
    MAX_PLAIN_LINE_CHARS,
    PLAIN_SAMPLE,
    VALUE_PATTERN,
    Labels,
    parse_samples,
)

# What a value is on the shape's path: any value the plain form allows for a family nobody
# reads. A read one may hold only these characters: then `float` accepts nothing the plain
# form's value rule refuses (no underscore, Inf, NaN or other whitespace), and what it refuses
# ("1e", "1.2.3") goes to the strict reader. A character class is a tenth of the cost of the
# value rule itself, the costliest step of a body read through its shape.
_VALUES = re.compile(rf"(?:(?:{VALUE_PATTERN})[ \t]*\n)*(?:{VALUE_PATTERN})[ \t]*")
_COUNT_CHARACTERS = re.compile(r"[0-9.eE+\- \t\n]*")

# The lines of every shape, shared: thousands of endpoints write the same HELP, TYPE and sample
# prefixes, so 4000 shapes hold one copy of each. Bounded, so endpoints inventing new lines
# cost only their own copies.
_LINES: dict[str, str] = {}
_LINES_MAX = 16_384

Pick = Callable[[Sequence[str]], tuple[str, ...]]
# `line[cut]`, typed for `map`.
_cut: Callable[[str, slice], str] = operator.getitem


def _picker(indices: Sequence[int]) -> Pick:
    """`lines -> tuple(lines[i] for i in indices)`, in C (`operator.itemgetter`)."""
    if not indices:
        return lambda _: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda lines: (lines[only],)
    return operator.itemgetter(*indices)


@dataclass(frozen=True, eq=False)
class Shape:
    """One plain body with its values left out. Comments and blank lines are kept whole; a
    sample line is kept as the prefix before its value. Read values are grouped by family, in
    the order of `layout`."""

    line_count: int
    static: Pick
    static_lines: tuple[str, ...]
    unread: Pick
    unread_prefixes: tuple[str, ...]
    unread_cuts: tuple[slice, ...]  # each line's value: what follows its prefix
    read: Pick
    read_prefixes: tuple[str, ...]
    read_cuts: tuple[slice, ...]
    # The read families and their label sets, in the order of the read values.
    layout: Layout


def read_served(
    text: str,
    shape: Shape | None,
    read_types: Mapping[str, str] = READ_TYPES,
    strict: Callable[[str], Samples] | None = None,
) -> tuple[Samples, Shape | None]:
    """The samples of the read families in `text` and the shape to read the next body with
    (None for a body not in the plain form). Raises what `strict` (the strict reader,
    `parse_samples` for `read_types`) raises."""
    if shape is not None:
        samples = _through(text, shape)
        if samples is not None:
            return samples, shape
    samples = parse_samples(text, read_types) if strict is None else strict(text)
    read = {name: series for name, series in samples.items() if name in read_types}
    return read, shape_of(text, read_types)


def _through(text: str, shape: Shape) -> Samples | None:
    """`text` read through `shape`, or None if it does not fit it or a value is not a count.
    Every step is one C call over all the lines (itemgetter, map, one regular expression): the
    per-line Python of a loop cost as much as the strict reader's matching."""
    lines = text.split("\n")
    if len(lines) != shape.line_count or shape.static(lines) != shape.static_lines:
        return None
    unread, read = shape.unread(lines), shape.read(lines)
    if not (
        all(map(str.startswith, unread, shape.unread_prefixes))
        and all(map(str.startswith, read, shape.read_prefixes))
    ):
        return None
    # A sample line that long leaves the strict reader's fast path: let it say what it is.
    if len(text) > MAX_PLAIN_LINE_CHARS and (
        max(map(len, unread), default=0) > MAX_PLAIN_LINE_CHARS
        or max(map(len, read), default=0) > MAX_PLAIN_LINE_CHARS
    ):
        return None
    unread_values = "\n".join(map(_cut, unread, shape.unread_cuts))
    read_values = list(map(_cut, read, shape.read_cuts))
    if (unread and _VALUES.fullmatch(unread_values) is None) or (
        read and _COUNT_CHARACTERS.fullmatch("\n".join(read_values)) is None
    ):
        return None
    try:
        counts = list(map(float, read_values))
    except ValueError:
        return None
    # Negative, or past 2^53 or a float (inf): the strict reader says which.
    if counts and not (min(counts) >= 0 and max(counts) <= MAX_EXACT):
        return None
    # No dict per family: a third of a body's cost at 4000 endpoints, for families that are
    # mostly never asked for (adapter.layout).
    return LaidOut(shape.layout, counts)


def shape_of(text: str, read_types: Mapping[str, str] = READ_TYPES) -> Shape | None:
    """The shape of a body the strict reader accepted; None if it is not in the plain form
    (the strict reader's fast path: every line a comment, blank, or a plain sample)."""
    lines = text.split("\n")
    static: list[int] = []
    unread: list[int] = []
    unread_prefixes: list[str] = []
    by_family: dict[str, list[tuple[int, str, Labels]]] = {}
    for index, line in enumerate(lines):
        if not line or line[0] == "#":
            static.append(index)
            continue
        match = PLAIN_SAMPLE.fullmatch(line) if len(line) <= MAX_PLAIN_LINE_CHARS else None
        if match is None:
            return None
        prefix = _shared(line[: match.start(3)])
        if match[1] not in read_types:
            unread.append(index)
            unread_prefixes.append(prefix)
            continue
        pairs = LABEL_PAIR.findall(match[2] or "")
        if len(dict(pairs)) != len(pairs):
            return None  # a label named twice: not the plain form
        # Keyed as the strict reader keys them: the pairs sorted.
        by_family.setdefault(match[1], []).append((index, prefix, tuple(sorted(pairs))))
    read: list[int] = []
    read_prefixes: list[str] = []
    families: list[tuple[str, tuple[Labels, ...]]] = []
    for name, entries in by_family.items():
        read.extend(index for index, _, _ in entries)
        read_prefixes.extend(prefix for _, prefix, _ in entries)
        families.append((name, tuple(labels for _, _, labels in entries)))
    return Shape(
        line_count=len(lines),
        static=_picker(static),
        static_lines=tuple(_shared(lines[index]) for index in static),
        unread=_picker(unread),
        unread_prefixes=tuple(unread_prefixes),
        unread_cuts=tuple(slice(len(prefix), None) for prefix in unread_prefixes),
        read=_picker(read),
        read_prefixes=tuple(read_prefixes),
        read_cuts=tuple(slice(len(prefix), None) for prefix in read_prefixes),
        layout=Layout(tuple(families)),
    )


def _shared(line: str) -> str:
    if len(_LINES) < _LINES_MAX:
        return _LINES.setdefault(line, line)
    return _LINES.get(line, line)
