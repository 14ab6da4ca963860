"""What a connect costs the server: websocket only against long-polling then the upgrade.

    .venv/bin/python -m bench.transports [--connections 300] [--concurrency 8]

One 1-worker pod (so nothing is handed over; `bench/handoff.py` measures that); `--concurrency`
clients each making connections one after another, each to a socket.io CONNECT and closed again:

- websocket: the upgrade, OPEN, `40` → `40{sid}`;
- polling → websocket (socket.io-client's default): GET (OPEN), POST `40`, GET (`40{sid}`), the
  websocket upgrade with `2probe`/`3probe` and `5`, each HTTP request on a new connection.

Printed: connects per second (at 1, a latency more than a capacity figure; at 8 the worker is
the limit) and the worker's CPU per connect, with the ratio polling/websocket. One run on a
shared machine: quote the ratio. Not a phase of `bench/compare.py`, whose load generator speaks
websocket only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import websockets

from bench.handoff import start_pod
from bench.procfs import cpu_seconds
from pushkit.progress import draw_bar, finish_bar


async def websocket_connect(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws:
        await ws.recv()
        await ws.send("40")
        await ws.recv()


async def polling_then_upgrade(port: int, http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{port}/socket.io/"
    opening = (await http.get(url, params={"EIO": "4", "transport": "polling"})).text
    sid = json.loads(opening[1:])["sid"]
    params = {"EIO": "4", "transport": "polling", "sid": sid}
    (await http.post(url, params=params, content="40")).raise_for_status()
    # A heartbeat PING may come first in the same payload.
    answer = (await http.get(url, params=params)).text
    assert any(packet.startswith("40") for packet in answer.split("\x1e")), answer
    upgrade = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    async with websockets.connect(upgrade) as ws:
        await ws.send("2probe")
        assert await ws.recv() == "3probe"
        await ws.send("5")


async def measure(connections: int, concurrency: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        process, info = start_pod(1, Path(tmp))
        try:
            port = int(info["port"])  # type: ignore[call-overload]
            pid = int(info["workers"][0])  # type: ignore[index]
            fresh = httpx.Limits(max_keepalive_connections=0, max_connections=None)
            async with httpx.AsyncClient(limits=fresh, timeout=10) as http:
                for name in ("websocket", "polling → websocket"):
                    done = 0

                    async def client(count: int, name: str = name) -> None:
                        nonlocal done
                        for _ in range(count):
                            if name == "websocket":
                                await websocket_connect(port)
                            else:
                                await polling_then_upgrade(port, http)
                            done += 1
                            draw_bar(name, done, connections)

                    shares = [connections // concurrency] * concurrency
                    shares[0] += connections - sum(shares)
                    cpu_before, started = cpu_seconds(pid), time.perf_counter()
                    await asyncio.gather(*(client(share) for share in shares))
                    elapsed = time.perf_counter() - started
                    cpu = cpu_seconds(pid) - cpu_before
                    finish_bar()
                    results[name] = (connections / elapsed, cpu / connections * 1e6)
                    await asyncio.sleep(1)  # the closed sockets' disconnects settle
        finally:
            process.terminate()
            process.wait(30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once")
    args = parser.parse_args()
    results = asyncio.run(measure(args.connections, args.concurrency))
    print(f"{args.connections} connects, {args.concurrency} at a time, one 1-worker pod")
    print(f"{'transport':<22}{'connects/s':>11}{'CPU µs/connect':>16}")
    for name, (rate, cpu) in results.items():
        print(f"{name:<22}{rate:>11.0f}{cpu:>16.0f}")
    (ws_rate, ws_cpu), (poll_rate, poll_cpu) = results.values()
    print(f"{'ratio polling/ws':<22}{poll_rate / ws_rate:>11.2f}{poll_cpu / ws_cpu:>16.2f}")


if __name__ == "__main__":
    main()
