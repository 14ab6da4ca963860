"""The scrape rounds in a process of their own, so that the serving process only answers.

`ProcessScraper` is the serving side's `rounds.RoundScraper`. It starts
`python -m adapter.scrapeproc` with one end of a private socket pair and asks it for one round
at a time. The child runs `adapter.scrape.Scraper` on its own event loop and CPU, and sends each
round back packed by `adapter.packing`, in chunks of `CHUNK` readings. The serving loop unpacks
one chunk, then lets a request through, then unpacks the next.

Why a process: a round over 4000 worker endpoints is about a second of reading and parsing.
On a thread of the serving process, every API request waited for the GIL behind it
(bench/adapter.py: API p99 30 ms at 400 endpoints; at 4000, rounds and requests collapsed).

A child that dies or hangs costs the round in flight: `round` raises `Unavailable`, which the
API answers as 503 once the kept values are older than promised. The next round starts a new
child, no sooner than `RESTART_SECONDS` after the last one was lost. The child ends when its
socket closes, and the kernel ends it if the serving process dies
(`pushkit.children.die_with_parent`).

Frames on the socket: a 4-byte big-endian length, then a pickle. Both ends are this program,
and the socket pair is private to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import uvloop

from adapter.aggregate import WorkerReading
from adapter.catalog import COLUMNS
from adapter.columns import totals_of
from adapter.errors import Unavailable, describe
from adapter.packing import MIN_LAYOUTS, Packer, Unpacker
from adapter.scrape import Scraper, ScrapeSettings, Target
from pushkit.children import die_with_parent
from pushkit.logs import LogLimiter, configure_logging

log = logging.getLogger("pushscale.adapter.scrapeproc")

# Readings per chunk: unpacking one costs the serving loop ~0.2 ms.
CHUNK = 256
# The least time between two starts of the child.
RESTART_SECONDS = 1.0
# How long past the scrape timeout a round may take before the child counts as hung: packing
# and sending 4000 readings is well under a second.
GRACE_SECONDS = 5.0
_START_SECONDS = 30.0
_STOP_SECONDS = 2.0
# The longest frame either side accepts: far above a chunk or a target list of 10^5 endpoints.
MAX_FRAME = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes")
    return pickle.loads(await reader.readexactly(length))


class Scraped(dict[Target, WorkerReading]):
    """A round's readings, with the columns the scrape process made of them."""

    scraped_at: array[float]
    totals: Mapping[str, array[float]]


def _floats(data: bytes) -> array[float]:
    column = array("d")
    column.frombytes(data)
    return column


@dataclass
class _Round:
    number: int
    targets: Sequence[Target]
    done: asyncio.Future[Scraped]
    readings: list[WorkerReading] = field(default_factory=list)


