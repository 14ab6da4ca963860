"""The custom metrics API over HTTP: routes, the access check, and errors as `Status`.

`adapter.server` builds the app with `create_app(state)`; every route is a thin shell: parse the
path and query, take the fresh rounds from `adapter.rounds.Rounds`, let `adapter.answers` decide,
render with `adapter.wire`. Every failure, from a bad selector to a bug, leaves as a Kubernetes
`Status` (`adapter.errors` and `adapter.auth` are the only sources of codes), quoting at most a
short prefix of any input (`adapter.errors.clip`); a bug met while reading one pod leaves only
that pod out (`adapter.answers`), logged once a minute per exception type. A pure ASGI
middleware checks access (`adapter.access`) for everything but the probes and times every
request by route.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapter import openapi, wire
from adapter.answers import Report, Round, object_value, pod_values, served_metric
from adapter.auth import AuthError
from adapter.catalog import METRIC_NAMES
from adapter.debug import debug_document, debug_text
from adapter.discovery import Discovery
from adapter.errors import ApiError, BadRequest, NotFound, Unavailable, clip, describe, quote
from adapter.instruments import HEADLINE, Instruments
from adapter.kube import KubeError
from adapter.pods import Pod
from adapter.selectors import Selector, SelectorError, parse_selector
from pushkit.logs import LogLimiter

log = logging.getLogger("pushscale.adapter.app")

# Reachable without credentials, for kubelet probes (k8s.io/apiserver's default
# --authorization-always-allow-paths).
ALWAYS_ALLOWED = frozenset({"/healthz", "/livez", "/readyz"})
_BASE = f"/apis/{wire.GROUP}"


def logged_report(logger: logging.Logger) -> Report:
    """A `Report` that logs each bug met while reading a pod, at most once a minute per
    exception type (the table of types is ours, so it stays small whatever pods serve)."""
    limiter = LogLimiter(logger)

    def report(pod: Pod, error: Exception) -> None:
        limiter.log(
            logging.ERROR, type(error).__name__, "internal error reading pod %s/%s (left out): %s",
            pod.namespace, pod.name, describe(error),
        )  # fmt: skip

    return report


class RoundSource(Protocol):
    @property
    def history(self) -> tuple[Round, ...]: ...

    async def fresh(self) -> tuple[Round, ...]: ...


class Access(Protocol):
    async def check(self, scope: Scope) -> None:
        """Raise `adapter.auth.Unauthorized` or `Forbidden` unless the request may proceed."""


@dataclass
class AppState:
    rounds: RoundSource
    discovery: Discovery
    instruments: Instruments
    access: Access | None  # None only with --authentication-skip
    rate_window_seconds: float
    max_value_age_seconds: float = 2.0
    clock: Callable[[], float] = time.time
    report: Report = field(default_factory=lambda: logged_report(log))


def create_app(state: AppState) -> ASGIApp:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="pushscale adapter")
    _routes(app, state)
    _error_handlers(app)
    return _Gate(app, state)


def _json(document: dict[str, Any], code: int = 200) -> Response:
    return Response(wire.render(document), code, media_type="application/json")


def _status(error: ApiError | AuthError) -> Response:
    details = error.details if isinstance(error, AuthError) else None
    return _json(wire.status(error.code, error.message, details), error.code)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return _status(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        message = "the server could not find the requested resource"
        if error.status_code == 405:
            message = f"the server does not allow {request.method} here; only get is served"
        code = error.status_code if error.status_code in (404, 405) else 400
        document = wire.status(404 if code == 404 else 400, message)
        if code == 405:
            document.update(reason="MethodNotAllowed", code=405)
        return _json(document, code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        return _status(BadRequest(f"invalid request: {clip(str(error.errors()))}"))

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> Response:
        log.exception("internal error answering %s", request.url.path)
        return _json(wire.status(500, "internal error; the adapter's log has the details"), 500)


class _Documents:
    def __init__(self) -> None:
        render = wire.render
        self.apis = {
            "aggregated": render(wire.api_group_discovery_list(METRIC_NAMES)),
            "legacy": render(wire.api_group_list()),
        }
        self.group = render(wire.api_group())
        self.resources = {v: render(wire.api_resource_list(v, METRIC_NAMES)) for v in wire.VERSIONS}
        self.openapi_v2 = render(openapi.openapi_v2(METRIC_NAMES))
        self.openapi_v3_index = render(openapi.openapi_v3_index(METRIC_NAMES))
        self.openapi_v3 = {v: render(openapi.openapi_v3(v, METRIC_NAMES)) for v in wire.VERSIONS}


def _selector(text: str | None, parameter: str) -> Selector:
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise BadRequest(f"invalid {parameter}: {exc}") from exc


def _version(version: str) -> str:
    if version not in wire.VERSIONS:
        raise NotFound(
            f"the server could not find the requested resource ({wire.GROUP}/{clip(version)})"
        )
    return version


def _routes(app: FastAPI, state: AppState) -> None:
    @app.get("/healthz", response_class=PlainTextResponse)
    @app.get("/livez", response_class=PlainTextResponse)
    async def alive() -> str:
        return "ok"

    @app.get("/readyz")
    async def ready() -> Response:
        if not state.discovery.synced:
            return PlainTextResponse("not ready: pod discovery has not synced yet", 503)
        if not state.rounds.history:
            return PlainTextResponse("not ready: no scrape round has finished yet", 503)
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def own_metrics() -> Response:
        return Response(state.instruments.exposition(), media_type="text/plain; version=0.0.4")

    # The catalog is fixed, so discovery and OpenAPI answer from bytes rendered once: the
    # aggregator polls them, and a failure there marks the whole APIService unavailable.
    documents = _Documents()

    @app.get("/apis")
    async def apis(request: Request) -> Response:
        kind, media_type = wire.negotiate_discovery(request.headers.get("accept"))
        response = Response(documents.apis[kind], media_type=media_type)
        response.headers["Vary"] = "Accept"
        return response

    @app.get(_BASE)
    async def group() -> Response:
        return Response(documents.group, media_type="application/json")

    @app.get(_BASE + "/{version}")
    async def resources(version: str) -> Response:
        return Response(documents.resources[_version(version)], media_type="application/json")

    @app.get("/openapi/v2")
    async def openapi_v2() -> Response:
        return Response(documents.openapi_v2, media_type="application/json")

    @app.get("/openapi/v3")
    async def openapi_v3_index() -> Response:
        return Response(documents.openapi_v3_index, media_type="application/json")

    @app.get("/openapi/v3/apis/" + wire.GROUP + "/{version}")
    async def openapi_v3(version: str) -> Response:
        body = documents.openapi_v3[_version(version)]
        return Response(body, media_type="application/json", headers={"ETag": openapi.etag(body)})

    @app.get("/debug/pods")
    async def debug(request: Request) -> Response:
        metric = served_metric(request.query_params.get("metric", HEADLINE), "pods")
        selector = _selector(request.query_params.get("metricLabelSelector"), "metricLabelSelector")
        rounds = await _fresh_rounds(state)
        document = debug_document(
            rounds, metric, selector, state.rate_window_seconds, state.clock(), state.report
        )
        if request.query_params.get("format") == "json":
            return _json(document)
        return PlainTextResponse(debug_text(document))

    @app.get(_BASE + "/{version}/namespaces/{namespace}/metrics/{metric}")
    async def namespace_metric(
        version: str, namespace: str, metric: str, request: Request
    ) -> Response:
        return await _object_answer(
            state, request, version, namespace, "namespaces", namespace, metric
        )

    @app.get(_BASE + "/{version}/namespaces/{namespace}/{resource}/{name}/{metric}")
    async def namespaced_metric(
        version: str, namespace: str, resource: str, name: str, metric: str, request: Request
    ) -> Response:
        if resource == "pods":
            return await _pods_answer(state, request, version, namespace, name, metric)
        if resource not in ("deployments.apps", "services"):
            raise NotFound(
                f"the server could not find the metric {clip(metric)} for {clip(resource)}: "
                "served for pods, services, deployments.apps and namespaces"
            )
        if name == "*":
            raise NotFound(f"{resource} are served one by name; lists (*) are served for pods")
        return await _object_answer(state, request, version, namespace, resource, name, metric)


async def _pods_answer(
    state: AppState, request: Request, version: str, namespace: str, name: str, metric_name: str
) -> Response:
    version = _version(version)
    metric = served_metric(metric_name, "pods")
    selector_text = request.query_params.get("labelSelector")
    selector = _selector(selector_text, "labelSelector")
    metric_selector = _selector(
        request.query_params.get("metricLabelSelector"), "metricLabelSelector"
    )
    rounds = await _fresh_rounds(state)
    considered = [
        pod
        for pod in rounds[-1].pods
        if pod.namespace == namespace
        and selector.matches(pod.labels)
        and (name == "*" or pod.name == name)
    ]
    if name != "*" and not considered:
        raise NotFound(
            f'pods "{clip(name)}" not found among the scraped pods of namespace {clip(namespace)}'
        )
    if name != "*":
        what = f"pods {quote(name)}"
    else:
        what = f"pods in {clip(namespace)} matching {quote(selector_text or '')}"
    values = pod_values(
        considered, rounds, metric, metric_selector, state.rate_window_seconds, what, state.report
    )
    _observe_ages(state, [value.timestamp for value in values])
    return _json(wire.metric_value_list(version, values, metric_selector))


async def _object_answer(
    state: AppState,
    request: Request,
    version: str,
    namespace: str,
    resource: str,
    name: str,
    metric_name: str,
) -> Response:
    version = _version(version)
    metric = served_metric(metric_name, resource)
    metric_selector = _selector(
        request.query_params.get("metricLabelSelector"), "metricLabelSelector"
    )
    if resource == "services":
        try:
            service = await state.discovery.service(namespace, name)
        except KubeError as exc:
            raise Unavailable(
                f"cannot read services/{clip(name)} in {clip(namespace)}: {clip(str(exc), 300)}"
            ) from exc
        if service is None:
            raise NotFound(f'services "{clip(name)}" not found in namespace {clip(namespace)}')
        selects = service.selects
    elif resource == "deployments.apps":
        selects = lambda pod: pod.deployment == name  # noqa: E731
    else:
        selects = lambda pod: True  # noqa: E731
    rounds = await _fresh_rounds(state)
    considered = [pod for pod in rounds[-1].pods if pod.namespace == namespace and selects(pod)]
    described = wire.Described(resource, name, None if resource == "namespaces" else namespace)
    value = object_value(
        described, considered, rounds, metric, metric_selector, state.rate_window_seconds,
        state.report,
    )  # fmt: skip
    _observe_ages(state, [value.timestamp])
    return _json(wire.metric_value_list(version, [value], metric_selector))


async def _fresh_rounds(state: AppState) -> tuple[Round, ...]:
    # Before the first list of pods, an empty answer would read as "no pods": say "not yet".
    if not state.discovery.synced:
        raise Unavailable("pod discovery has not synced with the API server yet")
    rounds = await state.rounds.fresh()
    # The promise is an age at answer, not a scrape interval: a round stretched by an
    # overloaded event loop must not hand out values older than promised.
    age = state.clock() - rounds[-1].started_at
    if age > state.max_value_age_seconds:
        raise Unavailable(
            f"the latest scrape round started {age:.1f} s ago, over the "
            f"{state.max_value_age_seconds:g} s the adapter promises (--max-value-age-seconds); "
            f"that round took {rounds[-1].duration_seconds:.1f} s"
        )
    return rounds


def _observe_ages(state: AppState, timestamps: Sequence[float]) -> None:
    # Values read in one round share its start as their time: a few ages, however many pods.
    now = state.clock()
    for timestamp, count in Counter(timestamps).items():
        state.instruments.observe_value_age(now - timestamp, count)


class _Gate:
    """Access check and timing around the whole app (plain ASGI: it runs on every request,
    and a BaseHTTPMiddleware would add a task and a copy per request)."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def send_and_note(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            if self._state.access is not None and scope["path"] not in ALWAYS_ALLOWED:
                try:
                    await self._state.access.check(scope)
                except AuthError as error:
                    await _status(error)(scope, receive, send_and_note)
                    return
            await self._app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self._state.instruments.observe_request(path, code, time.perf_counter() - started)
