"""POST /publish: delivered to a room on every worker of every pod; bad requests refused."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.conftest import eventually, url_of


async def test_event_reaches_every_worker_of_two_pods(
    server_factory, publish_token, viewers, own_redis
):
    pods = [server_factory(token=publish_token, redis_url=url_of(own_redis)) for _ in range(2)]
    in_room = []
    for pod in pods:
        clients = await viewers(pod.url, 40)
        joins = await asyncio.gather(
            *(c.client.call("joinByGameId", {"gameId": "final"}, timeout=10) for c in clients)
        )
        # Every worker of both pods holds some of the room, so the test covers them all.
        assert {j["worker"] for j in joins} == {f"{pod.name}/{w}" for w in pod.workers}
        in_room += clients
    elsewhere = await viewers(pods[0].url, 10)
    for viewer in elsewhere:
        await viewer.client.call("joinByGameId", {"gameId": "other"}, timeout=10)

    response = await pods[1].publish("final", "score", {"home": 2, "away": 1})
    assert response.status_code == 202
    # 2 pods x 2 workers listen on the Redis channel.
    assert response.json() == {"room": "game:final", "event": "score", "workers": 4}

    async def all_got_it() -> bool:
        return all(v.got("score") == [{"home": 2, "away": 1}] for v in in_room)

    await eventually(all_got_it, what="all 80 viewers to receive the score")
    await asyncio.sleep(0.2)
    assert all(v.got("score") == [] for v in elsewhere), "other rooms got nothing"
    assert all(len(v.got("score")) == 1 for v in in_room), "nobody got it twice"

    sent = [await pod.total("socket_io_events_sent_total", event="score") for pod in pods]
    assert sum(sent) == 80


async def test_every_worker_listens_before_the_server_is_ready(
    server_factory, publish_token, own_redis
):
    """No publish is lost to a worker that has not subscribed yet, even with no clients."""
    server = server_factory(token=publish_token, workers=3, redis_url=url_of(own_redis))
    response = await server.publish("nobody-here", "score", 1)
    assert response.json()["workers"] == 3


async def test_without_a_redis_url_an_embedded_valkey_carries_the_events(
    server_factory, publish_token, viewers
):
    server = server_factory(token=publish_token, redis_url=None)
    assert "started an embedded valkey-server on /" in server.log()
    clients = await viewers(server.url, 10)
    for viewer in clients:
        await viewer.client.call("joinByGameId", {"gameId": "local"}, timeout=5)
    assert (await server.publish("local", "goal", "!")).status_code == 202
    await eventually(lambda: all(v.got("goal") == ["!"] for v in clients))


async def test_leave_stops_delivery(push_server, viewers):
    [viewer] = await viewers(push_server.url, 1)
    await viewer.client.call("joinByGameId", {"gameId": "42"}, timeout=5)
    left = await viewer.client.call("leaveByGameId", {"gameId": "42"}, timeout=5)
    assert left["ok"] is True
    await push_server.publish("42", "score", 1)
    await asyncio.sleep(0.3)
    assert viewer.got("score") == []


def _post(server, body, *, token="right", headers=None, content_type="application/json"):
    auth = (
        {}
        if token is None
        else {"authorization": f"Bearer {server.token if token == 'right' else token}"}
    )
    return httpx.post(
        f"{server.url}/publish",
        content=body,
        headers={"content-type": content_type, **auth, **(headers or {})},
        timeout=5,
    )


@pytest.mark.parametrize(
    ("body", "token", "content_type", "status", "code"),
    [
        (b'{"gameId":"1","event":"e","data":1}', None, "application/json", 401, "unauthorized"),
        (
            b'{"gameId":"1","event":"e","data":1}',
            "wrong-token-xxxxxxxx",
            "application/json",
            401,
            "unauthorized",
        ),
        (
            b'{"gameId":"1","event":"e","data":1}',
            "right",
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (b'{"gameId":"1","event":', "right", "application/json", 400, "bad_json"),
        (b"[1,2]", "right", "application/json", 400, "bad_payload"),
        (b'{"gameId":"1","event":"e"}', "right", "application/json", 400, "bad_payload"),
        (
            b'{"gameId":"1","event":"e","data":1,"x":2}',
            "right",
            "application/json",
            400,
            "bad_payload",
        ),
        (
            b'{"gameId":"../etc","event":"e","data":1}',
            "right",
            "application/json",
            400,
            "bad_game_id",
        ),
        (
            b'{"gameId":"1","event":"disconnect","data":1}',
            "right",
            "application/json",
            400,
            "reserved_event",
        ),
        (b'{"gameId":"1","event":"a b","data":1}', "right", "application/json", 400, "bad_event"),
        (
            b'{"gameId":"1","event":"e","data":"' + b"x" * 2_000_000 + b'"}',
            "right",
            "application/json",
            413,
            "too_large",
        ),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "not-json-content-type",
        "truncated-json",
        "not-an-object",
        "missing-data",
        "unknown-field",
        "bad-game-id",
        "reserved-event",
        "bad-event-name",
        "body-over-limit",
    ],
)
async def test_bad_publish_requests_are_refused_clearly(
    push_server, viewers, body, token, content_type, status, code
):
    [viewer] = await viewers(push_server.url, 1)
    await viewer.client.call("joinByGameId", {"gameId": "1"}, timeout=5)
    response = await asyncio.to_thread(
        _post, push_server, body, token=token, content_type=content_type
    )
    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["message"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing was delivered, and the server still works.
    ok = await push_server.publish("1", "e", "after")
    assert ok.status_code == 202
    await eventually(lambda: viewer.got("e") == ["after"], what="the good publish")
    assert await push_server.total("pushscale_publish_requests_total", code=str(status)) == 1


async def test_publishing_is_disabled_without_a_token(server_factory, viewers):
    server = server_factory(token=None)
    response = await server.publish("1", "e", 1)
    assert response.status_code == 403
    assert response.json()["error"] == "disabled"


async def test_publish_fails_loudly_when_redis_is_gone(
    server_factory, publish_token, viewers, own_redis
):
    server = server_factory(token=publish_token, redis_url=url_of(own_redis))
    [viewer] = await viewers(server.url, 1)
    await viewer.client.call("joinByGameId", {"gameId": "1"}, timeout=5)
    own_redis.stop()
    response = await server.publish("1", "e", 1)
    assert response.status_code == 503
    assert response.json()["error"] == "redis_unavailable"
    await asyncio.sleep(0.2)
    # Redis did not take it, so nobody got it: the publisher can retry without duplicates.
    assert viewer.got("e") == []
    assert viewer.client.connected, "clients stay connected while Redis is away"

    # Each worker says it is deaf, in its metrics and once per retry in its log, with why.
    async def deaf() -> bool:
        return await server.total("pushscale_redis_subscribed") == 0

    await eventually(deaf, what="every worker to report its subscription lost")
    retries = [line for line in server.log().splitlines() if "not subscribed to Redis" in line]
    assert retries
    assert all(re.match(r"\d\d:\d\d:\d\d ERROR +\[pod0/worker-\d\] ", r) for r in retries), retries
    assert all("Connection" in r for r in retries), retries
