"""The age promise at answer time: a round that ran late is a 503, never an older value."""

from __future__ import annotations

import httpx

from adapter.aggregate import WorkerReading
from adapter.answers import Round
from adapter.app import AppState, create_app
from adapter.instruments import Instruments
from adapter.pods import Pod
from tests.adapter.conftest import SyncedPods

NOW = 10_000.0
POD = Pod("live", "push-a", {"app": "push"}, "10.0.0.1", 9100, 1)


class OneRound:
    """Rounds as `adapter.rounds.Rounds` hands them out: here one, started `age` ago."""

    def __init__(self, age: float) -> None:
        reading = WorkerReading(0, NOW - age, {"socket_io_connected": {(): 7.0}})
        self.history = (Round(1, NOW - age, age, (POD,), {POD.key: (reading,)}),)

    async def fresh(self) -> tuple[Round, ...]:
        return self.history


async def answer(age: float) -> httpx.Response:
    state = AppState(
        OneRound(age), SyncedPods((POD,)), Instruments(), None, 60.0, 2.0, clock=lambda: NOW
    )
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://adapter") as client:
        return await client.get(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/live/pods/*/socket_io_connected"
        )


async def test_a_value_within_the_promised_age_is_served():
    response = await answer(1.5)
    assert response.status_code == 200 and response.json()["items"][0]["value"] == "7"


async def test_a_round_older_than_promised_is_unavailable_not_served():
    response = await answer(3.2)
    assert response.status_code == 503
    status = response.json()
    assert status["reason"] == "ServiceUnavailable"
    assert "started 3.2 s ago, over the 2 s the adapter promises" in status["message"]
