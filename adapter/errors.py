"""The adapter's own errors, each mapped once to a Kubernetes `Status` by `adapter.app`.

    ApiError (code, reason come from `adapter.wire.status`)
    ├── BadRequest        400  a selector or path that does not parse
    ├── NotFound          404  unknown metric, unknown object, or no pod could be served
    └── Unavailable       503  an object sum with a pod that could not be read completely

Authentication and authorization failures live in `adapter.auth` (`Unauthorized` 401,
`Forbidden` 403) and map the same way. The message is what the HPA puts in its
`FailedGetPodsMetric` / `FailedGetObjectMetric` event, so it says which pods and why.
`StartupError` ends `pushscale adapter` with one line and exit code 1.
"""

from __future__ import annotations


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
