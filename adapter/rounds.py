"""Scrape rounds: one shared, fresh reading of every worker, and the recent ones for rates.

`adapter.server` runs `Rounds.run()`, which reads every discovered pod's workers once per
interval through `adapter.scrape.Scraper`. API requests call `Rounds.fresh()`: it answers from
the latest round while that round is younger than `max_age_seconds`, else waits for the round in
flight, or starts one; never one round per request, however many arrive together. Rounds
younger than the rate window are kept for `adapter.answers`' counter rates.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from adapter.aggregate import WorkerReading
from adapter.answers import Round
from adapter.columns import Columns, PodKey, spans_of
from adapter.discovery import Discovery
from adapter.errors import Unavailable
from adapter.pods import Pod
from adapter.scrape import Target
from adapter.scrapeproc import Scraped
from pushkit.logs import LogLimiter

log = logging.getLogger("pushscale.adapter.rounds")


class RoundScraper(Protocol):
    async def round(self, targets: Sequence[Target]) -> Mapping[Target, WorkerReading]: ...


class Rounds:
    def __init__(
        self,
        scraper: RoundScraper,
        discovery: Discovery,
        *,
        interval_seconds: float,
        max_age_seconds: float,
        keep_seconds: float,
        spacing_seconds: float = 0.0,
        on_round: Callable[[Round], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scraper = scraper
        self._discovery = discovery
        self._interval = interval_seconds
        self._max_age = max_age_seconds
        self._keep = keep_seconds
        self._spacing = spacing_seconds
        self._on_round = on_round
        self._clock = clock
        self._history: collections.deque[Round] = collections.deque()
        self._in_flight: asyncio.Task[Round] | None = None
        self._number = 0
        # The targets of the last pods seen: the same tuple while discovery's pods are the same
        # (the scraper then need not send them again to its process).
        self._pods: tuple[Pod, ...] | None = None
        self._targets: tuple[Target, ...] = ()
        self._spans: dict[PodKey, tuple[int, int]] = {}
        # The targets of pods without a span: (pod, index in the targets), usually none.
        self._loose: tuple[tuple[PodKey, int], ...] = ()
        self._unavailable = LogLimiter(log)

    @property
    def history(self) -> tuple[Round, ...]:
        """The kept rounds, oldest first (empty before the first round ends)."""
        return tuple(self._history)

    async def fresh(self) -> tuple[Round, ...]:
        """The kept rounds, the latest no older than `max_age_seconds`."""
        if self._history and self._clock() - self._history[-1].started_at <= self._max_age:
            return self.history
        await self.next_round()
        return self.history

    async def next_round(self) -> Round:
        """The round in flight, or a new one. Shielded: a caller that gives up (a client that
        disconnects) does not cancel the round others are waiting for."""
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.create_task(self._scrape(), name="adapter-scrape-round")
        return await asyncio.shield(self._in_flight)

    async def stop(self) -> None:
        """Cancel the round in flight, if any, and wait for it to end."""
        if self._in_flight is not None and not self._in_flight.done():
            self._in_flight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._in_flight

    async def run(self) -> None:
        """Keep rounds coming every interval until cancelled, so requests answer from memory."""
        while True:
            started = self._clock()
            try:
                await self.next_round()
            except Unavailable as exc:
                # The scrape process is restarting; the scraper logged why.
                self._unavailable.log(logging.WARNING, "unavailable", "no scrape round: %s", exc)
            except Exception:
                # A bug in one round must not stop the next; the scraper itself never raises.
                log.exception("scrape round failed")
            await asyncio.sleep(max(0.0, self._interval - (self._clock() - started)))

    async def _scrape(self) -> Round:
        pods = self._discovery.pods()
        if pods is not self._pods:
            self._pods, self._targets = pods, targets_of(pods)
            self._spans = spans_of(((t.namespace, t.pod), t.worker) for t in self._targets)
            self._loose = tuple(
                ((t.namespace, t.pod), index)
                for index, t in enumerate(self._targets)
                if (t.namespace, t.pod) not in self._spans
            )
        started = self._clock()
        targets = self._targets
        readings = await self._scraper.round(targets)
        columns = None
        if isinstance(readings, Scraped):
            columns = Columns(self._spans, readings.scraped_at, readings.totals)
        self._number += 1
        finished = Round(
            self._number,
            started,
            self._clock() - started,
            pods,
            self._by_pod(targets, readings),
            columns,
        )
        history = self._history
        if len(history) >= 2 and history[-1].started_at - history[-2].started_at < self._spacing:
            history.pop()  # kept only while it was the latest: too close to the one before
        history.append(finished)
        while self._history and self._history[0].started_at < finished.started_at - self._keep:
            self._history.popleft()
        # A request waiting meanwhile goes first: the round's pod counts hold the loop a while.
        await asyncio.sleep(0)
        self._on_round(finished)
        # A minute of rounds is ~10^6 small objects without reference cycles (refcounting
        # frees them). Left to the cyclic collector, each full collection walks them all and
        # stalls every request for tens of milliseconds; frozen, it skips them.
        gc.freeze()
        return finished

    def _by_pod(
        self, targets: Sequence[Target], readings: Mapping[Target, WorkerReading]
    ) -> Mapping[PodKey, tuple[WorkerReading, ...]]:
        ordered = list(readings.values())
        if len(ordered) != len(targets) or any(
            target is not other for target, other in zip(targets, readings, strict=True)
        ):
            # Not one reading per target in the targets' order: grouped one by one.
            return _grouped(((t.namespace, t.pod), reading) for t, reading in readings.items())
        loose = _grouped((key, ordered[index]) for key, index in self._loose)
        return PodReadings(self._spans, ordered, loose)


def _grouped(
    pairs: Iterable[tuple[PodKey, WorkerReading]],
) -> dict[PodKey, tuple[WorkerReading, ...]]:
    """Each pod's readings, in the order they come."""
    by_pod: dict[PodKey, list[WorkerReading]] = collections.defaultdict(list)
    for key, reading in pairs:
        by_pod[key].append(reading)
    return {key: tuple(readings) for key, readings in by_pod.items()}


