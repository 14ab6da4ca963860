"""Per-worker metrics: exact, own-worker only, promtool-clean, and O(series) to scrape."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RunningServer, eventually, sample

ROOT = Path(__file__).resolve().parents[2]


async def test_worker_endpoints_sum_to_the_connected_clients(push_server, viewers):
    clients = await viewers(push_server.url, 300)
    joins = await asyncio.gather(
        *(v.client.call("joinByGameId", {"gameId": "g1"}, timeout=10) for v in clients)
    )
    on_worker = [sum(1 for j in joins if j["worker"] == f"pod0/{w}") for w in (0, 1)]

    counts = [await push_server.connected(w) for w in (0, 1)]
    assert sum(counts) == 300
    # Each endpoint reports its own worker only: exactly the clients it acknowledged.
    assert counts == on_worker
    assert min(counts) > 0, "the kernel spread connections over both workers"

    for viewer in clients[:120]:
        await viewer.client.disconnect()

    async def settled() -> bool:
        return sum([await push_server.connected(w) for w in (0, 1)]) == 180

    await eventually(settled, what="the sum to follow 120 disconnects")
    for worker in (0, 1):
        text = await push_server.scrape(worker)
        assert (
            sample(text, "pushscale_worker_info", pod="pod0", version="0.1.0", worker=str(worker))
            == 1
        )
        assert (
            sample(text, "socket_io_events_received_total", event="joinByGameId")
            == on_worker[worker]
        )


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or str(ROOT / ".cache" / "tools" / "promtool")
    if not Path(path).exists():
        pytest.fail(f"promtool not found at {path}: run scripts/setup (or set PROMTOOL)")
    return path


async def test_metrics_pass_promtool(push_server: RunningServer, viewers):
    clients = await viewers(push_server.url, 20)
    for viewer in clients:
        await viewer.client.emit("joinByGameId", {"gameId": "7"})
        await viewer.client.emit("visibilityChange", {"hidden": True})
        await viewer.client.emit("somethingElse", 1)
    await push_server.publish("7", "score", {"home": 1})
    await asyncio.sleep(0.3)
    for worker in (0, 1):
        text = await push_server.scrape(worker)
        result = subprocess.run(
            [promtool(), "check", "metrics"], input=text.encode(), capture_output=True, check=False
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


async def test_scrape_size_does_not_grow_with_connections(push_server, viewers):
    """A scrape is O(series): 10 or 200 clients in different games give the same series."""

    def series(text: str) -> set[str]:
        return {
            line.rpartition(" ")[0]
            for line in text.splitlines()
            if line and not line.startswith("#") and not line.startswith(("process_", "python_"))
        }

    few = await viewers(push_server.url, 10)
    for i, viewer in enumerate(few):
        await viewer.client.emit("joinByGameId", {"gameId": f"game-{i}"})
    await asyncio.sleep(0.2)
    before = [series(await push_server.scrape(w)) for w in (0, 1)]
    many = await viewers(push_server.url, 200)
    for i, viewer in enumerate(many):
        await viewer.client.emit("joinByGameId", {"gameId": f"other-{i}"})
    await asyncio.sleep(0.2)
    after = [series(await push_server.scrape(w)) for w in (0, 1)]
    assert before == after
