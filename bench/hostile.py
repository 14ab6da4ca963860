"""What each hostile input gets from a real `pushscale server`, and what it costs the log.

    .venv/bin/python -m bench.hostile [--workers 2] [--bad-packets 1000]

Starts `pushscale server` (embedded Redis, short connect and header timeouts so the run is
quick), keeps a few well-behaved bystanders connected, then tries each attack from a fresh
connection and prints what the attacker got back, the counter that went up, and whether
`socket_io_connected` still equals the bystanders. Last, it sends `--bad-packets` malformed
packets (one per connection, five kinds) and counts the log lines they produced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from pushkit.progress import draw_bar, finish_bar

TOKEN = secrets.token_urlsafe(24)
CONNECT_TIMEOUT, HEADER_TIMEOUT = 2, 2


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    metrics_ports: list[int]
    log: Path

    def log_lines(self) -> int:
        return self.log.read_text(errors="replace").count("\n")


def start(workers: int, tmp: Path) -> Server:
    ready, log = tmp / "ready.json", tmp / "server.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pushserver", "--workers", str(workers), "--host", "127.0.0.1",
            "--port", "0", "--metrics-port", "0", "--ready-file", str(ready),
            "--publish-token", TOKEN, "--event-rate", "20", "--event-burst", "40",
            "--connect-timeout", str(CONNECT_TIMEOUT), "--header-timeout", str(HEADER_TIMEOUT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start; its log:\n{log.read_text()}")
        time.sleep(0.1)
    info = json.loads(ready.read_text())
    return Server(process, info["port"], info["metrics_ports"], log)


async def totals(server: Server) -> dict[str, float]:
    """Every sample summed over the workers, keyed by its name and labels."""
    summed: dict[str, float] = {}
    async with httpx.AsyncClient() as http:
        for port in server.metrics_ports:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    key, _, value = line.rpartition(" ")
                    summed[key] = summed.get(key, 0.0) + float(value)
    return summed


async def raw(server: Server, connect: bool = True) -> ClientConnection:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        max_size=None,
        ping_interval=None,
    )
    await ws.recv()
    if connect:
        await ws.send("40")
        await ws.recv()
    return ws


async def outcome(ws: ClientConnection, wait: float = 10) -> str:
    """What the attacker sees: the close code, or that the socket stayed open."""
    try:
        async with asyncio.timeout(wait):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as closed:
        return f"close {closed.rcvd.code}" if closed.rcvd else "dropped"
    except TimeoutError:
        await ws.close()
        return "stays open"


def frames(*texts: str) -> Callable[[Server], Awaitable[str]]:
    async def attack(server: Server) -> str:
        ws = await raw(server)
        for text in texts:
            await ws.send(text)
        return await outcome(ws, wait=3)

    return attack


async def duplicate_connect(server: Server) -> str:
    return await frames("40")(server)


async def pings(server: Server) -> str:
    ws = await raw(server)
    try:
        for _ in range(1000):
            await ws.ping()
    except websockets.ConnectionClosed:
        pass
    return await outcome(ws)


async def never_connects(server: Server) -> str:
    return await outcome(await raw(server, connect=False), wait=CONNECT_TIMEOUT + 5)


async def slow_headers(server: Server) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 5)
    writer.close()
    await writer.wait_closed()
    return "HTTP " + answer.split(b" ", 2)[1].decode()


def publish(data: bytes) -> Callable[[Server], Awaitable[str]]:
    async def attack(server: Server) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{server.port}/publish",
                content=b'{"gameId":"1","event":"tick","data":' + data + b"}",
                headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            )
        return f"HTTP {response.status_code} {response.json()['error']}"

    return attack


def err(reason: str) -> str:
    return f'pushscale_client_errors_total{{reason="{reason}"}}'


REJECTED_HEADERS = 'pushscale_connections_rejected_total{reason="header_timeout"}'
OTHER_EVENTS = 'socket_io_events_received_total{event="other"}'
PUBLISH_400 = 'pushscale_publish_requests_total{code="400"}'
BINARY = '451-["x",{"_placeholder":true,"num":0}]'

# (case, attack, the counter it should move)
CASES: list[tuple[str, Callable[[Server], Awaitable[str]], str]] = [
    ("not engine.io", frames("hello"), err("malformed_packet")),
    ("nesting 5000 deep", frames("42" + "[" * 5000), err("too_deep")),
    ("NaN in an event", frames('42["x",NaN]'), err("not_finite")),
    ("400-digit number", frames('42["x",' + "9" * 400 + "]"), err("not_finite")),
    ("ack id 10^30", frames("42" + "9" * 30 + '["x"]'), err("malformed_packet")),
    ("binary packet", frames(BINARY), err("binary_packet")),
    ("CONNECT_ERROR", frames('44{"message":"x"}'), err("unexpected_packet")),
    ("second CONNECT", duplicate_connect, err("duplicate_connect")),
    ('42["connect",{}]', frames('42["connect",{}]', '42["disconnect","x"]'), OTHER_EVENTS),
    ("1000 ACKs", frames(*(f"43{i}[]" for i in range(1000))), err("flood")),
    ("1000 engine.io noops", frames(*("6" for _ in range(1000))), err("flood")),
    ("1000 websocket pings", pings, err("flood")),
    ("20 KB frame", frames('42["x","' + "x" * 20_000 + '"]'), err("payload_too_large")),
    ("no socket.io CONNECT", never_connects, err("connect_timeout")),
    ("headers never end", slow_headers, REJECTED_HEADERS),
    ("publish NaN", publish(b"NaN"), PUBLISH_400),
    ("publish 1e400", publish(b"1e400"), PUBLISH_400),
    ("publish 100k deep", publish(b"[" * 100_000), PUBLISH_400),
]

BAD_PACKETS = ("hello", "42" + "[" * 5000, '42["x",NaN]', "451-[]", "44{}")


async def bystanders(server: Server, count: int) -> list[ClientConnection]:
    return [await raw(server) for _ in range(count)]


async def run(args: argparse.Namespace, server: Server) -> None:
    calm = await bystanders(server, 3)
    rows = []
    for i, (case, attack, counter) in enumerate(CASES):
        draw_bar("attacks", i, len(CASES))
        was = await totals(server)
        got = await attack(server)
        await asyncio.sleep(0.3)
        now = await totals(server)
        connected = now["socket_io_connected"]
        moved = f"+{now.get(counter, 0) - was.get(counter, 0):g} {counter}"
        rows.append((case, got, "yes" if connected == len(calm) else f"NO ({connected})", moved))
    draw_bar("attacks", len(CASES), len(CASES))
    finish_bar()

    before = server.log_lines()
    errors_before = (await totals(server))["socket_io_errors_total"]

    async def one(frame: str) -> None:
        ws = await raw(server)
        await ws.send(frame)
        await outcome(ws)

    for start in range(0, args.bad_packets, 50):
        batch = range(start, min(start + 50, args.bad_packets))
        await asyncio.gather(*(one(BAD_PACKETS[i % len(BAD_PACKETS)]) for i in batch))
        draw_bar("bad packets", batch[-1] + 1, args.bad_packets)
    finish_bar()
    await asyncio.sleep(0.5)
    after = await totals(server)
    grown = server.log_lines() - before
    for ws in calm:
        await ws.close()

    width = max(len(r[0]) for r in rows)
    print(f"\n{'attack':<{width}}  {'attacker gets':<22} {'count exact':<11}  counted")
    for case, got, exact, moved in rows:
        print(f"{case:<{width}}  {got:<22} {exact:<11}  {moved}")
    print(
        f"\n{args.bad_packets} bad packets ({len(BAD_PACKETS)} kinds, {args.workers} workers): "
        f"{after['socket_io_errors_total'] - errors_before:.0f} counted in "
        f"socket_io_errors_total, {grown} log lines"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bad-packets", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(args.workers, Path(tmp))
        try:
            asyncio.run(run(args, server))
        finally:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)


if __name__ == "__main__":
    main()
