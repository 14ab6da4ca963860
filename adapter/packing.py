"""One round's readings packed for the trip from the scrape process to the serving one (pure).

`adapter.scrapeproc` reads and parses every worker in a process of its own and sends each
round's `WorkerReading`s to the serving process in chunks. A worker writes the same series every
round, only the values change, so a reading travels as its values in the order of a *layout*
(its families and their label sets), and each layout travels once, the first time it is met,
then by number. A chunk's values travel as one array of doubles, and the serving side keeps
each reading's slice of it as it came (`adapter.layout.LaidOut`): unpickled as a list per
reading, a chunk of 256 readings of 45 values cost the serving loop twice as long (0.44 against
0.22 ms, timeit), and each list was one more object for its collector to walk.

The two sides' tables stay in step because chunks are unpacked in the order they were packed;
the packer starts its table again (and tells the unpacker, `reset`) when endpoints' new label
sets would grow it past `max_layouts`.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from adapter.aggregate import REASONS, Reason, Samples, WorkerReading
from adapter.layout import Families, LaidOut, Layout

# (scraped_at, layout number, how many values) for samples; (scraped_at, error, error_kind)
# for none.
Entry = tuple[float, int, int] | tuple[float, str, str]
# (start the layout table again, the families of layouts new in this chunk, one entry per
# reading, every reading's values one after the other as doubles)
Chunk = tuple[bool, tuple[Families, ...], tuple[Entry, ...], bytes]

# Each endpoint has a layout of its own (its worker_info labels name its pod and worker), so the
# scrape process keeps room for twice its targets, and at least this many. Endpoints inventing
# label sets every round cost a table restart now and then, not memory.
MIN_LAYOUTS = 4096

_KINDS = frozenset(REASONS)


def laid_out(samples: Samples) -> LaidOut:
    """`samples` as a layout and values (as they are, if they already are)."""
    if isinstance(samples, LaidOut):
        return samples
    families = tuple((name, tuple(series)) for name, series in samples.items())
    values = [value for series in samples.values() for value in series.values()]
    return LaidOut(Layout(families), values)


class Packer:
    """The scrape process's side: which layouts the other side already has."""

    def __init__(self, max_layouts: int = MIN_LAYOUTS) -> None:
        self._numbers: dict[Layout, int] = {}
        self.max_layouts = max_layouts

    def pack(self, readings: Sequence[WorkerReading]) -> Chunk:
        # Each reading adds at most one layout: start again before a chunk could overflow.
        reset = len(self._numbers) + len(readings) > self.max_layouts
        if reset:
            self._numbers.clear()
        new: list[Families] = []
        entries: list[Entry] = []
        values = array("d")
        for reading in readings:
            if reading.samples is None:
                error = reading.error or "no samples"
                entries.append((reading.scraped_at, error, reading.error_kind or "internal_error"))
                continue
            samples = laid_out(reading.samples)
            number = self._numbers.get(samples.layout)
            if number is None:
                number = self._numbers[samples.layout] = len(self._numbers)
                new.append(samples.layout.families)
            entries.append((reading.scraped_at, number, len(samples.counts)))
            values.extend(samples.counts)
        return reset, tuple(new), tuple(entries), values.tobytes()


class Unpacker:
    """The serving process's side: the layouts sent so far, by number."""

    def __init__(self) -> None:
        self._layouts: list[Layout] = []

    def unpack(self, chunk: Chunk, workers: Sequence[int]) -> list[WorkerReading]:
        """The readings of `chunk`, one per worker index in `workers` (the targets' order)."""
        reset, new, entries, packed = chunk
        if len(entries) != len(workers):
            raise ValueError(f"a chunk of {len(entries)} readings for {len(workers)} targets")
        if reset:
            self._layouts.clear()
        self._layouts.extend(Layout(families) for families in new)
        values = array("d")
        values.frombytes(packed)
        readings: list[WorkerReading] = []
        first = 0
        for worker, (scraped_at, what, detail) in zip(workers, entries, strict=True):
            if isinstance(what, int):
                assert isinstance(detail, int)
                samples = LaidOut(self._layouts[what], values[first : first + detail])
                first += detail
                readings.append(WorkerReading(worker, scraped_at, samples))
            else:
                assert isinstance(detail, str)
                kind: Reason = detail if detail in _KINDS else "internal_error"
                readings.append(WorkerReading(worker, scraped_at, error=what, error_kind=kind))
        if first != len(values):
            raise ValueError(f"a chunk of {len(values)} values for readings of {first}")
        return readings
