"""The adapter's own errors, each mapped once to a Kubernetes `Status` by `adapter.app`.

    ApiError (code, reason come from `adapter.wire.status`)
    ├── BadRequest        400  a selector or path that does not parse
    ├── NotFound          404  unknown metric, unknown object, or no pod could be served
    └── Unavailable       503  an object sum with a pod that could not be read completely

Authentication and authorization failures live in `adapter.auth` (`Unauthorized` 401,
`Forbidden` 403) and map the same way. The message is what the HPA puts in its
`FailedGetPodsMetric` / `FailedGetObjectMetric` event, so it says which pods and why.
`StartupError` ends `pushscale adapter` with one line and exit code 1.

Messages quote what the client or a worker sent through `clip`, so a 100 KB selector or metrics
line makes a short error, not a 100 KB one in the HPA's events and our logs.
"""

from __future__ import annotations

import traceback

# Enough to recognise a selector or a metric name; longer input is cut with an ellipsis.
QUOTE_LIMIT = 64


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text`, or its first `limit` characters, an ellipsis and the full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`clip` in quotes, for input inside a message: `'abc'`, `'abc…' (100000 characters)`."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + '…'!r} ({len(text)} characters)"


class ApiError(Exception):
    code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    code = 400


class NotFound(ApiError):
    code = 404


class Unavailable(ApiError):
    code = 503


class StartupError(Exception):
    """The adapter cannot start; the message says why, in one line."""


def describe(error: BaseException) -> str:
    """An exception and where it was raised, in one line: what outside input provoked is
    logged without a traceback, so the log stays one short line per cause."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return clip(f"{type(error).__name__}: {error}{where}", 300)
