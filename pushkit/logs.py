"""Logging set-up for every program, redaction of secrets in URLs, and the limits that keep
outside input from growing the log.

`configure_logging` is called once per process before anything logs (`pushkit.program` for
every program, `pushserver.worker` for each worker); never at import time. Whatever logs about
what a client, publisher or Redis sent goes through a `LogLimiter` (our code) or a
`RepeatFilter` (libraries' per-request loggers): at most one line per cause per minute, with a
count of those held back.
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
    # Loggers that log once per bad request or packet: a client could grow the log at will.
    for per_request in ("uvicorn.error", "socketio.server", "engineio.server"):
        logger = logging.getLogger(per_request)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, RepeatFilter)]
        logger.addFilter(RepeatFilter())


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


# Causes are a fixed vocabulary; this only bounds the table if a caller gets that wrong.
_MAX_CAUSES = 256


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

    def log(
        self,
        level: int,
        cause: str,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log `message % args` unless `cause` was logged within the interval; True if logged."""
        suffix = self.admit(cause)
        if suffix is None:
            return False
        self.logger.log(level, message + suffix, *args, exc_info=exc_info)
        return True

    def admit(self, cause: str) -> str | None:
        """None if a line for `cause` was logged within the interval (this one is held back and
        counted); else what the line should end with: nothing, or how many were held back."""
        if cause not in self._last and len(self._last) >= _MAX_CAUSES:
            cause = "(other causes)"
        now = self.clock()
        last = self._last.get(cause)
        if last is not None and now - last < self.interval:
            self._held[cause] = self._held.get(cause, 0) + 1
            return None
        self._last[cause] = now
        held = self._held.pop(cause, 0)
        return f" (and {held} more like it in the last {self.interval:g} s)" if held else ""

    def warning(self, cause: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, cause, message, *args)

    def info(self, cause: str, message: str, *args: object) -> bool:
        return self.log(logging.INFO, cause, message, *args)


class RepeatFilter(logging.Filter):
    """`LogLimiter` for a library's logger that logs once per request or packet (uvicorn's
    "Invalid HTTP request received.", say): lines are limited per format string, which is a
    constant in the library's code, so the causes stay a fixed set."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.limiter = LogLimiter(logging.getLogger(__name__), interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        suffix = self.limiter.admit(str(record.msg))
        if suffix is None:
            return False
        if suffix:
            record.msg = f"{record.msg}{suffix}"
        return True
