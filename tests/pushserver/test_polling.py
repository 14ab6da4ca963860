"""Long-polling (engine.io v4 and v3) against real multi-worker pods: open, poll, post, the
upgrade to a websocket, socket.io v2's automatic connect, the handoff of requests that land on a
sibling worker, the count through an upgrade, the drain, and bad input.

Every request here goes on a new TCP connection, so the kernel spreads them over the workers as
it spreads a browser's; the acks name the worker that served them."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest
import websockets

from pushserver import eio
from tests.conftest import RunningServer, eventually


class PollingClient:
    """A raw engine.io polling client: one new connection per request."""

    def __init__(self, server: RunningServer, version: int = 4) -> None:
        self.server = server
        self.version = version
        self.http = httpx.AsyncClient(
            base_url=server.url, timeout=40, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.sid = ""
        self.unread: list[str] = []

    def params(self, **more: str) -> dict[str, str]:
        params = {"EIO": str(self.version), "transport": "polling", **more}
        if self.sid:
            params["sid"] = self.sid
        return params

    def decode(self, text: str) -> list[eio.Packet]:
        body = text.encode()
        if self.version == 3:
            return eio.decode_payload_v3(body, 100)
        return eio.decode_payload_v4(body, 100)

    def encode(self, packets: list[eio.Packet]) -> str:
        if self.version == 3:
            return eio.encode_payload_v3(packets)
        return eio.encode_payload_v4(packets)

    async def open(self) -> dict[str, Any]:
        response = await self.http.get("/socket.io/", params=self.params())
        assert response.status_code == 200, response.text
        packets = self.decode(response.text)
        opening = packets[0]
        assert isinstance(opening, str) and opening[0] == "0"
        # What may come with it (v3: the server's own "40"), as a client reads it too.
        self.unread = [p for p in packets[1:] if isinstance(p, str)]
        document: dict[str, Any] = json.loads(opening[1:])
        self.sid = document["sid"]
        return document

    @property
    def owner(self) -> int:
        owner = eio.owner_of(self.sid)
        assert owner is not None
        return owner

    async def get(self) -> list[eio.Packet]:
        response = await self.http.get("/socket.io/", params=self.params())
        assert response.status_code == 200, response.text
        return self.decode(response.text)

    async def post(self, *packets: eio.Packet) -> httpx.Response:
        return await self.http.post(
            "/socket.io/", params=self.params(), content=self.encode(list(packets))
        )

    async def receive_until(self, prefix: str, polls: int = 5) -> list[str]:
        """Poll until a packet starting with `prefix` came; every text packet seen."""
        seen, self.unread = self.unread, []
        if any(p.startswith(prefix) for p in seen):
            return seen
        for _ in range(polls):
            seen += [p for p in await self.get() if isinstance(p, str)]
            if any(p.startswith(prefix) for p in seen):
                return seen
        raise AssertionError(f"no {prefix!r} packet in {seen}")

    async def close(self) -> None:
        await self.http.aclose()


def ack_of(packets: list[str], ack_id: int) -> Any:
    for packet in packets:
        if packet.startswith(f"43{ack_id}["):
            return json.loads(packet[len(f"43{ack_id}") :])[0]
    raise AssertionError(f"no ack {ack_id} in {packets}")


async def connect_v4(client: PollingClient) -> None:
    await client.open()
    assert (await client.post("40")).text == "ok"
    packets = await client.receive_until("40")
    assert any(p.startswith('40{"sid"') for p in packets)


async def connect(client: PollingClient) -> None:
    """Connected to socket.io: a v4 client asks, a v3 one is connected by the server."""
    if client.version == 4:
        await connect_v4(client)
    else:
        await client.open()
        await client.receive_until("40")


@pytest.fixture
async def four_workers(server_factory, publish_token) -> RunningServer:
    return server_factory(workers=4, token=publish_token)


async def test_v4_polling_session_is_served_by_its_owner_whatever_worker_a_request_hits(
    four_workers,
):
    server = four_workers
    client = PollingClient(server)
    try:
        document = await client.open()
        assert document["upgrades"] == ["websocket"] and document["maxPayload"] == 16384
        assert (await client.post("40")).text == "ok"
        await client.receive_until("40")
        workers = set()
        for i in range(12):
            join = f'42{i}["joinByGameId",{{"gameId":"g{i}"}}]'
            assert (await client.post(join)).text == "ok"
            workers.add(ack_of(await client.receive_until(f"43{i}"), i)["worker"])
        assert workers == {f"{server.name}/{client.owner}"}
        handed = await server.total("pushscale_handoffs_total", result="ok")
        assert handed > 0, "with four workers, some of 25 new connections land elsewhere"
        assert await server.total("pushscale_handoffs_total", result="failed") == 0
        response = await server.publish("g3", "news", {"score": 1})
        assert response.status_code == 202
        packets = await client.receive_until('42["news"')
        assert '42["news",{"score":1}]' in packets
        assert await server.total("socket_io_connected") == 1
        assert await server.total("pushscale_sockets", transport="polling", protocol="4") == 1
    finally:
        await client.close()


async def test_v3_client_is_connected_by_the_server_and_pings_it(four_workers):
    server = four_workers
    client = PollingClient(server, version=3)
    try:
        document = await client.open()
        assert "maxPayload" not in document and document["upgrades"] == ["websocket"]
        # socket.io v2: the server connects "/" without being asked, with a bare "40".
        assert "40" in await client.receive_until("40")
        assert (await client.post('420["joinByGameId",{"gameId":"v2"}]')).text == "ok"
        ack = ack_of(await client.receive_until("430"), 0)
        assert ack["ok"] is True and ack["worker"] == f"{server.name}/{client.owner}"
        assert (await server.publish("v2", "news", [1, 2])).status_code == 202
        assert '42["news",[1,2]]' in await client.receive_until('42["news"')
        # In v3 the client pings; the server answers with a pong carrying the same data.
        assert (await client.post("2probe-less")).text == "ok"
        assert "3probe-less" in await client.receive_until("3")
        assert await server.total("pushscale_sockets", transport="polling", protocol="3") == 1
    finally:
        await client.close()


@pytest.mark.parametrize("version", [4, 3])
async def test_upgrade_to_websocket_keeps_the_session_and_the_count(four_workers, version):
    server = four_workers
    client = PollingClient(server, version=version)
    try:
        await connect(client)
        assert await server.total("socket_io_connected") == 1
        waiting = asyncio.create_task(client.get())
        await asyncio.sleep(0.2)
        url = (
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO={version}&transport=websocket"
            f"&sid={client.sid}"
        )
        async with websockets.connect(url) as ws:
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
            # The waiting poll ends with a NOOP so the client can pause polling (a heartbeat
            # PING may have ended it first: then the next poll gets the NOOP).
            packets = await asyncio.wait_for(waiting, 5)
            if packets == ["2"]:
                packets = await client.get()
            assert packets[-1:] == ["6"] and set(packets) <= {"2", "6"}
            assert await server.total("socket_io_connected") == 1
            await ws.send("5")
            await ws.send('421["joinByGameId",{"gameId":"up"}]')
            reply = await asyncio.wait_for(ws.recv(), 5)
            while reply == "2":  # a heartbeat, now over the websocket
                reply = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(reply, str) and reply.startswith("431[")
            assert json.loads(reply[3:])[0]["worker"] == f"{server.name}/{client.owner}"
            assert await server.total("socket_io_connected") == 1
            assert await server.total("pushscale_engineio_sessions") == 1
            transports = {
                transport: await server.total(
                    "pushscale_sockets", transport=transport, protocol=str(version)
                )
                for transport in ("polling", "websocket")
            }
            assert transports == {"polling": 0, "websocket": 1}
            # A poll after the upgrade is refused: the session is a websocket now.
            response = await client.http.get("/socket.io/", params=client.params())
            assert response.status_code == 400 and response.json()["code"] == 3
        await eventually(lambda: _total_is(server, "socket_io_connected", 0), what="the disconnect")
    finally:
        await client.close()


async def _total_is(server: RunningServer, name: str, value: float) -> bool:
    return await server.total(name) == value


@pytest.mark.parametrize("version", [4, 3])
async def test_a_drained_polling_client_gets_a_close_packet(server_factory, version):
    server = server_factory(workers=2)
    client = PollingClient(server, version=version)
    try:
        await connect(client)
        waiting = asyncio.create_task(client.get())
        await asyncio.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        packets = await asyncio.wait_for(waiting, 10)
        if packets == ["2"]:  # a heartbeat came first; the CLOSE is on the next poll
            packets = await client.get()
        assert packets[-1:] == ["1"]
    finally:
        await client.close()
        server.stop()


async def test_overlapping_polls_close_the_session(four_workers):
    server = four_workers
    client = PollingClient(server)
    try:
        await connect_v4(client)
        first = asyncio.create_task(client.get())
        await asyncio.sleep(0.2)
        second = await client.http.get("/socket.io/", params=client.params())
        assert second.status_code == 400 and second.json()["code"] == 3
        assert await asyncio.wait_for(first, 5) == ["1"]
        assert await server.total("pushscale_client_errors_total", reason="overlapping_poll") == 1
        assert await server.total("socket_io_connected") == 0
    finally:
        await client.close()


def _sid_of(worker: int) -> str:
    return eio.SID_ALPHABET[worker] + "A" * (eio.SID_LENGTH - 1)


@pytest.mark.parametrize(
    ("method", "params", "body", "status", "code"),
    [
        ("GET", {"EIO": "4", "transport": "polling", "sid": _sid_of(0)}, None, 400, 1),
        ("GET", {"EIO": "4", "transport": "polling", "sid": _sid_of(1)}, None, 400, 1),
        ("GET", {"EIO": "4", "transport": "polling", "sid": _sid_of(9)}, None, 400, 1),
        ("GET", {"EIO": "4", "transport": "polling", "sid": "x"}, None, 400, 1),
        ("POST", {"EIO": "4", "transport": "polling"}, "40", 400, 2),
        ("GET", {"EIO": "4", "transport": "carrier-pigeon"}, None, 400, 0),
        ("GET", {"EIO": "9", "transport": "polling"}, None, 400, 5),
        ("GET", {"EIO": "3", "transport": "polling", "j": "0"}, None, 400, 3),
    ],
    ids=[
        "unknown-sid", "unknown-sid-of-sibling", "sid-of-no-worker", "malformed-sid",
        "post-without-session", "unknown-transport", "unknown-version", "jsonp",
    ],
)  # fmt: skip
async def test_bad_requests_get_engine_ios_errors(
    server_factory, method, params, body, status, code
):
    server = server_factory(workers=2)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.request(method, "/socket.io/", params=params, content=body)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ("4" + "x" * 20_000, 413, "payload_too_large"),
        ("\x1e\x1e", 400, "malformed_packet"),
        ("b!!!", 400, "malformed_packet"),
        ("9what", 400, "malformed_packet"),
        ('42["joinByGameId"', 200, "malformed_packet"),
    ],
    ids=["oversized", "empty-packets", "bad-base64", "bad-type", "bad-socket-io"],
)
async def test_bad_payloads_close_the_session_without_a_traceback(
    four_workers, body, status, reason
):
    server = four_workers
    client = PollingClient(server)
    try:
        await connect_v4(client)
        response = await client.http.post("/socket.io/", params=client.params(), content=body)
        # The engine takes a packet it can frame; socket.io then refuses what is inside.
        assert response.status_code == status
        if status != 200:
            assert response.json() == {"code": 3, "message": "Bad request"}
        await eventually(
            lambda: _total_is(server, "socket_io_connected", 0), what="the session to close"
        )
        assert await server.total("pushscale_client_errors_total", reason=reason) >= 1
        log = server.log()
        assert "Traceback" not in log
        assert log.count("closing") <= 1, "no log line per packet"
    finally:
        await client.close()


async def test_eio3_refused_when_turned_off(server_factory):
    server = server_factory(workers=2, extra=["--no-allow-eio3"])
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/socket.io/", params={"EIO": "3", "transport": "polling"})
    assert response.status_code == 400
    assert response.json() == {"code": 5, "message": "Unsupported protocol version"}
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=3&transport=websocket"
        )


async def test_polling_sessions_fill_max_connections_and_spend_the_event_budget(server_factory):
    server = server_factory(workers=1, extra=["--max-connections", "1"])
    client, second = PollingClient(server), PollingClient(server)
    try:
        await connect_v4(client)
        response = await second.http.get("/socket.io/", params=second.params())
        assert response.status_code == 503
        assert await server.total("pushscale_connections_rejected_total", reason="overload") == 1
        # Noops spend the budget like websocket frames: 2 x burst (40) of them is a flood.
        for _ in range(2):
            await client.post(*["6"] * 64)
        await eventually(
            lambda: _total_is(server, "socket_io_connected", 0), what="the flood disconnect"
        )
        assert await server.total("pushscale_client_errors_total", reason="flood") == 1
        assert "Traceback" not in server.log()
    finally:
        await client.close()
        await second.close()


async def test_v3_over_websocket_alone(four_workers):
    server = four_workers
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=3&transport=websocket"
    async with websockets.connect(url) as ws:
        opening = await ws.recv()
        assert isinstance(opening, str) and json.loads(opening[1:])["upgrades"] == []
        assert await ws.recv() == "40"
        await ws.send("2")
        assert await ws.recv() == "3"
        await ws.send('421["joinByGameId",{"gameId":"ws3"}]')
        reply = await ws.recv()
        assert isinstance(reply, str) and reply.startswith("431[")
        assert await server.total("pushscale_sockets", transport="websocket", protocol="3") == 1