class ProcessScraper:
    """Rounds read by the child process; `start` before the first, `close` at the end."""

    def __init__(
        self,
        settings: ScrapeSettings,
        log_level: str = "info",
        *,
        grace_seconds: float = GRACE_SECONDS,
        restart_seconds: float = RESTART_SECONDS,
    ) -> None:
        self._settings = settings
        self._log_level = log_level
        self._grace = grace_seconds
        self._restart = restart_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._unpacker = Unpacker()
        self._sent: Sequence[Target] | None = None
        self._round: _Round | None = None
        self._number = 0
        self._lost_at = -restart_seconds
        self._lost = LogLimiter(log)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the child and wait until it is ready; `Unavailable` if it could not start."""
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapter.scrapeproc", str(theirs.fileno()), str(os.getpid()),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            ours.close()
            raise Unavailable(f"the scrape process did not start: {_describe(exc)}") from None
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours)
        self._writer.write(frame(("start", asdict(self._settings), self._log_level)))
        try:
            async with asyncio.timeout(_START_SECONDS):
                ready = await read_frame(reader)
        except (TimeoutError, asyncio.IncompleteReadError, OSError, ValueError) as exc:
            await self._stop_child()
            raise Unavailable(f"the scrape process did not start: {_describe(exc)}") from None
        if ready != ("ready",):
            await self._stop_child()
            raise Unavailable(f"the scrape process did not start: it said {ready!r}")
        self._unpacker = Unpacker()
        self._sent = None
        self._listener = asyncio.create_task(
            self._listen(reader, self._process), name="adapter-scrape-listen"
        )

    async def round(self, targets: Sequence[Target]) -> Scraped:
        if self._writer is None:
            wait = self._lost_at + self._restart - time.monotonic()
            if wait > 0:
                raise Unavailable(f"the scrape process is restarting (next start in {wait:.1f} s)")
            await self.start()
        assert self._writer is not None
        if targets is not self._sent and targets != self._sent:
            plain = [(t.namespace, t.pod, t.worker, t.url) for t in targets]
            self._writer.write(frame(("targets", plain)))
            self._sent = targets
        self._number += 1
        current = _Round(self._number, targets, asyncio.get_running_loop().create_future())
        self._round = current
        self._writer.write(frame(("round", current.number)))
        limit = self._settings.timeout_seconds + self._grace
        try:
            return await asyncio.wait_for(asyncio.shield(current.done), limit)
        except TimeoutError:
            self._lost.log(
                logging.ERROR, "hung", "the scrape process took over %g s; restarting it", limit
            )
            await self._stop_child()
            raise Unavailable(f"the scrape process took over {limit:g} s for a round") from None
        finally:
            self._round = None

    async def close(self) -> None:
        await self._stop_child()

    async def _listen(
        self, reader: asyncio.StreamReader, process: asyncio.subprocess.Process
    ) -> None:
        why = "it closed its socket"
        try:
            while True:
                message = await read_frame(reader)
                if message[0] == "chunk":
                    self._take(message[1], message[2])
                elif message[0] == "end":
                    self._finish(message[1], *message[2])
                # A request between two chunks: a chunk is all the serving loop spends at once.
                await asyncio.sleep(0)
        except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
            why = _describe(exc)
        except Exception as exc:
            # A bug of ours reading a frame: the tables may be out of step; a new child starts
            # with empty ones.
            why = f"internal error: {describe(exc)}"
        self._forget(f"the scrape process is gone ({why})")
        if process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _STOP_SECONDS)
        if process.returncode is None:
            process.kill()  # its socket is closed: it can do nothing more for us
            await process.wait()
        self._lost.log(
            logging.ERROR, "lost", "the scrape process is gone (%s; exit code %s); restarting it",
            why, process.returncode,
        )  # fmt: skip

    def _take(self, number: int, chunk: Any) -> None:
        current = self._round
        entries = len(chunk[2])
        if current is None or current.number != number:
            self._unpacker.unpack(chunk, [0] * entries)  # a given-up round: keep the tables in step
            return
        have = len(current.readings)
        workers = [target.worker for target in current.targets[have : have + entries]]
        current.readings.extend(self._unpacker.unpack(chunk, workers))

    def _finish(self, number: int, scraped_at: bytes, totals: dict[str, bytes]) -> None:
        current = self._round
        if current is None or current.number != number or current.done.done():
            return
        if len(current.readings) != len(current.targets):
            error = f"{len(current.readings)} readings for {len(current.targets)} targets"
            current.done.set_exception(Unavailable(f"the scrape process sent {error}"))
            return
        scraped = Scraped(zip(current.targets, current.readings, strict=True))
        scraped.scraped_at = _floats(scraped_at)
        scraped.totals = {name: _floats(column) for name, column in totals.items()}
        current.done.set_result(scraped)

    def _forget(self, why: str) -> None:
        """The child is gone: the round in flight fails, and the next one starts a new child."""
        if self._writer is not None:
            self._writer.close()  # the child's read ends, if it still reads: it exits
            self._lost_at = time.monotonic()
        self._writer = None
        self._listener = None
        current = self._round
        if current is not None and not current.done.done():
            current.done.set_exception(Unavailable(why))

    async def _stop_child(self) -> None:
        listener, process = self._listener, self._process
        self._forget("the scrape process was stopped")
        if listener is not None and listener is not asyncio.current_task():
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), _STOP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._process = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "it closed its socket"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}"


# The child.


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    kind, settings, log_level = await read_frame(reader)
    assert kind == "start"
    configure_logging(log_level, "adapter-scrape")
    scraper = Scraper(ScrapeSettings(**settings))
    packer = Packer()
    targets: list[Target] = []
    writer.write(frame(("ready",)))
    try:
        while True:
            message = await read_frame(reader)
            if message[0] == "targets":
                targets = [Target(*plain) for plain in message[1]]
                packer.max_layouts = max(MIN_LAYOUTS, 2 * len(targets))
                continue
            number = message[1]
            readings = await scraper.round(targets)
            ordered = [readings[target] for target in targets]
            for first in range(0, len(ordered), CHUNK):
                chunk = packer.pack(ordered[first : first + CHUNK])
                writer.write(frame(("chunk", number, chunk)))
                await writer.drain()
            # The HPA's usual request reads these, not the readings (adapter.columns).
            totals = totals_of(ordered, COLUMNS)
            scraped_at = array("d", [reading.scraped_at for reading in ordered])
            columns = (
                scraped_at.tobytes(),
                {name: column.tobytes() for name, column in totals.items()},
            )
            writer.write(frame(("end", number, columns)))
            # Each endpoint's shape and connection live for the process; a round's garbage is
            # freed by reference counting. Frozen, the long-lived ones are not walked again.
            gc.freeze()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the serving process closed its end: it is stopping, or gave up on us
    finally:
        await scraper.close()


def main(argv: Sequence[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    die_with_parent(parent)
    sock = socket.socket(fileno=fd)
    uvloop.run(_serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
