"""HTTP endpoints of a worker.

On the client port (shared by the workers): `/healthz`, `/readyz`, `POST /publish`, and
engine.io's long-polling at `/socket.io/` (`pushserver.polling`). Any worker can
take a publish: it goes through Redis to every worker of every pod (`pushserver.fanout`).

On the worker's own port (`metrics_port + i`): `GET /metrics` and `POST /admin/shed`, which
addresses one worker, so it lives on the one port that belongs to a single worker.

`pushserver.worker` builds both apps.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pushkit.logs import LogLimiter
from pushserver.bodies import BodyTooLarge, read_capped
from pushserver.fanout import PublishFailed, RoomFanout
from pushserver.payloads import PayloadError, parse_publish, parse_shed
from pushserver.shedding import Busy, Shedder
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)
# Publishers are outside input too: a burst of failing publishes is one line a minute.
_complaints = LogLimiter(log)

T = TypeVar("T")

# Shed requests are a few bytes of JSON.
_MAX_ADMIN_BODY_BYTES = 4096


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer ...` header."""
    if authorization is None:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status, headers=headers)


def _refuse_unauthorized(request: Request, token: str | None, what: str) -> Response | None:
    """The 403 or 401 answer for a request that may not use an endpoint, else None."""
    if token is None:
        return _error(403, "disabled", f"{what} is disabled: the server has no {what} token")
    if not bearer_token_matches(request.headers.get("authorization"), token):
        return _error(
            401,
            "unauthorized",
            "missing or wrong bearer token",
            **{"www-authenticate": 'Bearer realm="pushscale"'},
        )
    return None


async def _authorized_json(
    request: Request, token: str | None, what: str, limit: int, parse: Callable[[bytes], T]
) -> T | Response:
    """The parsed body of an authorized JSON request, or the error answer for one that is not:
    401/403 (token), 415 (content type), 413 (size), 400 (body)."""
    refusal = _refuse_unauthorized(request, token, what)
    if refusal is not None:
        return refusal
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        return _error(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        body = await read_capped(request.stream(), request.headers.get("content-length"), limit)
        return parse(body)
    except BodyTooLarge:
        return _error(413, "too_large", f"body is larger than {limit} bytes")
    except ClientDisconnect:
        return _error(400, "incomplete", "the client went away before sending the body")
    except PayloadError as exc:
        return _error(400, exc.code, exc.message)


def client_port_app(
    *,
    stats: WorkerStats,
    fanout: RoomFanout,
    publish_token: str | None,
    max_publish_bytes: int,
    is_ready: Callable[[], bool],
    polling: ASGIApp,
) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if is_ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("draining\n", status_code=503)

    async def publish(request: Request) -> Response:
        try:
            response = await _publish(request)
        except Exception as exc:
            # Our bug: the publisher gets a plain 500 (counted like every outcome), the log
            # one line per kind of failure per minute.
            _complaints.log(
                logging.ERROR, type(exc).__name__, "publish failed: %r", exc, exc_info=exc
            )
            response = _error(500, "internal_error", "the server failed to take the publish")
        stats.publishes[str(response.status_code)] += 1
        return response

    async def _publish(request: Request) -> Response:
        asked = await _authorized_json(
            request, publish_token, "publish", max_publish_bytes, parse_publish
        )
        if isinstance(asked, Response):
            return asked
        try:
            workers = await fanout.broadcast(asked.room, asked.event, asked.data)
        except PublishFailed as exc:
            _complaints.warning("redis_unavailable", "publish to %s failed: %s", asked.room, exc)
            return _error(503, "redis_unavailable", str(exc), **{"retry-after": "1"})
        return JSONResponse({"room": asked.room, "event": asked.event, "workers": workers}, 202)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/publish", publish, methods=["POST"]),
            # engine.io long-polling (`pushserver.polling`); websockets never reach the app.
            Route("/socket.io/", _AsgiEndpoint(polling), methods=["GET", "POST", "OPTIONS"]),
        ]
    )


class _AsgiEndpoint:
    """Starlette takes a plain function as request -> response; an object is an ASGI app."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def worker_port_app(
    *,
    registry: CollectorRegistry,
    admin_token: str | None,
    shedder: Shedder,
    default_interval_ms: float,
) -> Starlette:
    exporter = make_asgi_app(registry)

    async def shed(request: Request) -> Response:
        asked = await _authorized_json(
            request, admin_token, "admin", _MAX_ADMIN_BODY_BYTES, parse_shed
        )
        if isinstance(asked, Response):
            return asked
        interval_ms = default_interval_ms if asked.interval_ms is None else asked.interval_ms
        try:
            count = shedder.shed(asked.count, interval_ms / 1000, "POST /admin/shed")
        except Busy as exc:
            return _error(409, "busy", f"cannot shed now: {exc}")
        return JSONResponse({"shedding": count, "intervalMs": interval_ms}, 202)

    return Starlette(
        routes=[
            Route("/metrics", _AsgiEndpoint(exporter), methods=["GET"]),
            Route("/admin/shed", shed, methods=["POST"]),
        ]
    )
