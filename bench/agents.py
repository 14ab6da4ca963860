"""Load-generator processes for bench/compare.py, each driving thousands of
`pushkit.sioclient.SocketIOClient`s, noting when each event arrives.

The parent sends commands over a pipe; each agent runs its own uvloop, pinned to a CPU the
server does not use, and binds its own loopback source address so agents never share (or run
out of) ephemeral ports. An agent holds at most `MAX_PER_AGENT` sockets: this machine caps open
files at 20000 per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from pushkit.sioclient import SocketIOClient

MAX_PER_AGENT = 9000
CONNECT_TIMEOUT_SECONDS = 5.0


class _Agent:
    def __init__(self, source_ip: str) -> None:
        self.source_ip = source_ip
        self.clients: list[SocketIOClient] = []
        self.events = 0
        self.last_event = 0.0

    def _event(self, packet: bytes, at: float) -> None:
        self.events += 1
        self.last_event = max(self.last_event, at)

    async def open(self, port: int, count: int, rate: float, game: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started: dict[int, float] = {}
        latencies: list[float] = []
        last_connected = [0.0]
        failures: list[str] = []
        done = asyncio.Event()
        pending = [count]

        def finished() -> None:
            pending[0] -= 1
            if pending[0] == 0:
                done.set()

        def connected(client: SocketIOClient) -> None:
            latency = time.monotonic() - started[id(client)]
            latencies.append(latency)
            last_connected[0] = time.monotonic()
            if latency > CONNECT_TIMEOUT_SECONDS:
                failures.append(f"connected after {latency:.1f} s")
            finished()

        def failed(why: str) -> None:
            failures.append(why)
            finished()

        def closed(client: SocketIOClient, reason: str, was_connected: bool) -> None:
            if not was_connected:
                failed(reason)

        async def one() -> None:
            client = SocketIOClient("127.0.0.1", port, game, connected, closed, self._event)
            started[id(client)] = time.monotonic()
            try:
                await loop.create_connection(
                    lambda: client, "127.0.0.1", port, local_addr=(self.source_ip, 0)
                )
                self.clients.append(client)
            except OSError as exc:
                failed(f"connect: {exc.strerror}")

        begin = time.monotonic()
        openers = []
        for i in range(count):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            openers.append(asyncio.create_task(one()))
        issued = time.monotonic() - begin
        await asyncio.gather(*openers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS * 4):
                await done.wait()
        if pending[0] > 0:
            failures.append(f"{pending[0]} never connected")
        latencies.sort()
        return {
            "opened": len(latencies),
            "failures": len(failures) + max(0, pending[0] - 1),
            "why": failures[:3],
            "seconds": time.monotonic() - begin,
            "p99_connect": latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
            # For callers that merge percentiles across agents or time the achieved rate.
            "latencies": latencies,
            "issued_seconds": issued,
            "last_connected_seconds": max(0.0, last_connected[0] - begin),
        }

    async def close_all(self) -> dict[str, Any]:
        for client in self.clients:
            client.leave()
        self.clients.clear()
        await asyncio.sleep(0.5)
        return {"closed": True}

    def arm(self) -> dict[str, Any]:
        self.events = 0
        self.last_event = 0.0
        return {"armed": True}

    async def arrivals(self, expected: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.events < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return {"events": self.events, "last": self.last_event}

    def alive(self) -> dict[str, Any]:
        return {"connected": sum(1 for c in self.clients if c.connected and not c.finished)}


async def _serve(pipe: Connection, source_ip: str) -> None:
    agent = _Agent(source_ip)
    loop = asyncio.get_running_loop()
    while True:
        command, args = await loop.run_in_executor(None, pipe.recv)
        if command == "stop":
            await agent.close_all()
            pipe.send({"stopped": True})
            return
        handler = getattr(agent, command)
        result = handler(*args)
        if asyncio.iscoroutine(result):
            result = await result
        pipe.send(result)


def _main(pipe: Connection, source_ip: str, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    uvloop.run(_serve(pipe, source_ip))


class Agents:
    """A pool of agent processes the parent drives in lockstep."""

    def __init__(self, count: int, cpu: int | None) -> None:
        context = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[mp.process.BaseProcess] = []
        for i in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=_main, args=(theirs, f"127.0.0.{10 + i}", cpu))
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def call(
        self, command: str, per_agent_args: dict[int, tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        for index, args in per_agent_args.items():
            self.pipes[index].send((command, args))
        return [self.pipes[index].recv() for index in per_agent_args]

    def broadcast(self, command: str, *args: Any) -> list[dict[str, Any]]:
        return self.call(command, dict.fromkeys(range(len(self.pipes)), args))

    def open(
        self, port: int, total: int, rate: float, game: str, first_agent: int = 0
    ) -> dict[str, Any]:
        """Open `total` sockets at `rate` per second on agents from `first_agent` on, as few
        as fit; returns the totals and the next free agent in "next_agent"."""
        shares = [MAX_PER_AGENT] * (total // MAX_PER_AGENT)
        if total % MAX_PER_AGENT:
            shares.append(total % MAX_PER_AGENT)
        if first_agent + len(shares) > len(self.pipes):
            raise ValueError(f"{total} more sockets need {len(shares)} more agents")
        results = self.call(
            "open",
            {
                first_agent + i: (port, share, rate * share / total, game)
                for i, share in enumerate(shares)
            },
        )
        return {
            "opened": sum(r["opened"] for r in results),
            "failures": sum(r["failures"] for r in results),
            "why": [w for r in results for w in r["why"]][:3],
            "seconds": max(r["seconds"] for r in results),
            "p99_connect": max(r["p99_connect"] for r in results),
            "next_agent": first_agent + len(shares),
        }

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.broadcast("stop")
        for process in self.processes:
            process.join(10)
