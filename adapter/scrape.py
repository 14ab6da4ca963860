"""Reading workers' /metrics: concurrent, bounded in time and size, and never raising.

`adapter.rounds` calls `Scraper.round(targets)` once per round; every worker of every pod is
read concurrently, each over its own kept connection (`adapter.fetch`: httpx's pool scans every
connection on each request, so a round over n endpoints cost n², and aiohttp's client cost more
per request than the parse; bench/adapter.py). A read is a future its connection settles,
and its reading is made in that future's callback as its body comes, with no task or
coroutine per read. Each read ends as a `WorkerReading` for `adapter.aggregate`: the samples
of the families the adapter reads (`adapter.shapes`, through the shape of the endpoint's last
body when it fits), or the reason there are none (refused, timeout, too large, an HTTP error,
text that is malformed or not to be trusted). One bad target never costs another one anything,
and never an exception out of here: a bug met while reading one target is that target's
`internal_error`, logged at most once a minute per exception type.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlencode

from adapter.aggregate import Reason, WorkerReading, wrong_worker
from adapter.catalog import READ_TYPES
from adapter.errors import describe
from adapter.fetch import Fetcher, FetchFailed
from adapter.samples import MalformedScrape, UntrustedScrape, parse_samples
from adapter.shapes import Shape, read_served
from pushkit.logs import LogLimiter

log = logging.getLogger("pushscale.adapter.scrape")

# How long a read may go on after its round timed out, waiting for its answer on the kept
# connection, before it is cancelled and the connection closed: an endpoint that never
# answers holds one connection at most this long.
LATE_SECONDS = 10.0


class Target(NamedTuple):
    """One worker's metrics endpoint. (A round's readings are keyed by their targets: a
    NamedTuple hashes in C, a frozen dataclass through Python.)"""

    namespace: str
    pod: str
    worker: int
    url: str


@dataclass(frozen=True)
class ScrapeSettings:
    timeout_seconds: float = 1.0
    # A worker's exposition is ~4 KB; anything near this is not a push server.
    max_body_bytes: int = 1024 * 1024


def served_query(names: Iterable[str] = READ_TYPES) -> str:
    """`name[]=...` for every family the adapter reads: prometheus_client's exposition (a push
    server worker's `/metrics`) then writes only those, leaving out the process and Python
    collectors (~30% of the lines, and the worker's cost of collecting them). An endpoint that
    ignores the query sends everything, and the rest is skipped when read."""
    return urlencode([("name[]", name) for name in sorted(names)])


class Scraper:
    def __init__(self, settings: ScrapeSettings, clock: Callable[[], float] = time.time) -> None:
        self._fetcher = Fetcher(settings.max_body_bytes, query=served_query())
        self._settings = settings
        self._clock = clock
        self._bugs = LogLimiter(log)
        # Each endpoint's last body's shape: the next one is read by comparison with it.
        self._shapes: dict[str, Shape] = {}
        # Reads that outlived their round, by URL: when each started, and the read.
        self._late: dict[str, tuple[float, asyncio.Future[bytes]]] = {}

    async def round(self, targets: Sequence[Target]) -> dict[Target, WorkerReading]:
        urls = {target.url for target in targets}
        self._fetcher.keep_only(urls)
        for url in [url for url in self._shapes if url not in urls]:
            del self._shapes[url]
        # Every read starts now, so one deadline for the round is each read's timeout: one
        # timer instead of one `asyncio.timeout` per read (~8% of a 4000-endpoint round).
        started = self._clock()
        timeout = self._settings.timeout_seconds
        self._give_up_late(started, urls)
        # A target whose last read is still waiting gets no new one.
        gets = {
            target: self._fetcher.get(target.url)
            for target in targets
            if target.url not in self._late
        }
        # Each reading is made as its body comes, so the reading of one overlaps the wait
        # for the others; those still out at the deadline are left out.
        taken: dict[Target, WorkerReading] = {}
        ended = asyncio.get_running_loop().create_future()

        def take(target: Target, get: asyncio.Future[bytes]) -> None:
            if ended.done():
                return  # the round is over: a late read, or the round was cancelled
            taken[target] = self._reading(target, started, get)
            if len(taken) == len(gets):
                ended.set_result(None)

        for target, get in gets.items():
            get.add_done_callback(functools.partial(take, target))
        try:
            if gets:
                await asyncio.wait([ended], timeout=timeout)
        except BaseException:
            for each in gets.values():
                each.cancel()  # the round itself is cancelled: its reads go with it
            raise
        finally:
            ended.cancel()  # what comes from now on is not this round's
        readings: dict[Target, WorkerReading] = {}
        for target in targets:
            reading = taken.get(target)
            if reading is not None:
                readings[target] = reading
                continue
            late = gets.get(target)
            if late is not None:
                # Not cancelled: that would close its connection, and the next round would
                # open it again. A round running late over thousands of endpoints then opens
                # thousands of connections, runs later still, and every read fails from then
                # on (bench/adapter.py at 4000 endpoints). The answer is not used; the
                # connection is, once it has come. Of two targets with one URL, one read
                # waits on.
                if target.url in self._late:
                    late.cancel()
                else:
                    self._late[target.url] = (started, late)
            readings[target] = WorkerReading(
                target.worker, started, error=f"timeout after {timeout:g} s", error_kind="timeout"
            )
        return readings

    def _give_up_late(self, now: float, urls: set[str]) -> None:
        """Forget late reads that ended; cancel those past `LATE_SECONDS` or of endpoints no
        longer read (their connections close)."""
        for url, (started, get) in list(self._late.items()):
            if get.done():
                del self._late[url]
            elif now - started > LATE_SECONDS or url not in urls:
                get.cancel()
                del self._late[url]

    async def close(self) -> None:
        for _, get in self._late.values():
            get.cancel()
        if self._late:
            await asyncio.wait([get for _, get in self._late.values()])
        self._late.clear()
        self._fetcher.close()

    def _reading(self, target: Target, started: float, get: asyncio.Future[bytes]) -> WorkerReading:
        """What the ended `get` of `target` says: its samples, or why there are none."""
        kind: Reason
        try:
            samples, shape = read_served(
                _text(get.result()), self._shapes.get(target.url), strict=parse_samples
            )
            if shape is None:
                self._shapes.pop(target.url, None)
            else:
                self._shapes[target.url] = shape
        except FetchFailed as exc:
            kind, reason = exc.kind, str(exc)
        except UntrustedScrape as exc:
            kind, reason = exc.kind, str(exc)
        except Exception as exc:
            # A bug of ours must cost this target only, not the round of every other pod.
            kind, reason = "internal_error", f"internal error: {type(exc).__name__}"
            self._bugs.log(
                logging.ERROR, type(exc).__name__, "internal error reading %s: %s",
                target.url, describe(exc),
            )  # fmt: skip
        else:
            mismatch = wrong_worker(samples, target.worker)
            if mismatch is None:
                return WorkerReading(target.worker, started, samples)
            kind, reason = "wrong_worker", mismatch
        return WorkerReading(target.worker, started, error=reason, error_kind=kind)


def _text(body: bytes) -> str:
    try:
        # Strict: the text format is UTF-8, and a strict decode stops at the first bad
        # byte, where replacing every one of 512 KB of junk costs ~7 ms a round.
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedScrape(
            f"malformed metrics text: not UTF-8 (byte {exc.start} of {len(body)})"
        ) from None
