"""The official JavaScript socket.io client (npm socket.io-client 4.8) against our server.

Browsers run this client, so what it sees is what users see: joining with an ack, receiving a
publish, getting an error event for a bad payload, and, on a drain, a `transport close` after
which it reconnects by itself and joins its game again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningServer, eventually

JS = Path(__file__).resolve().parents[1] / "js"


class JsViewer:
    def __init__(self, server: RunningServer, game_id: str) -> None:
        node = shutil.which("node")
        if node is None or not (JS / "node_modules" / "socket.io-client").exists():
            pytest.fail("node or tests/js/node_modules is missing: run scripts/setup")
        self.process = subprocess.Popen(
            [node, str(JS / "viewer.mjs"), server.url, game_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.records.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == kind]

    def send(self, event: str, payload: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([event, payload]) + "\n")
        self.process.stdin.flush()

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await asyncio.to_thread(self.process.wait, 10)
        await self._reader
        assert self.process.stdout is not None
        self.process.stdout.close()


async def test_join_publish_and_bad_payload(push_server):
    viewer = JsViewer(push_server, "js-game")
    try:
        await eventually(lambda: bool(viewer.of("ack")), what="the join ack")
        assert viewer.of("ack")[0]["ack"]["room"] == "game:js-game"
        assert (await push_server.publish("js-game", "score", {"home": 3})).status_code == 202
        await eventually(lambda: bool(viewer.of("event")), what="the published event")
        assert viewer.of("event")[0] == {"type": "event", "name": "score", "data": {"home": 3}}

        viewer.send("joinByGameId", {"gameId": None})
        await eventually(lambda: len(viewer.of("event")) == 2, what="the error event")
        error = viewer.of("event")[1]
        assert error["name"] == "error" and error["data"]["code"] == "bad_game_id"
        assert viewer.of("disconnect") == []
    finally:
        await viewer.close()


async def test_a_drain_is_a_transport_close_and_the_client_comes_back(
    server_factory, publish_token
):
    first = server_factory(token=publish_token)
    viewer = JsViewer(first, "comeback")
    try:
        await eventually(lambda: bool(viewer.of("ack")), what="the first join")
        assert await asyncio.to_thread(first.stop) == 0
        await eventually(lambda: bool(viewer.of("disconnect")), what="the drain")
        # Not `io server disconnect`, after which the client would never reconnect.
        assert viewer.of("disconnect")[0]["reason"] == "transport close"

        second = server_factory(token=publish_token, port=first.port)
        await eventually(lambda: len(viewer.of("ack")) == 2, timeout=20, what="the rejoin")
        assert (await second.publish("comeback", "score", 1)).status_code == 202
        await eventually(lambda: bool(viewer.of("event")), what="the event after reconnecting")
        assert viewer.of("event")[0]["name"] == "score"
    finally:
        await viewer.close()
