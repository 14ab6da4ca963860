"""adapter.rounds: one shared round however many requests arrive, and only when stale."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from adapter.discovery import StaticDiscovery
from adapter.rounds import Rounds, keep_seconds, spacing_seconds
from adapter.scrape import Scraper, ScrapeSettings
from tests.conftest import free_port_block


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def one_second_rounds(pods_file: Path, keep: float, **options: Any) -> Rounds:
    return Rounds(
        Scraper(ScrapeSettings(timeout_seconds=1)),
        StaticDiscovery(pods_file),
        interval_seconds=1,
        max_age_seconds=2,
        keep_seconds=keep,
        **options,
    )


@pytest.fixture
async def counted_pod(tmp_path: Path) -> AsyncIterator[tuple[Path, list[int]]]:
    """A one-worker pod that counts its scrapes, and a static pods file naming it."""
    hits: list[int] = []

    async def metrics(request: web.Request) -> web.Response:
        hits.append(1)
        await asyncio.sleep(0.05)  # long enough for concurrent requests to pile up
        return web.Response(text=f"socket_io_connected {len(hits)}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port_block(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pods_file = tmp_path / "pods.yaml"
    pods_file.write_text(yaml.safe_dump(
        {"pods": [{"name": "a", "ip": "127.0.0.1", "metricsPort": port, "workers": 1}]}
    ))  # fmt: skip
    yield pods_file, hits
    await runner.cleanup()


async def test_requests_share_a_round_and_scrape_again_only_when_stale(counted_pod):
    pods_file, hits = counted_pod
    clock = Clock()
    rounds = one_second_rounds(pods_file, keep_seconds(10, 1), clock=clock)
    answers = await asyncio.gather(*(rounds.fresh() for _ in range(50)))
    assert {answer[-1].number for answer in answers} == {1}
    assert len(hits) == 1, "50 concurrent requests, one scrape"

    clock.now += 1.9
    assert (await rounds.fresh())[-1].number == 1, "still fresh: answered from memory"
    clock.now += 0.2
    assert (await rounds.fresh())[-1].number == 2, "stale: a new round"
    assert len(hits) == 2

    for _ in range(12):
        clock.now += 1
        await rounds.next_round()
    kept = rounds.history
    assert kept[-1].started_at - kept[0].started_at <= 11
    assert len(kept) == 12, "rounds older than the rate window plus an interval are dropped"


async def test_a_caller_that_gives_up_does_not_cancel_the_round_others_wait_for(counted_pod):
    pods_file, hits = counted_pod
    rounds = one_second_rounds(pods_file, 10)
    impatient = asyncio.create_task(rounds.fresh())
    patient = asyncio.create_task(rounds.fresh())
    await asyncio.sleep(0.01)
    impatient.cancel()
    finished = await patient
    assert finished[-1].number == 1 and len(hits) == 1


async def test_kept_rounds_are_spaced_for_rates_and_the_latest_is_always_there(counted_pod):
    pods_file, hits = counted_pod
    clock = Clock()
    rounds = one_second_rounds(
        pods_file, keep_seconds(60, 1), spacing_seconds=spacing_seconds(60, 1), clock=clock
    )
    for second in range(90):
        latest = await rounds.next_round()
        kept = rounds.history
        assert kept[-1] is latest, f"second {second}: the latest round is always kept"
        starts = [r.started_at for r in kept[:-1]]
        assert all(b - a >= 5 for a, b in itertools.pairwise(starts)), "a dozen points a window"
        clock.now += 1
    assert len(hits) == 90
    assert 12 <= len(kept) <= 14, [r.started_at - clock.now for r in kept]
    assert kept[-1].started_at - kept[0].started_at <= 61
