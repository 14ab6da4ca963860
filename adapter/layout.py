"""A reading's samples as a layout and its values (pure).

A worker writes the same series every round; only the values change. So a body read through
its shape (`adapter.shapes`) is kept as a `LaidOut`: the `Layout` (which families, which label
sets, in order), shared by the endpoint's readings while its series stay the same, and the
values in that order.
No dict is made per family until something asks for one, and most families of most rounds are
never asked for: the scrape process sends the values as they are (`adapter.packing`), and the
HPA's usual request reads the round's columns (`adapter.columns`), not the readings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

Labels = tuple[tuple[str, str], ...]
# Each family's name and label sets, in order.
Families = tuple[tuple[str, tuple[Labels, ...]], ...]


class Layout:
    """The families and label sets of a reading; `index`: a family's label sets and its
    values' slice. One per shape (so one per endpoint while its series stay the same), and
    compared by identity."""

    __slots__ = ("_slices", "families", "index")

    def __init__(self, families: Families) -> None:
        self.families = families
        index: dict[str, tuple[tuple[Labels, ...], int, int]] = {}
        first = 0
        for name, labels in families:
            index[name] = (labels, first, first + len(labels))
            first += len(labels)
        self.index: Mapping[str, tuple[tuple[Labels, ...], int, int]] = index
        self._slices: dict[tuple[str, ...], tuple[slice | None, ...]] = {}

    def slices(self, names: tuple[str, ...]) -> tuple[slice | None, ...]:
        """Where each family's values lie (None for one it does not have), found once per
        layout: the scrape process asks every reading of every round for the same families."""
        found = self._slices.get(names)
        if found is None:
            spans = (self.index.get(name) for name in names)
            found = tuple(None if span is None else slice(span[1], span[2]) for span in spans)
            self._slices[names] = found
        return found


class LaidOut(Mapping[str, Mapping[Labels, float]]):
    """A reading's samples: its layout and its values; a family's series are made when asked."""

    __slots__ = ("counts", "layout")

    def __init__(self, layout: Layout, counts: Sequence[float]) -> None:
        self.layout = layout
        self.counts = counts  # every family's values, in the layout's order

    def __getitem__(self, name: str) -> Mapping[Labels, float]:
        labels, first, stop = self.layout.index[name]
        return dict(zip(labels, self.counts[first:stop], strict=True))

    def __iter__(self) -> Iterator[str]:
        return iter(self.layout.index)

    def __len__(self) -> int:
        return len(self.layout.index)
