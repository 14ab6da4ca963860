"""adapter.rounds: one shared round however many requests arrive, and only when stale."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.aggregate import WorkerReading
from adapter.discovery import StaticDiscovery
from adapter.pods import Pod
from adapter.rounds import Rounds, keep_seconds, spacing_seconds
from adapter.scrape import Scraper, ScrapeSettings, Target
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


class _Listed:
    """Discovery of a fixed list of pods."""

    def __init__(self, pods: tuple[Pod, ...]) -> None:
        self._pods = pods

    def pods(self) -> tuple[Pod, ...]:
        return self._pods

    async def service(self, namespace: str, name: str) -> None:
        return None

    async def run(self) -> None:
        return None

    async def wait_synced(self) -> None:
        return None

    @property
    def synced(self) -> bool:
        return True


class _Echo:
    """A scraper that answers every target it is given at once, in the order `order` puts
    them in (leaving out any it drops); it keeps its last answer."""

    def __init__(self, order: Callable[[list[Target]], list[Target]]) -> None:
        self._order = order
        self.answered: dict[Target, WorkerReading] = {}

    async def round(self, targets: Sequence[Target]) -> dict[Target, WorkerReading]:
        self.answered = {
            target: WorkerReading(target.worker, 1.0, error=target.url, error_kind="timeout")
            for target in self._order(list(targets))
        }
        return self.answered


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("pqrs"), st.integers(1, 3)),
             max_size=8),
    st.randoms(use_true_random=False),
    st.booleans(),
)  # fmt: skip
def test_a_rounds_readings_by_pod_are_its_readings_grouped_by_pod(listed, rng, in_order):
    # Pods in any order, names repeated across namespaces and within one (that pod's targets
    # then come apart), answered in the targets' order, or shuffled with some left out.
    pods = tuple(
        Pod(namespace, name, {}, "127.0.0.1", 9000 + 10 * i, workers)
        for i, (namespace, name, workers) in enumerate(listed)
    )

    def order(targets: list[Target]) -> list[Target]:
        if not in_order:
            rng.shuffle(targets)
            del targets[: rng.randrange(len(targets) + 1) // 2]
        return targets

    scraper = _Echo(order)
    rounds = Rounds(scraper, _Listed(pods), interval_seconds=1, max_age_seconds=2,
                    keep_seconds=10)  # fmt: skip
    finished = asyncio.run(rounds.next_round())
    expected: dict[tuple[str, str], list[WorkerReading]] = {}
    for target, reading in scraper.answered.items():
        expected.setdefault((target.namespace, target.pod), []).append(reading)
    assert {key: list(readings) for key, readings in finished.readings.items()} == expected
    assert len(finished.readings) == len(expected)
    assert all(finished.readings.get(key) is None for key in [("c", "p"), ("a", "x")])
