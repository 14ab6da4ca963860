"""Logging set-up for the supervisor and its workers, and redaction of secrets in URLs.

Called once by `pushserver.cli` (supervisor) and `pushserver.worker` (each worker) before
anything logs; never at import time.
"""

from __future__ import annotations

import logging
import sys
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
    """`redis://:secret@host:6379/0` → `redis://:***@host:6379/0`, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
