"""The official JavaScript socket.io clients (npm socket.io-client 4.8 and 2.5) against our server.

Browsers run these clients, so what they see is what users see: joining with an ack, receiving a
publish, getting an error event for a bad payload, and, on a drain, a `transport close` after
which they reconnect by themselves and join their game again. Each test runs for every kind of
client in the field (`tests/js/viewer.mjs` builds them): 4.x with its default transports (polling,
then an upgrade to websocket), 4.x websocket-only (the seed's load tester), 4.x polling-only, and
the 2.x client (engine.io protocol 3) with its default transports and websocket-only.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, eventually
from tests.pushserver.client_records import ClientRecords

JS = Path(__file__).resolve().parents[1] / "js"

# Kind → (the transport its engine.io session opens on, the one it must end on).
TRANSPORTS: dict[str, tuple[str, str]] = {
    "v4": ("polling", "websocket"),
    "v4-websocket": ("websocket", "websocket"),
    "v4-polling": ("polling", "polling"),
    "v2": ("polling", "websocket"),
    "v2-websocket": ("websocket", "websocket"),
}
KINDS = list(TRANSPORTS)


class JsViewer(ClientRecords):
    """One `node viewer.mjs` process and the records it has printed so far."""

    def __init__(self, process: asyncio.subprocess.Process, kind: str) -> None:
        super().__init__(kind)
        self.process = process
        self.kind = kind
        # A task, not an executor thread: the default executor has too few threads for a test
        # that holds ten viewers whose readers block for their whole life.
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, server: RunningServer, game_id: str, kind: str) -> JsViewer:
        node = shutil.which("node")
        if node is None or not (JS / "node_modules" / "socket.io-client-v2").exists():
            pytest.fail("node or tests/js/node_modules is missing: run scripts/setup")
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS / "viewer.mjs"),
            server.url,
            game_id,
            kind,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process, kind)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.records.append(json.loads(line))

    def send(self, event: str, payload: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps([event, payload]) + "\n").encode())

    async def close(self) -> None:
        """Ask it to leave (it disconnects and exits); kill it if it does not."""
        if self._reader.done():
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._reader


JsViewers = Callable[[RunningServer, str, str], Awaitable[JsViewer]]


@pytest.fixture
async def js_viewers() -> AsyncIterator[JsViewers]:
    """Start viewers; every one is closed (or killed) at the end of the test, pass or fail."""
    started: list[JsViewer] = []

    async def start(server: RunningServer, game_id: str, kind: str) -> JsViewer:
        viewer = await JsViewer.start(server, game_id, kind)
        started.append(viewer)
        return viewer

    yield start
    for viewer in started:
        await viewer.close()


async def assert_on_its_transports(viewer: JsViewer) -> None:
    """It opened on its first transport and, if it may upgrade, ended on websocket."""
    opens_on, ends_on = TRANSPORTS[viewer.kind]
    assert viewer.of("open")[-1]["transport"] == opens_on
    await viewer.wait(lambda: viewer.transport == ends_on, f"the transport to be {ends_on}")
    if opens_on == ends_on:
        assert viewer.of("upgrade")[-1:] == [], "a client that may not upgrade did"


@pytest.mark.parametrize("kind", KINDS)
async def test_join_publish_and_bad_payload(push_server, js_viewers, kind):
    viewer = await js_viewers(push_server, "js-game", kind)
    await viewer.wait(lambda: bool(viewer.of("ack")), "the join ack")
    assert viewer.of("ack")[0]["ack"]["room"] == "game:js-game"
    await assert_on_its_transports(viewer)
    assert (await push_server.publish("js-game", "score", {"home": 3})).status_code == 202
    await viewer.wait(lambda: bool(viewer.of("event")), "the published event")
    assert viewer.of("event")[0] == {"type": "event", "name": "score", "data": {"home": 3}}

    viewer.send("joinByGameId", {"gameId": None})
    await viewer.wait(lambda: len(viewer.of("event")) == 2, "the error event")
    error = viewer.of("event")[1]
    assert error["name"] == "error" and error["data"]["code"] == "bad_game_id"
    assert viewer.of("disconnect") == []
    assert viewer.of("connect_error") == []


async def test_every_kind_of_client_is_counted_once(push_server, js_viewers):
    """Two of each kind: the workers' `socket_io_connected` sums to the clients, once each,
    with the upgraded ones on websocket (an upgrade must not count a client twice), and back
    to 0 once they leave (a polling session is uncounted too)."""
    clients = [await js_viewers(push_server, "mixed", kind) for kind in KINDS for _ in range(2)]
    for viewer in clients:
        await viewer.wait(lambda v=viewer: bool(v.of("ack")), "the join ack")
        await assert_on_its_transports(viewer)
    assert await push_server.total("socket_io_connected") == len(clients)

    await asyncio.gather(*(viewer.close() for viewer in clients))
    for viewer in clients:
        assert viewer.of("disconnect") == [{"type": "disconnect", "reason": "io client disconnect"}]

    async def all_gone() -> bool:
        return await push_server.total("socket_io_connected") == 0

    await eventually(all_gone, what="every client to be uncounted")


async def test_every_kind_of_client_stays_connected_through_heartbeats(
    server_factory, publish_token, js_viewers
):
    """engine.io 3 turned the heartbeat around (the 2.x client pings, the server answers;
    4.x the other way), so a server that gets one direction wrong loses those clients at the
    first missed heartbeat: within `pingInterval + pingTimeout` of the handshake, on whichever
    side notices first. All kinds are held that long (three times over, with a 3 s interval),
    together, and must still be there."""
    push_server = server_factory(
        token=publish_token, extra=["--ping-interval", "3", "--ping-timeout", "2"]
    )
    clients = [await js_viewers(push_server, "heartbeat", kind) for kind in KINDS]
    for viewer in clients:
        await viewer.wait(lambda v=viewer: bool(v.of("ack")), "the join ack")
    handshake = clients[0].of("open")[0]
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (3000, 2000)
    # Plus a margin for the timers on both sides, which started at their own handshakes.
    await asyncio.sleep(3 * (handshake["pingInterval"] + handshake["pingTimeout"]) / 1000 + 2)

    for viewer in clients:
        assert viewer.of("disconnect") == [], viewer.printed()
        assert len(viewer.of("open")) == 1, viewer.printed()
    assert (await push_server.publish("heartbeat", "score", 1)).status_code == 202
    for viewer in clients:
        await viewer.wait(lambda v=viewer: bool(v.of("event")), "the publish after heartbeats")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_drain_is_a_transport_close_and_the_client_comes_back(
    server_factory, publish_token, js_viewers, kind
):
    first = server_factory(token=publish_token)
    viewer = await js_viewers(first, "comeback", kind)
    await viewer.wait(lambda: bool(viewer.of("ack")), "the first join")
    await assert_on_its_transports(viewer)
    assert await asyncio.to_thread(first.stop) == 0
    await viewer.wait(lambda: bool(viewer.of("disconnect")), "the drain")
    # Not `io server disconnect`, after which the client would never reconnect.
    assert viewer.of("disconnect")[0]["reason"] == "transport close"

    second = server_factory(token=publish_token, port=first.port)
    await viewer.wait(lambda: len(viewer.of("ack")) == 2, "the rejoin", timeout=20)
    await assert_on_its_transports(viewer)
    assert (await second.publish("comeback", "score", 1)).status_code == 202
    await viewer.wait(lambda: bool(viewer.of("event")), "the event after reconnecting")
    assert viewer.of("event")[0]["name"] == "score"
