"""Rebalancing: the fair-share plan (tables) and the shed requests against a real push server."""

from __future__ import annotations

import httpx
import pytest

from adapter.controller.rebalance import (
    ShedClient,
    ShedRequest,
    ShedTarget,
    shed_plan,
    shed_requests,
    split_over_workers,
)
from tests.conftest import eventually, free_port_block


@pytest.mark.parametrize(
    ("pods", "slack", "plan"),
    [
        ({"a": 60000, "b": 0, "c": 0}, 0.1, {"a": 38000}),
        ({"a": 60000, "b": 0, "c": 0}, 0.0, {"a": 40000}),
        ({"a": 21000, "b": 19000}, 0.1, {}),
        ({"a": 22001, "b": 17999}, 0.1, {"a": 1}),
        ({"a": 50000, "b": 46000, "c": 2000, "d": 2000}, 0.1, {"a": 22500, "b": 18500}),
        ({"a": 90000}, 0.1, {}),
        ({}, 0.1, {}),
        ({"a": 0, "b": 0}, 0.1, {}),
    ],
    ids=["one-full-pod", "no-slack", "within-slack", "just-above", "two-above",
         "single-pod", "no-pods", "empty"],
)  # fmt: skip
def test_shed_plan(pods, slack, plan):
    assert shed_plan(pods, slack) == plan


@pytest.mark.parametrize(
    ("count", "workers", "split"),
    [(38000, 2, [19000, 19000]), (10, 4, [3, 3, 2, 2]), (3, 4, [1, 1, 1, 0]), (7, 1, [7])],
    ids=["even", "remainder-first", "fewer-than-workers", "one-worker"],
)  # fmt: skip
def test_split_over_workers(count, workers, split):
    assert split_over_workers(count, workers) == split
    assert sum(split) == count


def test_one_request_per_worker_with_something_to_shed():
    targets = {
        "a": ShedTarget("a", "10.0.0.1", 9100, 4),
        "b": ShedTarget("b", "fd00::7", 9300, 2),
    }
    requests = shed_requests({"a": 3, "b": 5, "gone": 9}, targets)
    assert requests == [
        ShedRequest("a", 0, "http://10.0.0.1:9100/admin/shed", 1),
        ShedRequest("a", 1, "http://10.0.0.1:9101/admin/shed", 1),
        ShedRequest("a", 2, "http://10.0.0.1:9102/admin/shed", 1),
        ShedRequest("b", 0, "http://[fd00::7]:9300/admin/shed", 3),
        ShedRequest("b", 1, "http://[fd00::7]:9301/admin/shed", 2),
    ]


async def test_shed_requests_to_a_real_push_server(server_factory, viewers):
    admin = "admin-token-" + "r" * 16
    base = free_port_block(2)
    pod = server_factory(workers=2, metrics_port=base, extra=["--admin-token", admin])
    clients = await viewers(pod.url, 20)
    await eventually(lambda: _total(pod, 20), what="20 connections counted")
    requests = shed_requests({"pod": 6}, {"pod": ShedTarget("pod", "127.0.0.1", base, 2)})

    async with httpx.AsyncClient() as http:
        refused = await ShedClient(http, "wrong-token-" + "x" * 16).send(requests)
        results = await ShedClient(http, admin, interval_ms=5).send(requests)

    assert [r.outcome for r in refused] == ["refused", "refused"]
    assert [r.outcome for r in results] == ["accepted", "accepted"]
    shedding = sum(r.shedding for r in results)
    # A worker holding fewer than its share sheds what it holds.
    assert 3 <= shedding <= 6
    await eventually(lambda: sum(bool(v.disconnects) for v in clients) == shedding, what="the shed")
    await eventually(lambda: _total(pod, 20 - shedding), what="the shed counted")


async def test_a_worker_that_does_not_answer_is_a_failure_not_an_exception():
    port = free_port_block(1)
    request = ShedRequest("a", 0, f"http://127.0.0.1:{port}/admin/shed", 5)
    async with httpx.AsyncClient() as http:
        [result] = await ShedClient(http, "t" * 20).send([request])
    assert (result.outcome, result.shedding) == ("failed", 0)
    assert "ConnectError" in result.detail


async def _total(pod, expected: float) -> bool:
    return await pod.total("socket_io_connected") == expected