class PodReadings(Mapping[PodKey, tuple[WorkerReading, ...]]):
    """A round's readings by pod, as slices of its readings in the targets' order: grouping
    4000 readings a round cost the serving loop ~5 ms in one go, and most pods' readings are
    never looked at (the HPA's request reads the columns)."""

    __slots__ = ("_loose", "_ordered", "_spans")

    def __init__(
        self,
        spans: Mapping[PodKey, tuple[int, int]],
        ordered: Sequence[WorkerReading],
        loose: Mapping[PodKey, tuple[WorkerReading, ...]],
    ) -> None:
        self._spans = spans
        self._ordered = ordered
        self._loose = loose  # the pods without a span

    def __getitem__(self, key: PodKey) -> tuple[WorkerReading, ...]:
        span = self._spans.get(key)
        if span is None:
            return self._loose[key]
        first, count = span
        return tuple(self._ordered[first : first + count])

    def __iter__(self) -> Iterator[PodKey]:
        yield from self._spans
        yield from self._loose

    def __len__(self) -> int:
        return len(self._spans) + len(self._loose)


def targets_of(pods: Sequence[Pod]) -> tuple[Target, ...]:
    """Every worker endpoint of every pod not left out by rule."""
    return tuple(
        Target(pod.namespace, pod.name, worker, pod.metrics_url(worker))
        for pod in pods
        if pod.excluded is None
        for worker in range(pod.workers)
    )


def keep_seconds(rate_window_seconds: float, interval_seconds: float) -> float:
    """How long rounds are kept: a whole rate window plus one interval, so the oldest point of
    the window is still there when the window slides."""
    return rate_window_seconds + interval_seconds


# Points a rate window keeps (about): Prometheus's rate over [5m] at a 30 s scrape has 10.
POINTS_PER_WINDOW = 12


def spacing_seconds(rate_window_seconds: float, interval_seconds: float) -> float:
    """How far apart kept rounds are at least: a dozen points a window, never closer than
    every round."""
    return max(interval_seconds, rate_window_seconds / POINTS_PER_WINDOW)
