"""One worker: `python -m pushserver.worker CONTROL_FD CLIENT_FD METRICS_FD INDEX HANDOFF_FDS`.

Started only by `pushserver.supervisor`, which binds the sockets and passes them in, then sends
the settings as one JSON line over the control socket (so the publish token never shows in
`ps` or the environment). The worker answers `{"ready": true}` once it serves both ports, or
`{"error": "..."}` if it cannot start. It serves:

- the client port (shared with its sibling workers): websockets go to `pushserver.engine` and
  socket.io (`pushserver.push`), plain HTTP to `pushserver.routes` (long-polling among it);
  requests for a sibling's engine.io sessions go to that sibling (`pushserver.handoff`, over
  HANDOFF_FDS: one descriptor per worker slot, this worker's own the one it receives on);
- its own metrics port: `pushserver.exposition`.

SIGTERM, SIGINT and SIGQUIT start a drain (`pushserver.shedding`): readiness fails, new websockets
are refused, every client's transport is closed, paced over `--drain-seconds`, so it reconnects
elsewhere; then the process exits 0. The control socket closing (the supervisor died) drains too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import uvicorn
import uvloop

from pushkit.logs import configure_logging
from pushserver.exposition import ProcessCollector, WorkerIdentity, worker_registry
from pushserver.fanout import PublishFailed, RoomFanout
from pushserver.fanout_messages import max_message_bytes
from pushserver.handoff import Handoff
from pushserver.httpguard import HttpGuard, guarded_http, handed_protocol
from pushserver.polling import Polling
from pushserver.push import PushServer
from pushserver.redis_access import RedisAccess
from pushserver.routes import client_port_app, worker_port_app
from pushserver.settings import ServerSettings
from pushserver.shedding import Shedder
from pushserver.stats import WorkerStats
from pushserver.wsprotocol import protocol_factory

log = logging.getLogger("pushserver.worker")

_SUBSCRIBE_TIMEOUT_SECONDS = 15.0
# How often process_open_fds is recounted (listing /proc/self/fd is O(sockets)).
_FD_COUNT_SECONDS = 5.0


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: the worker owns signals, since it drains first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Worker:
    def __init__(
        self,
        settings: ServerSettings,
        index: int,
        redis: RedisAccess,
        handoff_ends: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.stats = WorkerStats()
        self.handoff = Handoff(index, handoff_ends or [], self.stats)
        self._handing: set[asyncio.Task[Any]] = set()
        self.fanout = RoomFanout(
            redis,
            self.stats,
            f"pushscale:{settings.pod_name}:{index}",
            max_message_bytes(settings.max_publish_bytes),
        )
        self.sio = PushServer(settings, self.stats, self.fanout, index, refusal=self._refusal)
        self.shedder = Shedder(self.sio, self.stats, settings)
        self._drain_started = False
        routes = client_port_app(
            stats=self.stats,
            fanout=self.fanout,
            publish_token=settings.publish_token,
            max_publish_bytes=settings.max_publish_bytes,
            is_ready=lambda: not self.stats.draining,
            polling=Polling(self.sio.eio),
        )
        identity = WorkerIdentity(settings.pod_name, index, version("pushscale"))
        self.process = ProcessCollector()
        common = {
            "lifespan": "off",
            "log_config": None,
            "access_log": False,
            "timeout_graceful_shutdown": 5,
        }

        def guard(port: str) -> type[asyncio.Protocol]:
            return guarded_http(
                HttpGuard(
                    self.stats, port, settings.header_timeout_seconds,
                    settings.max_http_connections,
                    self.handoff if port == "client" and self.handoff.workers > 1 else None,
                )
            )  # fmt: skip

        self.client_server = _Server(
            uvicorn.Config(
                routes,
                http=guard("client"),
                # Plain HTTP goes to `routes`; every websocket upgrade to the engine.
                # uvicorn's type says a class; any callable making a protocol will do.
                ws=protocol_factory(self.sio.eio),  # type: ignore[arg-type]
                **common,  # type: ignore[arg-type]
            )
        )
        self.metrics_server = _Server(
            uvicorn.Config(
                worker_port_app(
                    registry=worker_registry(self.stats, identity, self.process),
                    admin_token=settings.admin_token,
                    shedder=self.shedder,
                    default_interval_ms=settings.shed_interval_ms,
                ),
                http=guard("metrics"),
                **common,  # type: ignore[arg-type]
            )
        )

    def _refusal(self) -> str | None:
        """Why a new websocket must be refused right now, if it must."""
        if self.stats.draining:
            return "draining"
        # engine.io sessions, not socket.io connections: a socket costs memory from the
        # moment its websocket is open.
        if len(self.sio.eio.sessions) >= self.settings.max_connections:
            return "overload"
        return None

    async def run(self, client_sock: socket.socket, metrics_sock: socket.socket) -> None:
        serving = [
            asyncio.create_task(self.client_server.serve(sockets=[client_sock])),
            asyncio.create_task(self.metrics_server.serve(sockets=[metrics_sock])),
        ]
        self.sio.eio.start()
        self.handoff.serve = self._serve_handed
        if self.handoff.workers > 1:
            self.handoff.start()
        rebalancing = asyncio.create_task(self.shedder.rebalance_forever())
        counting_fds = asyncio.create_task(self._count_fds_forever())
        try:
            await asyncio.wait(serving, return_when=asyncio.FIRST_COMPLETED)
            for task in serving:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.gather(*serving)
        finally:
            rebalancing.cancel()
            counting_fds.cancel()

    def _serve_handed(self, sock: socket.socket, data: bytes) -> None:
        """Serve a connection a sibling handed over, as if it had been accepted here."""
        server = self.client_server
        if not server.started or server.should_exit:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(
            loop.connect_accepted_socket(lambda: handed_protocol(server, data), sock)
        )
        self._handing.add(connecting)
        connecting.add_done_callback(self._handed)

    def _handed(self, task: asyncio.Task[Any]) -> None:
        self._handing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The client left while it was handed over: nothing to serve.
            self.stats.handoffs["lost"] += 1

    async def _count_fds_forever(self) -> None:
        while True:
            await asyncio.sleep(_FD_COUNT_SECONDS)
            self.process.refresh_open_fds()

    async def started(self) -> None:
        while not (self.client_server.started and self.metrics_server.started):
            await asyncio.sleep(0.01)

    def start_drain(self, why: str) -> None:
        if self._drain_started:
            return
        self._drain_started = True
        asyncio.get_running_loop().create_task(self._drain(why))

    async def _drain(self, why: str) -> None:
        await self.shedder.drain(why)
        self.client_server.should_exit = True
        self.metrics_server.should_exit = True


async def _serve(
    control: socket.socket,
    client_sock: socket.socket,
    metrics_sock: socket.socket,
    index: int,
    handoff_ends: list[socket.socket],
) -> int:
    reader, writer = await asyncio.open_connection(sock=control)

    def report(message: dict[str, object]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")

    spec = json.loads(await reader.readline())
    settings = ServerSettings.from_json(spec["settings"])
    configure_logging(settings.log_level, f"{settings.pod_name}/worker-{index}")
    redis = RedisAccess.from_dict(spec["redis"])
    worker = Worker(settings, index, redis, handoff_ends)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(signum, worker.start_drain, signal.Signals(signum).name)

    async def lifeline() -> None:
        # Nothing more ever arrives on the control socket; EOF means the supervisor is gone.
        await reader.read()
        worker.start_drain("supervisor gone")

    async def failed(why: str) -> int:
        report({"error": f"worker {index}: {why}"})
        await writer.drain()
        return 3

    lifeline_task = asyncio.create_task(lifeline())
    # Subscribed before serving, so no client is served by a worker that cannot yet receive
    # publishes; clients that arrive meanwhile wait in the listen backlog.
    try:
        await worker.fanout.subscribe(_SUBSCRIBE_TIMEOUT_SECONDS)
    except PublishFailed as exc:
        return await failed(str(exc))
    running = asyncio.create_task(worker.run(client_sock, metrics_sock))
    started = asyncio.create_task(worker.started())
    await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        return await failed(f"stopped while starting: {running.exception()}")
    log.info("serving; redis %s", redis.redacted_url)
    report({"ready": True})
    await writer.drain()
    await running
    lifeline_task.cancel()
    return 0


def main(argv: list[str]) -> int:
    control_fd, client_fd, metrics_fd, index = (int(arg) for arg in argv[:4])
    control = socket.socket(fileno=control_fd)
    client_sock = socket.socket(fileno=client_fd)
    metrics_sock = socket.socket(fileno=metrics_fd)
    handoff_ends = [socket.socket(fileno=int(fd)) for fd in argv[4].split(",") if fd]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(control, client_sock, metrics_sock, index, handoff_ends))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
