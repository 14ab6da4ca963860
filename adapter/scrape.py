"""Reading workers' /metrics: concurrent, bounded in time and size, and never raising.

The adapter's scrape loop (issue 3) calls `Scraper.round(targets)` once per round; every worker
of every pod is read concurrently over one keep-alive `httpx.AsyncClient`. Each read ends as a
`WorkerReading` for `adapter.aggregate`: the samples, or the reason there are none (refused,
timeout, too large, an HTTP error, malformed text). One bad target never costs another one
anything, and never an exception out of here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from adapter.aggregate import WorkerReading
from adapter.samples import MalformedScrape, parse_samples
from pushserver.bodies import BodyTooLarge, read_capped


@dataclass(frozen=True)
class Target:
    """One worker's metrics endpoint."""

    namespace: str
    pod: str
    worker: int
    url: str


@dataclass(frozen=True)
class ScrapeSettings:
    timeout_seconds: float = 1.0
    # A worker's exposition is ~4 KB; anything near this is not a push server.
    max_body_bytes: int = 1024 * 1024


class Scraper:
    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: ScrapeSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock

    async def round(self, targets: Sequence[Target]) -> dict[Target, WorkerReading]:
        readings = await asyncio.gather(*(self.read(target) for target in targets))
        return dict(zip(targets, readings, strict=True))

    async def read(self, target: Target) -> WorkerReading:
        settings = self._settings
        started = self._clock()
        try:
            async with asyncio.timeout(settings.timeout_seconds):
                body = await self._fetch(target.url)
            samples = parse_samples(body)
        except TimeoutError:
            kind, reason = "timeout", f"timeout after {settings.timeout_seconds:g} s"
        except BodyTooLarge:
            kind, reason = "too_large", f"body over {settings.max_body_bytes} bytes"
        except httpx.ConnectError:
            kind, reason = "refused", "connection refused"
        except httpx.HTTPStatusError as exc:
            kind, reason = "http_status", f"HTTP {exc.response.status_code}"
        except httpx.HTTPError as exc:
            kind, reason = "http", f"{type(exc).__name__}: {exc}"
        except MalformedScrape as exc:
            kind, reason = "malformed", str(exc)
        else:
            return WorkerReading(target.worker, started, samples)
        return WorkerReading(target.worker, started, error=reason, error_kind=kind)

    async def _fetch(self, url: str) -> str:
        limit = self._settings.max_body_bytes
        async with self._client.stream("GET", url) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length")
            body = await read_capped(response.aiter_bytes(), declared, limit)
        return body.decode("utf-8", errors="replace")
