"""A socket.io load generator: many idle websocket clients spread over client processes.

Used by the benchmarks in bench/. Each client process opens its share of connections over raw
websockets, doing the engine.io and socket.io handshakes by hand and answering heartbeats, which
costs a fraction of a python-socketio client, so the generator is not the bottleneck. A process
holds at most ~9000 connections: this machine caps open files at 20000 per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import websockets

PER_PROCESS = 9000


async def _hold_one(url: str, game: str, opened: list[int], stop: asyncio.Event) -> None:
    async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
        await ws.recv()  # engine.io OPEN
        await ws.send("40")
        await ws.recv()  # socket.io CONNECT ack
        await ws.send(f'42["joinByGameId",{{"gameId":"{game}"}}]')
        opened[0] += 1
        while not stop.is_set():
            try:
                async with asyncio.timeout(1):
                    frame = await ws.recv()
            except TimeoutError:
                continue
            if frame == "2":  # engine.io PING: answer or the server drops us
                await ws.send("3")


async def _hold(url: str, count: int, rate: float, game: str, pipe: Connection) -> None:
    opened = [0]
    failed = 0
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    for i in range(count):
        # Pace the opens: a fixed rate measures the server, not a SYN flood.
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_hold_one(url, game, opened, stop)))
        if i % 200 == 0:
            pipe.send(("progress", opened[0]))
    while opened[0] + sum(1 for t in tasks if t.done()) < count:
        pipe.send(("progress", opened[0]))
        await asyncio.sleep(0.2)
    failed = sum(1 for t in tasks if t.done() and t.exception() is not None)
    pipe.send(("opened", opened[0], failed))
    await asyncio.to_thread(pipe.recv)  # wait for "close"
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    pipe.send(("closed",))


def _process_main(url: str, count: int, rate: float, game: str, pipe: Connection) -> None:
    asyncio.run(_hold(url, count, rate, game, pipe))


@dataclass
class Crowd:
    """Idle clients held open in child processes until `close()`."""

    processes: list[mp.process.BaseProcess]
    pipes: list[Connection]
    opened: int = 0
    failed: int = 0

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send("close")
        for pipe in self.pipes:
            with contextlib.suppress(EOFError):
                pipe.recv()
        for process in self.processes:
            process.join(30)


def open_crowd(port: int, total: int, rate_per_second: float, game: str = "bench") -> Crowd:
    """Open `total` clients at about `rate_per_second`, drawing a progress bar on stderr."""
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    shares = [PER_PROCESS] * (total // PER_PROCESS) + (
        [total % PER_PROCESS] if total % PER_PROCESS else []
    )
    context = mp.get_context("spawn")
    crowd = Crowd([], [])
    for share in shares:
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_process_main, args=(url, share, rate_per_second / len(shares), game, theirs)
        )
        process.start()
        crowd.processes.append(process)
        crowd.pipes.append(ours)
    progress = [0] * len(shares)
    done = [False] * len(shares)
    shown = -1
    while not all(done):
        for i, pipe in enumerate(crowd.pipes):
            while not done[i] and pipe.poll(0.05):
                message = pipe.recv()
                if message[0] == "progress":
                    progress[i] = message[1]
                else:
                    progress[i], failed = message[1], message[2]
                    crowd.failed += failed
                    done[i] = True
        if sum(progress) != shown:
            shown = sum(progress)
            draw_bar("connecting", shown, total)
    sys.stderr.write("\n")
    crowd.opened = sum(progress)
    return crowd


def draw_bar(label: str, done: int, total: int, width: int = 40) -> None:
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r{label:<12} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()
