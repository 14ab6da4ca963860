"""The load generator of `pushscale demo`: processes holding thousands of socket.io viewers.

`pushscale.demo.stack` starts agents through `LoadGenerator.spawn`: each is `python -m
pushscale.loadgen` and takes one JSON command per line on stdin (`target`, `churn`, `status`,
`freeze`), answering each with one JSON status line on stdout. An agent keeps `target` viewers
(`pushkit.sioclient`), each connecting to one of the push servers' addresses and ports picked at
random (what the Service's load balancing does in a cluster), at most `--rate` new viewers a
second. A viewer whose transport closes (a shed, a drain, a missed heartbeat) reconnects as
socket.io-client does, after `adapter.simulator.backoff`'s delays with the given options (the
seed's: 10 s, at most 20 s, randomization 1), to an address and port picked again; one that
fails `reconnectionAttempts` times in a row gives up (socket.io-client's `reconnect_failed`) and
a new viewer takes its place. Like socket.io-client's `timeout` option, a handshake not done in
`--timeout` seconds (the TCP connect included) is a failed attempt. Stdin closing — the demo
ended, however — closes every viewer and ends the agent, so an agent never outlives the demo.
`bench.seed` drives the same agents, each from its own source address (`--source`), to hold the
seed's 160k connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from adapter.simulator.backoff import ClientOptions, duration_ms
from pushkit.sioclient import SERVER_DISCONNECT, SocketIOClient
from pushserver.limits import raise_open_file_limit

# The games viewers join, so the rooms look like a few live matches.
GAMES = 8
_PACE_SECONDS = 0.02
_ANSWER_TIMEOUT_SECONDS = 10.0
# The seed's socket.io-client `timeout` (5000 ms).
SEED_TIMEOUT_SECONDS = 5.0
# Connect latencies are counted in buckets ten to a decade, from 1 ms (bucket 0: under 1 ms) to
# 100 s, so agents' histograms add up and any percentile is known to within 26%.
LATENCY_BUCKETS = 51


def latency_bucket(seconds: float) -> int:
    if seconds < 0.001:
        return 0
    return min(LATENCY_BUCKETS - 1, 1 + int(10 * math.log10(seconds * 1000)))


def bucket_upper_seconds(bucket: int) -> float:
    """The latency every connect counted in `bucket` is below."""
    return 10 ** (bucket / 10) / 1000


def latency_percentile(buckets: Sequence[int], q: float) -> float:
    """An upper bound of the q-quantile of the latencies counted in `buckets`."""
    total = sum(buckets)
    if total == 0:
        return 0.0
    rank, seen = q * total, 0
    for bucket, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return bucket_upper_seconds(bucket)
    return bucket_upper_seconds(len(buckets) - 1)


@dataclass(eq=False)
class _Viewer:
    number: int
    client: SocketIOClient | None = None
    attempt: int = 0  # reconnect attempts since the last success (socket.io's backoff.attempts)
    retry: asyncio.TimerHandle | None = None
    started: float = 0.0  # when the current attempt began
    seen_connected: bool = False
    left: bool = False


@dataclass
class _Agent:
    hosts: tuple[str, ...]
    ports: tuple[int, ...]
    options: ClientOptions
    rate: float
    source: str | None = None
    timeout: float = SEED_TIMEOUT_SECONDS
    rng: random.Random = field(default_factory=random.Random)
    target: int = 0
    frozen: bool = False
    viewers: dict[int, _Viewer] = field(default_factory=dict)
    connected: Counter[int] = field(default_factory=Counter)
    numbered: int = 0
    connects: int = 0
    reconnects: int = 0
    failures: int = 0
    drops: int = 0
    dropped: int = 0
    reconnect_failed: int = 0
    latencies: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    last_error: str | None = None
    _opening: set[asyncio.Future[Any]] = field(default_factory=set)

    async def pace_forever(self) -> None:
        """Add viewers up to the target, at most `rate` a second."""
        loop = asyncio.get_running_loop()
        allowance, last = 0.0, loop.time()
        while True:
            await asyncio.sleep(_PACE_SECONDS)
            now = loop.time()
            allowance = min(allowance + self.rate * (now - last), self.rate * 0.1 + 1)
            last = now
            while not self.frozen and len(self.viewers) < self.target and allowance >= 1:
                allowance -= 1
                self.numbered += 1
                viewer = _Viewer(self.numbered)
                self.viewers[viewer.number] = viewer
                self._connect(viewer)

    def _connect(self, viewer: _Viewer) -> None:
        viewer.retry = None
        if viewer.left or self.frozen:
            return
        host, port = self.rng.choice(self.hosts), self.rng.choice(self.ports)
        game = str(viewer.number % GAMES)
        loop = asyncio.get_running_loop()
        viewer.started = loop.time()
        client = SocketIOClient(
            host, port, game,
            lambda c: self._on_connected(viewer, c),
            lambda c, reason, was: self._on_closed(viewer, c, reason, was),
            timeout=self.timeout,
        )  # fmt: skip
        viewer.client = client
        local = None if self.source is None else (self.source, 0)
        opening = asyncio.ensure_future(
            asyncio.wait_for(
                loop.create_connection(lambda: client, host, port, local_addr=local),
                self.timeout,
            )
        )
        self._opening.add(opening)

        def opened(task: asyncio.Future[Any]) -> None:
            self._opening.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                why = "timeout" if isinstance(exc, TimeoutError) else exc
                client.fail(f"connect: {getattr(exc, 'strerror', None) or why}")

        opening.add_done_callback(opened)

    def _on_connected(self, viewer: _Viewer, client: SocketIOClient) -> None:
        self.connected[client.port] += 1
        self.connects += 1
        self.latencies[latency_bucket(asyncio.get_running_loop().time() - viewer.started)] += 1
        if viewer.seen_connected:
            self.reconnects += 1
        viewer.seen_connected = True
        viewer.attempt = 0  # socket.io-client resets its backoff on a successful open

    def _on_closed(self, viewer: _Viewer, client: SocketIOClient, reason: str, was: bool) -> None:
        if was:
            self.connected[client.port] -= 1
            self.drops += 1
        if viewer.client is client:
            viewer.client = None
        if viewer.left:
            return
        if reason == SERVER_DISCONNECT:
            # socket.io-client does not come back after this; a new viewer takes the place.
            self.dropped += 1
            self.viewers.pop(viewer.number, None)
            return
        if not was:
            self.failures += 1
            self.last_error = reason
        if self.frozen:
            return
        if viewer.attempt >= self.options.reconnection_attempts:
            # socket.io-client's `reconnect_failed`: this user is lost; a new one takes the place.
            self.reconnect_failed += 1
            self.viewers.pop(viewer.number, None)
            return
        delay = duration_ms(self.options, viewer.attempt, self.rng.random()) / 1000
        viewer.attempt += 1
        viewer.retry = asyncio.get_running_loop().call_later(delay, self._connect, viewer)

    def _leave(self, viewer: _Viewer) -> None:
        viewer.left = True
        if viewer.retry is not None:
            viewer.retry.cancel()
        if viewer.client is not None:
            viewer.client.leave()
        self.viewers.pop(viewer.number, None)

    def set_target(self, count: int) -> None:
        self.target = max(0, count)
        excess = len(self.viewers) - self.target
        if excess > 0:
            for viewer in self.rng.sample(list(self.viewers.values()), excess):
                self._leave(viewer)

    def churn(self, count: int) -> None:
        """`count` viewers leave; the pacer brings as many new ones."""
        for viewer in self.rng.sample(list(self.viewers.values()), min(count, len(self.viewers))):
            self._leave(viewer)

    def freeze(self) -> None:
        """No more connects or reconnects: the demo is stopping and the servers drain."""
        self.frozen = True
        for viewer in self.viewers.values():
            if viewer.retry is not None:
                viewer.retry.cancel()
                viewer.retry = None

    def leave_all(self) -> None:
        self.frozen = True
        for viewer in list(self.viewers.values()):
            self._leave(viewer)

    def status(self) -> dict[str, Any]:
        states = Counter(
            "waiting" if v.retry is not None else "connecting"
            for v in self.viewers.values()
            if v.client is None or not v.client.connected
        )
        return {
            "connected": {str(port): self.connected[port] for port in self.ports},
            "viewers": len(self.viewers),
            "target": self.target,
            "connecting": states["connecting"],
            "waiting": states["waiting"],
            "connects": self.connects,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "drops": self.drops,
            "dropped": self.dropped,
            "reconnectFailed": self.reconnect_failed,
            "latencies": self.latencies,
            "lastError": self.last_error,
        }


async def _serve(agent: _Agent) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    pacer = asyncio.create_task(agent.pace_forever())
    lines = asyncio.create_task(_commands(agent, reader))
    ender = asyncio.create_task(done.wait())
    await asyncio.wait({lines, ender, pacer}, return_when=asyncio.FIRST_COMPLETED)
    for task in (lines, ender, pacer):
        task.cancel()
    agent.leave_all()
    # Let the goodbyes reach the sockets before the process exits.
    await asyncio.sleep(0.3)


async def _commands(agent: _Agent, reader: asyncio.StreamReader) -> None:
    while line := await reader.readline():
        command = json.loads(line)
        op, count = command.get("op"), int(command.get("count", 0))
        if op == "target":
            agent.set_target(count)
        elif op == "churn":
            agent.churn(count)
        elif op == "freeze":
            agent.freeze()
        sys.stdout.write(json.dumps(agent.status()) + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pushscale.loadgen")
    parser.add_argument("--host", default="127.0.0.1", help="comma-separated addresses")
    parser.add_argument("--ports", required=True, help="comma-separated client ports")
    parser.add_argument("--rate", type=float, default=500.0, help="new viewers per second")
    parser.add_argument("--reconnect-delay-ms", type=float, default=10_000)
    parser.add_argument("--reconnect-delay-max-ms", type=float, default=20_000)
    parser.add_argument("--randomization-factor", type=float, default=1.0)
    parser.add_argument("--reconnection-attempts", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=SEED_TIMEOUT_SECONDS, help="seconds")
    parser.add_argument("--source", help="source address of every connection (default: any)")
    args = parser.parse_args(argv)
    # The demo owns Ctrl-C; this process ends when told to, or when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_open_file_limit()
    options = ClientOptions(
        reconnection_delay_ms=args.reconnect_delay_ms,
        reconnection_delay_max_ms=args.reconnect_delay_max_ms,
        randomization_factor=args.randomization_factor,
        reconnection_attempts=args.reconnection_attempts,
    )
    ports = tuple(int(port) for port in args.ports.split(","))
    hosts = tuple(args.host.split(","))
    agent = _Agent(hosts, ports, options, args.rate, args.source, args.timeout)
    uvloop.run(_serve(agent))
    return 0


@dataclass(frozen=True)
class LoadStatus:
    """What the viewers themselves report, summed over the agents."""

    connected: dict[int, int]  # by client port
    viewers: int = 0
    target: int = 0
    connecting: int = 0
    waiting: int = 0
    connects: int = 0
    reconnects: int = 0
    failures: int = 0
    drops: int = 0
    dropped: int = 0
    reconnect_failed: int = 0
    latencies: tuple[int, ...] = (0,) * LATENCY_BUCKETS
    last_error: str | None = None

    @classmethod
    def merge(cls, answers: Sequence[dict[str, Any]]) -> LoadStatus:
        connected: Counter[int] = Counter()
        for answer in answers:
            connected.update({int(port): n for port, n in answer["connected"].items()})
        errors = [a["lastError"] for a in answers if a.get("lastError")]
        sums = {
            name: sum(int(a[key]) for a in answers)
            for name, key in (("viewers", "viewers"), ("target", "target"),
                              ("connecting", "connecting"), ("waiting", "waiting"),
                              ("connects", "connects"), ("reconnects", "reconnects"),
                              ("failures", "failures"), ("drops", "drops"),
                              ("dropped", "dropped"), ("reconnect_failed", "reconnectFailed"))
        }  # fmt: skip
        latencies = tuple(map(sum, zip(*(a["latencies"] for a in answers), strict=True)))
        return cls(
            dict(connected), latencies=latencies or (0,) * LATENCY_BUCKETS,
            last_error=errors[-1] if errors else None, **sums,
        )  # fmt: skip


class LoadGenerator:
    """The demo's end of the pipes to its agents."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes
        self._locks = [asyncio.Lock() for _ in processes]

    @classmethod
    async def spawn(
        cls, count: int, ports: Sequence[int], rate: float, options: ClientOptions,
        log_dir: Path, env: dict[str, str], host: str = "127.0.0.1",
        sources: Sequence[str] = (),
    ) -> LoadGenerator:  # fmt: skip
        """`count` agents sharing `rate`; agent i connects from `sources[i]` if given."""
        processes = []
        for i in range(count):
            source = ["--source", sources[i]] if sources else []
            with (log_dir / f"loadgen-{i}.log").open("wb") as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "pushscale.loadgen", "--host", host,
                        "--ports", ",".join(map(str, ports)), "--rate", str(rate / count),
                        "--reconnect-delay-ms", str(options.reconnection_delay_ms),
                        "--reconnect-delay-max-ms", str(options.reconnection_delay_max_ms),
                        "--randomization-factor", str(options.randomization_factor),
                        "--reconnection-attempts", str(options.reconnection_attempts),
                        *source,
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                        stderr=log, env=env, start_new_session=True,
                    )
                )  # fmt: skip
        return cls(processes)

    async def _ask(self, index: int, op: str, count: int = 0) -> dict[str, Any]:
        process = self.processes[index]
        assert process.stdin is not None and process.stdout is not None
        async with self._locks[index]:
            process.stdin.write(json.dumps({"op": op, "count": count}).encode() + b"\n")
            await process.stdin.drain()
            async with asyncio.timeout(_ANSWER_TIMEOUT_SECONDS):
                line = await process.stdout.readline()
        if not line:
            raise ConnectionError(f"load generator {index} (pid {process.pid}) is gone")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def _each(self, op: str, total: int = 0) -> LoadStatus:
        n = len(self.processes)
        shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
        return LoadStatus.merge(
            await asyncio.gather(*(self._ask(i, op, shares[i]) for i in range(n)))
        )

    async def set_target(self, total: int) -> LoadStatus:
        return await self._each("target", total)

    async def churn(self, total: int) -> LoadStatus:
        return await self._each("churn", total)

    async def status(self) -> LoadStatus:
        return await self._each("status")

    async def freeze(self) -> None:
        with contextlib.suppress(Exception):
            await self._each("freeze")

    def dead(self) -> list[asyncio.subprocess.Process]:
        return [p for p in self.processes if p.returncode is not None]

    async def stop(self, timeout: float = 10.0) -> None:
        """Close every agent's stdin (each then closes its viewers and exits)."""
        for process in self.processes:
            if process.stdin is not None and not process.stdin.is_closing():
                process.stdin.close()
        for process in self.processes:
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


if __name__ == "__main__":
    sys.exit(main())
