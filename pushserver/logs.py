"""Logging set-up for the supervisor and its workers, and redaction of secrets in URLs.

Called once by `pushserver.cli` (supervisor) and `pushserver.worker` (each worker) before
anything logs; never at import time.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


def configure_logging(level: str, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s [{name}] %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # python-socketio and engine.io log every packet at INFO, httpx every request.
    for chatty in ("socketio", "engineio", "uvicorn.error", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


def redact_url(url: str) -> str:
    """`redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`, for logs; also a
    `password=` query parameter (redis-py reads one in `unix://` URLs)."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(parts._replace(netloc=netloc))
    base, mark, query = url.partition("?")
    if not mark:
        return url
    pairs = [pair.partition("=") for pair in query.split("&")]
    return f"{base}?" + "&".join(
        f"{key}{eq}{'***' if key.lower() == 'password' else value}" for key, eq, value in pairs
    )


@dataclass
class LogLimiter:
    """At most one log line per cause per interval, so what outsiders send cannot grow the log.

    `cause` must come from our own fixed vocabulary (an error kind, an exception class name),
    never from client bytes: the table of causes is what bounds the memory. Lines held back are
    counted and the count is said on the next line for that cause.
    """

    logger: logging.Logger
    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def log(self, level: int, cause: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `cause` was logged within the interval; True if logged."""
        now = self.clock()
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            self._held[cause] = self._held.get(cause, 0) + 1
            return False
        self._last[cause] = now
        held = self._held.pop(cause, 0)
        if held:
            message += f" (and {held} more like it in the last {self.interval:g} s)"
        self.logger.log(level, message, *args)
        return True

    def warning(self, cause: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, cause, message, *args)

    def info(self, cause: str, message: str, *args: object) -> bool:
        return self.log(logging.INFO, cause, message, *args)
