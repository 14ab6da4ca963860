"""The supervisor: `pushscale server` itself. What pm2 cluster mode did for the Node server.

Called by `pushserver.cli` with validated settings. It starts (or checks) Redis, binds every port
(`pushserver.listeners`), starts N `pushserver.worker` processes and waits until each says it is
ready, then watches them: a worker that dies is restarted after `pushserver.restarts`' backoff,
and its log line says why it died. SIGTERM, SIGINT and SIGQUIT are forwarded to every worker,
which drains; the supervisor exits 0 once all of them exited cleanly. A second SIGINT (Ctrl-C
twice) kills the workers at once.

Failures before the server is up (a port taken, Redis unreachable, a worker that cannot start)
end the supervisor with a `StartupError` and a message saying what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis.asyncio

from pushkit.program import write_ready_file
from pushserver.embedded_redis import EmbeddedRedisError, start_embedded_redis
from pushserver.handoff import channels
from pushserver.limits import limit_warnings, raise_open_file_limit, read_host_limits
from pushserver.listeners import (
    BACKLOG,
    PortUnavailable,
    claim_client_port,
    client_socket,
    metrics_sockets,
)
from pushserver.redis_access import RedisAccess, describe_failure
from pushserver.restarts import RestartPolicy, describe_exit
from pushserver.settings import ENV_PREFIX, ServerSettings

log = logging.getLogger("pushserver.supervisor")

# A worker imports python-socketio, uvicorn and prometheus_client before it can answer; on a
# busy 2-CPU machine starting four at once takes a few seconds.
_START_TIMEOUT_SECONDS = 60.0
_REDIS_TIMEOUT_SECONDS = 3.0


class StartupError(RuntimeError):
    """The server cannot start; the message says why and what to change."""


@dataclass
class _Slot:
    """One worker position: its index and ports outlive the processes that fill it."""

    index: int
    metrics_sock: socket.socket
    process: asyncio.subprocess.Process | None = None
    control: asyncio.StreamWriter | None = None
    started_at: float = 0.0
    crashes: int = 0
    restart: asyncio.TimerHandle | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings: ServerSettings, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.policy = policy or RestartPolicy()
        self.port = settings.port
        self.redis = RedisAccess(
            settings.redis_url or "", settings.redis_password, settings.redis_ca_file
        )
        self._slots: list[_Slot] = []
        # One handoff pair per slot (`pushserver.handoff`), kept for the supervisor's life.
        self._channels: list[tuple[socket.socket, socket.socket]] = []
        self._stopping = False
        self._forced = False
        self._cleanups: list[Callable[[], None]] = []

    async def run(self) -> int:
        try:
            await self._start()
            self._install_signal_handlers()
            self._announce()
            await self._watch()
        finally:
            self._close()
        return 1 if self._forced else 0

    # -- start-up -------------------------------------------------------------------------

    async def _start(self) -> None:
        s = self.settings
        self._check_limits()
        try:
            reservation = claim_client_port(s.host, s.port)
            self._cleanups.append(reservation.close)
            self.port = int(reservation.getsockname()[1])
            metrics = metrics_sockets(s.host, s.metrics_port, s.workers)
        except PortUnavailable as exc:
            raise StartupError(str(exc)) from exc
        self._slots = [_Slot(i, sock) for i, sock in enumerate(metrics)]
        self._channels = channels(s.workers)
        if s.redis_url is None:
            # Started from this, the main, thread: the server dies with it (embedded_redis).
            try:
                embedded = await start_embedded_redis()
            except EmbeddedRedisError as exc:
                raise StartupError(f"the embedded Redis did not start: {exc}") from exc
            self._cleanups.append(embedded.stop)
            self.redis = embedded.access
        await _check_redis(self.redis)
        results = await asyncio.gather(
            *(self._spawn(slot) for slot in self._slots), return_exceptions=True
        )
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        if failures:
            await self._stop_all(signal.SIGKILL)
            raise StartupError("; ".join(failures))

    def _check_limits(self) -> None:
        s = self.settings
        before, after = raise_open_file_limit()
        if after != before:
            log.info("raised the open-file limit from %d to %d", before, after)
        for warning in limit_warnings(
            read_host_limits(), s.workers, s.max_connections, BACKLOG, s.max_http_connections
        ):
            log.warning("connection limit: %s", warning)

    async def _spawn(self, slot: _Slot) -> None:
        """Start a worker in `slot` and wait until it reports ready (or why it could not)."""
        s = self.settings
        sock = client_socket(s.host, self.port)
        ours, theirs = socket.socketpair()
        # Its own pair's receiving end, every sibling's sending end, in slot order.
        handoff_fds = [
            (receiving if i == slot.index else sending).fileno()
            for i, (receiving, sending) in enumerate(self._channels)
        ]
        try:
            slot.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pushserver.worker",
                str(theirs.fileno()),
                str(sock.fileno()),
                str(slot.metrics_sock.fileno()),
                str(slot.index),
                ",".join(map(str, handoff_fds)),
                pass_fds=(theirs.fileno(), sock.fileno(), slot.metrics_sock.fileno(), *handoff_fds),
                stdin=subprocess.DEVNULL,
                env=_worker_environment(os.environ),
                # Terminal signals reach the supervisor only; it decides what workers get.
                start_new_session=True,
            )
        finally:
            # The worker holds its own copies now; keeping ours would keep a dead worker's
            # client socket open, and the kernel would go on queueing connections on it.
            sock.close()
            theirs.close()
        slot.started_at = time.monotonic()
        reader, writer = await asyncio.open_connection(sock=ours)
        slot.control = writer
        # The control socket is private to the worker: the Redis password may travel on it.
        spec = {"settings": s.to_json(), "redis": self.redis.to_dict()}
        writer.write(json.dumps(spec).encode() + b"\n")
        try:
            async with asyncio.timeout(_START_TIMEOUT_SECONDS):
                line = await reader.readline()
        except TimeoutError:
            line = b""
        answer = json.loads(line) if line.strip() else {}
        if not answer.get("ready"):
            why = answer.get("error") or "it exited or hung before reporting ready"
            raise StartupError(f"worker {slot.index} could not start: {why}")
        log.debug("worker %d (pid %d) ready", slot.index, slot.process.pid)

    def _announce(self) -> None:
        s = self.settings
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
        ports = [int(slot.metrics_sock.getsockname()[1]) for slot in self._slots]
        log.info(
            "ready: %d workers; clients ws://%s:%d/socket.io/ ; metrics http://%s:%d-%d/metrics ;"
            " publish %s ; redis %s",
            s.workers,
            host,
            self.port,
            host,
            ports[0],
            ports[-1],
            f"POST http://{host}:{self.port}/publish (bearer token)"
            if s.publish_token
            else "disabled (no publish token)",
            self.redis.redacted_url,
        )
        if s.ready_file:
            document = {
                "pid": os.getpid(),
                "port": self.port,
                "metrics_ports": ports,
                "workers": [slot.process.pid if slot.process else None for slot in self._slots],
                "redis_url": self.redis.redacted_url,
            }
            write_ready_file(s.ready_file, document)

    # -- running --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping and signum == signal.SIGINT:
            log.warning("second SIGINT: killing workers without draining")
            self._forced = True
            self._send_all(signal.SIGKILL)
            return
        if self._stopping:
            return
        log.info("%s: draining %d workers", name, len(self._slots))
        self._stopping = True
        for slot in self._slots:
            if slot.restart is not None:
                slot.restart.cancel()
        self._send_all(signum)

    def _send_all(self, signum: int) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    async def _watch(self) -> None:
        """Wait on every worker; restart the ones that die until a stop signal arrives."""
        waiting: dict[asyncio.Task[int], _Slot] = {}
        while True:
            for slot in self._slots:
                if slot.process is not None and slot not in waiting.values():
                    waiting[asyncio.create_task(slot.process.wait())] = slot
            if not waiting:
                if self._stopping:
                    return
                await asyncio.sleep(0.1)  # every worker is waiting for its restart
                continue
            done, _ = await asyncio.wait(waiting, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                slot = waiting.pop(task)
                self._on_exit(slot, task.result())

    def _on_exit(self, slot: _Slot, returncode: int) -> None:
        process, slot.process = slot.process, None
        if slot.control is not None:
            slot.control.close()
            slot.control = None
        pid = process.pid if process else "?"
        if self._stopping:
            level = logging.INFO if returncode == 0 else logging.WARNING
            log.log(
                level, "worker %d (pid %s) stopped: %s", slot.index, pid, describe_exit(returncode)
            )
            if returncode != 0:
                self._forced = True
            return
        uptime = time.monotonic() - slot.started_at
        self._schedule_restart(
            slot, uptime, f"(pid {pid}) died after {uptime:.1f} s: {describe_exit(returncode)}"
        )

    def _schedule_restart(self, slot: _Slot, uptime: float, why: str) -> None:
        delay, slot.crashes = self.policy.delay_after(slot.crashes, uptime)
        log.error("worker %d %s; restarting in %.1f s", slot.index, why, delay)
        slot.restart = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._respawn(slot))
        )

    async def _respawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping:
            return
        try:
            await self._spawn(slot)
            log.info("worker %d restarted (pid %d)", slot.index, slot.process.pid)  # type: ignore[union-attr]
        except (StartupError, OSError) as exc:
            if slot.process is None:
                # Nothing was started, so no exit will come to trigger the next attempt.
                self._schedule_restart(slot, 0.0, f"could not be restarted: {exc}")
            elif slot.process.returncode is None:
                # It hung or failed to start; its exit will schedule the next attempt.
                log.error("restarting worker %d failed: %s", slot.index, exc)
                slot.process.kill()

    async def _stop_all(self, signum: int) -> None:
        self._send_all(signum)
        for slot in self._slots:
            if slot.process is not None:
                await slot.process.wait()
                slot.process = None

    def _close(self) -> None:
        for slot in self._slots:
            if slot.control is not None:
                slot.control.close()
            slot.metrics_sock.close()
        for pair in self._channels:
            for end in pair:
                end.close()
        for cleanup in reversed(self._cleanups):
            cleanup()


def _worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The supervisor's environment minus our settings (the publish token among them):
    workers get their settings over the control socket."""
    return {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}


async def _check_redis(access: RedisAccess) -> None:
    """PING with the workers' own credentials and TLS: a wrong password fails here, once."""
    client = redis.asyncio.Redis.from_url(
        access.url,
        socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
        socket_timeout=_REDIS_TIMEOUT_SECONDS,
        **access.client_options(),
    )
    try:
        await client.ping()
    except Exception as exc:
        # Not chained: redis-py's exception would bring its traceback and connection details.
        raise StartupError(describe_failure(access, exc)) from None
    finally:
        await client.aclose()
