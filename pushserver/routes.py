"""The plain-HTTP side of the client port: health, readiness and `POST /publish`.

`pushserver.worker` mounts `http_app(...)` behind the socket.io ASGI app, which passes it every
request that is not for `/socket.io/`. Any worker can take a publish: it goes through Redis to
every worker of every pod (`pushserver.fanout`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pushserver.fanout import PublishFailed, RoomFanout
from pushserver.payloads import PayloadError, parse_publish
from pushserver.stats import WorkerStats

log = logging.getLogger(__name__)


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Constant-time check of an `Authorization: Bearer ...` header."""
    if authorization is None:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


class _TooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def http_app(
    *,
    stats: WorkerStats,
    fanout: RoomFanout,
    publish_token: str | None,
    max_publish_bytes: int,
    is_ready: Callable[[], bool],
) -> Starlette:
    def error(status: int, code: str, message: str, **headers: str) -> Response:
        stats.publishes[str(status)] += 1
        return JSONResponse({"error": code, "message": message}, status, headers=headers)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if is_ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("draining\n", status_code=503)

    async def publish(request: Request) -> Response:
        if publish_token is None:
            return error(403, "disabled", "publishing is disabled: the server has no publish token")
        if not bearer_token_matches(request.headers.get("authorization"), publish_token):
            return error(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                **{"www-authenticate": 'Bearer realm="pushscale"'},
            )
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return error(415, "unsupported_media_type", "send Content-Type: application/json")
        try:
            body = await _read_limited(request, max_publish_bytes)
        except _TooLarge:
            return error(413, "too_large", f"body is larger than {max_publish_bytes} bytes")
        except ClientDisconnect:
            return error(400, "incomplete", "the client went away before sending the body")
        try:
            request_ = parse_publish(body)
        except PayloadError as exc:
            return error(400, exc.code, exc.message)
        try:
            workers = await fanout.broadcast(request_.room, request_.event, request_.data)
        except PublishFailed as exc:
            log.warning("publish to %s failed: %s", request_.room, exc)
            return error(503, "redis_unavailable", str(exc), **{"retry-after": "1"})
        stats.publishes["202"] += 1
        return JSONResponse(
            {"room": request_.room, "event": request_.event, "workers": workers}, 202
        )

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/publish", publish, methods=["POST"]),
        ]
    )
